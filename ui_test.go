package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// screenshotEnv, set to 1, makes TestStatusPage write its screenshot to
// docs/status-page.png instead of a temporary directory.
const screenshotEnv = "SLUICE_UPDATE_SCREENSHOT"

// mustChromium returns the path of the Chromium binary; without one the
// test fails rather than skips, as for redis-server.
func mustChromium(tb testing.TB) string {
	tb.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	tb.Fatal("chromium not found (Debian package chromium): `make test` installs it, or run apt-get install chromium")
	return ""
}

// uiBrowser is a headless Chromium tab that records what the page reports as
// errors.
type uiBrowser struct {
	ctx context.Context

	mu       sync.Mutex // protects problems
	problems []string
}

// mustBrowser starts headless Chromium with a 1280-pixel-wide tab. The
// browser, and every action run on ctx, ends after timeout or with the test.
func mustBrowser(t *testing.T, timeout time.Duration) *uiBrowser {
	t.Helper()
	path := mustChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	b := &uiBrowser{ctx: ctx}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatal(err)
	}
	return b
}

// record keeps the events that a user would see as errors in the DevTools
// console. It runs in the tab's event loop: it only appends.
func (b *uiBrowser) record(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, d.Text)
		if d.Exception != nil && d.Exception.Description != "" {
			msg += ": " + d.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		var args []string
		for _, a := range ev.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		msg = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level != log.EntryLevelError {
			return
		}
		// The browser logs every non-2xx fetch. The page meets 401s (the
		// token form) and a 400 no_api_key by design; anything else from
		// the network, such as a missing asset, is a fault.
		if e.Source == log.EntrySourceNetwork && strings.Contains(e.URL, "/admin/") &&
			(strings.Contains(e.Text, "status of 401") || strings.Contains(e.Text, "status of 400")) {
			return
		}
		msg = fmt.Sprintf("browser log (%s): %s %s", e.Source, e.Text, e.URL)
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, msg)
	b.mu.Unlock()
}

func (b *uiBrowser) checkConsole(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("page error: %s", p)
	}
}

// do runs actions, failing the test with what the page shows.
func (b *uiBrowser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.pageText())
	}
}

// waitFor polls the page until the JavaScript predicate is true.
func (b *uiBrowser) waitFor(t *testing.T, what, predicate string) {
	t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		b.checkConsole(t)
		t.Fatalf("waiting until %s: %v\n%s", what, err, b.pageText())
	}
}

// pageText is what the page shows, for failure messages.
func (b *uiBrowser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(page text unavailable: " + err.Error() + ")"
	}
	return "page text:\n" + text
}

