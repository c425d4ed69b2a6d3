package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"gopkg.in/yaml.v3"

	"github.com/sluice-ai/sluice/internal/redistest"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// The operator-facing files of deploy/: a Grafana dashboard and the
// Prometheus alert rules with their promtool unit tests.
const (
	dashboardFile  = "deploy/grafana/sluice.json"
	alertsFile     = "deploy/prometheus/alerts.yml"
	alertTestsFile = "deploy/prometheus/alerts_test.yml"
)

// promtoolTimeout bounds one promtool run.
const promtoolTimeout = time.Minute

// sluiceMetricName matches the Sluice metric names an expression uses.
var sluiceMetricName = regexp.MustCompile(`sluice_[a-z_]+`)

// mustPromtool returns the path of promtool, failing (never skipping) the
// test when it is missing: a skipped check would let broken rules ship.
func mustPromtool(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		tb.Fatalf("promtool not found (%v): install Debian's prometheus package (apt-get install prometheus) or run make test, which installs it", err)
	}
	return path
}

// runPromtool runs promtool with args and stdin, and returns its combined
// output and exit error.
func runPromtool(tb testing.TB, stdin io.Reader, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), promtoolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, mustPromtool(tb), args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		tb.Fatalf("promtool %s: no answer within %v", strings.Join(args, " "), promtoolTimeout)
	}
	return string(out), err
}

// TestPromtoolRules: the alert rules load, and their unit tests (each alert
// firing and not firing) pass.
func TestPromtoolRules(t *testing.T) {
	for _, args := range [][]string{
		{"check", "rules", alertsFile},
		{"test", "rules", alertTestsFile},
	} {
		if out, err := runPromtool(t, nil, args...); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// alertRules is the part of a Prometheus rule file the tests read.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func mustAlertRules(tb testing.TB) alertRules {
	tb.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		tb.Fatal(err)
	}
	var r alertRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		tb.Fatalf("parsing %s: %v", alertsFile, err)
	}
	return r
}

// TestAlertRulesShape: every alert the runbook names exists, with a
// severity and the annotations a notification shows, and each is covered
// by the promtool unit tests.
func TestAlertRulesShape(t *testing.T) {
	want := []string{
		"SluiceBreakerOpen", "SluiceDeadLettersGrowing", "SluiceQueueWaitHigh",
		"SluiceRedisDown", "SluiceUpstreamRateLimited", "SluiceSpoolBacklog",
	}
	tests, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, g := range mustAlertRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			got[r.Alert] = true
			switch r.Labels["severity"] {
			case "critical", "warning":
			default:
				t.Errorf("alert %s: severity label %q, want critical or warning", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
			if !bytes.Contains(tests, []byte("alertname: "+r.Alert+"\n")) {
				t.Errorf("alert %s has no unit test in %s", r.Alert, alertTestsFile)
			}
		}
	}
	for _, name := range want {
		if !got[name] {
			t.Errorf("%s defines no alert %s", alertsFile, name)
		}
	}
}

