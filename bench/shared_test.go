//go:build linux

package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/config"
)

// TestSluiceYAML loads the bench's Sluice config in both modes with
// Sluice's own loader: the two differ only in the Redis, and the quotas are
// the ones the shared section prints.
func TestSluiceYAML(t *testing.T) {
	dir := t.TempDir()
	load := func(name, redisURL string) *config.Config {
		t.Helper()
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, sluiceYAML("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", redisURL), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(path)
		if err != nil {
			t.Fatalf("config.Load(%s) = %v", name, err)
		}
		return c
	}
	single, shared := load("single", ""), load("shared", "redis://127.0.0.1:4")
	if single.SharedMode() || !shared.SharedMode() {
		t.Errorf("SharedMode() = %v (single), %v (shared), want false, true", single.SharedMode(), shared.SharedMode())
	}
	if shared.Redis.URL != "redis://127.0.0.1:4" {
		t.Errorf("shared redis.url = %q, want redis://127.0.0.1:4", shared.Redis.URL)
	}
	for _, c := range []*config.Config{single, shared} {
		if len(c.Providers) != 1 {
			t.Fatalf("%d providers, want 1", len(c.Providers))
		}
		l := c.Providers[0].Limits
		for _, want := range []string{
			"`requests_per_minute: " + strconv.Itoa(l.RequestsPerMinute) + "`",
			"`tokens_per_minute: " + strconv.Itoa(l.TokensPerMinute) + "`",
			"`max_concurrency: " + strconv.Itoa(l.MaxConcurrency) + "`",
		} {
			if !strings.Contains(sharedLimitsText, want) {
				t.Errorf("sharedLimitsText = %s, lacks %s", sharedLimitsText, want)
			}
		}
		for _, cl := range c.Classes {
			if cl.Headroom == nil || *cl.Headroom != 0 {
				t.Errorf("class %s: headroom %v, want 0 (see sluiceConfig)", cl.Name, cl.Headroom)
			}
		}
	}
	if single.Providers[0].Limits != shared.Providers[0].Limits {
		t.Errorf("limits differ between the modes: %+v, %+v", single.Providers[0].Limits, shared.Providers[0].Limits)
	}
}

func TestParseSharedFlags(t *testing.T) {
	s, err := parseSharedFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.rates, []int{1000, 3000}) || s.duration != 10*time.Second || s.warmup != time.Second ||
		s.rounds != 3 || s.redisCPU != s.serverCPU {
		t.Errorf("defaults = %+v, want rates 1000,3000, 10s after 1s, 3 rounds, redis on the server CPU", s)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"ok", []string{"-rates", "500, 2000", "-duration", "2s", "-redis-cpu", "0"}, ""},
		{"zero rate", []string{"-rates", "0"}, "-rates"},
		{"not a rate", []string{"-rates", "1000,fast"}, "-rates"},
		{"twice", []string{"-rates", "1000,1000"}, "-rates"},
		{"short", []string{"-duration", "10ms"}, "-duration"},
		{"rounds", []string{"-rounds", "0"}, "-rounds"},
		{"argument", []string{"now"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseSharedFlags(tt.args, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("parseSharedFlags(%q) = %v, want no error", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("parseSharedFlags(%q) = %v, want an error naming %s", tt.args, err, tt.wantErr)
			}
		})
	}
}

// commandStatsText is INFO commandstats as redis-server 7.0 writes it.
const commandStatsText = "# Commandstats\r\n" +
	"cmdstat_hget:calls=1,usec=7,usec_per_call=7.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_evalsha:calls=1000,usec=30000,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_config|resetstat:calls=1,usec=66,usec_per_call=66.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_time:calls=1000,usec=900,usec_per_call=0.90,rejected_calls=0,failed_calls=0\r\n"

