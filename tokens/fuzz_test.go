package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
)

// maxFuzzInput caps fuzz inputs: larger ones only slow the fuzzer down.
const maxFuzzInput = 64 << 10

// fastjsonDepth is a little under fastjson.MaxDepth: deeper documents are
// valid JSON that fastjson refuses, which Parse documents.
const fastjsonDepth = 290

// jsonDepth returns the deepest bracket nesting in b outside strings.
func jsonDepth(b []byte) int {
	d, deepest := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			d++
			deepest = max(deepest, d)
		case '}', ']':
			d--
		case '"':
			if e := closingQuote(b, i); e > 0 {
				i = e
			}
		}
	}
	return deepest
}

var requestSeeds = []string{
	`{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there"}],"max_tokens":100,"n":2}`,
	`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"What is it?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}}]}]}`,
	`{"model":"gpt-4o","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"ok"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}`,
	`{"model":"gpt-3.5-turbo-instruct","prompt":["Say this is a test",[1,2,3]],"max_tokens":7}`,
	`{"model":"text-embedding-3-small","input":[[101,2023],[2003,102]]}`,
	`{"model":"gpt-4.1","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call_output","call_id":"c1","output":"found"}],"max_output_tokens":500}`,
	`{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"Be kind."}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"42"}]}]}]}`,
	`{"max_tokens":"ten"}`,
	`{"n":-1}`,
	`{"stream":"yes"}`,
	`{"mod\u0065l":"x","model":5,"model":"y"}`,
	`[1]`,
	``,
	`{"messages":[{"content":5}]}`,
}

// knownFieldError reports whether m, a request body decoded by
// encoding/json, has a field that Parse reads with the wrong type.
func knownFieldError(m map[string]any) bool {
	isInt := func(v any, least int64) bool {
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		return err == nil && i >= least
	}
	items := func(a []any) bool {
		for _, el := range a {
			if o, ok := el.(map[string]any); ok {
				switch o["content"].(type) {
				case nil, string, []any:
				default:
					return true
				}
			}
		}
		return false
	}
	for k, v := range m {
		if v == nil {
			continue
		}
		bad := false
		switch k {
		case "model":
			_, ok := v.(string)
			bad = !ok
		case "stream":
			_, ok := v.(bool)
			bad = !ok
		case "stream_options":
			o, ok := v.(map[string]any)
			if !ok {
				bad = true
				break
			}
			switch o["include_usage"].(type) {
			case nil, bool:
			default:
				bad = true
			}
		case "max_completion_tokens", "max_tokens", "max_output_tokens":
			bad = !isInt(v, 0)
		case "n":
			bad = !isInt(v, 1)
		case "messages":
			a, ok := v.([]any)
			if !ok {
				bad = true
				break
			}
			for _, el := range a {
				if _, ok := el.(map[string]any); !ok {
					bad = true
				}
			}
			bad = bad || items(a)
		case "input", "prompt", "instructions":
			switch x := v.(type) {
			case string:
			case []any:
				bad = items(x)
			default:
				bad = true
			}
		case "system":
			switch v.(type) {
			case string, []any:
			default:
				bad = true
			}
		}
		if bad {
			return true
		}
	}
	return false
}

func FuzzParse(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	byBytes := MustNew(f, Settings{MaxModels: 16})
	byTiktoken := MustNew(f, Settings{Method: Tiktoken, MaxModels: 16})
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxFuzzInput {
			return
		}
		r, err := byBytes.Parse(body)
		rt, errt := byTiktoken.Parse(body)
		if (err == nil) != (errt == nil) || err != nil && err.Error() != errt.Error() {
			t.Fatalf("Parse(%q): bytes error %v, tiktoken error %v, want the same", body, err, errt)
		}
		if err != nil {
			var fe *FieldError
			if err.Error() == "" || !errors.Is(err, ErrInvalidJSON) && !errors.As(err, &fe) {
				t.Fatalf("Parse(%q) error %q (%T): want a message, and ErrInvalidJSON or *FieldError", body, err, err)
			}
		} else {
			for _, r := range []Request{r, rt} {
				if r.Prompt < 0 || r.RawPrompt < 0 || r.MaxOutput < 0 || r.RawPrompt > 0 && r.Prompt < 1 {
					t.Fatalf("Parse(%q) = %+v: negative or zero estimate", body, r)
				}
			}
		}
		if !json.Valid(body) || jsonDepth(body) > fastjsonDepth {
			return
		}
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		var m map[string]any
		if d.Decode(&m) != nil || m == nil {
			if err == nil {
				t.Fatalf("Parse(%q) accepted a JSON value that is not an object", body)
			}
			return
		}
		if bad := knownFieldError(m); bad != (err != nil) {
			t.Fatalf("Parse(%q) error = %v, want an error: %v", body, err, bad)
		}
	})
}

var responseSeeds = []string{
	chatResponse,
	completionsResponse,
	responsesResponse,
	anthropicResponse,
	`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`,
	`{"usage":null}`,
	`{"a":"\"usage\":{\"prompt_tokens\":1}"}`,
	`{"content":[{"input":{"usage":{"input_tokens":5}}}]}`,
	`{"usag\u0065":{"prompt_tokens":6},"usage":{"input_tokens":1,"input_tokens":2}}`,
	`{"usage":{"prompt_tokens":1.5}}`,
}

