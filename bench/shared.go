//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// targetShared is Sluice with its quotas in Redis; targetSluice, in
// `bench shared`, is the same binary and config without Redis.
const targetShared = "sluice-shared"

// The targets of `bench shared`, from issue 6.
const (
	sharedP99Goal   = 2 * time.Millisecond // p99 Sluice adds in shared mode
	roundTripsGoal  = 1.0                  // Redis commands per request, on average
	redisLostNeedle = "redis unreachable"  // what Sluice logs when it falls back to local limits
)

// sharedSettings are the flags of `bench shared`.
type sharedSettings struct {
	rounds    int
	rates     []int         // fixed rates, req/s
	duration  time.Duration // measured window of each phase
	warmup    time.Duration // unmeasured lead-in of each phase
	conns     int
	sluiceBin string // prebuilt Sluice; empty: go build the module root
	loadCPU   string // taskset CPU lists
	serverCPU string
	redisCPU  string
}

func parseSharedFlags(args []string, stderr io.Writer) (sharedSettings, error) {
	var s sharedSettings
	fs := flag.NewFlagSet("bench shared", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&s.rounds, "rounds", 3, "interleaved rounds; the section gives medians across them")
	rates := fs.String("rates", "1000,3000", "comma-separated fixed `rates`, in requests per second")
	fs.DurationVar(&s.duration, "duration", 10*time.Second, "measured length of each fixed-rate phase")
	fs.IntVar(&s.conns, "conns", 64, "load generator connections")
	fs.StringVar(&s.sluiceBin, "sluice-bin", "", "prebuilt Sluice `binary` (default: go build the module root)")
	fs.StringVar(&s.loadCPU, "load-cpu", "0", "taskset `CPU list` of the load generator")
	fs.StringVar(&s.serverCPU, "server-cpu", "1", "taskset `CPU list` of the upstream and both Sluices")
	fs.StringVar(&s.redisCPU, "redis-cpu", "", "taskset `CPU list` of redis-server (default: -server-cpu)")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if s.redisCPU == "" {
		s.redisCPU = s.serverCPU
	}
	for f := range strings.SplitSeq(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r < 1 || r > 100_000 {
			return s, fmt.Errorf("-rates: %q is not a rate in [1, 100000]", f)
		}
		if slices.Contains(s.rates, r) {
			return s, fmt.Errorf("-rates: %d given twice", r)
		}
		s.rates = append(s.rates, r)
	}
	s.warmup = min(max(s.duration/10, 200*time.Millisecond), time.Second)
	switch {
	case s.rounds < 1 || s.rounds > 20:
		return s, fmt.Errorf("-rounds: %d is not in [1, 20]", s.rounds)
	case len(s.rates) > 8:
		return s, fmt.Errorf("-rates: %d rates, at most 8", len(s.rates))
	case s.duration < 100*time.Millisecond || s.duration > 5*time.Minute:
		return s, fmt.Errorf("-duration: %v is not in [100ms, 5m]", s.duration)
	case s.conns < 1 || s.conns > 1024:
		return s, fmt.Errorf("-conns: %d is not in [1, 1024]", s.conns)
	}
	return s, nil
}

// sharedRun is one phase of `bench shared`: the load result and what Redis
// did meanwhile.
type sharedRun struct {
	load  loadResult
	redis redisDelta
	// redisLost is set when the shared Sluice logged during the phase that
	// Redis was unreachable: it then limited on its own for a while.
	redisLost bool
}

// sharedEnv is what the phases of `bench shared` run against.
type sharedEnv struct {
	s         sharedSettings
	self      string
	up        *proc
	redis     *proc
	rc        *redis.Client
	inside    map[string]bool // commands Sluice's Lua scripts run
	sharedLog string          // the shared Sluice's log
	metrics   string          // the shared Sluice's /metrics URL
	procs     []*proc         // everything started, to check they still run
}

