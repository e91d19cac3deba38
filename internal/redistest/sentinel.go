package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// SentinelConfig describes a primary, its replicas and the Sentinels that
// watch them. Zero fields take the defaults noted.
type SentinelConfig struct {
	// MasterName is the name the Sentinels monitor the primary under;
	// "mxguard" when empty.
	MasterName string
	// Replicas of the primary; 1 when zero.
	Replicas int
	// Sentinels watching them; 3 when zero.
	Sentinels int
	// Quorum is how many Sentinels must agree that the primary is down;
	// a majority of Sentinels when zero.
	Quorum int
	// DownAfter is how long the primary must fail to answer before a
	// Sentinel deems it down (down-after-milliseconds); 1 s when zero.
	DownAfter time.Duration
	// FailoverTimeout is Sentinel's failover-timeout; a failed attempt is
	// retried after twice this. 3 s when zero.
	FailoverTimeout time.Duration
	// Password, when set, is the Sentinels' requirepass (clients must
	// AUTH with it; the Sentinels use it among themselves too).
	Password string
}

// Sentinels is a running primary with its replicas and the redis-sentinel
// processes watching them; everything is killed when the test ends. Its
// methods must be called from the test's goroutine, like t.Fatal.
type Sentinels struct {
	MasterName string
	// Data are the redis-server processes: Data[0] is the first primary,
	// the others its replicas. Which one is the primary now is Primary's
	// question, asked of the Sentinels.
	Data []*Server
	// Watchers are the redis-sentinel processes.
	Watchers []*Server

	t    testing.TB
	pass string
}

// readyTimeout bounds how long a replica takes to sync and the Sentinels
// take to find the replicas and each other.
const readyTimeout = 20 * time.Second

