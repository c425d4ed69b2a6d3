// Package tokens estimates how many tokens a request to an OpenAI-compatible
// or Anthropic API will consume before Sluice sends it, and reads back what
// the provider reported afterwards, so that tokens-per-minute quotas can be
// charged up front and corrected once the real count is known.
//
// Estimates err on the side of too many: the default [Bytes] method counts
// one token per three bytes of text (FIELD-NOTES 3.4: four bytes per token
// under-counts JSON, code and base64 by a third or more), and a per-model
// correction learnt from the usage providers report ([Estimator.Observe])
// pulls it towards the truth. Nothing here allocates per request on the
// Bytes path in the steady state.
package tokens

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/tiktoken-go/tokenizer"
	"github.com/valyala/fastjson"
)

// Method selects how prompt tokens are estimated.
type Method int

const (
	// Bytes estimates text bytes / 3, corrected per model from observed
	// usage. It is the default: cheap, allocation-free and conservative.
	Bytes Method = iota
	// Tiktoken counts text with OpenAI's tokenizers (o200k by default,
	// cl100k for the gpt-4, gpt-3.5 and text-embedding families) and adds
	// the per-message overhead of the chat format. The same per-model
	// correction applies, which matters for non-OpenAI models.
	Tiktoken
)

// ParseMethod parses a method name as written in configuration: "bytes" or
// "tiktoken".
func ParseMethod(s string) (Method, error) {
	switch s {
	case "bytes":
		return Bytes, nil
	case "tiktoken":
		return Tiktoken, nil
	}
	return 0, fmt.Errorf("tokens: unknown method %q, want bytes or tiktoken", s)
}

// String returns the name [ParseMethod] accepts for m.
func (m Method) String() string {
	switch m {
	case Bytes:
		return "bytes"
	case Tiktoken:
		return "tiktoken"
	}
	return "Method(" + strconv.Itoa(int(m)) + ")"
}

// Settings configures an [Estimator].
type Settings struct {
	// Method selects the estimator; the zero value is [Bytes].
	Method Method
	// MaxModels bounds how many distinct model names keep their own
	// correction; 0 means 256. Names seen once the bound is reached, and
	// names longer than 256 bytes, share one entry named "other", so that
	// clients cannot grow the table without bound.
	MaxModels int
	// Models are entered in the table at start, on top of MaxModels, so
	// that names the caller looks up (a model with a quota of its own)
	// always keep their entry, however many other names clients send.
	Models []string
}

const (
	defaultMaxModels = 256
	maxModelName     = 256
	// otherModel names the entry shared by models beyond Settings.MaxModels.
	otherModel = "other"

	// bytesPerToken is the Bytes method's divisor. Three bytes per token
	// over-counts prose (4.5–5.2 bytes per token with o200k) and roughly
	// matches code, while four under-counts JSON (2.7) and base64 (1.7):
	// FIELD-NOTES 3.4. An over-estimate only delays a request; an
	// under-estimate earns a 429 from upstream.
	bytesPerToken = 3

	// perMessage and priming follow OpenAI's cookbook accounting for chat
	// formats ("How to count tokens with tiktoken"): each message is wrapped
	// in 3 tokens, a name costs 1 more, and every reply is primed with 3.
	perMessage = 3
	perName    = 1
	priming    = 3

	// imageTokens is what a high-detail 1024×1024 image costs on OpenAI
	// (85 base + 4 tiles × 170); low detail is the 85 base alone. Sizes are
	// unknown without decoding the image, and the correction absorbs the
	// difference for a model that sees many images.
	imageTokens    = 765
	imageLowTokens = 85

	// tiktokenBudget caps the text counted exactly per request; beyond it
	// the count is extrapolated from what was counted (LiteLLM samples
	// large inputs likewise), because tokenizing runs at ~10 MB/s.
	tiktokenBudget = 256 << 10

	// Correction bounds and smoothing. The bounds keep one absurd usage
	// report (a provider counting cached input differently, say) from
	// turning an estimate into nonsense.
	minFactor = 0.2
	maxFactor = 5
	ewmaAlpha = 0.2
)

// ErrInvalidJSON is returned (wrapped, with fastjson's message saying where)
// by [Estimator.Parse] when the body is empty or not valid JSON, and by
// [ForceIncludeUsage] when it cannot find its way through the body.
var ErrInvalidJSON = errors.New("tokens: request body is not valid JSON")

