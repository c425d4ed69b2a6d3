// Command sluice is a sidecar that makes AI API calls reliable: it queues
// requests by priority, keeps provider quotas, honours Retry-After, retries,
// breaks the circuit on failing upstreams and keeps what it cannot deliver.
//
// Usage:
//
//	sluice [serve] [-config config.yaml]   serve (the default command)
//	sluice check [-config config.yaml]     validate a config and exit
//	sluice dlq [-config config.yaml] [-admin URL] [-token T] list|show|replay|delete ...
//	                                       inspect, replay and delete dead letters
//	                                       through a running Sluice's admin API
//
// main only wires: everything is built from the config in run, which the
// tests call directly.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/admin"
	"github.com/sluice-ai/sluice/config"
	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/idempotency"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/metrics"
	"github.com/sluice-ai/sluice/proxy"
	"github.com/sluice-ai/sluice/tokens"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sluice:", err)
		}
		os.Exit(exitCode(err))
	}
}

// errUsage marks a command line that could not be understood.
var errUsage = errors.New("usage: sluice [serve|check] [-config FILE] | sluice dlq [-config FILE] [-admin URL] [-token T] list|show|replay|delete ...")

func exitCode(err error) int {
	if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// run executes the command in args until it is done or ctx is cancelled.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		cfg, err := loadConfig(cmd, args, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr)
	case "check":
		cfg, err := loadConfig(cmd, args, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "config ok: %d providers, %d classes, %s mode\n",
			len(cfg.Providers), len(cfg.Classes), mode(cfg))
		return nil
	case "dlq":
		return runDLQ(ctx, args, stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q: %w", cmd, errUsage)
	}
}

func loadConfig(cmd string, args []string, stderr io.Writer) (*config.Config, error) {
	fs := flag.NewFlagSet("sluice "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "path of the configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%v: %w", err, errUsage)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return nil, fmt.Errorf("loading config: %w", err)
	}
	return cfg, nil
}

func mode(cfg *config.Config) string {
	if cfg.SharedMode() {
		return "shared"
	}
	return "single-replica"
}

// serve runs the proxy and the admin listener until ctx is cancelled, then
// shuts them down in reverse order: not ready, drain the proxy within the
// grace period, stop the admin listener.
func serve(ctx context.Context, cfg *config.Config, stderr io.Writer) error {
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	ps, err := proxySettings(cfg)
	if err != nil {
		return err
	}
	var rc redis.UniversalClient
	var shared *sharedMode
	if cfg.SharedMode() {
		if rc, err = redisClient(cfg.Redis); err != nil {
			return err
		}
		defer rc.Close()
		rc.AddHook(roundTripHook{inc: m.RedisRoundTrips()})
		if shared, err = newSharedMode(cfg, rc, m, log); err != nil {
			return err
		}
		ps.Limiter, ps.OnBreakerOpen = shared.limiter, shared.announce
	}
	idem := idempotencyStore(cfg, rc)
	ps.Idempotency, ps.IdempotencyMaxBody = idem, cfg.Idempotency.MaxBodyBytes
	idemCtx, stopIdem := context.WithCancel(context.Background())
	idemDone := make(chan struct{})
	go func() { defer close(idemDone); idem.Run(idemCtx) }() // renews the keys this replica holds
	defer func() { stopIdem(); <-idemDone }()
	dl, err := openDeadLetters(cfg, rc, log)
	if err != nil {
		return err
	}
	defer dl.close(log)
	if dl.spool != nil {
		m.SpoolDepth(func() float64 { return float64(dl.spool.Depth()) })
	}
	ps.DeadLetters = dl.store
	px, err := proxy.New(ps, m, log)
	if err != nil {
		return err
	}
	adm, err := admin.New(admin.Settings{
		Listen: cfg.Admin.Listen,
		Token:  cfg.Admin.Token.Reveal(),
		Status: func() any { return statusOf(cfg, px, shared) },
	}, reg, log)
	if err != nil {
		return err
	}
	adm.HandleDeadLetters(dl.store, deadletter.NewReplayer(dl.store, px, m.Replayed))
	if shared != nil {
		names := make([]string, len(cfg.Providers))
		for i, p := range cfg.Providers {
			names[i] = p.Name
		}
		shared.start(px, names)
		defer shared.stop()
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listening on admin %s: %w", cfg.Admin.Listen, err)
	}

	errc := make(chan error, 2)
	go func() { errc <- px.Serve(ln) }()
	go func() { errc <- adm.Serve(adminLn) }()
	adm.SetReady(true)
	log.Info("serving", slog.String("listen", ln.Addr().String()), slog.String("admin", adminLn.Addr().String()),
		slog.String("mode", mode(cfg)), slog.Int("providers", len(cfg.Providers)))

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", slog.String("grace", cfg.ShutdownGrace.String()))
	case serveErr = <-errc:
		log.Error("listener failed, shutting down", slog.String("error", serveErr.Error()))
	}

	adm.SetReady(false)
	grace, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := px.Shutdown(grace); err != nil {
		log.Warn("drain incomplete", slog.String("error", err.Error()))
	}
	stopAdmin, cancelAdmin := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelAdmin()
	if err := adm.Shutdown(stopAdmin); err != nil {
		log.Warn("stopping admin listener", slog.String("error", err.Error()))
	}
	log.Info("stopped")
	return serveErr
}

