package deadletter

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// compactMinDead is the least dead weight, in bytes, for which [OpenFile]
// compacts a file. Compaction also waits until the dead bytes are at least
// the live ones.
//
// Bytes, not lines, because both costs of dead weight scale with bytes:
// the disk it takes and the time OpenFile spends reading and decoding it.
// Counting lines would rewrite a file of large live bodies to save the few
// bytes of one replay line each.
//
// Dead ≥ live means a compaction at least halves the file and writes no
// more than it reclaims, so rewriting costs O(1) per byte ever appended.
// The floor keeps a small file from being rewritten (two fsyncs and a
// rename) on every start for no gain: a MiB reads in milliseconds. A record
// that went through the spool leaves its add and delete lines, so the floor
// is roughly the records of a Redis outage of a few hundred requests.
const compactMinDead = 1 << 20

// Side-file suffixes: where a compaction writes the new file before the
// rename, and where it saves the damaged lines it drops.
const (
	tempSuffix    = ".compact"
	damagedSuffix = ".damaged"
)

func tempPath(path string) string { return path + tempSuffix }

// shouldCompact reports whether a file with that many dead and live bytes
// is worth compacting at open (see compactMinDead).
func shouldCompact(dead, live int64) bool {
	return dead >= compactMinDead && dead >= live
}

// liveBytes returns the bytes of the live records' add lines. Requires s.mu
// held or s not yet shared.
func (s *FileStore) liveBytes() int64 {
	var n int64
	for i, sl := range s.order {
		if s.live[sl.id] != nil && s.pos[sl.id] == i {
			n += sl.size
		}
	}
	return n
}

// Compact rewrites the file to hold only the live records, in the order
// they were added, each as one add line carrying its replay mark. Records
// and marks read back the same, before and after a reopen.
//
// Damaged lines (see [FileStore.Damaged]) and fragments of failed appends
// are appended to the side file <path>.damaged and fsynced before the file
// that holds them is replaced, so none is dropped unseen. After a crash
// during compaction the side file may hold a line twice.
//
// The new file is written to <path>.compact in the same directory, fsynced,
// renamed over path, and the directory fsynced: a crash at any point leaves
// either the old or the new file complete at path, and OpenFile removes a
// leftover temporary file. If Compact fails before the rename, the store
// goes on with the old file; once renamed, it appends to the new file even
// when syncing the directory then fails. Compact holds the store's lock
// throughout, so concurrent changes wait for it.
//
// After Compact, a List cursor naming a record deleted before it is
// [ErrNotFound]. Compact on a closed store returns an error wrapping
// [os.ErrClosed].
func (s *FileStore) Compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.compact(); err != nil {
		return fmt.Errorf("deadletter: compacting %s: %w", s.path, err)
	}
	return nil
}

// CompactErr returns why the housekeeping of [OpenFile] failed: removing
// an interrupted compaction's temporary file, or the compaction it ran; nil
// if neither failed. The store works either way, on the uncompacted file.
func (s *FileStore) CompactErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.compactErr
}

// compact does the work of Compact. Requires s.mu held or s not yet shared.
func (s *FileStore) compact() error {
	if s.f == nil {
		return os.ErrClosed
	}
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("reading the mode of the file: %w", err)
	}
	tmp := tempPath(s.path)
	// O_APPEND: after the rename this descriptor is the store's file.
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// Keep whatever mode the operator gave the file (a group reader, say);
	// creating the file applied the umask.
	if err := f.Chmod(st.Mode().Perm()); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", tmp, err)
	}
	// Only once the temporary file exists: a directory where it cannot be
	// created would otherwise collect a copy of the damaged lines at every
	// start.
	if err := s.saveDamaged(); err != nil {
		return err
	}
	order, pos, size, err := s.writeLive(f)
	if err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	renamed = true
	// From here path names the new file, and appends to the old descriptor
	// would land in an unlinked inode: switch now, whatever fails below.
	old := s.f
	s.f, s.needLF, s.size, s.bad = f, false, size, nil
	s.order, s.pos = order, pos
	var errs []error
	if err := old.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the old file: %w", err))
	}
	// The rename is durable only once the directory is.
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writeLive writes the live records to f in order and returns the index of
// the new file and its size. Requires s.mu held or s not yet shared.
func (s *FileStore) writeLive(f *os.File) ([]slot, map[string]int, int64, error) {
	order := make([]slot, 0, len(s.live))
	pos := make(map[string]int, len(s.live))
	w := bufio.NewWriterSize(f, 64<<10)
	var size int64
	for i, sl := range s.order {
		r := s.live[sl.id]
		// A record deleted and added again is live at its later slot only.
		if r == nil || s.pos[sl.id] != i {
			continue
		}
		b, err := json.Marshal(r.wire())
		if err != nil {
			return nil, nil, 0, fmt.Errorf("encoding record %q: %w", sl.id, err)
		}
		b = append(b, '\n')
		if _, err := w.Write(b); err != nil {
			return nil, nil, 0, err
		}
		pos[sl.id] = len(order)
		order = append(order, slot{id: sl.id, size: int64(len(b))})
		size += int64(len(b))
	}
	if err := w.Flush(); err != nil {
		return nil, nil, 0, err
	}
	return order, pos, size, nil
}

// saveDamaged appends the damaged bytes of the file to the side file, one
// line each, and makes them durable. Requires s.mu held or s not yet
// shared.
func (s *FileStore) saveDamaged() error {
	if len(s.bad) == 0 {
		return nil
	}
	path := s.path + damagedSuffix
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	err = s.copyDamaged(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing %s: %w", path, cerr)
	}
	if err != nil {
		return err
	}
	// A side file that is new must survive a crash before the rename of the
	// compacted file does.
	return syncDir(filepath.Dir(s.path))
}

// copyDamaged writes the damaged bytes to f, one line each, and fsyncs f.
// Requires s.mu held or s not yet shared.
func (s *FileStore) copyDamaged(f *os.File) error {
	w := bufio.NewWriterSize(f, 64<<10)
	for _, sp := range s.bad {
		n, err := io.Copy(w, io.NewSectionReader(s.f, sp.off, sp.n))
		if err == nil && n != sp.n {
			// Someone else truncated the file: what we would save is not
			// what we counted, so do not replace the file.
			err = fmt.Errorf("read %d of %d bytes: %w", n, sp.n, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("copying the damaged line at offset %d to %s: %w", sp.off, f.Name(), err)
		}
		if err := w.WriteByte('\n'); err != nil {
			return fmt.Errorf("writing %s: %w", f.Name(), err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", f.Name(), err)
	}
	return nil
}

// syncDir fsyncs a directory, making the names created or renamed in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