// FieldError reports a field of a request body that Sluice reads but that
// has the wrong type or value, such as "max_tokens": "ten". Match it with
// errors.As.
type FieldError struct {
	// Field is the field's path, such as "max_tokens" or
	// "messages[2].content"; empty when the body itself is not an object.
	Field string
	// Reason says what is wrong, such as "must be a non-negative integer,
	// got string".
	Reason string
}

// Error returns "tokens: <field> <reason>".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return "tokens: request body " + e.Reason
	}
	return "tokens: " + e.Field + " " + e.Reason
}

// Estimator parses request bodies and estimates their prompt tokens. It is
// safe for concurrent use.
type Estimator struct {
	method    Method
	maxModels int

	// models is replaced, never modified, so lookups need no lock: a model
	// is created once and then read on every request for it.
	models atomic.Pointer[map[string]*Model]
	mu     sync.Mutex // serialises writers of models

	states sync.Pool // *parseState

	o200k, cl100k lazyCodec
}

// lazyCodec builds a tokenizer on first use: loading a vocabulary takes
// tens of milliseconds and megabytes that a Bytes estimator never needs.
type lazyCodec struct {
	enc  tokenizer.Encoding
	once sync.Once
	c    tokenizer.Codec // nil when the encoding failed to load
}

func (l *lazyCodec) get() tokenizer.Codec {
	l.once.Do(func() {
		if c, err := tokenizer.Get(l.enc); err == nil {
			l.c = c
		}
	})
	return l.c
}

// New returns an Estimator for s.
func New(s Settings) (*Estimator, error) {
	if s.Method != Bytes && s.Method != Tiktoken {
		return nil, fmt.Errorf("tokens: Method %d is not a known method", int(s.Method))
	}
	if s.MaxModels < 0 {
		return nil, fmt.Errorf("tokens: MaxModels must not be negative, got %d", s.MaxModels)
	}
	e := &Estimator{method: s.Method, maxModels: s.MaxModels}
	if e.maxModels == 0 {
		e.maxModels = defaultMaxModels
	}
	e.models.Store(&map[string]*Model{})
	for _, name := range s.Models {
		if len(name) > maxModelName {
			return nil, fmt.Errorf("tokens: model name %.20q... is longer than %d bytes", name, maxModelName)
		}
		e.maxModels++
		e.internSlow(name)
	}
	e.o200k.enc = tokenizer.O200kBase
	e.cl100k.enc = tokenizer.Cl100kBase
	return e, nil
}

// Model is an interned model name with the correction learnt for it. The
// pointer is stable for the Estimator's lifetime, so callers may key their
// own per-model state on it. Its methods are safe for concurrent use.
type Model struct {
	// Name is the model as clients name it, or "other" for the entry shared
	// by names beyond [Settings.MaxModels].
	Name string

	factor atomic.Uint64 // math.Float64bits of actual/raw, in [minFactor, maxFactor]
	seen   atomic.Int64  // observations so far
}

func newModel(name string) *Model {
	m := &Model{Name: name}
	m.factor.Store(math.Float64bits(1))
	return m
}

// correction is the factor applied to raw estimates for m.
func (m *Model) correction() float64 {
	if m == nil {
		return 1
	}
	return math.Float64frombits(m.factor.Load())
}

// intern returns the Model for name without allocating when it exists.
func (e *Estimator) intern(name []byte) *Model {
	if len(name) > maxModelName {
		name = []byte(otherModel)
	}
	if m := (*e.models.Load())[string(name)]; m != nil {
		return m
	}
	return e.internSlow(string(name))
}

