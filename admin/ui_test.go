package admin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// mustServe runs s on a loopback port until the test ends and returns its
// base URL.
func mustServe(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

func fetch(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestStatusPageRoutes: the page and its assets are served without the
// token, with their content types, revalidated on each load, and under a
// policy that allows nothing from elsewhere; the page takes "/" only.
func TestStatusPageRoutes(t *testing.T) {
	s, err := New(Settings{Listen: "127.0.0.1:0", Token: "admin-secret", Status: func() any { return map[string]any{"mode": "single-replica"} }},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base := mustServe(t, s)

	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js" defer></script>`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "/admin/status"},
		{"/ui/style.css", "text/css; charset=utf-8", ":root"},
		{"/ui/icon.svg", "image/svg+xml", "<svg"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := fetch(t, http.MethodGet, base+tt.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200 without a token", tt.path, resp.StatusCode)
			}
			for k, want := range map[string]string{
				"Content-Type":           tt.contentType,
				"Cache-Control":          "no-cache",
				"X-Content-Type-Options": "nosniff",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("GET %s %s = %q, want %q", tt.path, k, got, want)
				}
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("GET %s Content-Security-Policy = %q, want self-only", tt.path, csp)
			}
			if !strings.Contains(body, tt.contains) {
				t.Errorf("GET %s body lacks %q", tt.path, tt.contains)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatalf("GET %s has no ETag", tt.path)
			}
			again, body := fetch(t, http.MethodGet, base+tt.path, http.Header{"If-None-Match": {etag}})
			if again.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("GET %s with If-None-Match = %d with %d bytes, want 304 and no body", tt.path, again.StatusCode, len(body))
			}
		})
	}

	others := []struct {
		method, path string
		want         int
	}{
		{http.MethodHead, "/", http.StatusOK},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodGet, "/index.html", http.StatusNotFound},
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/ui/", http.StatusNotFound},
		{http.MethodGet, "/ui/index.html", http.StatusNotFound},
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodGet, "/healthz", http.StatusOK},
		{http.MethodGet, "/admin/status", http.StatusUnauthorized},
	}
	for _, tt := range others {
		if resp, _ := fetch(t, tt.method, base+tt.path, nil); resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}

// TestStatusPageAssetsResolve: every same-origin file the page names is
// served, so an asset renamed in one place only fails here and not in a
// browser.
func TestStatusPageAssetsResolve(t *testing.T) {
	s, err := New(Settings{Listen: "127.0.0.1:0"}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base := mustServe(t, s)
	_, page := fetch(t, http.MethodGet, base+"/", nil)
	refs := regexp.MustCompile(`(?:src|href)="(/[^"]*)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("the page names %d files, want its script, style sheet and icon", len(refs))
	}
	for _, m := range refs {
		if resp, _ := fetch(t, http.MethodGet, base+m[1], nil); resp.StatusCode != http.StatusOK {
			t.Errorf("the page names %s, which answers %d", m[1], resp.StatusCode)
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("the page names an absolute URL; it must load nothing from elsewhere")
	}
}

// TestStatusCarriesServerTime: the page's countdowns read the server's
// clock from the status answer.
func TestStatusCarriesServerTime(t *testing.T) {
	s, err := New(Settings{Listen: "127.0.0.1:0"}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base := mustServe(t, s)
	before := time.Now()
	resp, _ := fetch(t, http.MethodGet, base+"/admin/status", nil)
	got, err := time.Parse(time.RFC3339Nano, resp.Header.Get(timeHeader))
	if err != nil {
		t.Fatalf("%s = %q: %v", timeHeader, resp.Header.Get(timeHeader), err)
	}
	if got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("%s = %v, want about %v", timeHeader, got, before)
	}
}
