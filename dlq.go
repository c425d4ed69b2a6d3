package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-ai/sluice/config"
)

// dlqSynopsis is the dlq command line; usage errors print it.
const dlqSynopsis = `sluice dlq [-config FILE] [-admin URL] [-token T] COMMAND
  list [-provider P] [-kind K] [-since RFC3339] [-until RFC3339] [-limit N] [-page-size N] [-json]
  show ID
  replay [-api-key-env VAR] [-force] ID...
  replay -all [-provider P] [-kind K] [-since RFC3339] [-until RFC3339] [-api-key-env VAR] [-force]
  delete ID...`

// dlqUsage is what -h prints.
const dlqUsage = dlqSynopsis + `

The admin address and bearer token come from admin.listen and admin.token in
the config file (default config.yaml). -admin and -token override them; with
-admin the config file is read only when -config is given. SLUICE_ADMIN_TOKEN
is the token when neither the flags nor the config give one. -api-key-env
names an environment variable that holds the provider key a replay should
use; the key itself is never a command-line argument, where ps would show it.`

const (
	// dlqTimeout bounds one list, show or delete call.
	dlqTimeout = 30 * time.Second
	// dlqReplayTimeout bounds one replay call: a replay waits in the queue
	// and for the upstream like live traffic, so it can take long.
	dlqReplayTimeout = 10 * time.Minute
	// dlqDefaultPage and dlqMaxPage are the admin API's default and largest
	// page of the dead-letter list.
	dlqDefaultPage = 100
	dlqMaxPage     = 1000
	// maxErrorBody caps how much of an error response is read.
	maxErrorBody = 64 << 10
)

// dlqUsageError is a dlq command line that could not be understood. It
// carries the dlq usage and unwraps to [errUsage], so it exits with status 2.
type dlqUsageError struct{ msg string }

func (e *dlqUsageError) Error() string { return "dlq: " + e.msg + "\nusage: " + dlqSynopsis }
func (e *dlqUsageError) Unwrap() error { return errUsage }

func dlqUsagef(format string, args ...any) error {
	return &dlqUsageError{msg: fmt.Sprintf(format, args...)}
}

// adminError is an error answer of the admin API:
// {"error":{"message":..,"type":..,"code":..}} or, from routes that do not
// exist, plain text.
type adminError struct {
	// Status is the HTTP status code.
	Status int
	// Code is error.code, such as "not_found" or "already_replayed"; "" if
	// the answer had none.
	Code string
	// Message is error.message, or the text of a non-JSON answer.
	Message string
}

func (e *adminError) Error() string {
	msg := fmt.Sprintf("%s (%d)", e.Message, e.Status)
	switch {
	case e.Status == http.StatusUnauthorized:
		msg += "; the token comes from admin.token in the config, -token or SLUICE_ADMIN_TOKEN"
	case e.Code == "no_api_key":
		msg += "; pass -api-key-env VAR, naming an environment variable that holds the provider's key"
	case e.Code == "already_replayed" && !strings.Contains(e.Message, "-force"):
		msg += "; pass -force to replay it again"
	}
	return msg
}

// dlqClient calls the admin API's dead-letter routes.
type dlqClient struct {
	base  string // scheme://host[:port][/prefix], without a trailing slash
	token string // "" sends no Authorization header
	http  *http.Client
}

// call sends method path?query with in (if not nil) as its JSON body, and
// decodes a 2xx answer into out (if not nil). An error answer is returned
// as an *adminError. The call is bounded by timeout and by ctx.
func (c *dlqClient) call(ctx context.Context, timeout time.Duration, method, path string, query url.Values, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling the admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readAdminError(resp)
	}
	if out == nil {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the admin API's answer to %s %s: %w", method, path, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding the admin API's answer to %s %s: %w", method, path, err)
	}
	return nil
}

// aboutRecord wraps err, from an action on the record id, with the action
// and the id, unless the admin API's message already names the record.
func aboutRecord(action, id string, err error) error {
	var ae *adminError
	if errors.As(err, &ae) && strings.Contains(ae.Message, id) {
		return err // only spares the reader "replaying X: replaying X: ..."
	}
	return fmt.Errorf("%s %s: %w", action, id, err)
}