// refUsage is ResponseUsage's oracle: it decodes the whole body.
func refUsage(body []byte) (Usage, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return Usage{}, false
	}
	raw, ok := top["usage"]
	if !ok {
		return Usage{}, false
	}
	var u map[string]json.RawMessage
	if json.Unmarshal(raw, &u) != nil || u == nil {
		return Usage{}, false
	}
	var n [5]int64
	var set [5]bool
	for i, k := range []string{"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cache_creation_input_tokens"} {
		v, ok := u[k]
		if !ok || string(v) == "null" {
			continue
		}
		x, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || x < 0 {
			return Usage{}, false
		}
		n[i], set[i] = x, true
	}
	if set == [5]bool{} {
		return Usage{}, false
	}
	got := Usage{Prompt: n[0], Completion: n[1]}
	if !set[0] {
		got.Prompt = satAdd(n[2], n[4])
	}
	if !set[1] {
		got.Completion = n[3]
	}
	return got, true
}

func FuzzResponseUsage(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxFuzzInput {
			return
		}
		got, ok := ResponseUsage(body)
		if !json.Valid(body) || jsonDepth(body) > fastjsonDepth {
			return
		}
		want, wantOK := refUsage(body)
		if got != want || ok != wantOK {
			t.Fatalf("ResponseUsage(%q) = %+v, %v, want %+v, %v", body, got, ok, want, wantOK)
		}
	})
}

func FuzzStream(f *testing.F) {
	for _, tt := range streamCases() {
		all := strings.Join(tt.events, "")
		f.Add([]byte(all), uint16(len(all)/2))
		f.Add([]byte(lineEnds(all, "\r\n")), uint16(len(all)/3))
		f.Add([]byte(lineEnds(all, "\r")), uint16(7))
	}
	f.Add([]byte("data: x\r\n\r"+"data: "+`{"choices":[],"usage":{"prompt_tokens":3}}`+"\r\n\n"+"data: [DONE]\n\r\n"), uint16(11))
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		if len(in) > maxFuzzInput {
			return
		}
		i := int(split) % (len(in) + 1)
		var whole, parts, observed Stream
		want := runFilter(&whole, in)
		got := runFilter(&parts, in[:i], in[i:])
		if !bytes.Equal(got, want) {
			t.Fatalf("Filter(%q) split at %d = %q, unsplit %q", in, i, got, want)
		}
		if len(want) > len(in) {
			t.Fatalf("Filter(%q) = %q grew the stream", in, want)
		}
		observed.Reset(false)
		observed.Observe(in[:i])
		observed.Observe(in[i:])
		uw, okw := whole.Usage()
		for _, s := range []*Stream{&parts, &observed} {
			if u, ok := s.Usage(); u != uw || ok != okw || s.Deltas() != whole.Deltas() {
				t.Fatalf("stream %q split at %d: Usage %+v %v Deltas %d, unsplit %+v %v %d", in, i, u, ok, s.Deltas(), uw, okw, whole.Deltas())
			}
		}
		observed.Reset(false)
		if out := observed.Flush(observed.Filter(nil, in)); !bytes.Equal(out, in) {
			t.Fatalf("Filter without strip changed %q to %q", in, out)
		}
	})
}

func FuzzForceIncludeUsage(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"stream_options":null}`,
		`{"stream_options":{"include_usage":false,"x":1},"stream":true}`,
		`{"stream_options":{}}`,
		` { } `,
		`{"stream\u005foptions":{"include\u005fusage":null}}`,
		`{"stream_options":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxFuzzInput {
			return
		}
		out, err := ForceIncludeUsage(nil, body)
		if err != nil {
			var fe *FieldError
			if err.Error() == "" || !errors.Is(err, ErrInvalidJSON) && !errors.As(err, &fe) {
				t.Fatalf("ForceIncludeUsage(%q) error %q (%T): want a message, and ErrInvalidJSON or *FieldError", body, err, err)
			}
		}
		if !json.Valid(body) || jsonDepth(body) > fastjsonDepth {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil || m == nil {
			if err == nil {
				t.Fatalf("ForceIncludeUsage(%q) accepted a value that is not an object", body)
			}
			return
		}
		if err != nil {
			if !bytes.Contains(body, []byte("stream")) {
				t.Fatalf("ForceIncludeUsage(%q) = %v for an object without stream_options", body, err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("ForceIncludeUsage(%q) = %q, not valid JSON", body, out)
		}
		v, perr := fastjson.ParseBytes(out)
		if perr != nil {
			t.Fatalf("fastjson cannot parse ForceIncludeUsage(%q) = %q: %v", body, out, perr)
		}
		v.GetObject().Visit(func(k []byte, v *fastjson.Value) {
			if string(k) == "stream_options" && !v.GetBool("include_usage") {
				t.Fatalf("ForceIncludeUsage(%q) = %q: a stream_options without include_usage true", body, out)
			}
		})
		checkForced(t, body, out)
	})
}
