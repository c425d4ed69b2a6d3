// Package config loads, expands, defaults and validates Sluice's YAML
// configuration. [Load] is the only way main builds a [Config]: it expands
// ${VAR} references from the environment, decodes strictly (an unknown key is
// an error), fills in defaults and runs [Config.Validate], so a Config that
// Load returns is complete and valid, and every problem found is reported at
// once with the key path it concerns. A Config is plain data: nothing in this
// package changes it after Load returns, so it is safe for concurrent reads.
// Only main imports this package; it maps a Config to each component's own
// settings.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults. They are constants so that no caller can change them; [Default]
// and the per-element defaulting below are built from them.
const (
	defaultListen          = "127.0.0.1:8080"
	defaultMaxBodyBytes    = 32 << 20
	defaultShutdownGrace   = 30 * time.Second
	defaultLogLevel        = "info"
	defaultLogFormat       = "json"
	defaultAdminListen     = "127.0.0.1:9090"
	defaultDialTimeout     = 200 * time.Millisecond
	defaultCommandTimeout  = 50 * time.Millisecond
	defaultClassName       = "default"
	defaultEmbeddingsPath  = "/v1/embeddings"
	defaultEmbeddingsClass = "low"
	defaultHeadroom        = 0.2 // every class but the first
	defaultStream          = "sluice:deadletters"
	defaultFile            = "deadletters.jsonl"
	defaultTokenEstimator  = "bytes"
	maxWeight              = 1000

	defaultTimeout           = 10 * time.Minute
	defaultConnectTimeout    = 10 * time.Second
	defaultStreamIdleTimeout = 2 * time.Minute
	defaultMaxConns          = 512
	defaultRequestBurst      = time.Second
	defaultTokenBurst        = 60 * time.Second
	defaultMaxAttempts       = 3
	defaultBaseDelay         = 500 * time.Millisecond
	defaultMaxDelay          = 30 * time.Second
	defaultMaxPause          = 2 * time.Minute
	defaultFailureThreshold  = 5
	defaultOpenFor           = 30 * time.Second
	defaultHalfOpenRequests  = 1
)

// Config is the whole of Sluice's configuration, as read from config.yaml.
//
// Top-level keys and the keys of the admin, redis and deadletter sections
// keep the default shown when they are absent from the file; a key that is
// present is taken as written (so "max_body_bytes: 0" is an error, not a
// request for the default). Inside list elements (classes, providers,
// models) every field left at its zero value takes its default.
type Config struct {
	// Listen is the proxy's host:port. Default "127.0.0.1:8080". Port 0
	// picks a free port.
	Listen string `yaml:"listen"`
	// MaxBodyBytes caps a request body, in bytes; larger bodies get 413.
	// Default 32 MiB (33554432). Must be > 0.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ShutdownGrace is how long queued and in-flight requests get to finish
	// after SIGTERM before they are dead-lettered. Default 30s. Must be >= 0;
	// 0 dead-letters whatever is still pending at once.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is json or text. Default json.
	LogFormat string `yaml:"log_format"`
	// Admin configures the admin and metrics listener.
	Admin Admin `yaml:"admin"`
	// Redis configures shared mode; all empty means single-replica mode.
	Redis Redis `yaml:"redis"`
	// Classes are the priority classes, highest priority first. When the
	// list is absent or empty it defaults to critical (max_wait 30s,
	// max_queue 1000), high (1m, 5000), default (2m, 10000) and low (1h,
	// 100000, share 0.5), each below critical with headroom 0.2. A list
	// that is given replaces the defaults whole.
	Classes []Class `yaml:"classes"`
	// DefaultClass is the class of a request without X-Priority and without
	// a matching route. Default "default". Must name a class.
	DefaultClass string `yaml:"default_class"`
	// Routes give paths their own default class. When the list is absent or
	// empty it defaults to [{path: /v1/embeddings, class: low}] if a class
	// named low exists, and to no routes otherwise. To give embeddings the
	// default class, route /v1/embeddings to it explicitly.
	Routes []Route `yaml:"routes"`
	// Providers are the upstream APIs. At least one is required.
	Providers []Provider `yaml:"providers"`
	// DeadLetter configures where undeliverable requests are recorded.
	DeadLetter DeadLetter `yaml:"deadletter"`
	// TokenEstimator is how prompt tokens are estimated before a request is
	// sent: "bytes" (text bytes / 3, corrected per model from the usage the
	// provider reports; cheap) or "tiktoken" (an offline BPE tokenizer;
	// exact for OpenAI models, about ten times the CPU). Default "bytes".
	TokenEstimator string `yaml:"token_estimator"`
	// Idempotency configures how Idempotency-Key outcomes are kept.
	Idempotency Idempotency `yaml:"idempotency"`
}