func readAdminError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &adminError{Status: resp.StatusCode}
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Error.Message != "" {
		e.Message, e.Code = doc.Error.Message, doc.Error.Code
		return e
	}
	// A route the server does not have answers in plain text
	// ("404 page not found", "Method Not Allowed").
	e.Message = strings.TrimSpace(string(b))
	if e.Message == "" {
		e.Message = strings.ToLower(http.StatusText(resp.StatusCode))
	}
	return e
}

// dlqCommand is one run of `sluice dlq`: the global flags and where to print.
type dlqCommand struct {
	configPath string
	configSet  bool // -config was given
	adminURL   string
	token      string
	stdout     io.Writer
	stderr     io.Writer
}

// runDLQ runs `sluice dlq` with args, the arguments after "dlq".
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := &dlqCommand{stdout: stdout, stderr: stderr}
	fs := d.flagSet("")
	fs.StringVar(&d.configPath, "config", "config.yaml", "path of the configuration file naming the admin listener and token")
	fs.StringVar(&d.adminURL, "admin", "", "admin API base URL, such as http://127.0.0.1:9090 (overrides admin.listen)")
	fs.StringVar(&d.token, "token", "", "admin bearer token (overrides admin.token)")
	// The global flags end at the command: Parse stops at the first
	// positional argument.
	if err := fs.Parse(args); err != nil {
		return d.flagError(fs, err)
	}
	fs.Visit(func(f *flag.Flag) { d.configSet = d.configSet || f.Name == "config" })
	if fs.NArg() == 0 {
		return dlqUsagef("missing command")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "list":
		return d.list(ctx, rest)
	case "show":
		return d.show(ctx, rest)
	case "replay":
		return d.replay(ctx, rest)
	case "delete":
		return d.delete(ctx, rest)
	default:
		return dlqUsagef("unknown command %q", cmd)
	}
}

// flagSet returns an empty flag set for the dlq command cmd ("" for the
// global flags) that reports its errors through flagError.
func (d *dlqCommand) flagSet(cmd string) *flag.FlagSet {
	name := "sluice dlq"
	if cmd != "" {
		name += " " + cmd
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // flagError reports, with the usage
	return fs
}

// flagError turns a flag parsing error into a usage error; -h prints the
// usage and flag.ErrHelp goes up unchanged (main prints nothing for it).
func (d *dlqCommand) flagError(fs *flag.FlagSet, err error) error {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(d.stderr, "usage: "+dlqUsage)
		return err
	}
	if cmd := strings.TrimPrefix(strings.TrimPrefix(fs.Name(), "sluice dlq"), " "); cmd != "" {
		return dlqUsagef("%s: %v", cmd, err)
	}
	return dlqUsagef("%v", err)
}

