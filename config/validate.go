package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// maxCAFileBytes bounds how much of tls.ca_file is read. System CA bundles
// are a few hundred KiB.
const maxCAFileBytes = 4 << 20

// problems collects what Validate finds, each as "key: what is wrong".
type problems []error

func (p *problems) addf(key, format string, args ...any) {
	*p = append(*p, errors.New(key+": "+fmt.Sprintf(format, args...)))
}

// firstIndex remembers where each name of a list first appeared, so that a
// duplicate is reported with both positions.
type firstIndex map[string]int

// check records name as element i of list, or reports under key that it
// repeats an earlier element; what says what the name is ("class name").
// An empty name is neither recorded nor reported: it is "required" elsewhere.
func (f firstIndex) check(p *problems, key, list, what, name string, i int) {
	if name == "" {
		return
	}
	if j, dup := f[name]; dup {
		p.addf(key, "duplicate %s %q (%s[%d] and %s[%d])", what, name, list, j, list, i)
		return
	}
	f[name] = i
}

// Validate checks c and returns every problem it finds, joined with
// [errors.Join], or nil. Each problem names the key path it concerns, in the
// form "providers[openai].limits.requests_per_minute: must be >= 0"; list
// elements are named by their name when it is valid and by their index
// otherwise. Messages never include a secret's value. Validate never panics,
// whatever c holds.
//
// Validate expects defaults to have been applied, as [Load] and [Parse] do: a
// zero value it finds is checked as written. It reads tls.ca_file from disk
// and changes nothing.
func (c *Config) Validate() error {
	var p problems
	c.validateListeners(&p)
	if c.MaxBodyBytes <= 0 {
		p.addf("max_body_bytes", "must be > 0, got %d", c.MaxBodyBytes)
	}
	if c.ShutdownGrace < 0 {
		p.addf("shutdown_grace", "must be >= 0, got %v", c.ShutdownGrace)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		p.addf("log_level", "must be one of debug, info, warn, error, got %q", c.LogLevel)
	}
	if !slices.Contains([]string{"json", "text"}, c.LogFormat) {
		p.addf("log_format", "must be json or text, got %q", c.LogFormat)
	}
	if !slices.Contains([]string{"bytes", "tiktoken"}, c.TokenEstimator) {
		p.addf("token_estimator", "must be bytes or tiktoken, got %q", c.TokenEstimator)
	}
	c.Redis.validate(&p)
	c.validateClasses(&p)
	c.validateProviders(&p)
	c.DeadLetter.validate(&p)
	if len(c.Redis.Addrs) > 0 && c.Redis.MasterName == "" && !hasHashTag(c.DeadLetter.Stream) {
		// The stream and its companion keys go into one script call.
		p.addf("deadletter.stream", "on a Redis Cluster (redis.addrs without master_name) must carry a hash tag, such as {sluice}:deadletters, got %q", c.DeadLetter.Stream)
	}
	c.Idempotency.validate(&p)
	return errors.Join(p...)
}

func (c *Config) validateListeners(p *problems) {
	lhost, lport, lok := checkHostPort(p, "listen", c.Listen, true)
	ahost, aport, aok := checkHostPort(p, "admin.listen", c.Admin.Listen, true)
	// Port 0 asks the kernel for a free port, so two of them never clash.
	if lok && aok && lport == aport && lport != 0 &&
		(strings.EqualFold(lhost, ahost) || isWildcard(lhost) || isWildcard(ahost)) {
		p.addf("admin.listen", "must differ from listen (%s)", c.Listen)
	}
	if aok && c.Admin.Token == "" && !c.Admin.IsLoopback() {
		p.addf("admin.token", "required when admin.listen is not a loopback address")
	}
	checkToken(p, "admin.token", c.Admin.Token)
}

