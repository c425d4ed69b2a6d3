package proxy

import (
	"net/url"
	"strings"
	"testing"
)

func TestAppendEscapedPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/v1/chat/completions", "/v1/chat/completions"},
		{"/v1/models/ft:gpt-4o:org@x", "/v1/models/ft:gpt-4o:org@x"},
		{"/v1/files/a b", "/v1/files/a%20b"},
		{"/v1/%2e%2e", "/v1/%252e%252e"}, // a decoded '%' is data
		{"/v1/a?b#c", "/v1/a%3Fb%23c"},
		{"/v1/\x00\xff", "/v1/%00%FF"},
	}
	for _, tt := range tests {
		if got := string(appendEscapedPath(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendEscapedPath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzAppendEscapedPath checks the escaping against net/url: the escaped
// path decodes back to the input, and contains nothing a server could
// decode into another segment structure.
func FuzzAppendEscapedPath(f *testing.F) {
	for _, s := range []string{"/v1/chat/completions", "/v1/%2e%2e/x", "/a b/%/?#", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > 4096 {
			return
		}
		esc := string(appendEscapedPath(nil, []byte(in)))
		got, err := url.PathUnescape(esc)
		if err != nil {
			t.Fatalf("PathUnescape(%q) failed: %v", esc, err)
		}
		if got != in {
			t.Fatalf("round trip of %q = %q via %q", in, got, esc)
		}
		if strings.ContainsAny(esc, "?# \\") {
			t.Fatalf("escaped %q still holds a delimiter: %q", in, esc)
		}
		if strings.Count(esc, "/") != strings.Count(in, "/") {
			t.Fatalf("escaping %q changed the segments: %q", in, esc)
		}
	})
}

func TestHasPathPrefix(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"/v1", "/v1", true},
		{"/v1/chat", "/v1", true},
		{"/v10/chat", "/v1", false},
		{"/v", "/v1", false},
		{"/anthropic/v1/messages", "/anthropic", true},
		{"/anthropicx/v1", "/anthropic", false},
	}
	for _, tt := range tests {
		if got := hasPathPrefix([]byte(tt.path), []byte(tt.prefix)); got != tt.want {
			t.Errorf("hasPathPrefix(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}

func TestConnectionTokens(t *testing.T) {
	var ct connectionTokens
	ct.parse([]byte("keep-alive, X-Foo ,close,x-bar"))
	for _, k := range []string{"X-Foo", "x-foo", "X-Bar"} {
		if !ct.has([]byte(k)) {
			t.Errorf("has(%q) = false, want true", k)
		}
	}
	for _, k := range []string{"Close", "Keep-Alive", "X-Baz"} {
		if ct.has([]byte(k)) {
			t.Errorf("has(%q) = true, want false", k)
		}
	}
	ct.parse([]byte("a, b, c, d, e, f"))
	if !ct.many || !ct.has([]byte("F")) || ct.has([]byte("g")) {
		t.Errorf("many tokens: many=%v has(F)=%v has(g)=%v", ct.many, ct.has([]byte("F")), ct.has([]byte("g")))
	}
}

func TestIsHopByHop(t *testing.T) {
	for _, k := range []string{"Connection", "keep-alive", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
		"Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection", "Content-Length"} {
		if !isHopByHop([]byte(k)) {
			t.Errorf("isHopByHop(%q) = false, want true", k)
		}
	}
	for _, k := range []string{"Authorization", "Content-Type", "X-Request-Id", "Tea"} {
		if isHopByHop([]byte(k)) {
			t.Errorf("isHopByHop(%q) = true, want false", k)
		}
	}
	for _, k := range []string{"X-Priority", "x-sluice-max-wait", "X-Sluice-Anything"} {
		if !isSluiceHeader([]byte(k)) {
			t.Errorf("isSluiceHeader(%q) = false, want true", k)
		}
	}
}

// TestErrorBodies pins the JSON the SDKs parse: a change here breaks callers.
func TestErrorBodies(t *testing.T) {
	tests := []struct {
		err    *apiError
		status int
		body   string
	}{
		{errNoRoute, 404, `{"error":{"message":"no provider serves this path: use /v1/... for the default provider or a configured provider prefix","type":"invalid_request_error","code":"unknown_route"}}`},
		{errBodyTooLarge, 413, `{"error":{"message":"the request body is larger than this gateway accepts (max_body_bytes)","type":"invalid_request_error","code":"request_too_large"}}`},
		{errUpstream, 502, `{"error":{"message":"the upstream provider could not be reached or broke the connection","type":"server_error","code":"upstream_error"}}`},
		{errUpstreamTimeout, 504, `{"error":{"message":"the upstream provider did not answer in time","type":"server_error","code":"upstream_timeout"}}`},
		{errDraining, 503, `{"error":{"message":"this gateway is shutting down; retry on another replica","type":"server_error","code":"shutting_down"}}`},
		{errBadRequest, 400, `{"error":{"message":"the request could not be parsed as HTTP","type":"invalid_request_error","code":"bad_request"}}`},
	}
	for _, tt := range tests {
		if tt.err.status != tt.status || string(tt.err.body) != tt.body {
			t.Errorf("error %d %s, want %d %s", tt.err.status, tt.err.body, tt.status, tt.body)
		}
	}
}
