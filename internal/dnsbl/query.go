package dnsbl

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// query asks the servers in turn for the A records of name until one gives
// a definite answer (NOERROR or NXDOMAIN). It returns the addresses,
// comma-separated and empty when there are none, and the answer's TTL: the
// smallest of the records', or for a negative answer its SOA's (RFC 2308),
// or 0 when there is none.
func (c *Checker) query(ctx context.Context, name string) (string, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(udpSize, false)
	var err error
	for _, server := range c.servers {
		if ctx.Err() != nil {
			break
		}
		var resp *dns.Msg
		resp, err = c.exchange(ctx, m, server)
		if err != nil {
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			addrs, ttl, ok := extract(resp, name)
			if !ok {
				return "", negativeTTL(resp), nil // NODATA
			}
			return addrs, ttl, nil
		case dns.RcodeNameError:
			return "", negativeTTL(resp), nil
		}
		err = fmt.Errorf("%s A from %s: %s", name, server, dns.RcodeToString[resp.Rcode])
	}
	if err == nil {
		err = ctx.Err()
	}
	return "", 0, err
}

// exchange sends m to server over UDP, and again over TCP if the UDP answer
// was truncated.
func (c *Checker) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	q := m.Question[0]
	resp, err := exchangeVia(ctx, c.udp, m, server)
	if err == nil && resp.Truncated {
		resp, err = exchangeVia(ctx, c.tcp, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s A from %s: %w", q.Name, server, err)
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != q.Qtype || !strings.EqualFold(resp.Question[0].Name, q.Name) {
		return nil, fmt.Errorf("%s A from %s: reply for another question", q.Name, server)
	}
	return resp, nil
}

// exchangeVia is dns.Client.ExchangeContext, but ends when ctx is
// cancelled too, not only at its deadline, so that Close need not wait for
// the queries' timeouts.
func exchangeVia(ctx context.Context, client *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	co, err := client.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	resp, _, err := client.ExchangeWithConnContext(ctx, m, co)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err() // and not the closed connection's error
	}
	return resp, err
}

// extract returns the A records for name in the answer section, following
// CNAMEs, as comma-separated addresses (at most maxAnswers), with the
// smallest TTL along the way; ok is false when there are none.
func extract(resp *dns.Msg, name string) (addrs string, ttl time.Duration, ok bool) {
	var b strings.Builder
	n := 0
	least := uint32(math.MaxUint32)
	for range maxChain {
		var next string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			switch rr := rr.(type) {
			case *dns.A:
				a, valid := netip.AddrFromSlice(rr.A)
				if !valid || n == maxAnswers {
					continue
				}
				if n > 0 {
					b.WriteByte(',')
				}
				b.WriteString(a.Unmap().String())
				n++
				least = min(least, h.Ttl)
			case *dns.CNAME:
				if next == "" {
					next = rr.Target
					least = min(least, h.Ttl)
				}
			}
		}
		if n > 0 || next == "" {
			break
		}
		name = next
	}
	if n == 0 {
		return "", 0, false
	}
	return b.String(), time.Duration(least) * time.Second, true
}

// negativeTTL is how long a negative answer holds by RFC 2308: the smaller
// of its SOA record's TTL and the SOA's minimum field, or 0 without one.
func negativeTTL(resp *dns.Msg) time.Duration {
	var ttl time.Duration
	found := false
	for _, rr := range resp.Ns {
		soa, ok := rr.(*dns.SOA)
		if !ok {
			continue
		}
		t := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		if !found || t < ttl {
			ttl, found = t, true
		}
	}
	return ttl
}
