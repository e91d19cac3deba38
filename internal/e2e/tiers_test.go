package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

// TestTierLimit: a /24 spread over 50 addresses, none over its own
// ClientRate, meets the network's limit (client_rate × tier_multiplier),
// with a refusal that names the network; another /24 is counted on its
// own. Once on one node with in-process counters, once over two nodes
// sharing them in a real Redis, the addresses alternating between them.
func TestTierLimit(t *testing.T) {
	t.Parallel()
	const conf = `trusted_networks = []
[limits]
client_rate = 2
ipv4_tiers = [32, 24]
tier_multiplier = 4
`
	for _, fleet := range []bool{false, true} {
		name := "local"
		if fleet {
			name = "redis"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var nodes []*mx
			if fleet {
				rs := redistest.StartServer(t)
				c := conf + fmt.Sprintf("[fleet]\nredis = %q\n", rs.Addr)
				nodes = []*mx{startMXLoopback(t, c), startMXLoopback(t, c)}
			} else {
				nodes = []*mx{startMX(t, conf)}
			}
			served := 0
			for i := range 50 {
				c, line, _ := greet(t, fmt.Sprintf("127.0.10.%d", i+1), nodes[i%len(nodes)].addr)
				switch {
				case strings.HasPrefix(line, "220"):
					served++
					c.quit()
				case strings.HasPrefix(line, "421 4.3.2 Connection rate limit exceeded."):
					c.closed()
				default:
					t.Fatalf("client %d: %q", i+1, line)
				}
			}
			if served != 8 {
				t.Errorf("%d of 50 addresses of one /24 served, want 8 (client_rate 2 × tier_multiplier 4)", served)
			}
			nodes[len(nodes)-1].waitLogAll(5*time.Second, "ratecontrol (127.0.10.0/24): ", "limit 8", "reason=ratecontrol")
			c, line, _ := greet(t, "127.0.11.1", nodes[0].addr)
			expect(t, line, "220")
			c.quit()
		})
	}
}
