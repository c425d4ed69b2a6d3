package tokens

import (
	"bytes"

	"github.com/valyala/fastjson"
)

// Usage is what the upstream reported for one request.
type Usage struct {
	// Prompt is usage.prompt_tokens, or else input_tokens plus Anthropic's
	// cache_creation_input_tokens. Cache reads are left out: Anthropic does
	// not count them against input tokens per minute for current models
	// (https://docs.anthropic.com/en/api/rate-limits).
	Prompt int64
	// Completion is usage.completion_tokens, or else output_tokens.
	Completion int64
}

// usageParsers parse the usage object found in a response body; the
// parsers keep their value caches between calls.
var usageParsers fastjson.ParserPool

// ResponseUsage finds the usage in a whole (not streamed) JSON response
// body: Chat Completions, Completions and Embeddings ("usage":
// {"prompt_tokens", "completion_tokens"}), the Responses API and Anthropic
// ("usage": {"input_tokens", "output_tokens"}). It reports false when the
// body is not an object, has no top-level usage, or its usage is null or
// malformed (no token field, or one that is not a non-negative integer).
//
// Bodies can be megabytes of embedding floats, so ResponseUsage does not
// parse the body: it walks back from the end, where providers put usage,
// skipping strings and counting brackets so that only a "usage" key of the
// top-level object matches, and parses just that object. It does not
// validate the rest of the body. It does not allocate in the steady state.
func ResponseUsage(body []byte) (Usage, bool) {
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return Usage{}, false
	}
	val, ok := lastMember(body[i:], "usage", 1)
	if !ok {
		return Usage{}, false
	}
	p := usageParsers.Get()
	defer usageParsers.Put(p)
	return parseUsage(p, val)
}

// parseUsage parses val, a usage object, with p.
func parseUsage(p *fastjson.Parser, val []byte) (Usage, bool) {
	if len(val) == 0 || val[0] != '{' {
		return Usage{}, false
	}
	v, err := p.ParseBytes(val)
	if err != nil {
		return Usage{}, false
	}
	return usageOf(v)
}

// usageOf reads a parsed usage object; the last of duplicate keys wins.
func usageOf(v *fastjson.Value) (Usage, bool) {
	o, err := v.Object()
	if err != nil {
		return Usage{}, false
	}
	var prompt, completion, input, output, cacheCreation *fastjson.Value
	o.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "prompt_tokens":
			prompt = v
		case "completion_tokens":
			completion = v
		case "input_tokens":
			input = v
		case "output_tokens":
			output = v
		case "cache_creation_input_tokens":
			cacheCreation = v
		}
	})
	var n [5]int64
	found := false
	for i, f := range [...]*fastjson.Value{prompt, completion, input, output, cacheCreation} {
		if !isSet(f) {
			continue
		}
		x, ok := nonNegative(f)
		if !ok {
			return Usage{}, false
		}
		n[i], found = x, true
	}
	if !found {
		return Usage{}, false
	}
	u := Usage{Prompt: n[0], Completion: n[1]}
	if !isSet(prompt) {
		u.Prompt = satAdd(n[2], n[4])
	}
	if !isSet(completion) {
		u.Completion = n[3]
	}
	return u, true
}

func satAdd(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}

// lastMember finds the value of the last member named key of the objects
// at nesting depth depth (1: the outermost container) of b, scanning back
// from the end of b. b must end with the outermost container's closing
// bracket (plus white space); its beginning may be missing, which lets a
// stream look for usage in the tail of an event too large to keep whole.
// The value is returned with surrounding white space trimmed.
//
// Scanning backwards works because JSON strings can be recognised from
// either end: a quote is part of a string's text exactly when an odd
// number of backslashes precede it. The scan stops at the key, so it costs
// what follows the key, which for usage is a few hundred bytes.
func lastMember(b []byte, key string, depth int) ([]byte, bool) {
	d := 0
	valEnd := -1 // end of the member value at depth d, when d == depth
	for i := len(b) - 1; i >= 0; i-- {
		switch b[i] {
		case '}', ']':
			d++
			if d == depth {
				valEnd = -1
				if b[i] == '}' {
					valEnd = i
				}
			}
		case '{', '[':
			d--
			if d < 0 {
				return nil, false
			}
		case ',':
			if d == depth && valEnd >= 0 {
				valEnd = i
			}
		case '"':
			j := openingQuote(b, i)
			if j < 0 {
				return nil, false
			}
			if d == depth && valEnd >= 0 {
				k := skipSpace(b, i+1)
				if k < valEnd && b[k] == ':' && keyEquals(b[j+1:i], key) {
					return bytes.TrimSpace(b[k+1 : valEnd]), true
				}
			}
			i = j
		}
	}
	return nil, false
}

// openingQuote returns the index of the quote that opens the string whose
// closing quote is at end, or -1.
func openingQuote(b []byte, end int) int {
	for {
		j := bytes.LastIndexByte(b[:end], '"')
		if j < 0 {
			return -1
		}
		k := j
		for k > 0 && b[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j
		}
		end = j
	}
}

// keyEquals reports whether raw, the text of a JSON string between its
// quotes, decodes to want, which must be ASCII. Keys are rarely escaped,
// but "usag\u0065" is "usage" to every JSON decoder.
func keyEquals(raw []byte, want string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == want
	}
	i := 0
	for len(raw) > 0 {
		c := raw[0]
		raw = raw[1:]
		if c == '\\' {
			if len(raw) == 0 {
				return false
			}
			c = raw[0]
			raw = raw[1:]
			switch c {
			case '"', '\\', '/':
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'u':
				if len(raw) < 4 {
					return false
				}
				var r rune
				for _, h := range raw[:4] {
					r <<= 4
					switch {
					case '0' <= h && h <= '9':
						r |= rune(h - '0')
					case 'a' <= h && h <= 'f':
						r |= rune(h - 'a' + 10)
					case 'A' <= h && h <= 'F':
						r |= rune(h - 'A' + 10)
					default:
						return false
					}
				}
				raw = raw[4:]
				if r >= 0x80 {
					return false // want is ASCII
				}
				c = byte(r)
			default:
				return false
			}
		}
		if i >= len(want) || want[i] != c {
			return false
		}
		i++
	}
	return i == len(want)
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
