package retry

import (
	"strings"
	"time"
)

// epoch is "now" in every test: a Monday.
var epoch = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// header is a [Header] over a list of fields. Like fasthttp's, its Peek
// ignores case and does not allocate, and it is used through a pointer, so
// passing it as a Header does not allocate either: the allocation tests
// measure the package, not the test double.
type header struct{ fields []field }

type field struct {
	key   string
	value []byte
}

// hdr builds a header from alternating keys and values.
func hdr(kv ...string) *header {
	if len(kv)%2 != 0 {
		panic("hdr: odd number of arguments")
	}
	h := &header{fields: make([]field, 0, len(kv)/2)}
	for i := 0; i < len(kv); i += 2 {
		h.fields = append(h.fields, field{kv[i], []byte(kv[i+1])})
	}
	return h
}

// Peek returns the first value of key, ignoring ASCII case.
func (h *header) Peek(key string) []byte {
	for _, f := range h.fields {
		if strings.EqualFold(f.key, key) {
			return f.value
		}
	}
	return nil
}

var _ Header = (*header)(nil)
