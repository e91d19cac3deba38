package deliver

import (
	"context"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/smtpsink"
)

// TestCheck: Check takes a real smtp-sink through the greeting, EHLO (LHLO
// over a unix socket) and QUIT, and starts no transaction; a server that
// greets with 421 and a port nobody listens on are errors that say so.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		unix  bool
		flags []string
	}{
		{name: "smtp"},
		{name: "lmtp+unix", unix: true, flags: []string{"-L"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startSink(t, tt.unix, tt.flags...)
			url := "smtp://" + s.Addr
			if tt.unix {
				url = "lmtp+unix://" + s.Addr
			}
			g, err := newTestRelay(t, url).Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(g.Banner, "220 ") || !strings.Contains(g.Banner, "smtp-sink") {
				t.Errorf("banner %q, want smtp-sink's 220 greeting", g.Banner)
			}
			if _, ok := g.Extensions["PIPELINING"]; !ok {
				t.Errorf("extensions %v lack PIPELINING, which smtp-sink announces", g.Extensions)
			}
			if d := s.Dumps(t); len(d) != 0 {
				t.Errorf("Check left %d transactions in the sink: %q", len(d), d)
			}
		})
	}
	t.Run("421 greeting", func(t *testing.T) {
		s := startSink(t, false, "-Q", "CONNECT")
		_, err := newTestRelay(t, "smtp://"+s.Addr).Check(ctx)
		if err == nil || !strings.Contains(err.Error(), "greeting: 421") {
			t.Errorf("Check against a 421 greeting: %v, want an error quoting it", err)
		}
	})
	t.Run("nobody listens", func(t *testing.T) {
		addr := smtpsink.FreePort(t)
		_, err := newTestRelay(t, "smtp://"+addr).Check(ctx)
		if err == nil || !strings.Contains(err.Error(), "connect to smtp://"+addr) {
			t.Errorf("Check against a closed port: %v, want a connect error naming the relay", err)
		}
	})
}
