package deadletter

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzRecordJSON: any input either fails to decode with an error or
// decodes to a record that encodes and decodes back to itself.
func FuzzRecordJSON(f *testing.F) {
	rec := Record{ID: "01KA", FailedAt: time.Date(2026, 11, 23, 12, 0, 0, 5, time.UTC), Provider: "openai",
		Method: "POST", Path: "/v1/chat/completions", Headers: map[string]string{"A": "b"}, Body: `{"x":1}`,
		Attempts: 3, LastStatus: 503, ErrorKind: RetriesExhausted, ReplayStatus: 200}
	good, _ := rec.MarshalJSON()
	f.Add(good)
	f.Add([]byte(`{"id":"x","failed_at":"yesterday"}`))
	f.Add([]byte(`{"attempts":"3"}`))
	f.Add([]byte(`{"headers":{"a":1}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := r.UnmarshalJSON(b); err != nil {
			return
		}
		out, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("re-encoding %q: %v", b, err)
		}
		var back Record
		if err := back.UnmarshalJSON(out); err != nil {
			t.Fatalf("decoding our own %q: %v", out, err)
		}
		again, _ := back.MarshalJSON()
		if !bytes.Equal(out, again) {
			t.Fatalf("round trip changed the record:\n%s\n%s", out, again)
		}
	})
}

// FuzzRecordFromStream: a stream entry with arbitrary field values decodes
// or fails with an error, never panics, and what decodes round-trips.
func FuzzRecordFromStream(f *testing.F) {
	f.Add("2026-11-23T12:00:00Z", `{"A":"b"}`, "3", "503", "")
	f.Add("", "", "", "", "")
	f.Add("noon", `[1]`, "x", "-1", "9999999999999999999999")
	f.Fuzz(func(t *testing.T, failedAt, headers, attempts, lastStatus, replayStatus string) {
		r, err := recordFromStream(map[string]string{
			"id": "x", "failed_at": failedAt, "headers": headers, "attempts": attempts,
			"last_status": lastStatus, "replay_status": replayStatus,
		})
		if err != nil {
			return
		}
		fields, err := r.streamFields()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for i := 0; i < len(fields); i += 2 {
			m[fields[i].(string)] = fields[i+1].(string)
		}
		back, err := recordFromStream(m)
		if err != nil {
			t.Fatalf("decoding our own entry %v: %v", m, err)
		}
		if a, b := mustJSON(t, r), mustJSON(t, back); a != b {
			t.Fatalf("round trip changed the record:\n%s\n%s", a, b)
		}
	})
}

func mustJSON(t *testing.T, r Record) string {
	b, err := r.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzOpenFile: whatever bytes a dead-letter file holds (a crash mid-write,
// a hand edit, another program's output), OpenFile reads the lines it can,
// counts the rest as damaged, and the store keeps working: a record added
// afterwards survives a reopen.
func FuzzOpenFile(f *testing.F) {
	rec := Record{ID: "01KA", Provider: "openai", Method: "POST", Path: "/v1/x", ErrorKind: Shutdown}
	line, _ := rec.MarshalJSON()
	f.Add(append(line, '\n'))
	f.Add(append(append(line, '\n'), line[:len(line)/2]...)) // torn last line
	f.Add([]byte("{}\n\n{\"id\":\n"))
	f.Add([]byte("\x00\xff\n"))
	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(t.TempDir(), "dl.jsonl")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenFile(path)
		if err != nil {
			return // refused with an error, nothing lost: the file is untouched
		}
		n := s.Len()
		added := Record{ID: "FUZZ-NEW", Provider: "p", Method: "POST", Path: "/v1/x", ErrorKind: Shutdown}
		if err := s.Add(context.Background(), added); err != nil {
			t.Fatalf("Add after opening %q: %v", content, err)
		}
		s.Close()
		s, err = OpenFile(path)
		if err != nil {
			t.Fatalf("reopening after an Add: %v", err)
		}
		defer s.Close()
		if _, err := s.Get(context.Background(), "FUZZ-NEW"); err != nil {
			t.Fatalf("the record added after opening %q is gone: %v", content, err)
		}
		if s.Len() < n {
			t.Fatalf("reopen lost records: %d, had %d", s.Len(), n)
		}
	})
}
