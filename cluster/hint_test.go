package cluster

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestUntilMillis(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name  string
		until time.Time
		want  int64
	}{
		{"whole", base, base.UnixMilli()},
		{"rounded up", base.Add(time.Nanosecond), base.UnixMilli() + 1},
		{"just below", base.Add(time.Millisecond - time.Nanosecond), base.UnixMilli() + 1},
		{"monotonic reading ignored", time.Now().Truncate(0).Truncate(time.Millisecond), time.Now().Truncate(0).Truncate(time.Millisecond).UnixMilli()},
		{"before 1970", time.Unix(-1, 500), -999},
		{"latest", time.UnixMilli(maxUntilMs), maxUntilMs},
		{"capped", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), maxUntilMs},
	} {
		if got := untilMillis(tt.until); got != tt.want {
			t.Errorf("%s: untilMillis(%v) = %d, want %d", tt.name, tt.until, got, tt.want)
		}
	}
}

func TestParseHint(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     hint
		err      string // substring; empty: valid
	}{
		{"published", `{"provider":"openai","until_ms":1767225630000,"replica":"sluice-a1"}`,
			hint{"openai", 1767225630000, "sluice-a1"}, ""},
		{"fields in any order, spaces", ` { "replica" : "r", "until_ms" : 1 , "provider" : "p" } `, hint{"p", 1, "r"}, ""},
		{"unknown fields ignored", `{"provider":"p","until_ms":5,"replica":"r","reason":"5xx"}`, hint{"p", 5, "r"}, ""},
		{"latest", `{"provider":"p","until_ms":` + itoa(maxUntilMs) + `,"replica":"r"}`, hint{"p", maxUntilMs, "r"}, ""},
		{"escapes", `{"provider":"a\"b\u00e9","until_ms":5,"replica":"r\\"}`, hint{"a\"bé", 5, "r\\"}, ""},
		{"empty", ``, hint{}, "unexpected end of JSON input"},
		{"not JSON", `openai 5 r`, hint{}, "invalid character"},
		{"null", `null`, hint{}, "no provider"},
		{"array", `[1]`, hint{}, "cannot unmarshal array"},
		{"no replica", `{"provider":"p","until_ms":5}`, hint{}, "no replica"},
		{"until_ms 0", `{"provider":"p","until_ms":0,"replica":"r"}`, hint{}, "until_ms 0 not in"},
		{"until_ms beyond 2262", `{"provider":"p","until_ms":` + itoa(maxUntilMs+1) + `,"replica":"r"}`, hint{}, "not in [1, 9223372036854]"},
		{"until_ms a string", `{"provider":"p","until_ms":"5","replica":"r"}`, hint{}, "cannot unmarshal string"},
		{"until_ms fractional", `{"provider":"p","until_ms":5.5,"replica":"r"}`, hint{}, "cannot unmarshal number 5.5"},
		{"trailing data", `{"provider":"p","until_ms":5,"replica":"r"}x`, hint{}, "invalid character"},
		{"too long", `{"provider":"` + strings.Repeat("p", maxHintLen) + `","until_ms":5,"replica":"r"}`, hint{}, "more than 4096"},
	} {
		got, err := parseHint(tt.in)
		if tt.err == "" {
			if err != nil || got != tt.want {
				t.Errorf("%s: parseHint(%q) = %+v, %v; want %+v", tt.name, tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, errBadHint) || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: parseHint(%q) = %+v, %v; want an errBadHint containing %q", tt.name, tt.in, got, err, tt.err)
		}
	}
}

// FuzzParseHint checks that parseHint never panics, accepts only JSON
// objects holding a valid hint, and that what it accepts survives encode.
func FuzzParseHint(f *testing.F) {
	for _, s := range []string{
		`{"provider":"openai","until_ms":1767225630000,"replica":"sluice-a1"}`,
		`{"provider":"p","until_ms":1,"replica":"r","x":[1,{"y":null}]}`,
		`{"provider":"p","until_ms":9223372036854,"replica":"r"}`,
		`{"provider":"p","until_ms":9223372036855,"replica":"r"}`,
		`{"PROVIDER":"p","Until_MS":5,"replica":"r"}`,
		`{"provider":"\ud800","until_ms":5,"replica":"\u0000"}`,
		`{"provider":"p","until_ms":1e3,"replica":"r"}`,
		`{"provider":"p","provider":"q","until_ms":5,"replica":"r"}`,
		"", "null", "{}", "[]", `"x"`, "5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHint(s)
		if err != nil {
			if !errors.Is(err, errBadHint) {
				t.Fatalf("parseHint(%q) = %v, want an errBadHint", s, err)
			}
			return
		}
		if len(s) > maxHintLen || !json.Valid([]byte(s)) {
			t.Fatalf("parseHint(%q) accepted %d bytes, valid JSON %v", s, len(s), json.Valid([]byte(s)))
		}
		if h.Provider == "" || h.Replica == "" || h.UntilMs < 1 || h.UntilMs > maxUntilMs {
			t.Fatalf("parseHint(%q) = %+v, want non-empty names and until_ms in [1, %d]", s, h, maxUntilMs)
		}
		if got := time.UnixMilli(h.UntilMs).UnixNano(); got/int64(time.Millisecond) != h.UntilMs {
			t.Fatalf("parseHint(%q): until %d ms has no UnixNano", s, h.UntilMs)
		}
		if !utf8.ValidString(h.Provider) || !utf8.ValidString(h.Replica) {
			return // encoding/json replaces invalid UTF-8 with U+FFFD
		}
		enc := h.encode()
		back, err := parseHint(enc)
		if err != nil && len(enc) <= maxHintLen {
			t.Fatalf("parseHint(encode(%+v)) = %v", h, err)
		}
		if err == nil && back != h {
			t.Fatalf("parseHint(encode(%+v)) = %+v", h, back)
		}
	})
}

// FuzzHintRoundTrip checks that every hint Publish can make parses back.
func FuzzHintRoundTrip(f *testing.F) {
	f.Add("openai", "sluice-a1", int64(1767225630000))
	f.Add(`a"b\c`, "<&>\u2028", int64(1))
	f.Add("p", "r", int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, provider, replica string, ms int64) {
		if provider == "" || replica == "" || len(provider)+len(replica) > maxHintLen/8 ||
			!utf8.ValidString(provider) || !utf8.ValidString(replica) {
			return
		}
		h := hint{Provider: provider, UntilMs: untilMillis(time.UnixMilli(ms)), Replica: replica}
		got, err := parseHint(h.encode())
		if h.UntilMs < 1 {
			if err == nil {
				t.Fatalf("parseHint(encode(%+v)) = %+v, want an error for until_ms < 1", h, got)
			}
			return
		}
		if err != nil || got != h {
			t.Fatalf("parseHint(encode(%+v)) = %+v, %v", h, got, err)
		}
	})
}