func TestParseReads(t *testing.T) {
	text := commandStatsText + "# Stats\r\ntotal_connections_received:3\r\ntotal_reads_processed:34567\r\n"
	if got, err := parseReads(text); err != nil || got != 34567 {
		t.Errorf("parseReads = %d, %v, want 34567", got, err)
	}
	for _, bad := range []string{commandStatsText, "total_reads_processed:many\r\n"} {
		if got, err := parseReads(bad); err == nil {
			t.Errorf("parseReads(%q) = %d, nil error, want one", bad, got)
		}
	}
}

func TestParseCommandStats(t *testing.T) {
	got, err := parseCommandStats(commandStatsText)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]cmdStat{
		"hget": {1, 7}, "evalsha": {1000, 30000}, "config|resetstat": {1, 66}, "time": {1000, 900},
	}
	if len(got) != len(want) {
		t.Errorf("parseCommandStats = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("parseCommandStats[%s] = %+v, want %+v", k, got[k], v)
		}
	}
	for _, bad := range []string{"cmdstat_get\r\n", "cmdstat_get:calls=x,usec=1\r\n", "cmdstat_get:usec=1\r\n", "cmdstat_:calls=1,usec=1\r\n"} {
		if got, err := parseCommandStats(bad); err == nil {
			t.Errorf("parseCommandStats(%q) = %v, nil error, want one", bad, got)
		}
	}
}

func TestDiffCommandStats(t *testing.T) {
	inside := map[string]bool{"time": true, "hset": true, "hmget": true}
	before := redisStats{reads: 100, cmds: map[string]cmdStat{"evalsha": {10, 300}, "time": {10, 9}, "info": {3, 30}}}
	after := redisStats{reads: 1104, cmds: map[string]cmdStat{
		"evalsha": {1030, 30300}, "eval": {1, 100}, "time": {1041, 40}, "hset": {3000, 900}, "hmget": {1031, 300},
		"ping": {2, 1}, "info": {5, 50}, "client|setinfo": {2, 2},
	}}
	d, err := diffRedisStats(before, after, inside)
	if err != nil {
		t.Fatal(err)
	}
	// Clients sent 1,020 EVALSHA, 1 EVAL, 2 PING, 2 CLIENT SETINFO, some
	// pipelined (1,003 reads, the bench's reading after left out); the
	// bench 2 INFO; the scripts ran the rest.
	if d.client != 1025 || d.reads != 1003 || d.scripts != 1021 || d.scriptUsec != 30100 || d.inside != 1031+3000+1031 {
		t.Errorf("diffRedisStats = %+v, want 1025 client commands in 1003 reads, 1021 scripts taking 30100 µs, 5062 inside", d)
	}
	if d.byName["client|setinfo"] != 2 || d.byName["ping"] != 2 || d.byName["info"] != 0 {
		t.Errorf("byName = %v", d.byName)
	}
	if got := d.usecPerScript(); got < 29.48 || got > 29.49 {
		t.Errorf("usecPerScript = %v, want 30100/1021", got)
	}
	if _, err := diffRedisStats(after, before, inside); err == nil {
		t.Error("diffRedisStats(after, before) = nil error, want one: the counts went backwards")
	}
	if d.sluiceTrips != -1 {
		t.Errorf("sluiceTrips = %d, want -1 until read from Sluice", d.sluiceTrips)
	}
}

// TestScriptCommands reads the module's own Lua scripts: the commands the
// reserve and settle scripts run must be found, and none that a client
// sends on its own.
func TestScriptCommands(t *testing.T) {
	got, err := scriptCommands("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"time", "hmget", "hgetall", "hset", "hincrby", "pexpire"} {
		if !got[c] {
			t.Errorf("scriptCommands lacks %s: %v", c, got)
		}
	}
	for _, c := range append([]string{"ping", "info", "subscribe"}, scriptCommandNames...) {
		if got[c] {
			t.Errorf("scriptCommands holds %s, which clients send", c)
		}
	}
	if _, err := scriptCommands(t.TempDir()); err == nil {
		t.Error("scriptCommands(empty dir) = nil error, want one")
	}
}

