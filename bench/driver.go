//go:build linux

package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/valyala/fasthttp"
)

//go:embed nginx.conf.tmpl
var nginxConfTemplate string

// The fixed open-loop rates, in requests per second. The Sluice latency
// target is set at rateHigh.
const (
	rateLow  = 1000
	rateHigh = 3000
)

// The fake upstream streams this many SSE chunks this far apart, so that
// the first body byte is well ahead of the end of the stream.
const (
	streamChunks     = 3
	streamChunkDelay = 2 * time.Millisecond
)

// Target names, in the order of the first round.
const (
	targetDirect = "direct"
	targetNginx  = "nginx"
	targetSluice = "sluice"
)

// driverSettings are the flags of the driver.
type driverSettings struct {
	rounds     int
	out        string        // report file; empty: stdout only
	duration   time.Duration // measured window of each max and rate phase
	warmup     time.Duration // unmeasured lead-in of each max and rate phase
	ttfbReqs   int           // measured streamed requests per ttfb phase
	ttfbWarm   int           // unmeasured streamed requests before them
	conns      int           // load generator connections (max, rate)
	sluiceBin  string        // prebuilt Sluice; empty: go build the module root
	skipSluice bool
	quick      bool
	loadCPU    string // taskset CPU list for the load generator
	serverCPU  string // taskset CPU list for the upstream and the proxies
}

func parseDriverFlags(args []string, stderr io.Writer) (driverSettings, error) {
	var s driverSettings
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&s.rounds, "rounds", 3, "interleaved rounds; the report gives medians across them")
	fs.StringVar(&s.out, "out", "", "also write the markdown report to this `file`")
	fs.DurationVar(&s.duration, "duration", 5*time.Second, "measured length of each throughput and fixed-rate phase")
	fs.StringVar(&s.sluiceBin, "sluice-bin", "", "prebuilt Sluice `binary` (default: go build the module root)")
	fs.BoolVar(&s.skipSluice, "skip-sluice", false, "measure direct and nginx only")
	fs.BoolVar(&s.quick, "quick", false, "short phases, for a smoke run")
	fs.IntVar(&s.conns, "conns", 64, "load generator connections")
	fs.IntVar(&s.ttfbReqs, "ttfb-requests", 500, "streamed requests per time-to-first-byte phase")
	fs.StringVar(&s.loadCPU, "load-cpu", "0", "taskset `CPU list` of the load generator")
	fs.StringVar(&s.serverCPU, "server-cpu", "1", "taskset `CPU list` of the upstream and the proxies")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if s.quick {
		if !set["duration"] {
			s.duration = time.Second
		}
		if !set["ttfb-requests"] {
			s.ttfbReqs = 100
		}
	}
	s.warmup = min(max(s.duration/10, 200*time.Millisecond), time.Second)
	s.ttfbWarm = min(max(s.ttfbReqs/20, 5), 50)
	switch {
	case s.rounds < 1 || s.rounds > 20:
		return s, fmt.Errorf("-rounds: %d is not in [1, 20]", s.rounds)
	case s.duration < 100*time.Millisecond || s.duration > 5*time.Minute:
		return s, fmt.Errorf("-duration: %v is not in [100ms, 5m]", s.duration)
	case s.conns < 1 || s.conns > 1024:
		return s, fmt.Errorf("-conns: %d is not in [1, 1024]", s.conns)
	case s.ttfbReqs < 1 || s.ttfbReqs > 100_000:
		return s, fmt.Errorf("-ttfb-requests: %d is not in [1, 100000]", s.ttfbReqs)
	case s.skipSluice && s.sluiceBin != "":
		return s, errors.New("-sluice-bin and -skip-sluice contradict each other")
	}
	return s, nil
}

// target is one thing the load generator measures.
type target struct {
	name  string
	addr  string
	proxy *proc // nil when direct
}

// phase is one load measurement, run against every target in a round.
type phase struct {
	name    string
	args    []string      // for `bench load`, without -addr and the pids
	timeout time.Duration // bound on the whole phase
}

