package breaker_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluice-ai/sluice/breaker"
)

// outcome maps an upstream answer to what the breaker counts: 429 is a
// quota signal for the limiter, not a failure, and a client that went away
// says nothing about the upstream.
func outcome(status int, err error, clientGone bool) breaker.Outcome {
	switch {
	case clientGone:
		return breaker.Excluded
	case err != nil || status >= 500:
		return breaker.Failure
	}
	return breaker.Success
}

func Example() {
	b, err := breaker.New(breaker.Settings{
		Name:             "openai",
		FailureThreshold: 2,
		OpenFor:          30 * time.Second,
		HalfOpenRequests: 1,
		OnStateChange: func(from, to breaker.State) {
			fmt.Println("breaker:", from, "->", to) // a gauge or a log line, nothing more
		},
	})
	if err != nil {
		panic(err)
	}
	for _, status := range []int{429, 502, 503} {
		p, err := b.Allow()
		if err != nil {
			fmt.Println("refused:", err)
			continue
		}
		p.Done(outcome(status, nil, false))
	}
	_, err = b.Allow()
	fmt.Println(errors.Is(err, breaker.ErrOpen), b.State(), time.Until(b.OpenUntil()).Round(time.Second))
	// Output:
	// breaker: closed -> open
	// true open 30s
}
