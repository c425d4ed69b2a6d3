package deadletter

import (
	"net/textproto"
	"slices"
	"strings"
)

// Redacted replaces the value of every secret header and every occurrence
// of a secret in an error message.
const Redacted = "[redacted]"

// alwaysRedacted are the headers that carry credentials in the providers'
// APIs (OpenAI and Anthropic keys, Azure's api-key) and in HTTP itself
// (RFC 9110 §11.6.2, §11.7.1; RFC 6265 cookies). They are redacted whatever
// the configuration says.
var alwaysRedacted = []string{
	"Authorization", "Proxy-Authorization", "Api-Key", "X-Api-Key", "Cookie", "Set-Cookie",
}

// minTokenLen is the shortest part of a secret header value that Scrub
// also hides on its own. Shorter parts ("Bearer", a cookie named "a") are
// too common to hide without mangling messages, and too short to be keys.
const minTokenLen = 8

// Redactor removes secrets from the request headers and error message of a
// [Record]. The zero value is not usable; build one with [NewRedactor]. A
// Redactor is immutable and safe for concurrent use.
type Redactor struct {
	names map[string]bool // canonical header names to redact
}

// NewRedactor returns a Redactor that redacts the credential headers
// (Authorization, Proxy-Authorization, api-key, x-api-key, Cookie,
// Set-Cookie) and the extra header names given. Names match
// case-insensitively.
func NewRedactor(extra []string) *Redactor {
	r := &Redactor{names: make(map[string]bool, len(alwaysRedacted)+len(extra))}
	for _, n := range slices.Concat(alwaysRedacted, extra) {
		if n = strings.TrimSpace(n); n != "" {
			r.names[textproto.CanonicalMIMEHeaderKey(n)] = true
		}
	}
	return r
}

// secret reports whether the header name is one to redact.
func (r *Redactor) secret(name string) bool {
	return r.names[textproto.CanonicalMIMEHeaderKey(name)]
}

// Headers returns h flattened for a [Record]: one entry per header under
// its name as given, several values joined with ", " (RFC 9110 §5.3), and
// the value of every secret header replaced by [Redacted]. h has the shape
// of net/http.Header; it is not modified.
func (r *Redactor) Headers(h map[string][]string) map[string]string {
	out := make(map[string]string, len(h))
	for name, vals := range h {
		if r.secret(name) {
			out[name] = Redacted
			continue
		}
		out[name] = strings.Join(vals, ", ")
	}
	return out
}

// Secrets returns the secret values found in h, for [Redactor.Scrub]:
// each secret header's whole value, and the parts of it long enough to be
// a key on their own (the token after "Bearer ", a cookie's value), since
// an upstream error message may quote only those.
func (r *Redactor) Secrets(h map[string][]string) []string {
	var out []string
	for name, vals := range h {
		if !r.secret(name) {
			continue
		}
		for _, v := range vals {
			out = append(out, v)
			for _, part := range strings.FieldsFunc(v, func(c rune) bool {
				return c == ' ' || c == ';' || c == ',' || c == '=' || c == '\t'
			}) {
				if len(part) >= minTokenLen {
					out = append(out, part)
				}
			}
		}
	}
	return out
}

// Scrub returns msg with every occurrence of each non-empty secret replaced
// by [Redacted]. Longer secrets are replaced first, so a secret that
// contains another is hidden whole.
func (r *Redactor) Scrub(msg string, secrets ...string) string {
	s := slices.Clone(secrets)
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	for _, sec := range s {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, Redacted)
		}
	}
	return msg
}

// Redact sets rec.Headers from h through [Redactor.Headers] and scrubs
// rec.ErrorMessage of the secrets found in h: the one call the proxy needs
// before it stores a record.
func (r *Redactor) Redact(rec *Record, h map[string][]string) {
	rec.Headers = r.Headers(h)
	rec.ErrorMessage = r.Scrub(rec.ErrorMessage, r.Secrets(h)...)
}