// checkHostPort reports whether addr is host:port with a numeric port, and
// returns both parts. An empty host means all interfaces.
func checkHostPort(p *problems, key, addr string, allowZero bool) (host string, port uint64, ok bool) {
	if addr == "" {
		p.addf(key, "required")
		return "", 0, false
	}
	if !checkText(p, key, addr) {
		return "", 0, false
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		p.addf(key, "must be host:port (%v)", err)
		return "", 0, false
	}
	port, err = strconv.ParseUint(portText, 10, 16)
	if err != nil || (port == 0 && !allowZero) {
		low := 1
		if allowZero {
			low = 0
		}
		p.addf(key, "port must be a number from %d to 65535, got %q", low, portText)
		return "", 0, false
	}
	return host, port, true
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// IsLoopback reports whether the admin listener is bound to a loopback
// address: a loopback IP or "localhost". An empty host (":9090") means all
// interfaces and is not loopback, nor is an address that does not parse.
func (a Admin) IsLoopback() bool {
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkToken rejects whitespace and control characters in a credential that
// is sent or compared as an HTTP header value. The usual cause is a trailing
// newline from a secrets file; sending it would fail every request in a way
// that is hard to see, since the value is never logged.
func checkToken(p *problems, key string, s Secret) {
	if strings.ContainsFunc(s.Reveal(), func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		p.addf(key, "must not contain whitespace or control characters (check for a trailing newline)")
	}
}

func (r *Redis) validate(p *problems) {
	if r.URL != "" {
		// The URL may carry a password, so messages quote only its scheme and
		// the parser's reason, never the URL itself.
		u, err := url.Parse(r.URL)
		switch {
		case err != nil:
			p.addf("redis.url", "must be a valid URL (%v)", urlReason(err))
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			p.addf("redis.url", "scheme must be redis, rediss or unix, got %q", u.Scheme)
		}
		if len(r.Addrs) > 0 {
			p.addf("redis.addrs", "cannot be used together with redis.url")
		}
	}
	for i, a := range r.Addrs {
		key := fmt.Sprintf("redis.addrs[%d]", i)
		if host, _, ok := checkHostPort(p, key, a, false); ok && host == "" {
			p.addf(key, "must name a host, got %q", a)
		}
	}
	checkText(p, "redis.master_name", r.MasterName)
	if r.MasterName != "" && len(r.Addrs) == 0 {
		p.addf("redis.master_name", "requires redis.addrs (the sentinel addresses)")
	}
	positive(p, "redis.dial_timeout", r.DialTimeout)
	positive(p, "redis.command_timeout", r.CommandTimeout)
	checkText(p, "redis.key_prefix", r.KeyPrefix)
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		p.addf("redis.key_prefix", "must not contain { or }: Sluice adds the hash tags itself")
	}
	if r.ExpectedReplicas < 1 {
		p.addf("redis.expected_replicas", "must be >= 1, got %d", r.ExpectedReplicas)
	}
	if r.LeaseTTL < time.Second {
		p.addf("redis.lease_ttl", "must be >= 1s, got %v", r.LeaseTTL)
	}
}

// urlReason strips url.Parse's error down to the reason, leaving out the
// URL it quotes.
func urlReason(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Config) validateClasses(p *problems) {
	if len(c.Classes) == 0 {
		p.addf("classes", "at least one class is required")
	}
	first := firstIndex{}
	for i, cl := range c.Classes {
		key := "classes[" + label(cl.Name, i) + "]"
		checkName(p, key+".name", cl.Name)
		first.check(p, key+".name", "classes", "class name", cl.Name, i)
		positive(p, key+".max_wait", cl.MaxWait)
		if cl.MaxQueue <= 0 {
			p.addf(key+".max_queue", "must be > 0, got %d", cl.MaxQueue)
		}
		// Written so that NaN fails too.
		if !(cl.Share > 0 && cl.Share <= 1) {
			p.addf(key+".share", "must be in (0, 1], got %v", cl.Share)
		}
		if cl.MaxAttempts < 0 {
			p.addf(key+".max_attempts", "must be >= 0, got %d", cl.MaxAttempts)
		}
		if cl.Weight < 1 || cl.Weight > maxWeight {
			p.addf(key+".weight", "must be in [1, %d], got %d", maxWeight, cl.Weight)
		}
		// Absent (nil) is the default; written so that NaN fails too.
		if h := cl.Headroom; h != nil && !(*h >= 0 && *h < 1) {
			p.addf(key+".headroom", "must be in [0, 1), got %v", *h)
		}
		switch {
		case cl.CommitWithin < 0:
			p.addf(key+".commit_within", "must be >= 0, got %v", cl.CommitWithin)
		case cl.CommitWithin > cl.MaxWait && cl.MaxWait > 0:
			p.addf(key+".commit_within", "must be <= max_wait (%v), got %v", cl.MaxWait, cl.CommitWithin)
		}
	}
	names := make([]string, 0, len(c.Classes))
	for _, cl := range c.Classes {
		names = append(names, cl.Name)
	}
	known := func(key, class string) {
		switch {
		case class == "":
			p.addf(key, "required")
		case !slices.Contains(names, class):
			p.addf(key, "unknown class %q (classes are: %s)", class, strings.Join(names, ", "))
		}
	}
	known("default_class", c.DefaultClass)

	paths := firstIndex{}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Path == "":
			p.addf(key+".path", "required")
		case r.Path[0] != '/':
			p.addf(key+".path", "must start with \"/\", got %q", r.Path)
		case strings.ContainsAny(r.Path, " ?#"):
			p.addf(key+".path", "must be a path without spaces, query or fragment, got %q", r.Path)
		default:
			checkText(p, key+".path", r.Path)
		}
		paths.check(p, key+".path", "routes", "path", r.Path, i)
		known(key+".class", r.Class)
	}
}

