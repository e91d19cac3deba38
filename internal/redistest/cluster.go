package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Cluster is a running Redis Cluster of primaries only, on 127.0.0.1; its
// servers are killed when the test ends.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts n redis-server processes in cluster mode, joins them
// with redis-cli --cluster create (the slots split evenly, no replicas) and
// returns once every node reports cluster_state:ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cli := lookPath(t, "redis-cli", "redis-tools")
	c := &Cluster{}
	for range n {
		// The bus port is given, not derived (port + 10000), which could
		// be taken or beyond 65535.
		bus, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		c.Nodes = append(c.Nodes, StartServer(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", "5000",
		))
	}
	deadline := time.Now().Add(readyTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, s := range c.Nodes {
		rc := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DisableIdentity: true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
		waitReady(t, deadline, 20*time.Millisecond, "cluster node "+s.Addr+" ok", func() (bool, string) {
			ci, err := rc.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(ci, "cluster_state:ok"), fmt.Sprintf("%v\n%s", err, ci)
		})
		rc.Close()
	}
	return c
}

// Addrs are the nodes' addresses.
func (c *Cluster) Addrs() []string { return addrs(c.Nodes) }
