package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestForceIncludeUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		want string
	}{
		{
			name: "absent",
			body: `{"model":"gpt-4o","stream":true,"messages":[]}`,
			want: `{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[]}`,
		},
		{
			name: "absent, empty object",
			body: ` { } `,
			want: ` {"stream_options":{"include_usage":true} } `,
		},
		{
			name: "null",
			body: `{"stream":true,"stream_options":null}`,
			want: `{"stream":true,"stream_options":{"include_usage":true}}`,
		},
		{
			name: "object without include_usage",
			body: `{"stream":true,"stream_options":{"continuous_usage_stats":true},"n":1}`,
			want: `{"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"n":1}`,
		},
		{
			name: "empty object",
			body: `{"stream_options": { } }`,
			want: `{"stream_options": {"include_usage":true } }`,
		},
		{
			name: "include_usage false",
			body: `{"stream_options":{"include_obfuscation":false, "include_usage" : false}}`,
			want: `{"stream_options":{"include_obfuscation":false, "include_usage" : true}}`,
		},
		{
			name: "include_usage null",
			body: `{"stream_options":{"include_usage":null}}`,
			want: `{"stream_options":{"include_usage":true}}`,
		},
		{
			name: "include_usage already true",
			body: `{"stream_options":{"include_usage":true}}`,
			want: `{"stream_options":{"include_usage":true}}`,
		},
		{
			name: "duplicates are all fixed",
			body: `{"stream_options":{"include_usage":false,"include_usage":false},"x":"}","stream_options":null}`,
			want: `{"stream_options":{"include_usage":true,"include_usage":true},"x":"}","stream_options":{"include_usage":true}}`,
		},
		{
			name: "escaped key",
			body: `{"stream\u005foptions":{"include\u005fusage":false}}`,
			want: `{"stream\u005foptions":{"include\u005fusage":true}}`,
		},
		{
			name: "a lookalike in a string is left alone",
			body: `{"messages":[{"content":"\"stream_options\":{}"}],"stream_options":{}}`,
			want: `{"messages":[{"content":"\"stream_options\":{}"}],"stream_options":{"include_usage":true}}`,
		},
		{
			name: "nested stream_options is not top-level",
			body: `{"metadata":{"stream_options":null}}`,
			want: `{"stream_options":{"include_usage":true},"metadata":{"stream_options":null}}`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("prefix:")
			got, err := ForceIncludeUsage(dst, []byte(tt.body))
			if err != nil {
				t.Fatalf("ForceIncludeUsage(%s): %v", tt.body, err)
			}
			if want := "prefix:" + tt.want; string(got) != want {
				t.Errorf("ForceIncludeUsage(%s)\n got %s\nwant %s", tt.body, got, want)
			}
			checkForced(t, []byte(tt.body), got[len(dst):])
		})
	}
}

func TestForceIncludeUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		body      string
		want      string
		wantField bool
	}{
		{`{"stream_options":"yes"}`, "tokens: stream_options must be an object", true},
		{`{"stream_options":[]}`, "tokens: stream_options must be an object", true},
		{`{"stream_options":{"include_usage":"yes"}}`, "tokens: stream_options.include_usage must be a boolean", true},
		{`{"stream_options":{"include_usage":1}}`, "tokens: stream_options.include_usage must be a boolean", true},
		{`[]`, "tokens: request body must be a JSON object", true},
		{``, "tokens: request body must be a JSON object", true},
		{`{"a":1`, "tokens: request body is not valid JSON: expected ',' or '}' at offset 6", false},
		{`{"a" 1}`, "tokens: request body is not valid JSON: expected ':' at offset 5", false},
		{`{1:2}`, "tokens: request body is not valid JSON: expected a key at offset 1", false},
		{`{"a":"b}`, "tokens: request body is not valid JSON: expected the end of a string at offset 5", false},
		{`{"a":{"b":1}`, "tokens: request body is not valid JSON: expected ',' or '}' at offset 12", false},
		{`{"a":[1,2}`, "tokens: request body is not valid JSON: expected ',' or '}' at offset 10", false},
		{`{"a":[1,2`, "tokens: request body is not valid JSON: expected the end of a value at offset 9", false},
		{`{"a":,}`, "tokens: request body is not valid JSON: expected a value at offset 5", false},
		{`{"a":1} x`, "tokens: request body is not valid JSON: expected the end at offset 8", false},
	} {
		dst := []byte("keep")
		got, err := ForceIncludeUsage(dst, []byte(tt.body))
		if err == nil || err.Error() != tt.want {
			t.Errorf("ForceIncludeUsage(%q) error = %v, want %q", tt.body, err, tt.want)
			continue
		}
		var fe *FieldError
		if errors.As(err, &fe) != tt.wantField || errors.Is(err, ErrInvalidJSON) == tt.wantField {
			t.Errorf("ForceIncludeUsage(%q) error %v: FieldError %v, ErrInvalidJSON %v, want FieldError %v",
				tt.body, err, errors.As(err, &fe), errors.Is(err, ErrInvalidJSON), tt.wantField)
		}
		if string(got) != "keep" {
			t.Errorf("ForceIncludeUsage(%q) on error returned %q, want dst unchanged", tt.body, got)
		}
	}
}

// checkForced fails t unless out, ForceIncludeUsage's result for the
// valid JSON object in, parses with include_usage true and every other
// field, top-level and in stream_options, equal to in's.
func checkForced(t testing.TB, in, out []byte) {
	t.Helper()
	// Parse reads the result like the original, with IncludeUsage set.
	e := MustNew(t, Settings{})
	if _, err := e.Parse(in); err == nil {
		r, err := e.Parse(out)
		if err != nil {
			t.Fatalf("Parse(ForceIncludeUsage(%s)) = %v", in, err)
		}
		if !r.IncludeUsage {
			t.Fatalf("Parse(%s).IncludeUsage = false, want true", out)
		}
	}
	before, after := decodeObject(t, in), decodeObject(t, out)
	optsBefore, _ := before["stream_options"].(map[string]any)
	optsAfter, ok := after["stream_options"].(map[string]any)
	if !ok || optsAfter["include_usage"] != true {
		t.Fatalf("ForceIncludeUsage(%s) = %s: stream_options.include_usage not true", in, out)
	}
	delete(optsAfter, "include_usage")
	delete(optsBefore, "include_usage")
	if len(optsBefore) > 0 || len(optsAfter) > 0 {
		if !reflect.DeepEqual(optsBefore, optsAfter) {
			t.Errorf("ForceIncludeUsage(%s) = %s: stream_options %v, want %v", in, out, optsAfter, optsBefore)
		}
	}
	delete(before, "stream_options")
	delete(after, "stream_options")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("ForceIncludeUsage(%s) = %s: other fields changed", in, out)
	}
}

func decodeObject(t testing.TB, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return m
}