// runShared measures Sluice in shared mode against the same Sluice in
// single-replica mode and the upstream called directly, at fixed rates, and
// prints a markdown section. It stops everything it started before it
// returns, on error and on cancellation too.
func runShared(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	s, err := parseSharedFlags(args, stderr)
	if err != nil {
		return err
	}
	clkTck, err := clockTicks(ctx)
	if err != nil {
		return err
	}
	if err := checkPinning(ctx, s.loadCPU, s.serverCPU, s.redisCPU); err != nil {
		return err
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not found (%w): install it (apt-get install redis-server) and re-run", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the bench binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "sluice-bench-shared-")
	if err != nil {
		return fmt.Errorf("creating the work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	inside, err := scriptCommands(root)
	if err != nil {
		return err
	}
	sluiceBin := s.sluiceBin
	if sluiceBin == "" {
		fmt.Fprintln(stderr, "bench: building sluice")
		if sluiceBin, err = buildSluice(ctx, root, dir); err != nil {
			return err
		}
	}
	// No nginx here: the report does not print its version.
	m := readMachine(ctx, "", root, driverSettings{sluiceBin: s.sluiceBin})

	var procs []*proc
	defer func() { err = errors.Join(err, stopAll(procs, 10*time.Second)) }()
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	upAddr, redisAddr := loopback(ports[0]), loopback(ports[1])

	fmt.Fprintln(stderr, "bench: starting the upstream, redis-server and two sluices")
	up, err := startProc("upstream", s.serverCPU, dir, filepath.Join(dir, "upstream.log"), self, "upstream",
		"-listen", upAddr, "-chunks", strconv.Itoa(streamChunks), "-chunk-delay", streamChunkDelay.String())
	if err != nil {
		return err
	}
	procs = append(procs, up)
	if err := waitReady(ctx, up, 10*time.Second, tcpReady(upAddr)); err != nil {
		return err
	}

	rdir := filepath.Join(dir, "redis")
	if err := os.Mkdir(rdir, 0o755); err != nil {
		return fmt.Errorf("creating the redis directory: %w", err)
	}
	rp, err := startProc("redis-server", s.redisCPU, rdir, filepath.Join(rdir, "redis.log"), redisBin,
		"--port", strconv.Itoa(ports[1]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rdir)
	if err != nil {
		return err
	}
	procs = append(procs, rp)
	// One connection, opened before the first reading, so that the bench's
	// own connection set-up never falls inside a phase.
	rc := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 1, DisableIdentity: true, MaxRetries: -1})
	defer rc.Close()
	if err := waitReady(ctx, rp, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		return rc.Ping(ctx).Err()
	}); err != nil {
		return err
	}
	redisVersion, err := readRedisVersion(ctx, rc)
	if err != nil {
		return err
	}

	single, err := startSluice(sluiceBin, s.serverCPU, dir, targetSluice, loopback(ports[2]), loopback(ports[3]), upAddr, "")
	if err != nil {
		return err
	}
	procs = append(procs, single)
	shared, err := startSluice(sluiceBin, s.serverCPU, dir, targetShared, loopback(ports[4]), loopback(ports[5]), upAddr,
		"redis://"+redisAddr)
	if err != nil {
		return err
	}
	procs = append(procs, shared)
	for i, p := range []*proc{single, shared} {
		if err := waitReady(ctx, p, 20*time.Second, httpReady("http://"+loopback(ports[3+2*i])+"/readyz")); err != nil {
			return err
		}
	}
	targets := []target{
		{name: targetDirect, addr: upAddr},
		{name: targetSluice, addr: loopback(ports[2]), proxy: single},
		{name: targetShared, addr: loopback(ports[4]), proxy: shared},
	}
	env := &sharedEnv{s: s, self: self, up: up, redis: rp, rc: rc, inside: inside, sharedLog: shared.logPath,
		metrics: "http://" + loopback(ports[5]) + "/metrics", procs: procs}
	results, err := env.measure(ctx, targets, clkTck, stderr)
	if err != nil {
		return err
	}
	rep := &sharedReport{
		command:      commandLine(append([]string{"shared"}, args...)),
		when:         time.Now().UTC(),
		machine:      m,
		redisVersion: redisVersion,
		s:            s,
		clkTck:       clkTck,
		results:      results,
	}
	_, err = io.WriteString(stdout, rep.markdown())
	return err
}

// sharedPhases are the fixed-rate phases of `bench shared`, in order.
func (env *sharedEnv) phases() []phase {
	s := env.s
	ps := make([]phase, 0, len(s.rates))
	for _, rate := range s.rates {
		ps = append(ps, phase{
			name: ratePhase(rate),
			args: []string{"-mode", modeRate, "-rate", strconv.Itoa(rate), "-duration", s.duration.String(),
				"-warmup", s.warmup.String(), "-conns", strconv.Itoa(s.conns), "-redis-pids", strconv.Itoa(env.redis.pid())},
			timeout: 2*(s.warmup+s.duration) + 30*time.Second,
		})
	}
	return ps
}

// measure checks and warms up every target, then runs every phase against
// every target, round by round.
func (env *sharedEnv) measure(ctx context.Context, targets []target, clkTck int, stderr io.Writer) (map[runKey]sharedRun, error) {
	for _, t := range targets {
		if err := preflight(t.addr); err != nil {
			return nil, fmt.Errorf("checking %s before measuring: %w", t.name, err)
		}
	}
	fmt.Fprintln(stderr, "bench: warming up")
	warm := phase{
		name: "warm-up",
		args: []string{"-mode", modeMax, "-duration", (2 * env.s.warmup).String(), "-warmup", "0s",
			"-conns", strconv.Itoa(env.s.conns), "-redis-pids", strconv.Itoa(env.redis.pid())},
		timeout: 4*env.s.warmup + 30*time.Second,
	}
	for _, t := range targets {
		run, err := env.run(ctx, t, warm)
		if err != nil {
			return nil, fmt.Errorf("warming up %s: %w", t.name, err)
		}
		if t.name == targetShared && run.redis.scripts == 0 {
			return nil, fmt.Errorf("warming up %s: it ran no script in redis: is it in shared mode? %s",
				t.name, t.proxy.logTail())
		}
	}

	results := make(map[runKey]sharedRun)
	for r := range env.s.rounds {
		order := append(append([]target(nil), targets[r%len(targets):]...), targets[:r%len(targets)]...)
		for _, ph := range env.phases() {
			for _, t := range order {
				run, err := env.run(ctx, t, ph)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s, %s: %w", r+1, ph.name, t.name, err)
				}
				for _, p := range env.procs {
					select {
					case <-p.done:
						return nil, fmt.Errorf("round %d, %s, %s: %s exited (%v): %s", r+1, ph.name, t.name, p.name, p.waitErr, p.logTail())
					default:
					}
				}
				results[runKey{r, t.name, ph.name}] = run
				fmt.Fprintf(stderr, "bench: round %d/%d %-8s %-13s %s  %s\n", r+1, env.s.rounds, ph.name, t.name,
					progress(run.load, clkTck), run.redis.progress(run.load.Sent))
			}
		}
	}
	return results, nil
}

