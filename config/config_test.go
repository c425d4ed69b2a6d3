package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// mapEnv returns a getenv that looks names up in m.
func mapEnv(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

// MustParseFile parses the fixture at path with getenv, failing the test on
// any error.
func MustParseFile(tb testing.TB, path string, getenv func(string) string) *Config {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := Parse(data, getenv)
	if err != nil {
		tb.Fatalf("Parse(%s) error:\n%v", path, err)
	}
	return c
}

// unsetEnv unsets each variable for the duration of the test.
func unsetEnv(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		t.Setenv(name, "") // restores the old value on cleanup
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadShippedConfig(t *testing.T) {
	unsetEnv(t, "SLUICE_ADMIN_TOKEN", "OPENAI_API_KEY")
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatalf("Load(../config.yaml) error:\n%v", err)
	}
	if c.SharedMode() {
		t.Errorf("SharedMode() = true, want false: the shipped config must run without Redis")
	}
	if got := c.Admin.Token; got != "" {
		t.Errorf("Admin.Token = %q, want empty with SLUICE_ADMIN_TOKEN unset", got)
	}
	def := c.DefaultProvider()
	if def == nil || def.Name != "openai" {
		t.Fatalf("DefaultProvider() = %+v, want openai", def)
	}
	if def.APIKey != "" || def.Timeout != 120*time.Second || def.Limits.RequestsPerMinute != 500 || def.Retry.MaxAttempts != 5 {
		t.Errorf("openai = %+v, want no api_key, timeout 120s, 500 rpm, 5 attempts", *def)
	}
	var names []string
	for _, cl := range c.Classes {
		names = append(names, cl.Name)
	}
	if got, want := strings.Join(names, ","), "critical,high,default,low"; got != want {
		t.Errorf("classes = %s, want %s", got, want)
	}
	if got, want := c.Providers[1].Prefix, "/anthropic"; got != want {
		t.Errorf("anthropic prefix = %q, want %q", got, want)
	}
	// The shipped file spells out every default it relies on; parsing a file
	// with only its providers must give the same config.
	minimal := Default()
	minimal.Providers = c.Providers
	if err := minimal.Validate(); err != nil {
		t.Fatalf("Default() with the shipped providers: %v", err)
	}
	if !reflect.DeepEqual(c, minimal) {
		t.Errorf("shipped config differs from the defaults:\n got %+v\nwant %+v", c, minimal)
	}
}

func TestBadFixtures(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"unknown-top-level-key", "line 2: field bogus not found in type config.Config"},
		{"unknown-nested-key", "line 6: field max_retries not found in type config.Retry"},
		{"bare-integer-duration", "line 5: cannot unmarshal !!int `30` into time.Duration (a duration needs a unit"},
		{"wrong-type", "line 1: cannot unmarshal !!str `lots` into int64"},
		{"duplicate-yaml-key", `mapping key "listen" already defined`},
		{"two-documents", "only one document is allowed"},
		{"negative-duration", "providers[openai].connect_timeout: must be > 0, got -5s"},
		{"base-url-relative", "providers[openai].base_url: must be an absolute http(s) URL, got a relative one"},
		{"base-url-ftp", `providers[openai].base_url: must be an absolute http(s) URL, got scheme "ftp"`},
		{"base-url-no-host", "providers[openai].base_url: must be an absolute http(s) URL with a host"},
		{"base-url-query", "providers[openai].base_url: must not have a query"},
		{"base-url-fragment", "providers[openai].base_url: must not have a fragment"},
		{"base-url-userinfo", "providers[openai].base_url: must not contain userinfo"},
		{"duplicate-provider-names", `providers[openai].name: duplicate provider name "openai" (providers[0] and providers[1])`},
		{"duplicate-prefixes", `providers[cerebras].prefix: duplicate prefix "/fast", also used by providers[groq].prefix`},
		{"nested-prefixes", `providers[cerebras].prefix: "/fast/cerebras" is nested under providers[groq].prefix "/fast"`},
		{"two-defaults", "providers: exactly one provider may have default: true, got 2 (openai, anthropic)"},
		{"no-default", "providers: exactly one provider must have default: true"},
		{"no-providers", "providers: at least one provider is required"},
		{"empty", "providers: at least one provider is required"},
		{"bad-provider-name", `providers[0].name: "OpenAI" must match ^[a-z0-9][a-z0-9_-]*$`},
		{"missing-provider-name", "providers[0].name: required"},
		{"prefix-under-v1", "providers[anthropic].prefix: must not be /v1 or start with /v1/"},
		{"prefix-admin", "providers[anthropic].prefix: must not start with /admin"},
		{"prefix-dotdot", `providers[anthropic].prefix: must not contain ".."`},
		{"prefix-trailing-slash", `providers[anthropic].prefix: must not end with "/"`},
		{"class-share-out-of-range", "classes[low].share: must be in (0, 1], got 1.5"},
		{"class-share-negative", "classes[default].share: must be in (0, 1], got -0.5"},
		{"class-missing-max-wait", "classes[default].max_wait: must be > 0, got 0s"},
		{"duplicate-class", `classes[low].name: duplicate class name "low" (classes[1] and classes[2])`},
		{"default-class-unknown", `default_class: unknown class "normal" (classes are: critical, high, default, low)`},
		{"route-class-unknown", `routes[0].class: unknown class "bulk"`},
		{"route-path-relative", `routes[0].path: must start with "/"`},
		{"admin-public-no-token", "admin.token: required when admin.listen is not a loopback address"},
		{"admin-empty-host-no-token", "admin.token: required when admin.listen is not a loopback address"},
		{"max-body-bytes-zero", "max_body_bytes: must be > 0, got 0"},
		{"response-header-timeout-over-timeout", "providers[openai].response_header_timeout: must be <= timeout (1m0s), got 2m0s"},
		{"retry-max-delay-under-base-delay", "providers[openai].retry.max_delay: must be >= retry.base_delay (10s), got 5s"},
		{"ca-file-missing", "providers[openai].tls.ca_file: cannot read: stat testdata/missing.pem"},
		{"ca-file-not-pem", "providers[openai].tls.ca_file: testdata/minimal.good.yaml holds no PEM certificate"},
		{"ca-file-with-insecure", "providers[openai].tls.insecure_skip_verify: cannot be combined with tls.ca_file"},
		{"redis-url-bad-scheme", `redis.url: scheme must be redis, rediss or unix, got "http"`},
		{"redis-url-and-addrs", "redis.addrs: cannot be used together with redis.url"},
		{"redis-master-name-without-addrs", "redis.master_name: requires redis.addrs"},
		{"redis-addr-without-port", "redis.addrs[0]: must be host:port"},
		{"limits-negative", "providers[openai].limits.requests_per_minute: must be >= 0, got -1"},
		{"model-limits-negative", "providers[openai].models[gpt-4o].limits.tokens_per_minute: must be >= 0, got -100"},
		{"listen-not-host-port", "listen: must be host:port"},
		{"listen-same-as-admin", "admin.listen: must differ from listen (127.0.0.1:9090)"},
		{"log-level-unknown", `log_level: must be one of debug, info, warn, error, got "verbose"`},
		{"control-character", `providers[openai].models[0].name: must not contain control characters, got "gpt-4o\n"`},
		{"class-weight-negative", "classes[critical].weight: must be in [1, 1000], got -2"},
		{"class-headroom-out-of-range", "classes[low].headroom: must be in [0, 1), got 1"},
		{"class-headroom-negative", "classes[high].headroom: must be in [0, 1), got -0.2"},
		{"class-commit-within-negative", "classes[critical].commit_within: must be >= 0, got -250ms"},
		{"class-commit-within-over-max-wait", "classes[critical].commit_within: must be <= max_wait (5s), got 10s"},
		{"token-estimator-unknown", `token_estimator: must be bytes or tiktoken, got "chars"`},
		{"default-max-tokens-negative", "providers[openai].default_max_tokens: must be >= 0, got -1"},
		{"retry-max-pause-negative", "providers[openai].retry.max_pause: must be > 0, got -1s"},
		{"api-key-trailing-newline", "providers[openai].api_key: must not contain whitespace or control characters"},
		{"redis-expected-replicas-zero", "redis.expected_replicas: must be >= 1, got 0"},
		{"redis-key-prefix-hash-tag", "redis.key_prefix: must not contain { or }"},
		{"redis-lease-ttl-short", "redis.lease_ttl: must be >= 1s, got 100ms"},
		{"idempotency-lock-ttl-short", "idempotency.lock_ttl: must be >= 1s, got 10ms"},
		{"redis-cluster-stream-without-tag", "deadletter.stream: on a Redis Cluster (redis.addrs without master_name) must carry a hash tag"},
		{"idempotency-max-body-negative", "idempotency.max_body_bytes: must be > 0, got -1"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file+".bad.yaml")
			seen[path] = true
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, nil; want error containing %q", path, c, tt.want)
			}
			if c != nil {
				t.Errorf("Load(%s) returned a config with its error", path)
			}
			if got := err.Error(); !strings.HasPrefix(got, path+": ") || !strings.Contains(got, tt.want) {
				t.Errorf("Load(%s) error:\n%v\nwant it to start with %q and contain:\n%s", path, got, path+": ", tt.want)
			}
			for _, secret := range []string{"hunter2", "sk-test"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Load(%s) error %q reveals a secret", path, err)
				}
			}
		})
	}
	// Every fixture must be in the table, so none is silently untested.
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !seen[f] {
			t.Errorf("fixture %s is not in the table", f)
		}
	}
}

func TestLoadPrefixesEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	text := "max_body_bytes: -1\nlog_format: xml\nproviders:\n  - name: a\n    base_url: ftp://x\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load = nil error, want three problems")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("Load error has %d lines, want 3:\n%v", len(lines), err)
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, path+": ") {
			t.Errorf("error line %q does not start with %q", line, path+": ")
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestParseEmptyIsDefaults(t *testing.T) {
	for _, text := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		_, err := Parse([]byte(text), nil)
		if got, want := fmt.Sprint(err), "providers: at least one provider is required"; got != want {
			t.Errorf("Parse(%q) error = %q, want exactly %q", text, got, want)
		}
	}
}

func TestMinimalDefaults(t *testing.T) {
	got := MustParseFile(t, "testdata/minimal.good.yaml", nil)
	want := &Config{
		Listen:        "127.0.0.1:8080",
		MaxBodyBytes:  33554432,
		ShutdownGrace: 30 * time.Second,
		LogLevel:      "info",
		LogFormat:     "json",
		Admin:         Admin{Listen: "127.0.0.1:9090"},
		Redis:         Redis{DialTimeout: 200 * time.Millisecond, CommandTimeout: 50 * time.Millisecond, KeyPrefix: "sluice:", ExpectedReplicas: 1, LeaseTTL: 15 * time.Second},
		Idempotency:   Idempotency{Retention: 24 * time.Hour, LockTTL: 30 * time.Second, MaxBodyBytes: 1 << 20, MaxKeys: 100000},
		Classes: []Class{
			{Name: "critical", MaxWait: 30 * time.Second, MaxQueue: 1000, Share: 1, Weight: 8, Headroom: fraction(0)},
			{Name: "high", MaxWait: time.Minute, MaxQueue: 5000, Share: 1, Weight: 4, Headroom: fraction(0.2)},
			{Name: "default", MaxWait: 2 * time.Minute, MaxQueue: 10000, Share: 1, Weight: 2, Headroom: fraction(0.2)},
			{Name: "low", MaxWait: time.Hour, MaxQueue: 100000, Share: 0.5, Weight: 1, Headroom: fraction(0.2)},
		},
		TokenEstimator: "bytes",
		DefaultClass:   "default",
		Routes:         []Route{{Path: "/v1/embeddings", Class: "low"}},
		Providers: []Provider{{
			Name:                  "openai",
			BaseURL:               "https://api.openai.com",
			Prefix:                "",
			Default:               true,
			Timeout:               10 * time.Minute,
			ConnectTimeout:        10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Minute,
			StreamIdleTimeout:     2 * time.Minute,
			MaxConns:              512,
			Limits:                Limits{RequestBurst: time.Second, TokenBurst: 60 * time.Second},
			Retry:                 Retry{MaxAttempts: 3, BaseDelay: 500 * time.Millisecond, MaxDelay: 30 * time.Second, MaxPause: 2 * time.Minute},
			Breaker:               Breaker{FailureThreshold: 5, OpenFor: 30 * time.Second, HalfOpenRequests: 1},
		}},
		DeadLetter: DeadLetter{Stream: "sluice:deadletters", File: "deadletters.jsonl"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestFullFixture(t *testing.T) {
	c := MustParseFile(t, "testdata/full.good.yaml", nil)
	checks := []struct {
		name      string
		got, want any
	}{
		{"shutdown_grace 0s is kept", c.ShutdownGrace, time.Duration(0)},
		{"shared mode", c.SharedMode(), true},
		{"admin not loopback", c.Admin.IsLoopback(), false},
		{"admin token", c.Admin.Token.Reveal(), "admin-token-value"},
		{"redis addrs", len(c.Redis.Addrs), 3},
		{"redis key prefix", c.Redis.KeyPrefix, "team-a:"},
		{"redis expected replicas", c.Redis.ExpectedReplicas, 3},
		{"redis lease ttl", c.Redis.LeaseTTL, 20 * time.Second},
		{"classes replace the defaults", len(c.Classes), 2},
		{"class share absent means 1", c.Classes[0].Share, 1.0},
		{"class share", c.Classes[1].Share, 0.25},
		{"class headroom", *c.Classes[0].Headroom, 0.1},
		{"class headroom 0 is kept", *c.Classes[1].Headroom, 0.0},
		{"class commit_within", c.Classes[0].CommitWithin, 250 * time.Millisecond},
		{"class commit_within absent means 0", c.Classes[1].CommitWithin, time.Duration(0)},
		{"routes as written", len(c.Routes), 2},
		{"default provider", c.DefaultProvider().Name, "azure"},
		{"trailing slash trimmed", c.Providers[0].BaseURL, "https://example.openai.azure.com/openai/deployments"},
		{"default provider prefix", c.Providers[0].Prefix, ""},
		{"explicit prefix", c.Providers[1].Prefix, "/ollama/v2"},
		{"response header timeout", c.Providers[0].ResponseHeaderTimeout, time.Minute},
		{"model limits default bursts", c.Providers[0].Models[0].Limits.RequestBurst, time.Second},
		{"model default max tokens", c.Providers[0].Models[0].DefaultMaxTokens, 1024},
		{"second provider defaults", c.Providers[1].Retry.MaxAttempts, 3},
		{"second provider header timeout follows timeout", c.Providers[1].ResponseHeaderTimeout, 10 * time.Minute},
		{"stream", c.DeadLetter.Stream, "{sluice}:dlq"},
	}
	for _, tt := range checks {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestEnvFixture(t *testing.T) {
	env := map[string]string{
		"ADMIN_TOKEN":    "admin-from-env",
		"REDIS_URL":      "rediss://redis.internal:6380/2",
		"UPSTREAM_HOST":  "llm.internal:8443",
		"OPENAI_API_KEY": "sk-from-env",
	}
	c := MustParseFile(t, "testdata/env.good.yaml", mapEnv(env))
	checks := []struct {
		name, got, want string
	}{
		{"${VAR}", c.Admin.Token.Reveal(), "admin-from-env"},
		{"$VAR", c.Redis.URL, "rediss://redis.internal:6380/2"},
		{"inside a value", c.Providers[0].BaseURL, "https://llm.internal:8443/v1"},
		{"quoted", c.Providers[0].APIKey.Reveal(), "sk-from-env"},
		{"unset is empty", c.Providers[0].TLS.ServerName, ""},
		{"$$", c.DeadLetter.File, "cost-in-$.jsonl"},
	}
	for _, tt := range checks {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestExpand(t *testing.T) {
	env := mapEnv(map[string]string{"A": "alpha", "B_2": "beta"})
	tests := []struct {
		in, want string
	}{
		{"${A}", "alpha"},
		{"$A", "alpha"},
		{"x${A}y", "xalphay"},
		{"$B_2/$A", "beta/alpha"},
		{"${UNSET}", ""},
		{"$UNSET", ""},
		{"$$", "$"},
		{"$${A}", "${A}"},
		{"$$A", "$A"},
		{"a$$$$b", "a$$b"},
		{"price: 5$", "price: 5$"},
		{"$ alone", "$ alone"},
		{"no dollars", "no dollars"},
	}
	for _, tt := range tests {
		if got := expand(tt.in, env); got != tt.want {
			t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := expand("${A}", nil); got != "" {
		t.Errorf("expand(${A}, nil getenv) = %q, want empty", got)
	}
}

func TestLoadExpandsProcessEnv(t *testing.T) {
	t.Setenv("SLUICE_TEST_KEY", "sk-process-env")
	unsetEnv(t, "SLUICE_TEST_UNSET")
	path := filepath.Join(t.TempDir(), "c.yaml")
	text := "providers:\n  - name: a\n    base_url: https://x.example${SLUICE_TEST_UNSET}\n    api_key: ${SLUICE_TEST_KEY}\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Providers[0].APIKey.Reveal(), "sk-process-env"; got != want {
		t.Errorf("api_key = %q, want %q", got, want)
	}
	if got, want := c.Providers[0].BaseURL, "https://x.example"; got != want {
		t.Errorf("base_url = %q, want %q", got, want)
	}
}

func TestRoutesDefault(t *testing.T) {
	text := `
classes:
  - {name: default, max_wait: 1m, max_queue: 10}
providers:
  - {name: a, base_url: "https://a.example"}
`
	c, err := Parse([]byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Routes != nil {
		t.Errorf("Routes = %v, want none without a class named low", c.Routes)
	}
}

func TestClassHeadroomDefaults(t *testing.T) {
	text := `
classes:
  - {name: a, max_wait: 1s, max_queue: 1}
  - {name: b, max_wait: 1s, max_queue: 1}
  - {name: c, max_wait: 1s, max_queue: 1, headroom: 0}
  - {name: d, max_wait: 1s, max_queue: 1, headroom: 0.5}
default_class: a
providers: [{name: p, base_url: 'https://p.example'}]
`
	c, err := Parse([]byte(text), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	// The first class keeps nothing free, the others 20% unless they say
	// otherwise; an explicit 0 is not the default.
	for i, want := range []float64{0, 0.2, 0, 0.5} {
		if got := c.Classes[i].Headroom; got == nil || *got != want {
			t.Errorf("classes[%s].headroom = %v, want %v", c.Classes[i].Name, got, want)
		}
	}
	// Default() sets the same, so the shipped config may leave them out;
	// and the pointers are fresh on every call.
	d := Default()
	*d.Classes[1].Headroom = 0.9
	if got := *Default().Classes[1].Headroom; got != 0.2 {
		t.Errorf("Default() shares headroom between calls: got %v, want 0.2", got)
	}
}

func TestSingleProviderBecomesDefault(t *testing.T) {
	text := "providers:\n  - {name: a, base_url: 'https://a.example', prefix: /a}\n"
	c, err := Parse([]byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.DefaultProvider(); p == nil || p.Name != "a" || p.Prefix != "/a" {
		t.Errorf("DefaultProvider() = %+v, want a with prefix /a", p)
	}
	if got := (&Config{}).DefaultProvider(); got != nil {
		t.Errorf("DefaultProvider() of an empty config = %+v, want nil", got)
	}
}

func TestDefaultIsFresh(t *testing.T) {
	a := Default()
	a.Classes[0].Name = "changed"
	a.Routes[0].Class = "changed"
	if b := Default(); b.Classes[0].Name != "critical" || b.Routes[0].Class != "low" {
		t.Errorf("Default() shares state between calls: %+v", b)
	}
	c := Default()
	c.Providers = []Provider{{Name: "a", BaseURL: "https://a.example"}}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("Default() plus one provider: Validate() = %v, want nil", err)
	}
}

func TestValidateZeroConfig(t *testing.T) {
	// A Config nobody defaulted is checked as written: every problem is
	// reported and nothing panics.
	err := (&Config{Providers: make([]Provider, 2), Classes: make([]Class, 1), Routes: make([]Route, 1)}).Validate()
	if err == nil {
		t.Fatal("Validate() of a zero config = nil")
	}
	for _, want := range []string{"listen: required", "admin.listen: required", "log_level:", "classes[0].name: required",
		"routes[0].path: required", "providers[1].base_url: required", "deadletter.file: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() error lacks %q:\n%v", want, err)
		}
	}
}

func TestListenersMayBothUsePortZero(t *testing.T) {
	text := "listen: 127.0.0.1:0\nadmin: {listen: '127.0.0.1:0'}\nproviders: [{name: a, base_url: 'http://127.0.0.1:1'}]\n"
	if _, err := Parse([]byte(text), nil); err != nil {
		t.Errorf("Parse(both on port 0) = %v, want nil", err)
	}
	text = "listen: :8080\nadmin: {listen: '127.0.0.1:8080'}\nproviders: [{name: a, base_url: 'http://127.0.0.1:1'}]\n"
	if _, err := Parse([]byte(text), nil); err == nil || !strings.Contains(err.Error(), "admin.listen: must differ from listen") {
		t.Errorf("Parse(admin under a wildcard listen on the same port) = %v, want a clash", err)
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:9090", true},
		{"127.1.2.3:9090", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{"LocalHost:9090", true},
		{":9090", false},
		{"0.0.0.0:9090", false},
		{"[::]:9090", false},
		{"10.0.0.1:9090", false},
		{"example.com:9090", false},
		{"localhost.example.com:9090", false},
		{"127.0.0.1", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := (Admin{Listen: tt.listen}).IsLoopback(); got != tt.want {
			t.Errorf("Admin{Listen: %q}.IsLoopback() = %v, want %v", tt.listen, got, tt.want)
		}
	}
}

func TestSharedMode(t *testing.T) {
	tests := []struct {
		redis Redis
		want  bool
	}{
		{Redis{}, false},
		{Redis{Password: "x"}, false},
		{Redis{URL: "redis://localhost:6379"}, true},
		{Redis{Addrs: []string{"a:1"}}, true},
	}
	for _, tt := range tests {
		if got := (&Config{Redis: tt.redis}).SharedMode(); got != tt.want {
			t.Errorf("SharedMode() with %+v = %v, want %v", tt.redis, got, tt.want)
		}
	}
}

func TestSecretRedaction(t *testing.T) {
	secrets := []string{"sk-SECRET-api-key", "SECRET-admin-token", "SECRET-redis-pw"}
	c := MustParseFile(t, "../config.yaml", mapEnv(map[string]string{
		"OPENAI_API_KEY":     secrets[0],
		"SLUICE_ADMIN_TOKEN": secrets[1],
	}))
	c.Redis.Password = Secret(secrets[2])

	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%t"} {
		outputs["fmt "+verb] = fmt.Sprintf(verb, c)
		outputs["fmt "+verb+" of the value"] = fmt.Sprintf(verb, *c)
		outputs["fmt "+verb+" of a secret"] = fmt.Sprintf(verb, c.Admin.Token)
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(js)
	ys, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(ys)
	for _, kind := range []string{"json", "text"} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewJSONHandler(&buf, nil)
		if kind == "text" {
			h = slog.NewTextHandler(&buf, nil)
		}
		slog.New(h).Info("loaded", "config", c, "token", c.Admin.Token, slog.Any("key", c.Providers[0].APIKey))
		outputs["slog "+kind] = buf.String()
	}

	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) || strings.Contains(out, fmt.Sprintf("%x", s)) {
				t.Errorf("%s output reveals %q:\n%s", name, s, out)
			}
		}
		if !strings.Contains(out, "redacted") && !strings.Contains(out, fmt.Sprintf("%x", redacted)) {
			t.Errorf("%s output does not show the redaction:\n%s", name, out)
		}
	}

	if got := c.Providers[0].APIKey.Reveal(); got != secrets[0] {
		t.Errorf("Reveal() = %q, want %q", got, secrets[0])
	}
}

func TestSecretForms(t *testing.T) {
	set, empty := Secret("v"), Secret("")
	var fromJSON string
	js, _ := json.Marshal(set)
	if err := json.Unmarshal(js, &fromJSON); err != nil {
		t.Fatalf("json.Marshal(secret) = %s, not a JSON string: %v", js, err)
	}
	ys, _ := yaml.Marshal(set)
	tests := []struct {
		name, got, want string
	}{
		{"String", set.String(), "<redacted>"},
		{"GoString", set.GoString(), "<redacted>"},
		{"%v", fmt.Sprintf("%v", set), "<redacted>"},
		{"%q", fmt.Sprintf("%q", set), `"<redacted>"`},
		{"json", fromJSON, "<redacted>"},
		{"yaml", string(ys), "<redacted>\n"},
		{"LogValue", set.LogValue().String(), "<redacted>"},
		{"empty String", empty.String(), ""},
		{"empty %#v", fmt.Sprintf("%#v", empty), ""},
		{"empty LogValue", empty.LogValue().String(), ""},
		{"Reveal", set.Reveal(), "v"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// fuzzEnv is the environment FuzzParse expands against.
func fuzzEnv(name string) string {
	switch name {
	case "OPENAI_API_KEY":
		return "sk-fuzz"
	case "SLUICE_ADMIN_TOKEN":
		return "fuzz-token"
	case "HOST":
		return "api.example.com"
	}
	return ""
}

// redactSecrets sets every non-empty secret in c to its redacted form, which
// is what a YAML round trip makes of it.
func redactSecrets(c *Config) {
	redact := func(s *Secret) {
		if *s != "" {
			*s = redacted
		}
	}
	redact(&c.Admin.Token)
	redact(&c.Redis.Password)
	for i := range c.Providers {
		redact(&c.Providers[i].APIKey)
	}
}

// FuzzParse checks that Parse never panics, that what it accepts is valid,
// and that an accepted config survives being written back out as YAML.
//
// The round trip has two deliberate asymmetries. Secrets marshal redacted,
// so the re-parsed config is compared with one whose secrets were redacted
// the same way. And Parse expands $ in its input, so the marshalled text has
// every $ doubled first; $$ is the escape for a literal $.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, "../config.yaml")
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("providers: [{name: a, base_url: 'http://$HOST', api_key: '$$${OPENAI_API_KEY}'}]"))
	f.Add([]byte("providers: [{name: a, base_url: 'https://h', models: [{name: m}]}]\nclasses: [{name: x, max_wait: 1s, max_queue: 1, share: 1e-300}]\ndefault_class: x"))

	// Strings that YAML encoders are known to mangle, in every kind of free
	// text field. JSON quoting is valid YAML.
	for _, s := range []string{" lead", "trail ", "a: b", "#x", "- x", "null", "~", "0x10", "1e3",
		"yes", "<<", "&a", "*a", "!t", "|", ">", "---", "'", "\"", "\\", "$", "$$", "\n", "a\n", "\r\n",
		"\t", "\x7f", "\u0085", "\u00a0", "\u2028", "\ufeff", "\U0001F600"} {
		q, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(fmt.Sprintf("providers: [{name: a, base_url: 'https://h', models: [{name: %s}],"+
			" tls: {server_name: %[1]s}}]\nredis: {addrs: ['h:1'], master_name: %[1]s}\n"+
			"deadletter: {file: %[1]s, stream: %[1]s}", q)))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		c, err := Parse(data, fuzzEnv)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config with error %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("yaml.Marshal(%+v): %v", c, err)
		}
		again, err := Parse([]byte(strings.ReplaceAll(string(out), "$", "$$")), fuzzEnv)
		if err != nil {
			t.Fatalf("re-parsing the marshalled config: %v\n%s", err, out)
		}
		redactSecrets(c)
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the config:\n got %#v\nwant %#v\nyaml:\n%s", again, c, out)
		}
	})
}
