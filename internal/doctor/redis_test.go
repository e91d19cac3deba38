package doctor

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/redistest"
)

// TestRedis runs the check against a real redis-server, in both spellings
// of the key, then against the same address once the server is gone: a
// Fail when clients would get 421 for it, a Warn when the node counts
// alone.
func TestRedis(t *testing.T) {
	ctx := context.Background()
	want(t, Redis(ctx, config.Fleet{}), CheckRedis, OK, "none configured")

	srv := redistest.StartServer(t)
	version := regexp.MustCompile(`, redis \d+\.\d+`)
	for _, key := range []string{srv.Addr, "redis://" + srv.Addr + "/0"} {
		f := want(t, Redis(ctx, config.Fleet{Redis: key, OnRedisError: config.OnRedisErrorTempfail}), CheckRedis, OK,
			srv.Addr+" answers PING in ", "median of 5", "connecting took ")
		if !version.MatchString(f.Text) {
			t.Errorf("%s\nlacks the server's version", f)
		}
	}
	// A password in the URL stays out of the report (a server whose
	// default user needs none takes any).
	f := want(t, Redis(ctx, config.Fleet{Redis: "redis://:hunter2@" + srv.Addr + "/0"}), CheckRedis, OK, srv.Addr+" answers")
	if strings.Contains(f.String(), "hunter2") {
		t.Errorf("the password is in the report: %s", f)
	}

	srv.Stop()
	want(t, Redis(ctx, config.Fleet{Redis: srv.Addr, OnRedisError: config.OnRedisErrorTempfail}), CheckRedis, Fail,
		srv.Addr+" does not answer PING", "connection refused", "every client would get 421")
	want(t, Redis(ctx, config.Fleet{Redis: srv.Addr, OnRedisError: config.OnRedisErrorLocal}), CheckRedis, Warn,
		srv.Addr+" does not answer PING", "each node counts its clients alone")
}
