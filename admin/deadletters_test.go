package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
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

// sender answers replays from a table of provider -> status, and refuses
// providers without a key the way the proxy does.
type sender struct{ status map[string]int }

func (s sender) Send(_ context.Context, r deadletter.Record, apiKey string) (deadletter.Outcome, error) {
	st, ok := s.status[r.Provider]
	if !ok {
		return deadletter.Outcome{}, deadletter.ErrUnknownProvider
	}
	if apiKey == "" && r.Provider == "keyless" {
		return deadletter.Outcome{}, deadletter.ErrNoAPIKey
	}
	return deadletter.Outcome{Status: st, Body: []byte(`{"ok":true}`), Message: "failed again"}, nil
}

func TestReplayRoutes(t *testing.T) {
	store, err := deadletter.OpenFile(filepath.Join(t.TempDir(), "dl.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ids := map[string]string{}
	for _, prov := range []string{"good", "bad", "keyless", "gone"} {
		rec := deadletter.Record{ID: deadletter.NewID(time.Now()), FailedAt: time.Now(), Provider: prov, Method: "POST", Path: "/v1/x", ErrorKind: deadletter.Shutdown}
		if err := store.Add(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		ids[prov] = rec.ID
	}
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	outcomes := map[string]int{}
	replays := deadletter.NewReplayer(store, sender{status: map[string]int{"good": 200, "bad": 503, "keyless": 200}},
		func(_, outcome string) { mu.Lock(); outcomes[outcome]++; mu.Unlock() })
	s, err := New(Settings{Listen: "127.0.0.1:0"}, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.HandleDeadLetters(store, replays)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post("http://"+ln.Addr().String()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp.StatusCode, doc
	}
	code := func(doc map[string]any) any { e, _ := doc["error"].(map[string]any); return e["code"] }

	if st, doc := post("/admin/deadletters/"+ids["good"]+"/replay", ""); st != 200 || doc["delivered"] != true || doc["body"] != `{"ok":true}` {
		t.Errorf("replay good = %d %v, want delivered with the body", st, doc)
	}
	if st, doc := post("/admin/deadletters/"+ids["good"]+"/replay", "{}"); st != 409 || code(doc) != "already_replayed" {
		t.Errorf("replay delivered again = %d %v, want 409 already_replayed", st, doc)
	}
	if st, doc := post("/admin/deadletters/"+ids["bad"]+"/replay", ""); st != 200 || doc["delivered"] != false || doc["status"] != 503.0 || doc["error"] != "failed again" {
		t.Errorf("replay bad = %d %v, want not delivered, 503", st, doc)
	}
	if st, doc := post("/admin/deadletters/"+ids["keyless"]+"/replay", ""); st != 400 || code(doc) != "no_api_key" {
		t.Errorf("replay keyless = %d %v, want 400 no_api_key", st, doc)
	}
	if st, doc := post("/admin/deadletters/"+ids["gone"]+"/replay", ""); st != 400 || code(doc) != "unknown_provider" {
		t.Errorf("replay gone = %d %v, want 400 unknown_provider", st, doc)
	}
	if st, doc := post("/admin/deadletters/nope/replay", ""); st != 404 || code(doc) != "not_found" {
		t.Errorf("replay unknown id = %d %v, want 404", st, doc)
	}
	for _, body := range []string{`{"api_key":1}`, `{"apikey":"x"}`, `[`} {
		if st, doc := post("/admin/deadletters/"+ids["bad"]+"/replay", body); st != 400 || code(doc) != "invalid_body" {
			t.Errorf("replay with body %s = %d %v, want 400 invalid_body", body, st, doc)
		}
	}
	if st, doc := post("/admin/deadletters/replay", `{"since":"yesterday"}`); st != 400 || code(doc) != "invalid_filter" {
		t.Errorf("batch with a bad filter = %d %v, want 400", st, doc)
	}

	// The batch: good was delivered already (skipped), bad fails again,
	// keyless delivers with the key given, gone cannot be replayed.
	st, doc := post("/admin/deadletters/replay", `{"api_key":"sk-given"}`)
	if st != 200 || doc["delivered"] != 1.0 || doc["failed"] != 2.0 || doc["skipped"] != 1.0 {
		t.Errorf("batch = %d %v, want 1 delivered, 2 failed, 1 skipped", st, doc)
	}
	if st, doc := post("/admin/deadletters/replay", `{"provider":"bad","force":true}`); st != 200 || doc["failed"] != 1.0 || len(doc["results"].([]any)) != 1 {
		t.Errorf("filtered batch = %d %v, want the one bad record", st, doc)
	}
	if rec, _ := store.Get(context.Background(), ids["bad"]); rec.ReplayStatus != 503 || store.Len() != 4 {
		t.Errorf("bad record after replays: %+v, %d records; want marked 503, no new records", rec, store.Len())
	}
	if outcomes["delivered"] != 2 || outcomes["failed"] != 3 || outcomes["refused"] != 3 {
		t.Errorf("outcomes observed %v", outcomes)
	}
}