// Idempotency configures the keeping of Idempotency-Key outcomes: in Redis
// in shared mode, in process otherwise.
type Idempotency struct {
	// Retention is how long a completed key's outcome is kept. Default
	// 24h. Must be > 0.
	Retention time.Duration `yaml:"retention"`
	// LockTTL is how long a key stays taken after the replica sending its
	// request stopped renewing it (crashed). Default 30s. Must be >= 1s.
	LockTTL time.Duration `yaml:"lock_ttl"`
	// MaxBodyBytes is the largest response kept; a larger one's key is
	// remembered without it, and duplicates get 409. Default 1 MiB. Must
	// be > 0.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxKeys bounds the keys kept in process (single-replica mode); the
	// least recently used completed ones go first. Default 100000. Must be
	// > 0.
	MaxKeys int `yaml:"max_keys"`
}

// Admin configures the admin listener: metrics, health, status page and the
// dead-letter API.
type Admin struct {
	// Listen is the admin host:port. Default "127.0.0.1:9090". Must differ
	// from the proxy's listen address (unless both use port 0).
	Listen string `yaml:"listen"`
	// Token is the bearer token the admin routes other than health and
	// metrics require. Empty means no token is checked, which is only
	// allowed when Listen is a loopback address (see [Admin.IsLoopback]).
	Token Secret `yaml:"token"`
}