func (e *Estimator) internSlow(name string) *Model {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := *e.models.Load()
	if m := old[name]; m != nil {
		return m
	}
	if len(old) >= e.maxModels {
		name = otherModel
		if m := old[name]; m != nil {
			return m
		}
	}
	// Copy on write: the table is bounded, so copying stays cheap and the
	// lookups on the hot path stay lock-free.
	next := make(map[string]*Model, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	m := newModel(name)
	next[name] = m
	e.models.Store(&next)
	return m
}

// Observe teaches m's correction: actualPrompt is the prompt tokens the
// provider reported (usage.prompt_tokens, or input_tokens) for a request
// whose [Request].RawPrompt was rawPrompt. The correction is a moving
// average of actualPrompt/rawPrompt clamped to [0.2, 5]; its first few
// observations are averaged evenly (weight 1/n) so that it needs no long
// warm-up, later ones with weight 0.2. Non-positive counts are ignored, and
// so is a nil m.
func (e *Estimator) Observe(m *Model, rawPrompt, actualPrompt int64) {
	if m == nil || rawPrompt <= 0 || actualPrompt <= 0 {
		return
	}
	ratio := clamp(float64(actualPrompt) / float64(rawPrompt))
	alpha := max(1/float64(m.seen.Add(1)), ewmaAlpha)
	for {
		old := m.factor.Load()
		f := math.Float64frombits(old)
		if m.factor.CompareAndSwap(old, math.Float64bits(clamp(f+alpha*(ratio-f)))) {
			return
		}
	}
}

func clamp(f float64) float64 {
	return min(max(f, minFactor), maxFactor)
}

// Request is what Sluice needs from a request body, read in one parse.
type Request struct {
	// Model is the body's "model"; nil when there is none.
	Model *Model
	// Stream is "stream": true.
	Stream bool
	// IncludeUsage is "stream_options": {"include_usage": true}.
	IncludeUsage bool
	// MaxOutput is the first of max_completion_tokens, max_tokens and
	// max_output_tokens that is set (in that order, wherever they are in
	// the body), times n (1 when unset), saturating at math.MaxInt64; 0
	// when none is set, or when the first set is 0.
	MaxOutput int64
	// Prompt is the prompt estimate after the model's correction: >= 0, and
	// at least 1 when the body has any text.
	Prompt int64
	// RawPrompt is the estimate before the correction; pass it to
	// [Estimator.Observe] with the usage the provider reports.
	RawPrompt int64
}

// parseState is what one Parse needs, pooled so that the parser's value
// cache and the scratch buffer are reused.
type parseState struct {
	p       fastjson.Parser
	scratch []byte // marshalled JSON of tools and tool inputs
	c       counter
}

// Pooled state grown by a large request is dropped rather than kept for
// the next one: one 30 MiB body should not pin 30 MiB per pooled parser,
// and fastjson's value cache grows by about 80 bytes per JSON value, so a
// 256 KiB array of token ids already costs ~10 MB.
const (
	maxPooledBody    = 256 << 10
	maxPooledScratch = 1 << 20
)

// Parse reads body, a Chat Completions, Completions, Embeddings, Responses
// or Anthropic Messages request, once and estimates its prompt tokens. The
// text counted is: message contents (strings, or text parts; image parts
// count a fixed 765 tokens, 85 at detail "low"), roles and names, tool
// calls and tool inputs, "system", "instructions", "input" and "prompt"
// (strings, arrays of strings, message items, or token ids at one token
// each), and the raw JSON of "tools" and "functions"; each message adds 3
// tokens and any message 3 more.
//
// Errors: an empty or invalid body wraps [ErrInvalidJSON]; a body that is
// not an object, or a field Sluice reads that has the wrong type (such as
// "max_tokens": "ten", "n": -1, "stream": "yes"), is a [*FieldError]. A JSON
// null counts as absent everywhere. With duplicate keys the last one wins,
// as in encoding/json. Nesting deeper than fastjson's 300 levels is
// rejected as invalid.
//
// The Bytes method does not allocate in the steady state: only a model
// name seen for the first time does.
func (e *Estimator) Parse(body []byte) (Request, error) {
	st, _ := e.states.Get().(*parseState)
	if st == nil {
		st = new(parseState)
	}
	r, err := e.parse(st, body)
	if len(body) > maxPooledBody {
		st.p = fastjson.Parser{}
	}
	if cap(st.scratch) > maxPooledScratch {
		st.scratch = nil
	}
	st.c = counter{}
	e.states.Put(st)
	return r, err
}

// topFields are the top-level fields Parse reads; the last occurrence of
// each wins.
type topFields struct {
	model, stream, streamOptions                 *fastjson.Value
	maxCompletionTokens, maxTokens, maxOutTokens *fastjson.Value
	n                                            *fastjson.Value
	messages, input, prompt, system, instr       *fastjson.Value
	tools, functions                             *fastjson.Value
}

func (e *Estimator) parse(st *parseState, body []byte) (Request, error) {
	v, err := st.p.ParseBytes(body)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	root, err := v.Object()
	if err != nil {
		return Request{}, &FieldError{Reason: "must be a JSON object, got " + v.Type().String()}
	}
	var f topFields
	root.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "model":
			f.model = v
		case "stream":
			f.stream = v
		case "stream_options":
			f.streamOptions = v
		case "max_completion_tokens":
			f.maxCompletionTokens = v
		case "max_tokens":
			f.maxTokens = v
		case "max_output_tokens":
			f.maxOutTokens = v
		case "n":
			f.n = v
		case "messages":
			f.messages = v
		case "input":
			f.input = v
		case "prompt":
			f.prompt = v
		case "system":
			f.system = v
		case "instructions":
			f.instr = v
		case "tools":
			f.tools = v
		case "functions":
			f.functions = v
		}
	})

	var r Request
	var name []byte
	if isSet(f.model) {
		if f.model.Type() != fastjson.TypeString {
			return Request{}, fieldErr("model", "must be a string", f.model)
		}
		name, _ = f.model.StringBytes()
		r.Model = e.intern(name)
	}
	if r.Stream, err = boolField("stream", f.stream); err != nil {
		return Request{}, err
	}
	if isSet(f.streamOptions) {
		o, err := f.streamOptions.Object()
		if err != nil {
			return Request{}, fieldErr("stream_options", "must be an object", f.streamOptions)
		}
		if r.IncludeUsage, err = boolField("stream_options.include_usage", lastGet(o, "include_usage")); err != nil {
			return Request{}, err
		}
	}
	if r.MaxOutput, err = maxOutput(&f); err != nil {
		return Request{}, err
	}

	c := &st.c
	*c = counter{}
	if e.method == Tiktoken {
		c.codec = e.codecFor(name)
	}
	if isSet(f.messages) {
		msgs, err := f.messages.Array()
		if err != nil {
			return Request{}, fieldErr("messages", "must be an array", f.messages)
		}
		for i, m := range msgs {
			if m.Type() != fastjson.TypeObject {
				return Request{}, fieldErr(indexPath("messages", i), "must be an object", m)
			}
			if err := st.item(m, "messages", i); err != nil {
				return Request{}, err
			}
		}
	}
	for _, in := range [...]struct {
		name string
		v    *fastjson.Value
	}{{"input", f.input}, {"prompt", f.prompt}, {"instructions", f.instr}} {
		if err := st.input(in.name, in.v); err != nil {
			return Request{}, err
		}
	}
	if isSet(f.system) {
		switch f.system.Type() {
		case fastjson.TypeString:
			s, _ := f.system.StringBytes()
			c.text(s)
		case fastjson.TypeArray:
			a, _ := f.system.Array()
			st.parts(a)
		default:
			return Request{}, fieldErr("system", "must be a string or an array", f.system)
		}
	}
	st.rawJSON(f.tools)
	st.rawJSON(f.functions)

	r.RawPrompt = c.tokens()
	r.Prompt = int64(math.Round(float64(r.RawPrompt) * r.Model.correction()))
	if r.RawPrompt > 0 && r.Prompt < 1 {
		r.Prompt = 1
	}
	return r, nil
}

