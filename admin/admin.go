// Package admin serves Sluice's control plane on its own listener: health
// and readiness probes, Prometheus metrics, the /admin/ API and the status
// page at / that reads it.
//
// Health, metrics and the status page (which holds no data of its own) are
// open, as probes and scrapers expect; everything under /admin/ requires
// the bearer token when one is configured. Without a token the listener
// refuses any address that is not loopback, so an unauthenticated admin API
// is never reachable from the network.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Settings configures a [Server].
type Settings struct {
	// Listen is the host:port the server will be started on; it is checked
	// here so that a token-less admin API never listens beyond loopback.
	Listen string
	// Token, when set, is required as "Authorization: Bearer <Token>" on
	// /admin/ routes.
	Token string
	// Status, when set, answers GET /admin/status with its value as JSON.
	Status func() any
}

// timeHeader carries the server's clock on GET /admin/status, RFC 3339
// with nanoseconds.
const timeHeader = "X-Sluice-Time"

// Server is the admin HTTP server. Create it with [New]. It is not ready
// until [Server.SetReady] is called with true.
type Server struct {
	token  []byte
	status func() any
	log    *slog.Logger
	ready  atomic.Bool
	mux    *http.ServeMux
	http   *http.Server
}

// New builds the admin server; metrics are gathered from g.
func New(s Settings, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if s.Token == "" && !IsLoopback(s.Listen) {
		return nil, fmt.Errorf("admin: refusing to listen on %q without a token: set admin.token or use a loopback address", s.Listen)
	}
	srv := &Server{token: []byte(s.Token), status: s.Status, log: log, mux: http.NewServeMux()}
	srv.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	srv.mux.HandleFunc("GET /readyz", srv.readyz)
	srv.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
	}))
	srv.Handle("GET /admin/status", http.HandlerFunc(srv.statusJSON))
	srv.handleUI()
	srv.http = &http.Server{
		Handler:           srv.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return srv, nil
}

// Handle registers h under pattern (net/http ServeMux syntax) behind the
// bearer token. It must be called before [Server.Serve].
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.authorize(h))
}

// SetReady flips /readyz: false while starting and while draining.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Serve serves on ln until [Server.Shutdown]; it returns nil after a
// shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serving: %w", err)
	}
	return nil
}

// Shutdown stops the server, waiting for open requests until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		writeText(w, http.StatusServiceUnavailable, "not ready\n")
		return
	}
	writeText(w, http.StatusOK, "ready\n")
}

func (s *Server) statusJSON(w http.ResponseWriter, _ *http.Request) {
	var v any = struct{}{}
	if s.status != nil {
		v = s.status()
	}
	w.Header().Set("Content-Type", "application/json")
	// The status page counts down to the document's absolute times
	// (paused_until, breaker_open_until) on the server's clock, which
	// need not be the browser's.
	w.Header().Set(timeHeader, time.Now().UTC().Format(time.RFC3339Nano))
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("writing status", slog.String("error", err.Error()))
	}
}

func (s *Server) authorize(h http.Handler) http.Handler {
	if len(s.token) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), s.token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-admin"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"message":"missing or wrong admin bearer token","type":"invalid_request_error","code":"unauthorized"}}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// IsLoopback reports whether addr (host:port) names a loopback host:
// "localhost" or a loopback IP. An empty host means every interface, which
// is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
