package doctor

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/smtpsink"
)

// TestRelay greets a real smtp-sink over SMTP and over LMTP, then finds
// it gone.
func TestRelay(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	want(t, Relay(ctx, cfg), CheckRelay, OK, "none ([delivery] relay)")

	sink := smtpsink.Start(t, smtpsink.Options{})
	cfg.Delivery.Relay = "smtp://" + sink.Addr
	want(t, Relay(ctx, cfg), CheckRelay, OK, cfg.Delivery.Relay+" answers: greeting, EHLO and QUIT in ", "(220 ")

	lmtp := smtpsink.Start(t, smtpsink.Options{Flags: []string{"-L"}})
	cfg.Delivery.Relay = "lmtp://" + lmtp.Addr
	want(t, Relay(ctx, cfg), CheckRelay, OK, cfg.Delivery.Relay+" answers: greeting, LHLO and QUIT in ")

	sink.Stop()
	cfg.Delivery.Relay = "smtp://" + sink.Addr
	want(t, Relay(ctx, cfg), CheckRelay, Fail, "connect to "+cfg.Delivery.Relay, "connection refused", "retried for queue_lifetime (5d)")
}
