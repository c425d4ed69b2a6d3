package retry

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The proxy passes fasthttp's response header straight in.
var _ Header = (*fasthttp.ResponseHeader)(nil)

// TestFasthttpHeader classifies a real fasthttp response, whose Peek folds
// the case of the header names it was sent with.
func TestFasthttpHeader(t *testing.T) {
	var resp fasthttp.Response
	resp.SetStatusCode(429)
	resp.Header.Set("Retry-After", "20")
	resp.Header.Set("X-RateLimit-Remaining-Tokens", "0")
	resp.Header.Set("X-RateLimit-Reset-Tokens", "6m0s")
	resp.Header.Set("X-RateLimit-Remaining-Requests", "499")
	resp.SetBodyString(openAIRateLimitBody)

	got := Classify(resp.StatusCode(), &resp.Header, resp.Body(), epoch)
	if want := (Verdict{Kind: RateLimited, Pause: 20 * time.Second, Reason: "rate_limited"}); got != want {
		t.Errorf("Classify(fasthttp 429) = %+v, want %+v", got, want)
	}
	resp.Header.Del("Retry-After")
	if d, ok := Pause(&resp.Header, epoch); d != 6*time.Minute || !ok {
		t.Errorf("Pause(fasthttp, no Retry-After) = %v, %v; want 6m0s, true", d, ok)
	}
	if req, reqOK, tok, tokOK := Remaining(&resp.Header); req != 499 || !reqOK || tok != 0 || !tokOK {
		t.Errorf("Remaining(fasthttp) = %d, %v, %d, %v; want 499, true, 0, true", req, reqOK, tok, tokOK)
	}
}
