package deadletter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// File line format. Each line of the file is one JSON object ending in
// '\n', appended and never rewritten:
//
//   - an add line is the record itself with the flat fields of [FieldNames]
//     and no "op" field, so `jq` over the file shows records as they were
//     added. Add writes it without a replay mark; [FileStore.Compact]
//     writes each live record's current mark into its add line;
//   - {"op":"replay","id":ID,"replayed_at":T,"replay_status":N} replaces the
//     record's replay mark;
//   - {"op":"delete","id":ID} removes the record.
//
// Reading the file in order and applying each line rebuilds the store.
const (
	opReplay = "replay"
	opDelete = "delete"
)

// fileLine is any line of the file: an add line decodes into the embedded
// wire with Op "", an op line into Op and the fields it carries.
type fileLine struct {
	Op string `json:"op,omitempty"`
	wire
}

// replayLine and deleteLine are the op lines as written.
type replayLine struct {
	Op           string `json:"op"`
	ID           string `json:"id"`
	ReplayedAt   string `json:"replayed_at"`
	ReplayStatus int    `json:"replay_status"`
}

type deleteLine struct {
	Op string `json:"op"`
	ID string `json:"id"`
}

// FileStore keeps records in an append-only JSON-lines file (format above)
// and an in-memory index of the live records, built when the file is
// opened. It is the store of single-replica mode and the spool of [Spool].
//
// Every change is one write(2) of the whole line followed by fsync, so a
// crash loses at most the line being written; [OpenFile] skips such a
// damaged last line and the next append starts on a fresh line. Deletes
// and replay marks are lines too, so the file grows until it is compacted:
// [FileStore.Compact] rewrites it to hold only the live records, and
// [OpenFile] does so when most of the file is dead weight. Damaged lines
// are never dropped: compaction first appends them to the side file
// <path>.damaged.
//
// The process that opened the file must be its only writer: the store
// tracks the file's length itself, and compaction replaces the file.
//
// A FileStore is safe for concurrent use. Appends are serialised by its
// mutex (the lock is held across write and fsync, so lines never
// interleave and the index never runs ahead of the file); a compaction
// holds it throughout, so changes wait for it. It must not be used after
// Close.
type FileStore struct {
	path string

	mu         sync.Mutex     // protects everything below
	f          *os.File       // nil once closed
	needLF     bool           // the file does not end in '\n': start the next line with one
	size       int64          // bytes in the file, a partial last line included
	damaged    int            // lines skipped on open
	bad        []span         // damaged bytes still in the file, for compaction to save
	order      []slot         // add lines in file order; deleted ids stay until compaction
	pos        map[string]int // id → index in order of its latest add line
	live       map[string]*Record
	compactErr error // why the housekeeping of OpenFile failed; nil if it did not
}

// slot is one add line of the file.
type slot struct {
	id   string
	size int64 // bytes of the line: a live record's share of the file
}

// span locates damaged bytes in the file: a line that did not decode, or
// the part of a line whose write failed. It excludes the line's '\n'.
type span struct {
	off, n int64
}

// OpenFile opens the dead-letter file at path, creating it (mode 0600: the
// bodies may hold personal data) if it does not exist, and reads it to
// build the index. Lines that do not decode are skipped and counted by
// [FileStore.Damaged]; a truncated last line is the expected trace of a
// crash mid-write.
//
// OpenFile also keeps the file in shape. It removes the temporary file an
// interrupted compaction left behind (the original is then complete: the
// rename is a compaction's commit point), and it compacts the file when
// the dead bytes (deleted records, replay and delete lines, damaged lines)
// are at least 1 MiB and at least the live records' bytes (see
// [FileStore.Compact]). A failure there does not fail OpenFile: the store
// works on the file as it was, and [FileStore.CompactErr] reports it.
func OpenFile(path string) (*FileStore, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("deadletter: opening %s: %w", path, err)
	}
	s := &FileStore{path: path, f: f, pos: map[string]int{}, live: map[string]*Record{}}
	if err := s.load(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("deadletter: reading %s: %w", path, err)
	}
	var errs []error
	if err := os.Remove(tempPath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("deadletter: removing the leftover of an interrupted compaction: %w", err))
	}
	if live := s.liveBytes(); shouldCompact(s.size-live, live) {
		if err := s.compact(); err != nil {
			errs = append(errs, fmt.Errorf("deadletter: compacting %s: %w", path, err))
		}
	}
	s.compactErr = errors.Join(errs...)
	return s, nil
}

