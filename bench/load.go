//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// What every phase sends: a small chat completion, plain or streamed.
const (
	chatPath   = "/v1/chat/completions"
	chatBody   = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}`
	streamBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16,"stream":true}`
)

// Load modes of `bench load`.
const (
	modeMax  = "max"  // closed loop: conns workers send back to back for the duration
	modeRate = "rate" // open loop: one request every 1/rate seconds, whatever the responses do
	modeTTFB = "ttfb" // one streamed request at a time: time to the first body byte
)

// loadSettings are the flags of `bench load`.
type loadSettings struct {
	mode     string
	addr     string        // loopback host:port of the target
	duration time.Duration // measured window (max, rate)
	warmup   time.Duration // unmeasured lead-in at full load (max, rate)
	conns    int           // connections, and workers (max, rate)
	rate     int           // requests per second (rate)
	requests int           // measured requests (ttfb)
	warmReqs int           // unmeasured requests before them (ttfb)
	timeout  time.Duration // per request, and the bound on a backlog draining

	proxyPIDs    []int // processes whose CPU time is the proxy's
	upstreamPIDs []int // processes whose CPU time is the upstream's
	redisPIDs    []int // processes whose CPU time is the Redis server's (bench shared)
}

// loadResult is the JSON that `bench load` prints. Durations are in
// nanoseconds; CPU time is in clock ticks (see getconf CLK_TCK).
type loadResult struct {
	Mode       string  `json:"mode"`
	Requests   int64   `json:"requests"`              // successful requests measured
	Errors     int64   `json:"errors"`                // failures and non-200s, warm-up included
	FirstError string  `json:"first_error,omitempty"` // the first failure, as an example
	Seconds    float64 `json:"seconds"`               // length of the window of the CPU counts
	RPS        float64 `json:"rps"`                   // Requests / Seconds (max)
	// Sent counts the requests sent in the whole phase, warm-up and
	// failures included (rate): what the CPU counts, which cover the whole
	// phase, are divided by.
	Sent int64 `json:"sent"`

	// P50 and P99 are the latency percentiles: from the scheduled send time
	// to the end of the response (rate), or to the first body byte (ttfb).
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// LagP50 and LagP99 are how late the generator sent (rate): actual
	// minus scheduled send time. They are part of P50 and P99.
	LagP50 time.Duration `json:"lag_p50_ns"`
	LagP99 time.Duration `json:"lag_p99_ns"`
	// EndP50 is the median time to the end of the stream (ttfb).
	EndP50 time.Duration `json:"end_p50_ns"`

	// CPU time in the window: of the proxy, upstream, Redis and load
	// generator processes, of all other processes on the machine, and
	// stolen by the hypervisor. The window is the measured one (max), or
	// the whole phase.
	ProxyTicks    int64 `json:"proxy_ticks"`
	UpstreamTicks int64 `json:"upstream_ticks"`
	RedisTicks    int64 `json:"redis_ticks"`
	LoadTicks     int64 `json:"load_ticks"`
	OtherTicks    int64 `json:"other_ticks"`
	StealTicks    int64 `json:"steal_ticks"`
}

// runLoad runs one load phase and prints its [loadResult] as JSON on stdout.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, err := parseLoadFlags(args, stderr)
	if err != nil {
		return err
	}
	var res loadResult
	switch s.mode {
	case modeMax:
		res, err = runMax(ctx, s)
	case modeRate:
		res, err = runRate(ctx, s)
	case modeTTFB:
		res, err = runTTFB(ctx, s)
	}
	if err != nil {
		return err
	}
	res.Mode = s.mode
	return json.NewEncoder(stdout).Encode(res)
}