// Redis configures the Redis that replicas share quotas, pauses, breaker
// state and dead letters through. URL and Addrs are mutually exclusive; with
// neither, Sluice runs in single-replica mode (see [Config.SharedMode]).
type Redis struct {
	// URL is a redis://, rediss:// or unix:// URL for a standalone server.
	// Empty means not set. A password may be given here, but it is then part
	// of a plain string: prefer Password, which is redacted everywhere.
	URL string `yaml:"url"`
	// Addrs lists host:port seed addresses for a Cluster, or the sentinels
	// when MasterName is set. Empty means not set.
	Addrs []string `yaml:"addrs"`
	// MasterName is the Sentinel master name; it requires Addrs. Empty means
	// no Sentinel.
	MasterName string `yaml:"master_name"`
	// Password authenticates to Redis (and to the sentinels). Empty means
	// none, or whatever URL carries.
	Password Secret `yaml:"password"`
	// DialTimeout bounds connecting to Redis. Default 200ms. Must be > 0.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// CommandTimeout bounds each Redis command or script call. Default
	// 50ms. Must be > 0.
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// KeyPrefix starts every quota, lease and breaker key. Default
	// "sluice:". Replicas that share quotas must share it.
	KeyPrefix string `yaml:"key_prefix"`
	// ExpectedReplicas is how many replicas share the quotas. While Redis
	// is unreachable each replica limits itself, alone, to 0.9 /
	// ExpectedReplicas of every quota (clamped further by what the
	// provider reports left). Default 1. Must be >= 1.
	ExpectedReplicas int `yaml:"expected_replicas"`
	// LeaseTTL is how long the concurrency slots of a replica that stopped
	// (crashed, or lost Redis) stay taken. Default 15s. Must be >= 1s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// Class is a priority class, named by the X-Priority request header.
type Class struct {
	// Name is the class name: lowercase letters, digits, '_' and '-',
	// starting with a letter or digit. Required, unique.
	Name string `yaml:"name"`
	// MaxWait is the longest a request of this class waits in the queue;
	// X-Sluice-Max-Wait can only shorten it. Required, > 0.
	MaxWait time.Duration `yaml:"max_wait"`
	// MaxQueue is how many requests of this class may wait per provider;
	// beyond it requests get 429. Required, > 0.
	MaxQueue int `yaml:"max_queue"`
	// Share is the fraction of each quota this class may use, keeping the
	// rest for the classes above it. 0 (absent) means 1, the whole quota.
	// Must be in (0, 1].
	Share float64 `yaml:"share"`
	// MaxAttempts caps upstream attempts for this class. 0 means the
	// provider's retry.max_attempts. Must be >= 0.
	MaxAttempts int `yaml:"max_attempts"`
	// Weight is the class's share of dispatches while several classes
	// wait: a class of weight 8 goes out eight times as often as one of
	// weight 1, so lower classes slow down under load but never stop. 0
	// (absent) means 2^(n-1-i) for the i-th of n classes (8, 4, 2, 1 for
	// the defaults). Must be in [0, 1000].
	Weight int `yaml:"weight"`
	// Headroom is the fraction of every quota's burst that a request of
	// this class must leave unused: it goes only while, after its charge,
	// that much of each rate bucket (provider, model, and the class's own
	// share ceiling) is still free, or, if it is larger than the rest,
	// only when the bucket is full. The default, 0.2, leaves the top 20%
	// of every bucket's burst to the classes above, across all replicas
	// in shared mode, where the bucket is first come, first served and no
	// local queue can order the replicas. It costs nothing when only one
	// class has traffic except that burst: the rate is the same, a burst
	// just ends 20% earlier. Absent means 0 for the first (highest) class
	// and 0.2 for every other class. Must be in [0, 1).
	Headroom *float64 `yaml:"headroom"`
	// CommitWithin lets a request of this class, when it is next in line,
	// commit a slot up to this far ahead instead of only one that is free
	// now, and wait for it with its place kept. In shared mode replicas
	// race for each slot as it frees up; a class that may commit ahead
	// cannot be starved by that race, so the top class benefits from about
	// 250ms (FIELD-NOTES §6.4); single-replica mode gains nothing from it.
	// While a committed slot is pending, the provider's queue waits for
	// it. 0 (absent) means only slots free now. Must be >= 0 and at most
	// max_wait.
	CommitWithin time.Duration `yaml:"commit_within"`
}

// Route gives requests to a path a default class, used when a request has
// no X-Priority header.
type Route struct {
	// Path is the API path after any provider prefix, e.g.
	// /v1/embeddings. Required, must start with "/", unique.
	Path string `yaml:"path"`
	// Class names the class. Required, must name a class.
	Class string `yaml:"class"`
}

// Provider is one upstream API and its limits.
type Provider struct {
	// Name identifies the provider in paths, metrics, logs and Redis keys:
	// lowercase letters, digits, '_' and '-', starting with a letter or
	// digit. Required, unique.
	Name string `yaml:"name"`
	// BaseURL is the upstream's absolute http or https URL; the client's
	// path is appended to it. It may have a path, but no query, fragment or
	// userinfo (put credentials in APIKey). Trailing slashes are removed.
	// Required.
	BaseURL string `yaml:"base_url"`
	// Prefix is the path under which the proxy serves this provider
	// (/anthropic/v1/messages). Default "/"+Name for a non-default provider
	// and "" for the default provider, which also serves /v1/... . It must
	// start with "/", not end with "/", consist of path segments of
	// letters, digits and "-._~" other than "." and "..", be unique and not
	// nested under another provider's prefix, and must not be "/v1", start
	// with "/v1/" or start with "/admin".
	Prefix string `yaml:"prefix"`
	// Default marks the provider that serves /v1/... . Exactly one provider
	// is the default; a provider that is alone becomes it automatically.
	Default bool `yaml:"default"`
	// APIKey, when set, replaces the client's Authorization header. Empty
	// means the client's Authorization is passed through.
	APIKey Secret `yaml:"api_key"`
	// Timeout bounds a whole upstream attempt, streamed body included.
	// Default 10m. Must be > 0.
	Timeout time.Duration `yaml:"timeout"`
	// ConnectTimeout bounds dialing the upstream, TLS handshake included.
	// Default 10s. Must be > 0.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers. Default Timeout. Must be > 0 and <= Timeout.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// StreamIdleTimeout bounds the gap between two chunks of a streamed
	// response. Default 2m. Must be > 0.
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	// MaxConns caps open connections to the upstream. Default 512. Must be
	// > 0.
	MaxConns int `yaml:"max_conns"`
	// TLS configures how the upstream's certificate is checked.
	TLS ProviderTLS `yaml:"tls"`
	// Limits are the provider account's quotas.
	Limits Limits `yaml:"limits"`
	// Retry configures retries of failed upstream attempts.
	Retry Retry `yaml:"retry"`
	// Breaker configures the provider's circuit breaker.
	Breaker Breaker `yaml:"breaker"`
	// Models are optional per-model quotas, held in addition to Limits.
	Models []ModelLimits `yaml:"models"`
	// DefaultMaxTokens is the completion size assumed when estimating a
	// request's tokens if it sets neither max_tokens nor
	// max_completion_tokens and its model has no default of its own. 0
	// means none: such a request is charged its prompt up front and its
	// completion when the usage arrives, as OpenAI itself counts it. Must
	// be >= 0.
	DefaultMaxTokens int `yaml:"default_max_tokens"`
}

// ProviderTLS configures TLS to one upstream. The zero value verifies the
// upstream against the system roots.
type ProviderTLS struct {
	// CAFile is a PEM file with at least one certificate, used instead of
	// the system roots. A relative path is relative to the working
	// directory. Empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify disables certificate verification. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// ServerName overrides the name the certificate is checked against.
	// Empty means the host of BaseURL.
	ServerName string `yaml:"server_name"`
}

// ModelLimits are quotas for one model of a provider.
type ModelLimits struct {
	// Name is the model as it appears in the request body's "model" field.
	// Required, unique within the provider.
	Name string `yaml:"name"`
	// Limits are the model's quotas; each field defaults as in [Limits].
	Limits Limits `yaml:"limits"`
	// DefaultMaxTokens is the completion size assumed when estimating a
	// request's tokens if it sets neither max_tokens nor
	// max_completion_tokens. 0 means not configured. Must be >= 0.
	DefaultMaxTokens int `yaml:"default_max_tokens"`
}

// Limits are quotas, paced rather than windowed: a limit of N per minute
// releases N/60 per second, and at most a burst's worth goes out at once.
type Limits struct {
	// RequestsPerMinute caps requests. 0 means unlimited. Must be >= 0.
	RequestsPerMinute int `yaml:"requests_per_minute"`
	// TokensPerMinute caps estimated tokens (prompt plus completion). 0
	// means unlimited. Must be >= 0.
	TokensPerMinute int `yaml:"tokens_per_minute"`
	// MaxConcurrency caps requests in flight. 0 means unlimited. Must be
	// >= 0.
	MaxConcurrency int `yaml:"max_concurrency"`
	// RequestBurst is how much of the request rate may go out at once,
	// as a duration's worth. Default 1s. Must be > 0.
	RequestBurst time.Duration `yaml:"request_burst"`
	// TokenBurst is how much of the token rate may go out at once, as a
	// duration's worth; 60s matches the providers' own token buckets.
	// Default 60s. Must be > 0.
	TokenBurst time.Duration `yaml:"token_burst"`
}

// Retry configures retries: exponential backoff with full jitter.
type Retry struct {
	// MaxAttempts caps upstream attempts, the first included. Default 3.
	// Must be >= 1.
	MaxAttempts int `yaml:"max_attempts"`
	// BaseDelay is the backoff before the first retry. Default 500ms. Must
	// be > 0.
	BaseDelay time.Duration `yaml:"base_delay"`
	// MaxDelay caps the backoff. Default 30s. Must be >= BaseDelay.
	MaxDelay time.Duration `yaml:"max_delay"`
	// MaxPause caps how long a provider's 429 (Retry-After, retry-after-ms,
	// x-ratelimit-reset-*) may pause it, so that a hostile or broken value
	// cannot stop traffic for days. Default 2m. Must be > 0.
	MaxPause time.Duration `yaml:"max_pause"`
}

// Breaker configures a provider's circuit breaker.
type Breaker struct {
	// FailureThreshold is how many consecutive failures open the breaker.
	// Default 5. Must be >= 1.
	FailureThreshold int `yaml:"failure_threshold"`
	// OpenFor is how long the breaker stays open before probing. Default
	// 30s. Must be > 0.
	OpenFor time.Duration `yaml:"open_for"`
	// HalfOpenRequests is how many probes a half-open breaker lets through.
	// Default 1. Must be >= 1.
	HalfOpenRequests int `yaml:"half_open_requests"`
}

// DeadLetter configures the dead-letter store.
type DeadLetter struct {
	// Stream is the Redis stream used in shared mode. Default
	// "sluice:deadletters". Required.
	Stream string `yaml:"stream"`
	// File is the JSON-lines file used in single-replica mode, and as the
	// spool while Redis is away. A relative path is relative to the working
	// directory. Default "deadletters.jsonl". Required.
	File string `yaml:"file"`
	// MaxLen keeps at most this many entries in the stream. 0 means
	// untrimmed. Must be >= 0.
	MaxLen int64 `yaml:"max_len"`
	// RedactHeaders names request headers (case-insensitive) whose values
	// are redacted in dead-letter records. Empty means none beyond what the
	// dead-letter writer always redacts.
	RedactHeaders []string `yaml:"redact_headers"`
}

// Default returns a new Config holding every default: no providers, the
// four default classes and the embeddings route. It does not validate
// (without providers it would not), and each call returns fresh values the
// caller may change.
func Default() *Config {
	return &Config{
		Listen:         defaultListen,
		MaxBodyBytes:   defaultMaxBodyBytes,
		ShutdownGrace:  defaultShutdownGrace,
		LogLevel:       defaultLogLevel,
		LogFormat:      defaultLogFormat,
		TokenEstimator: defaultTokenEstimator,
		Admin:          Admin{Listen: defaultAdminListen},
		Redis: Redis{
			DialTimeout:      defaultDialTimeout,
			CommandTimeout:   defaultCommandTimeout,
			KeyPrefix:        "sluice:",
			ExpectedReplicas: 1,
			LeaseTTL:         15 * time.Second,
		},
		Classes:      defaultClasses(),
		DefaultClass: defaultClassName,
		Routes:       []Route{{Path: defaultEmbeddingsPath, Class: defaultEmbeddingsClass}},
		DeadLetter: DeadLetter{
			Stream: defaultStream,
			File:   defaultFile,
		},
		Idempotency: Idempotency{
			Retention:    24 * time.Hour,
			LockTTL:      30 * time.Second,
			MaxBodyBytes: 1 << 20,
			MaxKeys:      100000,
		},
	}
}

func defaultClasses() []Class {
	return []Class{
		{Name: "critical", MaxWait: 30 * time.Second, MaxQueue: 1000, Share: 1, Weight: 8, Headroom: fraction(0)},
		{Name: "high", MaxWait: time.Minute, MaxQueue: 5000, Share: 1, Weight: 4, Headroom: fraction(defaultHeadroom)},
		{Name: defaultClassName, MaxWait: 2 * time.Minute, MaxQueue: 10000, Share: 1, Weight: 2, Headroom: fraction(defaultHeadroom)},
		{Name: defaultEmbeddingsClass, MaxWait: time.Hour, MaxQueue: 100000, Share: 0.5, Weight: 1, Headroom: fraction(defaultHeadroom)},
	}
}

// fraction returns a pointer to a new copy of f.
func fraction(f float64) *float64 { return &f }

// defaultHeadroomOf is the headroom of the i-th class when it sets none:
// the first class keeps nothing free, the others leave the top of each
// burst to the classes above.
func defaultHeadroomOf(i int) float64 {
	if i == 0 {
		return 0
	}
	return defaultHeadroom
}

// defaultWeight halves the weight from one class to the next, so each class
// gets twice the dispatches of the one below it; capped at maxWeight.
func defaultWeight(i, n int) int {
	w := 1
	for range n - 1 - i {
		if w*2 > maxWeight {
			break
		}
		w *= 2
	}
	return w
}

// Load reads the YAML file at path and returns the config it describes,
// built as [Parse] builds it with the process environment. Every error names
// path; a validation error lists each problem on its own line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data, os.Getenv)
	if err != nil {
		return nil, prefixErrors(path, err)
	}
	return c, nil
}