// grafanaDashboard is the part of a Grafana dashboard the tests read. Rows are
// panels too; a collapsed row holds its panels itself.
type grafanaDashboard struct {
	Title         string           `json:"title"`
	UID           string           `json:"uid"`
	SchemaVersion int              `json:"schemaVersion"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type dashboardPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

func mustDashboard(tb testing.TB) grafanaDashboard {
	tb.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		tb.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		tb.Fatalf("parsing %s: %v", dashboardFile, err)
	}
	return d
}

// allPanels returns the dashboard's panels, those in collapsed rows
// included.
func (d grafanaDashboard) allPanels() []dashboardPanel {
	var all []dashboardPanel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	return all
}

// labelValuesQuery matches a Grafana label_values(selector, label) query.
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// exprs returns every PromQL expression of the dashboard: the panels'
// queries and the selectors of the template variables' label_values
// queries, with Grafana's variables in them.
func (d grafanaDashboard) exprs(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			tb.Fatalf("variable %s: query %s is not a string", v.Name, v.Query)
		}
		m := labelValuesQuery.FindStringSubmatch(q)
		if m == nil {
			tb.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
		}
		out = append(out, m[1])
	}
	return out
}

// grafanaVars turns the dashboard's queries into plain PromQL: each
// variable they use becomes a value it can take.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$provider", ".*", "$class", ".*")

// mustCheckPromQL has promtool parse exprs, written as the recording rules
// of a temporary rule file.
func mustCheckPromQL(tb testing.TB, exprs []string) {
	tb.Helper()
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, e := range exprs {
		rules = append(rules, rule{Record: "dashboard:query_" + strconv.Itoa(i), Expr: grafanaVars.Replace(e)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	if out, err := runPromtool(tb, nil, "check", "rules", path); err != nil {
		tb.Errorf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
}

// TestDashboard: the dashboard parses, its panel ids are unique, every
// panel has a place on the grid that no other panel overlaps, it has the
// variables its queries use, and promtool parses every query.
func TestDashboard(t *testing.T) {
	d := mustDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d: want a uid, a title and schemaVersion >= 36", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "provider": "query", "class": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s has type %q, want %q", name, vars[name], typ)
		}
	}

	ids := map[int]string{}
	queries := 0
	for _, p := range d.allPanels() {
		if p.ID <= 0 {
			t.Errorf("panel %q has id %d, want a positive id", p.Title, p.ID)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type != "row" && p.Type != "text" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
		}
	}

	// The panels of a collapsed row keep the places they have when it is
	// expanded, so only the dashboard's top level is one grid.
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.Panels {
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is not on the 24-column grid", p.Title, g)
		}
		overlaps := map[string]bool{}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok && !overlaps[other] {
					overlaps[other] = true
					t.Errorf("panels %q and %q overlap at (%d, %d)", other, p.Title, x, y)
				}
				taken[cell{x, y}] = p.Title
			}
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no queries")
	}
	mustCheckPromQL(t, d.exprs(t))
}

// observedConfig is a shared-mode configuration with two providers on
// one fake upstream: openai with quotas (so that requests queue, are
// charged tokens and are retried after a 429) and flaky, which makes a
// single attempt, so that one 503 becomes a dead letter.
func observedConfig(upstreamURL, redisURL string) string {
	return testConfig(upstreamURL) +
		"    limits: {requests_per_minute: 60000, tokens_per_minute: 10000000}\n" +
		"    retry: {max_attempts: 3, base_delay: 10ms, max_delay: 20ms}\n" +
		"  - name: flaky\n" +
		"    base_url: " + upstreamURL + "\n" +
		"    prefix: /flaky\n" +
		"    api_key: sk-flaky\n" +
		"    retry: {max_attempts: 1}\n" +
		"redis:\n  url: " + redisURL + "\n"
}

// postObserved sends one chat request to url with the given headers and returns
// the response's status and headers.
func postObserved(tb testing.TB, url string, header map[string]string) (int, http.Header) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("POST %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// mustScrapeAfterTraffic runs Sluice in shared mode, sends it traffic that gives every
// metric family labelled series (a queued request of each kind, a retry
// after a paused 429, an idempotent replay, a dead letter and its replay),
// and returns its /metrics page.
func mustScrapeAfterTraffic(tb testing.TB) string {
	tb.Helper()
	srv := redistest.Start(tb)
	up := upstreamtest.New(tb, upstreamtest.Options{})
	s := mustRun(tb, observedConfig(up.URL, srv.URL()))

	if code, _ := postObserved(tb, s.URL+"/v1/chat/completions", map[string]string{"X-Priority": "critical"}); code != 200 {
		tb.Fatalf("critical request: status %d, want 200", code)
	}

	up.Push(func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
		ctx.Response.Header.Set("retry-after-ms", "20")
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`)
	})
	if code, h := postObserved(tb, s.URL+"/v1/chat/completions", nil); code != 200 || h.Get("X-Sluice-Attempts") != "2" {
		tb.Fatalf("request after a 429: status %d after %q attempts, want 200 after 2", code, h.Get("X-Sluice-Attempts"))
	}

	key := map[string]string{"Idempotency-Key": "observability-1"}
	if code, _ := postObserved(tb, s.URL+"/v1/chat/completions", key); code != 200 {
		tb.Fatalf("keyed request: status %d, want 200", code)
	}
	if code, h := postObserved(tb, s.URL+"/v1/chat/completions", key); code != 200 || h.Get("X-Sluice-Idempotent-Replay") != "true" {
		tb.Fatalf("duplicate keyed request: status %d, replay %q; want 200, true", code, h.Get("X-Sluice-Idempotent-Replay"))
	}

	up.Push(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusServiceUnavailable) })
	code, h := postObserved(tb, s.URL+"/flaky/v1/chat/completions", nil)
	id := h.Get("X-Sluice-Deadletter-Id")
	if code != 503 || id == "" {
		tb.Fatalf("request to a failing upstream: status %d, dead letter %q; want 503 with a dead letter", code, id)
	}
	resp, err := http.Post(s.AdminURL+"/admin/deadletters/"+id+"/replay", "application/json", nil)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("replay of %s: %d %s", id, resp.StatusCode, body)
	}

	code, metrics := get(tb, s.AdminURL+"/metrics")
	if code != 200 {
		tb.Fatalf("GET /metrics: %d", code)
	}
	return metrics
}

