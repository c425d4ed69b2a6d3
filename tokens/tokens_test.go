package tokens

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// MustNew returns an Estimator for s or fails tb.
func MustNew(tb testing.TB, s Settings) *Estimator {
	tb.Helper()
	e, err := New(s)
	if err != nil {
		tb.Fatalf("New(%+v): %v", s, err)
	}
	return e
}

// bytesEstimate is the Bytes method's raw estimate for textBytes of text,
// fixed other tokens and messages messages.
func bytesEstimate(textBytes, fixed, messages int64) int64 {
	t := (textBytes+2)/3 + fixed
	if messages > 0 {
		t += 3*messages + 3
	}
	return t
}

func TestParseMethod(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    Method
		wantErr string
	}{
		{in: "bytes", want: Bytes},
		{in: "tiktoken", want: Tiktoken},
		{in: "", wantErr: `tokens: unknown method "", want bytes or tiktoken`},
		{in: "chars", wantErr: `tokens: unknown method "chars", want bytes or tiktoken`},
		{in: "Bytes", wantErr: `tokens: unknown method "Bytes", want bytes or tiktoken`},
	} {
		got, err := ParseMethod(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseMethod(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseMethod(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, s, tt.in)
		}
	}
	if got, want := Method(7).String(), "Method(7)"; got != want {
		t.Errorf("Method(7).String() = %q, want %q", got, want)
	}
}

