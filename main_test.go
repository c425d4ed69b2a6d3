package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/internal/redistest"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// TestMain lets a test run this binary as Sluice itself, in a process of
// its own that can be sent real signals: with SLUICE_TEST_MAIN=1 it runs
// main with the arguments after the flags.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sluice is a running instance of run("serve", ...).
type sluice struct {
	URL, AdminURL string
	cancel        context.CancelFunc
	done          chan error
}

// mustRun writes cfg to a file and serves it until the test ends (or stop
// is called), returning once the instance logged its addresses.
func mustRun(tb testing.TB, cfg string) *sluice {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if !strings.Contains(cfg, "\ndeadletter:") {
		// Keep dead letters out of the working directory.
		cfg += "\ndeadletter:\n  file: " + filepath.Join(dir, "deadletters.jsonl") + "\n"
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logR, logW := io.Pipe()
	s := &sluice{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := run(ctx, []string{"serve", "-config", path}, io.Discard, logW)
		logW.Close()
		s.done <- err
	}()
	addrs := make(chan [2]string, 1)
	go func() { // reads the log until run ends, picking out the addresses
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			var line struct{ Msg, Listen, Admin string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				addrs <- [2]string{line.Listen, line.Admin}
			}
		}
		close(addrs)
	}()
	a, ok := <-addrs
	if !ok {
		tb.Fatalf("sluice stopped before serving: %v", <-s.done)
	}
	s.URL, s.AdminURL = "http://"+a[0], "http://"+a[1]
	tb.Cleanup(func() { s.stop(tb) })
	return s
}

// stop cancels the instance and waits for run to return; it is idempotent.
func (s *sluice) stop(tb testing.TB) {
	s.cancel()
	if err, ok := <-s.done; ok {
		close(s.done)
		if err != nil {
			tb.Errorf("run returned %v", err)
		}
	}
}