func phases(s driverSettings) []phase {
	window := []string{"-duration", s.duration.String(), "-warmup", s.warmup.String(), "-conns", strconv.Itoa(s.conns)}
	bound := 2*(s.warmup+s.duration) + 30*time.Second
	ps := []phase{{name: phaseMax, args: append([]string{"-mode", modeMax}, window...), timeout: bound}}
	for _, rate := range []int{rateLow, rateHigh} {
		ps = append(ps, phase{
			name:    ratePhase(rate),
			args:    append([]string{"-mode", modeRate, "-rate", strconv.Itoa(rate)}, window...),
			timeout: bound,
		})
	}
	return append(ps, phase{
		name:    phaseTTFB,
		args:    []string{"-mode", modeTTFB, "-requests", strconv.Itoa(s.ttfbReqs), "-warmup-requests", strconv.Itoa(s.ttfbWarm)},
		timeout: 2 * time.Minute,
	})
}

// Phase names.
const (
	phaseMax  = "max"
	phaseTTFB = "ttfb"
)

func ratePhase(rate int) string { return "rate" + strconv.Itoa(rate) }

// runKey names one measurement of the report.
type runKey struct {
	round  int // from 0
	target string
	phase  string
}

// runDriver starts the upstream, nginx and Sluice, measures them round by
// round, and prints the report. It stops everything it started before it
// returns, on error and on cancellation too.
func runDriver(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	s, err := parseDriverFlags(args, stderr)
	if err != nil {
		return err
	}
	clkTck, err := clockTicks(ctx)
	if err != nil {
		return err
	}
	if err := checkPinning(ctx, s.loadCPU, s.serverCPU); err != nil {
		return err
	}
	nginxBin, err := findNginx(ctx, stderr)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the bench binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return fmt.Errorf("creating the work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	// nginx started as root runs its worker as another user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("opening the work directory: %w", err)
	}

	var root string // the module root, when Sluice is built from it
	sluiceBin := s.sluiceBin
	if !s.skipSluice && sluiceBin == "" {
		if root, err = moduleRoot(ctx); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "bench: building sluice")
		if sluiceBin, err = buildSluice(ctx, root, dir); err != nil {
			return err
		}
	}
	m := readMachine(ctx, nginxBin, root, s)

	var procs []*proc
	defer func() { err = errors.Join(err, stopAll(procs, 10*time.Second)) }()
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	upAddr := loopback(ports[0])

	fmt.Fprintln(stderr, "bench: starting the upstream and the proxies")
	up, err := startProc("upstream", s.serverCPU, dir, filepath.Join(dir, "upstream.log"), self, "upstream",
		"-listen", upAddr, "-chunks", strconv.Itoa(streamChunks), "-chunk-delay", streamChunkDelay.String())
	if err != nil {
		return err
	}
	procs = append(procs, up)
	if err := waitReady(ctx, up, 10*time.Second, tcpReady(upAddr)); err != nil {
		return err
	}
	targets := []target{{name: targetDirect, addr: upAddr}}

	ng, err := startNginx(nginxBin, s.serverCPU, dir, loopback(ports[1]), upAddr)
	if err != nil {
		return err
	}
	procs = append(procs, ng)
	if err := waitReady(ctx, ng, 10*time.Second, tcpReady(loopback(ports[1]))); err != nil {
		return err
	}
	targets = append(targets, target{name: targetNginx, addr: loopback(ports[1]), proxy: ng})

	if !s.skipSluice {
		sl, err := startSluice(sluiceBin, s.serverCPU, dir, "sluice", loopback(ports[2]), loopback(ports[3]), upAddr, "")
		if err != nil {
			return err
		}
		procs = append(procs, sl)
		if err := waitReady(ctx, sl, 20*time.Second, httpReady("http://"+loopback(ports[3])+"/readyz")); err != nil {
			return err
		}
		targets = append(targets, target{name: targetSluice, addr: loopback(ports[2]), proxy: sl})
	}

	results, err := measure(ctx, s, self, targets, up, procs, clkTck, stderr)
	if err != nil {
		return err
	}

	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	rep := &report{
		command: commandLine(args),
		when:    time.Now().UTC(),
		machine: m,
		s:       s,
		clkTck:  clkTck,
		targets: names,
		results: results,
	}
	md := rep.markdown()
	if _, err := io.WriteString(stdout, md); err != nil {
		return err
	}
	if s.out != "" {
		if err := os.WriteFile(s.out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	}
	return nil
}

