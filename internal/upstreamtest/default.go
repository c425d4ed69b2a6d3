package upstreamtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// Contract values of the default responses, for tests to compare against.
const (
	// Content is the assistant message of a non-streamed chat completion,
	// and the text of an Anthropic message.
	Content = "Hello from the fake upstream."
	// CompletionTokens is usage.completion_tokens of a non-streamed chat
	// completion, per choice, and usage.output_tokens of a message. A stream
	// reports one completion token per content chunk.
	CompletionTokens = 7
	// EmbeddingDims is the length of each embedding vector.
	EmbeddingDims = 8
)

// PromptTokens is the usage.prompt_tokens (input_tokens for messages) the
// default handlers report for a request body of n bytes: n/4 + 1.
func PromptTokens(n int) int {
	return n/4 + 1
}

// maxN is the largest "n" OpenAI accepts for chat completions.
const maxN = 128

// msgBadJSON is OpenAI's message for a body that is not JSON.
const msgBadJSON = "We could not parse the JSON body of your request."

var (
	suffixChat       = []byte("/chat/completions")
	suffixEmbeddings = []byte("/embeddings")
	suffixModels     = []byte("/models")
	suffixMessages   = []byte("/messages")

	keyModel         = []byte(`"model"`)
	keyStream        = []byte(`"stream"`)
	keyStreamOptions = []byte(`"stream_options"`)
	keyN             = []byte(`"n"`)
	litFalse         = []byte("false")

	// doneEvent ends every stream.
	doneEvent = []byte("data: [DONE]\n\n")

	// aLongTimeAgo is a read deadline that has passed: it makes a blocked
	// Read return at once.
	aLongTimeAgo = time.Unix(1, 0)
)

// modelsBody is the answer to GET /v1/models.
const modelsBody = `{"object":"list","data":[` +
	`{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},` +
	`{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}`

// Default answers ctx the way the server does when nothing is scripted. A
// scripted handler can call it to pass a request through, for example after
// waiting on a channel or adding a header. Routes match on the path suffix,
// so "/openai/v1/chat/completions" is a chat completion too:
//
//   - POST .../chat/completions: a chat.completion, or with "stream": true an
//     SSE stream of chat.completion.chunk events ending in "data: [DONE]".
//   - POST .../embeddings: one vector of [EmbeddingDims] per input.
//   - GET .../models: a list of two models.
//   - POST .../messages: an Anthropic message.
//   - anything else: 404 with an OpenAI-shaped error.
//
// Chat completions and embeddings carry x-request-id and OpenAI's
// x-ratelimit-* headers. A body that is not valid JSON gets a 400.
func (s *Server) Default(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	switch {
	case ctx.IsPost() && bytes.HasSuffix(path, suffixChat):
		s.chat(ctx)
	case ctx.IsPost() && bytes.HasSuffix(path, suffixEmbeddings):
		s.embeddings(ctx)
	case ctx.IsGet() && bytes.HasSuffix(path, suffixModels):
		s.models(ctx)
	case ctx.IsPost() && bytes.HasSuffix(path, suffixMessages):
		s.messages(ctx)
	default:
		writeError(ctx, fasthttp.StatusNotFound,
			"Invalid URL ("+string(ctx.Method())+" "+string(path)+")", "invalid_request_error", "not_found")
	}
}

// rateLimitHeaders are OpenAI's rate-limit headers, in the canonical form
// fasthttp sends, so SetCanonical can skip normalising them.
var rateLimitHeaders = [...]struct{ key, value []byte }{
	{[]byte("X-Ratelimit-Limit-Requests"), []byte("10000")},
	{[]byte("X-Ratelimit-Remaining-Requests"), []byte("9999")},
	{[]byte("X-Ratelimit-Reset-Requests"), []byte("6ms")},
	{[]byte("X-Ratelimit-Limit-Tokens"), []byte("1000000")},
	{[]byte("X-Ratelimit-Remaining-Tokens"), []byte("999000")},
	{[]byte("X-Ratelimit-Reset-Tokens"), []byte("1s")},
}

var keyRequestID = []byte("X-Request-Id")

// setCommonHeaders sets what OpenAI sends with every completion. The header
// copies into the response's reused buffers: nothing is allocated.
func setCommonHeaders(h *fasthttp.ResponseHeader, seq uint64) {
	var buf [32]byte
	h.SetCanonical(keyRequestID, strconv.AppendUint(append(buf[:0], "req_fake"...), seq, 10))
	for _, kv := range rateLimitHeaders {
		h.SetCanonical(kv.key, kv.value)
	}
}

