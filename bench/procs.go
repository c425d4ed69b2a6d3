//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// proc is a long-running process the driver started, pinned to CPUs with
// taskset (which execs the command, so the pid is the command's). The
// driver stops it with stop, and never signals a process it did not start.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string        // its stdout and stderr
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // how it exited; read only after done is closed
}

// startProc starts bin with args on cpus, in dir, with output to logPath.
func startProc(name, cpus, dir, logPath, bin string, args ...string) (*proc, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log for %s: %w", name, err)
	}
	defer log.Close() // the child has its own copy once started
	cmd := exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: Ctrl-C reaches the driver only, which
		// then stops everything in order.
		Setpgid: true,
		// If the driver dies without stopping it, it gets SIGTERM (nginx's
		// master then stops its workers).
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	// This goroutine ends when the process exits; stop makes it exit.
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL if the process has not exited within
// grace, and waits for it to be reaped.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s (pid %d): %w", p.name, p.pid(), err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", p.name, p.pid(), err)
	}
	t.Reset(grace)
	select {
	case <-p.done:
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid(), grace)
	case <-t.C:
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.pid())
	}
}

// logTail returns the end of the process's output, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// waitReady polls check every 20ms until it succeeds, the process exits,
// ctx is cancelled or timeout passes.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, check func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("%s exited while starting (%v): %s", p.name, p.waitErr, p.logTail())
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %v: %w: %s", p.name, timeout, err, p.logTail())
		case <-tick.C:
		}
	}
}

// tcpReady reports whether something accepts connections on addr.
func tcpReady(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// httpReady reports whether GET url answers 200.
func httpReady(url string) func() error {
	return func() error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		if err := fasthttp.DoTimeout(req, resp, 500*time.Millisecond); err != nil {
			return err
		}
		if code := resp.StatusCode(); code != fasthttp.StatusOK {
			return fmt.Errorf("GET %s: %w", url, statusError(code))
		}
		return nil
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		// Kept open until all are chosen, so that none is chosen twice.
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// cpuTicks returns the user plus system CPU time of pids, in clock ticks,
// from /proc/PID/stat (all threads of each process included).
func cpuTicks(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
		}
		st, err := parseStat(b)
		if err != nil {
			return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
		}
		sum += st.utime + st.stime
	}
	return sum, nil
}

// machineTicks returns the CPU time of all CPUs, in clock ticks, spent busy
// (user, nice and system; interrupts are left out as the kernel may not
// charge them to the process they serve) and stolen by the hypervisor, from
// the first line of /proc/stat (proc(5)).
func machineTicks() (busy, steal int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("reading machine CPU time: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("reading machine CPU time: malformed /proc/stat: %q", line)
	}
	var v [8]int64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("reading machine CPU time: %w", err)
		}
	}
	return v[0] + v[1] + v[2], v[7], nil
}

// procStat holds the fields of /proc/PID/stat that the bench uses.
type procStat struct {
	ppid         int
	utime, stime int64 // clock ticks
}

// parseStat parses /proc/PID/stat (proc(5)). The command name, field 2, is
// in parentheses and may hold spaces and parentheses itself, so the other
// fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	var st procStat
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return st, errors.New("malformed stat: no command name")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return st, fmt.Errorf("malformed stat: %d fields after the name", len(f))
	}
	var err error
	if st.ppid, err = strconv.Atoi(f[1]); err != nil { // field 4
		return st, fmt.Errorf("malformed stat ppid: %w", err)
	}
	if st.utime, err = strconv.ParseInt(f[11], 10, 64); err != nil { // field 14
		return st, fmt.Errorf("malformed stat utime: %w", err)
	}
	if st.stime, err = strconv.ParseInt(f[12], 10, 64); err != nil { // field 15
		return st, fmt.Errorf("malformed stat stime: %w", err)
	}
	return st, nil
}

// childPIDs returns the pids of the processes whose parent is pid.
func childPIDs(pid int) ([]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited since the listing
		}
		st, err := parseStat(b)
		if err != nil || st.ppid != pid {
			continue
		}
		kid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err != nil {
			continue
		}
		kids = append(kids, kid)
	}
	return kids, nil
}

// stopAll stops procs in reverse order of starting, each given grace to
// exit, and returns every error joined.
func stopAll(procs []*proc, grace time.Duration) error {
	var err error
	for i := len(procs) - 1; i >= 0; i-- {
		err = errors.Join(err, procs[i].stop(grace))
	}
	return err
}