func (c *Config) validateProviders(p *problems) {
	if len(c.Providers) == 0 {
		p.addf("providers", "at least one provider is required")
		return
	}
	firstName := firstIndex{}
	var defaults []string
	for i := range c.Providers {
		pr := &c.Providers[i]
		key := "providers[" + label(pr.Name, i) + "]"
		checkName(p, key+".name", pr.Name)
		firstName.check(p, key+".name", "providers", "provider name", pr.Name, i)
		if pr.Default {
			defaults = append(defaults, label(pr.Name, i))
		}
		pr.validate(p, key)
	}
	switch {
	case len(defaults) == 0:
		p.addf("providers", "exactly one provider must have default: true (it serves /v1)")
	case len(defaults) > 1:
		p.addf("providers", "exactly one provider may have default: true, got %d (%s)",
			len(defaults), strings.Join(defaults, ", "))
	}
	// Compared after each prefix was checked on its own; "" is the default
	// provider's and is checked by the default count above.
	for i := range c.Providers {
		a := c.Providers[i].Prefix
		for j := i + 1; j < len(c.Providers) && a != ""; j++ {
			b := c.Providers[j].Prefix
			keyA := "providers[" + label(c.Providers[i].Name, i) + "].prefix"
			keyB := "providers[" + label(c.Providers[j].Name, j) + "].prefix"
			switch {
			case b == "":
			case a == b:
				p.addf(keyB, "duplicate prefix %q, also used by %s", b, keyA)
			case strings.HasPrefix(b, a+"/"):
				p.addf(keyB, "%q is nested under %s %q", b, keyA, a)
			case strings.HasPrefix(a, b+"/"):
				p.addf(keyA, "%q is nested under %s %q", a, keyB, b)
			}
		}
	}
}

