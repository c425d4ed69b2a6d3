package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterNodes is the size of a test cluster: the fewest masters
	// redis-cli --cluster create accepts.
	clusterNodes = 3
	// clusterNodeTimeout is the nodes' cluster-node-timeout (ms). A node
	// pings a peer it has not heard from for half of it every 100ms, so the
	// nodes learn of each other within the first second that redis-cli
	// waits (with the default 15s, gossip at one random ping a second made
	// the join take 1 to 5 seconds more). A node unanswered for that long
	// is suspected failing, which a loopback test should never see.
	clusterNodeTimeout = "1000"
	// createTimeout bounds redis-cli --cluster create. It takes about a
	// second: it waits a second at a time for the nodes to agree.
	createTimeout = 30 * time.Second
	// clusterOKTimeout bounds the wait for every node to report
	// cluster_state:ok once redis-cli is done. A master reports it two
	// seconds after it started at the earliest (CLUSTER_WRITABLE_DELAY in
	// Redis's cluster.c).
	clusterOKTimeout = 10 * time.Second
	// clusterPoll is the pause between two CLUSTER INFO rounds.
	clusterPoll = 10 * time.Millisecond
)

// Cluster is a Redis Cluster of three masters without replicas, started for
// one test by [StartCluster]: three redis-server processes on loopback ports
// with persistence off, holding the 16384 slots in three ranges as
// redis-cli assigns them (0-5460, 5461-10922, 10923-16383, in the order
// of [Cluster.Addrs]).
//
// A Cluster cannot be stopped or restarted by the test; its methods may be
// used from any goroutine.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts three cluster-enabled redis-server processes on free
// loopback ports, joins them with redis-cli --cluster create, and waits until
// every node reports cluster_state:ok. The processes are stopped, by PID,
// when tb and its subtests have completed. Starting takes about two seconds,
// the least Redis lets a new master take to report cluster_state:ok.
//
// Each node listens on a second free port for the cluster bus
// (--cluster-port), rather than the default port+10000, which is not free
// or not even valid for most ports the kernel hands out.
//
// StartCluster fails tb (it never skips) when redis-server or redis-cli is
// not on PATH, when a node cannot be started, or when the cluster is not
// formed in time; the failure message holds the output of the failed step.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	begin := time.Now()
	server := lookPath(tb, "redis-server", "install redis-server (apt-get install redis-server) or run make test")
	// Debian's redis-server depends on redis-tools, so make test's install
	// of redis-server brings redis-cli too; only a removed one is missing.
	cli := lookPath(tb, "redis-cli", "install redis-tools (apt-get install redis-tools)")
	dir := tb.TempDir()
	c := &Cluster{nodes: make([]*Server, clusterNodes)}
	for i := range c.nodes {
		conf := filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i+1))
		c.nodes[i] = start(tb, server, dir, func() ([]string, error) {
			bus, err := freePort()
			if err != nil {
				return nil, fmt.Errorf("finding a free cluster bus port: %w", err)
			}
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", conf,
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", clusterNodeTimeout,
			}, nil
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, c.Addrs()...),
		"--cluster-replicas", "0", "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	configure(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitOK(); err != nil {
		tb.Fatalf("redistest: cluster %v: %v", c.Addrs(), err)
	}
	tb.Logf("redistest: cluster %v ready in %v", c.Addrs(), time.Since(begin).Round(time.Millisecond))
	return c
}

// waitOK waits until every node reports cluster_state:ok: redis-cli
// returns once the nodes agree on the slots, but a node may mark the
// cluster ok a moment later.
func (c *Cluster) waitOK() error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr})
	}
	defer func() {
		for _, cl := range clients {
			_ = cl.Close()
		}
	}()
	deadline := time.NewTimer(clusterOKTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(clusterPoll)
	defer poll.Stop()
	for {
		var err error
		for _, cl := range clients {
			if err = clusterOK(cl); err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			return fmt.Errorf("not ok after %v: %w", clusterOKTimeout, err)
		}
	}
}

// clusterOK returns nil when the node of cl reports cluster_state:ok.
func clusterOK(cl *redis.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER INFO on %s: %w", cl.Options().Addr, err)
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if state, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "cluster_state:"); ok {
			if state == "ok" {
				return nil
			}
			return fmt.Errorf("%s reports cluster_state:%s", cl.Options().Addr, state)
		}
	}
	return errors.New(cl.Options().Addr + " reports no cluster_state")
}

// Addrs returns the nodes' "127.0.0.1:port" addresses, in the order of the
// slot ranges they hold. The caller may modify the slice.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Client returns a go-redis cluster client seeded with every node's
// address, closed when tb and its subtests have completed.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	tb.Cleanup(func() {
		if err := cl.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			tb.Errorf("redistest: closing cluster client for %v: %v", c.Addrs(), err)
		}
	})
	return cl
}
