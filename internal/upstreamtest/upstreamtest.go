// Package upstreamtest runs a fake OpenAI-compatible provider on a real
// fasthttp server, for tests and as the baseline upstream of the load
// benchmark. By default it answers chat completions (plain and streamed),
// embeddings, the model list and Anthropic messages with small, correctly
// shaped bodies; tests can script the next responses ([Server.Push]), replace
// the default ([Server.Handle]), hold streams open ([Server.SetGate]) and
// inspect what arrived ([Server.Requests], [Server.Arrivals]). The default
// non-streamed chat path takes no lock and allocates nothing per request, so
// the benchmark measures the proxy, not the fake.
package upstreamtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	// defaultChunks is the number of content chunks of a stream when
	// Options.Chunks is zero.
	defaultChunks = 5
	// arrivalsCap is the buffer of the Arrivals channel.
	arrivalsCap = 1024
	// closeTimeout bounds how long Close waits for handlers to return.
	closeTimeout = 10 * time.Second
	// maxAcceptDelay caps the back-off after a failed Accept.
	maxAcceptDelay = time.Second
	// caFileName is the name of the CA file in the server's directory.
	caFileName = "ca.pem"
)

// Options configures a [Server]. The zero value serves plain HTTP, streams
// five chunks without delay and only counts requests.
type Options struct {
	// ChunkDelay is the pause between two events of a streamed chat
	// completion. Zero sends them back to back; negative is invalid.
	ChunkDelay time.Duration
	// Chunks is the number of content chunks in a streamed chat completion.
	// Zero means 5; negative is invalid.
	Chunks int
	// TLS serves HTTPS with a certificate for 127.0.0.1, ::1 and localhost,
	// generated at start and trusted through [Server.CertPool] or
	// [Server.CAFile].
	TLS bool
	// Record keeps a copy of every request for [Server.Requests] and
	// [Server.Arrivals]. Off, the server only counts requests.
	Record bool
}

// Request is a copy of one request the server received. It shares no memory
// with the server or with other copies.
type Request struct {
	// Method is the request method, such as "POST".
	Method string
	// Path is the decoded, normalised path, without the query.
	Path string
	// Query is the raw query string, without the '?'.
	Query string
	// RequestURI is the request target exactly as received.
	RequestURI string
	// Host is the Host header (or the host of an absolute request target).
	Host string
	// Header holds the request headers under canonical keys, without Host,
	// as in net/http.
	Header http.Header
	// Body is the request body, de-chunked; nil when empty.
	Body []byte
}

func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Body = append([]byte(nil), r.Body...)
	return r
}

// Server is a running fake provider, returned by [Start] or [New]. Its methods
// are safe for concurrent use. After [Server.Close] it serves nothing, and
// Count, Requests and Arrivals still report what arrived.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:port" or "https://..." with
	// Options.TLS. Paths such as "/v1/chat/completions" go after it.
	URL string
	// Addr is the "host:port" the server listens on.
	Addr string

	opts Options
	srv  *fasthttp.Server
	ln   net.Listener
	done chan struct{} // closed by Close; ends held and delayed streams
	// wg counts the accept loop and one goroutine per connection: fasthttp's
	// own Serve leaves a worker-pool goroutine running after it returns.
	wg sync.WaitGroup

	connsMu sync.Mutex // protects conns, closed
	conns   map[net.Conn]struct{}
	closed  bool

	count   atomic.Int64
	seq     atomic.Uint64                           // numbers the ids of default responses
	pending atomic.Int64                            // len(queue), readable without mu
	handler atomic.Pointer[fasthttp.RequestHandler] // set by Handle
	gate    atomic.Pointer[<-chan struct{}]         // set by SetGate
	streams atomic.Int64                            // stream writers running

	mu       sync.Mutex // protects queue, requests
	queue    []fasthttp.RequestHandler
	requests []Request
	arrivals chan Request // nil unless Options.Record

	dir  string // holds the CA file; removed by Close
	cert *x509.Certificate

	closeOnce sync.Once
	closeErr  error
}

