package upstreamtest_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// quietPeriod is how long TestGateHoldsStream watches an idle connection to
// see that nothing more arrives. It is the one bounded wait of these tests.
const quietPeriod = 100 * time.Millisecond

type chatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func newClient(tb testing.TB) *http.Client {
	tb.Helper()
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func mustDo(tb testing.TB, c *http.Client, method, url, body string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatalf("NewRequest(%s %s) = %v", method, url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading body of %s %s: %v", method, url, err)
	}
	return resp, b
}

func mustUnmarshal(tb testing.TB, b []byte, v any) {
	tb.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("Unmarshal(%s) = %v", b, err)
	}
}

func TestChatCompletion(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	c := newClient(t)
	tests := []struct {
		name      string
		path      string
		body      string
		wantModel string
		wantN     int
	}{
		{"plain", "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, "gpt-4o-mini", 1},
		{"stream false", "/v1/chat/completions", `{"model":"m","stream" : false,"messages":[]}`, "m", 1},
		{"n", "/v1/chat/completions", `{"model":"m","n":3,"messages":[]}`, "m", 3},
		{"escaped model", "/v1/chat/completions", `{"model":"a\"b\u00e9","messages":[]}`, "a\"bé", 1},
		{"quoted keys in content", "/v1/chat/completions", `{"messages":[{"role":"user","content":"say \"stream\": true and \"n\""}],"model":"m"}`, "m", 1},
		{"nested model key", "/v1/chat/completions", `{"model":"m","tools":[{"model":"x"}]}`, "m", 1},
		{"path prefix", "/openai/v1/chat/completions", `{"model":"m"}`, "m", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := mustDo(t, c, "POST", s.URL+tt.path, tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200; body %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			for h, want := range map[string]string{
				"X-Ratelimit-Limit-Requests":     "10000",
				"X-Ratelimit-Remaining-Requests": "9999",
				"X-Ratelimit-Reset-Requests":     "6ms",
				"X-Ratelimit-Reset-Tokens":       "1s",
			} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			for _, h := range []string{"X-Request-Id", "X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens"} {
				if resp.Header.Get(h) == "" {
					t.Errorf("%s missing", h)
				}
			}
			var got chatCompletion
			mustUnmarshal(t, body, &got)
			if got.Object != "chat.completion" || got.Model != tt.wantModel || !strings.HasPrefix(got.ID, "chatcmpl-") {
				t.Errorf("object, model, id = %q, %q, %q, want chat.completion, %q, chatcmpl-...", got.Object, got.Model, got.ID, tt.wantModel)
			}
			if len(got.Choices) != tt.wantN {
				t.Fatalf("len(choices) = %d, want %d", len(got.Choices), tt.wantN)
			}
			for i, ch := range got.Choices {
				if ch.Index != i || ch.Message.Role != "assistant" || ch.Message.Content != upstreamtest.Content {
					t.Errorf("choices[%d] = %+v, want index %d, assistant, %q", i, ch, i, upstreamtest.Content)
				}
			}
			wantPrompt := upstreamtest.PromptTokens(len(tt.body))
			wantCompletion := upstreamtest.CompletionTokens * tt.wantN
			if u := got.Usage; u == nil || u.PromptTokens != wantPrompt || u.CompletionTokens != wantCompletion || u.TotalTokens != wantPrompt+wantCompletion {
				t.Errorf("usage = %+v, want %d, %d, %d", u, wantPrompt, wantCompletion, wantPrompt+wantCompletion)
			}
		})
	}
}

func TestChatBadRequest(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	c := newClient(t)
	for _, body := range []string{`{"model":`, `not json`, `{"model":"m","n":0}`, `{"model":"m","n":129}`} {
		resp, b := mustDo(t, c, "POST", s.URL+"/v1/chat/completions", body)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s: status = %d, want 400", body, resp.StatusCode)
		}
		var e apiError
		mustUnmarshal(t, b, &e)
		if e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
			t.Errorf("POST %s: error = %+v, want invalid_request_error with a message", body, e.Error)
		}
	}
}

// readEvent returns the data of the next SSE event.
func readEvent(r *bufio.Reader) (string, error) {
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return data, nil
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data = d
		}
	}
}

// readEvents returns the data of every event until [DONE], included.
func readEvents(tb testing.TB, r *bufio.Reader) []string {
	tb.Helper()
	var events []string
	for {
		e, err := readEvent(r)
		if err != nil {
			tb.Fatalf("reading event %d: %v (so far %q)", len(events), err, events)
		}
		events = append(events, e)
		if e == "[DONE]" {
			return events
		}
	}
}

