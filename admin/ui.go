package admin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"net/http"
	"path"
	"time"
)

// uiFiles is the status page: one HTML document, its script, its style
// sheet and its icon. They are plain files with no build step, so what is
// embedded is what is reviewed.
//
//go:embed ui/index.html ui/app.js ui/style.css ui/icon.svg
var uiFiles embed.FS

// uiPolicy keeps the page to its own origin: no inline script or style, no
// third-party fetches, not framed (the page carries a token once signed in).
const uiPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiAsset is one embedded file, ready to serve.
type uiAsset struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

// uiRoutes maps each route of the page to its file. "/{$}" matches "/" only,
// so the page shadows neither /metrics nor an unknown path's 404.
var uiRoutes = [...]struct{ pattern, file, contentType string }{
	{"GET /{$}", "ui/index.html", "text/html; charset=utf-8"},
	{"GET /ui/app.js", "ui/app.js", "text/javascript; charset=utf-8"},
	{"GET /ui/style.css", "ui/style.css", "text/css; charset=utf-8"},
	{"GET /ui/icon.svg", "ui/icon.svg", "image/svg+xml"},
}

// handleUI serves the status page and its assets without the token: they
// hold no data, and the page asks for the token when the API answers 401.
func (s *Server) handleUI() {
	for _, r := range uiRoutes {
		body, err := uiFiles.ReadFile(r.file)
		if err != nil {
			panic("admin: embedded " + r.file + " missing: " + err.Error()) // a build error, not input
		}
		sum := sha256.Sum256(body)
		a := &uiAsset{name: path.Base(r.file), body: body, contentType: r.contentType,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		s.mux.Handle(r.pattern, a)
	}
}

// ServeHTTP answers with the asset. no-cache plus an ETag makes a browser
// revalidate on each load, so an upgraded Sluice never runs a stale script
// against a newer API, at the price of a 304.
func (a *uiAsset) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", uiPolicy)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