// deadLetters is the dead-letter store serve uses and what it must stop.
type deadLetters struct {
	store interface {
		proxy.DeadLetters
		admin.DeadLetterStore
		deadletter.ReplayStore
	}
	file   *deadletter.FileStore
	spool  *deadletter.Spool  // nil in single-replica mode
	cancel context.CancelFunc // stops the spool's mover
	done   chan struct{}
}

// openDeadLetters opens the JSON-lines file in single-replica mode, and in
// shared mode (rc not nil) the Redis stream with the file as its spool
// while Redis is away.
func openDeadLetters(cfg *config.Config, rc redis.UniversalClient, log *slog.Logger) (*deadLetters, error) {
	file, err := deadletter.OpenFile(cfg.DeadLetter.File)
	if err != nil {
		return nil, fmt.Errorf("deadletter.file: %w", err)
	}
	if n := file.Damaged(); n > 0 {
		log.Warn("dead-letter file has damaged lines; they were skipped and are kept in the .damaged side file at its next compaction",
			slog.String("file", cfg.DeadLetter.File), slog.Int("lines", n))
	}
	if err := file.CompactErr(); err != nil {
		log.Warn("dead-letter file not compacted; it keeps working uncompacted", slog.String("file", cfg.DeadLetter.File), slog.String("error", err.Error()))
	}
	dl := &deadLetters{store: file, file: file}
	if rc == nil {
		return dl, nil
	}
	spool := deadletter.NewSpool(deadletter.NewRedisStore(rc, cfg.DeadLetter.Stream, cfg.DeadLetter.MaxLen, cfg.Redis.CommandTimeout), file, log)
	ctx, cancel := context.WithCancel(context.Background())
	dl.store, dl.spool, dl.cancel, dl.done = spool, spool, cancel, make(chan struct{})
	go func() {
		defer close(dl.done)
		if err := spool.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("dead-letter spool stopped", slog.String("error", err.Error()))
		}
	}()
	return dl, nil
}

func (dl *deadLetters) close(log *slog.Logger) {
	if dl.cancel != nil {
		dl.cancel()
		<-dl.done
	}
	if err := dl.file.Close(); err != nil {
		log.Warn("closing the dead-letter file", slog.String("error", err.Error()))
	}
}

// idempotencyStore keeps Idempotency-Key outcomes in Redis in shared mode
// (rc not nil), in process otherwise.
func idempotencyStore(cfg *config.Config, rc redis.UniversalClient) idempotency.Store {
	s := idempotency.Settings{
		Retention: cfg.Idempotency.Retention,
		LockTTL:   cfg.Idempotency.LockTTL,
		MaxBody:   cfg.Idempotency.MaxBodyBytes,
		MaxKeys:   cfg.Idempotency.MaxKeys,
	}
	if rc == nil {
		return idempotency.NewMemory(s)
	}
	return idempotency.NewRedis(rc, cfg.Redis.KeyPrefix, s, cfg.Redis.CommandTimeout)
}

// redisClient builds the one client shared mode uses: standalone from a
// URL, or Cluster / Sentinel from addresses.
func redisClient(r config.Redis) (redis.UniversalClient, error) {
	if r.URL != "" {
		opt, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		if pw := r.Password.Reveal(); pw != "" {
			opt.Password = pw
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = r.DialTimeout, r.CommandTimeout, r.CommandTimeout
		return redis.NewClient(opt), nil
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      r.Addrs,
		MasterName: r.MasterName,
		// addrs without a master name are Cluster seeds, even just one (a
		// managed Cluster's configuration endpoint); go-redis would take a
		// single address for a standalone server.
		IsClusterMode: r.MasterName == "",
		Password:      r.Password.Reveal(),
		// The config's one password authenticates to the sentinels too.
		SentinelPassword: r.Password.Reveal(),
		DialTimeout:      r.DialTimeout,
		ReadTimeout:      r.CommandTimeout,
		WriteTimeout:     r.CommandTimeout,
	}), nil
}

