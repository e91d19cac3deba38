// Package console is mxguard's web console, served under /console/ on the
// admin listener when [admin] console is on: one page that shows what the
// server is doing and lets the operator act on it at once. It shows the
// sessions now and in the greeting pause, the sessions admitted, messages
// accepted and refusals by reason per second over the last hour (charts
// drawn as SVG on the server), the top offending clients, networks (/24,
// /64) and reverse-DNS suffixes of the last minute and hour, the bans, the
// deny and trust lists, stress mode, the limit store and the queue; and
// from any offending client or network, deny, ban for a while or trust in
// one click.
//
// One source of figures: every count is read from internal/metrics, the
// counters and window that /metrics and `mxguard status` read, when the
// page or its live stream asks; the console counts nothing itself, and a
// console that nobody has open costs nothing (no goroutine, no per
// connection work). An open one costs one snapshot a second, shared by
// every viewer.
//
// The page is html/template and embedded files only: no CDN, no framework.
// Without JavaScript it is complete and read-only (and its forms still
// work); with it, a few lines of JavaScript replace its sections from a
// server-sent event stream each second and send the forms without leaving
// the page.
//
// State changes: POST only (a GET changes nothing), from the same origin
// (net/http's CrossOriginProtection: Sec-Fetch-Site, else Origin against
// Host), carrying the token of [admin] console_token(_file) in the form's
// token field or an "Authorization: Bearer" header, compared in constant
// time. Without a configured token the console is read-only. The page
// never holds the token: the operator types it, so reading the page (all
// a DNS-rebinding or cross-site script could do) gives no power to act.
package console

import (
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reputation"
)

// Server is the running server as the console reads and steers it
// (*server.Server). Each action takes effect at once and returns a short
// text for the operator, as the control socket's commands do.
type Server interface {
	ConsoleState() State
	Deny(p netip.Prefix) (string, error)
	Trust(p netip.Prefix) (string, error)
	Ban(p netip.Prefix, d time.Duration) (string, error)
	Unban(p netip.Prefix) (string, error)
}

// State is what the console shows that is not a counter.
type State struct {
	Hostname string
	Started  time.Time
	Stress   *Stress // nil: not under stress
	// BansOn: bans can be set and are enforced ([reputation] is on).
	BansOn  bool
	Bans    []reputation.Ban
	Denied  []netip.Prefix // the deny list (`mxguard deny`)
	Trusted []netip.Prefix // trusted_networks and the trust list
	// Name is a client's confirmed reverse-DNS name if it is known
	// without a query, "" otherwise; nil: no names.
	Name func(netip.Addr) string
}

// Stress is the stress mode in force.
type Stress struct {
	Since time.Time
	Why   string
}

// Config is what a console needs.
type Config struct {
	Metrics *metrics.Metrics
	Server  Server
	// Token returns the token state changes must carry, read when one is
	// asked for (so that a new token file applies at once); "" means
	// none: the console is read-only.
	Token func() (string, error)
	Log   *slog.Logger
	Now   func() time.Time // nil: time.Now
}

// Bounds of what an open console may cost.
const (
	// refresh is how often the live stream sends the page's sections,
	// and how old a snapshot may be before it is taken again.
	refresh = time.Second
	// hourRefresh is how old the last hour's offenders may be when adding
	// them up took more than cheapHour: an hour of a flood from many
	// addresses takes milliseconds (BENCHMARKS.md), and the hour's
	// ranking changes little in one of the window's buckets.
	hourRefresh = 10 * time.Second
	cheapHour   = 5 * time.Millisecond
	// maxStreams bounds the live streams open at once: each holds a
	// connection and a goroutine.
	maxStreams = 8
	// topN is how many offenders each table lists.
	topN = 10
	// maxList is how many entries of the deny and trust lists are shown.
	maxList = 100
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console is the handler of /console/.
type Console struct {
	cfg     Config
	tmpl    *template.Template
	mux     *http.ServeMux
	streams chan struct{} // a slot a live stream

	mu       sync.Mutex // guards the shared snapshot and the hour's figures
	snap     *snapshot
	hour     metrics.Summary
	hourAt   time.Time
	hourCost time.Duration // what adding up the hour took last time
}

// New returns the console over cfg. It starts nothing: the work is done
// when a page or a stream is asked for.
func New(cfg Config) *Console {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Console{
		cfg:     cfg,
		tmpl:    template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")),
		streams: make(chan struct{}, maxStreams),
	}
	static, _ := fs.Sub(staticFS, "static")
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.refuse(w, r, http.StatusForbidden, "cross-origin request refused: state changes come from the console's own page")
	}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/{$}", c.page)
	mux.HandleFunc("GET /console/events", c.events)
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	mux.Handle("POST /console/act", cop.Handler(http.HandlerFunc(c.act)))
	c.mux = mux
	return c
}

// ServeHTTP serves the console's paths, with headers that keep the page
// from being framed (one-click actions invite clickjacking), from running
// scripts or styles of anyone else, and from being cached.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// page serves the whole page, complete without JavaScript.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	s := c.snapshot()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.tmpl.ExecuteTemplate(w, "page", s.view); err != nil {
		c.cfg.Log.Warn("console: rendering the page", "err", err.Error())
	}
}
