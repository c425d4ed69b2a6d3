package deadletter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fileSize returns the size of the file at path.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// readLines returns the lines of the file at path, without their '\n'.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// snapshot is what a store answers about every record it holds.
type snapshot struct {
	list []Record
	get  map[string]Record
}

func takeSnapshot(t *testing.T, s *FileStore) snapshot {
	t.Helper()
	sn := snapshot{list: listAll(t, s), get: map[string]Record{}}
	for _, r := range sn.list {
		sn.get[r.ID] = mustGet(t, s, r.ID)
	}
	return sn
}

func checkSnapshot(t *testing.T, what string, s *FileStore, want snapshot) {
	t.Helper()
	got := takeSnapshot(t, s)
	if !reflect.DeepEqual(got.list, want.list) {
		t.Errorf("%s: List = %v\nwant %v", what, ids(got.list), ids(want.list))
	}
	if !reflect.DeepEqual(got.get, want.get) {
		t.Errorf("%s: Get = %#v\nwant %#v", what, got.get, want.get)
	}
}

// TestFileCompact checks that compaction keeps exactly the live records,
// in order and with their replay marks, shrinks the file, and leaves a
// store that appends durably.
func TestFileCompact(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dl.jsonl")
	s := MustOpenFile(t, path)
	ctx := t.Context()
	for i := 1; i <= 6; i++ {
		mustAdd(t, s, fullRecord(i))
	}
	for _, m := range []struct {
		id     string
		status int
	}{{"rec-002", 502}, {"rec-002", 200}, {"rec-003", 504}, {"rec-001", 200}} {
		if err := s.MarkReplayed(ctx, m.id, t0.Add(time.Duration(m.status)*time.Millisecond), m.status); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"rec-001", "rec-004", "rec-006"} {
		if err := s.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// Deleted and added again: live at its later position, without a mark.
	mustAdd(t, s, fullRecord(1))
	// The operator lets a group read the file; compaction must keep that.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, s)
	if got, want := ids(before.list), []string{"rec-002", "rec-003", "rec-005", "rec-001"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("set-up: List = %v, want %v", got, want)
	}
	sizeBefore := fileSize(t, path)

	if err := s.Compact(); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	checkSnapshot(t, "after Compact", s, before)
	if got := fileSize(t, path); got >= sizeBefore {
		t.Errorf("file size after Compact = %d, want < %d", got, sizeBefore)
	}
	if lines := readLines(t, path); len(lines) != len(before.list) {
		t.Errorf("file has %d lines after Compact, want one per live record (%d):\n%s", len(lines), len(before.list), strings.Join(lines, "\n"))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode after Compact = %v, %v; want 0640", st.Mode().Perm(), err)
	}
	for _, side := range []string{tempPath(path), path + damagedSuffix} {
		if _, err := os.Stat(side); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat(%s) = %v, want it not to exist", side, err)
		}
	}
	// Live ids stay cursors; compaction forgets deleted ones.
	recs, _, err := s.List(ctx, Filter{After: "rec-003"})
	if err != nil || !reflect.DeepEqual(ids(recs), []string{"rec-005", "rec-001"}) {
		t.Errorf("List(after rec-003) = %v, %v; want [rec-005 rec-001]", ids(recs), err)
	}
	if _, _, err := s.List(ctx, Filter{After: "rec-004"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("List(after rec-004, deleted before Compact) = %v, want ErrNotFound", err)
	}

	// The store goes on appending to the new file.
	mustAdd(t, s, fullRecord(7))
	if err := s.MarkReplayed(ctx, "rec-005", t0, 201); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "rec-002"); err != nil {
		t.Fatal(err)
	}
	after := takeSnapshot(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := MustOpenFile(t, path)
	checkSnapshot(t, "after Compact, changes and reopen", s2, after)
	if d := s2.Damaged(); d != 0 {
		t.Errorf("Damaged() after reopen = %d, want 0", d)
	}
	if err := s2.CompactErr(); err != nil {
		t.Errorf("CompactErr() = %v", err)
	}

	// Compacting an empty store leaves an empty file that still works.
	for _, r := range after.list {
		if err := s2.Delete(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.Compact(); err != nil {
		t.Fatalf("Compact of an empty store: %v", err)
	}
	if got := fileSize(t, path); got != 0 {
		t.Errorf("file size after compacting an empty store = %d, want 0", got)
	}
	mustAdd(t, s2, fullRecord(8))
	if got := listAll(t, s2); !reflect.DeepEqual(ids(got), []string{"rec-008"}) {
		t.Errorf("List = %v, want [rec-008]", ids(got))
	}
}

// TestFileCompactDamaged checks that compaction moves the damaged lines to
// the side file, once, after whatever it held, and nowhere else.
func TestFileCompactDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	side := path + damagedSuffix
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, fullRecord(1), fullRecord(2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damaged := []string{"not json", `{"op":"explode","id":"x"}`, `{"id":"t","failed_at":"never"}`}
	appendRaw(t, path, strings.Join(damaged, "\n")+"\n")
	s, err = OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, fullRecord(3))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash mid-write: the last line has no end.
	const half = `{"id":"half","failed_at":"2025-03-14T15:`
	appendRaw(t, path, half)
	damaged = append(damaged, half)
	// An earlier compaction's lines stay first.
	const earlier = "saved by an earlier compaction\n"
	if err := os.WriteFile(side, []byte(earlier), 0o600); err != nil {
		t.Fatal(err)
	}

	s = MustOpenFile(t, path)
	if d := s.Damaged(); d != len(damaged) {
		t.Fatalf("Damaged() = %d, want %d", d, len(damaged))
	}
	before := takeSnapshot(t, s)
	if err := s.Compact(); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	// A second compaction has nothing more to save.
	if err := s.Compact(); err != nil {
		t.Fatalf("second Compact: %v", err)
	}
	got, err := os.ReadFile(side)
	if err != nil {
		t.Fatal(err)
	}
	if want := earlier + strings.Join(damaged, "\n") + "\n"; string(got) != want {
		t.Errorf("side file = %q\nwant %q", got, want)
	}
	checkSnapshot(t, "after Compact", s, before)
	if d := s.Damaged(); d != len(damaged) {
		t.Errorf("Damaged() after Compact = %d, want %d (it counts what the open found)", d, len(damaged))
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range damaged {
		if bytes.Contains(raw, []byte(d)) {
			t.Errorf("compacted file still holds damaged line %q", d)
		}
	}
	mustAdd(t, s, fullRecord(4))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := MustOpenFile(t, path)
	if d := s2.Damaged(); d != 0 {
		t.Errorf("Damaged() after reopening the compacted file = %d, want 0", d)
	}
	if got := ids(listAll(t, s2)); !reflect.DeepEqual(got, []string{"rec-001", "rec-002", "rec-003", "rec-004"}) {
		t.Errorf("List after reopen = %v", got)
	}
}

// writeFile replaces the file at path with lines, each JSON-encoded, and
// returns its size.
func writeFile(t *testing.T, path string, lines []any) int64 {
	t.Helper()
	var buf bytes.Buffer
	for _, l := range lines {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return int64(buf.Len())
}

func TestShouldCompact(t *testing.T) {
	tests := []struct {
		dead, live int64
		want       bool
	}{
		{0, 0, false},
		{compactMinDead - 1, 0, false},
		{compactMinDead, 0, true},
		{compactMinDead, compactMinDead, true},
		{compactMinDead, compactMinDead + 1, false},
		{10 * compactMinDead, 10*compactMinDead - 1, true},
		{10 * compactMinDead, 10*compactMinDead + 1, false},
	}
	for _, tt := range tests {
		if got := shouldCompact(tt.dead, tt.live); got != tt.want {
			t.Errorf("shouldCompact(%d, %d) = %v, want %v", tt.dead, tt.live, got, tt.want)
		}
	}
}

// TestFileCompactAtOpen checks that OpenFile compacts a file with enough
// dead weight, and only such a file.
func TestFileCompactAtOpen(t *testing.T) {
	body := strings.Repeat("x", 4<<10)
	tests := []struct {
		name          string
		deleted, live int
		compacts      bool
	}{
		// About 1.3 MiB of deleted records against 45 KiB live.
		{"dead weight", 300, 10, true},
		// About 450 KiB dead: under the floor, however little is live.
		{"under the floor", 100, 1, false},
		// Over the floor, but live records outweigh it.
		{"live outweighs dead", 300, 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dl.jsonl")
			var lines []any
			for i := range tt.deleted + tt.live {
				r := fullRecord(i)
				r.ID = fmt.Sprintf("r%04d", i)
				r.Body = body
				lines = append(lines, normalize(r).wire())
				if i < tt.deleted {
					lines = append(lines, replayLine{Op: opReplay, ID: r.ID, ReplayedAt: formatTime(t0), ReplayStatus: 500})
					lines = append(lines, deleteLine{Op: opDelete, ID: r.ID})
				}
			}
			size := writeFile(t, path, lines)

			s := MustOpenFile(t, path)
			if err := s.CompactErr(); err != nil {
				t.Fatalf("CompactErr() = %v", err)
			}
			if n := s.Len(); n != tt.live {
				t.Errorf("Len() = %d, want %d", n, tt.live)
			}
			got := fileSize(t, path)
			if tt.compacts {
				if n := len(readLines(t, path)); n != tt.live || got >= size/2 {
					t.Errorf("file after OpenFile: %d lines, %d bytes; want %d lines and under %d bytes", n, got, tt.live, size/2)
				}
			} else if got != size {
				t.Errorf("file size after OpenFile = %d, want it untouched (%d)", got, size)
			}
			mustAdd(t, s, Record{ID: "new"})
			recs := listAll(t, s)
			if len(recs) != tt.live+1 || recs[0].ID != fmt.Sprintf("r%04d", tt.deleted) || recs[len(recs)-1].ID != "new" {
				t.Errorf("List after OpenFile and Add = %d records, %v ... %v", len(recs), recs[0].ID, recs[len(recs)-1].ID)
			}
		})
	}
}

// TestFileCompactInterrupted checks that a temporary file left by a
// compaction that crashed before its rename is ignored and removed: the
// original is then complete and authoritative.
func TestFileCompactInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, fullRecord(1), fullRecord(2), fullRecord(3))
	if err := s.Delete(t.Context(), "rec-002"); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The crash came halfway through writing the compacted file: it holds
	// one record and part of the next.
	full, err := json.Marshal(normalize(fullRecord(1)).wire())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tempPath(path), append(append(full, '\n'), full[:len(full)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := MustOpenFile(t, path)
	checkSnapshot(t, "after reopen", s2, before)
	if err := s2.CompactErr(); err != nil {
		t.Errorf("CompactErr() = %v", err)
	}
	if _, err := os.Stat(tempPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temporary file: Stat = %v, want it removed", err)
	}
	if d := s2.Damaged(); d != 0 {
		t.Errorf("Damaged() = %d, want 0", d)
	}
}

// TestFileCompactFails checks that a compaction that cannot write its
// temporary file changes nothing: the store keeps its file, saves no
// damaged line, and goes on appending durably.
func TestFileCompactFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, fullRecord(1), fullRecord(2))
	if err := s.Delete(t.Context(), "rec-001"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, path, "damaged\n")
	// A non-empty directory where the temporary file goes: OpenFile cannot
	// remove it, and Compact cannot create the file.
	if err := os.MkdirAll(filepath.Join(tempPath(path), "sub"), 0o700); err != nil {
		t.Fatal(err)
	}

	s2 := MustOpenFile(t, path)
	if err := s2.CompactErr(); err == nil {
		t.Error("CompactErr() = nil, want the failed removal of the leftover")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, s2)
	if err := s2.Compact(); err == nil {
		t.Fatal("Compact with a directory in the way = nil, want an error")
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, raw) {
		t.Errorf("file after failed Compact = %q, %v; want it unchanged", got, err)
	}
	if _, err := os.Stat(path + damagedSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("side file after failed Compact: Stat = %v, want none", err)
	}
	checkSnapshot(t, "after failed Compact", s2, before)
	mustAdd(t, s2, fullRecord(3))
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	s3 := MustOpenFile(t, path)
	if got := ids(listAll(t, s3)); !reflect.DeepEqual(got, []string{"rec-002", "rec-003"}) {
		t.Errorf("List after reopen = %v, want [rec-002 rec-003]", got)
	}
}

func TestFileCompactClosed(t *testing.T) {
	s, err := OpenFile(filepath.Join(t.TempDir(), "dl.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Compact after Close = %v, want os.ErrClosed", err)
	}
}

// TestFileCompactConcurrent runs compactions while other goroutines add,
// mark and delete, then checks that the store and a reopen of its file
// both hold exactly what the changes left.
func TestFileCompactConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 30
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3+workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%02d", w, i)
				r := fullRecord(i)
				r.ID = id
				errs <- s.Add(ctx, r)
				errs <- s.MarkReplayed(ctx, id, t0, 200+i)
				if i%3 == 0 {
					errs <- s.Delete(ctx, id)
				}
			}
		})
	}
	stop := make(chan struct{})
	var compactions sync.WaitGroup
	compactions.Go(func() {
		// At least one compaction, then as many as the changes leave time for.
		for {
			if err := s.Compact(); err != nil {
				errs <- err
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	})
	wg.Wait()
	close(stop)
	compactions.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	want := map[string]int{} // live id → replay status
	for w := range workers {
		for i := range each {
			if i%3 != 0 {
				want[fmt.Sprintf("w%d-%02d", w, i)] = 200 + i
			}
		}
	}
	check := func(what string, s *FileStore) {
		t.Helper()
		recs := listAll(t, s)
		got := map[string]int{}
		for _, r := range recs {
			got[r.ID] = r.ReplayStatus
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: records (id → replay status) = %v\nwant %v", what, got, want)
		}
	}
	check("store", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("reopened", MustOpenFile(t, path))
}

// BenchmarkFileCompact measures compacting a file of 1000 live records of
// about 1 KiB each, fsyncs included.
func BenchmarkFileCompact(b *testing.B) {
	s := MustOpenFile(b, filepath.Join(b.TempDir(), "dl.jsonl"))
	for i := range 1000 {
		r := fullRecord(i)
		r.ID = fmt.Sprintf("r%04d", i)
		r.Body = strings.Repeat("x", 1<<10)
		if err := s.Add(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Compact(); err != nil {
			b.Fatal(err)
		}
	}
}