// load replays the file into the index. It is called only from OpenFile,
// before s is shared.
func (s *FileStore) load() error {
	br := bufio.NewReaderSize(s.f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			s.needLF = line[len(line)-1] != '\n'
			if !s.apply(bytes.TrimSpace(line), int64(len(line))) {
				s.damaged++
				s.bad = append(s.bad, span{off: s.size, n: int64(len(bytes.TrimSuffix(line, []byte{'\n'})))})
			}
			s.size += int64(len(line))
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// apply applies one line, size bytes in the file, to the index. It returns
// false if the line is damaged: it does not decode, or names an unknown
// op. Blank lines are not damaged. Requires s.mu held or s not yet shared.
func (s *FileStore) apply(line []byte, size int64) bool {
	if len(line) == 0 {
		return true
	}
	var l fileLine
	if err := json.Unmarshal(line, &l); err != nil || l.ID == "" {
		return false
	}
	switch l.Op {
	case "":
		rec, err := l.wire.record()
		if err != nil {
			return false
		}
		s.add(&rec, size)
	case opReplay:
		at, err := parseTime("replayed_at", l.ReplayedAt)
		if err != nil {
			return false
		}
		if r := s.live[l.ID]; r != nil {
			r.ReplayedAt, r.ReplayStatus = at, l.ReplayStatus
		}
	case opDelete:
		delete(s.live, l.ID)
	default:
		return false
	}
	return true
}

// add indexes a record whose add line is size bytes. Requires s.mu held or
// s not yet shared.
func (s *FileStore) add(r *Record, size int64) {
	if _, ok := s.live[r.ID]; ok {
		return
	}
	s.pos[r.ID] = len(s.order)
	s.order = append(s.order, slot{id: r.ID, size: size})
	s.live[r.ID] = r
}

// appendLine writes v as one line with one write(2) and fsyncs the file.
// It returns the line's size in bytes. Requires s.mu held.
func (s *FileStore) appendLine(v any) (int64, error) {
	if s.f == nil {
		return 0, fmt.Errorf("deadletter: appending to %s: %w", s.path, os.ErrClosed)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("deadletter: encoding line: %w", err)
	}
	buf := make([]byte, 0, len(b)+2)
	if s.needLF {
		buf = append(buf, '\n')
	}
	lf := int64(len(buf)) // the '\n' ending a damaged line, if any
	buf = append(append(buf, b...), '\n')
	n, err := s.f.Write(buf)
	s.size += int64(n)
	if err != nil {
		// Part of the line may be on disk: make sure the next one starts
		// on a line of its own, and remember the fragment as damaged so
		// that a compaction saves it rather than drop it.
		s.needLF = true
		if frag := min(int64(n), int64(len(buf))-1) - lf; frag > 0 {
			s.bad = append(s.bad, span{off: s.size - int64(n) + lf, n: frag})
		}
		return 0, fmt.Errorf("deadletter: appending to %s: %w", s.path, err)
	}
	s.needLF = false
	if err := s.f.Sync(); err != nil {
		return 0, fmt.Errorf("deadletter: syncing %s: %w", s.path, err)
	}
	return int64(len(buf)) - lf, nil
}

// Add stores r unless a record with its id is stored already, in which
// case it changes nothing and returns nil. r.ID must not be empty. r's
// replay fields are not stored (as in [RedisStore]); use MarkReplayed. The
// record is on disk when Add returns nil. ctx is not used: a local append
// is not cancellable midway.
func (s *FileStore) Add(_ context.Context, r Record) error {
	if r.ID == "" {
		return errors.New("deadletter: adding a record without an id")
	}
	r.ReplayedAt, r.ReplayStatus = time.Time{}, 0
	n := normalize(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[n.ID]; ok {
		return nil
	}
	size, err := s.appendLine(n.wire())
	if err != nil {
		return err
	}
	s.add(&n, size)
	return nil
}

// Get returns the record with the given id, or [ErrNotFound].
func (s *FileStore) Get(_ context.Context, id string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.live[id]
	if r == nil {
		return Record{}, fmt.Errorf("getting %q: %w", id, ErrNotFound)
	}
	return copyRecord(r), nil
}

// copyRecord returns *r with its own Headers map, so callers cannot
// change the index.
func copyRecord(r *Record) Record {
	c := *r
	c.Headers = make(map[string]string, len(r.Headers))
	for k, v := range r.Headers {
		c.Headers[k] = v
	}
	return c
}

// List returns the records f selects in the order they were added, at most
// f.Limit of them, and the cursor for the next page ("" when there is
// none). The cursor is the id of the last record returned; f.After may
// also name a record deleted since, unless the file was compacted in
// between: compaction forgets deleted records, and a cursor naming one is
// then [ErrNotFound] like an id this file never held.
func (s *FileStore) List(_ context.Context, f Filter) ([]Record, string, error) {
	limit := f.limit()
	s.mu.Lock()
	defer s.mu.Unlock()
	start := 0
	if f.After != "" {
		p, ok := s.pos[f.After]
		if !ok {
			return nil, "", fmt.Errorf("listing after %q: %w", f.After, ErrNotFound)
		}
		start = p + 1
	}
	var recs []Record
	for i := start; i < len(s.order); i++ {
		id := s.order[i].id
		r := s.live[id]
		// A record deleted and added again is live at its later position only.
		if r == nil || s.pos[id] != i || !f.match(r) {
			continue
		}
		if len(recs) == limit {
			return recs, recs[limit-1].ID, nil
		}
		recs = append(recs, copyRecord(r))
	}
	return recs, "", nil
}

// MarkReplayed records that the record with the given id was replayed at
// at with the given outcome status, replacing any earlier mark. It returns
// [ErrNotFound] when no such record is stored.
func (s *FileStore) MarkReplayed(_ context.Context, id string, at time.Time, status int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.live[id]
	if r == nil {
		return fmt.Errorf("marking %q replayed: %w", id, ErrNotFound)
	}
	l := replayLine{Op: opReplay, ID: id, ReplayedAt: formatTime(at), ReplayStatus: status}
	if _, err := s.appendLine(l); err != nil {
		return err
	}
	// Re-read the time as the file holds it, so the index matches a reopen.
	r.ReplayedAt, _ = parseTime("replayed_at", l.ReplayedAt)
	r.ReplayStatus = status
	return nil
}

// Delete removes the record with the given id, or returns [ErrNotFound].
func (s *FileStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[id] == nil {
		return fmt.Errorf("deleting %q: %w", id, ErrNotFound)
	}
	if _, err := s.appendLine(deleteLine{Op: opDelete, ID: id}); err != nil {
		return err
	}
	delete(s.live, id)
	return nil
}

// Len returns the number of live records.
func (s *FileStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Damaged returns the number of lines skipped when the file was opened
// because they did not decode: normally 0, or 1 after a crash mid-write.
// The count stays after a compaction has moved them to <path>.damaged.
func (s *FileStore) Damaged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.damaged
}

// Close closes the file. Close on a closed store returns nil.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("deadletter: closing %s: %w", s.path, err)
	}
	return nil
}
