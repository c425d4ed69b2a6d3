package proxy

import (
	"bytes"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
)

// Header names Sluice reads from or adds to requests and responses.
const (
	HeaderRequestID = "X-Sluice-Request-Id"
	HeaderPriority  = "X-Priority"
	HeaderClass     = "X-Sluice-Priority"
	HeaderMaxWait   = "X-Sluice-Max-Wait"
	HeaderQueueWait = "X-Sluice-Queue-Wait-Ms"
)

var (
	sluicePrefix = []byte("x-sluice-")
	hdrPriority  = []byte(HeaderPriority)
	hdrMaxWait   = []byte(HeaderMaxWait)
)

// maxMaxWait bounds X-Sluice-Max-Wait; a class's max_wait caps it anyway.
const maxMaxWait = 24 * time.Hour

// parseMaxWait reads an X-Sluice-Max-Wait value: a Go duration with a unit
// ("250ms", "30s", "2m"), not negative. Larger values than any class allows
// are accepted: the class's max_wait caps them.
func parseMaxWait(v []byte) (time.Duration, error) {
	if len(v) > 32 {
		return 0, errors.New("too long")
	}
	d, err := time.ParseDuration(string(v))
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("negative")
	}
	return min(d, maxMaxWait), nil
}

// isHopByHop reports whether key is a hop-by-hop header (RFC 9110 section 7.6.1,
// plus the de-facto Proxy-Connection and Keep-Alive) that a proxy must not
// forward. Content-Length is here too because fasthttp frames bodies itself.
func isHopByHop(key []byte) bool {
	switch len(key) {
	case 2:
		return bytes.EqualFold(key, []byte("TE"))
	case 7:
		return bytes.EqualFold(key, []byte("Trailer")) || bytes.EqualFold(key, []byte("Upgrade"))
	case 10:
		return bytes.EqualFold(key, []byte("Connection")) || bytes.EqualFold(key, []byte("Keep-Alive"))
	case 14:
		return bytes.EqualFold(key, []byte("Content-Length"))
	case 16:
		return bytes.EqualFold(key, []byte("Proxy-Connection"))
	case 17:
		return bytes.EqualFold(key, []byte("Transfer-Encoding"))
	case 18:
		return bytes.EqualFold(key, []byte("Proxy-Authenticate"))
	case 19:
		return bytes.EqualFold(key, []byte("Proxy-Authorization"))
	}
	return false
}

// isSluiceHeader reports whether key is one of Sluice's own request headers,
// which are instructions to Sluice and never reach the provider.
func isSluiceHeader(key []byte) bool {
	return bytes.EqualFold(key, hdrPriority) ||
		len(key) >= len(sluicePrefix) && bytes.EqualFold(key[:len(sluicePrefix)], sluicePrefix)
}

// connectionTokens holds the header names listed in a Connection header,
// which are hop-by-hop for that message (RFC 9110 section 7.6.1). Almost
// every message lists none besides close / keep-alive, so the fixed array
// keeps the common case free of allocations.
type connectionTokens struct {
	n      int
	tokens [4][]byte
	many   bool // more than fit: fall back to scanning the header value
	value  []byte
}

func (ct *connectionTokens) parse(value []byte) {
	ct.n, ct.many, ct.value = 0, false, value
	for len(value) > 0 {
		var tok []byte
		if i := bytes.IndexByte(value, ','); i >= 0 {
			tok, value = value[:i], value[i+1:]
		} else {
			tok, value = value, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) {
			continue
		}
		if ct.n == len(ct.tokens) {
			ct.many = true
			return
		}
		ct.tokens[ct.n] = tok
		ct.n++
	}
}

func (ct *connectionTokens) has(key []byte) bool {
	if ct.many {
		for _, tok := range bytes.Split(ct.value, []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(tok), key) {
				return true
			}
		}
		return false
	}
	for i := range ct.n {
		if bytes.EqualFold(ct.tokens[i], key) {
			return true
		}
	}
	return false
}

// copyRequestHeaders copies the client's headers to the upstream request,
// leaving out hop-by-hop headers, Host (the upstream's own is set from the
// configured URL), Sluice's instructions, and Authorization when the
// provider replaces it.
func copyRequestHeaders(dst *fasthttp.RequestHeader, src *fasthttp.RequestHeader, dropAuth bool) {
	var ct connectionTokens
	ct.parse(src.Peek(fasthttp.HeaderConnection))
	for k, v := range src.All() {
		if isHopByHop(k) || isSluiceHeader(k) || ct.has(k) {
			continue
		}
		switch len(k) {
		case 4:
			if bytes.EqualFold(k, []byte(fasthttp.HeaderHost)) {
				continue
			}
		case 13:
			if dropAuth && bytes.EqualFold(k, []byte(fasthttp.HeaderAuthorization)) {
				continue
			}
		}
		dst.AddBytesKV(k, v)
	}
}

// copyResponseHeaders copies the upstream's response headers to the client,
// leaving out hop-by-hop headers; fasthttp writes its own framing.
func copyResponseHeaders(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader) {
	var ct connectionTokens
	ct.parse(src.Peek(fasthttp.HeaderConnection))
	for k, v := range src.All() {
		if isHopByHop(k) || ct.has(k) {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}
