// Package redistest starts real redis-server processes for tests. Each [Server]
// belongs to the test that started it: it listens on its own loopback port, keeps
// nothing on disk, and is stopped by PID and waited for in the test's cleanup, so
// tests never share keys and never leave a process behind. [StartCluster] starts
// three of them as a Redis Cluster, on the same terms. A missing redis-server
// (or, for a cluster, redis-cli) binary fails the test: a skipped Redis test
// would hide the behaviour it exists to prove.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// readyTimeout bounds the wait for the ready line of one start attempt.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds the wait after SIGTERM, and again after SIGKILL.
	stopTimeout = 10 * time.Second
	// portAttempts is how often Start picks a new port when another process
	// took the free one between the probe and redis-server's bind.
	portAttempts = 5
	// rebindTimeout bounds how long Restart retries the same port.
	rebindTimeout = 5 * time.Second
	// rebindInterval is the pause between two attempts to rebind the port.
	rebindInterval = 50 * time.Millisecond
)

var (
	readyLine = []byte("Ready to accept connections")
	addrInUse = []byte("Address already in use")
)

// Server is a redis-server process started for one test by [Start]. It serves
// plain RESP on 127.0.0.1 with persistence off, from a directory that is removed
// with the test's temporary files.
//
// Stop and Restart must be called from one goroutine at a time (normally the
// test's); Addr, URL and Client may be used from any goroutine.
type Server struct {
	// Addr is the "127.0.0.1:port" address the server listens on. It stays the
	// same across Stop and Restart and must not be modified.
	Addr string

	bin   string
	dir   string
	port  int
	extra []string // more arguments, after the usual ones
	proc  *process // nil while stopped
}

// Start starts redis-server on a free loopback port and waits until it accepts
// connections. The server is stopped when tb and its subtests have completed.
//
// Start fails tb (it never skips) when redis-server is not on PATH, when the
// process cannot be started, or when it is not ready within ten seconds; the
// failure message holds the process's output.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := lookPath(tb, "redis-server", "install redis-server (apt-get install redis-server) or run make test")
	return start(tb, bin, tb.TempDir(), nil)
}

// lookPath returns the path of the binary name, or fails tb with how to
// install it.
func lookPath(tb testing.TB, name, install string) string {
	tb.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("redistest: %s not found on PATH (%v): %s", name, err, install)
	}
	return bin
}

// start starts the redis-server bin on a free loopback port, from dir, with
// the arguments extra returns for that attempt added to the usual ones, and
// registers its stop with tb's cleanups.
func start(tb testing.TB, bin, dir string, extra func() ([]string, error)) *Server {
	tb.Helper()
	s := &Server{bin: bin, dir: dir}
	// The cleanup is registered before the first launch, so a Fatalf below
	// still stops whatever process is running. It runs before the TempDir
	// cleanup registered by the caller, so the directory is removed after
	// the process.
	tb.Cleanup(func() { s.Stop(tb) })

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: finding a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if extra != nil {
			if s.extra, err = extra(); err != nil {
				tb.Fatalf("redistest: %v", err)
			}
		}
		p, err := s.launch()
		if err == nil {
			s.proc = p
			return s
		}
		// Another process may have bound the port after freePort released
		// it; any other failure will not go away by retrying.
		if !errors.Is(err, errAddrInUse) || attempt == portAttempts {
			tb.Fatalf("redistest: starting redis-server: %v", err)
		}
	}
}

// Client returns a go-redis client for s, closed when tb and its subtests have
// completed. It keeps working across Stop and Restart: commands fail while the
// server is stopped and succeed again once it is back.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			tb.Errorf("redistest: closing client for %s: %v", s.Addr, err)
		}
	})
	return c
}

// URL returns the server's address as a redis URL, "redis://127.0.0.1:port".
func (s *Server) URL() string {
	return "redis://" + s.Addr
}

// Stop stops the server now, for tests of a Redis outage: it sends SIGTERM,
// waits for the process to exit and sends SIGKILL if it has not within ten
// seconds. Stop on a stopped server does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	if err := p.stop(); err != nil {
		tb.Errorf("redistest: stopping redis-server on %s: %v\n%s", s.Addr, err, p.out.String())
	}
}