// maxOutput is the first output limit set, times n.
func maxOutput(f *topFields) (int64, error) {
	var limit int64
	set := false
	for _, l := range [...]struct {
		name string
		v    *fastjson.Value
	}{
		{"max_completion_tokens", f.maxCompletionTokens},
		{"max_tokens", f.maxTokens},
		{"max_output_tokens", f.maxOutTokens},
	} {
		if !isSet(l.v) {
			continue
		}
		n, ok := nonNegative(l.v)
		if !ok {
			return 0, fieldErr(l.name, "must be a non-negative integer", l.v)
		}
		if !set {
			limit, set = n, true
		}
	}
	if isSet(f.n) {
		n, ok := nonNegative(f.n)
		if !ok || n < 1 {
			return 0, fieldErr("n", "must be a positive integer", f.n)
		}
		if limit > math.MaxInt64/n {
			return math.MaxInt64, nil
		}
		limit *= n
	}
	return limit, nil
}

// item counts a message: a Chat Completions or Anthropic message, or a
// Responses API input item (message, function call, function call output).
// field and i name it in errors.
func (st *parseState) item(v *fastjson.Value, field string, i int) error {
	var role, name, content, toolCalls, funcCall, args, output *fastjson.Value
	v.GetObject().Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "role":
			role = v
		case "name":
			name = v
		case "content":
			content = v
		case "tool_calls":
			toolCalls = v
		case "function_call":
			funcCall = v
		case "arguments":
			args = v
		case "output":
			output = v
		}
	})
	c := &st.c
	c.messages++
	st.str(role)
	if name != nil && name.Type() == fastjson.TypeString {
		st.str(name)
		c.fixed += perName
	}
	if isSet(content) {
		switch content.Type() {
		case fastjson.TypeString:
			st.str(content)
		case fastjson.TypeArray:
			a, _ := content.Array()
			st.parts(a)
		default:
			return fieldErr(indexPath(field, i)+".content", "must be a string, an array or null", content)
		}
	}
	st.rawJSON(toolCalls)
	st.rawJSON(funcCall)
	st.str(args)
	if output != nil && output.Type() == fastjson.TypeArray {
		a, _ := output.Array()
		st.parts(a)
	} else {
		st.str(output)
	}
	return nil
}

