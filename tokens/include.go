package tokens

import (
	"bytes"
	"fmt"
)

// ForceIncludeUsage appends to dst body with "stream_options":
// {"include_usage": true} set and every other byte kept, and returns the
// extended slice. Sluice uses it on streamed Chat Completions and
// Completions requests whose client did not ask for usage, so that it can
// reconcile the tokens it charged; [Stream] removes the extra chunk again.
// OpenAI then sends one more chunk before "data: [DONE]" with the usage
// and "choices": [] (OpenAI API reference, ChatCompletionStreamOptions).
//
// When stream_options is absent it is inserted right after the opening
// brace; when it is null it is replaced; when it is an object whose
// include_usage is absent, false or null, include_usage is inserted or set
// to true. Every occurrence of a duplicated key is fixed, so that any
// parser reads true. A stream_options that is not an object, or an
// include_usage that is not a boolean, is a [*FieldError]; a body that is
// not an object is a [*FieldError] too, and one whose structure is broken
// wraps [ErrInvalidJSON]. The body is expected to have passed
// [Estimator.Parse]: ForceIncludeUsage checks the structure it walks
// (brackets, strings, keys) but not numbers or literals, so for an invalid
// body the result may be invalid too. On error dst is returned unchanged.
func ForceIncludeUsage(dst, body []byte) ([]byte, error) {
	out, err := forceIncludeUsage(dst, body)
	if err != nil {
		return dst, err
	}
	return out, nil
}

const (
	streamOptionsMember = `"stream_options":{"include_usage":true}`
	includeUsageMember  = `"include_usage":true`
)

func forceIncludeUsage(dst, body []byte) ([]byte, error) {
	open := skipSpace(body, 0)
	if open == len(body) || body[open] != '{' {
		return dst, &FieldError{Reason: "must be a JSON object"}
	}
	out := dst
	last := 0 // body[:last] is in out
	found := false
	empty := true
	err := members(body, open, func(key []byte, vs, ve int) error {
		empty = false
		if !keyEquals(key, "stream_options") {
			return nil
		}
		found = true
		switch body[vs] {
		case 'n': // null
			out = append(out, body[last:vs]...)
			out = append(out, `{"include_usage":true}`...)
			last = ve
			return nil
		case '{':
		default:
			return &FieldError{Field: "stream_options", Reason: "must be an object"}
		}
		set := false
		err := members(body, vs, func(key []byte, ivs, ive int) error {
			if !keyEquals(key, "include_usage") {
				return nil
			}
			set = true
			switch v := body[ivs:ive]; string(v) {
			case "true":
			case "false", "null":
				out = append(out, body[last:ivs]...)
				out = append(out, "true"...)
				last = ive
			default:
				return &FieldError{Field: "stream_options.include_usage", Reason: "must be a boolean"}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !set {
			// Nothing in this object was edited, so last <= vs.
			out = append(out, body[last:vs+1]...)
			out = append(out, includeUsageMember...)
			if body[skipSpace(body, vs+1)] != '}' {
				out = append(out, ',')
			}
			last = vs + 1
		}
		return nil
	})
	if err != nil {
		return dst, err
	}
	if !found {
		out = append(out, body[:open+1]...)
		out = append(out, streamOptionsMember...)
		if !empty {
			out = append(out, ',')
		}
		last = open + 1
	}
	return append(out, body[last:]...), nil
}

// members calls f with each member of the object whose '{' is at b[open]:
// the key's raw text and the value's span b[vs:ve]. It checks that what
// follows the object is white space only when open is the first
// non-space byte of b.
func members(b []byte, open int, f func(key []byte, vs, ve int) error) error {
	i := skipSpace(b, open+1)
	if i < len(b) && b[i] == '}' {
		return trailing(b, open, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return structErr("a key", b, i)
		}
		ke := closingQuote(b, i)
		if ke < 0 {
			return structErr("the end of a key", b, i)
		}
		key := b[i+1 : ke]
		i = skipSpace(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return structErr("':'", b, i)
		}
		vs := skipSpace(b, i+1)
		ve, err := skipValue(b, vs)
		if err != nil {
			return err
		}
		if err := f(key, vs, ve); err != nil {
			return err
		}
		i = skipSpace(b, ve)
		if i >= len(b) {
			return structErr("',' or '}'", b, i)
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return trailing(b, open, i+1)
		default:
			return structErr("',' or '}'", b, i)
		}
	}
}

// trailing checks that nothing but white space follows the top-level
// object, which ends at end.
func trailing(b []byte, open, end int) error {
	if skipSpace(b, 0) == open {
		if i := skipSpace(b, end); i != len(b) {
			return structErr("the end", b, i)
		}
	}
	return nil
}

// skipValue returns the end of the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, structErr("a value", b, i)
	}
	switch b[i] {
	case '"':
		e := closingQuote(b, i)
		if e < 0 {
			return i, structErr("the end of a string", b, i)
		}
		return e + 1, nil
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			case '"':
				e := closingQuote(b, j)
				if e < 0 {
					return j, structErr("the end of a string", b, j)
				}
				j = e
			}
		}
		return len(b), structErr("the end of a value", b, len(b))
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if j == i {
				return i, structErr("a value", b, i)
			}
			return j, nil
		}
		j++
	}
	return j, nil
}

// closingQuote returns the index of the quote that closes the string
// opened at b[open], or -1.
func closingQuote(b []byte, open int) int {
	i := open + 1
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		j += i
		k := j
		for k > open+1 && b[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j
		}
		i = j + 1
	}
}

func structErr(want string, b []byte, i int) error {
	return fmt.Errorf("%w: expected %s at offset %d", ErrInvalidJSON, want, i)
}
