//go:build !race

package proxy

import (
	"testing"

	"github.com/sluice-ai/sluice/limiter"
)

// handlerAllocBudget is what the proxy handler may allocate per request on
// top of a direct fasthttp call to the same upstream (which is counted in
// both, with the fake upstream's own allocations, since it runs in this
// process). The one allocation is the outcome callback that gobreaker's
// TwoStepCircuitBreaker.Allow returns for every request (48 bytes); the
// breaker package keeps it to that one (see its TestAllocs).
const handlerAllocBudget = 1

func TestHandlerAllocations(t *testing.T) {
	for name, limits := range map[string]limiter.Limits{"no quotas": {}, "quotas not binding": notBinding} {
		t.Run(name, func(t *testing.T) {
			r := newHandlerRig(t, limits)
			for range 10 { // warm the pools and the metric children
				r.proxied(t)
				r.directCall(t)
			}
			proxied := testing.AllocsPerRun(200, func() { r.proxied(t) })
			direct := testing.AllocsPerRun(200, func() { r.directCall(t) })
			if extra := proxied - direct; extra > handlerAllocBudget {
				t.Errorf("handler allocates %.1f per request beyond a direct call (%.1f vs %.1f), budget %d",
					extra, proxied, direct, handlerAllocBudget)
			}
			t.Logf("allocations per request: proxied %.1f, direct %.1f", proxied, direct)
		})
	}
}