// chatParams is what the default handler reads from a chat request.
type chatParams struct {
	model        []byte // JSON-escaped, without quotes
	stream       bool
	includeUsage bool
	n            int
}

func (s *Server) chat(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	p, ok := scanChat(body)
	if !ok {
		var msg string
		if p, msg = decodeChat(body); msg != "" {
			writeError(ctx, fasthttp.StatusBadRequest, msg, "invalid_request_error", "")
			return
		}
	}
	seq := s.seq.Add(1)
	setCommonHeaders(&ctx.Response.Header, seq)
	prompt := PromptTokens(len(body))
	if p.stream {
		s.startStream(ctx, p, prompt, seq)
		return
	}

	// The body is appended in canned pieces to the response's pooled
	// buffer, so this path allocates nothing of its own.
	var num [20]byte
	r := &ctx.Response
	ctx.SetContentType("application/json")
	r.AppendBodyString(`{"id":"chatcmpl-fake`)
	r.AppendBody(strconv.AppendUint(num[:0], seq, 10))
	r.AppendBodyString(`","object":"chat.completion","created":`)
	r.AppendBody(strconv.AppendInt(num[:0], time.Now().Unix(), 10))
	r.AppendBodyString(`,"model":"`)
	r.AppendBody(p.model)
	r.AppendBodyString(`","choices":[`)
	for i := range p.n {
		if i > 0 {
			r.AppendBodyString(",")
		}
		r.AppendBodyString(`{"index":`)
		r.AppendBody(strconv.AppendInt(num[:0], int64(i), 10))
		r.AppendBodyString(`,"message":{"role":"assistant","content":"` + Content +
			`","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}`)
	}
	appendUsage(r, prompt, CompletionTokens*p.n)
	r.AppendBodyString(`,"service_tier":"default","system_fingerprint":"fp_fake"}`)
}

// appendUsage appends `],"usage":{...}`, closing the choices array.
func appendUsage(r *fasthttp.Response, prompt, completion int) {
	var num [20]byte
	r.AppendBodyString(`],"usage":{"prompt_tokens":`)
	r.AppendBody(strconv.AppendInt(num[:0], int64(prompt), 10))
	r.AppendBodyString(`,"completion_tokens":`)
	r.AppendBody(strconv.AppendInt(num[:0], int64(completion), 10))
	r.AppendBodyString(`,"total_tokens":`)
	r.AppendBody(strconv.AppendInt(num[:0], int64(prompt+completion), 10))
	r.AppendBodyString(`,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}`)
}

// scanChat reads a chat request without decoding it, for the common case of a
// valid body with one unescaped "model", no "n", no "stream_options" and no
// "stream" other than false. Anything else returns false, and the caller
// decodes the body properly. A quote inside a JSON string is escaped, so a
// match of `"stream"` is a key or a whole string value, never message text.
func scanChat(body []byte) (chatParams, bool) {
	if !json.Valid(body) || bytes.Contains(body, keyN) || bytes.Contains(body, keyStreamOptions) {
		return chatParams{}, false
	}
	for rest := body; ; {
		i := bytes.Index(rest, keyStream)
		if i < 0 {
			break
		}
		rest = rest[i+len(keyStream):]
		if v, ok := afterColon(rest); !ok || !bytes.HasPrefix(v, litFalse) {
			return chatParams{}, false
		}
	}
	i := bytes.Index(body, keyModel)
	if i < 0 {
		return chatParams{}, false
	}
	rest := body[i+len(keyModel):]
	if bytes.Contains(rest, keyModel) {
		return chatParams{}, false
	}
	v, ok := afterColon(rest)
	if !ok || len(v) == 0 || v[0] != '"' {
		return chatParams{}, false
	}
	end := bytes.IndexByte(v[1:], '"')
	if end < 0 {
		return chatParams{}, false
	}
	model := v[1 : 1+end]
	if bytes.IndexByte(model, '\\') >= 0 {
		return chatParams{}, false
	}
	return chatParams{model: model, n: 1}, true
}

