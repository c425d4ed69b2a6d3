package deadletter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Errors of a replay that was refused before anything was sent. Check them
// with errors.Is.
var (
	// ErrNoAPIKey: the original credential was redacted, the provider has
	// no configured key, and the replay was given none.
	ErrNoAPIKey = errors.New("deadletter: no API key to replay with")
	// ErrUnknownProvider: the record's provider is no longer configured.
	ErrUnknownProvider = errors.New("deadletter: the record's provider is not configured")
	// ErrAlreadyDelivered: the record's last replay delivered it; replaying
	// it again would send (and pay for) the request twice unless forced.
	ErrAlreadyDelivered = errors.New("deadletter: the record was already delivered by a replay")
)

// Sender sends a record's request again through the live path: the same
// queue, limits, priority, retries and breaker as a new request. apiKey is
// used when the provider has no key of its own; Send returns [ErrNoAPIKey]
// when neither exists. A failure of the resent request is an [Outcome], not
// an error, and must not be dead-lettered as a new record.
type Sender interface {
	Send(ctx context.Context, r Record, apiKey string) (Outcome, error)
}

// Outcome is how a resent request ended.
type Outcome struct {
	// Status is the HTTP status the request ended with: the upstream's, or
	// Sluice's own error status.
	Status int
	// Body is the response body.
	Body []byte
	// Message says why a request that was not delivered failed.
	Message string
}

// Delivered reports whether the request reached the upstream and got a
// success.
func (o Outcome) Delivered() bool { return o.Status >= 200 && o.Status < 300 }

// ReplayStore is what replays read and mark; every store implements it.
type ReplayStore interface {
	Get(ctx context.Context, id string) (Record, error)
	List(ctx context.Context, f Filter) ([]Record, string, error)
	MarkReplayed(ctx context.Context, id string, at time.Time, status int) error
}

// Replayer resends dead letters and marks each record with the outcome, so
// that a replay that fails again updates its record instead of adding one.
type Replayer struct {
	store ReplayStore
	send  Sender
	// observe is told each replay's outcome: "delivered", "failed" or
	// "refused" (nothing sent).
	observe func(provider, outcome string)
	now     func() time.Time
}

// NewReplayer returns a Replayer that resends through send and marks in
// store. observe, if not nil, is called once per replay with its provider
// and outcome ("delivered", "failed" or "refused"), from several
// goroutines at once during a batch.
func NewReplayer(store ReplayStore, send Sender, observe func(provider, outcome string)) *Replayer {
	if observe == nil {
		observe = func(string, string) {}
	}
	return &Replayer{store: store, send: send, observe: observe, now: time.Now}
}

// Replayed is the result of one replay.
type Replayed struct {
	ID         string    `json:"id"`
	Provider   string    `json:"provider,omitempty"`
	Status     int       `json:"status"`
	Delivered  bool      `json:"delivered"`
	ReplayedAt time.Time `json:"replayed_at,omitzero"`
	Body       string    `json:"body,omitempty"`
	Error      string    `json:"error,omitempty"`
	// Skipped is set in a batch for a record an earlier replay delivered.
	Skipped bool `json:"skipped,omitempty"`
}

// Replay resends the record with the given id and marks it with the
// outcome. A record whose last replay delivered it is refused with
// [ErrAlreadyDelivered] unless force is set. The error is only for
// replays refused before sending ([ErrNotFound], [ErrNoAPIKey],
// [ErrUnknownProvider], [ErrAlreadyDelivered]) or a store failure; a
// resent request that fails is a Replayed with Delivered false.
func (p *Replayer) Replay(ctx context.Context, id, apiKey string, force bool) (Replayed, error) {
	rec, err := p.store.Get(ctx, id)
	if err != nil {
		return Replayed{ID: id}, err
	}
	return p.replay(ctx, rec, apiKey, force)
}

func (p *Replayer) replay(ctx context.Context, rec Record, apiKey string, force bool) (Replayed, error) {
	res := Replayed{ID: rec.ID, Provider: rec.Provider}
	if !force && rec.ReplayStatus >= 200 && rec.ReplayStatus < 300 {
		return res, fmt.Errorf("record %s was delivered at %s: %w", rec.ID, formatTime(rec.ReplayedAt), ErrAlreadyDelivered)
	}
	out, err := p.send.Send(ctx, rec, apiKey)
	if err != nil {
		p.observe(rec.Provider, "refused")
		return res, err
	}
	res.Status, res.Delivered, res.Body = out.Status, out.Delivered(), string(out.Body)
	if !res.Delivered {
		res.Error = out.Message
	}
	res.ReplayedAt = p.now()
	outcome := "failed"
	if res.Delivered {
		outcome = "delivered"
	}
	p.observe(rec.Provider, outcome)
	// The mark is written even when the caller has gone: the request was sent.
	if err := p.store.MarkReplayed(context.WithoutCancel(ctx), rec.ID, res.ReplayedAt, out.Status); err != nil {
		return res, fmt.Errorf("marking record %s replayed (status %d): %w", rec.ID, out.Status, err)
	}
	return res, nil
}

// Batch is the result of replaying the records a filter selects.
type Batch struct {
	Results   []Replayed `json:"results"`
	Delivered int        `json:"delivered"`
	Failed    int        `json:"failed"`
	// Skipped counts records already delivered by an earlier replay.
	Skipped int `json:"skipped"`
}

// batchConcurrency bounds the replays of a batch sent at once. They queue
// like live traffic, so this only bounds the goroutines and the queue
// slots a batch takes, leaving room in each class's queue for live
// requests.
const batchConcurrency = 16

// ReplayAll replays every record f selects (f.After and f.Limit are
// ignored: the whole selection is replayed), at most batchConcurrency at a
// time, oldest first in the results. Records already delivered are skipped
// unless force is set. Refusals (no key, unknown provider) are failures of
// that record, not of the batch; the error is only for a store that cannot
// be listed.
func (p *Replayer) ReplayAll(ctx context.Context, f Filter, apiKey string, force bool) (Batch, error) {
	var recs []Record
	f.After, f.Limit = "", 1000
	for {
		page, next, err := p.store.List(ctx, f)
		if err != nil {
			return Batch{}, fmt.Errorf("listing dead letters to replay: %w", err)
		}
		recs = append(recs, page...)
		if next == "" {
			break
		}
		f.After = next
	}

	b := Batch{Results: make([]Replayed, len(recs))}
	sem := make(chan struct{}, batchConcurrency)
	var wg sync.WaitGroup
	for i, rec := range recs {
		if ctx.Err() != nil {
			b.Results[i] = Replayed{ID: rec.ID, Provider: rec.Provider, Error: "not replayed: " + ctx.Err().Error()}
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := p.replay(ctx, rec, apiKey, force)
			if err != nil {
				res.Error = err.Error()
			}
			res.Skipped = errors.Is(err, ErrAlreadyDelivered)
			b.Results[i] = res
		})
	}
	wg.Wait()
	for _, r := range b.Results {
		switch {
		case r.Skipped:
			b.Skipped++
		case r.Delivered && r.Error == "":
			b.Delivered++
		default:
			b.Failed++
		}
	}
	return b, nil
}
