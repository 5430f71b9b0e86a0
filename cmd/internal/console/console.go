// Package console serves pgjet's web console: one page, rendered on the
// server, that shows a source's topology (source, hub, each region's
// mirror, applier and replica, and the state of each region's link), each
// region's lag over the last minutes, its applied transactions per
// second, conflicts, dead letters and snapshots, and the last error of a
// stopped applier.
//
// The console gathers what `pgjet status` gathers (package status) every
// few seconds and keeps the samples of the last 15 minutes in a ring
// buffer for its charts. The page reloads its live part from /fragment
// with a few lines of script, so it needs nothing from the network but
// the console itself; /api/status serves the newest report as JSON, the
// same document `pgjet status --json` prints, and /api/history the
// samples.
package console

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/cmd/internal/status"
)

// Config says what the console gathers, and how often.
type Config struct {
	// Status is what each sample asks (status.Gather); Status.Name is
	// required: the console shows one source.
	Status status.Options
	// Interval is how often the console samples; the page reloads as
	// often.
	Interval time.Duration
	// Window is how much history the charts show.
	Window time.Duration
}

// DefaultConfig returns the console's defaults.
func DefaultConfig() Config {
	return Config{Interval: 2 * time.Second, Window: 15 * time.Minute}
}

// Console samples a source's status and serves its page. Its methods are
// safe for concurrent use.
type Console struct {
	cfg  Config
	log  zerolog.Logger
	page *template.Template

	mu     sync.RWMutex
	latest *status.Report // newest report gathered; nil before the first
	// failed is the error of the newest sample when Gather failed as a
	// whole (NATS unreachable); failedAt when.
	failed   string
	failedAt time.Time
	hist     *ring
}

// New returns a console; it does no I/O.
func New(cfg Config, log zerolog.Logger) *Console {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultConfig().Interval
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultConfig().Window
	}
	return &Console{
		cfg:  cfg,
		log:  log.With().Str("component", "console").Logger(),
		page: template.Must(template.New("page").Funcs(funcs).Parse(pageHTML)),
		hist: newRing(int(cfg.Window/cfg.Interval) + 1),
	}
}

//go:embed page.html
var pageHTML string

// Run samples the status every Interval until ctx ends, and returns
// ctx.Err(). A sample that fails is shown on the page; it never stops
// the console.
func (c *Console) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.Sample(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Sample gathers the status once and records it. It blocks for as long
// as Gather does (at most about Status.Timeout per domain and database).
func (c *Console) Sample(ctx context.Context) {
	rep, err := status.Gather(ctx, c.cfg.Status, c.log)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		c.log.Warn().Err(err).Msg("gather status")
	}
	c.record(rep, err, time.Now())
}

// record keeps a report (or the error that kept it from being gathered)
// and its sample.
func (c *Console) record(rep *status.Report, err error, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.failed, c.failedAt = err.Error(), at
		c.hist.add(Sample{At: at, Error: err.Error()})
		return
	}
	c.failed = ""
	c.latest = rep
	c.hist.add(sampleOf(rep, c.cfg.Status.Name, at, c.hist.last(), c.cfg.Status.Stall))
}

// Handler serves the page at /, its live part at /fragment, the newest
// report at /api/status and the samples at /api/history.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { c.render(w, "page") })
	mux.HandleFunc("GET /fragment", func(w http.ResponseWriter, r *http.Request) { c.render(w, "live") })
	mux.HandleFunc("GET /api/status", c.serveStatus)
	mux.HandleFunc("GET /api/history", c.serveHistory)
	return mux
}

// render writes template name with the current view.
func (c *Console) render(w http.ResponseWriter, name string) {
	v := c.view(time.Now())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := c.page.ExecuteTemplate(w, name, v); err != nil {
		c.log.Warn().Err(err).Msg("render page")
	}
}

// serveStatus writes the newest report as JSON: 503 with an error until
// one was gathered, or while NATS does not answer.
func (c *Console) serveStatus(w http.ResponseWriter, _ *http.Request) {
	c.mu.RLock()
	rep, failed := c.latest, c.failed
	c.mu.RUnlock()
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case failed != "":
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": failed})
	case rep == nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no status gathered yet"})
	default:
		writeJSON(w, http.StatusOK, rep)
	}
}

// serveHistory writes the samples of the window, oldest first.
func (c *Console) serveHistory(w http.ResponseWriter, _ *http.Request) {
	c.mu.RLock()
	samples := c.hist.all()
	c.mu.RUnlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"interval_seconds": c.cfg.Interval.Seconds(), "samples": samples})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Serve serves the console on ln, and samples, until ctx ends; then it
// closes ln and returns ctx.Err(), or the error that stopped the server.
func (c *Console) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { errc <- c.Run(sctx) }()
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
			cancel()
			return fmt.Errorf("serve console: %w", err)
		}
	}
	shut, done := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shut)
	return ctx.Err()
}
