package idempotency_test

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/sluice-ai/sluice/idempotency"
)

// The flow a proxy follows for a request with an Idempotency-Key.
func Example() {
	store := idempotency.NewMemory(idempotency.Settings{})
	ctx := context.Background()
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	hash := sha256.Sum256(body)

	handle := func() string {
		c, err := store.Begin(ctx, "openai", "key-1", hash, false, false)
		if err != nil {
			return "error: " + err.Error() // ErrBadKey: 400
		}
		if c.State == idempotency.InFlight {
			// A duplicate of a request still running: wait for its outcome.
			if c, err = store.Wait(ctx, "openai", "key-1", hash, false); err != nil {
				return "error: " + err.Error()
			}
		}
		switch c.State {
		case idempotency.Acquired:
			// Send upstream. Had the request not reached it, Abandon.
			// The outcome is stored even if the client left meanwhile.
			o := idempotency.Outcome{Status: 200, Header: [][2]string{{"Content-Type", "application/json"}}, Body: []byte(`{"id":"chatcmpl-1"}`)}
			if err := store.Complete(context.WithoutCancel(ctx), "openai", "key-1", c.Token, o); err != nil {
				return "error: " + err.Error()
			}
			return fmt.Sprintf("sent upstream: %d %s", o.Status, o.Body)
		case idempotency.Done:
			return fmt.Sprintf("replayed: %d %s", c.Outcome.Status, c.Outcome.Body)
		case idempotency.Mismatch:
			return "mismatch: the key was used with another body"
		default: // Forgotten
			return fmt.Sprintf("forgotten: answered %d before, too large to replay", c.Outcome.Status)
		}
	}
	fmt.Println(handle())
	fmt.Println(handle())
	// Output:
	// sent upstream: 200 {"id":"chatcmpl-1"}
	// replayed: 200 {"id":"chatcmpl-1"}
}