// measure checks and warms up every target, then runs every phase against
// every target, round by round, and returns the results.
func measure(ctx context.Context, s driverSettings, self string, targets []target, up *proc, procs []*proc,
	clkTck int, stderr io.Writer) (map[runKey]loadResult, error) {
	for _, t := range targets {
		if err := preflight(t.addr); err != nil {
			return nil, fmt.Errorf("checking %s before measuring: %w", t.name, err)
		}
	}
	// One unmeasured burst at full load each, so that the first round does
	// not pay for connection pools, buffers and heaps growing.
	fmt.Fprintln(stderr, "bench: warming up")
	warm := phase{
		name:    "warm-up",
		args:    []string{"-mode", modeMax, "-duration", (2 * s.warmup).String(), "-warmup", "0s", "-conns", strconv.Itoa(s.conns)},
		timeout: 4*s.warmup + 30*time.Second,
	}
	for _, t := range targets {
		if _, err := runPhase(ctx, s.loadCPU, self, t, up, warm); err != nil {
			return nil, fmt.Errorf("warming up %s: %w", t.name, err)
		}
	}

	results := make(map[runKey]loadResult)
	for r := range s.rounds {
		// Rotating the order spreads any drift within a round over all targets.
		order := append(append([]target(nil), targets[r%len(targets):]...), targets[:r%len(targets)]...)
		for _, ph := range phases(s) {
			for _, t := range order {
				res, err := runPhase(ctx, s.loadCPU, self, t, up, ph)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s, %s: %w", r+1, ph.name, t.name, err)
				}
				for _, p := range procs {
					select {
					case <-p.done:
						return nil, fmt.Errorf("round %d, %s, %s: %s exited (%v): %s", r+1, ph.name, t.name, p.name, p.waitErr, p.logTail())
					default:
					}
				}
				results[runKey{r, t.name, ph.name}] = res
				fmt.Fprintf(stderr, "bench: round %d/%d %-8s %-7s %s\n", r+1, s.rounds, ph.name, t.name, progress(res, clkTck))
			}
		}
	}

	return results, nil
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// checkPinning fails early, with a hint, when taskset cannot pin a process
// to each of cpus.
func checkPinning(ctx context.Context, cpus ...string) error {
	for _, c := range cpus {
		if out, err := exec.CommandContext(ctx, "taskset", "-c", c, "true").CombinedOutput(); err != nil {
			return fmt.Errorf("pinning to CPU %s with taskset (the bench needs 2 CPUs, see -load-cpu and -server-cpu): %w: %s",
				c, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// runPhase runs `bench load` for one phase against t, pinned to loadCPU,
// and returns its result.
func runPhase(ctx context.Context, loadCPU, self string, t target, up *proc, ph phase) (loadResult, error) {
	var res loadResult
	args := append([]string{"-c", loadCPU, self, "load", "-addr", t.addr}, ph.args...)
	args = append(args, "-upstream-pids", strconv.Itoa(up.pid()))
	if t.proxy != nil {
		pids, err := processTree(t.proxy.pid())
		if err != nil {
			return res, err
		}
		args = append(args, "-proxy-pids", joinInts(pids))
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, ph.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if cerr := parent.Err(); cerr != nil {
			return res, cerr
		}
		return res, fmt.Errorf("running the load generator: %w: %s", err, bytes.TrimSpace(errOut.Bytes()))
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("reading the load generator's result: %w", err)
	}
	return res, nil
}

// processTree returns pid and its children: nginx's master and workers.
func processTree(pid int) ([]int, error) {
	kids, err := childPIDs(pid)
	if err != nil {
		return nil, fmt.Errorf("listing the children of pid %d: %w", pid, err)
	}
	return append([]int{pid}, kids...), nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// progress is a one-line summary of a phase, for the log.
func progress(r loadResult, clkTck int) string {
	var b strings.Builder
	switch r.Mode {
	case modeMax:
		fmt.Fprintf(&b, "%8.0f req/s", r.RPS)
		if r.Requests > 0 && r.ProxyTicks > 0 {
			fmt.Fprintf(&b, "  proxy %.1f µs/req", cpuMicros(r.ProxyTicks, r.Requests, clkTck))
		}
		if r.Requests > 0 {
			fmt.Fprintf(&b, "  upstream %.1f µs/req", cpuMicros(r.UpstreamTicks, r.Requests, clkTck))
		}
	case modeRate:
		fmt.Fprintf(&b, "p50 %s  p99 %s  (generator lag p50 %s)", micros(r.P50), micros(r.P99), micros(r.LagP50))
	case modeTTFB:
		fmt.Fprintf(&b, "first byte p50 %s  p99 %s  end p50 %s", micros(r.P50), micros(r.P99), micros(r.EndP50))
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, "  ERRORS %d (first: %s)", r.Errors, r.FirstError)
	}
	return b.String()
}

// preflight sends one plain and one streamed completion through addr and
// checks that both look right, so that a broken set-up fails here with a
// clear message instead of as a phase full of errors.
func preflight(addr string) error {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	for _, c := range []struct{ body, want string }{
		{chatBody, `"choices"`},
		{streamBody, "data:"},
	} {
		req := newChatRequest(addr, c.body)
		err := fasthttp.DoTimeout(req, resp, 5*time.Second)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			return err
		}
		if code := resp.StatusCode(); code != fasthttp.StatusOK {
			return fmt.Errorf("%w: %.300s", statusError(code), resp.Body())
		}
		if !bytes.Contains(resp.Body(), []byte(c.want)) {
			return fmt.Errorf("response without %s: %.300s", c.want, resp.Body())
		}
	}
	return nil
}

// startNginx writes the nginx config into dir/nginx and starts nginx on it.
func startNginx(bin, cpus, dir, listen, upstream string) (*proc, error) {
	ndir := filepath.Join(dir, "nginx")
	if err := os.Mkdir(ndir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the nginx directory: %w", err)
	}
	tmpl, err := template.New("nginx.conf").Parse(nginxConfTemplate)
	if err != nil {
		return nil, fmt.Errorf("parsing the nginx config template: %w", err)
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, struct{ Dir, Listen, Upstream string }{ndir, listen, upstream}); err != nil {
		return nil, fmt.Errorf("rendering the nginx config: %w", err)
	}
	confPath := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("writing the nginx config: %w", err)
	}
	// -e: the compiled-in error log may not be writable, and nginx opens it
	// before it reads the config.
	return startProc("nginx", cpus, ndir, filepath.Join(ndir, "stderr.log"), bin,
		"-e", filepath.Join(ndir, "error.log"), "-c", confPath, "-p", ndir+"/", "-g", "daemon off;")
}

// sluiceConfig is the bench's Sluice config: one default provider, the fake
// upstream, with every quota configured (so that each request is parsed,
// estimated, admitted through the scheduler and reconciled) but far above
// what the load can reach, so that nothing queues.
//
// The classes are Sluice's defaults without headroom. The fake upstream
// reports limits far below these (x-ratelimit-remaining-tokens: 999000)
// and Sluice lowers its buckets to what the provider reports left; a class
// with headroom then waits until its share of the configured burst is free
// again, seconds at these limits, and the quotas would bind after all.
const sluiceConfig = `# Generated by the Sluice benchmark.
listen: %s
log_level: warn
admin: {listen: %s}
classes:
  - {name: critical, max_wait: 30s, max_queue: 1000, weight: 8, headroom: 0}
  - {name: high, max_wait: 1m, max_queue: 5000, weight: 4, headroom: 0}
  - {name: default, max_wait: 2m, max_queue: 10000, weight: 2, headroom: 0}
  - {name: low, max_wait: 1h, max_queue: 100000, weight: 1, share: 0.5, headroom: 0}
providers:
  - name: openai
    base_url: http://%s
    default: true
    timeout: 60s
    limits:
      requests_per_minute: 600000000
      tokens_per_minute: 100000000000
      max_concurrency: 100000
`

// startSluice writes a Sluice config into dir/name and starts Sluice on it:
// [sluiceConfig], in shared mode when redisURL is not empty.
func startSluice(bin, cpus, dir, name, listen, admin, upstream, redisURL string) (*proc, error) {
	sdir := filepath.Join(dir, name)
	if err := os.Mkdir(sdir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the %s directory: %w", name, err)
	}
	confPath := filepath.Join(sdir, "sluice.yaml")
	if err := os.WriteFile(confPath, sluiceYAML(listen, admin, upstream, redisURL), 0o644); err != nil {
		return nil, fmt.Errorf("writing the %s config: %w", name, err)
	}
	// Run in sdir so that files Sluice writes by default stay in it.
	return startProc(name, cpus, sdir, filepath.Join(sdir, "sluice.log"), bin, "-config", confPath)
}

// sluiceYAML is [sluiceConfig] for these addresses, with its quotas kept in
// the Redis at redisURL (shared mode) when that is not empty. Both modes
// get the same limits, so that only where they are kept differs.
func sluiceYAML(listen, admin, upstream, redisURL string) []byte {
	b := fmt.Appendf(nil, sluiceConfig, listen, admin, upstream)
	if redisURL != "" {
		b = fmt.Appendf(b, "redis: {url: %q}\n", redisURL)
	}
	return b
}

// moduleRoot returns the directory of the main module (the Sluice repo).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("finding the module root: run the bench inside the Sluice module")
	}
	return filepath.Dir(gomod), nil
}

