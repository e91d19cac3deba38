package doctor

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/deliver"
)

// RelayTimeout bounds the relay check, and each of its waits.
const RelayTimeout = 10 * time.Second

// Relay checks the relay target of [delivery] relay, when one is set: it
// connects, reads the greeting, says EHLO (LHLO) and QUIT, as every
// delivery begins (deliver.Relay.Check), and times it. A target that does
// not answer so is a Fail. One that announces a SIZE below
// max_message_size is a Warn: mail between the two would be accepted and
// then bounced.
func Relay(ctx context.Context, cfg *config.Config) []Finding {
	d := cfg.Delivery
	if d.Relay == "" {
		return []Finding{finding(OK, CheckRelay, "none ([delivery] relay): mail is delivered into the Maildirs under data_dir")}
	}
	w := RelayTimeout
	r, err := deliver.NewRelay(d.Relay, cfg.Hostname, deliver.Timeouts{
		Connect: w, Initial: w, Helo: w, Lhlo: w, StartTLS: w, Mail: w, Rcpt: w,
		DataInit: w, DataBlock: w, DataFinal: w, Quit: w,
	}, nil)
	if err != nil {
		return []Finding{finding(Fail, CheckRelay, "%v", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, RelayTimeout)
	defer cancel()
	start := time.Now()
	g, err := r.Check(ctx)
	took := time.Since(start)
	if err != nil {
		return []Finding{finding(Fail, CheckRelay, "%v: accepted mail would wait in the spool, retried for queue_lifetime (%s), then bounced",
			err, days(d.QueueLifetime))}
	}
	hello := "EHLO"
	if proto, _, _ := d.RelayTarget(); proto == "lmtp" {
		hello = "LHLO"
	}
	banner := g.Banner
	if len(banner) > 80 {
		banner = banner[:77] + "..."
	}
	text := d.Relay + " answers: greeting, " + hello + " and QUIT in " + ms(took) + " (" + banner + ")"
	max := cfg.Limits.MaxMessageSize
	if n, err := strconv.ParseInt(strings.TrimSpace(g.Extensions["SIZE"]), 10, 64); err == nil && n > 0 && (max == 0 || max > n) {
		mine := "no limit"
		if max > 0 {
			mine = strconv.FormatInt(max, 10)
		}
		return []Finding{finding(Warn, CheckRelay, "%s; it takes messages of at most %d octets (SIZE) but max_message_size is %s: "+
			"larger ones would be accepted here and bounced; set max_message_size to %d at most", text, n, mine, n)}
	}
	return []Finding{finding(OK, CheckRelay, "%s", text)}
}

// days writes d as the configuration does when it is whole days: 5d.
func days(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}