// run runs one phase against t and reads Redis's counts, and the shared
// Sluice's own count of its round trips, around it.
func (env *sharedEnv) run(ctx context.Context, t target, ph phase) (sharedRun, error) {
	var run sharedRun
	trips0 := env.sluiceRoundTrips()
	before, err := readRedisStats(ctx, env.rc)
	if err != nil {
		return run, err
	}
	lost0 := countInFile(env.sharedLog, redisLostNeedle)
	if run.load, err = runPhase(ctx, env.s.loadCPU, env.self, t, env.up, ph); err != nil {
		return run, err
	}
	after, err := readRedisStats(ctx, env.rc)
	if err != nil {
		return run, err
	}
	trips1 := env.sluiceRoundTrips()
	run.redisLost = countInFile(env.sharedLog, redisLostNeedle) > lost0
	if run.redis, err = diffRedisStats(before, after, env.inside); err != nil {
		return run, err
	}
	run.redis.sluiceTrips = -1
	if trips0 >= 0 && trips1 >= trips0 {
		run.redis.sluiceTrips = trips1 - trips0
	}
	return run, nil
}

// sluiceRoundTrips returns the shared Sluice's sluice_redis_round_trips_total,
// or -1 when its /metrics cannot be read or does not have it (an older
// Sluice): the section then leaves the column empty.
func (env *sharedEnv) sluiceRoundTrips() int64 {
	b, err := httpGet(env.metrics)
	if err != nil {
		return -1
	}
	v, ok := parseMetrics(b, metricRedisRoundTrips)[metricRedisRoundTrips]
	if !ok {
		return -1
	}
	return int64(v)
}