// buildSluice builds the Sluice binary from root into dir/bin.
func buildSluice(ctx context.Context, root, dir string) (string, error) {
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", fmt.Errorf("creating the bin directory: %w", err)
	}
	bin := filepath.Join(dir, "bin", "sluice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building sluice (or use -skip-sluice): %w\n%s", err, bytes.TrimSpace(out))
	}
	return bin, nil
}

// findNginx returns the nginx binary. When there is none and the bench runs
// as root on Debian or Ubuntu, it installs the distribution's nginx first.
func findNginx(ctx context.Context, stderr io.Writer) (string, error) {
	find := func() (string, error) {
		if p, err := exec.LookPath("nginx"); err == nil {
			return p, nil
		}
		// sbin is often not in a user's PATH.
		return exec.LookPath("/usr/sbin/nginx")
	}
	if p, err := find(); err == nil {
		return p, nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		return "", errors.New("nginx not found: install it (e.g. apt-get install nginx-light) and re-run")
	}
	fmt.Fprintln(stderr, "bench: nginx not found, installing it with apt-get")
	install := func() error {
		var err error
		// nginx-light is the smallest build; newer releases only ship nginx.
		for _, pkg := range []string{"nginx-light", "nginx"} {
			cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", pkg)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			cmd.Stdout, cmd.Stderr = stderr, stderr
			if err = cmd.Run(); err == nil {
				return nil
			}
		}
		return err
	}
	if err := install(); err != nil {
		update := exec.CommandContext(ctx, "apt-get", "update", "-q")
		update.Stdout, update.Stderr = stderr, stderr
		if err := update.Run(); err != nil {
			return "", fmt.Errorf("installing nginx: apt-get update: %w", err)
		}
		if err := install(); err != nil {
			return "", fmt.Errorf("installing nginx: %w", err)
		}
	}
	p, err := find()
	if err != nil {
		return "", fmt.Errorf("nginx installed but not found: %w", err)
	}
	return p, nil
}

