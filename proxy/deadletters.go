package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
)

// HeaderDeadletterID names the record of a request Sluice could not
// deliver; with it the response carries x-should-retry: false, since
// Sluice now owns the delivery.
const HeaderDeadletterID = "X-Sluice-Deadletter-Id"

// DeadLetters stores requests Sluice accepted but could not deliver.
// deadletter.FileStore, RedisStore and Spool implement it.
type DeadLetters interface {
	Add(ctx context.Context, r deadletter.Record) error
}

// deadLetter records x's request as undeliverable for kind and marks the
// response. It runs only on failure paths, so it may allocate. The client's
// original body and path are kept (not the body Sluice changed), headers
// are redacted, and secrets are scrubbed from msg.
//
// A replay that fails again adds no record: the replayer marks the one it
// came from, whose id the response carries.
//
// It returns the record's id, "" when none was stored.
func (p *Proxy) deadLetter(ctx *fasthttp.RequestCtx, x *exchange, kind deadletter.Kind, lastStatus int, msg string) string {
	if p.deadLetters == nil {
		return ""
	}
	if id, ok := ctx.UserValue(replayOf{}).(string); ok {
		ctx.Response.Header.Set(HeaderDeadletterID, id)
		ctx.Response.Header.Set(headerShouldRetry, "false")
		return id
	}
	now := time.Now()
	rec := deadletter.Record{
		ID:             deadletter.NewID(now),
		FailedAt:       now,
		ReceivedAt:     x.received,
		Provider:       x.up.name,
		Method:         string(ctx.Method()),
		Path:           string(ctx.Path()),
		Query:          string(ctx.URI().QueryString()),
		Body:           string(ctx.PostBody()),
		Class:          p.classes[x.class].Name,
		Attempts:       x.attempts,
		LastStatus:     lastStatus,
		ErrorKind:      kind,
		ErrorMessage:   msg,
		IdempotencyKey: string(ctx.Request.Header.Peek("Idempotency-Key")),
	}
	h := make(map[string][]string, ctx.Request.Header.Len())
	for k, v := range ctx.Request.Header.All() {
		h[string(k)] = append(h[string(k)], string(v))
	}
	p.redactor.Redact(&rec, h)
	if err := p.deadLetters.Add(context.Background(), rec); err != nil {
		// The client is still answered; the operator must hear of it.
		p.log.LogAttrs(context.Background(), slog.LevelError, "dead letter not stored",
			slog.String("provider", x.up.name), slog.String("error_kind", string(kind)), slog.String("error", err.Error()))
		return ""
	}
	x.up.metrics.DeadLettered(string(kind))
	ctx.Response.Header.Set(HeaderDeadletterID, rec.ID)
	ctx.Response.Header.Set(headerShouldRetry, "false")
	return rec.ID
}