// metricRedisRoundTrips counts, in Sluice, each command sent alone or
// pipeline sent to Redis.
const metricRedisRoundTrips = "sluice_redis_round_trips_total"

// countInFile counts needle in the file at path; 0 when it cannot be read.
func countInFile(path, needle string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(needle))
}

// cmdStat is one line of INFO commandstats.
type cmdStat struct {
	calls int64
	usec  int64 // Redis time in the command, scripts' inner commands included
}

// redisStats is one reading of the Redis counters the bench compares.
type redisStats struct {
	cmds  map[string]cmdStat // INFO commandstats
	reads int64              // total_reads_processed of INFO stats
}

// readRedisStats reads INFO commandstats and stats, in one command so that
// a reading adds exactly one to the counters it reads.
func readRedisStats(ctx context.Context, rc *redis.Client) (redisStats, error) {
	var st redisStats
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	text, err := rc.Info(ctx, "commandstats", "stats").Result()
	if err != nil {
		return st, fmt.Errorf("reading redis commandstats: %w", err)
	}
	if st.cmds, err = parseCommandStats(text); err != nil {
		return st, err
	}
	if st.reads, err = parseReads(text); err != nil {
		return st, err
	}
	return st, nil
}

// parseReads returns total_reads_processed from INFO stats: how often Redis
// read from a client socket. A command sent alone is one read, and so is a
// pipeline written at once, as go-redis writes one: it counts round trips.
func parseReads(text string) (int64, error) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_reads_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("malformed total_reads_processed %q", v)
			}
			return n, nil
		}
	}
	return 0, errors.New("redis INFO stats has no total_reads_processed (Redis 6 or later needed)")
}

// parseCommandStats parses INFO commandstats: lines
// "cmdstat_NAME:calls=N,usec=U,usec_per_call=X,...", where NAME may be
// "config|resetstat" for a subcommand.
func parseCommandStats(text string) (map[string]cmdStat, error) {
	out := make(map[string]cmdStat)
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("malformed commandstats line %q", strings.TrimSpace(line))
		}
		var st cmdStat
		var haveCalls, haveUsec bool
		for kv := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			var err error
			switch k {
			case "calls":
				st.calls, err = strconv.ParseInt(v, 10, 64)
				haveCalls = true
			case "usec":
				st.usec, err = strconv.ParseInt(v, 10, 64)
				haveUsec = true
			}
			if err != nil {
				return nil, fmt.Errorf("malformed commandstats line %q: %w", strings.TrimSpace(line), err)
			}
		}
		if !haveCalls || !haveUsec {
			return nil, fmt.Errorf("malformed commandstats line %q: no calls or usec", strings.TrimSpace(line))
		}
		out[strings.ToLower(name)] = st
	}
	return out, nil
}

