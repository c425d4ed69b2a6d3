//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/internal/redistest"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// TestSIGTERMDrain sends a real SIGTERM to a Sluice process with one
// request in flight that will not finish and two queued behind it: when
// the grace period ends, all three are answered 503 and dead-lettered as
// shutdown, and the process exits cleanly.
func TestSIGTERMDrain(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int64
	up := upstreamtest.New(t, upstreamtest.Options{})
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		arrived.Add(1)
		select { // longer than the grace period
		case <-release:
		case <-time.After(30 * time.Second):
		}
		up.Default(ctx)
	})
	t.Cleanup(func() { close(release) })

	dir := t.TempDir()
	file := filepath.Join(dir, "deadletters.jsonl")
	cfg := testConfig(up.URL) + "    limits: {max_concurrency: 1}\n" +
		"deadletter:\n  file: " + file + "\n"
	cfg = strings.Replace(cfg, "shutdown_grace: 5s", "shutdown_grace: 300ms", 1)
	proc := startProcess(t, cfg)
	addr, admin, cmd := proc.addr, proc.admin, proc.cmd

	type answer struct {
		status int
		id     string
	}
	answers := make(chan answer, 3)
	send := func() {
		resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
		if err != nil {
			t.Errorf("POST: %v", err)
			answers <- answer{}
			return
		}
		resp.Body.Close()
		answers <- answer{resp.StatusCode, resp.Header.Get("X-Sluice-Deadletter-Id")}
	}
	go send()
	for arrived.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	go send()
	go send()
	waitQueued(t, "http://"+admin, 2)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for range 3 {
		a := <-answers
		if a.status != http.StatusServiceUnavailable || a.id == "" || ids[a.id] {
			t.Errorf("answer %d with dead letter %q; want 503 with a dead letter of its own", a.status, a.id)
		}
		ids[a.id] = true
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sluice exited with %v after SIGTERM, want 0", err)
	}

	store, err := deadletter.OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	recs, _, err := store.List(context.Background(), deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for _, r := range recs {
		if r.ErrorKind != deadletter.Shutdown || !ids[r.ID] {
			t.Errorf("record %s: kind %s; want shutdown, for one of the answers", r.ID, r.ErrorKind)
		}
		sent += r.Attempts
	}
	if len(recs) != 3 || sent != 1 || arrived.Load() != 1 {
		t.Errorf("%d records with %d attempts between them, %d upstream arrivals; want 3 records, the one in flight sent once", len(recs), sent, arrived.Load())
	}
}

// waitQueued polls the admin status until n requests are queued.
func waitQueued(t *testing.T, adminURL string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st struct {
			Providers []struct {
				Scopes []struct {
					Classes []struct{ Queued int }
				}
			}
		}
		resp, err := http.Get(adminURL + "/admin/status")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		queued := 0
		for _, p := range st.Providers {
			for _, s := range p.Scopes {
				for _, c := range s.Classes {
					queued += c.Queued
				}
			}
		}
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d queued after 10s, want %d", queued, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReplicaKilledLeasesReturn: a replica killed while it holds the
// account's only concurrency slot gives it back when its lease expires:
// another replica's request waits for that, not forever.
func TestReplicaKilledLeasesReturn(t *testing.T) {
	redis := redistest.Start(t)
	release := make(chan struct{})
	var arrived atomic.Int64
	up := upstreamtest.New(t, upstreamtest.Options{})
	t.Cleanup(func() { close(release) }) // before the upstream closes: its handler waits on it
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		if arrived.Add(1) == 1 {
			<-release // the killed replica's request never ends
		}
		up.Default(ctx)
	})
	cfg := sharedConfig(up.URL, redis.URL(), "    limits: {max_concurrency: 1}\n", "")
	proc := startProcess(t, cfg)
	cmd, addr := proc.cmd, proc.addr
	go http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
	for arrived.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	kill(t, cmd)

	other := mustRun(t, cfg)
	start := time.Now()
	code, waited := send(t, other.URL, nil)
	if code != 200 {
		t.Fatalf("the other replica's request: %d, want 200 once the dead replica's lease expired", code)
	}
	// lease_ttl is 1s: the slot was taken until then, and not much longer.
	if took := time.Since(start); waited < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("waited %v in the queue (%v in all); want the rest of the dead replica's 1s lease", waited, took)
	}
}

// process is this test binary running as Sluice in a process of its own.
type process struct {
	cmd         *exec.Cmd
	addr, admin string // the proxy and admin addresses it serves on
}

// startProcess runs this test binary as a Sluice serving cfg (with a
// dead-letter file in a temporary directory unless cfg names one), in a
// process of its own that can be sent real signals, and returns once it
// serves. The process is killed at the end of the test if it still runs;
// when the test failed, what it logged is shown.
func startProcess(t *testing.T, cfg string) *process {
	t.Helper()
	dir := t.TempDir()
	if !strings.Contains(cfg, "\ndeadletter:") {
		cfg += "deadletter:\n  file: " + filepath.Join(dir, "dl.jsonl") + "\n"
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "serve", "-config", path)
	cmd.Env = append(os.Environ(), "SLUICE_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logTail strings.Builder // what the process logged after serving
	logged := make(chan struct{})
	// Registered first, so it runs after the kill below: it waits for the
	// process to end.
	t.Cleanup(func() {
		<-logged
		if t.Failed() {
			t.Logf("sluice logged:\n%s", logTail.String())
		}
	})
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	logs := bufio.NewScanner(stderr)
	p := &process{cmd: cmd}
	for p.addr == "" && logs.Scan() {
		var line struct{ Msg, Listen, Admin string }
		if json.Unmarshal(logs.Bytes(), &line) == nil && line.Msg == "serving" {
			p.addr, p.admin = line.Listen, line.Admin
		}
	}
	if p.addr == "" {
		close(logged)
		t.Fatal("sluice exited before serving")
	}
	go func() { // keeps the pipe drained until the process exits
		defer close(logged)
		for logs.Scan() {
			logTail.WriteString(logs.Text() + "\n")
		}
	}()
	return p
}

// kill ends a process as a crash does: SIGKILL, no drain.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// TestIdempotencyKeyHolderKilled: a replica killed while it sends a keyed
// request leaves the key taken only until its lock expires; a duplicate
// at another replica waits for that and is then sent.
func TestIdempotencyKeyHolderKilled(t *testing.T) {
	redis := redistest.Start(t)
	release := make(chan struct{})
	var arrived atomic.Int64
	up := upstreamtest.New(t, upstreamtest.Options{})
	t.Cleanup(func() { close(release) }) // before the upstream closes: its handler waits on it
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		if arrived.Add(1) == 1 {
			<-release // the killed replica's request never ends
		}
		up.Default(ctx)
	})
	cfg := sharedConfig(up.URL, redis.URL(), "", "idempotency:\n  lock_ttl: 1s\n")
	proc := startProcess(t, cfg)
	cmd, addr := proc.cmd, proc.addr
	key := map[string]string{"Idempotency-Key": "order-7"}
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Idempotency-Key", "order-7")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	for arrived.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	kill(t, cmd)

	other := mustRun(t, cfg)
	start := time.Now()
	code, _ := send(t, other.URL, key)
	if code != 200 || arrived.Load() != 2 {
		t.Fatalf("the duplicate at another replica: %d after %d upstream arrivals; want 200, sent once the dead holder's lock expired", code, arrived.Load())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the duplicate took %v; the lock expires after 1s", took)
	}
}