func parseLoadFlags(args []string, stderr io.Writer) (loadSettings, error) {
	var s loadSettings
	fs := flag.NewFlagSet("bench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.mode, "mode", modeMax, "`mode`: max, rate or ttfb")
	fs.StringVar(&s.addr, "addr", "", "loopback `host:port` of the target")
	fs.DurationVar(&s.duration, "duration", 5*time.Second, "measured window (max, rate)")
	fs.DurationVar(&s.warmup, "warmup", 500*time.Millisecond, "unmeasured lead-in (max, rate)")
	fs.IntVar(&s.conns, "conns", 64, "connections and workers (max, rate)")
	fs.IntVar(&s.rate, "rate", 1000, "requests per second (rate)")
	fs.IntVar(&s.requests, "requests", 500, "measured requests (ttfb)")
	fs.IntVar(&s.warmReqs, "warmup-requests", 20, "unmeasured requests first (ttfb)")
	fs.DurationVar(&s.timeout, "timeout", 5*time.Second, "per request")
	proxyPIDs := fs.String("proxy-pids", "", "comma-separated `pids` of the proxy")
	upstreamPIDs := fs.String("upstream-pids", "", "comma-separated `pids` of the upstream")
	redisPIDs := fs.String("redis-pids", "", "comma-separated `pids` of the Redis server, if any")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	var err error
	if s.proxyPIDs, err = parsePIDs(*proxyPIDs); err != nil {
		return s, fmt.Errorf("-proxy-pids: %w", err)
	}
	if s.upstreamPIDs, err = parsePIDs(*upstreamPIDs); err != nil {
		return s, fmt.Errorf("-upstream-pids: %w", err)
	}
	if s.redisPIDs, err = parsePIDs(*redisPIDs); err != nil {
		return s, fmt.Errorf("-redis-pids: %w", err)
	}
	switch {
	case s.mode != modeMax && s.mode != modeRate && s.mode != modeTTFB:
		return s, fmt.Errorf("-mode: %q is not max, rate or ttfb", s.mode)
	case !isLoopback(s.addr):
		return s, fmt.Errorf("-addr: %q is not a loopback host:port", s.addr)
	case s.duration <= 0 || s.duration > 10*time.Minute:
		return s, fmt.Errorf("-duration: %v is not in (0, 10m]", s.duration)
	case s.warmup < 0 || s.warmup > time.Minute:
		return s, fmt.Errorf("-warmup: %v is not in [0, 1m]", s.warmup)
	case s.conns < 1 || s.conns > 4096:
		return s, fmt.Errorf("-conns: %d is not in [1, 4096]", s.conns)
	case s.rate < 1 || s.rate > 1_000_000:
		return s, fmt.Errorf("-rate: %d is not in [1, 1000000]", s.rate)
	case s.requests < 1 || s.requests > 1_000_000:
		return s, fmt.Errorf("-requests: %d is not in [1, 1000000]", s.requests)
	case s.warmReqs < 0 || s.warmReqs > 1_000_000:
		return s, fmt.Errorf("-warmup-requests: %d is not in [0, 1000000]", s.warmReqs)
	case s.timeout <= 0 || s.timeout > time.Minute:
		return s, fmt.Errorf("-timeout: %v is not in (0, 1m]", s.timeout)
	}
	return s, nil
}

func parsePIDs(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%q is not a pid", f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// runMax keeps conns requests in flight for warmup+duration and counts the
// responses, and the proxy's and upstream's CPU time, over the last duration.
func runMax(ctx context.Context, s loadSettings) (loadResult, error) {
	hc := newHostClient(s.addr, s.conns, s.timeout)
	var (
		ok     atomic.Int64
		failed errorCount
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for range s.conns {
		wg.Go(func() {
			req := newChatRequest(s.addr, chatBody)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for !stop.Load() {
				if err := doChat(hc, req, resp); err != nil {
					failed.add(err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	// The workers stop within one request timeout of stop being set.
	defer wg.Wait()
	defer stop.Store(true)

	var res loadResult
	if err := sleepCtx(ctx, s.warmup); err != nil {
		return res, err
	}
	u0, err := readUsage(s)
	if err != nil {
		return res, err
	}
	u0.requests = ok.Load()
	if err := sleepCtx(ctx, s.duration); err != nil {
		return res, err
	}
	u1, err := readUsage(s)
	if err != nil {
		return res, err
	}
	u1.requests = ok.Load()
	stop.Store(true)
	wg.Wait()

	res.setUsage(u0, u1)
	res.Requests = u1.requests - u0.requests
	res.RPS = float64(res.Requests) / res.Seconds
	res.Errors, res.FirstError = failed.result()
	return res, nil
}

// usage is a reading of the cumulative counters that a phase reports the
// change of over its window.
type usage struct {
	requests                     int64 // successful requests (max)
	proxy, upstream, redis, load int64 // CPU clock ticks of those processes
	machine, steal               int64 // CPU clock ticks of all CPUs: busy, and stolen by the hypervisor
	at                           time.Time
}

// readUsage reads the CPU counters and the clock together, so that the
// window is the same for all of them.
func readUsage(s loadSettings) (usage, error) {
	var u usage
	var err error
	if u.proxy, err = cpuTicks(s.proxyPIDs); err != nil {
		return u, err
	}
	if u.upstream, err = cpuTicks(s.upstreamPIDs); err != nil {
		return u, err
	}
	if u.redis, err = cpuTicks(s.redisPIDs); err != nil {
		return u, err
	}
	if u.load, err = cpuTicks([]int{os.Getpid()}); err != nil {
		return u, err
	}
	if u.machine, u.steal, err = machineTicks(); err != nil {
		return u, err
	}
	u.at = time.Now()
	return u, nil
}

// setUsage records in res the change from u0 to u1.
func (res *loadResult) setUsage(u0, u1 usage) {
	res.Seconds = u1.at.Sub(u0.at).Seconds()
	res.ProxyTicks = u1.proxy - u0.proxy
	res.UpstreamTicks = u1.upstream - u0.upstream
	res.RedisTicks = u1.redis - u0.redis
	res.LoadTicks = u1.load - u0.load
	res.OtherTicks = max(0, (u1.machine-u0.machine)-res.ProxyTicks-res.UpstreamTicks-res.RedisTicks-res.LoadTicks)
	res.StealTicks = u1.steal - u0.steal
}

// errBacklog marks a request dropped because the target fell so far behind
// the schedule that the phase had to end.
var errBacklog = errors.New("dropped: target too far behind the schedule")

// runRate sends one request every 1/rate seconds from a pool of conns workers,
// and measures each latency from the time the request was scheduled, so that
// a slow response delays no later measurement (no coordinated omission).
func runRate(ctx context.Context, s loadSettings) (loadResult, error) {
	var res loadResult
	period := time.Second / time.Duration(s.rate)
	warm := int(s.warmup / period)
	total := warm + int(s.duration/period)
	if total-warm < 1 {
		return res, fmt.Errorf("-duration %v holds no request at %d req/s", s.duration, s.rate)
	}
	lat := make([]time.Duration, total) // scheduled time to end of response; -1: failed
	lag := make([]time.Duration, total) // scheduled time to send
	jobs := make(chan int, total)
	hc := newHostClient(s.addr, s.conns, s.timeout)

	u0, err := readUsage(s)
	if err != nil {
		return res, err
	}
	tk, start, err := startTicker(20*time.Millisecond, period)
	if err != nil {
		return res, err
	}
	defer tk.close()
	// A target slower than the rate builds a backlog; the phase ends at most
	// one timeout after the schedule does, and what is left counts as dropped.
	last := start.Add(time.Duration(total) * period)
	giveUp := last.Add(s.timeout)

	var (
		failed   errorCount
		attempts atomic.Int64
		wg       sync.WaitGroup
	)
	for range s.conns {
		wg.Go(func() {
			req := newChatRequest(s.addr, chatBody)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := range jobs {
				at := start.Add(time.Duration(i) * period)
				sent := time.Now()
				if sent.After(giveUp) {
					lat[i] = -1
					failed.add(errBacklog)
					continue
				}
				attempts.Add(1)
				err := doChat(hc, req, resp)
				done := time.Now()
				if err != nil {
					lat[i] = -1
					failed.add(err)
					continue
				}
				lat[i], lag[i] = done.Sub(at), sent.Sub(at)
			}
		})
	}

	sent := 0
	var tickErr error
	for sent < total {
		if tickErr = ctx.Err(); tickErr != nil {
			break
		}
		var k int
		if k, tickErr = tk.wait(last.Add(time.Second)); tickErr != nil {
			break
		}
		for ; k > 0 && sent < total; k-- {
			jobs <- sent
			sent++
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	u1, err := readUsage(s)
	if err != nil {
		return res, err
	}
	res.setUsage(u0, u1)
	for i := sent; i < total; i++ {
		lat[i] = -1
		failed.add(fmt.Errorf("not sent: %w", tickErr))
	}

	ok := make([]time.Duration, 0, total-warm)
	okLag := make([]time.Duration, 0, total-warm)
	for i := warm; i < total; i++ {
		if lat[i] >= 0 {
			ok = append(ok, lat[i])
			okLag = append(okLag, lag[i])
		}
	}
	slices.Sort(ok)
	slices.Sort(okLag)
	res.Requests = int64(len(ok))
	res.Sent = attempts.Load()
	res.P50, res.P99 = percentile(ok, 0.50), percentile(ok, 0.99)
	res.LagP50, res.LagP99 = percentile(okLag, 0.50), percentile(okLag, 0.99)
	res.Errors, res.FirstError = failed.result()
	return res, nil
}

// runTTFB sends streamed requests one at a time on one connection and times
// each from the send to the first body byte the client can read (the first
// decoded chunk of the SSE stream), then reads the stream to its end.
func runTTFB(ctx context.Context, s loadSettings) (loadResult, error) {
	var res loadResult
	hc := &fasthttp.HostClient{
		Addr:               s.addr,
		Name:               "sluice-bench",
		MaxConns:           1,
		ReadTimeout:        s.timeout,
		WriteTimeout:       s.timeout,
		StreamResponseBody: true,
	}
	req := newChatRequest(s.addr, streamBody)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	buf := make([]byte, 64<<10)

	first := make([]time.Duration, 0, s.requests)
	end := make([]time.Duration, 0, s.requests)
	var failed errorCount
	u0, err := readUsage(s)
	if err != nil {
		return res, err
	}
	for i := range s.warmReqs + s.requests {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		f, e, err := streamOnce(hc, req, resp, buf)
		if err != nil {
			failed.add(err)
			continue
		}
		if i >= s.warmReqs {
			first = append(first, f)
			end = append(end, e)
		}
	}
	u1, err := readUsage(s)
	if err != nil {
		return res, err
	}
	res.setUsage(u0, u1)
	slices.Sort(first)
	slices.Sort(end)
	res.Requests = int64(len(first))
	res.P50, res.P99 = percentile(first, 0.50), percentile(first, 0.99)
	res.EndP50 = percentile(end, 0.50)
	res.Errors, res.FirstError = failed.result()
	return res, nil
}

// Bounds on one streamed response.
const (
	maxStreamReads = 10_000
	maxStreamBytes = 16 << 20
)

var (
	errNoStream = errors.New("response has no body stream")
	errNotSSE   = errors.New("streamed response holds no SSE data line")
	errTooLong  = errors.New("streamed response too long")
)

// streamOnce sends req and returns the time to the first body byte and to
// the end of the body. It reads the body to its end so that the connection
// is reused.
func streamOnce(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, buf []byte) (first, end time.Duration, err error) {
	t0 := time.Now()
	if err := hc.Do(req, resp); err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := resp.CloseBodyStream(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	body := resp.BodyStream()
	if body == nil {
		return 0, 0, errNoStream
	}
	sse, size := false, 0
	for range maxStreamReads {
		n, rerr := body.Read(buf)
		if n > 0 {
			if first == 0 {
				first = time.Since(t0)
			}
			sse = sse || bytes.Contains(buf[:n], []byte("data:"))
			if size += n; size > maxStreamBytes {
				return 0, 0, errTooLong
			}
		}
		if errors.Is(rerr, io.EOF) {
			end = time.Since(t0)
			break
		}
		if rerr != nil {
			return 0, 0, rerr
		}
	}
	switch {
	case end == 0:
		return 0, 0, errTooLong
	case resp.StatusCode() != fasthttp.StatusOK:
		return 0, 0, statusError(resp.StatusCode())
	case !sse:
		return 0, 0, errNotSSE
	}
	return first, end, nil
}

func newHostClient(addr string, conns int, timeout time.Duration) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:     addr,
		Name:     "sluice-bench",
		MaxConns: conns,
		// Wait for a free connection rather than fail when all are busy.
		MaxConnWaitTimeout:  timeout,
		ReadTimeout:         timeout,
		WriteTimeout:        timeout,
		MaxIdleConnDuration: time.Minute,
	}
}

// newChatRequest returns a pooled request for chatPath on addr; release it
// with [fasthttp.ReleaseRequest].
func newChatRequest(addr, body string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("http://" + addr + chatPath)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer sk-bench-not-a-key")
	req.SetBodyString(body)
	return req
}

// statusError is a response other than 200.
type statusError int

func (e statusError) Error() string { return "status " + strconv.Itoa(int(e)) }

func doChat(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) error {
	if err := hc.Do(req, resp); err != nil {
		return err
	}
	if code := resp.StatusCode(); code != fasthttp.StatusOK {
		return statusError(code)
	}
	return nil
}

// errorCount counts events and keeps the first error's message. It is safe
// for concurrent use.
type errorCount struct {
	n     atomic.Int64
	mu    sync.Mutex // protects first
	first string
}

func (c *errorCount) add(err error) {
	if c.n.Add(1) == 1 {
		c.mu.Lock()
		c.first = err.Error()
		c.mu.Unlock()
	}
}

func (c *errorCount) result() (int64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n.Load(), c.first
}

// percentile returns the p-quantile (0 < p <= 1) of sorted by the
// nearest-rank method, or 0 when there are no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// sleepCtx waits for d, or returns ctx's error if it is cancelled first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