func TestChatStream(t *testing.T) {
	t.Parallel()
	const chunks = 3
	s := upstreamtest.New(t, upstreamtest.Options{Chunks: chunks, ChunkDelay: time.Millisecond})
	c := newClient(t)
	tests := []struct {
		name      string
		body      string
		wantUsage int // usage events
	}{
		{"no usage", `{"model":"m","stream":true}`, 0},
		{"include_usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
				t.Errorf("Content-Type = %q, want text/event-stream", got)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			if got := resp.TransferEncoding; len(got) != 1 || got[0] != "chunked" {
				t.Errorf("TransferEncoding = %q, want [chunked]", got)
			}
			events := readEvents(t, bufio.NewReader(resp.Body))
			var content strings.Builder
			var usage, finish int
			for _, e := range events[:len(events)-1] {
				var ch chatCompletion
				mustUnmarshal(t, []byte(e), &ch)
				if ch.Object != "chat.completion.chunk" || ch.Model != "m" {
					t.Errorf("event %s: want a chat.completion.chunk of model m", e)
				}
				if ch.Usage != nil {
					usage++
					if len(ch.Choices) != 0 {
						t.Errorf("usage event %s has choices", e)
					}
					want := upstreamtest.PromptTokens(len(tt.body))
					if ch.Usage.PromptTokens != want || ch.Usage.CompletionTokens != chunks || ch.Usage.TotalTokens != want+chunks {
						t.Errorf("usage = %+v, want %d, %d, %d", *ch.Usage, want, chunks, want+chunks)
					}
					continue
				}
				for _, choice := range ch.Choices {
					content.WriteString(choice.Delta.Content)
					if choice.FinishReason != nil {
						finish++
					}
				}
			}
			if got, want := content.String(), "tok0 tok1 tok2 "; got != want {
				t.Errorf("content = %q, want %q", got, want)
			}
			if finish != 1 {
				t.Errorf("%d events with finish_reason, want 1", finish)
			}
			if usage != tt.wantUsage {
				t.Errorf("%d usage events, want %d", usage, tt.wantUsage)
			}
		})
	}
}

