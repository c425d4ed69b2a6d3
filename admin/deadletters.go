package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
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
//	POST   /admin/deadletters/{id}/replay  {"api_key": "..", "force": false}
//	POST   /admin/deadletters/replay       {"provider", "kind", "since", "until", "api_key", "force"}
//
// since and until are RFC 3339 times bounding failed_at ([since, until));
// after is the next-page cursor a previous page returned; limit is 1 to
// 1000 (default 100). The replay routes are served when replays is not
// nil; their JSON bodies are optional. It must be called before
// [Server.Serve].
func (s *Server) HandleDeadLetters(store DeadLetterStore, replays *deadletter.Replayer) {
	s.Handle("GET /admin/deadletters", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r.URL.Query())
		if err != nil {
			s.writeJSONError(w, http.StatusBadRequest, "invalid_request_error", "invalid_filter", err.Error())
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
	if replays != nil {
		s.handleReplays(replays)
	}
}

// replayRequest is the optional body of the replay routes; the filter
// fields apply to the batch route only.
type replayRequest struct {
	APIKey   string `json:"api_key"`
	Force    bool   `json:"force"`
	Provider string `json:"provider"`
	Kind     string `json:"kind"`
	Since    string `json:"since"`
	Until    string `json:"until"`
}

// maxReplayBody bounds a replay route's JSON body.
const maxReplayBody = 64 << 10

func (s *Server) handleReplays(replays *deadletter.Replayer) {
	s.Handle("POST /admin/deadletters/{id}/replay", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in, ok := s.readReplayRequest(w, r)
		if !ok {
			return
		}
		res, err := replays.Replay(r.Context(), r.PathValue("id"), in.APIKey, in.Force)
		if err != nil {
			s.replayError(w, err)
			return
		}
		s.writeJSON(w, http.StatusOK, res)
	}))
	s.Handle("POST /admin/deadletters/replay", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in, ok := s.readReplayRequest(w, r)
		if !ok {
			return
		}
		f, err := parseFilter(url.Values{"provider": {in.Provider}, "kind": {in.Kind}, "since": {in.Since}, "until": {in.Until}})
		if err != nil {
			s.writeJSONError(w, http.StatusBadRequest, "invalid_request_error", "invalid_filter", err.Error())
			return
		}
		b, err := replays.ReplayAll(r.Context(), f, in.APIKey, in.Force)
		if err != nil {
			s.storeError(w, err)
			return
		}
		s.writeJSON(w, http.StatusOK, b)
	}))
}

func (s *Server) readReplayRequest(w http.ResponseWriter, r *http.Request) (replayRequest, bool) {
	var in replayRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReplayBody))
	if err == nil && len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&in)
	}
	if err != nil {
		s.writeJSONError(w, http.StatusBadRequest, "invalid_request_error", "invalid_body",
			"the body must be a JSON object with api_key, force, provider, kind, since, until: "+err.Error())
		return in, false
	}
	return in, true
}

// replayError answers a replay refused before anything was sent.
func (s *Server) replayError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, deadletter.ErrNoAPIKey):
		s.writeJSONError(w, http.StatusBadRequest, "invalid_request_error", "no_api_key",
			err.Error()+" (the recorded credential was redacted; configure the provider's api_key or pass one to the replay)")
	case errors.Is(err, deadletter.ErrUnknownProvider):
		s.writeJSONError(w, http.StatusBadRequest, "invalid_request_error", "unknown_provider", err.Error())
	case errors.Is(err, deadletter.ErrAlreadyDelivered):
		s.writeJSONError(w, http.StatusConflict, "invalid_request_error", "already_replayed", err.Error()+"; force replays it again")
	default:
		s.storeError(w, err)
	}
}

func parseFilter(q url.Values) (deadletter.Filter, error) {
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
		s.writeJSONError(w, http.StatusNotFound, "invalid_request_error", "not_found", err.Error())
		return
	}
	s.log.Error("dead-letter store", slog.String("error", err.Error()))
	s.writeJSONError(w, http.StatusInternalServerError, "server_error", "store_failed", "the dead-letter store failed; see the log")
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("writing admin response", slog.String("error", err.Error()))
	}
}

// writeJSONError answers in the OpenAI error shape the proxy uses too.
func (s *Server) writeJSONError(w http.ResponseWriter, status int, typ, code, msg string) {
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	doc.Error.Message, doc.Error.Type, doc.Error.Code = msg, typ, code
	s.writeJSON(w, status, doc)
}