// clockTicks returns the kernel's clock ticks per second, the unit of CPU
// time in /proc/PID/stat.
func clockTicks(ctx context.Context) (int, error) {
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err != nil {
		return 0, fmt.Errorf("reading CLK_TCK: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("reading CLK_TCK: %q is not a tick rate", out)
	}
	return n, nil
}

// machine describes where the bench ran.
type machine struct {
	cpus   int
	model  string
	kernel string
	goVer  string
	nginx  string
	sluice string
}

func readMachine(ctx context.Context, nginxBin, root string, s driverSettings) machine {
	m := machine{cpus: runtime.NumCPU(), model: "unknown", kernel: "unknown", goVer: runtime.Version(), nginx: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	// nginx -v prints "nginx version: nginx/1.22.1" on stderr.
	if out, err := exec.CommandContext(ctx, nginxBin, "-v").CombinedOutput(); err == nil {
		m.nginx = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	}
	switch {
	case s.skipSluice:
		m.sluice = "not measured (-skip-sluice)"
	case s.sluiceBin != "":
		m.sluice = "prebuilt binary (-sluice-bin)"
	default:
		m.sluice = "built from the working tree"
		cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD")
		cmd.Dir = root
		if out, err := cmd.Output(); err == nil {
			m.sluice += " at " + strings.TrimSpace(string(out))
			st := exec.CommandContext(ctx, "git", "status", "--porcelain")
			st.Dir = root
			if out, err := st.Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
				m.sluice += " (with uncommitted changes)"
			}
		}
	}
	return m
}

// commandLine is how the bench was run, for the report: `go run ./bench`
// and the flags, without the temporary binary's path.
func commandLine(args []string) string {
	parts := []string{"go run ./bench"}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