// afterColon returns what follows a key: b after optional space, a colon and
// optional space. It reports false when there is no colon.
func afterColon(b []byte) ([]byte, bool) {
	b = skipSpace(b)
	if len(b) == 0 || b[0] != ':' {
		return nil, false
	}
	return skipSpace(b[1:]), true
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

// decodeChat decodes a chat request the slow way. A non-empty message says
// what is wrong with it, in OpenAI's words.
func decodeChat(body []byte) (chatParams, string) {
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		N             *int   `json:"n"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return chatParams{}, msgBadJSON
	}
	p := chatParams{stream: req.Stream, n: 1}
	if req.N != nil {
		if *req.N < 1 || *req.N > maxN {
			return chatParams{}, "Invalid 'n': expected a value between 1 and 128."
		}
		p.n = *req.N
	}
	if req.StreamOptions != nil {
		p.includeUsage = req.StreamOptions.IncludeUsage
	}
	model, _ := json.Marshal(req.Model) // a string always marshals
	p.model = model[1 : len(model)-1]
	return p, ""
}

// stream is one streamed chat completion. It holds copies, never the
// request's byte slices: the writer runs after the handler has returned.
type stream struct {
	seq          uint64
	created      int64
	model        string
	n            int
	includeUsage bool
	prompt       int
	conn         net.Conn
	gate         <-chan struct{}
}

func (s *Server) startStream(ctx *fasthttp.RequestCtx, p chatParams, prompt int, seq uint64) {
	st := &stream{
		seq:          seq,
		created:      time.Now().Unix(),
		model:        string(p.model),
		n:            p.n,
		includeUsage: p.includeUsage,
		prompt:       prompt,
		conn:         ctx.Conn(),
	}
	if g := s.gate.Load(); g != nil {
		st.gate = *g
	}
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	// fasthttp runs the writer in a goroutine of its own, ended when the
	// writer returns, and sends each Flush as one chunk.
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) { s.writeStream(w, st) })
}

// writeStream writes the events of st, flushing each, with Options.ChunkDelay
// between them and the gate after the first. It returns early when a write
// fails (the client went away) or the server closes.
func (s *Server) writeStream(w *bufio.Writer, st *stream) {
	s.streams.Add(1)
	defer s.streams.Add(-1)

	head := make([]byte, 0, 160+len(st.model))
	head = append(head, `data: {"id":"chatcmpl-fake`...)
	head = strconv.AppendUint(head, st.seq, 10)
	head = append(head, `","object":"chat.completion.chunk","created":`...)
	head = strconv.AppendInt(head, st.created, 10)
	head = append(head, `,"model":"`...)
	head = append(head, st.model...)
	head = append(head, `","system_fingerprint":"fp_fake","choices":[`...)
	tail := "]}\n\n"
	if st.includeUsage {
		// With include_usage, OpenAI sends "usage":null on every chunk but
		// the last.
		tail = `],"usage":null}` + "\n\n"
	}

	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	events := 0
	buf := make([]byte, 0, 512)
	// send writes one event, after the delay (or the gate) that precedes it.
	send := func(event []byte) bool {
		if events == 1 && st.gate != nil && !s.hold(st.conn, st.gate) {
			return false
		}
		if events > 0 && s.opts.ChunkDelay > 0 {
			if timer == nil {
				timer = time.NewTimer(s.opts.ChunkDelay)
			} else {
				timer.Reset(s.opts.ChunkDelay)
			}
			select {
			case <-timer.C:
			case <-s.done:
				return false
			}
		}
		events++
		if _, err := w.Write(event); err != nil {
			return false
		}
		return w.Flush() == nil
	}
	// choice builds the event of one choice: content chunk i, or for i < 0
	// the empty delta that carries the finish reason.
	choice := func(index, i int) []byte {
		buf = append(buf[:0], head...)
		buf = append(buf, `{"index":`...)
		buf = strconv.AppendInt(buf, int64(index), 10)
		if i < 0 {
			buf = append(buf, `,"delta":{},"logprobs":null,"finish_reason":"stop"}`...)
			return append(buf, tail...)
		}
		buf = append(buf, `,"delta":{`...)
		if i == 0 {
			buf = append(buf, `"role":"assistant",`...)
		}
		buf = append(buf, `"content":"tok`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, ` "},"logprobs":null,"finish_reason":null}`...)
		return append(buf, tail...)
	}

	for i := range s.opts.Chunks {
		for c := range st.n {
			if !send(choice(c, i)) {
				return
			}
		}
	}
	for c := range st.n {
		if !send(choice(c, -1)) {
			return
		}
	}
	if st.includeUsage {
		completion := s.opts.Chunks * st.n
		buf = append(buf[:0], head...)
		buf = append(buf, `],"usage":{"prompt_tokens":`...)
		buf = strconv.AppendInt(buf, int64(st.prompt), 10)
		buf = append(buf, `,"completion_tokens":`...)
		buf = strconv.AppendInt(buf, int64(completion), 10)
		buf = append(buf, `,"total_tokens":`...)
		buf = strconv.AppendInt(buf, int64(st.prompt+completion), 10)
		buf = append(buf, "}}\n\n"...)
		if !send(buf) {
			return
		}
	}
	send(doneEvent)
}

// hold waits until gate is closed and reports true, or reports false when the
// server closes or the client goes away. fasthttp cannot tell that a client
// left (RequestCtx.Done fires only on shutdown), so hold reads the connection
// meanwhile: an HTTP/1.1 client sends nothing while a response is in flight,
// so the read returns only when the client closes the connection. Once the
// gate opens, a past deadline ends the read before the stream goes on.
func (s *Server) hold(conn net.Conn, gate <-chan struct{}) bool {
	select {
	case <-gate:
		return true
	case <-s.done:
		return false
	default:
	}
	if conn == nil {
		select {
		case <-gate:
			return true
		case <-s.done:
			return false
		}
	}
	left := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := conn.Read(b[:])
		left <- err
	}()
	opened := false
	select {
	case <-gate:
		opened = true
	case <-s.done:
	case <-left:
		// The client closed the connection, or broke the protocol by
		// sending a byte the next request has now lost.
		return false
	}
	_ = conn.SetReadDeadline(aLongTimeAgo)
	err := <-left
	_ = conn.SetReadDeadline(time.Time{})
	return opened && errors.Is(err, os.ErrDeadlineExceeded)
}

func (s *Server) embeddings(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	var req struct {
		Model string          `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, msgBadJSON, "invalid_request_error", "")
		return
	}
	n, ok := countInputs(req.Input)
	if !ok {
		writeError(ctx, fasthttp.StatusBadRequest, "'input' must be a string, an array of strings or an array of token arrays.", "invalid_request_error", "")
		return
	}
	type embedding struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	type usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	}
	resp := struct {
		Object string      `json:"object"`
		Data   []embedding `json:"data"`
		Model  string      `json:"model"`
		Usage  usage       `json:"usage"`
	}{Object: "list", Data: make([]embedding, n), Model: req.Model}
	for i := range resp.Data {
		vec := make([]float64, EmbeddingDims)
		for j := range vec {
			vec[j] = float64((i+1)*(j+1)) / 100
		}
		resp.Data[i] = embedding{Object: "embedding", Index: i, Embedding: vec}
	}
	prompt := PromptTokens(len(body))
	resp.Usage = usage{PromptTokens: prompt, TotalTokens: prompt}
	setCommonHeaders(&ctx.Response.Header, s.seq.Add(1))
	writeJSON(ctx, fasthttp.StatusOK, resp)
}

// countInputs returns how many embeddings an "input" asks for: a string or an
// array of integers (one tokenised text) is one; an array of strings or of
// token arrays is one per element.
func countInputs(raw json.RawMessage) (int, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, false
	}
	switch raw[0] {
	case '"':
		return 1, true
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil || len(items) == 0 {
			return 0, false
		}
		if first := bytes.TrimSpace(items[0]); len(first) > 0 && (first[0] == '-' || '0' <= first[0] && first[0] <= '9') {
			return 1, true
		}
		return len(items), true
	}
	return 0, false
}

func (s *Server) models(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(modelsBody)
}

func (s *Server) messages(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	var req struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, msgBadJSON, "invalid_request_error", "")
		return
	}
	type text struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	type usage struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	}
	seq := s.seq.Add(1)
	resp := struct {
		ID           string  `json:"id"`
		Type         string  `json:"type"`
		Role         string  `json:"role"`
		Model        string  `json:"model"`
		Content      []text  `json:"content"`
		StopReason   string  `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
		Usage        usage   `json:"usage"`
	}{
		ID:         "msg_fake" + strconv.FormatUint(seq, 10),
		Type:       "message",
		Role:       "assistant",
		Model:      req.Model,
		Content:    []text{{Type: "text", Text: Content}},
		StopReason: "end_turn",
		Usage:      usage{InputTokens: PromptTokens(len(body)), OutputTokens: CompletionTokens},
	}
	ctx.Response.Header.Set("request-id", resp.ID)
	writeJSON(ctx, fasthttp.StatusOK, resp)
}

// writeError answers with an OpenAI-shaped error. An empty code is null.
func writeError(ctx *fasthttp.RequestCtx, status int, message, typ, code string) {
	type body struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	e := body{Message: message, Type: typ}
	if code != "" {
		e.Code = &code
	}
	writeJSON(ctx, status, struct {
		Error body `json:"error"`
	}{e})
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the package's own types reach here, and they all marshal.
		panic("upstreamtest: marshalling response: " + err.Error())
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