func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("log_level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// proxySettings maps the config onto the proxy's own settings.
func proxySettings(cfg *config.Config) (proxy.Settings, error) {
	method, err := tokens.ParseMethod(cfg.TokenEstimator)
	if err != nil {
		return proxy.Settings{}, fmt.Errorf("token_estimator: %w", err)
	}
	s := proxy.Settings{
		DefaultClass:   cfg.DefaultClass,
		MaxBodyBytes:   int(cfg.MaxBodyBytes),
		TokenEstimator: method,
		RedactHeaders:  cfg.DeadLetter.RedactHeaders,
	}
	for _, c := range cfg.Classes {
		var headroom float64 // nil only in a Config that Load did not default
		if c.Headroom != nil {
			headroom = *c.Headroom
		}
		s.Classes = append(s.Classes, proxy.Class{
			Name:         c.Name,
			MaxWait:      c.MaxWait,
			MaxQueue:     c.MaxQueue,
			Weight:       c.Weight,
			Share:        c.Share,
			MaxAttempts:  c.MaxAttempts,
			Headroom:     headroom,
			CommitWithin: c.CommitWithin,
		})
	}
	for _, r := range cfg.Routes {
		s.Routes = append(s.Routes, proxy.Route{Path: r.Path, Class: r.Class})
	}
	for _, p := range cfg.Providers {
		tlsConfig, err := upstreamTLS(p.TLS)
		if err != nil {
			return s, fmt.Errorf("providers[%s].tls: %w", p.Name, err)
		}
		var models []proxy.Model
		for _, m := range p.Models {
			models = append(models, proxy.Model{Name: m.Name, Limits: limits(m.Limits), DefaultMaxTokens: int64(m.DefaultMaxTokens)})
		}
		s.Providers = append(s.Providers, proxy.Provider{
			Name:                  p.Name,
			BaseURL:               p.BaseURL,
			Prefix:                p.Prefix,
			Default:               p.Default,
			APIKey:                p.APIKey.Reveal(),
			ConnectTimeout:        p.ConnectTimeout,
			ResponseHeaderTimeout: p.ResponseHeaderTimeout,
			StreamIdleTimeout:     p.StreamIdleTimeout,
			Timeout:               p.Timeout,
			MaxConns:              p.MaxConns,
			TLSConfig:             tlsConfig,
			Limits:                limits(p.Limits),
			Models:                models,
			DefaultMaxTokens:      int64(p.DefaultMaxTokens),
			Retry: proxy.Retry{
				MaxAttempts: p.Retry.MaxAttempts,
				BaseDelay:   p.Retry.BaseDelay,
				MaxDelay:    p.Retry.MaxDelay,
				MaxPause:    p.Retry.MaxPause,
			},
			Breaker: proxy.Breaker{
				FailureThreshold: p.Breaker.FailureThreshold,
				OpenFor:          p.Breaker.OpenFor,
				HalfOpenRequests: p.Breaker.HalfOpenRequests,
			},
		})
	}
	return s, nil
}

func limits(l config.Limits) limiter.Limits {
	return limiter.Limits{
		RequestsPerMinute: float64(l.RequestsPerMinute),
		TokensPerMinute:   float64(l.TokensPerMinute),
		MaxConcurrency:    int64(l.MaxConcurrency),
		RequestBurst:      l.RequestBurst,
		TokenBurst:        l.TokenBurst,
	}
}

func upstreamTLS(t config.ProviderTLS) (*tls.Config, error) {
	if t.CAFile == "" && !t.InsecureSkipVerify && t.ServerName == "" {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit operator choice, documented as unsafe
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates", t.CAFile)
		}
	}
	return c, nil
}

// statusOf is the admin status document: the mode, in shared mode this
// replica and whether Redis answers, and every provider's state.
func statusOf(cfg *config.Config, px *proxy.Proxy, shared *sharedMode) any {
	doc := struct {
		Mode      string                 `json:"mode"`
		Replica   string                 `json:"replica,omitempty"`
		RedisUp   *bool                  `json:"redis_up,omitempty"`
		Providers []proxy.ProviderStatus `json:"providers"`
	}{Mode: mode(cfg), Providers: px.Status()}
	if shared != nil {
		up := shared.limiter.Up()
		doc.Replica, doc.RedisUp = shared.replica, &up
	}
	return doc
}