// Parse builds a config from YAML text:
//
//  1. ${VAR} and $VAR are replaced by getenv(VAR) in the raw text, before
//     any YAML is read (see [os.Expand]); an unset variable becomes "", and
//     $$ stands for a literal $. Because expansion is textual, a value that
//     may contain YAML syntax (": ", " #", a leading quote or "&") must be
//     quoted in the file: api_key: "${OPENAI_API_KEY}". A nil getenv
//     expands every variable to "".
//  2. The text is decoded strictly: an unknown key, a value of the wrong
//     type, a duration without a unit ("30" rather than "30s"), a repeated
//     key or a second YAML document is an error. An empty document is all
//     defaults.
//  3. Defaults fill what the text left out, as documented on each field.
//  4. [Config.Validate] checks the result.
//
// On error Parse returns a nil Config.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	c, err := decode(expand(string(data), getenv))
	if err != nil {
		return nil, err
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// expand performs step 1 of [Parse]. os.Expand passes the name "$" to the
// mapping for "$$" (it is one of the shell's special parameters), so mapping
// it to itself is what makes "$$" an escape.
func expand(s string, getenv func(string) string) string {
	return os.Expand(s, func(name string) string {
		if name == "$" {
			return "$"
		}
		if getenv == nil {
			return ""
		}
		return getenv(name)
	})
}

// decode performs step 2 of [Parse], onto a copy of [Default] so that
// absent keys keep their defaults. Routes start empty because their default
// depends on the classes the text chooses.
func decode(text string) (*Config, error) {
	c := Default()
	c.Routes = nil
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		return nil, explainDecodeError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: only one document is allowed", extra.Line)
	}
	return c, nil
}