// jsQuote quotes s as a JavaScript string literal.
func jsQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// postUIChat sends one chat completion to Sluice and returns the response
// status and its dead-letter id, if any; 0 when no response came. It
// reports nothing to the test, so it may outlive it in a goroutine.
func postUIChat(url string) (int, string) {
	resp, err := http.Post(url, "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		return 0, ""
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Sluice-Deadletter-Id")
}

// TestStatusPage drives the status page in headless Chromium against a
// running Sluice and a scripted upstream: signing in with the admin token,
// a queue building up behind a held request, a provider's pause with its
// countdown, and dead letters listed, shown and replayed (one with a key
// typed in the page). The page must log no errors.
func TestStatusPage(t *testing.T) {
	b := mustBrowser(t, 60*time.Second)
	up := upstreamtest.New(t, upstreamtest.Options{})
	const token = "ui-admin-token"
	t.Setenv("SLUICE_TEST_UI_TOKEN", token)
	// Limits small enough for the bars to move: a burst of ten requests
	// refilling one every ten seconds, of which the test uses eight, and
	// one request at a time so that a held one queues the rest.
	cfg := strings.Replace(testConfig(up.URL), "  listen: 127.0.0.1:0\nproviders",
		"  listen: 127.0.0.1:0\n  token: ${SLUICE_TEST_UI_TOKEN}\nproviders", 1) +
		"    limits: {requests_per_minute: 6, request_burst: 100s, tokens_per_minute: 6000, token_burst: 10m, max_concurrency: 1}\n" +
		"    default_max_tokens: 2000\n" +
		"    retry: {max_attempts: 2, base_delay: 10ms, max_delay: 20ms}\n" +
		"  - name: anthropic\n    base_url: " + up.URL + "\n    prefix: /anthropic\n" +
		"    retry: {max_attempts: 1}\n" +
		"deadletter:\n  file: " + filepath.Join(t.TempDir(), "deadletters.jsonl") + "\n"
	s := mustRun(t, cfg)
	openai := `document.querySelector('[data-provider="openai"] [data-scope="openai"]')`

	// Sign in: the page asks for the token when the API answers 401, and
	// again, saying so, when the token is wrong.
	b.do(t, "signing in with a wrong token",
		chromedp.Navigate(s.AdminURL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token\n"), // Enter submits
		chromedp.WaitVisible(chromedp.ID("auth-error")),
	)
	b.do(t, "signing in",
		chromedp.SendKeys(chromedp.ID("token"), token+"\n"),
		chromedp.WaitNotVisible(chromedp.ID("auth")),
	)
	b.waitFor(t, "the providers are shown",
		`document.querySelector('[data-provider="openai"] .breaker-state')?.textContent === 'closed' &&
		 document.querySelector('[data-provider="anthropic"]') !== null &&
		 document.getElementById('mode').textContent === 'single-replica'`)

	// Two dead letters: the upstream answers 503 to every attempt.
	up.Handle(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusServiceUnavailable) })
	_, openaiDL := postUIChat(s.URL + "/v1/chat/completions")
	_, anthropicDL := postUIChat(s.URL + "/anthropic/v1/messages")
	if openaiDL == "" || anthropicDL == "" {
		t.Fatalf("dead letters %q and %q, want one for each provider", openaiDL, anthropicDL)
	}
	b.waitFor(t, "both dead letters are listed, newest first",
		`[...document.querySelectorAll('#dl-rows tr')].map(r => r.dataset.id).join() === `+jsQuote(anthropicDL+","+openaiDL))

	// A queue: the upstream holds the one request max_concurrency lets
	// through, and three wait behind it.
	hold := make(chan fasthttp.RequestHandler)
	released := make(chan struct{})
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		select {
		case h := <-hold:
			h(ctx)
		case <-released:
			up.Default(ctx)
		case <-up.Done():
		}
	})
	codes := make(chan int, 4)
	for range 4 {
		go func() {
			code, _ := postUIChat(s.URL + "/v1/chat/completions")
			codes <- code
		}()
	}
	b.waitFor(t, "the queue shows three queued and one in flight",
		openai+`?.querySelector('tr[data-class="default"] .queued')?.textContent === '3' && `+
			openai+`.querySelector('tr[data-class="default"] .inflight').textContent === '1'`)

	// A pause: the held request gets a 429 asking for four seconds; it is
	// queued again and everything waits for the pause.
	tooMany := func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("retry-after-ms", "4000")
		ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
		ctx.SetBodyString(`{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}`)
	}
	select {
	case hold <- tooMany:
	case <-b.ctx.Done():
		t.Fatalf("no request held by the upstream: %v", b.ctx.Err())
	}
	b.waitFor(t, "the provider shows paused with a countdown and the queue",
		openai+`?.querySelector('.pause-state')?.textContent === 'paused' && `+
			`/resumes in \d/.test(`+openai+`.querySelector('.pause-until').textContent) && `+
			openai+`.querySelector('tr[data-class="default"] .queued').textContent !== '0'`)

	shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(t.TempDir(), "status-page.png")
	if os.Getenv(screenshotEnv) == "1" {
		out = filepath.Join("docs", "status-page.png")
	}
	if err := os.WriteFile(out, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", out)

	// The pause ends and the queue drains.
	close(released)
	for range 4 {
		select {
		case code := <-codes:
			if code != http.StatusOK {
				t.Errorf("queued request = %d, want 200 after the pause", code)
			}
		case <-b.ctx.Done():
			t.Fatalf("queued requests unanswered: %v", b.ctx.Err())
		}
	}
	up.Handle(nil)
	b.waitFor(t, "the pause and the queue are gone",
		openai+`.querySelector('.pause-state').textContent === 'not paused' && `+
			openai+`.querySelector('tr[data-class="default"] .queued').textContent === '0'`)

	// Show a record from the keyboard: Enter opens it, Escape closes it and
	// gives the focus back.
	row := `#dl-rows tr[data-id=` + jsQuote(openaiDL) + `]`
	b.do(t, "showing a record",
		chromedp.Focus(chromedp.CSS(row+` button[data-action="show"]`)),
		chromedp.KeyEvent("\r"),
	)
	b.waitFor(t, "the record dialog is open",
		`document.getElementById('record-dialog').open && document.getElementById('record-json').textContent.includes(`+jsQuote(`"id": "`+openaiDL+`"`)+`)`)
	b.do(t, "closing the record", chromedp.KeyEvent(kb.Escape))
	b.waitFor(t, "the dialog is closed and the focus is back",
		`!document.getElementById('record-dialog').open && document.activeElement === document.querySelector(`+jsQuote(row+` button[data-action="show"]`)+`)`)

	// Replay: delivered now that the upstream is healthy.
	b.do(t, "replaying", chromedp.Click(chromedp.CSS(row+` button[data-action="replay"]`)))
	b.waitFor(t, "the replay is delivered and listed",
		`document.getElementById('replay-outcome').textContent.includes('delivered, status 200') && `+
			`document.querySelector(`+jsQuote(row+` .replay-status`)+`).textContent.startsWith('200')`)

	// The anthropic provider has no api_key: the page asks for one, and
	// the replay with it is delivered.
	row = `#dl-rows tr[data-id=` + jsQuote(anthropicDL) + `]`
	b.do(t, "replaying without a key", chromedp.Click(chromedp.CSS(row+` button[data-action="replay"]`)))
	b.waitFor(t, "the page asks for an API key",
		`document.getElementById('replay-outcome').textContent.includes('needs an API key') && `+
			`document.getElementById('replay-options').open && document.activeElement === document.getElementById('api-key')`)
	b.do(t, "replaying with a key",
		chromedp.SendKeys(chromedp.ID("api-key"), "sk-typed-in-the-page"),
		chromedp.Click(chromedp.CSS(row+` button[data-action="replay"]`)),
	)
	b.waitFor(t, "the keyed replay is delivered",
		`document.getElementById('replay-outcome').textContent.includes(`+jsQuote(anthropicDL+" replayed: delivered, status 200")+`) && `+
			`document.querySelector(`+jsQuote(row+` .replay-status`)+`).textContent.startsWith('200')`)
	reqs := up.Requests()
	if last := reqs[len(reqs)-1]; !strings.Contains(fmt.Sprint(last.Header), "sk-typed-in-the-page") {
		t.Errorf("the keyed replay reached the upstream with headers %v, want the typed key", last.Header)
	}

	b.checkConsole(t)
	if errors.Is(b.ctx.Err(), context.DeadlineExceeded) {
		t.Error("the browser test ran out of time")
	}
}
