package proxy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
	"github.com/sluice-ai/sluice/limiter"
)

// failThenServe is a recording upstream that answers 503 until serve is
// called, and the default answers after.
func failThenServe(t *testing.T) (up *upstreamtest.Server, serve func()) {
	up = upstreamtest.New(t, upstreamtest.Options{Record: true})
	up.Handle(answer(503, nil))
	return up, func() { up.Handle(up.Default) }
}

// deadLettered sends one chat request that the failing upstream turns into
// a dead letter, and returns the record's id.
func deadLettered(t *testing.T, px *testProxy, store rigStore, header map[string]string) string {
	t.Helper()
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, header)
	readAll(t, resp)
	return mustRecord(t, store, resp, deadletter.RetriesExhausted).ID
}

func lastRequest(t *testing.T, up *upstreamtest.Server) upstreamtest.Request {
	t.Helper()
	reqs := up.Requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream saw no request")
	}
	return reqs[len(reqs)-1]
}

func TestReplayDeliversAndMarks(t *testing.T) {
	up, serve := failThenServe(t)
	pc := failingProvider(up.URL, 1)
	pc.APIKey = "sk-from-config"
	px, store := deadLetterRig(t, pc, classNames("high", "low"))
	id := deadLettered(t, px, store, map[string]string{
		"Authorization": "Bearer sk-client-secret", "X-Team-Token": "team-secret", "X-Trace": "trace-1", "X-Priority": "low",
	})
	serve()

	replays := deadletter.NewReplayer(store, px, nil)
	res, err := replays.Replay(context.Background(), id, "", false)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if !res.Delivered || res.Status != 200 || !strings.Contains(res.Body, `"chat.completion"`) {
		t.Fatalf("replay = %+v, want delivered 200 with the completion", res)
	}
	got := lastRequest(t, up)
	if got.Path != "/v1/chat/completions" || string(got.Body) != chatBody ||
		got.Header.Get("Authorization") != "Bearer sk-from-config" || got.Header.Get("X-Trace") != "trace-1" {
		t.Errorf("upstream saw %s %s %q with %v; want the original request with the configured key", got.Method, got.Path, got.Body, got.Header)
	}
	if v := got.Header.Values("X-Team-Token"); len(v) != 0 {
		t.Errorf("the redacted header was sent as %q", v)
	}
	rec, err := store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ReplayStatus != 200 || rec.ReplayedAt.IsZero() || store.count(t) != 1 {
		t.Errorf("record after replay %+v (%d records): want replay status 200 on the one record", rec, store.count(t))
	}

	before := up.Count()
	if _, err := replays.Replay(context.Background(), id, "", false); !errors.Is(err, deadletter.ErrAlreadyDelivered) {
		t.Errorf("second replay: %v, want ErrAlreadyDelivered", err)
	}
	if up.Count() != before {
		t.Error("a refused second replay reached the upstream")
	}
	if res, err := replays.Replay(context.Background(), id, "", true); err != nil || !res.Delivered {
		t.Errorf("forced replay = %+v, %v; want delivered", res, err)
	}
}

func TestReplayThatFailsUpdatesItsRecord(t *testing.T) {
	up, _ := failThenServe(t)
	px, store := deadLetterRig(t, failingProvider(up.URL, 1), classNames("default"))
	id := deadLettered(t, px, store, nil)

	res, err := deadletter.NewReplayer(store, px, nil).Replay(context.Background(), id, "sk-given", false)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if res.Delivered || res.Status != 503 || res.Error == "" {
		t.Errorf("replay = %+v, want not delivered, 503, with a message", res)
	}
	rec, err := store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if store.count(t) != 1 || rec.ReplayStatus != 503 || rec.ReplayedAt.IsZero() {
		t.Errorf("%d records, record %+v: want the one record marked with 503", store.count(t), rec)
	}
}