// StartSentinels starts a primary, its replicas and the Sentinels, and
// returns once every Sentinel knows every replica and every other
// Sentinel, so that a failover can happen at once: a Sentinel that has not
// yet heard of a replica has nobody to promote.
func StartSentinels(t testing.TB, cfg SentinelConfig) *Sentinels {
	t.Helper()
	if cfg.MasterName == "" {
		cfg.MasterName = "mxguard"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Sentinels == 0 {
		cfg.Sentinels = 3
	}
	if cfg.Quorum == 0 {
		cfg.Quorum = cfg.Sentinels/2 + 1
	}
	if cfg.DownAfter == 0 {
		cfg.DownAfter = time.Second
	}
	if cfg.FailoverTimeout == 0 {
		cfg.FailoverTimeout = 3 * time.Second
	}
	sentinelBin := lookPath(t, "redis-sentinel", "redis-sentinel")
	g := &Sentinels{MasterName: cfg.MasterName, t: t, pass: cfg.Password}

	// A primary waits 5 s by default before a full sync, for more
	// replicas to share it; a test has no time for that.
	const noSyncDelay = "--repl-diskless-sync-delay"
	primary := StartServer(t, noSyncDelay, "0")
	g.Data = append(g.Data, primary)
	host, port, _ := net.SplitHostPort(primary.Addr)
	for range cfg.Replicas {
		g.Data = append(g.Data, StartServer(t, noSyncDelay, "0", "--replicaof", host, port))
	}
	// Replicas first: a Sentinel learns of them from the primary's INFO,
	// which it asks at once and then only every 10 s.
	deadline := time.Now().Add(readyTimeout)
	for _, r := range g.Data[1:] {
		waitReady(t, deadline, 20*time.Millisecond, "replica "+r.Addr+" in sync with "+primary.Addr, func() (bool, string) {
			st := info(t, r.Addr, "replication")["master_link_status"]
			return st == "up", "master_link_status " + st
		})
	}

	for i := range cfg.Sentinels {
		s := &Server{t: t, bin: sentinelBin, dir: t.TempDir(), pass: cfg.Password}
		conf := []string{
			fmt.Sprintf("sentinel monitor %s %s %s %d", cfg.MasterName, host, port, cfg.Quorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", cfg.MasterName, cfg.DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", cfg.MasterName, cfg.FailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", cfg.MasterName),
		}
		if cfg.Password != "" {
			conf = append(conf, "requirepass "+strconv.Quote(cfg.Password))
		}
		s.conf = filepath.Join(s.dir, "sentinel.conf")
		if err := os.WriteFile(s.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			t.Fatalf("redistest: sentinel %d: %v", i, err)
		}
		t.Cleanup(s.kill)
		s.listen()
		g.Watchers = append(g.Watchers, s)
	}

	for _, w := range g.Watchers {
		c := g.sentinelClient(w.Addr)
		what := fmt.Sprintf("sentinel %s finding %d replicas and %d other sentinels", w.Addr, cfg.Replicas, cfg.Sentinels-1)
		waitReady(t, deadline, 50*time.Millisecond, what, func() (bool, string) {
			m, err := c.Master(context.Background(), cfg.MasterName).Result()
			return err == nil && m["num-slaves"] == strconv.Itoa(cfg.Replicas) &&
				m["num-other-sentinels"] == strconv.Itoa(cfg.Sentinels-1), fmt.Sprintf("%v, %v", m, err)
		})
		c.Close()
	}
	return g
}

// Addrs are the Sentinels' addresses, for a client's configuration.
func (g *Sentinels) Addrs() []string { return addrs(g.Watchers) }

// Primary is the data server the Sentinels name as the primary now (the
// first Sentinel that answers).
func (g *Sentinels) Primary() *Server {
	g.t.Helper()
	addr, err := g.primaryAddr()
	if err != nil {
		g.t.Fatalf("redistest: no sentinel names a primary: %v", err)
	}
	return g.server(addr)
}

func (g *Sentinels) primaryAddr() (string, error) {
	var lastErr error
	for _, w := range g.Watchers {
		c := g.sentinelClient(w.Addr)
		a, err := c.GetMasterAddrByName(context.Background(), g.MasterName).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		lastErr = err
	}
	return "", lastErr
}

func (g *Sentinels) server(addr string) *Server {
	g.t.Helper()
	i := slices.IndexFunc(g.Data, func(s *Server) bool { return s.Addr == addr })
	if i < 0 {
		g.t.Fatalf("redistest: the sentinels name %s, which is none of the data servers", addr)
	}
	return g.Data[i]
}

// KillPrimary kills the primary (SIGKILL, as a crash would) and returns
// it.
func (g *Sentinels) KillPrimary() *Server {
	g.t.Helper()
	p := g.Primary()
	p.Stop()
	return p
}

// WaitPromoted waits, at most d, until every Sentinel names another
// primary than old and that server says it is a primary (role:master),
// and returns it.
func (g *Sentinels) WaitPromoted(old *Server, d time.Duration) *Server {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if s := g.promoted(old); s != nil {
			return s
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("redistest: no replica of %s was promoted within %v", old.Addr, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *Sentinels) promoted(old *Server) *Server {
	var addr string
	for _, w := range g.Watchers {
		c := g.sentinelClient(w.Addr)
		a, err := c.GetMasterAddrByName(context.Background(), g.MasterName).Result()
		c.Close()
		if err != nil || len(a) != 2 {
			return nil
		}
		got := net.JoinHostPort(a[0], a[1])
		if got == old.Addr || addr != "" && got != addr {
			return nil
		}
		addr = got
	}
	s := g.server(addr)
	if info(g.t, s.Addr, "replication")["role"] != "master" {
		return nil
	}
	return s
}

func (g *Sentinels) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: g.pass, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, DisableIdentity: true})
}

// info returns a section of a data server's INFO as key/value pairs; none
// when it does not answer.
func info(t testing.TB, addr, section string) map[string]string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer c.Close()
	s, err := c.Info(context.Background(), section).Result()
	out := make(map[string]string)
	if err != nil {
		return out
	}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			out[k] = v
		}
	}
	return out
}
