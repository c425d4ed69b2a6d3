package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// redacted is what every printing or encoding of a non-empty [Secret] shows.
const redacted = "<redacted>"

// A Secret is a credential read from the config: a provider API key, the
// admin token, the Redis password. The zero value is the empty secret, which
// means "not configured".
//
// Every way of printing or encoding a Secret (fmt verbs, JSON, YAML, text,
// log/slog) shows "<redacted>" when it is set and "" when it is empty, so a
// Config can be logged or dumped whole without leaking anything. Only
// [Secret.Reveal] returns the value; call it at the point of use (building the
// upstream Authorization header, dialing Redis) and nowhere else.
//
// Decoding is not redacted: a Secret unmarshals from YAML or JSON as the plain
// string it is. A YAML round trip therefore turns a set secret into the literal
// "<redacted>"; that is the intended trade, since a marshalled config is most
// often written somewhere for people to read.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns "<redacted>", or "" when the secret is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns the same as [Secret.String], so %#v redacts too.
func (s Secret) GoString() string { return s.String() }

// Format implements [fmt.Formatter]. Without it, a verb that does not apply
// to strings (%d, %t) would make fmt print the raw value inside its
// "%!d(config.Secret=...)" error text, because fmt ignores String and
// GoString while reporting a bad verb. Every verb prints the redacted form;
// %q quotes it.
func (s Secret) Format(f fmt.State, verb rune) {
	out := s.String()
	if verb == 'q' {
		out = strconv.Quote(out)
	}
	_, _ = io.WriteString(f, out)
}

// MarshalText returns the redacted form, for encoders that use
// [encoding.TextMarshaler].
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON encodes the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalYAML encodes the redacted form as a YAML string.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// LogValue implements [slog.LogValuer] with the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

var (
	_ fmt.Stringer   = Secret("")
	_ fmt.GoStringer = Secret("")
	_ fmt.Formatter  = Secret("")
	_ json.Marshaler = Secret("")
	_ slog.LogValuer = Secret("")
)