// TestSharedReport checks the verdicts on made-up results: one round where
// shared mode adds 1,500 µs at p99 and sends 1.02 commands per request.
func TestSharedReport(t *testing.T) {
	s, err := parseSharedFlags([]string{"-rounds", "1", "-rates", "1000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	us := time.Microsecond
	ph := ratePhase(1000)
	rate := func(p50, p99 time.Duration) loadResult {
		return loadResult{Mode: modeRate, Requests: 10000, Sent: 11000, Seconds: 11, P50: p50, P99: p99,
			ProxyTicks: 55, RedisTicks: 33}
	}
	res := map[runKey]sharedRun{
		{0, targetDirect, ph}: {load: rate(200*us, 1000*us),
			redis: redisDelta{client: 3, reads: 3, sluiceTrips: 3, byName: map[string]int64{"evalsha": 2, "ping": 1}}},
		{0, targetSluice, ph}: {load: rate(240*us, 1400*us),
			redis: redisDelta{client: 2, reads: 2, sluiceTrips: 2, byName: map[string]int64{"evalsha": 2}}},
		{0, targetShared, ph}: {load: rate(400*us, 2500*us), redis: redisDelta{client: 11220, reads: 11011, sluiceTrips: 11011,
			scripts: 11220, scriptUsec: 336600, inside: 89760, byName: map[string]int64{"evalsha": 11220}}},
	}
	rep := &sharedReport{command: "go run ./bench shared -rounds 1 -rates 1000", s: s, clkTck: 100, results: res}
	md := rep.markdown()
	for _, want := range []string{
		"| Sluice added p99 in shared mode at 1,000 req/s | < 2000 µs | +1500 µs | +1500 µs | pass |",
		"| Redis round trips per request in shared mode at 1,000 req/s | ≤ 1.0000 | 1.0010 | 1.0010 | miss |",
		"| Redis round trips per request in shared mode, less its idle background at 1,000 req/s | 1.0008 | 1.0008 |",
		"| Redis commands per request (pipelined ones counted each) at 1,000 req/s | 1.020 | 1.020 |",
		"| round trips per request as Sluice counts them (sluice_redis_round_trips_total) at 1,000 req/s | 1.001 | 1.001 |",
		"| shared − single-replica p50 at 1,000 req/s | +160 µs | +160 µs |",
		"| shared − single-replica p99 at 1,000 req/s | +1100 µs | +1100 µs |",
		"| commands run inside the scripts per request at 1,000 req/s | 8.160 | 8.160 |",
		"| Redis µs per script call (usec_per_call) at 1,000 req/s | 30.0 | 30.0 |",
		"| Redis CPU µs per request at 1,000 req/s | 30.0 | 30.0 |",
		"| Sluice CPU µs per request, shared at 1,000 req/s | 50.0 | 50.0 |",
		"| 1 | 1,000 | sluice-shared | 400 / 2500 | 0 | 11,000 | 50.0 | 11,011 (1.001) | 1.020 | 1.001 | 1.020 | 30.0 | 30.0 | 0 |",
		"it made 0.2 round trips to Redis a second, with these commands: EVALSHA 4, PING 1.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("section lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "### Errors") || strings.Contains(md, "### Interference") || strings.Contains(md, "### Redis lost") {
		t.Errorf("section flags problems that did not happen:\n%s", md)
	}

	run := res[runKey{0, targetShared, ph}]
	run.redisLost = true
	res[runKey{0, targetShared, ph}] = run
	md = rep.markdown()
	for _, want := range []string{
		"| Redis round trips per request in shared mode at 1,000 req/s | ≤ 1.0000 | 1.0010 | 1.0010 | miss (Redis lost, see below) |",
		"- round 1, sluice-shared, rate1000\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("section lacks %q:\n%s", want, md)
		}
	}
}
