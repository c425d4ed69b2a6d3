package deadletter

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func appendRaw(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func listAll(t *testing.T, s store) []Record {
	t.Helper()
	recs, next, err := s.List(t.Context(), Filter{Limit: 1000})
	if err != nil || next != "" {
		t.Fatalf("List = next %q, %v", next, err)
	}
	return recs
}

// TestFileReopen checks that reopening rebuilds exactly the state the
// store had: records, order, replay marks and deletes.
func TestFileReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, fullRecord(1), fullRecord(2), fullRecord(3), fullRecord(1))
	if err := s.MarkReplayed(t.Context(), "rec-002", t0, 500); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkReplayed(t.Context(), "rec-002", t0.Add(1), 200); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), "rec-001"); err != nil {
		t.Fatal(err)
	}
	before := listAll(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(t.Context(), fullRecord(9)); err == nil {
		t.Error("Add after Close = nil, want an error")
	}

	s2 := MustOpenFile(t, path)
	if got := listAll(t, s2); !reflect.DeepEqual(got, before) {
		t.Errorf("after reopen List = %#v\nwant %#v", got, before)
	}
	if d := s2.Damaged(); d != 0 {
		t.Errorf("Damaged() = %d, want 0", d)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Four adds of which one was a repeat, two marks, one delete.
	if n := strings.Count(string(raw), "\n"); n != 6 {
		t.Errorf("file has %d lines, want 6:\n%s", n, raw)
	}
}

func TestFileCrashSafety(t *testing.T) {
	tests := []struct {
		name    string
		garbage string // written after three good records
		damaged int
	}{
		{"truncated last line", `{"id":"half","failed_at":"2025-03-14T15:`, 1},
		{"truncated last line ending in newline", `{"id":"half","bo` + "\n", 1},
		{"corrupt middle lines", "not json\n{\"op\":\"explode\",\"id\":\"x\"}\n{\"id\":\"\"}\n" + `{"id":"t","failed_at":"never"}` + "\n" + `{"id":"ok-mid"}` + "\n", 4},
		{"unknown ids in ops are ignored", `{"op":"delete","id":"nobody"}` + "\n" + `{"op":"replay","id":"nobody","replayed_at":"","replay_status":1}` + "\n", 0},
		{"blank lines", "\n\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dl.jsonl")
			s, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			mustAdd(t, s, fullRecord(1), fullRecord(2), fullRecord(3))
			before := listAll(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			appendRaw(t, path, tt.garbage)

			s2, err := OpenFile(path)
			if err != nil {
				t.Fatalf("reopening after damage: %v", err)
			}
			got := listAll(t, s2)
			if n := len(got); n < 3 || !reflect.DeepEqual(got[:3], before) {
				t.Errorf("after damage List = %v, want %v first", ids(got), ids(before))
			}
			if d := s2.Damaged(); d != tt.damaged {
				t.Errorf("Damaged() = %d, want %d", d, tt.damaged)
			}
			after := fullRecord(4)
			mustAdd(t, s2, after)
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}

			s3 := MustOpenFile(t, path)
			if got := mustGet(t, s3, after.ID); !reflect.DeepEqual(got, want(after)) {
				t.Errorf("record added after damage = %#v\nwant %#v", got, want(after))
			}
			for _, r := range before {
				if _, err := s3.Get(t.Context(), r.ID); err != nil {
					t.Errorf("Get(%s) after two reopens: %v", r.ID, err)
				}
			}
			if d := s3.Damaged(); d != tt.damaged {
				t.Errorf("Damaged() after second reopen = %d, want %d (the new line must not join the damaged one)", d, tt.damaged)
			}
		})
	}
}

func TestFileGetReturnsCopy(t *testing.T) {
	s := MustOpenFile(t, filepath.Join(t.TempDir(), "dl.jsonl"))
	mustAdd(t, s, fullRecord(1))
	r := mustGet(t, s, "rec-001")
	r.Headers["Injected"] = "x"
	if got := mustGet(t, s, "rec-001"); got.Headers["Injected"] != "" {
		t.Error("changing a returned record's Headers changed the store")
	}
}

func TestFileListUnknownCursor(t *testing.T) {
	s := MustOpenFile(t, filepath.Join(t.TempDir(), "dl.jsonl"))
	if _, _, err := s.List(t.Context(), Filter{After: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("List(after unknown) = %v, want ErrNotFound", err)
	}
}
