package deadletter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// testStream has a hash tag, as a Cluster deployment would configure it.
const testStream = "{sluice}:deadletters"

// storeCase builds one fresh, empty store for a test.
type storeCase struct {
	name string
	open func(t *testing.T) store
}

func storeCases() []storeCase {
	return []storeCase{
		{"file", func(t *testing.T) store { return MustOpenFile(t, filepath.Join(t.TempDir(), "dl.jsonl")) }},
		{"redis", func(t *testing.T) store {
			srv := redistest.Start(t)
			return NewRedisStore(srv.Client(t), testStream, 0, 5*time.Second)
		}},
	}
}

// MustOpenFile opens a FileStore that is closed when t ends.
func MustOpenFile(tb testing.TB, path string) *FileStore {
	tb.Helper()
	s, err := OpenFile(path)
	if err != nil {
		tb.Fatalf("OpenFile(%q): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// fullRecord sets every field, times with nanoseconds and a non-UTC zone
// to prove they come back as the same instant in UTC.
func fullRecord(i int) Record {
	east := time.FixedZone("UTC+2", 2*3600)
	return Record{
		ID:             fmt.Sprintf("rec-%03d", i),
		FailedAt:       t0.Add(time.Duration(i) * time.Second).In(east),
		ReceivedAt:     t0.Add(time.Duration(i)*time.Second - 1500*time.Millisecond),
		Provider:       "openai",
		Method:         "POST",
		Path:           "/v1/chat/completions",
		Query:          "api-version=2024-06-01&x=1",
		Headers:        map[string]string{"Content-Type": "application/json", "Authorization": Redacted, "X-Priority": "low"},
		Body:           `{"model":"gpt-4o","messages":[{"role":"user","content":"héllo \n\"quoted\""}]}`,
		Class:          "low",
		Attempts:       5,
		LastStatus:     503,
		ErrorKind:      RetriesExhausted,
		ErrorMessage:   "upstream 503: overloaded",
		IdempotencyKey: "idem-42",
	}
}

// want is r as a store returns it.
func want(r Record) Record {
	r.ReplayedAt, r.ReplayStatus = time.Time{}, 0
	return normalize(r)
}

func mustAdd(t *testing.T, s store, recs ...Record) {
	t.Helper()
	for _, r := range recs {
		if err := s.Add(t.Context(), r); err != nil {
			t.Fatalf("Add(%s): %v", r.ID, err)
		}
	}
}

func mustGet(t *testing.T, s store, id string) Record {
	t.Helper()
	r, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

func ids(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func TestStoreContract(t *testing.T) {
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			t.Run("round trip", func(t *testing.T) {
				s := sc.open(t)
				r := fullRecord(1)
				mustAdd(t, s, r)
				if got, w := mustGet(t, s, r.ID), want(r); !reflect.DeepEqual(got, w) {
					t.Errorf("Get = %#v\nwant %#v", got, w)
				}
				// The zero-value fields round-trip too.
				bare := Record{ID: "bare"}
				mustAdd(t, s, bare)
				if got, w := mustGet(t, s, "bare"), want(bare); !reflect.DeepEqual(got, w) {
					t.Errorf("Get(bare) = %#v\nwant %#v", got, w)
				}
			})

			t.Run("idempotent add", func(t *testing.T) {
				s := sc.open(t)
				r := fullRecord(1)
				mustAdd(t, s, r)
				changed := r
				changed.Body = "different"
				mustAdd(t, s, changed, r)
				if got := mustGet(t, s, r.ID); got.Body != r.Body {
					t.Errorf("Body after re-add = %q, want %q", got.Body, r.Body)
				}
				recs, _, err := s.List(t.Context(), Filter{})
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) != 1 {
					t.Errorf("List after three adds of one id = %v, want one record", ids(recs))
				}
			})

			t.Run("add without id", func(t *testing.T) {
				s := sc.open(t)
				if err := s.Add(t.Context(), Record{Provider: "x"}); err == nil {
					t.Error("Add(no id) = nil, want an error")
				}
			})

			t.Run("list paging", func(t *testing.T) {
				s := sc.open(t)
				var all []string
				for i := range 5 {
					r := fullRecord(i)
					mustAdd(t, s, r)
					all = append(all, r.ID)
				}
				var got []string
				pages := 0
				f := Filter{Limit: 2}
				for {
					recs, next, err := s.List(t.Context(), f)
					if err != nil {
						t.Fatalf("List(%+v): %v", f, err)
					}
					pages++
					got = append(got, ids(recs)...)
					if next == "" {
						break
					}
					if pages > 5 {
						t.Fatalf("List did not end after %d pages", pages)
					}
					f.After = next
				}
				if !reflect.DeepEqual(got, all) || pages != 3 {
					t.Errorf("paged List = %v in %d pages, want %v in 3", got, pages, all)
				}
				// An exact last page has no cursor.
				recs, next, err := s.List(t.Context(), Filter{Limit: 5})
				if err != nil || len(recs) != 5 || next != "" {
					t.Errorf("List(limit 5) = %d records, next %q, %v; want 5, \"\", nil", len(recs), next, err)
				}
				// A record id works as a cursor.
				recs, _, err = s.List(t.Context(), Filter{After: all[2]})
				if err != nil || !reflect.DeepEqual(ids(recs), all[3:]) {
					t.Errorf("List(after %s) = %v, %v; want %v", all[2], ids(recs), err, all[3:])
				}
			})

			t.Run("list filters", func(t *testing.T) {
				s := sc.open(t)
				kinds := []Kind{RetriesExhausted, QueueTimeout, BreakerOpen, Shutdown}
				for i := range 8 {
					r := fullRecord(i) // FailedAt = t0 + i seconds
					r.Provider = []string{"openai", "anthropic"}[i%2]
					r.ErrorKind = kinds[i%4]
					mustAdd(t, s, r)
				}
				at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
				tests := []struct {
					name string
					f    Filter
					want []string
				}{
					{"all", Filter{}, []string{"rec-000", "rec-001", "rec-002", "rec-003", "rec-004", "rec-005", "rec-006", "rec-007"}},
					{"provider", Filter{Provider: "anthropic"}, []string{"rec-001", "rec-003", "rec-005", "rec-007"}},
					{"kind", Filter{Kind: QueueTimeout}, []string{"rec-001", "rec-005"}},
					{"provider and kind", Filter{Provider: "openai", Kind: BreakerOpen}, []string{"rec-002", "rec-006"}},
					{"since", Filter{Since: at(6)}, []string{"rec-006", "rec-007"}},
					{"until is exclusive", Filter{Until: at(2)}, []string{"rec-000", "rec-001"}},
					{"since and until", Filter{Since: at(3), Until: at(5)}, []string{"rec-003", "rec-004"}},
					{"none", Filter{Provider: "nobody"}, nil},
					{"filtered page", Filter{Provider: "openai", Limit: 1}, []string{"rec-000"}},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						recs, _, err := s.List(t.Context(), tt.f)
						if err != nil {
							t.Fatalf("List(%+v): %v", tt.f, err)
						}
						if got := ids(recs); !reflect.DeepEqual(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
							t.Errorf("List(%+v) = %v, want %v", tt.f, got, tt.want)
						}
					})
				}
			})

			t.Run("mark replayed twice", func(t *testing.T) {
				s := sc.open(t)
				r := fullRecord(1)
				mustAdd(t, s, r)
				first, second := t0.Add(time.Hour), t0.Add(2*time.Hour+7)
				if err := s.MarkReplayed(t.Context(), r.ID, first, 502); err != nil {
					t.Fatal(err)
				}
				if err := s.MarkReplayed(t.Context(), r.ID, second.In(time.FixedZone("x", -3600)), 200); err != nil {
					t.Fatal(err)
				}
				w := want(r)
				w.ReplayedAt, w.ReplayStatus = second, 200
				if got := mustGet(t, s, r.ID); !reflect.DeepEqual(got, w) {
					t.Errorf("Get after two marks = %#v\nwant %#v", got, w)
				}
				recs, _, err := s.List(t.Context(), Filter{})
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) != 1 || !reflect.DeepEqual(recs[0], w) {
					t.Errorf("List after two marks = %#v, want [%#v]", recs, w)
				}
				if err := s.MarkReplayed(t.Context(), "absent", first, 200); !errors.Is(err, ErrNotFound) {
					t.Errorf("MarkReplayed(absent) = %v, want ErrNotFound", err)
				}
			})

			t.Run("delete", func(t *testing.T) {
				s := sc.open(t)
				mustAdd(t, s, fullRecord(1), fullRecord(2))
				if err := s.MarkReplayed(t.Context(), "rec-001", t0, 200); err != nil {
					t.Fatal(err)
				}
				if err := s.Delete(t.Context(), "rec-001"); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				if _, err := s.Get(t.Context(), "rec-001"); !errors.Is(err, ErrNotFound) {
					t.Errorf("Get(deleted) = %v, want ErrNotFound", err)
				}
				if err := s.Delete(t.Context(), "rec-001"); !errors.Is(err, ErrNotFound) {
					t.Errorf("Delete(deleted) = %v, want ErrNotFound", err)
				}
				recs, _, err := s.List(t.Context(), Filter{})
				if err != nil || !reflect.DeepEqual(ids(recs), []string{"rec-002"}) {
					t.Errorf("List after delete = %v, %v; want [rec-002]", ids(recs), err)
				}
				// A deleted id may be added again, without its old mark.
				mustAdd(t, s, fullRecord(1))
				if got := mustGet(t, s, "rec-001"); !got.ReplayedAt.IsZero() || got.ReplayStatus != 0 {
					t.Errorf("re-added record has replay mark %v/%d, want none", got.ReplayedAt, got.ReplayStatus)
				}
			})

			t.Run("concurrent adds", func(t *testing.T) {
				s := sc.open(t)
				const workers, each = 8, 25
				var wg sync.WaitGroup
				errs := make(chan error, 2*workers*each)
				for w := range workers {
					wg.Go(func() {
						for i := range each {
							r := fullRecord(i)
							r.ID = fmt.Sprintf("w%d-%d", w, i)
							errs <- s.Add(context.Background(), r)
							// Every worker also adds one shared id.
							r.ID = "shared"
							errs <- s.Add(context.Background(), r)
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatalf("concurrent Add: %v", err)
					}
				}
				seen := map[string]bool{}
				f := Filter{Limit: 64}
				for {
					recs, next, err := s.List(t.Context(), f)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range recs {
						if seen[r.ID] {
							t.Errorf("List returned %s twice", r.ID)
						}
						seen[r.ID] = true
					}
					if next == "" {
						break
					}
					f.After = next
				}
				if got, w := len(seen), workers*each+1; got != w {
					t.Errorf("records after concurrent adds = %d, want %d", got, w)
				}
			})
		})
	}
}
