package proxy

// pathSafe marks the bytes that may stand unescaped in a URI path: RFC 3986
// section 3.3 pchar (unreserved, sub-delims, ':' and '@') plus '/'.
var pathSafe = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@/" {
		t[c] = true
	}
	return t
}()

// appendEscapedPath appends path to dst, percent-encoding every byte that
// may not stand in a URI path. path is already decoded (fasthttp
// normalises the request path), so a literal '%' is data and is escaped:
// the upstream sees exactly the path Sluice routed on, never a second
// round of decoding that could turn %2e%2e into "..".
func appendEscapedPath(dst, path []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range path {
		if pathSafe[c] {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hex[c>>4], hex[c&0xf])
	}
	return dst
}