// parseArgs parses fs's flags wherever they appear among args and returns
// the positional arguments in order. flag.FlagSet.Parse stops at the first
// positional argument, so it is called again after each one. Everything
// after "--" is positional.
func (d *dlqCommand) parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, d.flagError(fs, err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// client finds the admin API: -admin, else admin.listen in the config; and
// the token: -token, else admin.token, else $SLUICE_ADMIN_TOKEN.
func (d *dlqCommand) client() (*dlqClient, error) {
	c := &dlqClient{token: d.token, http: &http.Client{}}
	if d.adminURL != "" {
		base, err := parseAdminURL(d.adminURL)
		if err != nil {
			return nil, err
		}
		c.base = base
	}
	if d.adminURL == "" || (d.token == "" && d.configSet) {
		cfg, err := config.Load(d.configPath)
		if err != nil {
			return nil, fmt.Errorf("loading config (or pass -admin URL): %w", err)
		}
		if c.base == "" {
			if c.base, err = adminBaseURL(cfg.Admin.Listen); err != nil {
				return nil, err
			}
		}
		if c.token == "" {
			c.token = cfg.Admin.Token.Reveal()
		}
	}
	if c.token == "" {
		c.token = os.Getenv("SLUICE_ADMIN_TOKEN")
	}
	return c, nil
}

// parseAdminURL checks the -admin value; a bare host:port means http.
func parseAdminURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return "", dlqUsagef("-admin %q: want a URL such as http://127.0.0.1:9090", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// adminBaseURL is the URL to reach a listener on listen (host:port): an
// unspecified host, which listens on every interface, is reached on
// loopback.
func adminBaseURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q: %w", listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("admin.listen %q: port 0 is chosen when Sluice starts; pass -admin with the address it logged", listen)
	}
	if host == "" {
		host = "127.0.0.1"
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// dlqFilter selects dead letters; it is both the list's query and the
// batch replay's body.
type dlqFilter struct {
	Provider string `json:"provider,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Since    string `json:"since,omitempty"`
	Until    string `json:"until,omitempty"`
}

func (f *dlqFilter) register(fs *flag.FlagSet) {
	fs.StringVar(&f.Provider, "provider", "", "only this provider's dead letters")
	fs.StringVar(&f.Kind, "kind", "", "only this error kind, such as retries_exhausted")
	fs.StringVar(&f.Since, "since", "", "only those that failed at or after this RFC 3339 time")
	fs.StringVar(&f.Until, "until", "", "only those that failed before this RFC 3339 time")
}

// check rejects times the admin API would refuse, before any call.
func (f dlqFilter) check() error {
	for _, t := range [...]struct{ name, value string }{{"since", f.Since}, {"until", f.Until}} {
		if t.value == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, t.value); err != nil {
			return dlqUsagef("-%s %q: want an RFC 3339 time such as 2026-11-23T12:00:00Z", t.name, t.value)
		}
	}
	return nil
}

func (f dlqFilter) query() url.Values {
	q := url.Values{}
	for _, p := range [...][2]string{{"provider", f.Provider}, {"kind", f.Kind}, {"since", f.Since}, {"until", f.Until}} {
		if p[1] != "" {
			q.Set(p[0], p[1])
		}
	}
	return q
}

// dlqRow is what the list table shows of a record.
type dlqRow struct {
	ID           string `json:"id"`
	FailedAt     string `json:"failed_at"`
	Provider     string `json:"provider"`
	Class        string `json:"class"`
	ErrorKind    string `json:"error_kind"`
	LastStatus   int    `json:"last_status"`
	Attempts     int    `json:"attempts"`
	ReplayedAt   string `json:"replayed_at"`
	ReplayStatus int    `json:"replay_status"`
}

func (d *dlqCommand) list(ctx context.Context, args []string) error {
	fs := d.flagSet("list")
	var f dlqFilter
	f.register(fs)
	limit := fs.Int("limit", 0, "print at most N dead letters; 0 prints all")
	pageSize := fs.Int("page-size", dlqDefaultPage, "dead letters fetched per request, 1 to 1000")
	asJSON := fs.Bool("json", false, "print one JSON record per line, as the admin API returns it")
	pos, err := d.parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return dlqUsagef("list: unexpected argument %q", pos[0])
	case *limit < 0:
		return dlqUsagef("list: -limit %d: must not be negative", *limit)
	case *pageSize < 1 || *pageSize > dlqMaxPage:
		return dlqUsagef("list: -page-size %d: must be from 1 to %d", *pageSize, dlqMaxPage)
	}
	if err := f.check(); err != nil {
		return err
	}
	c, err := d.client()
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(d.stdout, 0, 0, 2, ' ', 0)
	printed := 0
	q := f.query()
	for {
		page := *pageSize
		if *limit > 0 {
			page = min(page, *limit-printed)
		}
		q.Set("limit", strconv.Itoa(page))
		var resp struct {
			Records []json.RawMessage `json:"records"`
			Next    string            `json:"next"`
		}
		if err := c.call(ctx, dlqTimeout, http.MethodGet, "/admin/deadletters", q, nil, &resp); err != nil {
			return fmt.Errorf("listing dead letters: %w", err)
		}
		for _, raw := range resp.Records {
			if *limit > 0 && printed == *limit {
				break
			}
			if *asJSON {
				var line bytes.Buffer
				if err := json.Compact(&line, raw); err != nil {
					return fmt.Errorf("listing dead letters: %w", err)
				}
				line.WriteByte('\n')
				if _, err := d.stdout.Write(line.Bytes()); err != nil {
					return err
				}
			} else {
				var r dlqRow
				if err := json.Unmarshal(raw, &r); err != nil {
					return fmt.Errorf("decoding a dead letter: %w", err)
				}
				if printed == 0 {
					fmt.Fprintln(tw, "ID\tFAILED AT\tPROVIDER\tCLASS\tKIND\tLAST STATUS\tATTEMPTS\tREPLAYED")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, shortTime(r.FailedAt), dash(r.Provider),
					dash(r.Class), dash(r.ErrorKind), statusText(r.LastStatus), r.Attempts, r.replayed())
			}
			printed++
		}
		if resp.Next == "" || (*limit > 0 && printed >= *limit) {
			break
		}
		q.Set("after", resp.Next)
	}
	if printed == 0 && !*asJSON {
		fmt.Fprintln(d.stdout, "no dead letters")
		return nil
	}
	return tw.Flush()
}

func (r dlqRow) replayed() string {
	if r.ReplayedAt == "" && r.ReplayStatus == 0 {
		return "-"
	}
	return statusText(r.ReplayStatus) + " at " + shortTime(r.ReplayedAt)
}

// shortTime shows an RFC 3339 time to the second, in UTC.
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return dash(s)
	}
	return t.UTC().Format(time.RFC3339)
}

func statusText(status int) string {
	if status == 0 {
		return "-"
	}
	return strconv.Itoa(status)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (d *dlqCommand) show(ctx context.Context, args []string) error {
	fs := d.flagSet("show")
	pos, err := d.parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return dlqUsagef("show takes one ID, got %d arguments", len(pos))
	}
	c, err := d.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.call(ctx, dlqTimeout, http.MethodGet, "/admin/deadletters/"+url.PathEscape(pos[0]), nil, nil, &raw); err != nil {
		return aboutRecord("showing", pos[0], err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("showing %s: %w", pos[0], err)
	}
	out.WriteByte('\n')
	_, err = d.stdout.Write(out.Bytes())
	return err
}

func (d *dlqCommand) delete(ctx context.Context, args []string) error {
	fs := d.flagSet("delete")
	ids, err := d.parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return dlqUsagef("delete needs at least one ID")
	}
	c, err := d.client()
	if err != nil {
		return err
	}
	failed := 0
	for _, id := range ids {
		err := c.call(ctx, dlqTimeout, http.MethodDelete, "/admin/deadletters/"+url.PathEscape(id), nil, nil, nil)
		if err != nil {
			err = aboutRecord("deleting", id, err)
			if len(ids) == 1 || !perRecord(err) {
				return err
			}
			fmt.Fprintln(d.stderr, "sluice:", err)
			failed++
			continue
		}
		fmt.Fprintln(d.stdout, "deleted", id)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d deletes failed", failed, len(ids))
	}
	return nil
}

// perRecord reports whether err concerns one record only (not found,
// already replayed, no key for its provider), so that a command over
// several IDs goes on with the next. A refused token or an unreachable
// server ends it.
func perRecord(err error) bool {
	var ae *adminError
	return errors.As(err, &ae) && ae.Status != http.StatusUnauthorized && ae.Status < 500
}

// replayRequest is the body of POST /admin/deadletters/{id}/replay.
type replayRequest struct {
	APIKey string `json:"api_key,omitempty"`
	Force  bool   `json:"force"`
}

// replayAllRequest is the body of POST /admin/deadletters/replay.
type replayAllRequest struct {
	dlqFilter
	APIKey string `json:"api_key,omitempty"`
	Force  bool   `json:"force,omitempty"`
}

// replayResult is the outcome of replaying one record.
type replayResult struct {
	ID        string `json:"id"`
	Status    int    `json:"status"`
	Delivered bool   `json:"delivered"`
	Body      string `json:"body"`
	Error     string `json:"error"`
	// Skipped marks a record of a batch left alone because its last replay
	// was delivered.
	Skipped bool `json:"skipped"`
}

func (r replayResult) String() string {
	switch {
	case r.Skipped:
		return r.ID + " skipped: already delivered"
	case r.Delivered:
		return fmt.Sprintf("%s delivered (%d)", r.ID, r.Status)
	}
	msg := r.Error
	if msg == "" {
		msg = "not delivered"
	}
	if r.Status == 0 {
		return fmt.Sprintf("%s failed: %s", r.ID, msg)
	}
	return fmt.Sprintf("%s failed (%d): %s", r.ID, r.Status, msg)
}

func (d *dlqCommand) replay(ctx context.Context, args []string) error {
	fs := d.flagSet("replay")
	var f dlqFilter
	f.register(fs)
	all := fs.Bool("all", false, "replay every dead letter the filter selects")
	keyEnv := fs.String("api-key-env", "", "name of an environment variable holding the provider key to replay with")
	force := fs.Bool("force", false, "replay records whose last replay was delivered")
	ids, err := d.parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *all && len(ids) > 0:
		return dlqUsagef("replay: -all and IDs exclude each other")
	case !*all && len(ids) == 0:
		return dlqUsagef("replay needs IDs or -all")
	case !*all && (f != dlqFilter{}):
		return dlqUsagef("replay: -provider, -kind, -since and -until select records for -all only")
	}
	if err := f.check(); err != nil {
		return err
	}
	var key string
	if *keyEnv != "" {
		var ok bool
		if key, ok = os.LookupEnv(*keyEnv); !ok || key == "" {
			return fmt.Errorf("-api-key-env %s: the environment variable is unset or empty", *keyEnv)
		}
	}
	c, err := d.client()
	if err != nil {
		return err
	}
	if *all {
		return d.replayAll(ctx, c, replayAllRequest{dlqFilter: f, APIKey: key, Force: *force})
	}

	failed := 0
	for _, id := range ids {
		var res replayResult
		err := c.call(ctx, dlqReplayTimeout, http.MethodPost, "/admin/deadletters/"+url.PathEscape(id)+"/replay",
			nil, replayRequest{APIKey: key, Force: *force}, &res)
		if err != nil {
			err = aboutRecord("replaying", id, err)
			if len(ids) == 1 || !perRecord(err) {
				return err
			}
			fmt.Fprintln(d.stderr, "sluice:", err)
			failed++
			continue
		}
		if res.ID == "" {
			res.ID = id
		}
		fmt.Fprintln(d.stdout, res)
		if !res.Delivered {
			failed++
			continue
		}
		// One record: its body is the generation the operator wanted back.
		if len(ids) == 1 && res.Body != "" {
			io.WriteString(d.stdout, res.Body)
			if !strings.HasSuffix(res.Body, "\n") {
				io.WriteString(d.stdout, "\n")
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d replays failed", failed, len(ids))
	}
	return nil
}

func (d *dlqCommand) replayAll(ctx context.Context, c *dlqClient, req replayAllRequest) error {
	var resp struct {
		Results   []replayResult `json:"results"`
		Delivered int            `json:"delivered"`
		Failed    int            `json:"failed"`
		Skipped   int            `json:"skipped"`
	}
	if err := c.call(ctx, dlqReplayTimeout, http.MethodPost, "/admin/deadletters/replay", nil, req, &resp); err != nil {
		return fmt.Errorf("replaying dead letters: %w", err)
	}
	for _, r := range resp.Results {
		fmt.Fprintln(d.stdout, r)
	}
	fmt.Fprintf(d.stdout, "replayed %d: %d delivered, %d failed, %d skipped", resp.Delivered+resp.Failed, resp.Delivered, resp.Failed, resp.Skipped)
	if resp.Skipped > 0 {
		fmt.Fprint(d.stdout, " (already delivered; -force replays them)")
	}
	fmt.Fprintln(d.stdout)
	if resp.Failed > 0 {
		return fmt.Errorf("%d of %d replays failed", resp.Failed, resp.Delivered+resp.Failed)
	}
	return nil
}
