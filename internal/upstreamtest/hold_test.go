package upstreamtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// schemes runs a test over plain HTTP and over TLS, whose connection reads
// behave differently.
var schemes = []struct {
	name string
	tls  bool
}{
	{"http", false},
	{"https", true},
}

// TestHeldStreamEndsWhenClientLeaves checks that a stream held by a gate that
// never opens ends once its client closes the connection, before Close.
func TestHeldStreamEndsWhenClientLeaves(t *testing.T) {
	for _, tt := range schemes {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t, Options{TLS: tt.tls})
			s.SetGate(make(chan struct{}))
			tr := &http.Transport{
				TLSClientConfig: tlsConfig(s),
				// Not pooled: the connection ends with this response.
				DisableKeepAlives: true,
			}
			resp, err := (&http.Client{Transport: tr}).Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "data: ") {
				t.Fatalf("first line = %q, %v, want an event", line, err)
			}
			if got := s.streams.Load(); got != 1 {
				t.Fatalf("streams = %d while held, want 1", got)
			}
			resp.Body.Close() // closes the connection: the body was not read to the end

			deadline := time.NewTimer(5 * time.Second)
			defer deadline.Stop()
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for s.streams.Load() != 0 {
				select {
				case <-deadline.C:
					t.Fatal("stream still held 5s after its client left")
				case <-tick.C:
				}
			}
		})
	}
}

// TestHeldStreamKeepsConnectionUsable checks that the connection read that
// watches a held stream leaves the keep-alive connection intact for the next
// request.
func TestHeldStreamKeepsConnectionUsable(t *testing.T) {
	for _, tt := range schemes {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t, Options{TLS: tt.tls})
			gate := make(chan struct{})
			s.SetGate(gate)
			var dials atomic.Int32
			dialer := &net.Dialer{}
			tr := &http.Transport{
				TLSClientConfig: tlsConfig(s),
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					return dialer.DialContext(ctx, network, addr)
				},
			}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr}

			resp, err := c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(resp.Body)
			if _, err := r.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			close(gate)
			var last string
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					break
				}
				if strings.HasPrefix(line, "data: ") {
					last = line
				}
			}
			resp.Body.Close()
			if last != "data: [DONE]\n" {
				t.Fatalf("last event = %q, want [DONE]", last)
			}
			resp, err = c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || dials.Load() != 1 {
				t.Errorf("second request: status %d over %d connections, want 200 over 1", resp.StatusCode, dials.Load())
			}
		})
	}
}

// tlsConfig trusts s's certificate, or is nil for a plain server.
func tlsConfig(s *Server) *tls.Config {
	if s.cert == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.CertPool()}
}