// metricTypes returns the type of every metric family on an exposition
// page, from its # TYPE lines.
func metricTypes(page string) map[string]string {
	types := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	return types
}

// unknownMetrics returns the sluice_ names used in exprs that are not
// families of types (or, with _bucket, _sum or _count, series of a
// histogram or summary family), sorted, each once.
func unknownMetrics(exprs []string, types map[string]string) []string {
	seen := map[string]bool{}
	var unknown []string
	for _, e := range exprs {
		for _, name := range sluiceMetricName.FindAllString(e, -1) {
			if seen[name] {
				continue
			}
			seen[name] = true
			if _, ok := types[name]; ok {
				continue
			}
			known := false
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok {
					typ := types[base]
					known = typ == "histogram" || typ == "summary"
				}
			}
			if !known {
				unknown = append(unknown, name)
			}
		}
	}
	sort.Strings(unknown)
	return unknown
}

// TestObservabilityScrape: a real /metrics page of Sluice in shared mode,
// after traffic, passes promtool's lint, holds every family of the spec,
// and every metric the dashboard and the alert rules query is on it.
func TestObservabilityScrape(t *testing.T) {
	page := mustScrapeAfterTraffic(t)
	types := metricTypes(page)

	t.Run("PromtoolCheckMetrics", func(t *testing.T) {
		out, err := runPromtool(t, strings.NewReader(page), "check", "metrics")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("promtool check metrics on /metrics: %v\n%s", err, out)
		}
	})

	t.Run("Families", func(t *testing.T) {
		for name, typ := range map[string]string{
			"sluice_requests_total":            "counter",
			"sluice_request_duration_seconds":  "histogram",
			"sluice_queue_wait_seconds":        "histogram",
			"sluice_queue_depth":               "gauge",
			"sluice_inflight_requests":         "gauge",
			"sluice_upstream_requests_total":   "counter",
			"sluice_upstream_duration_seconds": "histogram",
			"sluice_retries_total":             "counter",
			"sluice_ratelimit_pauses_total":    "counter",
			"sluice_breaker_state":             "gauge",
			"sluice_deadletters_total":         "counter",
			"sluice_deadletter_replays_total":  "counter",
			"sluice_deadletter_spool_depth":    "gauge",
			"sluice_idempotent_replays_total":  "counter",
			"sluice_tokens_total":              "counter",
			"sluice_redis_up":                  "gauge",
			"sluice_quota_limit":               "gauge",
		} {
			if types[name] != typ {
				t.Errorf("/metrics: %s has type %q, want %s", name, types[name], typ)
			}
		}
	})

	t.Run("DashboardNames", func(t *testing.T) {
		if unknown := unknownMetrics(mustDashboard(t).exprs(t), types); len(unknown) > 0 {
			t.Errorf("%s queries metrics Sluice does not export: %s", dashboardFile, strings.Join(unknown, ", "))
		}
	})

	t.Run("AlertNames", func(t *testing.T) {
		var exprs []string
		for _, g := range mustAlertRules(t).Groups {
			for _, r := range g.Rules {
				exprs = append(exprs, r.Expr)
			}
		}
		if len(exprs) == 0 {
			t.Fatalf("%s has no rules", alertsFile)
		}
		if unknown := unknownMetrics(exprs, types); len(unknown) > 0 {
			t.Errorf("%s queries metrics Sluice does not export: %s", alertsFile, strings.Join(unknown, ", "))
		}
	})
}
