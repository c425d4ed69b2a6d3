package idempotency

import (
	"reflect"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeHeaders: any stored header field decodes to valid UTF-8 pairs
// or fails with an error, and what decodes encodes back to the same pairs.
func FuzzDecodeHeaders(f *testing.F) {
	f.Add(encodeHeaders([][2]string{{"Content-Type", "text/event-stream"}, {"X-Request-Id", "req_1"}}))
	f.Add(encodeHeaders([][2]string{{"A", "<&>\u2028\"\\"}}))
	f.Add(encodeHeaders(nil))
	f.Add(`null`)
	f.Add(`[null]`)
	f.Add(`[["a"]]`)
	f.Add(`[["a","b","c"]]`)
	f.Add(`[["a",1]]`)
	f.Add(`[["a",null]]`)
	f.Add(`{"a":"b"}`)
	f.Add("[[\"\xff\",\"\\ud800\"]]")
	f.Add(``)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1<<16 {
			return
		}
		h, err := decodeHeaders(s)
		if err != nil {
			if h != nil {
				t.Fatalf("decodeHeaders(%q) = %q and error %v", s, h, err)
			}
			return
		}
		if h != nil && len(h) == 0 {
			t.Fatalf("decodeHeaders(%q) = empty non-nil", s)
		}
		for _, kv := range h {
			if !utf8.ValidString(kv[0]) || !utf8.ValidString(kv[1]) {
				t.Fatalf("decodeHeaders(%q) = %q: not valid UTF-8", s, h)
			}
		}
		back, err := decodeHeaders(encodeHeaders(h))
		if err != nil || !reflect.DeepEqual(back, h) {
			t.Fatalf("decodeHeaders(encodeHeaders(%q)) = %q, %v", h, back, err)
		}
	})
}

// FuzzHeadersRoundTrip: headers a store keeps (made valid UTF-8) come back
// from Redis's encoding unchanged.
func FuzzHeadersRoundTrip(f *testing.F) {
	f.Add("Content-Type", "application/json", "X-\xff", "a\xc3\x28")
	f.Add("", "", "\u2028", "\\\"")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		h := kept(Outcome{Header: [][2]string{{n1, v1}, {n2, v2}}}).Header
		back, err := decodeHeaders(encodeHeaders(h))
		if err != nil || !reflect.DeepEqual(back, h) {
			t.Fatalf("decodeHeaders(encodeHeaders(%q)) = %q, %v", h, back, err)
		}
	})
}

func TestParseStatus(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"200", 200, true}, {"100", 100, true}, {"999", 999, true}, {"502", 502, true},
		{"099", 0, false}, {"20", 0, false}, {"2000", 0, false}, {"", 0, false},
		{"abc", 0, false}, {"5e2", 0, false}, {" 20", 0, false}, {"-20", 0, false}, {"２００", 0, false},
	} {
		got, err := parseStatus(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("parseStatus(%q) = %d, %v, want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
