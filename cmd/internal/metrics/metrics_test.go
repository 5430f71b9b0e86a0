package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

type fakeProbe struct {
	ready atomic.Bool
	n     atomic.Int64
}

func (f *fakeProbe) Register(reg prometheus.Registerer) error {
	return register(reg, counter("pgjet_test_total", "A test counter.", prometheus.Labels{"source": "s"},
		func() float64 { return float64(f.n.Load()) }))
}

func (f *fakeProbe) Ready(context.Context) error {
	if f.ready.Load() {
		return nil
	}
	return errors.New("not yet")
}

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	p := &fakeProbe{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr, p, zerolog.Nop()) }()

	get := func(path string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				if time.Now().After(deadline) {
					t.Fatalf("GET %s: %v", path, err)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
	}

	t.Run("healthz", func(t *testing.T) {
		if code, _ := get("/healthz"); code != http.StatusOK {
			t.Errorf("status = %d, want 200", code)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not yet") {
			t.Errorf("before ready: %d %q, want 503 with the reason", code, body)
		}
		p.ready.Store(true)
		if code, _ := get("/readyz"); code != http.StatusOK {
			t.Errorf("when ready: status = %d, want 200", code)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		p.n.Store(42)
		code, body := get("/metrics")
		if code != http.StatusOK {
			t.Fatalf("status = %d, want 200", code)
		}
		for _, want := range []string{`pgjet_test_total{source="s"} 42`, "go_goroutines ", "process_start_time_seconds "} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
	t.Run("address in use", func(t *testing.T) {
		err := Serve(context.Background(), addr, &fakeProbe{}, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
			t.Errorf("second Serve on %s = %v, want a listen error naming --metrics-addr", addr, err)
		}
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running 10s after its context ended")
	}
}

func TestProgress_Moved(t *testing.T) {
	var p progress
	first := time.Now().Add(-time.Hour)
	if got := p.moved([3]int64{1, 2, 3}, first); !got.Equal(first) {
		t.Errorf("first observation = %v, want %v", got, first)
	}
	if got := p.moved([3]int64{1, 2, 3}, time.Now()); !got.Equal(first) {
		t.Errorf("unchanged = %v, want %v", got, first)
	}
	if got := p.moved([3]int64{1, 2, 4}, first); time.Since(got) > time.Second {
		t.Errorf("changed = %v, want about now", got)
	}
}
