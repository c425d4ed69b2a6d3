package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-ai/sluice/deadletter"
)

func TestDeadLetterRoutes(t *testing.T) {
	store, err := deadletter.OpenFile(filepath.Join(t.TempDir(), "dl.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var ids []string
	for i, kind := range []deadletter.Kind{deadletter.RetriesExhausted, deadletter.QueueTimeout, deadletter.RetriesExhausted} {
		at := t0.Add(time.Duration(i) * time.Minute)
		rec := deadletter.Record{ID: deadletter.NewID(at), FailedAt: at, ReceivedAt: at, Provider: "openai",
			Method: "POST", Path: "/v1/chat/completions", Body: `{}`, Class: "low", ErrorKind: kind}
		if err := store.Add(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}

	s, err := New(Settings{Listen: "127.0.0.1:0", Token: "admin-secret"}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.HandleDeadLetters(store, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()
	do := func(method, path, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	type page struct {
		Records []deadletter.Record `json:"records"`
		Next    string              `json:"next"`
	}
	list := func(query string) page {
		t.Helper()
		code, body := do("GET", "/admin/deadletters"+query, "admin-secret")
		var p page
		if code != 200 || json.Unmarshal(body, &p) != nil {
			t.Fatalf("GET /admin/deadletters%s = %d %s", query, code, body)
		}
		return p
	}

	if code, _ := do("GET", "/admin/deadletters", ""); code != 401 {
		t.Errorf("without the token: %d, want 401", code)
	}
	if p := list(""); len(p.Records) != 3 || p.Records[0].ID != ids[0] {
		t.Errorf("list = %d records, want all 3 oldest first", len(p.Records))
	}
	if p := list("?kind=retries_exhausted"); len(p.Records) != 2 {
		t.Errorf("kind filter: %d records, want 2", len(p.Records))
	}
	if p := list("?since=2026-11-23T12:01:00Z"); len(p.Records) != 2 {
		t.Errorf("since filter: %d records, want 2", len(p.Records))
	}
	p := list("?limit=2")
	if len(p.Records) != 2 || p.Next == "" {
		t.Fatalf("first page: %d records, next %q; want 2 and a cursor", len(p.Records), p.Next)
	}
	if rest := list("?limit=2&after=" + p.Next); len(rest.Records) != 1 || rest.Records[0].ID != ids[2] {
		t.Errorf("second page = %+v, want the third record", rest.Records)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?since=yesterday"} {
		if code, _ := do("GET", "/admin/deadletters"+q, "admin-secret"); code != 400 {
			t.Errorf("GET /admin/deadletters%s = %d, want 400", q, code)
		}
	}
	if code, body := do("GET", "/admin/deadletters/"+ids[1], "admin-secret"); code != 200 || !json.Valid(body) {
		t.Errorf("show = %d %s", code, body)
	}
	if code, _ := do("DELETE", "/admin/deadletters/"+ids[1], "admin-secret"); code != 204 {
		t.Errorf("delete = %d, want 204", code)
	}
	if code, _ := do("GET", "/admin/deadletters/"+ids[1], "admin-secret"); code != 404 {
		t.Errorf("show after delete = %d, want 404", code)
	}
	if code, _ := do("DELETE", "/admin/deadletters/nope", "admin-secret"); code != 404 {
		t.Errorf("delete unknown = %d, want 404", code)
	}
}
