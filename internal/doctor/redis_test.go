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

// TestRedisSentinelCluster: with sentinel the check reaches the primary
// the Sentinels name, with cluster a node of the cluster; a master name
// the Sentinels do not know, or a cluster that is gone, is reported.
func TestRedisSentinelCluster(t *testing.T) {
	t.Parallel() // mostly waiting for the Sentinels and the cluster
	ctx := context.Background()
	g := redistest.StartSentinels(t, redistest.SentinelConfig{Password: "pw"})
	fleet := config.Fleet{Sentinel: config.Addrs(strings.Join(g.Addrs(), " ")), MasterName: g.MasterName, SentinelPassword: "pw"}
	want(t, Redis(ctx, fleet), CheckRedis, OK, `the primary "mxguard" of the Sentinels `+g.Addrs()[0], "answers PING in ")
	fleet.MasterName = "other"
	want(t, Redis(ctx, fleet), CheckRedis, Warn, `the primary "other" of the Sentinels`, "does not answer PING")

	cl := redistest.StartCluster(t, 3)
	fleet = config.Fleet{Cluster: config.Addrs(strings.Join(cl.Addrs(), " ")), OnRedisError: config.OnRedisErrorTempfail}
	want(t, Redis(ctx, fleet), CheckRedis, OK, "the cluster of "+cl.Addrs()[0], "answers PING in ")
	for _, n := range cl.Nodes {
		n.Stop()
	}
	want(t, Redis(ctx, fleet), CheckRedis, Fail, "the cluster of", "does not answer PING", "every client would get 421")
}
