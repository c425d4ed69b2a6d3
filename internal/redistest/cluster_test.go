package redistest_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestStartCluster: three loopback masters holding every slot, a client
// that routes by slot, slots enforced by the server, persistence off, and
// every process gone once the test that started them has ended.
func TestStartCluster(t *testing.T) {
	t.Parallel()
	var addrs []string
	t.Run("running", func(t *testing.T) {
		cl := redistest.StartCluster(t)
		addrs = cl.Addrs()
		if len(addrs) != 3 {
			t.Fatalf("Addrs() = %v, want 3 addresses", addrs)
		}
		seen := make(map[string]bool)
		for _, a := range addrs {
			if !strings.HasPrefix(a, "127.0.0.1:") || seen[a] {
				t.Errorf("Addrs() = %v, want 3 distinct 127.0.0.1:port", addrs)
			}
			seen[a] = true
		}

		c := cl.Client(t)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		shards, err := c.ClusterShards(ctx).Result()
		if err != nil {
			t.Fatalf("CLUSTER SHARDS = %v", err)
		}
		var slots int64
		for _, sh := range shards {
			for _, r := range sh.Slots {
				slots += r.End - r.Start + 1
			}
		}
		if len(shards) != 3 || slots != 16384 {
			t.Errorf("CLUSTER SHARDS: %d shards holding %d slots, want 3 holding 16384", len(shards), slots)
		}
		// Keys whose tags hash to the three slot ranges land on three nodes.
		// Slots: {sluice} 59, {openai} 10228, {anthropic} 13844.
		for i, key := range []string{"{sluice}:k", "{openai}:k", "{anthropic}:k"} {
			if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
				t.Fatalf("Set(%s) = %v", key, err)
			}
			node, err := c.MasterForKey(ctx, key)
			if err != nil {
				t.Fatalf("MasterForKey(%s) = %v", key, err)
			}
			if got := node.Options().Addr; got != addrs[i] {
				t.Errorf("MasterForKey(%s) = %s, want %s (the range of slot order)", key, got, addrs[i])
			}
			if n, err := node.Exists(ctx, key).Result(); err != nil || n != 1 {
				t.Errorf("EXISTS %s on %s = %d, %v, want 1", key, addrs[i], n, err)
			}
		}
		// The server enforces slots: a script's keys must share one.
		script := redis.NewScript(`return redis.call('GET', KEYS[1]) .. #KEYS`)
		if got, err := script.Run(ctx, c, []string{"{openai}:k", "{openai}:other"}).Text(); err != nil || got != "v2" {
			t.Errorf("script over two keys of one slot = %q, %v, want %q, nil", got, err, "v2")
		}
		if err := script.Run(ctx, c, []string{"{openai}:k", "{anthropic}:k"}).Err(); !redis.HasErrorPrefix(err, "CROSSSLOT") {
			t.Errorf("script over two slots = %v, want a CROSSSLOT error", err)
		}
		err = c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			got, err := node.ConfigGet(ctx, "*").Result()
			if err != nil {
				return err
			}
			for param, want := range map[string]string{"save": "", "appendonly": "no", "bind": "127.0.0.1", "cluster-enabled": "yes"} {
				if got[param] != want {
					t.Errorf("%s: CONFIG GET %s = %q, want %q", node.Options().Addr, param, got[param], want)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("ForEachShard = %v", err)
		}
	})
	if len(addrs) == 0 {
		return
	}
	for _, a := range addrs {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s accepts connections after the test that started it ended", a)
		}
	}
}

func TestStartClusterFailsWithoutCLI(t *testing.T) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not on PATH: %v", err)
	}
	// Only redis-server on PATH: StartCluster must fail before it starts
	// any node.
	dir := t.TempDir()
	if err := os.Symlink(server, filepath.Join(dir, "redis-server")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.StartCluster(tb)
		t.Error("StartCluster returned without redis-cli on PATH, want Fatalf")
	}()
	<-done
	msg := tb.message()
	for _, want := range []string{"redis-cli", "apt-get install redis-tools"} {
		if !strings.Contains(msg, want) {
			t.Errorf("StartCluster failure = %q, want it to mention %q", msg, want)
		}
	}
}
