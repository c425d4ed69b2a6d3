package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// failingConfig is testConfig with one attempt per request and a breaker
// that stays closed, so that every request to a failing upstream becomes
// a dead letter and a replay can go through once the upstream is fixed.
func failingConfig(upstreamURL string) string {
	return testConfig(upstreamURL) + "    retry: {max_attempts: 1}\n    breaker: {failure_threshold: 1000}\n"
}

// failUpstream makes up answer every request with a 503.
func failUpstream(up *upstreamtest.Server) {
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"error":{"message":"overloaded","type":"server_error"}}`)
	})
}

// replayedBody is what a fixed upstream answers.
const replayedBody = `{"id":"chatcmpl-replayed","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"back again"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`

// fixUpstream makes up answer every request with replayedBody.
func fixUpstream(up *upstreamtest.Server) {
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(replayedBody)
	})
}

// mustDeadLetter sends a chat request to url (a Sluice path) that the
// failing upstream turns into a dead letter, and returns the record's id.
func mustDeadLetter(tb testing.TB, url string) string {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-client-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Sluice-Deadletter-Id")
	if id == "" {
		tb.Fatalf("POST %s: status %d without a dead letter", url, resp.StatusCode)
	}
	return id
}

// dlq runs `sluice dlq args...` and returns what it printed.
func dlq(tb testing.TB, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, append([]string{"dlq"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustDLQ runs `sluice dlq args...`, fails the test if it fails, and
// returns its standard output.
func mustDLQ(tb testing.TB, args ...string) string {
	tb.Helper()
	out, errOut, err := dlq(tb, args...)
	if err != nil {
		tb.Fatalf("sluice dlq %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// tableIDs returns the first column of a list table, without the header.
func tableIDs(tb testing.TB, table string) []string {
	tb.Helper()
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "ID ") {
		tb.Fatalf("table %q: want a header line starting with ID", table)
	}
	var ids []string
	for _, l := range lines[1:] {
		ids = append(ids, strings.Fields(l)[0])
	}
	return ids
}

func equalIDs(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

func TestDLQList(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	failUpstream(up)
	cfg := failingConfig(up.URL) + `  - name: other
    base_url: ` + up.URL + `
    prefix: /other
    retry: {max_attempts: 1}
`
	s := mustRun(t, cfg)
	admin := []string{"-admin", s.AdminURL}

	if out := mustDLQ(t, append(admin, "list")...); out != "no dead letters\n" {
		t.Errorf("list of an empty store printed %q, want \"no dead letters\"", out)
	}

	var ids []string
	for range 3 {
		ids = append(ids, mustDeadLetter(t, s.URL+"/v1/chat/completions"))
	}
	otherID := mustDeadLetter(t, s.URL+"/other/v1/chat/completions")
	all := append(append([]string(nil), ids...), otherID)

	table := mustDLQ(t, append(admin, "list")...)
	header := strings.Fields(strings.SplitN(table, "\n", 2)[0])
	if want := "ID FAILED AT PROVIDER CLASS KIND LAST STATUS ATTEMPTS REPLAYED"; strings.Join(header, " ") != want {
		t.Errorf("table header %q, want %q", header, want)
	}
	if got := tableIDs(t, table); !equalIDs(got, all) {
		t.Errorf("list = %q, want %q oldest first", got, all)
	}
	first := strings.Fields(strings.Split(table, "\n")[1])
	if want := []string{ids[0], "openai", "default", "retries_exhausted", "503", "1", "-"}; !equalIDs(append(first[:1:1], first[2:]...), want) {
		t.Errorf("first row %q, want %q around the time", first, want)
	}

	// -json: one record per line, the API's fields unchanged.
	out := mustDLQ(t, append(admin, "list", "-json")...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(all) {
		t.Fatalf("list -json printed %d lines, want %d:\n%s", len(lines), len(all), out)
	}
	var failedAt []string
	for i, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("list -json line %d %q: %v", i, l, err)
		}
		if rec["id"] != all[i] || rec["error_kind"] != "retries_exhausted" || rec["last_status"] != 503.0 {
			t.Errorf("list -json line %d = %s, want record %s, retries_exhausted, last_status 503", i, l, all[i])
		}
		if _, ok := rec["received_at"]; !ok {
			t.Errorf("list -json line %d lacks received_at: %s", i, l)
		}
		failedAt = append(failedAt, rec["failed_at"].(string))
	}

	// Filters, with flags before the subcommand's own.
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"provider", []string{"-provider", "other"}, []string{otherID}},
		{"provider openai", []string{"-provider", "openai"}, ids},
		{"kind", []string{"-kind", "retries_exhausted"}, all},
		{"since", []string{"-since", failedAt[1]}, all[1:]},
		{"until", []string{"-until", failedAt[1]}, all[:1]},
		{"since and until", []string{"-since", failedAt[1], "-until", failedAt[3]}, all[1:3]},
		{"limit", []string{"-limit", "2"}, all[:2]},
		{"pages of one", []string{"-page-size", "1"}, all},
		{"pages of two", []string{"-page-size", "2"}, all},
		{"limit across pages", []string{"-page-size", "2", "-limit", "3"}, all[:3]},
		{"limit above total", []string{"-page-size", "3", "-limit", "10"}, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := mustDLQ(t, append(append(admin, "list"), tt.args...)...)
			if got := tableIDs(t, out); !equalIDs(got, tt.want) {
				t.Errorf("list %q = %q, want %q", tt.args, got, tt.want)
			}
		})
	}
	for _, args := range [][]string{
		{"-kind", "queue_timeout"},
		{"-provider", "nobody"},
		{"-since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
	} {
		if out := mustDLQ(t, append(append(admin, "list"), args...)...); out != "no dead letters\n" {
			t.Errorf("list %q printed %q, want \"no dead letters\"", args, out)
		}
	}
	if out := mustDLQ(t, append(admin, "list", "-json", "-provider", "nobody")...); out != "" {
		t.Errorf("list -json of nothing printed %q, want nothing", out)
	}
	out = mustDLQ(t, append(admin, "list", "-json", "-page-size", "1", "-limit", "3")...)
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("list -json -page-size 1 -limit 3 printed %d lines, want 3:\n%s", n, out)
	}
}

func TestDLQShowDelete(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	failUpstream(up)
	s := mustRun(t, failingConfig(up.URL))
	admin := []string{"-admin", s.AdminURL}
	id := mustDeadLetter(t, s.URL+"/v1/chat/completions")
	keep := mustDeadLetter(t, s.URL+"/v1/chat/completions")

	out := mustDLQ(t, append(admin, "show", id)...)
	if !strings.Contains(out, "\n  \"id\": \""+id+"\",\n") {
		t.Errorf("show printed %s, want indented JSON with the id", out)
	}
	var rec struct {
		ID, Provider, Body string
		ErrorKind          string            `json:"error_kind"`
		Headers            map[string]string `json:"headers"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("show printed %q: %v", out, err)
	}
	if rec.ID != id || rec.Provider != "openai" || rec.ErrorKind != "retries_exhausted" || !strings.Contains(rec.Body, `"hi"`) {
		t.Errorf("show = %+v, want record %s of openai, retries_exhausted, with the request body", rec, id)
	}
	if strings.Contains(out, "sk-client-secret") {
		t.Error("show printed the client's key")
	}

	if out := mustDLQ(t, append(admin, "delete", id)...); out != "deleted "+id+"\n" {
		t.Errorf("delete printed %q, want \"deleted %s\"", out, id)
	}
	_, _, err := dlq(t, append(admin, "show", id)...)
	var ae *adminError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || exitCode(err) != 1 || !strings.Contains(err.Error(), id) {
		t.Errorf("show of a deleted record = %v, want a 404 error naming %s, exit 1", err, id)
	}
	if _, _, err := dlq(t, append(admin, "delete", id)...); !errors.As(err, &ae) || ae.Code != "not_found" {
		t.Errorf("second delete = %v, want not_found", err)
	}

	// Several IDs: the missing one is reported and the rest are deleted.
	out, errOut, err := dlq(t, append(admin, "delete", id, keep)...)
	if err == nil || err.Error() != "1 of 2 deletes failed" {
		t.Errorf("delete of a missing and a present record = %v, want \"1 of 2 deletes failed\"", err)
	}
	if out != "deleted "+keep+"\n" || !strings.Contains(errOut, id) {
		t.Errorf("delete printed %q and %q, want the present one deleted and the missing one reported", out, errOut)
	}
	if out := mustDLQ(t, append(admin, "list")...); out != "no dead letters\n" {
		t.Errorf("list after deleting all printed %q", out)
	}
}

// freePort returns a port nothing listens on right now.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestDLQConfigDiscovery: with only -config, the command finds the admin
// listener and token in the file the server uses.
func TestDLQConfigDiscovery(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	failUpstream(up)
	port := strconv.Itoa(freePort(t))
	cfg := strings.Replace(failingConfig(up.URL), "admin:\n  listen: 127.0.0.1:0\n",
		"admin:\n  listen: :"+port+"\n  token: s3cret-admin\n", 1)
	if !strings.Contains(cfg, ":"+port+"\n  token") {
		t.Fatalf("config %s: the admin section was not replaced", cfg)
	}
	// :port listens on every interface, which needs the token above.
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustRun(t, cfg)
	id := mustDeadLetter(t, s.URL+"/v1/chat/completions")

	if code, _ := get(t, "http://127.0.0.1:"+port+"/admin/deadletters"); code != http.StatusUnauthorized {
		t.Fatalf("GET /admin/deadletters without the token = %d, want 401", code)
	}
	if got := tableIDs(t, mustDLQ(t, "-config", path, "list")); !equalIDs(got, []string{id}) {
		t.Errorf("list with -config = %q, want [%s]", got, id)
	}
	if out := mustDLQ(t, "-config", path, "show", id); !strings.Contains(out, id) {
		t.Errorf("show with -config printed %q", out)
	}

	// -token overrides the config's token.
	_, _, err := dlq(t, "-config", path, "-token", "wrong", "list")
	var ae *adminError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("list with a wrong -token = %v, want a 401 that points at admin.token", err)
	}
	// -admin without -config reads no file: the token comes from the flag
	// or from SLUICE_ADMIN_TOKEN.
	adminURL := "http://127.0.0.1:" + port
	if _, _, err := dlq(t, "-admin", adminURL, "list"); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("list with -admin and no token = %v, want 401", err)
	}
	mustDLQ(t, "-admin", adminURL, "-token", "s3cret-admin", "list")
	t.Setenv("SLUICE_ADMIN_TOKEN", "s3cret-admin")
	mustDLQ(t, "-admin", adminURL, "list")
	mustDLQ(t, "-admin", "127.0.0.1:"+port, "list")

	// A missing config file, with no -admin, is an error naming the file.
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if _, _, err := dlq(t, "-config", missing, "list"); err == nil || !strings.Contains(err.Error(), "missing.yaml") || exitCode(err) != 1 {
		t.Errorf("list with a missing config = %v, want an error naming the file, exit 1", err)
	}
}

func TestDLQAdminURL(t *testing.T) {
	tests := []struct {
		listen, want string
	}{
		{"127.0.0.1:9090", "http://127.0.0.1:9090"},
		{":9090", "http://127.0.0.1:9090"},
		{"0.0.0.0:9090", "http://127.0.0.1:9090"},
		{"[::]:9090", "http://[::1]:9090"},
		{"[::1]:9090", "http://[::1]:9090"},
		{"localhost:9090", "http://localhost:9090"},
		{"10.1.2.3:9090", "http://10.1.2.3:9090"},
	}
	for _, tt := range tests {
		if got, err := adminBaseURL(tt.listen); err != nil || got != tt.want {
			t.Errorf("adminBaseURL(%q) = %q, %v; want %q", tt.listen, got, err, tt.want)
		}
	}
	for _, listen := range []string{"127.0.0.1:0", "9090", ""} {
		if got, err := adminBaseURL(listen); err == nil {
			t.Errorf("adminBaseURL(%q) = %q, want an error", listen, got)
		}
	}

	flags := []struct {
		in, want string
	}{
		{"http://127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"http://127.0.0.1:9090/", "http://127.0.0.1:9090"},
		{"127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"https://sluice.internal/ops/", "https://sluice.internal/ops"},
	}
	for _, tt := range flags {
		if got, err := parseAdminURL(tt.in); err != nil || got != tt.want {
			t.Errorf("parseAdminURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"ftp://host:1", "http://", "http://h:1/?x=1"} {
		if got, err := parseAdminURL(in); err == nil {
			t.Errorf("parseAdminURL(%q) = %q, want an error", in, got)
		}
	}
}

func TestDLQUsage(t *testing.T) {
	// No server: every one of these fails before any call.
	tests := [][]string{
		{},
		{"frobnicate"},
		{"-bogus", "list"},
		{"list", "extra"},
		{"list", "-bogus"},
		{"list", "-limit", "-1"},
		{"list", "-page-size", "0"},
		{"list", "-page-size", "1001"},
		{"list", "-since", "yesterday"},
		{"show"},
		{"show", "a", "b"},
		{"delete"},
		{"replay"},
		{"replay", "-force"},
		{"replay", "-all", "id1"},
		{"replay", "id1", "-all"},
		{"replay", "-provider", "openai", "id1"},
		{"replay", "-all", "-until", "soon"},
	}
	for _, args := range tests {
		stdout, _, err := dlq(t, append([]string{"-admin", "http://127.0.0.1:1"}, args...)...)
		if err == nil || exitCode(err) != 2 || !errors.Is(err, errUsage) {
			t.Errorf("dlq %q = %v (exit %d), want a usage error (exit 2)", args, err, exitCode(err))
			continue
		}
		if !strings.Contains(err.Error(), "usage: sluice dlq") || stdout != "" {
			t.Errorf("dlq %q: error %q and stdout %q, want the dlq usage in the error and nothing on stdout", args, err, stdout)
		}
	}
	if _, stderr, err := dlq(t, "-h"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "replay -all") {
		t.Errorf("dlq -h = %v with %q, want flag.ErrHelp and the usage", err, stderr)
	}
	// An unset -api-key-env is refused before any call, and not a usage
	// error.
	_, _, err := dlq(t, "-admin", "http://127.0.0.1:1", "replay", "-api-key-env", "SLUICE_TEST_UNSET_KEY", "id1")
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "SLUICE_TEST_UNSET_KEY") {
		t.Errorf("replay with an unset -api-key-env = %v, want an error naming the variable, exit 1", err)
	}
}

// TestDLQReplay: records made while the upstream failed are delivered by
// replays once it is fixed, and each replay is marked on its record.
func TestDLQReplay(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	failUpstream(up)
	s := mustRun(t, failingConfig(up.URL))
	admin := []string{"-admin", s.AdminURL}
	var ids []string
	for range 4 {
		ids = append(ids, mustDeadLetter(t, s.URL+"/v1/chat/completions"))
	}

	// Still failing: the replay reports the upstream's status, and fails.
	out, _, err := dlq(t, append(admin, "replay", ids[0])...)
	if err == nil || !strings.HasPrefix(out, ids[0]+" failed (503)") {
		t.Errorf("replay against a failing upstream = %q, %v; want \"%s failed (503)\" and an error", out, err, ids[0])
	}

	fixUpstream(up)
	out = mustDLQ(t, append(admin, "replay", ids[0])...)
	if want := ids[0] + " delivered (200)\n" + replayedBody + "\n"; out != want {
		t.Errorf("replay printed %q, want %q", out, want)
	}
	var rec struct {
		ReplayStatus int    `json:"replay_status"`
		ReplayedAt   string `json:"replayed_at"`
	}
	if err := json.Unmarshal([]byte(mustDLQ(t, append(admin, "show", ids[0])...)), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ReplayStatus != 200 || rec.ReplayedAt == "" {
		t.Errorf("after the replay show has replay_status %d, replayed_at %q; want 200 and a time", rec.ReplayStatus, rec.ReplayedAt)
	}
	table := mustDLQ(t, append(admin, "list")...)
	if !strings.Contains(strings.Split(table, "\n")[1], "200 at ") {
		t.Errorf("list after a replay:\n%s\nwant the first row replayed 200", table)
	}

	// Delivered once: again only with -force, given before or after the ID.
	_, _, err = dlq(t, append(admin, "replay", ids[0])...)
	var ae *adminError
	if !errors.As(err, &ae) || ae.Code != "already_replayed" || !strings.Contains(err.Error(), "-force") {
		t.Errorf("second replay = %v, want already_replayed with a hint at -force", err)
	}
	if out := mustDLQ(t, append(admin, "replay", ids[0], "-force")...); !strings.HasPrefix(out, ids[0]+" delivered (200)\n") {
		t.Errorf("replay ID -force printed %q", out)
	}

	// Several IDs: one line each, going on after a missing one.
	out, errOut, err := dlq(t, append(admin, "replay", "-force", ids[1], "no-such-id")...)
	if err == nil || err.Error() != "1 of 2 replays failed" {
		t.Errorf("replay of a present and a missing record = %v, want \"1 of 2 replays failed\"", err)
	}
	if out != ids[1]+" delivered (200)\n" || !strings.Contains(errOut, "no-such-id") {
		t.Errorf("replay of two printed %q and %q, want one delivered line and the missing id reported", out, errOut)
	}

	// -all replays the rest and skips the delivered ones.
	out = mustDLQ(t, append(admin, "replay", "-all")...)
	for _, id := range ids[2:] {
		if !strings.Contains(out, id+" delivered (200)\n") {
			t.Errorf("replay -all printed\n%s\nwant %s delivered", out, id)
		}
	}
	if !strings.HasSuffix(out, "replayed 2: 2 delivered, 0 failed, 2 skipped (already delivered; -force replays them)\n") {
		t.Errorf("replay -all printed\n%s\nwant the summary of 2 delivered and 2 skipped", out)
	}
	if out := mustDLQ(t, append(admin, "replay", "-all", "-provider", "nobody")...); out != "replayed 0: 0 delivered, 0 failed, 0 skipped\n" {
		t.Errorf("replay -all of nothing printed %q", out)
	}

	// A batch against a failing upstream reports the failures and fails.
	failUpstream(up)
	out, _, err = dlq(t, append(admin, "replay", "-all", "-force", "-since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))...)
	if err == nil || err.Error() != "4 of 4 replays failed" || !strings.Contains(out, ids[3]+" failed (503)") {
		t.Errorf("replay -all -force against a failing upstream = %v, printed\n%s\nwant 4 failures", err, out)
	}
}

// TestDLQReplayAPIKey: the client's key was redacted from the record, so a
// provider without its own key needs one given to the replay, by the name
// of an environment variable.
func TestDLQReplayAPIKey(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	failUpstream(up)
	cfg := strings.Replace(failingConfig(up.URL), "    api_key: sk-from-config\n", "", 1)
	s := mustRun(t, cfg)
	admin := []string{"-admin", s.AdminURL}
	id := mustDeadLetter(t, s.URL+"/v1/chat/completions")
	fixUpstream(up)
	sent := up.Count()

	_, _, err := dlq(t, append(admin, "replay", id)...)
	var ae *adminError
	if !errors.As(err, &ae) || ae.Code != "no_api_key" || !strings.Contains(err.Error(), "-api-key-env") {
		t.Errorf("replay without a key = %v, want no_api_key with a hint at -api-key-env", err)
	}
	if up.Count() != sent {
		t.Errorf("a replay without a key reached the upstream")
	}

	t.Setenv("SLUICE_TEST_REPLAY_KEY", "sk-replay-key")
	out := mustDLQ(t, append(admin, "replay", "-api-key-env", "SLUICE_TEST_REPLAY_KEY", id)...)
	if !strings.HasPrefix(out, id+" delivered (200)\n") {
		t.Errorf("replay with -api-key-env printed %q, want delivered", out)
	}
	reqs := up.Requests()
	if got := reqs[len(reqs)-1].Header.Get("Authorization"); got != "Bearer sk-replay-key" {
		t.Errorf("upstream Authorization on the replay = %q, want the key from the environment", got)
	}
}
