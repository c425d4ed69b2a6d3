package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/textproto"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
)

// replayOf is the user-value key that marks a request as the replay of a
// dead letter; its value is the record's id. Only [Proxy.Send] sets it, so
// no client can claim a request is a replay.
type replayOf struct{}

// replayAddr is the remote address replays appear to come from in logs.
var replayAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}

// Send implements [deadletter.Sender]: it runs the record's request through
// the proxy's handler in process, so a replay waits in the same queue at
// the record's class, under the same limits, retries and breaker as live
// traffic. The original credential was redacted: the provider's configured
// key is used, or apiKey when the provider has none. A replay that fails
// is answered as any request is, but marks the record it came from instead
// of adding a new one (see deadLetter).
//
// ctx is not watched while the request runs: once queued, a replay runs to
// its end like any request, bounded by its class's max wait and the
// provider's timeouts.
func (p *Proxy) Send(_ context.Context, rec deadletter.Record, apiKey string) (deadletter.Outcome, error) {
	var up *upstream
	for _, u := range p.upstreams {
		if u.name == rec.Provider {
			up = u
		}
	}
	if up == nil {
		return deadletter.Outcome{}, fmt.Errorf("replaying %s: provider %q: %w", rec.ID, rec.Provider, deadletter.ErrUnknownProvider)
	}
	if up.authValue == nil && apiKey == "" {
		return deadletter.Outcome{}, fmt.Errorf("replaying %s: provider %s has no api_key in the config and the replay was given none: %w",
			rec.ID, rec.Provider, deadletter.ErrNoAPIKey)
	}

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	uri := rec.Path
	if rec.Query != "" {
		uri += "?" + rec.Query
	}
	req.SetRequestURI(uri)
	req.Header.SetMethod(rec.Method)
	for name, v := range rec.Headers {
		if v == deadletter.Redacted || replayDrops(name) {
			continue
		}
		req.Header.Set(name, v)
	}
	// The class the request was queued in, even when it came from a route
	// default; a class no longer configured falls back to the default.
	req.Header.Del(HeaderPriority)
	for _, c := range p.classes {
		if c.Name == rec.Class {
			req.Header.Set(HeaderPriority, c.Name)
		}
	}
	if up.authValue == nil {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+apiKey)
	}
	req.SetBodyString(rec.Body)

	var rc fasthttp.RequestCtx
	rc.Init(req, replayAddr, fasthttpLogger{p.log})
	rc.SetUserValue(replayOf{}, rec.ID)
	p.serve(&rc)
	// A streamed answer is read to its end here, which also settles its
	// quota (the relay's CloseWithError).
	body := append([]byte(nil), rc.Response.Body()...)
	out := deadletter.Outcome{Status: rc.Response.StatusCode(), Body: body}
	if !out.Delivered() {
		out.Message = errorMessage(body, out.Status)
	}
	return out, nil
}

// replayDrops reports whether a recorded header must not be sent again:
// framing headers belong to the original connection and are set anew.
func replayDrops(name string) bool {
	switch textproto.CanonicalMIMEHeaderKey(name) {
	case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade", "Expect":
		return true
	}
	return false
}

// errorMessage is the message of an OpenAI-shaped error body, or the
// status when the body has none.
func errorMessage(body []byte, status int) string {
	var doc struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &doc) == nil && doc.Error.Message != "" {
		return doc.Error.Message
	}
	return fmt.Sprintf("answered %d %s", status, fasthttp.StatusMessage(status))
}