// input counts "input", "prompt" or "instructions": a string, or an array
// of strings, token ids, arrays of token ids or message items.
func (st *parseState) input(field string, v *fastjson.Value) error {
	if !isSet(v) {
		return nil
	}
	switch v.Type() {
	case fastjson.TypeString:
		st.str(v)
		return nil
	case fastjson.TypeArray:
	default:
		return fieldErr(field, "must be a string or an array", v)
	}
	a, _ := v.Array()
	for i, el := range a {
		switch el.Type() {
		case fastjson.TypeString:
			st.str(el)
		case fastjson.TypeNumber:
			st.c.fixed++ // a token id
		case fastjson.TypeArray:
			ids, _ := el.Array()
			for _, id := range ids {
				switch id.Type() {
				case fastjson.TypeNumber:
					st.c.fixed++
				case fastjson.TypeString:
					st.str(id)
				}
			}
		case fastjson.TypeObject:
			if err := st.item(el, field, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// parts counts content parts: text parts (Chat "text", Responses
// "input_text"/"output_text", Anthropic "text", "thinking", tool results
// and tool inputs) as text, images at a fixed cost. Audio, files and
// documents count nothing: their cost is unknowable here and is left to
// the correction.
func (st *parseState) parts(a []*fastjson.Value) {
	for _, p := range a {
		switch p.Type() {
		case fastjson.TypeString:
			st.str(p)
		case fastjson.TypeObject:
			st.part(p)
		}
	}
}

func (st *parseState) part(p *fastjson.Value) {
	switch string(p.GetStringBytes("type")) {
	case "image_url", "input_image", "image":
		detail := p.GetStringBytes("detail")
		if detail == nil {
			detail = p.GetStringBytes("image_url", "detail")
		}
		if string(detail) == "low" {
			st.c.fixed += imageLowTokens
		} else {
			st.c.fixed += imageTokens
		}
		return
	}
	st.str(p.Get("text"))
	st.str(p.Get("thinking"))
	st.str(p.Get("arguments"))
	st.rawJSON(p.Get("input")) // Anthropic tool_use
	if content := p.Get("content"); content != nil {
		if content.Type() == fastjson.TypeArray {
			a, _ := content.Array()
			st.parts(a) // Anthropic tool_result blocks
		} else {
			st.str(content)
		}
	}
}

// str counts v's text when v is a string.
func (st *parseState) str(v *fastjson.Value) {
	if v == nil || v.Type() != fastjson.TypeString {
		return
	}
	s, _ := v.StringBytes()
	st.c.text(s)
}

// rawJSON counts v's JSON text, as providers render tool definitions and
// arguments into the prompt much as written.
func (st *parseState) rawJSON(v *fastjson.Value) {
	if !isSet(v) {
		return
	}
	st.scratch = v.MarshalTo(st.scratch[:0])
	st.c.text(st.scratch)
}

// codecFor picks the tokenizer for a model name.
func (e *Estimator) codecFor(model []byte) tokenizer.Codec {
	if encodingFor(model) == tokenizer.Cl100kBase {
		return e.cl100k.get()
	}
	return e.o200k.get()
}

// encodingFor maps a model name to its encoding by prefix. tokenizer's own
// ForModel fails on names it does not list (text-embedding-3-*, gpt-5.1,
// dated snapshots of some), so Sluice keeps this small table and defaults
// to o200k, the encoding of every current OpenAI model.
func encodingFor(model []byte) tokenizer.Encoding {
	// Routers and fine-tunes decorate names: "openai/gpt-4o",
	// "ft:gpt-3.5-turbo:org::id".
	for i := len(model) - 1; i >= 0; i-- {
		if model[i] == '/' {
			model = model[i+1:]
			break
		}
	}
	if len(model) > 3 && string(model[:3]) == "ft:" {
		model = model[3:]
	}
	for _, p := range [...]struct {
		prefix string
		enc    tokenizer.Encoding
	}{
		{"gpt-4o", tokenizer.O200kBase},
		{"chatgpt-4o", tokenizer.O200kBase},
		{"gpt-4.1", tokenizer.O200kBase},
		{"gpt-4.5", tokenizer.O200kBase},
		{"gpt-4", tokenizer.Cl100kBase},
		{"gpt-3.5", tokenizer.Cl100kBase},
		{"gpt-35", tokenizer.Cl100kBase},
		{"text-embedding-ada-002", tokenizer.Cl100kBase},
		{"text-embedding-3", tokenizer.Cl100kBase},
	} {
		if len(model) >= len(p.prefix) && string(model[:len(p.prefix)]) == p.prefix {
			return p.enc
		}
	}
	return tokenizer.O200kBase
}

// counter adds up one request's tokens.
type counter struct {
	codec        tokenizer.Codec // nil for the Bytes method
	textBytes    int64
	fixed        int64 // tokens that are not text: images, token ids, names
	messages     int64
	countedBytes int64 // Tiktoken: text bytes counted exactly
	counted      int64 // Tiktoken: their tokens
}

func (c *counter) text(b []byte) {
	c.textBytes += int64(len(b))
	if c.codec == nil || len(b) == 0 {
		return
	}
	room := tiktokenBudget - c.countedBytes
	if room <= 0 {
		return
	}
	if int64(len(b)) > room {
		b = b[:cutRune(b, int(room))]
	}
	n, err := c.codec.Count(string(b))
	if err != nil {
		return // the bytes stay uncounted and are extrapolated
	}
	c.countedBytes += int64(len(b))
	c.counted += int64(n)
}

// cutRune returns n moved back to the start of the UTF-8 sequence it falls
// in, so that a prefix of b is not cut mid-character.
func cutRune(b []byte, n int) int {
	for i := 0; i < 3 && n > 0 && b[n]&0xC0 == 0x80; i++ {
		n--
	}
	return n
}

func (c *counter) tokens() int64 {
	var t int64
	if c.codec == nil || c.countedBytes == 0 {
		t = (c.textBytes + bytesPerToken - 1) / bytesPerToken
	} else {
		t = c.counted
		if skipped := c.textBytes - c.countedBytes; skipped > 0 {
			t += (skipped*c.counted + c.countedBytes - 1) / c.countedBytes
		}
	}
	if c.messages > 0 {
		t += c.messages*perMessage + priming
	}
	return t + c.fixed
}

// isSet reports whether v is present and not null.
func isSet(v *fastjson.Value) bool {
	return v != nil && v.Type() != fastjson.TypeNull
}

// lastGet is o.Get with encoding/json's rule for duplicate keys.
func lastGet(o *fastjson.Object, key string) *fastjson.Value {
	var last *fastjson.Value
	o.Visit(func(k []byte, v *fastjson.Value) {
		if string(k) == key {
			last = v
		}
	})
	return last
}

func boolField(field string, v *fastjson.Value) (bool, error) {
	if !isSet(v) {
		return false, nil
	}
	b, err := v.Bool()
	if err != nil {
		return false, fieldErr(field, "must be a boolean", v)
	}
	return b, nil
}

// nonNegative returns v as an integer >= 0; JSON has no integer type, so
// "5.0" and "1e3" are refused like strings, as the OpenAI API refuses them.
func nonNegative(v *fastjson.Value) (int64, bool) {
	if v.Type() != fastjson.TypeNumber {
		return 0, false
	}
	n, err := v.Int64()
	return n, err == nil && n >= 0
}

// fieldErr builds a FieldError that says what was found instead.
func fieldErr(field, want string, got *fastjson.Value) *FieldError {
	desc := got.Type().String()
	if desc == "number" {
		if s := got.String(); len(s) <= 32 {
			desc = s
		}
	}
	return &FieldError{Field: field, Reason: want + ", got " + desc}
}

func indexPath(field string, i int) string {
	return field + "[" + strconv.Itoa(i) + "]"
}
