package proxy

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// apiError is an answer Sluice gives itself, in the shape the OpenAI SDKs
// parse ({"error": {"message", "type", "code"}}), so that callers see a
// readable error instead of a transport failure.
type apiError struct {
	status     int
	retryAfter string // Retry-After value, "" for none
	body       []byte // rendered once; answers are immutable
}

func newAPIError(status int, typ, code, message string) *apiError {
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	doc.Error.Message, doc.Error.Type, doc.Error.Code = message, typ, code
	body, err := json.Marshal(doc)
	if err != nil {
		panic("proxy: rendering an error body: " + err.Error()) // only strings: cannot fail
	}
	return &apiError{status: status, body: body}
}

func (e *apiError) withRetryAfter(seconds string) *apiError {
	c := *e
	c.retryAfter = seconds
	return &c
}

// The fixed answers. Each is immutable; contract tests pin their bodies.
var (
	errBadRequest = newAPIError(fasthttp.StatusBadRequest, "invalid_request_error", "bad_request",
		"the request could not be parsed as HTTP")
	errNoRoute = newAPIError(fasthttp.StatusNotFound, "invalid_request_error", "unknown_route",
		"no provider serves this path: use /v1/... for the default provider or a configured provider prefix")
	errBodyTooLarge = newAPIError(fasthttp.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		"the request body is larger than this gateway accepts (max_body_bytes)")
	errUpstream = newAPIError(fasthttp.StatusBadGateway, "server_error", "upstream_error",
		"the upstream provider could not be reached or broke the connection")
	errUpstreamTimeout = newAPIError(fasthttp.StatusGatewayTimeout, "server_error", "upstream_timeout",
		"the upstream provider did not answer in time")
	errDraining = newAPIError(fasthttp.StatusServiceUnavailable, "server_error", "shutting_down",
		"this gateway is shutting down; retry on another replica").withRetryAfter("1")
)

// Answers about quotas and request bodies.
var (
	errMaxWait = newAPIError(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_max_wait",
		"X-Sluice-Max-Wait must be a non-negative duration with a unit, such as 250ms, 30s or 2m")
	// retryErrors are indexed by classify.
	retryErrors = [...]*apiError{
		newAPIError(fasthttp.StatusTooManyRequests, "rate_limit_error", "queue_full",
			"this priority class's queue is full; retry after the time in Retry-After"),
		newAPIError(fasthttp.StatusTooManyRequests, "rate_limit_error", "queue_wait_exceeded",
			"the quota cannot admit this request within its maximum wait (the class's max_wait or X-Sluice-Max-Wait); retry after the time in Retry-After"),
		newAPIError(fasthttp.StatusTooManyRequests, "rate_limit_error", "queue_timeout",
			"the request waited in the queue for its maximum wait without getting its quota"),
	}
)

var errBreakerOpen = newAPIError(fasthttp.StatusServiceUnavailable, "server_error", "breaker_open",
	"the upstream provider has been failing; Sluice stopped sending it requests for a while (circuit breaker open); retry after the time in Retry-After")

// statusClientClosed is recorded for requests whose client left while they
// waited (nginx's convention); nothing is sent.
const statusClientClosed = 499

// invalidBody answers a body that must be read to count its tokens but
// cannot be.
func invalidBody(err error) *apiError {
	return newAPIError(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_json",
		"the request body must be a JSON object so that its tokens can be counted: "+err.Error())
}

// tooLarge answers a request that no quota of its provider could ever
// admit.
func tooLarge(tokens int64) *apiError {
	return newAPIError(fasthttp.StatusRequestEntityTooLarge, "invalid_request_error", "exceeds_token_quota",
		"the request's estimated "+strconv.FormatInt(tokens, 10)+" tokens (prompt plus max_tokens) exceed what the "+
			"provider's tokens_per_minute quota admits at once (its token_burst, scaled by the class's share); "+
			"lower max_tokens or split the input")
}

// writeRetryError renders e with a Retry-After of after, rounded up to
// whole seconds and at least 1.
func writeRetryError(ctx *fasthttp.RequestCtx, e *apiError, after time.Duration) {
	writeError(ctx, e)
	secs := int64((after + time.Second - 1) / time.Second)
	setInt(ctx, fasthttp.HeaderRetryAfter, max(1, secs))
}

// writeError is the one place that renders Sluice's own errors.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.status)
	ctx.Response.Header.SetContentType("application/json")
	if e.retryAfter != "" {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, e.retryAfter)
	}
	ctx.Response.SetBodyRaw(e.body)
}

// upstreamError maps a failed upstream round trip to the answer the client
// gets and reports whether it was a timeout.
func upstreamError(err error) (*apiError, bool) {
	if isTimeout(err) {
		return errUpstreamTimeout, true
	}
	return errUpstream, false
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serverError answers requests that fasthttp rejected before the handler
// ran.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	var idBuf [32]byte
	ctx.Response.Header.SetBytesV(HeaderRequestID, p.ids.next(&idBuf))
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeError(ctx, errBodyTooLarge)
		return
	}
	writeError(ctx, errBadRequest)
}
