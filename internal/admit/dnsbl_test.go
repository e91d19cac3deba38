package admit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnsbl"
	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reputation"
)

// listed is the A record by which list lists the IPv4 address addr.
func listed(addr, list, answer string) string {
	ip := netip.MustParseAddr(addr).As4()
	return fmt.Sprintf("%d.%d.%d.%d.%s. 60 IN A %s", ip[3], ip[2], ip[1], ip[0], list, answer)
}

// TestListing: the lists' weights decide, by the threshold and the action,
// between a refusal at the greeting (554, 521 under stress), one at each
// RCPT, an allowlisted client (no tarpit) and a score only; a client the
// access map lets in by name is never looked up, nor a trusted one.
func TestListing(t *testing.T) {
	srv := dnstest.Start(t,
		listed("127.0.0.2", "bl.example", "127.0.0.2"),
		listed("127.0.0.2", "bl2.example", "127.0.0.4"),
		listed("127.0.0.3", "bl2.example", "127.0.0.4"),
		listed("127.0.0.5", "wl.example", "127.0.10.2"),
		listed("127.0.0.6", "bl.example", "127.0.0.2"),
	)
	entries := []string{"bl.example*2", "bl2.example", "wl.example=127.0.[0..255].[1..3]*-5"}
	sites, err := dnsbl.ParseSites(entries)
	if err != nil {
		t.Fatal(err)
	}
	checker, err := dnsbl.New(dnsbl.Config{Sites: sites, Server: srv.Addr, Timeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(checker.Close)

	for _, tt := range []struct {
		name, addr, action string
		stressed           bool
		score              int
		want               string // "reject 554", "rcpt 550", "allowlisted", "listed", "clean", "not asked"
	}{
		{"two lists, reject", "127.0.0.2", config.DNSBLReject, false, 3, "reject 554"},
		{"under stress", "127.0.0.2", config.DNSBLScore, true, 3, "reject 521"},
		{"reject_rcpt", "127.0.0.2", config.DNSBLRejectRcpt, false, 3, "rcpt 550"},
		{"score only", "127.0.0.2", config.DNSBLScore, false, 3, "listed"},
		{"below the threshold", "127.0.0.3", config.DNSBLReject, false, 1, "clean"},
		{"allow list", "127.0.0.5", config.DNSBLReject, false, -5, "allowlisted"},
		{"not listed", "127.0.0.9", config.DNSBLReject, false, 0, "clean"},
		{"Connect: OK", "127.0.0.6", config.DNSBLReject, false, 0, "not asked"},
		{"trusted", "127.0.1.1", config.DNSBLReject, false, 0, "not asked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			book, err := reputation.New(reputation.Config{TarpitBelow: -1, TarpitStep: time.Second, TarpitMax: 5 * time.Second, MaxClients: 10}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			access, err := accessmap.Parse(strings.NewReader("Connect:127.0.0.6 OK\n"), "access")
			if err != nil {
				t.Fatal(err)
			}
			p := &Policy{Hostname: "mx.test", Limits: limits(), Access: access, StressDNSBLReject: true,
				Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.1.0/24")},
				DNSBL:   config.DNSBL{Sites: entries, Threshold: 2, AllowlistThreshold: -1, Action: tt.action}}
			mem := limit.NewMemory(nil)
			t.Cleanup(mem.Close)
			var logs bytes.Buffer
			a := New(p, Deps{Limiter: mem, Reputation: book, Lists: checker, Log: slog.New(slog.NewTextHandler(&logs, nil))})
			addr := netip.MustParseAddr(tt.addr)
			d := a.Admit(context.Background(), addr)
			defer d.Release()
			if d.Reject != nil {
				t.Fatalf("refused at admission: %v", d.Reject)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			l, asked := a.Listing(ctx, d, tt.stressed)
			got := "not asked"
			switch {
			case !asked:
			case l.Reject != nil:
				got = fmt.Sprintf("reject %d", l.Reject.Code)
				if d.Reason != reason.DNSBL || !strings.Contains(logs.String(), "listed by bl.example (127.0.0.2), bl2.example (127.0.0.4), score 3") ||
					strings.Contains(l.Reject.Text, "example") {
					t.Errorf("reason %q, reply %q, log:\n%s", d.Reason, l.Reject, logs.String())
				}
			case l.RejectRcpt != nil:
				got = fmt.Sprintf("rcpt %d", l.RejectRcpt.Code)
			case l.Allowlisted:
				got = "allowlisted"
				if d.Delay() != 0 {
					t.Errorf("an allowlisted client is tarpitted: %v", d.Delay())
				}
			case l.Listed:
				got = "listed"
			default:
				got = "clean"
			}
			if got != tt.want || asked && l.Result.Score != tt.score {
				t.Errorf("%s: %s with score %d, want %s with %d", tt.addr, got, l.Result.Score, tt.want, tt.score)
			}
			// The lists' weights are the standing part of the score
			// (with no_fcrdns_points 0): a listed client is tarpitted.
			if want := -tt.score; asked && book.Score(addr) != want {
				t.Errorf("score %d, want %d", book.Score(addr), want)
			}
			if tt.want == "listed" && d.Delay() != 2*time.Second {
				t.Errorf("a listed client at -3 (tarpit below -1): delay %v, want 2s", d.Delay())
			}
		})
	}
}
