package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/breaker"
	"github.com/sluice-ai/sluice/metrics"
)

// upstream is one configured provider: where its requests go and how.
type upstream struct {
	name      string
	scheme    []byte
	host      []byte // Host header and URI host
	basePath  []byte // prepended to the client's path; no trailing slash
	authValue []byte // replacement Authorization value; nil = pass the client's
	hc        *fasthttp.HostClient
	dialer    *dialer

	headerTimeout time.Duration
	idleTimeout   time.Duration
	totalTimeout  time.Duration

	metrics  *metrics.Provider
	inflight atomic.Int64 // requests sent and not yet fully relayed
	quota    *quota
	policy   failurePolicy
	breaker  *breaker.Breaker
}

func newUpstream(p Provider) (*upstream, error) {
	u, err := url.Parse(p.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("parsing base URL of provider %s: %w", p.Name, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("provider %s: base URL %q must be an absolute http(s) URL", p.Name, p.BaseURL)
	}
	isTLS := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		if isTLS {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	if p.Timeout <= 0 || p.ConnectTimeout <= 0 || p.StreamIdleTimeout <= 0 {
		return nil, fmt.Errorf("provider %s: timeouts must be positive", p.Name)
	}
	headerTimeout := p.ResponseHeaderTimeout
	if headerTimeout <= 0 || headerTimeout > p.Timeout {
		headerTimeout = p.Timeout
	}
	maxConns := p.MaxConns
	if maxConns <= 0 {
		maxConns = fasthttp.DefaultMaxConnsPerHost
	}
	up := &upstream{
		name:          p.Name,
		scheme:        []byte(u.Scheme),
		host:          []byte(u.Host),
		basePath:      []byte(strings.TrimRight(u.EscapedPath(), "/")),
		dialer:        newDialer(p.ConnectTimeout),
		headerTimeout: headerTimeout,
		idleTimeout:   p.StreamIdleTimeout,
		totalTimeout:  p.Timeout,
	}
	if p.APIKey != "" {
		up.authValue = []byte("Bearer " + p.APIKey)
	}
	var tlsConfig *tls.Config
	if isTLS {
		tlsConfig = p.TLSConfig
		if tlsConfig == nil {
			tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if tlsConfig.ServerName == "" {
			tlsConfig = tlsConfig.Clone()
			tlsConfig.ServerName = u.Hostname()
		}
	}
	up.hc = &fasthttp.HostClient{
		Addr:        addr,
		IsTLS:       isTLS,
		TLSConfig:   tlsConfig,
		DialTimeout: up.dialer.dial,
		MaxConns:    maxConns,
		// Every attempt is Sluice's decision (retries come with the
		// scheduler), never fasthttp's.
		MaxIdemponentCallAttempts: 1,
		RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		// Responses that may be long (streams, downloads) are relayed as
		// they arrive; see wantsStream. The rest are read whole, bounded.
		MaxResponseBodySize: maxBufferedResponse,
		// The client's path was normalised when it was routed and is
		// re-escaped by us; fasthttp must send it as given.
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
		// An LLM provider's response headers can take minutes; keep-alive
		// connections are nonetheless reused only while fresh, because a
		// POST that lands on a connection the provider just closed is not
		// retried by fasthttp.
		MaxIdleConnDuration: 10 * time.Second,
		ReadBufferSize:      16 << 10,
		WriteBufferSize:     16 << 10,
	}
	return up, nil
}

// prepare fills req with the upstream request for the client's request.
// path is the client's normalised path with any provider prefix removed;
// body, when not nil, replaces the client's body.
func (u *upstream) prepare(req *fasthttp.Request, ctx *fasthttp.RequestCtx, path, body []byte) {
	copyRequestHeaders(&req.Header, &ctx.Request.Header, u.authValue != nil)
	if u.authValue != nil {
		req.Header.SetBytesV(fasthttp.HeaderAuthorization, u.authValue)
	}
	req.Header.SetMethodBytes(ctx.Method())
	uri := req.URI()
	uri.SetSchemeBytes(u.scheme)
	uri.SetHostBytes(u.host)
	buf := append(uri.PathOriginal()[:0], u.basePath...)
	buf = appendEscapedPath(buf, path)
	if len(buf) == 0 {
		buf = append(buf, '/')
	}
	uri.SetPathBytes(buf)
	uri.SetQueryStringBytes(ctx.URI().QueryString())
	req.Header.SetHostBytes(u.host)
	// The body stays owned by ctx (or the exchange); req is sent and
	// released before the handler returns.
	if body == nil {
		body = ctx.PostBody()
	}
	req.SetBodyRaw(body)
}

// maxBufferedResponse caps a response read whole: far above any completion
// or embeddings batch, and a guard against a runaway upstream.
const maxBufferedResponse = 256 << 20

// wantsStream reports whether the response to the client's request should
// be relayed as it arrives rather than read whole. A POST is read whole
// unless its body mentions "stream" (a false positive, say in a prompt, only
// costs the streaming path); anything else, such as a file download,
// streams. Reading small responses whole saves fasthttp's per-stream
// allocations and lets the proxy see their usage.
func wantsStream(ctx *fasthttp.RequestCtx) bool {
	return !ctx.IsPost() || bytes.Contains(ctx.PostBody(), []byte(`"stream"`))
}

// roundTrip sends req and waits for the response headers, within the
// header timeout and what is left of the total timeout from start (when
// the attempt began, after any wait for quota).
func (u *upstream) roundTrip(req *fasthttp.Request, resp *fasthttp.Response, start time.Time) error {
	timeout := u.headerTimeout
	if left := u.totalTimeout - time.Since(start); left < timeout {
		timeout = left
	}
	if timeout <= 0 {
		return fasthttp.ErrTimeout
	}
	req.SetTimeout(timeout)
	if err := u.hc.Do(req, resp); err != nil {
		return fmt.Errorf("sending request to %s: %w", u.name, err)
	}
	return nil
}

// close cuts every upstream connection, busy or idle.
func (u *upstream) close() {
	u.dialer.closeAll()
	u.hc.CloseIdleConnections()
}
