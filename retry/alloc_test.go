//go:build !race

package retry

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestAllocs pins the hot path at zero allocations: Classify and Remaining
// run on every upstream response, with the test's header and with
// fasthttp's. Reading a pause's value (HTTP dates, reset durations) only
// happens on 429 and 5xx answers and is left to the standard library's
// parsers, which allocate; it is not pinned here.
func TestAllocs(t *testing.T) {
	var resp fasthttp.Response
	resp.Header.Set("X-RateLimit-Remaining-Requests", "499")
	resp.Header.Set("X-RateLimit-Remaining-Tokens", "149000")

	quota := []byte(openAIQuotaBody)
	noRetry := hdr("x-should-retry", "false", "retry-after", "30")
	calls := []struct {
		name string
		call func()
	}{
		{"Classify Anthropic 429", func() { Classify(429, anthropic429, nil, epoch) }},
		{"Classify quota 429", func() { Classify(429, openAI429, quota, epoch) }},
		{"Classify 503 x-should-retry", func() { Classify(503, noRetry, nil, epoch) }},
		{"Classify 200", func() { Classify(200, openAI429, nil, epoch) }},
		{"Classify fasthttp 200", func() { Classify(200, &resp.Header, nil, epoch) }},
		{"Remaining", func() { Remaining(anthropic429) }},
		{"Remaining fasthttp", func() { Remaining(&resp.Header) }},
	}
	for _, c := range calls {
		if n := testing.AllocsPerRun(100, c.call); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", c.name, n)
		}
	}
}
