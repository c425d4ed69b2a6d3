package deadletter

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// specFields is the SPEC's list, written out again so that a change to
// FieldNames or to the wire tags fails here.
var specFields = []string{
	"id", "failed_at", "received_at", "provider", "method", "path", "query",
	"headers", "body", "class", "attempts", "last_status", "error_kind",
	"error_message", "idempotency_key", "replayed_at", "replay_status",
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestFieldNames(t *testing.T) {
	want := slices.Sorted(slices.Values(specFields))
	if got := FieldNames[:]; !slices.Equal(got, specFields) {
		t.Errorf("FieldNames = %v, want %v", got, specFields)
	}

	t.Run("record JSON", func(t *testing.T) {
		for _, r := range []Record{{}, fullRecord(1)} {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if got := sortedKeys(m); !slices.Equal(got, want) {
				t.Errorf("JSON keys of %s = %v, want %v", b, got, want)
			}
			if _, ok := m["headers"].(map[string]any); !ok {
				t.Errorf("headers in %s is %T, want a JSON object", b, m["headers"])
			}
		}
	})

	t.Run("stream entry", func(t *testing.T) {
		srv := redistest.Start(t)
		c := srv.Client(t)
		s := NewRedisStore(c, testStream, 0, 5*time.Second)
		r := fullRecord(1)
		mustAdd(t, s, r, Record{ID: "bare"})
		entries, err := c.XRange(t.Context(), testStream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 {
			t.Fatalf("XRANGE returned %d entries, want 2", len(entries))
		}
		for _, e := range entries {
			if got := sortedKeys(e.Values); !slices.Equal(got, want) {
				t.Errorf("fields of entry %s = %v, want %v", e.ID, got, want)
			}
		}
		v := entries[0].Values
		for field, w := range map[string]string{
			"failed_at":     "2025-03-14T15:09:27.535897932Z",
			"attempts":      "5",
			"last_status":   "503",
			"headers":       `{"Authorization":"[redacted]","Content-Type":"application/json","X-Priority":"low"}`,
			"body":          r.Body,
			"replayed_at":   "",
			"replay_status": "0",
			"error_kind":    "retries_exhausted",
		} {
			if v[field] != w {
				t.Errorf("entry field %s = %q, want %q", field, v[field], w)
			}
		}
		if got := entries[1].Values["failed_at"]; got != "" {
			t.Errorf("unset failed_at = %q, want \"\"", got)
		}
	})
}

func TestRecordJSONRoundTrip(t *testing.T) {
	r := fullRecord(3)
	r.ReplayedAt, r.ReplayStatus = t0.Add(time.Minute), 200
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got Record
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("Unmarshal(%s): %v", b, err)
	}
	if w := normalize(r); !reflect.DeepEqual(got, w) {
		t.Errorf("round trip = %#v\nwant %#v", got, w)
	}
	if err := json.Unmarshal([]byte(`{"id":"x","failed_at":"yesterday"}`), &got); err == nil {
		t.Error("Unmarshal(bad failed_at) = nil, want an error")
	}
}

func TestNewID(t *testing.T) {
	valid := regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)
	seen := map[string]bool{}
	now := time.UnixMilli(1_700_000_000_000)
	for i := range 1000 {
		id := NewID(now)
		if !valid.MatchString(id) {
			t.Fatalf("NewID = %q, want 26 Crockford base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID returned %q twice (after %d ids)", id, i)
		}
		seen[id] = true
	}
	// Ids sort by millisecond.
	prev := NewID(now)
	for ms := range int64(50) {
		id := NewID(now.Add(time.Duration(ms+1) * time.Millisecond))
		if id <= prev {
			t.Fatalf("NewID(+%dms) = %q, not after %q", ms+1, id, prev)
		}
		prev = id
	}
	// The timestamp is the ULID's: 1700000000000 ms is "01HF7YAT00".
	if got := NewID(now)[:10]; got != "01HF7YAT00" {
		t.Errorf("NewID(%d ms) time part = %q, want 01HF7YAT00", now.UnixMilli(), got)
	}
}