// Restart starts the server again on the same port, stopping it first if it is
// running, and waits until it accepts connections. The data set starts empty.
// While the port is still held (by a closing socket or another process) it
// retries for up to five seconds, then fails tb.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	deadline := time.NewTimer(rebindTimeout)
	defer deadline.Stop()
	var retry *time.Timer
	for {
		p, err := s.launch()
		if err == nil {
			s.proc = p
			return
		}
		if !errors.Is(err, errAddrInUse) {
			tb.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr, err)
		}
		if retry == nil {
			retry = time.NewTimer(rebindInterval)
			defer retry.Stop()
		} else {
			retry.Reset(rebindInterval)
		}
		select {
		case <-retry.C:
		case <-deadline.C:
			tb.Fatalf("redistest: restarting redis-server on %s: port still in use after %v: %v", s.Addr, rebindTimeout, err)
		}
	}
}

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("address already in use")

// launch starts redis-server on s.port and waits until it is ready. On error
// the process has exited.
//
// There is no --protected-mode flag: protected mode only refuses non-loopback
// clients of a server without a password, and this one binds loopback only.
func (s *Server) launch() (*process, error) {
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
	}, s.extra...)
	cmd := exec.Command(s.bin, args...)
	p, err := startProcess(cmd)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-p.ready:
		return p, nil
	case <-p.exited:
		out := p.out.Bytes()
		if bytes.Contains(out, addrInUse) {
			return nil, fmt.Errorf("port %d: %w\n%s", s.port, errAddrInUse, out)
		}
		return nil, fmt.Errorf("redis-server exited before it was ready (%v):\n%s", p.err, out)
	case <-timer.C:
		stopErr := p.stop()
		return nil, fmt.Errorf("redis-server not ready after %v (stopping it: %v):\n%s", readyTimeout, stopErr, p.out.String())
	}
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	out    *output
	ready  chan struct{} // closed when the ready line was printed
	exited chan struct{} // closed once the process was waited for
	err    error         // result of cmd.Wait; read only after exited is closed
}

// startProcess starts cmd with its output captured, and a goroutine that
// watches it. The goroutine ends when the process exits: its stdout then
// reaches EOF.
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{
		cmd:    cmd,
		out:    &output{},
		ready:  make(chan struct{}),
		exited: make(chan struct{}),
	}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("creating stdout pipe: %w", err)
	}
	configure(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	go p.watch(stdout)
	return p, nil
}

// watch copies stdout into p.out, closes p.ready at the ready line, and reaps
// the process once stdout is closed.
func (p *process) watch(stdout io.Reader) {
	defer close(p.exited)
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		line := sc.Bytes()
		p.out.writeLine(line)
		if !ready && bytes.Contains(line, readyLine) {
			ready = true
			close(p.ready)
		}
	}
	// Scan stops early on a line longer than its buffer. Keep draining, or
	// redis-server would block on a full pipe.
	_, _ = io.Copy(p.out, stdout)
	// os/exec requires all reads from the pipe to finish before Wait.
	p.err = p.cmd.Wait()
}

// stop sends SIGTERM, then SIGKILL if the process is still running after
// stopTimeout, and waits for it to be reaped.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGTERM to pid %d: %w", p.cmd.Process.Pid, err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing pid %d: %w", p.cmd.Process.Pid, err)
	}
	timer.Reset(stopTimeout)
	select {
	case <-p.exited:
		return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", p.cmd.Process.Pid, stopTimeout)
	case <-timer.C:
		return fmt.Errorf("pid %d still running %v after SIGKILL", p.cmd.Process.Pid, stopTimeout)
	}
}

// output collects a process's stdout and stderr for failure messages.
type output struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

// Write implements io.Writer for cmd.Stderr and the final stdout drain.
func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(b)
}

func (o *output) writeLine(line []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(line)
	o.buf.WriteByte('\n')
}

// Bytes returns a copy of everything written so far.
func (o *output) Bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.buf.Bytes())
}

func (o *output) String() string {
	return string(o.Bytes())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, err
	}
	return port, nil
}