// explainDecodeError adds a hint to yaml.v3's message for a number given
// where a duration is expected: yaml.v3 refuses bare integers for
// time.Duration (v2 read them as nanoseconds) but does not say why.
func explainDecodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		if strings.HasSuffix(m, " into time.Duration") {
			m += ` (a duration needs a unit, e.g. "30s", "500ms", "2m")`
		}
		msgs[i] = m
	}
	return &yaml.TypeError{Errors: msgs}
}

// prefixErrors puts path in front of err, and in front of each problem when
// err joins several (as [Config.Validate]'s does), so that every line of the
// message reads "path: key: problem".
func prefixErrors(path string, err error) error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return fmt.Errorf("%s: %w", path, err)
	}
	errs := joined.Unwrap()
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s: %w", path, e)
	}
	return errors.Join(out...)
}

// applyDefaults performs step 3 of [Parse]. It also makes empty lists nil,
// so that a config and its own YAML encoding parse to equal values.
func (c *Config) applyDefaults() {
	if len(c.Classes) == 0 {
		c.Classes = defaultClasses()
	}
	for i := range c.Classes {
		if c.Classes[i].Share == 0 {
			c.Classes[i].Share = 1
		}
		if c.Classes[i].Weight == 0 {
			c.Classes[i].Weight = defaultWeight(i, len(c.Classes))
		}
		if c.Classes[i].Headroom == nil {
			c.Classes[i].Headroom = fraction(defaultHeadroomOf(i))
		}
	}
	if len(c.Routes) == 0 {
		c.Routes = nil
		if c.hasClass(defaultEmbeddingsClass) {
			c.Routes = []Route{{Path: defaultEmbeddingsPath, Class: defaultEmbeddingsClass}}
		}
	}
	if len(c.Redis.Addrs) == 0 {
		c.Redis.Addrs = nil
	}
	if len(c.DeadLetter.RedactHeaders) == 0 {
		c.DeadLetter.RedactHeaders = nil
	}
	if len(c.Providers) == 0 {
		c.Providers = nil
	}
	if len(c.Providers) == 1 {
		c.Providers[0].Default = true
	}
	for i := range c.Providers {
		c.Providers[i].applyDefaults()
	}
}