// scriptCommandNames are the commands that run a Lua script.
var scriptCommandNames = []string{"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}

// redisDelta is what Redis did between two readings of its counters.
type redisDelta struct {
	// client counts the commands clients sent: every command counted
	// less those run inside scripts and the bench's own INFO. Pipelined
	// commands count one each.
	client int64
	// reads counts the reads from client sockets, less the bench's own
	// reading: the round trips, a pipeline counting once.
	reads int64
	// sluiceTrips is the shared Sluice's own count of its round trips
	// (sluice_redis_round_trips_total); -1 when it has none.
	sluiceTrips int64
	// scripts and scriptUsec count the script calls (EVALSHA, EVAL) and
	// the Redis time they took, their inner commands included.
	scripts    int64
	scriptUsec int64
	// inside counts the commands run inside the scripts.
	inside int64
	// byName counts the client commands by name.
	byName map[string]int64
}

// diffRedisStats returns what Redis did from before to after. inside
// names the commands that Sluice's scripts run: commandstats counts those
// too, and they are no round trips.
func diffRedisStats(before, after redisStats, inside map[string]bool) (redisDelta, error) {
	d := redisDelta{byName: make(map[string]int64), sluiceTrips: -1}
	// The reading after is one read of the bench's; the one before
	// counted its own read already.
	if d.reads = after.reads - before.reads - 1; d.reads < 0 {
		return d, errors.New("redis total_reads_processed went backwards: was redis restarted or its stats reset?")
	}
	for name, a := range after.cmds {
		b := before.cmds[name]
		calls, usec := a.calls-b.calls, a.usec-b.usec
		if calls < 0 || usec < 0 {
			return d, fmt.Errorf("redis commandstats of %s went backwards: was redis restarted or its stats reset?", name)
		}
		if calls == 0 {
			continue
		}
		base, _, _ := strings.Cut(name, "|")
		switch {
		case base == "info": // the bench's readings
		case inside[base]:
			d.inside += calls
		default:
			d.client += calls
			d.byName[name] += calls
			if slices.Contains(scriptCommandNames, base) {
				d.scripts += calls
				d.scriptUsec += usec
			}
		}
	}
	return d, nil
}

// progress is a one-line summary of d over sent requests, for the log.
func (d redisDelta) progress(sent int64) string {
	if sent <= 0 {
		return fmt.Sprintf("redis: %d commands", d.client)
	}
	return fmt.Sprintf("redis: %.3f round trips/req, %.3f commands/req, %.3f scripts/req, %.1f µs/script",
		float64(d.reads)/float64(sent), float64(d.client)/float64(sent), float64(d.scripts)/float64(sent), d.usecPerScript())
}

func (d redisDelta) usecPerScript() float64 {
	if d.scripts == 0 {
		return 0
	}
	return float64(d.scriptUsec) / float64(d.scripts)
}

// luaCall finds the commands a Lua script runs: redis.call('HSET', ...).
var luaCall = regexp.MustCompile(`redis\.p?call\(\s*['"]([A-Za-z_|]+)['"]`)

// scriptCommands returns the commands Sluice's Lua scripts run, in lower
// case, from the .lua files under root (Redis counts each in
// commandstats as if a client had sent it).
func scriptCommands(root string) (map[string]bool, error) {
	cmds := make(map[string]bool)
	files := 0
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if path != root && (strings.HasPrefix(e.Name(), ".") || e.Name() == "testdata" || e.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if filepath.Ext(path) != ".lua" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, m := range luaCall.FindAllSubmatch(b, -1) {
			cmds[strings.ToLower(string(m[1]))] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading sluice's Lua scripts: %w", err)
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("reading sluice's Lua scripts: no redis.call in %d .lua files under %s", files, root)
	}
	return cmds, nil
}

// readRedisVersion returns redis_version from INFO server.
func readRedisVersion(ctx context.Context, rc *redis.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	text, err := rc.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("reading the redis version: %w", err)
	}
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v, nil
		}
	}
	return "unknown", nil
}
