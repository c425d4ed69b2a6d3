package admin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9090", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{":9090", false},
		{"0.0.0.0:9090", false},
		{"[::]:9090", false},
		{"10.0.0.1:9090", false},
		{"example.com:9090", false},
		{"not an address", false},
	}
	for _, tt := range tests {
		if got := IsLoopback(tt.addr); got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestRefusesOpenListenerWithoutToken(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if _, err := New(Settings{Listen: "0.0.0.0:9090"}, prometheus.NewRegistry(), log); err == nil {
		t.Error("New accepted a non-loopback address without a token")
	}
	if _, err := New(Settings{Listen: "0.0.0.0:9090", Token: "t"}, prometheus.NewRegistry(), log); err != nil {
		t.Errorf("New with a token: %v", err)
	}
}

func TestReadiness(t *testing.T) {
	s, err := New(Settings{Listen: "127.0.0.1:0", Status: func() any { return map[string]int{"queued": 3} }},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("/readyz before SetReady = %d, want 503", code)
	}
	s.SetReady(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d, want 200", code)
	}
	s.SetReady(false)
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("/readyz when draining = %d, want 503", code)
	}
	if code, body := get("/admin/status"); code != 200 || !strings.Contains(body, `"queued":3`) {
		t.Errorf("/admin/status = %d %s", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}
}
