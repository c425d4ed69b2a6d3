//go:build linux

package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// sharedReport renders the result of `bench shared` as a markdown section.
type sharedReport struct {
	command      string
	when         time.Time
	machine      machine
	redisVersion string
	s            sharedSettings
	clkTck       int
	results      map[runKey]sharedRun
}

// sharedTargets are the targets of `bench shared`, in their canonical order.
var sharedTargets = []string{targetDirect, targetSluice, targetShared}

// sharedMetric is one value per round, compared as a median across rounds.
type sharedMetric struct {
	name   string
	format func(float64) string
	value  func(round int) (float64, bool)
	goal   string             // the target as text; empty: none
	pass   func(float64) bool // the check of the median against goal
	uses   []runKey           // round ignored: errors or interference in any of them flag the metric
	lost   bool               // whether a lost Redis flags it
}

func (rep *sharedReport) markdown() string {
	var b strings.Builder
	rep.header(&b)
	rep.goals(&b)
	rep.reference(&b)
	rep.absolute(&b)
	rep.problems(&b)
	rep.method(&b)
	return b.String()
}

func (rep *sharedReport) header(b *strings.Builder) {
	m, s := rep.machine, rep.s
	rates := make([]string, len(s.rates))
	for i, r := range s.rates {
		rates[i] = thousands(int64(r))
	}
	fmt.Fprintf(b, "## Shared mode (Redis)\n\n")
	fmt.Fprintf(b, "Sluice with its quotas in Redis (`redis.url` set) against the same Sluice in single-replica mode "+
		"and the fake upstream called directly, all on loopback and measured in the same run.\n\n")
	fmt.Fprintf(b, "| | |\n|---|---|\n")
	fmt.Fprintf(b, "| Command | `%s` |\n", rep.command)
	fmt.Fprintf(b, "| Date | %s |\n", rep.when.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(b, "| CPUs (nproc) | %d |\n", m.cpus)
	fmt.Fprintf(b, "| CPU model | %s |\n", m.model)
	fmt.Fprintf(b, "| Kernel | %s |\n", m.kernel)
	fmt.Fprintf(b, "| Go | %s |\n", m.goVer)
	fmt.Fprintf(b, "| Redis | redis-server %s, started by the bench on loopback, no persistence |\n", rep.redisVersion)
	fmt.Fprintf(b, "| Sluice | %s |\n", m.sluice)
	fmt.Fprintf(b, "| Pinning | load generator on CPU %s; upstream and both Sluices on CPU %s; redis-server on CPU %s |\n",
		s.loadCPU, s.serverCPU, s.redisCPU)
	fmt.Fprintf(b, "| Quotas | the same in both modes, far above the load: %s |\n", sharedLimitsText)
	fmt.Fprintf(b, "| Phases | per target and round: fixed rates of %s req/s, each %v after a %v warm-up, up to %d in flight |\n",
		strings.Join(rates, " and "), s.duration, s.warmup, s.conns)
	fmt.Fprintf(b, "| Rounds | %d, the order of the targets rotated each round |\n\n", s.rounds)
}

// sharedLimitsText describes the limits of [sluiceConfig].
const sharedLimitsText = "`requests_per_minute: 600000000`, `tokens_per_minute: 100000000000`, `max_concurrency: 100000`"

func (rep *sharedReport) goals(b *strings.Builder) {
	fmt.Fprintf(b, "### Targets\n\n")
	fmt.Fprintf(b, "| Metric | Target | Median | Per round | Result |\n|---|---|---|---|---|\n")
	for _, mt := range rep.metrics() {
		if mt.goal == "" {
			continue
		}
		med, per, ok := rep.median(mt)
		result := "not measured"
		if ok {
			result = "miss"
			if mt.pass(med) {
				result = "pass"
			}
			result += rep.flags(mt)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", mt.name, mt.goal, rep.text(mt, med, ok), per, result)
	}
	fmt.Fprintln(b)
}

func (rep *sharedReport) reference(b *strings.Builder) {
	fmt.Fprintf(b, "### Reference\n\n")
	fmt.Fprintf(b, "Added latency is Sluice's latency minus the direct one in the same round. "+
		"Per request means per request sent in the phase, its warm-up included, as the Redis and CPU counts cover the whole phase.\n\n")
	fmt.Fprintf(b, "| Metric | Median | Per round |\n|---|---|---|\n")
	for _, mt := range rep.metrics() {
		if mt.goal != "" {
			continue
		}
		med, per, ok := rep.median(mt)
		if !ok {
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", mt.name+rep.flags(mt), rep.text(mt, med, ok), per)
	}
	fmt.Fprintln(b)
}

func (rep *sharedReport) absolute(b *strings.Builder) {
	fmt.Fprintf(b, "### Absolute numbers per round\n\n")
	fmt.Fprintf(b, "Latencies in µs. Round trips are Redis's reads from clients (a pipeline counts once); "+
		"commands are those clients sent (each of a pipeline counts), not the ones the scripts run; "+
		"Sluice's count is its own `%s`. "+
		"For direct and single-replica phases they are what the idle shared Sluice sent meanwhile. "+
		"CPU is user + system time over the whole phase, per request sent.\n\n", metricRedisRoundTrips)
	fmt.Fprintf(b, "| Round | Rate | Target | p50 / p99 | Send lag p50 | Requests sent | Sluice CPU µs/req "+
		"| Redis round trips (per request) | Commands per request | Sluice's count per request | Script calls per request "+
		"| Redis µs per script call | Redis CPU µs/req | Errors |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for r := range rep.s.rounds {
		for _, rate := range rep.s.rates {
			for _, t := range sharedTargets {
				run, ok := rep.results[runKey{r, t, ratePhase(rate)}]
				if !ok {
					continue
				}
				l, d := run.load, run.redis
				cpu, trips, cmds, own, scripts, usec := "–", "–", "–", "–", "–", "–"
				if t != targetDirect {
					cpu = fmt.Sprintf("%.1f", cpuMicros(l.ProxyTicks, l.Sent, rep.clkTck))
				}
				if t == targetShared && l.Sent > 0 {
					per := func(n int64) string { return fmt.Sprintf("%.3f", float64(n)/float64(l.Sent)) }
					trips, cmds, scripts = per(d.reads), per(d.client), per(d.scripts)
					if d.sluiceTrips >= 0 {
						own = per(d.sluiceTrips)
					}
					usec = fmt.Sprintf("%.1f", d.usecPerScript())
				}
				fmt.Fprintf(b, "| %d | %s | %s | %s / %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %.1f | %d |\n",
					r+1, thousands(int64(rate)), t, micros(l.P50), micros(l.P99), micros(l.LagP50), thousands(l.Sent), cpu,
					thousands(d.reads), trips, cmds, own, scripts, usec, cpuMicros(l.RedisTicks, l.Sent, rep.clkTck), l.Errors)
			}
		}
	}
	fmt.Fprintln(b)
	idle, reads, seconds := rep.idleCommands()
	if seconds > 0 {
		fmt.Fprintf(b, "While the shared Sluice was idle (direct and single-replica phases, %.0f s in all) it made "+
			"%.1f round trips to Redis a second, with these commands: %s.\n\n", seconds, float64(reads)/seconds, byNameText(idle))
	}
	busy := make(map[string]int64)
	for k, run := range rep.results {
		if k.target == targetShared {
			for name, n := range run.redis.byName {
				busy[name] += n
			}
		}
	}
	fmt.Fprintf(b, "Commands the shared Sluice sent during its phases, by name: %s.\n\n", byNameText(busy))
}

// idleCommands sums the client commands, by name, and the round trips
// over the phases that did not load the shared Sluice, and gives their
// length in seconds.
func (rep *sharedReport) idleCommands() (map[string]int64, int64, float64) {
	idle := make(map[string]int64)
	var reads int64
	var seconds float64
	for k, run := range rep.results {
		if k.target == targetShared {
			continue
		}
		for name, n := range run.redis.byName {
			idle[name] += n
		}
		reads += run.redis.reads
		seconds += run.load.Seconds
	}
	return idle, reads, seconds
}

// byNameText lists counts by name, largest first: "evalsha 1,234, ping 2".
func byNameText(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	names := slices.Collect(maps.Keys(m))
	slices.SortFunc(names, func(a, b string) int {
		if m[a] != m[b] {
			return int(m[b] - m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %s", strings.ToUpper(n), thousands(m[n]))
	}
	return strings.Join(parts, ", ")
}

func (rep *sharedReport) problems(b *strings.Builder) {
	var errs, lost, interf []string
	for r := range rep.s.rounds {
		for _, rate := range rep.s.rates {
			for _, t := range sharedTargets {
				ph := ratePhase(rate)
				run, ok := rep.results[runKey{r, t, ph}]
				if !ok {
					continue
				}
				if run.load.Errors > 0 {
					errs = append(errs, fmt.Sprintf("- round %d, %s, %s: %d errors; first: `%s`",
						r+1, t, ph, run.load.Errors, run.load.FirstError))
				}
				if run.redisLost {
					lost = append(lost, fmt.Sprintf("- round %d, %s, %s", r+1, t, ph))
				}
				if rep.interfered(run.load) {
					interf = append(interf, fmt.Sprintf("- round %d, %s, %s: other processes %.0f%% of a CPU, stolen %.0f%%",
						r+1, t, ph, rep.share(run.load.OtherTicks, run.load)*100, rep.share(run.load.StealTicks, run.load)*100))
				}
			}
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(b, "### Errors\n\n**Some requests failed or were not answered 200; the numbers they feed are suspect.**\n\n%s\n\n",
			strings.Join(errs, "\n"))
	}
	if len(lost) > 0 {
		fmt.Fprintf(b, "### Redis lost\n\n**The shared Sluice logged that Redis was unreachable during these phases, "+
			"and limited on its own for a while: their Redis counts are too low.**\n\n%s\n\n", strings.Join(lost, "\n"))
	}
	if len(interf) > 0 {
		fmt.Fprintf(b, "### Interference\n\n**Other processes used the CPUs, or the hypervisor took them, "+
			"during these phases; their numbers measure the neighbours too.**\n\n%s\n\n", strings.Join(interf, "\n"))
	}
}

func (rep *sharedReport) method(b *strings.Builder) {
	fmt.Fprintf(b, "### Method\n\n")
	fmt.Fprintf(b, "- Request: `POST %s` with the %d-byte body `%s`, to the fake upstream (fasthttp) directly, "+
		"or through either Sluice.\n", chatPath, len(chatBody), chatBody)
	fmt.Fprintf(b, "- Both Sluices run the same binary and config (one default provider, every quota configured far above the load), "+
		"the shared one with `redis: {url: redis://...}` added: each request it admits runs the reserve script (EVALSHA), "+
		"and its usage correction and returned concurrency slot go with the next settle, batched every 50 ms.\n")
	fmt.Fprintf(b, "- Fixed rates: open loop; a kernel timer schedules a request every 1/rate s whatever the responses do, "+
		"up to %d in flight. Latency runs from the scheduled send time to the end of the response (no coordinated omission).\n",
		rep.s.conns)
	fmt.Fprintf(b, "- Redis round trips: `total_reads_processed` of `INFO stats`, read before and after each phase, "+
		"less the bench's own reading: Redis reads a command sent alone, or a pipeline written at once, in one read. "+
		"Checked against the shared Sluice's own `%s`, scraped from its admin listener at the same moments.\n", metricRedisRoundTrips)
	fmt.Fprintf(b, "- Redis commands: `INFO commandstats`, read in the same `INFO` command. Redis counts the commands a script "+
		"runs (`redis.call`) as calls too, so the commands found in Sluice's `.lua` files are left out, "+
		"as are the bench's own `INFO` readings; what remains is what clients sent, each command of a pipeline counting once. "+
		"Redis µs per script call is the change of `usec` over the change of `calls` of EVALSHA and EVAL together "+
		"(the reserve calls and the settles), inner commands included.\n")
	fmt.Fprintf(b, "- Redis CPU: user + system time of redis-server from `/proc/PID/stat` over the phase, clock ticks of 1/%d s.\n",
		rep.clkTck)
}

// metrics lists the section's comparisons, those with a target first.
func (rep *sharedReport) metrics() []sharedMetric {
	var goals, refs []sharedMetric
	us := func(v float64) string { return fmt.Sprintf("%+.0f µs", v) }
	per := func(v float64) string { return fmt.Sprintf("%.3f", v) }
	per4 := func(v float64) string { return fmt.Sprintf("%.4f", v) }
	one := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	for _, rate := range rep.s.rates {
		ph := ratePhase(rate)
		at := " at " + thousands(int64(rate)) + " req/s"
		keys := func(ts ...string) []runKey {
			ks := make([]runKey, len(ts))
			for i, t := range ts {
				ks[i] = runKey{target: t, phase: ph}
			}
			return ks
		}
		goals = append(goals,
			sharedMetric{
				name: "Sluice added p99 in shared mode" + at, format: us,
				goal:  fmt.Sprintf("< %d µs", sharedP99Goal.Microseconds()),
				value: rep.diff(ph, p99Of, targetShared, targetDirect),
				pass:  func(v float64) bool { return v < float64(sharedP99Goal.Microseconds()) },
				uses:  keys(targetShared, targetDirect), lost: true,
			},
			sharedMetric{
				name: "Redis round trips per request in shared mode" + at, format: per4,
				goal:  fmt.Sprintf("≤ %.4f", roundTripsGoal),
				value: rep.perRequest(ph, func(d redisDelta) int64 { return d.reads }),
				pass:  func(v float64) bool { return v <= roundTripsGoal },
				uses:  keys(targetShared), lost: true,
			},
		)
		refs = append(refs,
			sharedMetric{name: "single-replica added p50" + at, format: us,
				value: rep.diff(ph, p50Of, targetSluice, targetDirect), uses: keys(targetSluice, targetDirect)},
			sharedMetric{name: "single-replica added p99" + at, format: us,
				value: rep.diff(ph, p99Of, targetSluice, targetDirect), uses: keys(targetSluice, targetDirect)},
			sharedMetric{name: "shared added p50" + at, format: us,
				value: rep.diff(ph, p50Of, targetShared, targetDirect), uses: keys(targetShared, targetDirect), lost: true},
			sharedMetric{name: "shared − single-replica p50" + at, format: us,
				value: rep.diff(ph, p50Of, targetShared, targetSluice), uses: keys(targetShared, targetSluice), lost: true},
			sharedMetric{name: "shared − single-replica p99" + at, format: us,
				value: rep.diff(ph, p99Of, targetShared, targetSluice), uses: keys(targetShared, targetSluice), lost: true},
			sharedMetric{name: "Redis round trips per request in shared mode, less its idle background" + at, format: per4,
				value: rep.lessIdle(ph), uses: keys(targetShared), lost: true},
			sharedMetric{name: "Redis commands per request (pipelined ones counted each)" + at, format: per,
				value: rep.perRequest(ph, func(d redisDelta) int64 { return d.client }), uses: keys(targetShared), lost: true},
			sharedMetric{name: "round trips per request as Sluice counts them (" + metricRedisRoundTrips + ")" + at, format: per,
				value: func(r int) (float64, bool) {
					run, ok := rep.run(r, targetShared, ph)
					return float64(run.redis.sluiceTrips) / float64(run.load.Sent), ok && run.redis.sluiceTrips >= 0
				}, uses: keys(targetShared), lost: true},
			sharedMetric{name: "script calls (EVALSHA + EVAL) per request" + at, format: per,
				value: rep.perRequest(ph, func(d redisDelta) int64 { return d.scripts }), uses: keys(targetShared), lost: true},
			sharedMetric{name: "commands run inside the scripts per request" + at, format: per,
				value: rep.perRequest(ph, func(d redisDelta) int64 { return d.inside }), uses: keys(targetShared), lost: true},
			sharedMetric{name: "Redis µs per script call (usec_per_call)" + at, format: one,
				value: func(r int) (float64, bool) {
					run, ok := rep.run(r, targetShared, ph)
					return run.redis.usecPerScript(), ok && run.redis.scripts > 0
				}, uses: keys(targetShared), lost: true},
			sharedMetric{name: "Redis CPU µs per request" + at, format: one,
				value: rep.cpu(ph, targetShared, func(l loadResult) int64 { return l.RedisTicks }), uses: keys(targetShared), lost: true},
			sharedMetric{name: "Sluice CPU µs per request, single-replica" + at, format: one,
				value: rep.cpu(ph, targetSluice, func(l loadResult) int64 { return l.ProxyTicks }), uses: keys(targetSluice)},
			sharedMetric{name: "Sluice CPU µs per request, shared" + at, format: one,
				value: rep.cpu(ph, targetShared, func(l loadResult) int64 { return l.ProxyTicks }), uses: keys(targetShared), lost: true},
		)
	}
	return append(goals, refs...)
}

func p50Of(l loadResult) time.Duration { return l.P50 }
func p99Of(l loadResult) time.Duration { return l.P99 }

// run returns the result of t in round r at phase ph; false when it was
// not measured or no request succeeded.
func (rep *sharedReport) run(r int, t, ph string) (sharedRun, bool) {
	run, ok := rep.results[runKey{r, t, ph}]
	return run, ok && run.load.Requests > 0 && run.load.Sent > 0
}

// diff is the latency pick of a minus that of b, in µs, in each round.
func (rep *sharedReport) diff(ph string, pick func(loadResult) time.Duration, a, b string) func(int) (float64, bool) {
	return func(r int) (float64, bool) {
		x, ok1 := rep.run(r, a, ph)
		y, ok2 := rep.run(r, b, ph)
		return float64(pick(x.load)-pick(y.load)) / 1e3, ok1 && ok2
	}
}

// perRequest is a Redis count of the shared target per request sent.
func (rep *sharedReport) perRequest(ph string, count func(redisDelta) int64) func(int) (float64, bool) {
	return func(r int) (float64, bool) {
		run, ok := rep.run(r, targetShared, ph)
		return float64(count(run.redis)) / float64(run.load.Sent), ok
	}
}

// lessIdle is the round trips of the shared target per request sent, less
// the round trips it made per second while idle in the same round (during
// the other targets' phases) times the length of its phase: what the
// requests cost, without the lease renewals and health checks.
func (rep *sharedReport) lessIdle(ph string) func(int) (float64, bool) {
	return func(r int) (float64, bool) {
		run, ok := rep.run(r, targetShared, ph)
		var reads int64
		var seconds float64
		for k, idle := range rep.results {
			if k.round == r && k.target != targetShared {
				reads += idle.redis.reads
				seconds += idle.load.Seconds
			}
		}
		if !ok || seconds <= 0 {
			return 0, false
		}
		return (float64(run.redis.reads) - float64(reads)/seconds*run.load.Seconds) / float64(run.load.Sent), true
	}
}

// cpu is the CPU time of t's ticks per request sent, in µs.
func (rep *sharedReport) cpu(ph, t string, ticks func(loadResult) int64) func(int) (float64, bool) {
	return func(r int) (float64, bool) {
		run, ok := rep.run(r, t, ph)
		return cpuMicros(ticks(run.load), run.load.Sent, rep.clkTck), ok
	}
}

// median returns the median across rounds of mt and the per-round values
// as text; false when no round measured it.
func (rep *sharedReport) median(mt sharedMetric) (float64, string, bool) {
	var vals []float64
	var per []string
	for r := range rep.s.rounds {
		v, ok := mt.value(r)
		if !ok {
			per = append(per, "–")
			continue
		}
		vals = append(vals, v)
		per = append(per, mt.format(v))
	}
	if len(vals) == 0 {
		return 0, "n/a", false
	}
	return median(vals), strings.Join(per, ", "), true
}

func (rep *sharedReport) text(mt sharedMetric, v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return mt.format(v)
}

// flags says which problems touch the runs mt is computed from.
func (rep *sharedReport) flags(mt sharedMetric) string {
	var errs, lost, interf bool
	for r := range rep.s.rounds {
		for _, k := range mt.uses {
			run := rep.results[runKey{r, k.target, k.phase}]
			errs = errs || run.load.Errors > 0
			lost = lost || (mt.lost && run.redisLost)
			interf = interf || rep.interfered(run.load)
		}
	}
	var s string
	if errs {
		s += " (errors, see below)"
	}
	if lost {
		s += " (Redis lost, see below)"
	}
	if interf {
		s += " (interference, see below)"
	}
	return s
}

// interfered reports whether other processes or the hypervisor took more
// than interferenceLimit of a CPU during the phase of res.
func (rep *sharedReport) interfered(res loadResult) bool {
	return rep.share(res.OtherTicks, res) > interferenceLimit || rep.share(res.StealTicks, res) > interferenceLimit
}

// share is ticks as a share of one CPU over the window of res.
func (rep *sharedReport) share(ticks int64, res loadResult) float64 {
	if res.Seconds <= 0 || rep.clkTck <= 0 {
		return 0
	}
	return float64(ticks) / float64(rep.clkTck) / res.Seconds
}
