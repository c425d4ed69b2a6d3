package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/sluice-ai/sluice/deadletter"
)

// DeadLetterStore is what the dead-letter routes read and change;
// deadletter.FileStore, RedisStore and Spool implement it.
type DeadLetterStore interface {
	Get(ctx context.Context, id string) (deadletter.Record, error)
	List(ctx context.Context, f deadletter.Filter) ([]deadletter.Record, string, error)
	Delete(ctx context.Context, id string) error
}

// maxPage caps one page of the dead-letter list.
const maxPage = 1000

// HandleDeadLetters serves the dead letters in store behind the bearer
// token:
//
//	GET    /admin/deadletters?provider=&kind=&since=&until=&after=&limit=
//	GET    /admin/deadletters/{id}
//	DELETE /admin/deadletters/{id}
//
// since and until are RFC 3339 times bounding failed_at ([since, until));
// after is the next-page cursor a previous page returned; limit is 1 to
// 1000 (default 100). It must be called before [Server.Serve].
func (s *Server) HandleDeadLetters(store DeadLetterStore) {
	s.Handle("GET /admin/deadletters", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r)
		if err != nil {
			s.writeJSONError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
			return
		}
		recs, next, err := store.List(r.Context(), f)
		if err != nil {
			s.storeError(w, err)
			return
		}
		if recs == nil {
			recs = []deadletter.Record{}
		}
		s.writeJSON(w, http.StatusOK, struct {
			Records []deadletter.Record `json:"records"`
			Next    string              `json:"next,omitempty"`
		}{recs, next})
	}))
	s.Handle("GET /admin/deadletters/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, err := store.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			s.storeError(w, err)
			return
		}
		s.writeJSON(w, http.StatusOK, rec)
	}))
	s.Handle("DELETE /admin/deadletters/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := store.Delete(r.Context(), r.PathValue("id")); err != nil {
			s.storeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

func parseFilter(r *http.Request) (deadletter.Filter, error) {
	q := r.URL.Query()
	f := deadletter.Filter{Provider: q.Get("provider"), Kind: deadletter.Kind(q.Get("kind")), After: q.Get("after")}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, fmt.Errorf("%s must be an RFC 3339 time such as 2026-11-23T12:00:00Z, got %q", name, v)
			}
			*dst = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			return f, fmt.Errorf("limit must be an integer from 1 to %d, got %q", maxPage, v)
		}
		f.Limit = n
	}
	return f, nil
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	if errors.Is(err, deadletter.ErrNotFound) {
		s.writeJSONError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	s.log.Error("dead-letter store", slog.String("error", err.Error()))
	s.writeJSONError(w, http.StatusInternalServerError, "server_error", "the dead-letter store failed; see the log")
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("writing admin response", slog.String("error", err.Error()))
	}
}

func (s *Server) writeJSONError(w http.ResponseWriter, status int, typ, msg string) {
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	doc.Error.Message, doc.Error.Type = msg, typ
	s.writeJSON(w, status, doc)
}
