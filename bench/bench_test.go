//go:build linux

package main

import (
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		d := make([]time.Duration, len(xs))
		for i, x := range xs {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"p50 of odd", ms(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"p50 of even is the lower middle", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100", hundred, 0.99, 99 * time.Millisecond},
		{"p100 of 100", hundred, 1, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want procStat
	}{
		{
			name: "plain",
			in:   "1234 (nginx) S 1200 1234 1234 0 -1 4194624 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 200",
			want: procStat{ppid: 1200, utime: 250, stime: 75},
		},
		{
			name: "name with spaces and parentheses",
			in:   "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 12 34 0 0 20 0 1 0 5 6 7",
			want: procStat{ppid: 1, utime: 12, stime: 34},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if err != nil || got != tt.want {
				t.Errorf("parseStat(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S one 1 1 0 -1 0 0 0 0 0 1 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) = nil error, want one", bad)
		}
	}
}

func TestCPUTicksOfSelf(t *testing.T) {
	if _, err := cpuTicks([]int{os.Getpid()}); err != nil {
		t.Fatalf("cpuTicks(self) = %v", err)
	}
	if _, _, err := machineTicks(); err != nil {
		t.Fatalf("machineTicks() = %v", err)
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestParseLoadFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"ok", []string{"-addr", "127.0.0.1:8080", "-proxy-pids", "10,11"}, ""},
		{"not loopback", []string{"-addr", "10.0.0.1:8080"}, "-addr"},
		{"no port", []string{"-addr", "127.0.0.1"}, "-addr"},
		{"bad mode", []string{"-addr", "127.0.0.1:1", "-mode", "burst"}, "-mode"},
		{"bad pid", []string{"-addr", "127.0.0.1:1", "-proxy-pids", "1,x"}, "-proxy-pids"},
		{"zero rate", []string{"-addr", "127.0.0.1:1", "-rate", "0"}, "-rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseLoadFlags(tt.args, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("parseLoadFlags(%q) = %v, want no error", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("parseLoadFlags(%q) = %v, want an error naming %s", tt.args, err, tt.wantErr)
			}
		})
	}
}