func (c *Config) hasClass(name string) bool {
	for _, cl := range c.Classes {
		if cl.Name == name {
			return true
		}
	}
	return false
}

func (p *Provider) applyDefaults() {
	p.BaseURL = strings.TrimRight(p.BaseURL, "/")
	// An invalid name makes no usable prefix; Validate reports the name.
	if p.Prefix == "" && !p.Default && validName(p.Name) {
		p.Prefix = "/" + p.Name
	}
	setDuration(&p.Timeout, defaultTimeout)
	setDuration(&p.ConnectTimeout, defaultConnectTimeout)
	setDuration(&p.ResponseHeaderTimeout, p.Timeout)
	setDuration(&p.StreamIdleTimeout, defaultStreamIdleTimeout)
	setInt(&p.MaxConns, defaultMaxConns)
	p.Limits.applyDefaults()
	setInt(&p.Retry.MaxAttempts, defaultMaxAttempts)
	setDuration(&p.Retry.BaseDelay, defaultBaseDelay)
	setDuration(&p.Retry.MaxDelay, defaultMaxDelay)
	setDuration(&p.Retry.MaxPause, defaultMaxPause)
	setInt(&p.Breaker.FailureThreshold, defaultFailureThreshold)
	setDuration(&p.Breaker.OpenFor, defaultOpenFor)
	setInt(&p.Breaker.HalfOpenRequests, defaultHalfOpenRequests)
	if len(p.Models) == 0 {
		p.Models = nil
	}
	for i := range p.Models {
		p.Models[i].Limits.applyDefaults()
	}
}

func (l *Limits) applyDefaults() {
	setDuration(&l.RequestBurst, defaultRequestBurst)
	setDuration(&l.TokenBurst, defaultTokenBurst)
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

func setInt(n *int, def int) {
	if *n == 0 {
		*n = def
	}
}

// DefaultProvider returns the provider marked Default, or nil if there is
// none (never the case for a Config that [Load] or [Parse] returned). The
// pointer aliases c.Providers.
func (c *Config) DefaultProvider() *Provider {
	for i := range c.Providers {
		if c.Providers[i].Default {
			return &c.Providers[i]
		}
	}
	return nil
}

// SharedMode reports whether a Redis is configured, which makes quotas,
// pauses, breaker state and dead letters shared between replicas.
func (c *Config) SharedMode() bool {
	return c.Redis.URL != "" || len(c.Redis.Addrs) > 0
}
