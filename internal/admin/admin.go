// Package admin is mxguard's admin HTTP listener: /metrics for Prometheus
// (the official client's handler over the server's own registry),
// /healthz (the process answers) and /readyz (it can take mail: listening,
// the spool writable, the shared limit store reachable or a working
// fallback), and with [admin] console the web console under /console/
// (internal/console). It is off unless [admin] listen names an address.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// Readiness says whether the server can take mail now.
type Readiness interface {
	Ready() []Check
}

// Handler returns the admin endpoints over registry and ready, and the
// console under /console/ unless console is nil.
func Handler(registry prometheus.Gatherer, ready Readiness, console http.Handler) http.Handler {
	mux := http.NewServeMux()
	if console != nil {
		mux.Handle("/console/", console)
		mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{
		// One scrape at a time: a slow scraper must not stack up work.
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		checks := ready.Ready()
		var b strings.Builder
		ok := true
		for _, c := range checks {
			state := "ok"
			if !c.OK {
				state, ok = "FAIL", false
			}
			fmt.Fprintf(&b, "%s %s: %s\n", state, c.Name, c.Detail)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, b.String())
	})
	return mux
}

// Serve runs the admin listener on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests end with the server: a console's live stream would
		// otherwise hold Shutdown for its whole grace.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	})
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