func TestNewRejects(t *testing.T) {
	for _, tt := range []struct {
		s    Settings
		want string
	}{
		{Settings{Method: 2}, "tokens: Method 2 is not a known method"},
		{Settings{Method: -1}, "tokens: Method -1 is not a known method"},
		{Settings{MaxModels: -1}, "tokens: MaxModels must not be negative, got -1"},
	} {
		if _, err := New(tt.s); err == nil || err.Error() != tt.want {
			t.Errorf("New(%+v) error = %v, want %q", tt.s, err, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	const tools = `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`
	const toolCalls = `[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]`
	type want struct {
		model        string // "" for nil
		stream       bool
		includeUsage bool
		maxOutput    int64
		raw          int64
	}
	for _, tt := range []struct {
		name string
		body string
		want want
	}{
		{
			name: "chat",
			body: `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there"}]}`,
			want: want{model: "gpt-4o", raw: bytesEstimate(6+14+4+11, 0, 2)},
		},
		{
			name: "chat with name, max_tokens and n",
			body: `{"model":"gpt-4o-mini","max_tokens":100,"n":3,"messages":[{"role":"user","name":"ann","content":"Hi"}]}`,
			want: want{model: "gpt-4o-mini", maxOutput: 300, raw: bytesEstimate(4+3+2, 1, 1)},
		},
		{
			name: "max_completion_tokens wins over max_tokens wherever it is",
			body: `{"max_tokens":50,"messages":[],"max_completion_tokens":20,"n":2}`,
			want: want{maxOutput: 40},
		},
		{
			name: "the first limit set wins even when 0",
			body: `{"max_tokens":50,"max_completion_tokens":0}`,
			want: want{maxOutput: 0},
		},
		{
			name: "max_output_tokens",
			body: `{"model":"gpt-5","input":"Hi","max_output_tokens":64}`,
			want: want{model: "gpt-5", maxOutput: 64, raw: 1},
		},
		{
			name: "max_tokens times n saturates",
			body: `{"max_tokens":9223372036854775807,"n":2}`,
			want: want{maxOutput: math.MaxInt64},
		},
		{
			name: "stream with include_usage",
			body: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"abc"}]}`,
			want: want{model: "gpt-4o", stream: true, includeUsage: true, raw: bytesEstimate(4+3, 0, 1)},
		},
		{
			name: "stream without include_usage",
			body: `{"stream":true,"stream_options":{"include_usage":false}}`,
			want: want{stream: true},
		},
		{
			name: "nulls are absent",
			body: `{"model":null,"stream":null,"stream_options":null,"max_tokens":null,"n":null,"messages":null,"input":null,"prompt":null,"system":null,"instructions":null,"tools":null}`,
		},
		{
			name: "include_usage null",
			body: `{"stream":true,"stream_options":{"include_usage":null}}`,
			want: want{stream: true},
		},
		{
			name: "duplicate keys: the last wins",
			body: `{"model":"a","model":"b","max_tokens":"ten","max_tokens":10,"stream":true,"stream":false}`,
			want: want{model: "b", maxOutput: 10},
		},
		{
			name: "escaped key and value",
			body: `{"mod\u0065l":"gpt\u002d4o","messages":[{"role":"user","content":"a\nb"}]}`,
			want: want{model: "gpt-4o", raw: bytesEstimate(4+3, 0, 1)},
		},
		{
			name: "content parts with images",
			body: `{"messages":[{"role":"user","content":[{"type":"text","text":"What is it?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]}]}`,
			want: want{raw: bytesEstimate(4+11, 765+85, 1)},
		},
		{
			name: "assistant tool calls and tools",
			body: `{"messages":[{"role":"assistant","content":null,"tool_calls":` + toolCalls + `},{"role":"tool","tool_call_id":"call_1","content":"rain"}],"tools":` + tools + `}`,
			want: want{raw: bytesEstimate(9+int64(len(toolCalls))+4+4+int64(len(tools)), 0, 2)},
		},
		{
			name: "legacy functions",
			body: `{"functions":[{"name":"f"}]}`,
			want: want{raw: bytesEstimate(int64(len(`[{"name":"f"}]`)), 0, 0)},
		},
		{
			name: "completions prompt string",
			body: `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7}`,
			want: want{model: "gpt-3.5-turbo-instruct", maxOutput: 7, raw: bytesEstimate(18, 0, 0)},
		},
		{
			name: "completions prompt array",
			body: `{"prompt":["abc","defg"]}`,
			want: want{raw: bytesEstimate(7, 0, 0)},
		},
		{
			name: "completions prompt token ids",
			body: `{"prompt":[[1,2,3],[4]]}`,
			want: want{raw: 4},
		},
		{
			name: "embeddings string",
			body: `{"model":"text-embedding-3-small","input":"The food was delicious and the waiter..."}`,
			want: want{model: "text-embedding-3-small", raw: bytesEstimate(40, 0, 0)},
		},
		{
			name: "embeddings array of strings",
			body: `{"model":"text-embedding-3-small","input":["one","two","three"]}`,
			want: want{model: "text-embedding-3-small", raw: bytesEstimate(11, 0, 0)},
		},
		{
			name: "embeddings token ids",
			body: `{"input":[101,2023,2003,102]}`,
			want: want{raw: 4},
		},
		{
			name: "embeddings arrays of token ids",
			body: `{"input":[[101,2023],[2003,102,7]]}`,
			want: want{raw: 5},
		},
		{
			name: "responses API",
			body: `{"model":"gpt-4.1","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Describe this"},{"type":"input_image","image_url":"data:image/jpeg;base64,AAAA","detail":"low"}]},{"type":"function_call","call_id":"c1","name":"lookup","arguments":"{\"q\":1}"},{"type":"function_call_output","call_id":"c1","output":"found"}],"max_output_tokens":500}`,
			want: want{model: "gpt-4.1", maxOutput: 500, raw: bytesEstimate(9+4+13+6+7+5, 85+1, 3)},
		},
		{
			name: "anthropic messages",
			body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"Be kind."}],"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]},{"role":"assistant","content":[{"type":"thinking","thinking":"hmm"},{"type":"tool_use","id":"t1","name":"get","input":{"q":"x"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"42"}]}]}]}`,
			want: want{model: "claude-sonnet-4-5", maxOutput: 1024, raw: bytesEstimate(8+4+2+9+3+9+4+2, 765, 3)},
		},
		{
			name: "anthropic system string",
			body: `{"system":"Be kind.","messages":[{"role":"user","content":"Hi"}]}`,
			want: want{raw: bytesEstimate(8+4+2, 0, 1)},
		},
		{
			name: "unknown fields and part shapes are ignored",
			body: `{"temperature":0.2,"user":5,"messages":[{"role":"user","content":[1,true,{"type":"input_audio","input_audio":{"data":"AAAA"}},"loose"]}]}`,
			want: want{raw: bytesEstimate(4+5, 0, 1)},
		},
		{
			name: "empty object",
			body: ` {} `,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := MustNew(t, Settings{})
			got, err := e.Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse(%s): %v", tt.body, err)
			}
			var model string
			if got.Model != nil {
				model = got.Model.Name
			}
			g := want{model: model, stream: got.Stream, includeUsage: got.IncludeUsage, maxOutput: got.MaxOutput, raw: got.RawPrompt}
			if g != tt.want {
				t.Errorf("Parse(%s)\n got %+v\nwant %+v", tt.body, g, tt.want)
			}
			if got.Prompt != got.RawPrompt {
				t.Errorf("Prompt = %d, want RawPrompt %d before any correction", got.Prompt, got.RawPrompt)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		body      string
		want      string
		field     string // "" when the error wraps ErrInvalidJSON
		wantField bool
	}{
		{body: ``, want: "tokens: request body is not valid JSON: cannot parse JSON: cannot parse empty string; unparsed tail: \"\""},
		{body: " \n", want: "tokens: request body is not valid JSON: cannot parse JSON: cannot parse empty string; unparsed tail: \"\""},
		{body: `{"model":`, want: "tokens: request body is not valid JSON: cannot parse JSON: cannot parse object: cannot parse object value: cannot parse empty string; unparsed tail: \"\""},
		{body: `{"a":1} x`, want: `tokens: request body is not valid JSON: unexpected tail: "x"`},
		{body: `[1,2]`, wantField: true, want: "tokens: request body must be a JSON object, got array"},
		{body: `"hi"`, wantField: true, want: "tokens: request body must be a JSON object, got string"},
		{body: `{"model":5}`, wantField: true, field: "model", want: "tokens: model must be a string, got 5"},
		{body: `{"stream":"yes"}`, wantField: true, field: "stream", want: "tokens: stream must be a boolean, got string"},
		{body: `{"stream_options":true}`, wantField: true, field: "stream_options", want: "tokens: stream_options must be an object, got true"},
		{body: `{"stream_options":{"include_usage":1}}`, wantField: true, field: "stream_options.include_usage", want: "tokens: stream_options.include_usage must be a boolean, got 1"},
		{body: `{"max_tokens":"ten"}`, wantField: true, field: "max_tokens", want: "tokens: max_tokens must be a non-negative integer, got string"},
		{body: `{"max_tokens":-1}`, wantField: true, field: "max_tokens", want: "tokens: max_tokens must be a non-negative integer, got -1"},
		{body: `{"max_completion_tokens":1.5}`, wantField: true, field: "max_completion_tokens", want: "tokens: max_completion_tokens must be a non-negative integer, got 1.5"},
		{body: `{"max_output_tokens":1e3}`, wantField: true, field: "max_output_tokens", want: "tokens: max_output_tokens must be a non-negative integer, got 1e3"},
		{body: `{"max_tokens":99999999999999999999}`, wantField: true, field: "max_tokens", want: "tokens: max_tokens must be a non-negative integer, got 99999999999999999999"},
		{body: `{"n":-1}`, wantField: true, field: "n", want: "tokens: n must be a positive integer, got -1"},
		{body: `{"n":0}`, wantField: true, field: "n", want: "tokens: n must be a positive integer, got 0"},
		{body: `{"n":[]}`, wantField: true, field: "n", want: "tokens: n must be a positive integer, got array"},
		{body: `{"messages":{}}`, wantField: true, field: "messages", want: "tokens: messages must be an array, got object"},
		{body: `{"messages":[{"role":"user","content":"a"},"b"]}`, wantField: true, field: "messages[1]", want: "tokens: messages[1] must be an object, got string"},
		{body: `{"messages":[{"role":"user","content":5}]}`, wantField: true, field: "messages[0].content", want: "tokens: messages[0].content must be a string, an array or null, got 5"},
		{body: `{"input":[{"role":"user","content":{}}]}`, wantField: true, field: "input[0].content", want: "tokens: input[0].content must be a string, an array or null, got object"},
		{body: `{"input":5}`, wantField: true, field: "input", want: "tokens: input must be a string or an array, got 5"},
		{body: `{"prompt":false}`, wantField: true, field: "prompt", want: "tokens: prompt must be a string or an array, got false"},
		{body: `{"system":{}}`, wantField: true, field: "system", want: "tokens: system must be a string or an array, got object"},
		{body: `{"instructions":1}`, wantField: true, field: "instructions", want: "tokens: instructions must be a string or an array, got 1"},
	} {
		for _, m := range []Method{Bytes, Tiktoken} {
			e := MustNew(t, Settings{Method: m})
			_, err := e.Parse([]byte(tt.body))
			if err == nil {
				t.Errorf("%v: Parse(%q) = nil error, want %q", m, tt.body, tt.want)
				continue
			}
			if err.Error() != tt.want {
				t.Errorf("%v: Parse(%q) error = %q, want %q", m, tt.body, err, tt.want)
			}
			var fe *FieldError
			if gotField := errors.As(err, &fe); gotField != tt.wantField {
				t.Errorf("%v: Parse(%q): errors.As(*FieldError) = %v, want %v", m, tt.body, gotField, tt.wantField)
			} else if gotField && fe.Field != tt.field {
				t.Errorf("%v: Parse(%q): Field = %q, want %q", m, tt.body, fe.Field, tt.field)
			}
			if gotJSON := errors.Is(err, ErrInvalidJSON); gotJSON == tt.wantField {
				t.Errorf("%v: Parse(%q): errors.Is(ErrInvalidJSON) = %v, want %v", m, tt.body, gotJSON, !tt.wantField)
			}
		}
	}
}

func TestParseTiktoken(t *testing.T) {
	e := MustNew(t, Settings{Method: Tiktoken})
	for _, tt := range []struct {
		name string
		body string
		want int64
	}{
		// "Hello world" is 2 tokens in both encodings, "user" 1; plus 3 for
		// the message and 3 for priming: OpenAI's cookbook gives 9 for it.
		{"o200k", `{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}]}`, 2 + 1 + 3 + 3},
		{"cl100k", `{"model":"gpt-4","messages":[{"role":"user","content":"Hello world"}]}`, 2 + 1 + 3 + 3},
		{"no model", `{"input":"Hello world"}`, 2},
		{"token ids and image", `{"input":[1,2,3],"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x","detail":"low"}}]}]}`, 3 + 85 + 1 + 3 + 3},
	} {
		got, err := e.Parse([]byte(tt.body))
		if err != nil {
			t.Fatalf("%s: Parse: %v", tt.name, err)
		}
		if got.RawPrompt != tt.want {
			t.Errorf("%s: RawPrompt = %d, want %d", tt.name, got.RawPrompt, tt.want)
		}
	}
}

func TestParseTiktokenExtrapolates(t *testing.T) {
	e := MustNew(t, Settings{Method: Tiktoken})
	// "hello " is one token each time in o200k; 100 000 of them is 600 000
	// bytes, beyond the exact-count budget.
	text := strings.Repeat("hello ", 100_000)
	body := []byte(`{"model":"gpt-4o","input":"` + text + `"}`)
	got, err := e.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if got.RawPrompt < 99_000 || got.RawPrompt > 101_000 {
		t.Errorf("RawPrompt = %d, want about 100000", got.RawPrompt)
	}
}

func TestEncodingFor(t *testing.T) {
	for _, tt := range []struct {
		model string
		want  string
	}{
		{"gpt-4o", "o200k_base"},
		{"gpt-4o-mini-2024-07-18", "o200k_base"},
		{"chatgpt-4o-latest", "o200k_base"},
		{"gpt-4.1-nano", "o200k_base"},
		{"gpt-5.1", "o200k_base"},
		{"o1-mini", "o200k_base"},
		{"o3", "o200k_base"},
		{"o4-mini", "o200k_base"},
		{"gpt-4", "cl100k_base"},
		{"gpt-4-turbo", "cl100k_base"},
		{"gpt-3.5-turbo", "cl100k_base"},
		{"gpt-35-turbo", "cl100k_base"},
		{"text-embedding-ada-002", "cl100k_base"},
		{"text-embedding-3-large", "cl100k_base"},
		{"openai/gpt-4", "cl100k_base"},
		{"ft:gpt-3.5-turbo:acme::abc", "cl100k_base"},
		{"claude-sonnet-4-5", "o200k_base"},
		{"", "o200k_base"},
	} {
		if got := string(encodingFor([]byte(tt.model))); got != tt.want {
			t.Errorf("encodingFor(%q) = %s, want %s", tt.model, got, tt.want)
		}
	}
}

func TestModelInterning(t *testing.T) {
	e := MustNew(t, Settings{MaxModels: 2})
	model := func(name string) *Model {
		t.Helper()
		r, err := e.Parse([]byte(`{"model":"` + name + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		return r.Model
	}
	a, b := model("a"), model("b")
	if a2 := model("a"); a2 != a {
		t.Errorf("second Parse of model a gave a new *Model")
	}
	if a.Name != "a" || b.Name != "b" {
		t.Errorf("names = %q, %q, want a, b", a.Name, b.Name)
	}
	c, d := model("c"), model("d")
	if c != d || c.Name != "other" {
		t.Errorf("models beyond MaxModels = %q (%p), %q (%p), want one shared \"other\"", c.Name, c, d.Name, d)
	}
	if got := model(strings.Repeat("x", 300)); got != c {
		t.Errorf("a 300-byte model name got %q, want the shared \"other\"", got.Name)
	}
	if n := len(*e.models.Load()); n != 3 {
		t.Errorf("%d models interned, want 3", n)
	}
}

// TestRegisteredModelsKeepTheirEntry: names given in Settings.Models keep
// their own entry however many other names arrive first.
func TestRegisteredModelsKeepTheirEntry(t *testing.T) {
	e := MustNew(t, Settings{MaxModels: 1, Models: []string{"gpt-4o"}})
	for _, junk := range []string{"x", "y", "z"} {
		if _, err := e.Parse([]byte(`{"model":"` + junk + `"}`)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.Parse([]byte(`{"model":"gpt-4o"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Model == nil || r.Model.Name != "gpt-4o" {
		t.Errorf("registered model after a full table = %+v, want its own entry", r.Model)
	}
	if _, err := New(Settings{Models: []string{strings.Repeat("m", 300)}}); err == nil {
		t.Error("New with a 300-byte registered model name: want an error")
	}
}

func TestModelInterningConcurrent(t *testing.T) {
	e := MustNew(t, Settings{MaxModels: 8})
	var wg sync.WaitGroup
	got := make([][]*Model, 8)
	for g := range got {
		wg.Go(func() {
			for i := range 32 {
				r, err := e.Parse([]byte(`{"model":"m` + strconv.Itoa(i%16) + `"}`))
				if err != nil {
					t.Error(err)
					return
				}
				got[g] = append(got[g], r.Model)
			}
		})
	}
	wg.Wait()
	for g := range got {
		for i := range got[g] {
			if got[g][i] != got[0][i] {
				t.Fatalf("goroutine %d request %d got model %p, goroutine 0 got %p", g, i, got[g][i], got[0][i])
			}
		}
	}
	if n := len(*e.models.Load()); n != 9 {
		t.Errorf("%d models interned, want MaxModels+1 = 9", n)
	}
}

func TestObserve(t *testing.T) {
	e := MustNew(t, Settings{})
	body := []byte(`{"model":"m","input":"` + strings.Repeat("a", 300) + `"}`) // raw 100
	parse := func() Request {
		t.Helper()
		r, err := e.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := parse()
	if r.RawPrompt != 100 || r.Prompt != 100 {
		t.Fatalf("before observing: Prompt, RawPrompt = %d, %d, want 100, 100", r.Prompt, r.RawPrompt)
	}
	// Ignored observations.
	e.Observe(nil, 100, 150)
	e.Observe(r.Model, 0, 150)
	e.Observe(r.Model, 100, 0)
	e.Observe(r.Model, -5, 150)
	if got := parse().Prompt; got != 100 {
		t.Fatalf("after ignored observations Prompt = %d, want 100", got)
	}
	e.Observe(r.Model, 100, 150)
	if got := parse().Prompt; got != 150 {
		t.Errorf("after one observation of 1.5 Prompt = %d, want 150", got)
	}
	for range 50 {
		e.Observe(r.Model, 100, 50)
	}
	if got := parse(); got.Prompt != 50 || got.RawPrompt != 100 {
		t.Errorf("after 50 observations of 0.5: Prompt, RawPrompt = %d, %d, want 50, 100", got.Prompt, got.RawPrompt)
	}
	for range 50 {
		e.Observe(r.Model, 1, 1000)
	}
	if got := r.Model.correction(); got < maxFactor-1e-3 || got > maxFactor {
		t.Errorf("correction after huge ratios = %v, want about %v and no more", got, maxFactor)
	}
	for range 50 {
		e.Observe(r.Model, 1000, 1)
	}
	if got := r.Model.correction(); got < minFactor || got > minFactor+1e-3 {
		t.Errorf("correction after tiny ratios = %v, want about %v and no less", got, minFactor)
	}
	// Prompt stays at least 1 when there is text.
	small, err := e.Parse([]byte(`{"model":"m","input":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if small.RawPrompt != 1 || small.Prompt != 1 {
		t.Errorf("one byte at correction 0.2: Prompt, RawPrompt = %d, %d, want 1, 1", small.Prompt, small.RawPrompt)
	}
}

func TestObserveConcurrent(t *testing.T) {
	e := MustNew(t, Settings{})
	r, err := e.Parse([]byte(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				e.Observe(r.Model, 100, 200)
			}
		})
	}
	wg.Wait()
	if got := r.Model.correction(); math.Abs(got-2) > 1e-9 {
		t.Errorf("correction = %v, want 2", got)
	}
}

func TestFieldErrorMessage(t *testing.T) {
	for _, tt := range []struct {
		err  *FieldError
		want string
	}{
		{&FieldError{Field: "n", Reason: "must be a positive integer"}, "tokens: n must be a positive integer"},
		{&FieldError{Reason: "must be a JSON object"}, "tokens: request body must be a JSON object"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.err, got, tt.want)
		}
	}
	if got, want := ErrInvalidJSON.Error(), "tokens: request body is not valid JSON"; got != want {
		t.Errorf("ErrInvalidJSON = %q, want %q", got, want)
	}
}

func TestParseConcurrent(t *testing.T) {
	body := chatBody(t)
	for _, m := range []Method{Bytes, Tiktoken} {
		e := MustNew(t, Settings{Method: m})
		want, err := e.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					got, err := e.Parse(body)
					if err != nil || got != want {
						t.Errorf("%v: concurrent Parse = %+v, %v, want %+v", m, got, err, want)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}