// Start listens on addr (typically "127.0.0.1:0") and serves, in goroutines
// the server owns, until [Server.Close]. It returns an error for invalid
// options, or when it cannot listen or make the TLS certificate.
func Start(addr string, opts Options) (*Server, error) {
	if opts.Chunks < 0 {
		return nil, fmt.Errorf("upstreamtest: Options.Chunks is %d, must not be negative", opts.Chunks)
	}
	if opts.ChunkDelay < 0 {
		return nil, fmt.Errorf("upstreamtest: Options.ChunkDelay is %v, must not be negative", opts.ChunkDelay)
	}
	if opts.Chunks == 0 {
		opts.Chunks = defaultChunks
	}
	s := &Server{opts: opts, done: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	if opts.Record {
		s.arrivals = make(chan Request, arrivalsCap)
	}
	s.srv = &fasthttp.Server{
		Handler:               s.serve,
		NoDefaultServerHeader: true,
		// Larger than the defaults so tests of big headers and bodies
		// exercise the proxy's limits, not the fake's.
		ReadBufferSize:     16 << 10,
		MaxRequestBodySize: 64 << 20,
		// Clients going away mid-stream is what many tests do; fasthttp
		// would log each one.
		Logger: quietLogger{},
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstreamtest: listening on %s: %w", addr, err)
	}
	s.Addr = ln.Addr().String()
	s.URL = "http://" + s.Addr
	if opts.TLS {
		cert, err := s.makeCert()
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("upstreamtest: making TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		})
		s.URL = "https://" + s.Addr
	}
	s.ln = ln

	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// accept serves each connection in a goroutine of its own until the listener
// is closed.
func (s *Server) accept() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors under load, say: back off as
			// net/http does, and try again.
			delay = min(max(2*delay, 5*time.Millisecond), maxAcceptDelay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if !s.track(c) {
			_ = c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// ServeConn closes c. Its error is the client's doing
			// (a broken connection, a malformed request).
			_ = s.srv.ServeConn(c)
			s.connsMu.Lock()
			delete(s.conns, c)
			s.connsMu.Unlock()
		}()
	}
}

// track adds c to the open connections, unless Close has begun.
func (s *Server) track(c net.Conn) bool {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// New starts a server on 127.0.0.1:0 with Options.Record on, and closes it
// when tb and its subtests have completed. It fails tb if the server cannot
// start or does not close cleanly.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	opts.Record = true
	s, err := Start("127.0.0.1:0", opts)
	if err != nil {
		tb.Fatalf("starting fake upstream: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("closing fake upstream: %v", err)
		}
	})
	return s
}

// Done returns a channel that is closed when [Server.Close] begins. A scripted
// handler that holds a request (to play a slow or hung provider) should also
// wait on it, or Close waits for the handler. fasthttp's RequestCtx.Done is
// never closed here: the server does not run fasthttp's Serve.
func (s *Server) Done() <-chan struct{} {
	return s.done
}

// Close stops the server as an outage would: it stops accepting, closes every
// connection at once (a request in flight gets no response, a stream ends
// without its last events), closes [Server.Done], waits for the handlers and
// the server's goroutines to return, and removes the CA file. A handler still
// running after ten seconds makes Close return an error. Calls after the first
// return the first result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		errs := []error{ignoreClosed(s.ln.Close())}
		s.connsMu.Lock()
		s.closed = true
		for c := range s.conns {
			_ = c.Close()
		}
		s.connsMu.Unlock()

		waited := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(waited)
		}()
		timer := time.NewTimer(closeTimeout)
		select {
		case <-waited:
		case <-timer.C:
			errs = append(errs, fmt.Errorf("handlers still running %v after closing their connections", closeTimeout))
		}
		timer.Stop()
		if s.dir != "" {
			errs = append(errs, os.RemoveAll(s.dir))
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("upstreamtest: closing %s: %w", s.Addr, err)
		}
	})
	return s.closeErr
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Count returns the number of requests received so far, on any path,
// scripted or not.
func (s *Server) Count() int64 {
	return s.count.Load()
}

// Requests returns copies of the recorded requests in arrival order. It is
// empty unless Options.Record is on (always with [New]).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = r.clone()
	}
	return out
}