// TestReportTargets checks the pass/miss verdicts on made-up results: one
// round where Sluice meets every target, and the ratios they come from.
func TestReportTargets(t *testing.T) {
	s, err := parseDriverFlags([]string{"-rounds", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	us := time.Microsecond
	res := map[runKey]loadResult{
		// CPU per request: nginx 20 µs, Sluice 24 µs (1.2x); 10,000 requests, 100 ticks/s.
		{0, targetDirect, phaseMax}: {Mode: modeMax, Requests: 10000, RPS: 30000, Seconds: 1, UpstreamTicks: 10},
		{0, targetNginx, phaseMax}:  {Mode: modeMax, Requests: 10000, RPS: 20000, Seconds: 1, ProxyTicks: 20, UpstreamTicks: 10},
		{0, targetSluice, phaseMax}: {Mode: modeMax, Requests: 10000, RPS: 18000, Seconds: 1, ProxyTicks: 24, UpstreamTicks: 10},
	}
	for _, ph := range []string{ratePhase(rateLow), ratePhase(rateHigh)} {
		res[runKey{0, targetDirect, ph}] = loadResult{Mode: modeRate, Requests: 1, P50: 100 * us, P99: 300 * us}
		res[runKey{0, targetNginx, ph}] = loadResult{Mode: modeRate, Requests: 1, P50: 150 * us, P99: 400 * us}
		res[runKey{0, targetSluice, ph}] = loadResult{Mode: modeRate, Requests: 1, P50: 140 * us, P99: 450 * us}
	}
	res[runKey{0, targetDirect, phaseTTFB}] = loadResult{Mode: modeTTFB, Requests: 1, P50: 300 * us}
	res[runKey{0, targetNginx, phaseTTFB}] = loadResult{Mode: modeTTFB, Requests: 1, P50: 350 * us}
	res[runKey{0, targetSluice, phaseTTFB}] = loadResult{Mode: modeTTFB, Requests: 1, P50: 500 * us}
	rep := &report{
		command: "go run ./bench -rounds 1",
		s:       s,
		clkTck:  100,
		targets: []string{targetDirect, targetNginx, targetSluice},
		results: res,
	}
	md := rep.markdown()
	for _, want := range []string{
		"| Sluice CPU per request ÷ nginx's | ≤ 1.30x | 1.20x | 1.20x | pass |",
		"| Sluice max throughput ÷ nginx's | ≥ 0.80x | 0.90x | 0.90x | pass |",
		"| Sluice added p50 − nginx added p50 at 3,000 req/s | ≤ 0 µs | -10 µs | -10 µs | pass |",
		"| Sluice added streaming time to first byte (p50) | < 1000 µs | +200 µs | +200 µs | pass |",
		"| nginx added p50 at 3,000 req/s | +50 µs | +50 µs |",
		"| Sluice CPU per request ÷ nginx's, each ÷ the upstream's in the same phase | 1.20x | 1.20x |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "## Errors") || strings.Contains(md, "## Interference") {
		t.Errorf("report flags errors or interference that did not happen:\n%s", md)
	}

	res[runKey{0, targetSluice, phaseMax}] = loadResult{Mode: modeMax, Requests: 10000, RPS: 15000, Seconds: 1,
		ProxyTicks: 30, UpstreamTicks: 10, Errors: 3, FirstError: "status 502"}
	md = rep.markdown()
	for _, want := range []string{
		"| Sluice CPU per request ÷ nginx's | ≤ 1.30x | 1.50x | 1.50x | miss (errors, see below) |",
		"| Sluice max throughput ÷ nginx's | ≥ 0.80x | 0.75x | 0.75x | miss (errors, see below) |",
		"- round 1, sluice, max: 3 errors; first: `status 502`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	const status = "Name:\tsluice\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1266104 kB\nVmRSS:\t   23456 kB\nRssAnon:\t   12000 kB\nThreads:\t8\n"
	if got, err := parseVmRSS([]byte(status)); err != nil || got != 23456<<10 {
		t.Errorf("parseVmRSS(%q) = %d, %v, want %d", status, got, err, 23456<<10)
	}
	for _, bad := range []string{"", "Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n", "VmRSSx:\t12 kB\n"} {
		if got, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("parseVmRSS(%q) = %d, nil error, want one", bad, got)
		}
	}
	if v, ok := statusField([]byte(status), "State"); !ok || v != "S (sleeping)" {
		t.Errorf("statusField(State) = %q, %v, want %q, true", v, ok, "S (sleeping)")
	}
}

func TestParseOpenFilesLimit(t *testing.T) {
	const head = "Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max cpu time              unlimited            unlimited            seconds   \n"
	tests := []struct {
		name string
		in   string
		want int64
	}{
		{"number", head + "Max open files            20000                20000                files     \n", 20000},
		{"unlimited", head + "Max open files            unlimited            unlimited            files     \n", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := parseOpenFilesLimit([]byte(tt.in)); err != nil || got != tt.want {
				t.Errorf("parseOpenFilesLimit(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{head, head + "Max open files            many                 20000                files\n"} {
		if got, err := parseOpenFilesLimit([]byte(bad)); err == nil {
			t.Errorf("parseOpenFilesLimit(%q) = %d, nil error, want one", bad, got)
		}
	}
	if _, err := readOpenFilesLimit(os.Getpid()); err != nil {
		t.Errorf("readOpenFilesLimit(self) = %v", err)
	}
}

func TestQueuedTotal(t *testing.T) {
	// The shape of Sluice's /admin/status: providers, their quota scopes,
	// and each scope's classes.
	const status = `{"providers":[
		{"name":"openai","upstream":"http://127.0.0.1:1","default":true,"inflight":0,"scopes":[
			{"name":"openai","classes":[{"name":"high","queued":3,"inflight":0},{"name":"default","queued":9997,"inflight":0}],
			 "buckets":[{"key":"openai","requests_per_minute":1,"inflight":0}]},
			{"name":"openai/gpt-4o","classes":[{"name":"default","queued":5,"inflight":1}],"buckets":[]}]},
		{"name":"anthropic","upstream":"https://api.anthropic.com","default":false,"inflight":0}]}`
	if got, err := queuedTotal([]byte(status)); err != nil || got != 10005 {
		t.Errorf("queuedTotal = %d, %v, want 10005", got, err)
	}
	for _, bad := range []string{"", "{", `{"other":1}`, `{"providers":[{"scopes":[{"classes":[{"queued":"many"}]}]}]}`} {
		if got, err := queuedTotal([]byte(bad)); err == nil {
			t.Errorf("queuedTotal(%q) = %d, nil error, want one", bad, got)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	const text = "# HELP go_goroutines Number of goroutines that currently exist.\n" +
		"# TYPE go_goroutines gauge\n" +
		"go_goroutines 10012\n" +
		"go_memstats_heap_inuse_bytes 1.2345e+08\n" +
		"go_gc_duration_seconds{quantile=\"0.5\"} 0.0001\n" +
		"go_memstats_stack_inuse_bytes_total 7\n"
	got := parseMetrics([]byte(text), metricGoroutines, metricHeapInuse, metricStackInuse)
	want := map[string]float64{metricGoroutines: 10012, metricHeapInuse: 1.2345e+08}
	if len(got) != len(want) || got[metricGoroutines] != want[metricGoroutines] || got[metricHeapInuse] != want[metricHeapInuse] {
		t.Errorf("parseMetrics = %v, want %v", got, want)
	}
}

func TestWaitingBody(t *testing.T) {
	for _, size := range []int{minWaitingBody, 100, 4096} {
		body := waitingBody(size)
		if len(body) != size || !json.Valid([]byte(body)) {
			t.Errorf("waitingBody(%d) = %d bytes, valid JSON %v: %q", size, len(body), json.Valid([]byte(body)), body)
		}
	}
	if _, err := parseWaitingFlags([]string{"-body-bytes", strconv.Itoa(minWaitingBody - 1)}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-body-bytes") {
		t.Errorf("parseWaitingFlags(-body-bytes %d) = %v, want an error naming -body-bytes", minWaitingBody-1, err)
	}
	if _, err := parseWaitingFlags([]string{"-n", "0"}, io.Discard); err == nil || !strings.Contains(err.Error(), "-n") {
		t.Errorf("parseWaitingFlags(-n 0) = %v, want an error naming -n", err)
	}
}

// TestWaitingReport checks the per-request figures on made-up samples:
// 1,000 waiting requests that added 20,000 KiB of RSS.
func TestWaitingReport(t *testing.T) {
	rep := &waitingReport{
		command: "go run ./bench waiting -n 1000",
		s:       waitingSettings{n: 1000, bodyBytes: 100},
		waiting: 1000,
		base:    memSample{rss: 10 << 20, haveGo: true, heapInuse: 2 << 20, stackInuse: 1 << 20, goroutines: 12},
		loaded: memSample{rss: 10<<20 + 20000<<10, haveGo: true, heapInuse: 2<<20 + 9000<<10, stackInuse: 1<<20 + 8000<<10,
			goroutines: 1012},
	}
	md := rep.markdown()
	for _, want := range []string{
		"| RSS (VmRSS) | 10.0 MiB | 29.5 MiB | **20.0 KiB** |",
		"| Go heap in use | 2.0 MiB | 10.8 MiB | 9.0 KiB |",
		"| Go stacks in use | 1.0 MiB | 8.8 MiB | 8.0 KiB |",
		"| Goroutines | 12 | 1,012 | 1.00 |",
		"**20.0 KiB** of RSS, bodies included; its body is 100 bytes (0.1 KiB), so **19.9 KiB excluding bodies**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "still waiting") {
		t.Errorf("report says requests left the queue when none did:\n%s", md)
	}
}
