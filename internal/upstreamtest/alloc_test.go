//go:build !race

package upstreamtest_test

import (
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// TestChatAllocs pins the budget of the default non-streamed chat handler,
// the baseline of the load benchmark: no allocations of its own.
func TestChatAllocs(t *testing.T) {
	s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.SetBodyString(`{"model":"gpt-4o-mini","stream":false,"messages":[{"role":"user","content":"Say hello."}]}`)
	serve := func() {
		ctx.Response.Reset()
		s.Default(&ctx)
	}
	serve()
	if got := ctx.Response.StatusCode(); got != fasthttp.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", got, ctx.Response.Body())
	}
	if n := testing.AllocsPerRun(1000, serve); n != 0 {
		t.Errorf("AllocsPerRun(Default) = %v, want 0", n)
	}
}