func testConfig(upstreamURL string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
shutdown_grace: 5s
log_level: info
admin:
  listen: 127.0.0.1:0
providers:
  - name: openai
    base_url: %s
    default: true
    api_key: sk-from-config
    timeout: 30s
`, upstreamURL)
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCheck(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check", "-config", "config.yaml"}, &out, io.Discard); err != nil {
		t.Fatalf("check of the shipped config.yaml: %v", err)
	}
	if !strings.HasPrefix(out.String(), "config ok") {
		t.Errorf("check printed %q, want a line starting with \"config ok\"", out.String())
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("providers:\n  - name: openai\n    base_url: ftp://example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"check", "-config", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "providers[openai].base_url") {
		t.Errorf("check of a bad config = %v, want an error naming providers[openai].base_url", err)
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"frobnicate"}, 2},
		{[]string{"check", "-bogus"}, 2},
		{[]string{"check", "extra"}, 2},
		{[]string{"check", "-config", "does-not-exist.yaml"}, 1},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || exitCode(err) != tt.code {
			t.Errorf("run(%q) = %v (exit %d), want exit %d", tt.args, err, exitCode(err), tt.code)
		}
	}
}

func TestServeRefusesOpenAdmin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := strings.Replace(testConfig("http://127.0.0.1:1"), "listen: 127.0.0.1:0\nproviders", "listen: 0.0.0.0:0\nproviders", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"-config", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Fatalf("serve with a public admin listener and no token = %v, want an error naming admin.token", err)
	}
}

func TestServeLifecycle(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	s := mustRun(t, testConfig(up.URL))

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, s.AdminURL+path); code != 200 {
			t.Errorf("GET %s = %d %q, want 200", path, code, body)
		}
	}
	resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("proxied request: %d", resp.StatusCode)
	}
	if got := up.Requests()[0].Header.Get("Authorization"); got != "Bearer sk-from-config" {
		t.Errorf("upstream Authorization = %q, want the configured key", got)
	}
	_, metrics := get(t, s.AdminURL+"/metrics")
	for _, want := range []string{
		`sluice_requests_total{class="default",code="200",provider="openai"} 1`,
		`sluice_upstream_requests_total{code="200",provider="openai"} 1`,
		`sluice_inflight_requests{provider="openai"} 0`,
		"go_goroutines", "process_cpu_seconds_total",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body := get(t, s.AdminURL+"/admin/status"); code != 200 || !strings.Contains(body, `"name":"openai"`) {
		t.Errorf("/admin/status = %d %s", code, body)
	}
	if strings.Contains(metrics, "sk-from-config") {
		t.Error("the provider key appears in /metrics")
	}

	s.stop(t)
	if _, err := http.Get(s.AdminURL + "/healthz"); err == nil {
		t.Error("admin listener still answers after shutdown")
	}
}

func TestAdminToken(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	t.Setenv("SLUICE_TEST_TOKEN", "s3cret-admin")
	cfg := strings.Replace(testConfig(up.URL), "  listen: 127.0.0.1:0\nproviders", "  listen: 127.0.0.1:0\n  token: ${SLUICE_TEST_TOKEN}\nproviders", 1)
	s := mustRun(t, cfg)
	tests := []struct {
		path, auth string
		want       int
	}{
		{"/admin/status", "", 401},
		{"/admin/status", "Bearer wrong", 401},
		{"/admin/status", "s3cret-admin", 401},
		{"/admin/status", "Bearer s3cret-admin", 200},
		{"/healthz", "", 200},
		{"/metrics", "", 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, s.AdminURL+tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s with %q = %d, want %d", tt.path, tt.auth, resp.StatusCode, tt.want)
		}
	}
}

// TestDrainOnShutdown: a stream in flight when the shutdown starts is
// delivered whole, while /readyz already reports not ready.
func TestDrainOnShutdown(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3})
	gate := make(chan struct{})
	up.SetGate(gate)
	s := mustRun(t, testConfig(up.URL))

	resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil { // the first event is here
		t.Fatal(err)
	}
	s.cancel()
	for { // readiness flips before the drain finishes
		code, _ := get(t, s.AdminURL+"/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
	}
	close(gate)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream cut during drain: %v", err)
	}
	if !bytes.HasSuffix(rest, []byte("data: [DONE]\n\n")) {
		t.Errorf("stream ended with %q, want [DONE]", rest)
	}
	s.stop(t)
}

// TestOpenAISDK points the official Go SDK at Sluice: chat, a streamed chat
// whose chunks arrive one by one, and embeddings, all with X-Priority.
func TestOpenAISDK(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3})
	s := mustRun(t, testConfig(up.URL))
	client := openai.NewClient(
		option.WithBaseURL(s.URL+"/v1/"),
		option.WithAPIKey("sk-client"),
		option.WithHeader("X-Priority", "critical"),
		option.WithMaxRetries(0),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" || chat.Usage.TotalTokens == 0 {
		t.Errorf("chat response %+v lacks content or usage", chat)
	}

	gate := make(chan struct{})
	up.SetGate(gate)
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         openai.ChatModelGPT4oMini,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	if !stream.Next() { // only the first chunk has been sent
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	if got := stream.Current().Choices[0].Delta.Content; got != "tok0 " {
		t.Errorf("first chunk content = %q, want tok0", got)
	}
	close(gate)
	var acc openai.ChatCompletionAccumulator
	chunks := 1
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if chunks < 4 || acc.Usage.TotalTokens == 0 {
		t.Errorf("stream: %d chunks, usage %+v; want the rest and a usage chunk", chunks, acc.Usage)
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: openai.EmbeddingModelTextEmbedding3Small,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
	})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 {
		t.Errorf("embeddings = %+v, want two vectors", emb.Data)
	}

	for _, r := range up.Requests() {
		if r.Header.Get("X-Priority") != "" {
			t.Errorf("X-Priority reached the upstream on %s", r.Path)
		}
	}

	// Sluice's own errors surface as SDK errors with their status and code.
	bad := openai.NewClient(option.WithBaseURL(s.URL+"/v1/"), option.WithAPIKey("k"),
		option.WithHeader("X-Priority", "nope"), option.WithMaxRetries(0))
	_, err = bad.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4oMini, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Code != "invalid_priority" {
		t.Errorf("bad priority: err = %v, want a 400 invalid_priority API error", err)
	}
}

// TestOpenAISDKThroughQuota drives a saturated quota with the real SDK:
// every call waits its turn and succeeds, the waits show in
// X-Sluice-Queue-Wait-Ms, and a stream whose client did not ask for usage
// reaches the SDK without the usage chunk Sluice asked for.
func TestOpenAISDKThroughQuota(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3, Record: true})
	cfg := testConfig(up.URL) + `
    limits: {requests_per_minute: 600, request_burst: 200ms, tokens_per_minute: 1000000}
`
	s := mustRun(t, cfg)
	client := openai.NewClient(option.WithBaseURL(s.URL+"/v1/"), option.WithAPIKey("k"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// 600 RPM with a 200ms burst: two at once, then one every 100ms.
	const n = 8
	waits := make(chan int, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			var resp *http.Response
			_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model:    openai.ChatModelGPT4oMini,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			}, option.WithResponseInto(&resp))
			if err == nil {
				ms, _ := strconv.Atoi(resp.Header.Get("X-Sluice-Queue-Wait-Ms"))
				waits <- ms
			}
			errs <- err
		}()
	}
	longest := 0
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("chat through a saturated quota: %v", err)
		}
		longest = max(longest, <-waits)
	}
	if longest < 300 {
		t.Errorf("longest queue wait %dms, want at least 300ms: eight calls at 10/s with a burst of two must queue", longest)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	chunks := 0
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) == 0 || c.Usage.TotalTokens != 0 {
			t.Errorf("chunk %d carries usage or no choices: the client did not ask for usage", chunks)
		}
		chunks++
	}
	if err := stream.Err(); err != nil || chunks != 4 {
		t.Errorf("stream: %d chunks, %v; want the 3 content chunks and the finish chunk", chunks, err)
	}
	reqs := up.Requests()
	if last := reqs[len(reqs)-1]; !strings.Contains(string(last.Body), `"include_usage":true`) {
		t.Errorf("upstream stream request %s: want include_usage forced on", last.Body)
	}
}

// TestDeadLetterFile: in single-replica mode a request Sluice gives up on is
// answered, and recorded in the configured JSON-lines file.
func TestDeadLetterFile(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	up.Handle(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(503) })
	file := filepath.Join(t.TempDir(), "dl.jsonl")
	s := mustRun(t, testConfig(up.URL)+"    retry: {max_attempts: 2, base_delay: 10ms, max_delay: 20ms}\n"+
		"deadletter:\n  file: "+file+"\n")
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
	req.Header.Set("Authorization", "Bearer sk-client-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Sluice-Deadletter-Id")
	if resp.StatusCode != 503 || id == "" || resp.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("status %d, dead letter %q, x-should-retry %q; want 503 with a dead letter", resp.StatusCode, id, resp.Header.Get("X-Should-Retry"))
	}
	if code, body := get(t, s.AdminURL+"/admin/deadletters/"+id); code != 200 || !strings.Contains(body, `"error_kind":"retries_exhausted"`) {
		t.Errorf("admin show = %d %s", code, body)
	}
	s.stop(t)
	store, err := deadletter.OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec, err := store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("record %s: %v", id, err)
	}
	if rec.ErrorKind != deadletter.RetriesExhausted || rec.Attempts != 2 || rec.Headers["Authorization"] != deadletter.Redacted {
		t.Errorf("record %+v: want retries_exhausted after 2 attempts with Authorization redacted", rec)
	}
}

// TestDeadLetterRedis: in shared mode the record goes to the Redis stream.
func TestDeadLetterRedis(t *testing.T) {
	srv := redistest.Start(t)
	up := upstreamtest.New(t, upstreamtest.Options{})
	up.Handle(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(503) })
	s := mustRun(t, testConfig(up.URL)+"    retry: {max_attempts: 1}\n"+
		"redis:\n  url: "+srv.URL()+"\n"+
		"deadletter:\n  stream: test:deadletters\n  file: "+filepath.Join(t.TempDir(), "spool.jsonl")+"\n")
	resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Sluice-Deadletter-Id")
	if id == "" {
		t.Fatalf("status %d without a dead letter", resp.StatusCode)
	}
	store := deadletter.NewRedisStore(srv.Client(t), "test:deadletters", 0, time.Second)
	rec, err := store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("record %s in Redis: %v", id, err)
	}
	if rec.ErrorKind != deadletter.RetriesExhausted || rec.LastStatus != 503 {
		t.Errorf("record %+v: want retries_exhausted, last status 503", rec)
	}
	if _, metrics := get(t, s.AdminURL+"/metrics"); !strings.Contains(metrics, "\nsluice_deadletter_spool_depth 0\n") {
		t.Error("shared mode exports no sluice_deadletter_spool_depth of 0")
	}
}