// Arrivals returns a channel that receives a copy of each request as it
// arrives, before it is answered, so a test can wait for a request without
// polling. It is buffered (1024) and never blocks the server: arrivals beyond a
// full buffer are dropped (they remain in Requests). It is nil unless
// Options.Record is on, and is never closed.
func (s *Server) Arrivals() <-chan Request {
	return s.arrivals
}

// Push queues h to handle one request: each request is handled by the oldest
// pushed handler not used yet, ahead of [Server.Handle] and the default
// behaviour. h must not be nil, and must not keep ctx or its byte slices after
// it returns (see fasthttp.RequestCtx).
func (s *Server) Push(h fasthttp.RequestHandler) {
	if h == nil {
		panic("upstreamtest: Push(nil)")
	}
	s.mu.Lock()
	s.queue = append(s.queue, h)
	s.pending.Store(int64(len(s.queue)))
	s.mu.Unlock()
}

// Handle makes h handle every request that no pushed handler takes, instead of
// the default behaviour, until Handle(nil) restores the default. A handler can
// call [Server.Default] to answer as the server would have.
func (s *Server) Handle(h fasthttp.RequestHandler) {
	if h == nil {
		s.handler.Store(nil)
		return
	}
	s.handler.Store(&h)
}

// SetGate makes streamed chat completions that start afterwards send their
// first event and then wait until ch is closed before sending the rest. A held
// stream also ends, without its remaining events, when its client goes away or
// the server closes. SetGate(nil) removes the gate for later streams.
func (s *Server) SetGate(ch <-chan struct{}) {
	if ch == nil {
		s.gate.Store(nil)
		return
	}
	s.gate.Store(&ch)
}

// CAFile returns the path of the PEM certificate that signs the server's TLS
// certificate (it is self-signed), or "" without Options.TLS. The file is
// removed by [Server.Close].
func (s *Server) CAFile() string {
	if s.dir == "" {
		return ""
	}
	return filepath.Join(s.dir, caFileName)
}

// CertPool returns a new pool that trusts the server's TLS certificate, for
// tls.Config.RootCAs, or nil without Options.TLS.
func (s *Server) CertPool() *x509.CertPool {
	if s.cert == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.cert)
	return pool
}

// serve is the fasthttp handler: count, record, then dispatch. With nothing
// scripted and Record off it reads three atomics and takes no lock.
func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	s.count.Add(1)
	if s.opts.Record {
		s.record(ctx)
	}
	if s.pending.Load() > 0 {
		if h := s.pop(); h != nil {
			h(ctx)
			return
		}
	}
	if h := s.handler.Load(); h != nil {
		(*h)(ctx)
		return
	}
	s.Default(ctx)
}

func (s *Server) pop() fasthttp.RequestHandler {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	h := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	s.pending.Store(int64(len(s.queue)))
	return h
}

func (s *Server) record(ctx *fasthttp.RequestCtx) {
	r := Request{
		Method:     string(ctx.Method()),
		Path:       string(ctx.Path()),
		Query:      string(ctx.URI().QueryString()),
		RequestURI: string(ctx.RequestURI()),
		Host:       string(ctx.Host()),
		Header:     make(http.Header, ctx.Request.Header.Len()),
		Body:       append([]byte(nil), ctx.PostBody()...),
	}
	for k, v := range ctx.Request.Header.All() {
		key := http.CanonicalHeaderKey(string(k))
		if key == "Host" {
			continue
		}
		r.Header[key] = append(r.Header[key], string(v))
	}
	s.mu.Lock()
	s.requests = append(s.requests, r)
	s.mu.Unlock()
	select {
	case s.arrivals <- r.clone():
	default:
	}
}

// makeCert generates a self-signed ECDSA P-256 certificate for the loopback
// names, and writes it as PEM to a new temporary directory.
func (s *Server) makeCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"upstreamtest"}, CommonName: "upstreamtest"},
		// An hour of slack either side tolerates a skewed clock in CI.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing certificate: %w", err)
	}
	dir, err := os.MkdirTemp("", "upstreamtest-")
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating directory for CA file: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, caFileName), pemBytes, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return tls.Certificate{}, fmt.Errorf("writing CA file: %w", err)
	}
	s.dir = dir
	s.cert = leaf
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// quietLogger drops fasthttp's connection-error logs.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