// TestGateHoldsStream reads a gated stream on a raw connection, to see the
// bytes as they arrive.
func TestGateHoldsStream(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	gate := make(chan struct{})
	s.SetGate(gate)

	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, err := http.NewRequest("POST", s.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	events := bufio.NewReader(resp.Body)
	first, err := readEvent(events)
	if err != nil || !strings.Contains(first, `"tok0 "`) {
		t.Fatalf("first event = %q, %v, want tok0", first, err)
	}

	// Nothing but the CRLF closing the first chunk may follow it until the
	// gate opens. Peek reads the connection itself, so a timeout here leaves
	// the chunked reader of resp.Body untouched.
	if n := events.Buffered(); n != 0 {
		t.Fatalf("%d bytes buffered after the first event, want 0", n)
	}
	if n := br.Buffered(); n > 2 {
		b, _ := br.Peek(n)
		t.Fatalf("before the gate opened, got %q", b)
	}
	if err := conn.SetReadDeadline(time.Now().Add(quietPeriod)); err != nil {
		t.Fatal(err)
	}
	if b, err := br.Peek(br.Buffered() + 1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("before the gate opened, Peek = %q, %v, want a timeout", b, err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	close(gate)
	rest := readEvents(t, events)
	if got, want := len(rest), 4+1+1; got != want { // tok1..tok4, finish, [DONE]
		t.Errorf("after the gate opened, got %d events %q, want %d", got, rest, want)
	}

	// A new stream passes an open gate without waiting.
	resp2, err := newClient(t).Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	readEvents(t, bufio.NewReader(resp2.Body))
}

func TestCloseEndsGatedStream(t *testing.T) {
	t.Parallel()
	s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.SetGate(make(chan struct{})) // never opened
	c := newClient(t)
	resp, err := c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if _, err := readEvent(r); err != nil {
		t.Fatalf("first event: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	// The stream ended without its last events.
	for {
		e, err := readEvent(r)
		if err != nil {
			break
		}
		if e == "[DONE]" {
			t.Fatal("got [DONE] from a stream held by a gate that never opened")
		}
	}
}

func TestPushAndHandle(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	c := newClient(t)
	status := func(code int) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(code) }
	}
	s.Push(status(429))
	s.Push(status(500))
	s.Handle(status(418))
	s.Push(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Scripted", "yes")
		s.Default(ctx)
	})

	chat := s.URL + "/v1/chat/completions"
	for i, want := range []int{429, 500, 200, 418, 418} {
		resp, _ := mustDo(t, c, "POST", chat, `{"model":"m"}`)
		if resp.StatusCode != want {
			t.Errorf("request %d: status = %d, want %d", i, resp.StatusCode, want)
		}
		if i == 2 && resp.Header.Get("X-Scripted") != "yes" {
			t.Errorf("request %d: X-Scripted missing, want the pushed Default passthrough", i)
		}
	}
	s.Handle(nil)
	if resp, _ := mustDo(t, c, "POST", chat, `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("after Handle(nil): status = %d, want 200", resp.StatusCode)
	}
	if got := s.Count(); got != 6 {
		t.Errorf("Count() = %d, want 6", got)
	}
}

func TestRecord(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	c := newClient(t)
	req, err := http.NewRequest("POST", s.URL+"/v1/chat/completions?api-version=1&x=%2F", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("authorization", "Bearer sk-test")
	req.Header.Add("X-Multi", "a")
	req.Header.Add("X-Multi", "b")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mustDo(t, c, "GET", s.URL+"/v1/models", "")

	arrived := <-s.Arrivals()
	got := s.Requests()
	if len(got) != 2 {
		t.Fatalf("len(Requests()) = %d, want 2", len(got))
	}
	r := got[0]
	if r.Method != "POST" || r.Path != "/v1/chat/completions" || r.Query != "api-version=1&x=%2F" ||
		r.RequestURI != "/v1/chat/completions?api-version=1&x=%2F" || r.Host != s.Addr || string(r.Body) != `{"model":"m"}` {
		t.Errorf("Requests()[0] = %+v, want the chat request", r)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer sk-test" {
		t.Errorf("Authorization = %q, want %q", got, "Bearer sk-test")
	}
	if got := r.Header["X-Multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("X-Multi = %q, want [a b]", got)
	}
	if _, ok := r.Header["Host"]; ok {
		t.Error("Header has Host, want it in Request.Host only")
	}
	if got[1].Method != "GET" || got[1].Path != "/v1/models" {
		t.Errorf("Requests()[1] = %s %s, want GET /v1/models", got[1].Method, got[1].Path)
	}
	if arrived.Path != r.Path || string(arrived.Body) != string(r.Body) {
		t.Errorf("first arrival = %+v, want %+v", arrived, r)
	}
	if second := <-s.Arrivals(); second.Path != "/v1/models" {
		t.Errorf("second arrival path = %q, want /v1/models", second.Path)
	}

	// Copies: changing one changes neither the server's nor another copy.
	r.Body[0] = 'X'
	r.Header.Set("Authorization", "changed")
	arrived.Body[0] = 'Y'
	again := s.Requests()[0]
	if string(again.Body) != `{"model":"m"}` || again.Header.Get("Authorization") != "Bearer sk-test" {
		t.Errorf("Requests()[0] after modifying a copy = %+v, want the original", again)
	}
}

func TestRecordOff(t *testing.T) {
	t.Parallel()
	s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mustDo(t, newClient(t), "GET", s.URL+"/v1/models", "")
	if got := s.Count(); got != 1 {
		t.Errorf("Count() = %d, want 1", got)
	}
	if got := s.Requests(); len(got) != 0 {
		t.Errorf("Requests() = %d requests, want none with Record off", len(got))
	}
	if s.Arrivals() != nil {
		t.Error("Arrivals() != nil with Record off")
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{TLS: true})
	if !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Errorf("URL = %q, want https://127.0.0.1:port", s.URL)
	}
	pem, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatalf("reading CAFile: %v", err)
	}
	fromFile := x509.NewCertPool()
	if !fromFile.AppendCertsFromPEM(pem) {
		t.Fatalf("CAFile %s holds no PEM certificate", s.CAFile())
	}
	for name, pool := range map[string]*x509.CertPool{"CertPool": s.CertPool(), "CAFile": fromFile} {
		for _, base := range []string{s.URL, strings.Replace(s.URL, "127.0.0.1", "localhost", 1)} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			resp, body := mustDo(t, &http.Client{Transport: tr}, "GET", base+"/v1/models", "")
			tr.CloseIdleConnections()
			if resp.StatusCode != 200 || resp.TLS == nil {
				t.Errorf("%s: GET %s/v1/models = %d (TLS %v), want 200 over TLS; %s", name, base, resp.StatusCode, resp.TLS != nil, body)
			}
		}
	}
	// Untrusted without the pool.
	if _, err := newClient(t).Get(s.URL + "/v1/models"); err == nil {
		t.Error("GET with the system roots succeeded, want a certificate error")
	}
}

func TestTLSCAFileRemovedOnClose(t *testing.T) {
	t.Parallel()
	s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.CAFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat(CAFile) after Close = %v, want not exist", err)
	}
}

func TestPlainHasNoCA(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	if s.CAFile() != "" || s.CertPool() != nil {
		t.Errorf("CAFile, CertPool = %q, %v, want empty without TLS", s.CAFile(), s.CertPool())
	}
}

func TestEmbeddings(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	c := newClient(t)
	tests := []struct {
		input string
		want  int
	}{
		{`"one"`, 1},
		{`["a","b","c"]`, 3},
		{`[1,2,3]`, 1},
		{`[[1,2],[3]]`, 2},
	}
	for _, tt := range tests {
		body := `{"model":"text-embedding-3-small","input":` + tt.input + `}`
		resp, b := mustDo(t, c, "POST", s.URL+"/v1/embeddings", body)
		if resp.StatusCode != 200 {
			t.Errorf("input %s: status = %d, want 200", tt.input, resp.StatusCode)
			continue
		}
		var got struct {
			Object string `json:"object"`
			Model  string `json:"model"`
			Data   []struct {
				Object    string    `json:"object"`
				Index     int       `json:"index"`
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
				TotalTokens  int `json:"total_tokens"`
			} `json:"usage"`
		}
		mustUnmarshal(t, b, &got)
		if got.Object != "list" || got.Model != "text-embedding-3-small" || len(got.Data) != tt.want {
			t.Errorf("input %s: object, model, len(data) = %q, %q, %d, want list, text-embedding-3-small, %d", tt.input, got.Object, got.Model, len(got.Data), tt.want)
		}
		for i, d := range got.Data {
			if d.Object != "embedding" || d.Index != i || len(d.Embedding) != upstreamtest.EmbeddingDims {
				t.Errorf("input %s: data[%d] = %s #%d with %d dims, want embedding #%d with %d", tt.input, i, d.Object, d.Index, len(d.Embedding), i, upstreamtest.EmbeddingDims)
			}
		}
		if want := upstreamtest.PromptTokens(len(body)); got.Usage.PromptTokens != want || got.Usage.TotalTokens != want {
			t.Errorf("input %s: usage = %+v, want %d", tt.input, got.Usage, want)
		}
	}
	for _, input := range []string{`[]`, `42`, `null`} {
		if resp, _ := mustDo(t, c, "POST", s.URL+"/v1/embeddings", `{"input":`+input+`}`); resp.StatusCode != 400 {
			t.Errorf("input %s: status = %d, want 400", input, resp.StatusCode)
		}
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	resp, b := mustDo(t, newClient(t), "GET", s.URL+"/v1/models", "")
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	mustUnmarshal(t, b, &got)
	if resp.StatusCode != 200 || got.Object != "list" || len(got.Data) != 2 || got.Data[0].Object != "model" {
		t.Errorf("GET /v1/models = %d %s, want 200 and a list of two models", resp.StatusCode, b)
	}
}

func TestMessages(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	body := `{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	resp, b := mustDo(t, newClient(t), "POST", s.URL+"/anthropic/v1/messages", body)
	var got struct {
		Type    string `json:"type"`
		Role    string `json:"role"`
		Model   string `json:"model"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		Usage struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	}
	mustUnmarshal(t, b, &got)
	if resp.StatusCode != 200 || got.Type != "message" || got.Role != "assistant" || got.Model != "claude-x" ||
		len(got.Content) != 1 || got.Content[0].Text != upstreamtest.Content {
		t.Errorf("POST /anthropic/v1/messages = %d %s, want 200 and a message", resp.StatusCode, b)
	}
	if got.Usage.InputTokens != upstreamtest.PromptTokens(len(body)) || got.Usage.OutputTokens != upstreamtest.CompletionTokens {
		t.Errorf("usage = %+v, want %d, %d", got.Usage, upstreamtest.PromptTokens(len(body)), upstreamtest.CompletionTokens)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	s := upstreamtest.New(t, upstreamtest.Options{})
	c := newClient(t)
	for _, tt := range []struct{ method, path string }{
		{"GET", "/v1/nope"},
		{"GET", "/v1/chat/completions"},
		{"POST", "/v1/models"},
		{"GET", "/"},
	} {
		resp, b := mustDo(t, c, tt.method, s.URL+tt.path, "")
		var e apiError
		mustUnmarshal(t, b, &e)
		if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: status %d, %s, want 404 application/json", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if want := "Invalid URL (" + tt.method + " " + tt.path + ")"; e.Error.Message != want || e.Error.Type != "invalid_request_error" ||
			e.Error.Code == nil || *e.Error.Code != "not_found" {
			t.Errorf("%s %s: error = %s, want message %q, invalid_request_error, not_found", tt.method, tt.path, b, want)
		}
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range []upstreamtest.Options{{Chunks: -1}, {ChunkDelay: -time.Second}} {
		if s, err := upstreamtest.Start("127.0.0.1:0", opts); err == nil {
			s.Close()
			t.Errorf("Start(%+v) = nil error, want one", opts)
		}
	}
	if _, err := upstreamtest.Start("256.0.0.1:0", upstreamtest.Options{}); err == nil {
		t.Error("Start(256.0.0.1:0) = nil error, want one")
	}
}

func TestCloseRefusesConnections(t *testing.T) {
	t.Parallel()
	s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	mustDo(t, c, "GET", s.URL+"/v1/models", "") // leaves an idle keep-alive connection
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	conn, err := net.Dial("tcp", s.Addr)
	if err == nil {
		conn.Close()
		t.Fatalf("Dial(%s) after Close succeeded, want connection refused", s.Addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Dial(%s) after Close = %v, want connection refused", s.Addr, err)
	}
}

// waitGoroutines waits until at most want goroutines run, and returns the
// last count. The client's goroutines end asynchronously after the server
// closes their connections, so this is a polling wait, bounded.
func waitGoroutines(want int) int {
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return n
		}
		select {
		case <-deadline.C:
			return n
		case <-tick.C:
		}
	}
}

// TestNoGoroutineLeak runs alone (not parallel): it counts every goroutine of
// the process.
func TestNoGoroutineLeak(t *testing.T) {
	run := func() {
		s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{Record: true, TLS: true, ChunkDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}
		c := &http.Client{Transport: tr}
		mustDo(t, c, "POST", s.URL+"/v1/chat/completions", `{"model":"m"}`)
		mustDo(t, c, "POST", s.URL+"/v1/chat/completions", `{"model":"m","stream":true}`)

		// A gated stream that is still held when the server closes.
		s.SetGate(make(chan struct{}))
		resp, err := c.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":true}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readEvent(bufio.NewReader(resp.Body)); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
	}
	start := runtime.NumGoroutine()
	run()
	// The first run may start fasthttp's process-wide clock goroutine.
	before := waitGoroutines(start + 1)
	for range 3 {
		run()
	}
	if after := waitGoroutines(before); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, want %d:\n%s", after, before, buf[:runtime.Stack(buf, true)])
	}
}

func BenchmarkChat(b *testing.B) {
	s, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c := &fasthttp.HostClient{Addr: s.Addr, MaxConns: 1024}
	defer c.CloseIdleConnections()
	bench := func(b *testing.B, body string, stream bool) {
		b.ReportAllocs()
		// Enough clients to keep the server busy: with one per CPU the
		// loop measures round-trip latency, not the server's cost.
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			req := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(req)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(s.URL + "/v1/chat/completions")
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/json")
			req.SetBodyString(body)
			done := []byte("data: [DONE]")
			for pb.Next() {
				if err := c.Do(req, resp); err != nil {
					b.Error(err)
					return
				}
				if resp.StatusCode() != fasthttp.StatusOK || (stream && !bytes.Contains(resp.Body(), done)) {
					b.Errorf("status %d, body %s", resp.StatusCode(), resp.Body())
					return
				}
			}
		})
	}
	b.Run("handler", func(b *testing.B) {
		// The default handler alone, without the network: the fake's own
		// share of each request.
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(fasthttp.MethodPost)
		ctx.Request.SetRequestURI("/v1/chat/completions")
		ctx.Request.SetBodyString(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}`)
		b.ReportAllocs()
		for b.Loop() {
			ctx.Response.Reset()
			s.Default(&ctx)
		}
	})
	b.Run("plain", func(b *testing.B) {
		bench(b, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}`, false)
	})
	b.Run("stream", func(b *testing.B) {
		bench(b, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello."}]}`, true)
	})
}