func TestReplayKey(t *testing.T) {
	up, serve := failThenServe(t)
	px, store := deadLetterRig(t, failingProvider(up.URL, 1), classNames("default")) // no api_key
	id := deadLettered(t, px, store, map[string]string{"Authorization": "Bearer sk-client-secret"})
	serve()
	replays := deadletter.NewReplayer(store, px, nil)

	before := up.Count()
	if _, err := replays.Replay(context.Background(), id, "", false); !errors.Is(err, deadletter.ErrNoAPIKey) {
		t.Fatalf("replay without a key: %v, want ErrNoAPIKey", err)
	}
	if up.Count() != before {
		t.Error("a replay without a key reached the upstream")
	}
	if rec, _ := store.Get(context.Background(), id); rec.ReplayStatus != 0 {
		t.Errorf("a refused replay marked the record: %+v", rec)
	}
	res, err := replays.Replay(context.Background(), id, "sk-given", false)
	if err != nil || !res.Delivered {
		t.Fatalf("replay with a key = %+v, %v", res, err)
	}
	if a := lastRequest(t, up).Header.Get("Authorization"); a != "Bearer sk-given" {
		t.Errorf("upstream saw Authorization %q, want the given key", a)
	}
}

// TestReplayQueuesAtItsClass: a replay is live traffic: it waits for the
// quota in its record's class like any request.
func TestReplayQueuesAtItsClass(t *testing.T) {
	up, g := heldUpstream(t)
	pc := limitedProvider(up, limiter.Limits{MaxConcurrency: 1})
	pc.APIKey = "sk-from-config"
	px, store := deadLetterRig(t, pc, classNames("high", "low"))
	rec := deadletter.Record{
		ID: deadletter.NewID(time.Now()), FailedAt: time.Now(), ReceivedAt: time.Now(), Provider: "openai",
		Method: "POST", Path: "/v1/chat/completions", Body: chatBody, Class: "high", // not the default class
		Headers: map[string]string{"Content-Type": "application/json"}, ErrorKind: deadletter.Shutdown,
	}
	if err := store.Add(context.Background(), rec); err != nil {
		t.Fatal(err)
	}

	c := client(t)
	first := make(chan string, 1)
	go func() { first <- readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, nil)) }()
	waitForInflight(t, &g.held, 1) // the only slot is taken
	replayed := make(chan deadletter.Replayed, 1)
	go func() {
		res, err := deadletter.NewReplayer(store, px, nil).Replay(context.Background(), rec.ID, "", false)
		if err != nil {
			t.Errorf("Replay: %v", err)
		}
		replayed <- res
	}()
	waitForQueued(t, px, "high", 1)
	g.open()
	<-first
	if res := <-replayed; !res.Delivered {
		t.Errorf("replay = %+v, want delivered once the slot was free", res)
	}
}

func TestReplayStream(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	pc := failingProvider(up.URL, 1)
	pc.APIKey = "sk-from-config"
	px, store := deadLetterRig(t, pc, classNames("default"))
	rec := deadletter.Record{
		ID: deadletter.NewID(time.Now()), Provider: "openai", Method: "POST", Path: "/v1/chat/completions",
		Body: `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, Class: "default",
		ErrorKind: deadletter.Shutdown,
	}
	if err := store.Add(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	res, err := deadletter.NewReplayer(store, px, nil).Replay(context.Background(), rec.ID, "", false)
	if err != nil || !res.Delivered || !strings.Contains(res.Body, "data: [DONE]") {
		t.Errorf("stream replay = %+v, %v; want the whole event stream", res, err)
	}
	if n := px.Status()[0].Inflight; n != 0 {
		t.Errorf("%d requests still in flight after the replayed stream ended", n)
	}
}

func TestReplayUnknownProvider(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px, store := deadLetterRig(t, failingProvider(up.URL, 1), classNames("default"))
	rec := deadletter.Record{ID: deadletter.NewID(time.Now()), Provider: "gone", Method: "POST", Path: "/v1/chat/completions"}
	if err := store.Add(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := deadletter.NewReplayer(store, px, nil).Replay(context.Background(), rec.ID, "k", false); !errors.Is(err, deadletter.ErrUnknownProvider) {
		t.Errorf("replay for an unconfigured provider: %v, want ErrUnknownProvider", err)
	}
}
