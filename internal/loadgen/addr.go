package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// maxAddrs bounds the addresses an AddrPool holds, so that a typo such as
// 127.0.0.1-127.255.255.255 is an error rather than a 256 MiB allocation.
const maxAddrs = 1 << 16

// An AddrPool hands out local source addresses round robin. It is safe for
// concurrent use. A nil or empty pool leaves the choice to the kernel.
type AddrPool struct {
	addrs []netip.Addr
	next  atomic.Uint64
}

// ParseAddrs parses a comma-separated list of addresses and inclusive
// ranges, such as "127.0.0.2-127.0.0.200" or "127.0.0.2,::1". The empty
// string gives a nil pool.
func ParseAddrs(s string) (*AddrPool, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	p := &AddrPool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("address range %q: %v", item, err)
		}
		last := first
		if isRange {
			if last, err = netip.ParseAddr(hi); err != nil {
				return nil, fmt.Errorf("address range %q: %v", item, err)
			}
		}
		first, last = first.Unmap(), last.Unmap()
		if first.Is4() != last.Is4() {
			return nil, fmt.Errorf("address range %q: mixes IPv4 and IPv6", item)
		}
		if last.Less(first) {
			return nil, fmt.Errorf("address range %q: ends before it starts", item)
		}
		for a := first; ; a = a.Next() {
			if len(p.addrs) == maxAddrs {
				return nil, fmt.Errorf("address list %q: more than %d addresses", s, maxAddrs)
			}
			p.addrs = append(p.addrs, a)
			if a == last {
				break
			}
		}
	}
	return p, nil
}

// Len reports how many addresses the pool holds.
func (p *AddrPool) Len() int {
	if p == nil {
		return 0
	}
	return len(p.addrs)
}

// Next returns the next address, or nil when the pool is empty.
func (p *AddrPool) Next() *net.TCPAddr {
	if p.Len() == 0 {
		return nil
	}
	i := p.next.Add(1) - 1
	return &net.TCPAddr{IP: p.addrs[i%uint64(len(p.addrs))].AsSlice()}
}

// String returns the pool's addresses as ParseAddrs reads them.
func (p *AddrPool) String() string {
	switch p.Len() {
	case 0:
		return ""
	case 1:
		return p.addrs[0].String()
	}
	return fmt.Sprintf("%v-%v (%d addresses)", p.addrs[0], p.addrs[len(p.addrs)-1], len(p.addrs))
}

// dial connects to addr from the pool's next source address, giving up
// after timeout.
func dial(ctx context.Context, pool *AddrPool, addr string, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: -1, Control: bindNoPort}
	if local := pool.Next(); local != nil {
		d.LocalAddr = local
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, errors.New("not a TCP connection")
	}
	return tc, nil
}

// abort closes c with SO_LINGER 0, which sends RST instead of FIN. Neither
// end then keeps the connection in TIME_WAIT, whose 60 seconds would
// otherwise hold the ephemeral port: on loopback both ends share one
// kernel, so a flood of short connections runs out of ports within seconds
// even when the server is the side that closed first.
func abort(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}