func TestRedactor(t *testing.T) {
	r := NewRedactor([]string{"X-Goog-Api-Key", " x-custom-token "})
	h := map[string][]string{
		"Authorization":  {"Bearer sk-secret-123"},
		"x-api-key":      {"anthropic-key-456"},
		"API-KEY":        {"azure-key-789"},
		"Cookie":         {"session=cookie-value-abc; theme=dark"},
		"X-Goog-Api-Key": {"goog-key-000"},
		"X-Custom-Token": {"custom-tok-111"},
		"Content-Type":   {"application/json"},
		"Accept":         {"a/b", "c/d"},
	}
	got := r.Headers(h)
	want := map[string]string{
		"Authorization": Redacted, "x-api-key": Redacted, "API-KEY": Redacted, "Cookie": Redacted,
		"X-Goog-Api-Key": Redacted, "X-Custom-Token": Redacted,
		"Content-Type": "application/json", "Accept": "a/b, c/d",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Headers = %v, want %v", got, want)
	}
	tests := []struct{ msg, want string }{
		{"401: Incorrect API key provided: sk-secret-123.", "401: Incorrect API key provided: [redacted]."},
		{"sent Bearer sk-secret-123", "sent [redacted]"},
		{"cookie session=cookie-value-abc; theme=dark", "cookie [redacted]"},
		{"value cookie-value-abc leaked", "value [redacted] leaked"},
		{"keys anthropic-key-456 azure-key-789 goog-key-000 custom-tok-111", "keys [redacted] [redacted] [redacted] [redacted]"},
		{"no secret here, Bearer dark", "no secret here, Bearer dark"},
	}
	secrets := r.Secrets(h)
	for _, tt := range tests {
		if got := r.Scrub(tt.msg, secrets...); got != tt.want {
			t.Errorf("Scrub(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
	if got := r.Scrub("x", ""); got != "x" {
		t.Errorf("Scrub(x, \"\") = %q, want x", got)
	}
}

// TestRedactionStored proves, on the bytes each store keeps, that no
// secret of a redacted request survives anywhere in the record.
func TestRedactionStored(t *testing.T) {
	secrets := []string{"sk-secret-123", "anthropic-key-456", "azure-key-789", "cookie-value-abc", "extra-secret-999"}
	build := func() Record {
		h := map[string][]string{
			"Authorization":  {"Bearer sk-secret-123"},
			"X-Api-Key":      {"anthropic-key-456"},
			"api-key":        {"azure-key-789"},
			"Cookie":         {"sid=cookie-value-abc"},
			"X-Tenant-Token": {"extra-secret-999"},
			"Content-Type":   {"application/json"},
		}
		rec := fullRecord(1)
		rec.ErrorMessage = "upstream 401: invalid key sk-secret-123 (header Bearer sk-secret-123, tenant extra-secret-999, cookie sid=cookie-value-abc, azure azure-key-789, anthropic anthropic-key-456)"
		NewRedactor([]string{"x-tenant-token"}).Redact(&rec, h)
		return rec
	}
	check := func(t *testing.T, raw []byte) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(string(raw), s) {
				t.Errorf("stored bytes contain secret %q:\n%s", s, raw)
			}
		}
		if !strings.Contains(string(raw), "application/json") || !strings.Contains(string(raw), "[redacted]") {
			t.Errorf("stored bytes lack the kept header or the redaction marker:\n%s", raw)
		}
	}

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dl.jsonl")
		s := MustOpenFile(t, path)
		mustAdd(t, s, build())
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		check(t, raw)
	})

	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		c := srv.Client(t)
		s := NewRedisStore(c, testStream, 0, 5*time.Second)
		mustAdd(t, s, build())
		entries, err := c.XRange(t.Context(), testStream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(entries)
		if err != nil {
			t.Fatal(err)
		}
		check(t, raw)
	})
}
