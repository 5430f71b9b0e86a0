// Package metrics serves the pgjet daemons' Prometheus metrics and health
// endpoints on --metrics-addr: /metrics, /healthz (the process is alive)
// and /readyz (connected and making progress).
//
// Every value is read from the daemon's live counters when Prometheus
// scrapes (https://prometheus.io/docs/instrumenting/writing_exporters/):
// nothing polls in the background. Readiness follows the Kubernetes probe
// contract (https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/):
// 200 when ready, 503 with the reason otherwise.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Probe is one daemon's metrics and readiness.
type Probe interface {
	// Register adds the daemon's collectors to reg. It does no I/O.
	Register(reg prometheus.Registerer) error
	// Ready returns nil when the daemon is connected and making progress,
	// or an error saying why not. It blocks at most until ctx ends and is
	// safe for concurrent use.
	Ready(ctx context.Context) error
}

// readyTimeout bounds one /readyz check, which may query the database.
const readyTimeout = 3 * time.Second

// Serve serves /metrics, /healthz and /readyz for p on addr until ctx
// ends. It returns nil once ctx has ended and the server has shut down, or
// the error that kept it from listening or serving.
func Serve(ctx context.Context, addr string, p Probe, log zerolog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := p.Register(reg); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := p.Ready(rctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on --metrics-addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info().Str("addr", ln.Addr().String()).Msg("metrics listening")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve metrics on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down metrics server: %w", err)
	}
	return nil
}

// progress remembers when a daemon's counters last moved, as seen by
// readiness checks: a daemon stalled with work pending keeps them still.
type progress struct {
	mu  sync.Mutex
	sig [3]int64
	at  time.Time
}

// moved records sig, the daemon's counters now, and returns when they last
// changed. The first observation counts as a change at first.
func (p *progress) moved(sig [3]int64, first time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.at.IsZero():
		p.sig, p.at = sig, first
	case sig != p.sig:
		p.sig, p.at = sig, time.Now()
	}
	return p.at
}

func counter(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
}

func gauge(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