func (pr *Provider) validate(p *problems, key string) {
	checkBaseURL(p, key+".base_url", pr.BaseURL)
	if msg := prefixProblem(pr.Prefix, pr.Default); msg != "" && (pr.Prefix != "" || validName(pr.Name)) {
		// An empty prefix on a provider without a valid name is a consequence
		// of the name problem, already reported.
		p.addf(key+".prefix", "%s", msg)
	}
	checkToken(p, key+".api_key", pr.APIKey)
	positive(p, key+".timeout", pr.Timeout)
	positive(p, key+".connect_timeout", pr.ConnectTimeout)
	positive(p, key+".response_header_timeout", pr.ResponseHeaderTimeout)
	if pr.ResponseHeaderTimeout > pr.Timeout && pr.Timeout > 0 {
		p.addf(key+".response_header_timeout", "must be <= timeout (%v), got %v", pr.Timeout, pr.ResponseHeaderTimeout)
	}
	positive(p, key+".stream_idle_timeout", pr.StreamIdleTimeout)
	if pr.MaxConns <= 0 {
		p.addf(key+".max_conns", "must be > 0, got %d", pr.MaxConns)
	}
	checkText(p, key+".tls.server_name", pr.TLS.ServerName)
	if pr.TLS.CAFile != "" && checkText(p, key+".tls.ca_file", pr.TLS.CAFile) {
		if msg := caFileProblem(pr.TLS.CAFile); msg != "" {
			p.addf(key+".tls.ca_file", "%s", msg)
		}
		if pr.TLS.InsecureSkipVerify {
			p.addf(key+".tls.insecure_skip_verify", "cannot be combined with tls.ca_file")
		}
	}
	pr.Limits.validate(p, key+".limits")
	if pr.DefaultMaxTokens < 0 {
		p.addf(key+".default_max_tokens", "must be >= 0, got %d", pr.DefaultMaxTokens)
	}
	if pr.Retry.MaxAttempts < 1 {
		p.addf(key+".retry.max_attempts", "must be >= 1, got %d", pr.Retry.MaxAttempts)
	}
	positive(p, key+".retry.base_delay", pr.Retry.BaseDelay)
	positive(p, key+".retry.max_pause", pr.Retry.MaxPause)
	if pr.Retry.MaxDelay < pr.Retry.BaseDelay {
		p.addf(key+".retry.max_delay", "must be >= retry.base_delay (%v), got %v", pr.Retry.BaseDelay, pr.Retry.MaxDelay)
	}
	if pr.Breaker.FailureThreshold < 1 {
		p.addf(key+".breaker.failure_threshold", "must be >= 1, got %d", pr.Breaker.FailureThreshold)
	}
	positive(p, key+".breaker.open_for", pr.Breaker.OpenFor)
	if pr.Breaker.HalfOpenRequests < 1 {
		p.addf(key+".breaker.half_open_requests", "must be >= 1, got %d", pr.Breaker.HalfOpenRequests)
	}
	first := firstIndex{}
	for i, m := range pr.Models {
		mkey := key + ".models[" + strconv.Itoa(i) + "]"
		if m.Name != "" && !strings.ContainsFunc(m.Name, unicode.IsControl) {
			mkey = key + ".models[" + m.Name + "]"
		}
		if m.Name == "" {
			p.addf(mkey+".name", "required")
		} else {
			checkText(p, mkey+".name", m.Name)
		}
		first.check(p, mkey+".name", "models", "model", m.Name, i)
		m.Limits.validate(p, mkey+".limits")
		if m.DefaultMaxTokens < 0 {
			p.addf(mkey+".default_max_tokens", "must be >= 0, got %d", m.DefaultMaxTokens)
		}
	}
}

func (l *Limits) validate(p *problems, key string) {
	nonNegative := func(name string, n int) {
		if n < 0 {
			p.addf(key+"."+name, "must be >= 0, got %d", n)
		}
	}
	nonNegative("requests_per_minute", l.RequestsPerMinute)
	nonNegative("tokens_per_minute", l.TokensPerMinute)
	nonNegative("max_concurrency", l.MaxConcurrency)
	positive(p, key+".request_burst", l.RequestBurst)
	positive(p, key+".token_burst", l.TokenBurst)
}

func (d *DeadLetter) validate(p *problems) {
	if d.Stream == "" {
		p.addf("deadletter.stream", "required")
	}
	checkText(p, "deadletter.stream", d.Stream)
	if d.File == "" {
		p.addf("deadletter.file", "required")
	}
	checkText(p, "deadletter.file", d.File)
	if d.MaxLen < 0 {
		p.addf("deadletter.max_len", "must be >= 0, got %d", d.MaxLen)
	}
	for i, h := range d.RedactHeaders {
		if h == "" || strings.ContainsFunc(h, func(r rune) bool { return !isTokenChar(r) }) {
			p.addf(fmt.Sprintf("deadletter.redact_headers[%d]", i), "must be a header name, got %q", h)
		}
	}
}

// isTokenChar reports whether r may appear in an HTTP field name, a "token"
// in RFC 9110 section 5.6.2.
func isTokenChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

// checkText reports a string that holds control characters, and returns
// whether s is free of them. No name, address or path in the config
// legitimately contains one, and such strings are where YAML encoders and
// log lines go wrong (yaml.v3 writes "\n" as an empty block scalar).
func checkText(p *problems, key, s string) bool {
	if strings.ContainsFunc(s, unicode.IsControl) {
		p.addf(key, "must not contain control characters, got %q", s)
		return false
	}
	return true
}

func positive(p *problems, key string, d time.Duration) {
	if d <= 0 {
		p.addf(key, "must be > 0, got %v", d)
	}
}

// label names a list element in a key path: by its name when that is a
// valid name, else by its index.
func label(name string, i int) string {
	if validName(name) {
		return name
	}
	return strconv.Itoa(i)
}

