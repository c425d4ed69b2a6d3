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

// A replica learns that another one's breaker for the same upstream opened
// (package cluster), and refuses until the same moment without seeing a
// failure of its own.
func ExampleBreaker_HoldOpenUntil() {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := breaker.New(breaker.Settings{
		Name: "openai", FailureThreshold: 5, OpenFor: 30 * time.Second, HalfOpenRequests: 1,
		Now: func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(b.HoldOpenUntil(now.Add(20 * time.Second)))
	fmt.Println(b.HoldOpenUntil(now.Add(10 * time.Second))) // never shortens
	_, err = b.Allow()
	fmt.Println(errors.Is(err, breaker.ErrOpen), b.State(), b.OpenUntil().Sub(now))
	now = now.Add(20 * time.Second)
	_, err = b.Allow()
	fmt.Println(err, b.State())
	// Output:
	// true
	// false
	// true open 20s
	// <nil> closed
}
