//go:build linux

package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report renders the results of a run as markdown.
type report struct {
	command string
	when    time.Time
	machine machine
	s       driverSettings
	clkTck  int
	targets []string // measured, in first-round order
	results map[runKey]loadResult
}

// metric is one value per round, compared as a median across rounds.
type metric struct {
	name  string
	unit  string // "x" for ratios, "µs"
	diff  bool   // a difference: printed with its sign
	value func(round int) (float64, bool)
	// goal, when set, is the target as text and the check of the median.
	goal string
	pass func(median float64) bool
	// uses are the measurements the metric is computed from; errors in any
	// of them taint it.
	uses []runKey // round ignored
}

func (rep *report) markdown() string {
	var b strings.Builder
	rep.header(&b)
	rep.goals(&b)
	rep.reference(&b)
	rep.absolute(&b)
	rep.errorList(&b)
	rep.interference(&b)
	rep.method(&b)
	return b.String()
}

func (rep *report) header(b *strings.Builder) {
	m, s := rep.machine, rep.s
	fmt.Fprintf(b, "# Sluice benchmarks\n\n")
	fmt.Fprintf(b, "Sluice against nginx as a plain reverse proxy, and against the fake upstream called directly, "+
		"all on loopback and measured in the same run.\n\n")
	fmt.Fprintf(b, "| | |\n|---|---|\n")
	fmt.Fprintf(b, "| Command | `%s` |\n", rep.command)
	fmt.Fprintf(b, "| Date | %s |\n", rep.when.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(b, "| CPUs (nproc) | %d |\n", m.cpus)
	fmt.Fprintf(b, "| CPU model | %s |\n", m.model)
	fmt.Fprintf(b, "| Kernel | %s |\n", m.kernel)
	fmt.Fprintf(b, "| Go | %s |\n", m.goVer)
	fmt.Fprintf(b, "| nginx | %s |\n", m.nginx)
	fmt.Fprintf(b, "| Sluice | %s |\n", m.sluice)
	fmt.Fprintf(b, "| Pinning | load generator on CPU %s; upstream, nginx and Sluice share CPU %s |\n", s.loadCPU, s.serverCPU)
	fmt.Fprintf(b, "| Phases | per target and round: max throughput with %d connections and fixed rates of %s and %s req/s, "+
		"each %v after a %v warm-up; %d sequential streamed requests after %d warm-up ones |\n",
		s.conns, thousands(rateLow), thousands(rateHigh), s.duration, s.warmup, s.ttfbReqs, s.ttfbWarm)
	fmt.Fprintf(b, "| Rounds | %d, the order of the targets rotated each round |\n\n", s.rounds)
	fmt.Fprintf(b, "A machine's speed can drift by 2x for minutes at a time (shared and virtual machines do), "+
		"so numbers from different rounds, or different runs, are not comparable. "+
		"Every comparison below is computed within one round; the report gives its median across rounds.\n\n")
}

func (rep *report) goals(b *strings.Builder) {
	fmt.Fprintf(b, "## Targets\n\n")
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
			if rep.tainted(mt) {
				result += " (errors, see below)"
			}
			if rep.disturbed(mt) {
				result += " (interference, see below)"
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", mt.name, mt.goal, rep.format(mt, med, ok), per, result)
	}
	fmt.Fprintln(b)
}

func (rep *report) reference(b *strings.Builder) {
	fmt.Fprintf(b, "## Reference\n\n")
	fmt.Fprintf(b, "Added latency is the proxied latency minus the direct one in the same round. "+
		"The upstream shares the proxy's CPU during the same window, so dividing a proxy's CPU per request "+
		"by the upstream's cancels a change in that CPU's speed between phases.\n\n")
	fmt.Fprintf(b, "| Metric | Median | Per round |\n|---|---|---|\n")
	for _, mt := range rep.metrics() {
		if mt.goal != "" {
			continue
		}
		med, per, ok := rep.median(mt)
		if !ok {
			continue
		}
		name := mt.name
		if rep.tainted(mt) {
			name += " (errors, see below)"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", name, rep.format(mt, med, ok), per)
	}
	fmt.Fprintln(b)
}

func (rep *report) absolute(b *strings.Builder) {
	fmt.Fprintf(b, "## Absolute numbers per round\n\n")
	fmt.Fprintf(b, "Latencies in µs. CPU is user + system time per request over the max-throughput window. "+
		"Busy is the share of a CPU used during the max-throughput window by the load generator "+
		"and by the upstream plus proxy: whichever is near 100%% limits the throughput; "+
		"other procs is the CPU used by every other process on the machine meanwhile. "+
		"Send lag is how late the load generator sent, a part of every fixed-rate latency.\n\n")
	fmt.Fprintf(b, "| Round | Target | Max req/s | Busy: load / server | Other procs | Proxy CPU µs/req | Upstream CPU µs/req "+
		"| p50 / p99 at %s req/s | p50 / p99 at %s req/s | Send lag p50 at %s / %s | Stream first byte p50 / p99 | Stream end p50 | Errors |\n",
		thousands(rateLow), thousands(rateHigh), thousands(rateLow), thousands(rateHigh))
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for r := range rep.s.rounds {
		for _, t := range rep.ordered() {
			mx := rep.results[runKey{r, t, phaseMax}]
			lo := rep.results[runKey{r, t, ratePhase(rateLow)}]
			hi := rep.results[runKey{r, t, ratePhase(rateHigh)}]
			tf := rep.results[runKey{r, t, phaseTTFB}]
			proxyCPU := "–"
			if t != targetDirect {
				proxyCPU = fmt.Sprintf("%.1f", cpuMicros(mx.ProxyTicks, mx.Requests, rep.clkTck))
			}
			fmt.Fprintf(b, "| %d | %s | %s | %s / %s | %s | %s | %.1f | %s / %s | %s / %s | %s / %s | %s / %s | %s | %d |\n",
				r+1, t, thousands(int64(math.Round(mx.RPS))),
				busy(mx.LoadTicks, mx.Seconds, rep.clkTck), busy(mx.ProxyTicks+mx.UpstreamTicks, mx.Seconds, rep.clkTck),
				busy(mx.OtherTicks, mx.Seconds, rep.clkTck), proxyCPU, cpuMicros(mx.UpstreamTicks, mx.Requests, rep.clkTck),
				micros(lo.P50), micros(lo.P99), micros(hi.P50), micros(hi.P99), micros(lo.LagP50), micros(hi.LagP50),
				micros(tf.P50), micros(tf.P99), micros(tf.EndP50), mx.Errors+lo.Errors+hi.Errors+tf.Errors)
		}
	}
	fmt.Fprintln(b)
}

func (rep *report) errorList(b *strings.Builder) {
	var lines []string
	for r := range rep.s.rounds {
		for _, t := range rep.ordered() {
			for _, ph := range phases(rep.s) {
				if res := rep.results[runKey{r, t, ph.name}]; res.Errors > 0 {
					lines = append(lines, fmt.Sprintf("- round %d, %s, %s: %d errors; first: `%s`",
						r+1, t, ph.name, res.Errors, res.FirstError))
				}
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "## Errors\n\n**Some requests failed or were not answered 200; the numbers they feed are suspect.**\n\n")
	fmt.Fprintf(b, "%s\n\n", strings.Join(lines, "\n"))
}

// interferenceLimit is the share of one CPU that other processes, or the
// hypervisor, may take during a phase before the report flags it.
const interferenceLimit = 0.05

// interference lists the phases during which other processes used the CPUs
// or the hypervisor stole time: their numbers measure the neighbours too.
func (rep *report) interference(b *strings.Builder) {
	var lines []string
	for r := range rep.s.rounds {
		for _, t := range rep.ordered() {
			for _, ph := range phases(rep.s) {
				res := rep.results[runKey{r, t, ph.name}]
				if rep.interfered(res) {
					lines = append(lines, fmt.Sprintf("- round %d, %s, %s: other processes %.0f%% of a CPU, stolen %.0f%%",
						r+1, t, ph.name, rep.share(res.OtherTicks, res)*100, rep.share(res.StealTicks, res)*100))
				}
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "## Interference\n\n**Other processes used the CPUs, or the hypervisor took them, "+
		"during these phases; their numbers measure the neighbours too.**\n\n")
	fmt.Fprintf(b, "%s\n\n", strings.Join(lines, "\n"))
}

func (rep *report) method(b *strings.Builder) {
	fmt.Fprintf(b, "## Method\n\n")
	fmt.Fprintf(b, "- Request: `POST %s` with the %d-byte body `%s`; streamed: the same with `\"stream\":true`.\n",
		chatPath, len(chatBody), chatBody)
	fmt.Fprintf(b, "- Upstream: Sluice's fake provider (fasthttp), answering a JSON completion with usage, "+
		"or %d SSE chunks %v apart.\n", streamChunks, streamChunkDelay)
	fmt.Fprintf(b, "- nginx: one worker, HTTP/1.1 with 64 keep-alive connections to the upstream, "+
		"buffering off both ways, no access log (`bench/nginx.conf.tmpl`).\n")
	fmt.Fprintf(b, "- Sluice: one default provider with every quota configured (requests, tokens, concurrency) far above the load, so each request is parsed, estimated, admitted and reconciled but none waits; the default classes without headroom (the fake upstream reports far lower limits, which Sluice's buckets follow); log level warn.\n")
	fmt.Fprintf(b, "- Max throughput: closed loop, each connection sends its next request when the previous response ends. "+
		"CPU per request: the proxy's user + system time from `/proc/PID/stat` (nginx: master and worker) "+
		"over the same window as the responses counted, divided by them; clock ticks of 1/%d s.\n", rep.clkTck)
	fmt.Fprintf(b, "- Fixed rates: open loop; a kernel timer schedules a request every 1/rate s whatever the responses do, "+
		"up to %d in flight. Latency runs from the scheduled send time to the end of the response, "+
		"so a stall is counted in every request it delays (no coordinated omission).\n", rep.s.conns)
	fmt.Fprintf(b, "- Streaming: one request at a time on one connection; time to first byte runs from the send "+
		"to the first body byte the client can read (the first SSE chunk).\n")
	fmt.Fprintf(b, "- The upstream and the proxy share one CPU, as a sidecar shares its pod's; "+
		"the load generator has the other to itself.\n")
}

// metrics lists the report's comparisons, those with a target first.
func (rep *report) metrics() []metric {
	hi, lo := ratePhase(rateHigh), ratePhase(rateLow)
	keys := func(pairs ...string) []runKey {
		var ks []runKey
		for i := 0; i+1 < len(pairs); i += 2 {
			ks = append(ks, runKey{target: pairs[i], phase: pairs[i+1]})
		}
		return ks
	}
	ms := []metric{
		{
			name: "Sluice CPU per request ÷ nginx's", unit: "x", goal: "≤ 1.30x",
			value: rep.ratio(rep.proxyCPU, targetSluice, targetNginx),
			pass:  func(v float64) bool { return v <= 1.30 },
			uses:  keys(targetSluice, phaseMax, targetNginx, phaseMax),
		},
		{
			name: "Sluice max throughput ÷ nginx's", unit: "x", goal: "≥ 0.80x",
			value: rep.ratio(rep.rps, targetSluice, targetNginx),
			pass:  func(v float64) bool { return v >= 0.80 },
			uses:  keys(targetSluice, phaseMax, targetNginx, phaseMax),
		},
		{
			name: "Sluice added p50 − nginx added p50 at " + thousands(rateHigh) + " req/s", unit: "µs", diff: true, goal: "≤ 0 µs",
			value: rep.diff(rep.p50(hi), targetSluice, targetNginx),
			pass:  func(v float64) bool { return v <= 0 },
			uses:  keys(targetSluice, hi, targetNginx, hi),
		},
		{
			name: "Sluice added streaming time to first byte (p50)", unit: "µs", diff: true, goal: "< 1000 µs",
			value: rep.diff(rep.ttfb, targetSluice, targetDirect),
			pass:  func(v float64) bool { return v < 1000 },
			uses:  keys(targetSluice, phaseTTFB, targetDirect, phaseTTFB),
		},
	}
	ms = append(ms, metric{
		name: "Sluice CPU per request ÷ nginx's, each ÷ the upstream's in the same phase", unit: "x",
		value: func(r int) (float64, bool) {
			sp, ok1 := rep.proxyCPU(r, targetSluice)
			su, ok2 := rep.upstreamCPU(r, targetSluice)
			np, ok3 := rep.proxyCPU(r, targetNginx)
			nu, ok4 := rep.upstreamCPU(r, targetNginx)
			return (sp / su) / (np / nu), ok1 && ok2 && ok3 && ok4 && su > 0 && np > 0 && nu > 0
		},
		uses: keys(targetSluice, phaseMax, targetNginx, phaseMax),
	})
	for _, t := range []string{targetNginx, targetSluice} {
		ms = append(ms,
			metric{name: t + " max throughput ÷ direct", unit: "x",
				value: rep.ratio(rep.rps, t, targetDirect), uses: keys(t, phaseMax, targetDirect, phaseMax)},
			metric{name: t + " CPU per request ÷ upstream's", unit: "x",
				value: func(r int) (float64, bool) {
					p, ok1 := rep.proxyCPU(r, t)
					u, ok2 := rep.upstreamCPU(r, t)
					return p / u, ok1 && ok2 && u > 0
				}, uses: keys(t, phaseMax)},
		)
		for _, ph := range []string{lo, hi} {
			ms = append(ms,
				metric{name: t + " added p50 at " + rateLabel(ph), unit: "µs", diff: true,
					value: rep.diff(rep.p50(ph), t, targetDirect), uses: keys(t, ph, targetDirect, ph)},
				metric{name: t + " added p99 at " + rateLabel(ph), unit: "µs", diff: true,
					value: rep.diff(rep.p99(ph), t, targetDirect), uses: keys(t, ph, targetDirect, ph)},
			)
		}
		ms = append(ms, metric{name: t + " added streaming time to first byte (p50)", unit: "µs", diff: true,
			value: rep.diff(rep.ttfb, t, targetDirect), uses: keys(t, phaseTTFB, targetDirect, phaseTTFB)})
	}
	return ms
}

func rateLabel(phase string) string {
	n, _ := strconv.ParseInt(strings.TrimPrefix(phase, "rate"), 10, 64)
	return thousands(n) + " req/s"
}

// A value of one target in one round; false when it was not measured.
type valueFunc func(round int, target string) (float64, bool)

func (rep *report) result(r int, t, phase string) (loadResult, bool) {
	res, ok := rep.results[runKey{r, t, phase}]
	return res, ok && res.Requests > 0
}

func (rep *report) rps(r int, t string) (float64, bool) {
	res, ok := rep.result(r, t, phaseMax)
	return res.RPS, ok
}

func (rep *report) proxyCPU(r int, t string) (float64, bool) {
	res, ok := rep.result(r, t, phaseMax)
	return cpuMicros(res.ProxyTicks, res.Requests, rep.clkTck), ok && t != targetDirect
}

func (rep *report) upstreamCPU(r int, t string) (float64, bool) {
	res, ok := rep.result(r, t, phaseMax)
	return cpuMicros(res.UpstreamTicks, res.Requests, rep.clkTck), ok
}

func (rep *report) p50(phase string) valueFunc {
	return func(r int, t string) (float64, bool) {
		res, ok := rep.result(r, t, phase)
		return float64(res.P50) / 1e3, ok
	}
}

func (rep *report) p99(phase string) valueFunc {
	return func(r int, t string) (float64, bool) {
		res, ok := rep.result(r, t, phase)
		return float64(res.P99) / 1e3, ok
	}
}

func (rep *report) ttfb(r int, t string) (float64, bool) {
	res, ok := rep.result(r, t, phaseTTFB)
	return float64(res.P50) / 1e3, ok
}

// ratio is v(a) ÷ v(b) in each round.
func (rep *report) ratio(v valueFunc, a, b string) func(int) (float64, bool) {
	return func(r int) (float64, bool) {
		x, ok1 := v(r, a)
		y, ok2 := v(r, b)
		return x / y, ok1 && ok2 && y > 0
	}
}

// diff is v(a) − v(b) in each round.
func (rep *report) diff(v valueFunc, a, b string) func(int) (float64, bool) {
	return func(r int) (float64, bool) {
		x, ok1 := v(r, a)
		y, ok2 := v(r, b)
		return x - y, ok1 && ok2
	}
}

// median returns the median across rounds of mt and the per-round values
// as text; false when no round measured it.
func (rep *report) median(mt metric) (float64, string, bool) {
	var vals []float64
	var per []string
	for r := range rep.s.rounds {
		v, ok := mt.value(r)
		if !ok {
			per = append(per, "–")
			continue
		}
		vals = append(vals, v)
		per = append(per, rep.format(mt, v, true))
	}
	if len(vals) == 0 {
		return 0, "n/a", false
	}
	return median(vals), strings.Join(per, ", "), true
}

func (rep *report) tainted(mt metric) bool {
	for r := range rep.s.rounds {
		for _, k := range mt.uses {
			if rep.results[runKey{r, k.target, k.phase}].Errors > 0 {
				return true
			}
		}
	}
	return false
}

func (rep *report) disturbed(mt metric) bool {
	for r := range rep.s.rounds {
		for _, k := range mt.uses {
			if rep.interfered(rep.results[runKey{r, k.target, k.phase}]) {
				return true
			}
		}
	}
	return false
}

// interfered reports whether other processes or the hypervisor took more
// than interferenceLimit of a CPU during the phase of res.
func (rep *report) interfered(res loadResult) bool {
	other, steal := rep.share(res.OtherTicks, res), rep.share(res.StealTicks, res)
	return other > interferenceLimit || steal > interferenceLimit
}

// share is ticks as a share of one CPU over the window of res.
func (rep *report) share(ticks int64, res loadResult) float64 {
	if res.Seconds <= 0 || rep.clkTck <= 0 {
		return 0
	}
	return float64(ticks) / float64(rep.clkTck) / res.Seconds
}

func (rep *report) format(mt metric, v float64, ok bool) string {
	switch {
	case !ok:
		return "n/a"
	case mt.unit == "x":
		return fmt.Sprintf("%.2fx", v)
	case mt.diff:
		return fmt.Sprintf("%+.0f µs", v)
	default:
		return fmt.Sprintf("%.0f µs", v)
	}
}

// ordered returns the measured targets in their canonical order.
func (rep *report) ordered() []string {
	var ts []string
	for _, t := range []string{targetDirect, targetNginx, targetSluice} {
		if slices.Contains(rep.targets, t) {
			ts = append(ts, t)
		}
	}
	return ts
}

// median returns the median of xs, which must not be empty.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// cpuMicros converts CPU clock ticks spent on n requests to µs per request.
func cpuMicros(ticks, n int64, clkTck int) float64 {
	if n <= 0 || clkTck <= 0 {
		return 0
	}
	return float64(ticks) / float64(clkTck) / float64(n) * 1e6
}

// busy formats CPU ticks spent over seconds as a percentage of one CPU.
func busy(ticks int64, seconds float64, clkTck int) string {
	if seconds <= 0 || clkTck <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", float64(ticks)/float64(clkTck)/seconds*100)
}

// micros formats d in whole microseconds.
func micros(d time.Duration) string {
	return strconv.FormatInt(int64(math.Round(float64(d)/1e3)), 10)
}

// thousands formats n with comma separators: 12,345.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