func checkName(p *problems, key, name string) {
	switch {
	case name == "":
		p.addf(key, "required")
	case !validName(name):
		p.addf(key, "%q must match ^[a-z0-9][a-z0-9_-]*$", name)
	}
}

// validName reports whether s matches ^[a-z0-9][a-z0-9_-]*$. Names end up
// in URL paths, metric labels and Redis hash tags, so they are kept plain.
func validName(s string) bool {
	if s == "" || s[0] == '_' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
			return false
		}
	}
	return true
}

func checkBaseURL(p *problems, key, raw string) {
	if raw == "" {
		p.addf(key, "required")
		return
	}
	// Messages quote parts of the URL, never all of it: a URL with userinfo
	// would put a credential in the message.
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		p.addf(key, "must be an absolute http(s) URL (%v)", urlReason(err))
	case u.Scheme == "":
		p.addf(key, "must be an absolute http(s) URL, got a relative one")
	case u.Scheme != "http" && u.Scheme != "https":
		p.addf(key, "must be an absolute http(s) URL, got scheme %q", u.Scheme)
	case u.User != nil:
		p.addf(key, "must not contain userinfo (put credentials in api_key)")
	case u.Hostname() == "":
		p.addf(key, "must be an absolute http(s) URL with a host")
	// '?' and '#' can only be delimiters in a parsed URL, so looking for
	// them also catches an empty query ("https://host?") or fragment.
	case strings.Contains(raw, "?"):
		p.addf(key, "must not have a query")
	case strings.Contains(raw, "#"):
		p.addf(key, "must not have a fragment")
	}
}

// prefixProblem returns what is wrong with a provider's prefix, or "".
// The proxy matches prefixes against raw request paths, so they are held to
// plain segments that need no escaping or cleaning to compare.
func prefixProblem(prefix string, isDefault bool) string {
	switch {
	case prefix == "":
		if isDefault {
			return ""
		}
		return "required for a provider that is not the default"
	case prefix[0] != '/':
		return fmt.Sprintf("must start with \"/\", got %q", prefix)
	case strings.HasSuffix(prefix, "/"):
		return fmt.Sprintf("must not end with \"/\", got %q", prefix)
	case strings.Contains(prefix, ".."):
		return fmt.Sprintf("must not contain \"..\", got %q", prefix)
	case prefix == "/v1" || strings.HasPrefix(prefix, "/v1/"):
		return fmt.Sprintf("must not be /v1 or start with /v1/, which the default provider serves, got %q", prefix)
	case strings.HasPrefix(prefix, "/admin"):
		return fmt.Sprintf("must not start with /admin, got %q", prefix)
	}
	for _, seg := range strings.Split(prefix[1:], "/") {
		if seg == "" || seg == "." {
			return fmt.Sprintf("must not contain empty or \".\" segments, got %q", prefix)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~", r)) {
				return fmt.Sprintf("may contain only letters, digits, \"/\" and \"-._~\", got %q", prefix)
			}
		}
	}
	return ""
}

// caFileProblem returns why path is not a usable CA file, or "". Only
// regular files are read, so a path such as a FIFO or a device cannot block
// or exhaust the check.
func caFileProblem(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Sprintf("cannot read: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Sprintf("%s is not a regular file", path)
	}
	if fi.Size() > maxCAFileBytes {
		return fmt.Sprintf("%s is larger than %d bytes", path, maxCAFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("cannot read: %v", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Sprintf("%s holds no PEM certificate", path)
	}
	return ""
}

func (i *Idempotency) validate(p *problems) {
	positive(p, "idempotency.retention", i.Retention)
	if i.LockTTL < time.Second {
		p.addf("idempotency.lock_ttl", "must be >= 1s, got %v", i.LockTTL)
	}
	if i.MaxBodyBytes <= 0 {
		p.addf("idempotency.max_body_bytes", "must be > 0, got %d", i.MaxBodyBytes)
	}
	if i.MaxKeys <= 0 {
		p.addf("idempotency.max_keys", "must be > 0, got %d", i.MaxKeys)
	}
}

// hasHashTag reports whether a Redis key has a non-empty {...} hash tag,
// which Redis Cluster hashes instead of the whole key.
func hasHashTag(key string) bool {
	open := strings.IndexByte(key, '{')
	return open >= 0 && strings.IndexByte(key[open+1:], '}') > 0
}
