package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// TestMetrics_Endpoints: with --metrics-addr, both daemons serve /healthz,
// /readyz once replicating, and /metrics whose counters move while rows
// replicate and whose lag is present. The applier's /readyz fails when the
// stream goes silent.
func TestMetrics_Endpoints(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	capAddr, appAddr := metricsAddr(t), metricsAddr(t)
	capt := c.capture(t, "--metrics-addr", capAddr)
	app := c.apply(t, "--metrics-addr", appAddr, "--stall-timeout", "4s")

	for _, addr := range []string{capAddr, appAddr} {
		if code, body := get(t, addr, "/healthz"); code != http.StatusOK {
			t.Errorf("GET %s/healthz = %d %q, want 200", addr, code, body)
		}
		waitFor(t, 30*time.Second, addr+"/readyz to return 200", func() (bool, string) {
			checkDaemons(t)
			code, body := get(t, addr, "/readyz")
			return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
		})
	}

	// Counters move as rows replicate, scraped while replication runs.
	for round := 1; round <= 3; round++ {
		exec1(t, c.src, fmt.Sprintf(`INSERT INTO items SELECT g, md5(g::text) FROM generate_series(%d, %d) g`, round*1000, round*1000+99),
			fmt.Sprintf(`UPDATE items SET v = 'round %d' WHERE id %% 10 = 0`, round))
		waitFor(t, 60*time.Second, fmt.Sprintf("round %d in the metrics", round), func() (bool, string) {
			checkDaemons(t)
			cm, am := scrape(t, capAddr), scrape(t, appAddr)
			state := fmt.Sprintf("capture txns %v changes %v, apply txns %v changes %v",
				cm["pgjet_capture_transactions_total"], cm["pgjet_capture_changes_total"],
				am["pgjet_apply_transactions_total"], am["pgjet_apply_changes_total"])
			return cm["pgjet_capture_transactions_total"] >= float64(2*round) && cm["pgjet_capture_changes_total"] >= float64(110*round) &&
				am["pgjet_apply_transactions_total"] >= float64(2*round) && am["pgjet_apply_changes_total"] >= float64(110*round), state
		})
	}
	waitSame(t, 60*time.Second, c.src, c.dst)

	cm, am := scrape(t, capAddr), scrape(t, appAddr)
	for _, name := range []string{"pgjet_capture_confirmed_lsn", "pgjet_capture_messages_total", "pgjet_capture_bytes_total",
		"pgjet_capture_retained_wal_bytes", "pgjet_capture_wal_lsn", "pgjet_capture_slot_active", "go_goroutines"} {
		if cm[name] <= 0 {
			t.Errorf("capture metric %s = %v, want > 0", name, cm[name])
		}
	}
	// The initial snapshot of the fresh stream is counted when complete.
	waitFor(t, 30*time.Second, "the initial snapshot in the metrics", func() (bool, string) {
		cm := scrape(t, capAddr)
		return cm["pgjet_capture_snapshots_total"] >= 1 && cm["pgjet_capture_snapshot_tables"] >= 1 &&
				cm["pgjet_capture_snapshot_tables_done"] == cm["pgjet_capture_snapshot_tables"],
			fmt.Sprintf("snapshots %v, tables %v/%v", cm["pgjet_capture_snapshots_total"], cm["pgjet_capture_snapshot_tables_done"], cm["pgjet_capture_snapshot_tables"])
	})
	if _, ok := cm["pgjet_capture_pending_acks"]; !ok {
		t.Error("capture metric pgjet_capture_pending_acks is missing")
	}
	for _, name := range []string{"pgjet_apply_applied_lsn", "pgjet_apply_source_lsn", "pgjet_apply_stream_seq", "pgjet_apply_commits_total", "go_goroutines"} {
		if am[name] <= 0 {
			t.Errorf("apply metric %s = %v, want > 0", name, am[name])
		}
	}
	lag, ok := am["pgjet_apply_lag_seconds"]
	if !ok || lag < 0 || lag > 30 {
		t.Errorf("pgjet_apply_lag_seconds = %v (present %v), want between 0 and 30", lag, ok)
	}
	if _, ok := am["pgjet_apply_conflicts_total"]; !ok {
		t.Error("apply metric pgjet_apply_conflicts_total is missing")
	}
	_, body := get(t, appAddr, "/metrics")
	if want := `pgjet_apply_lag_seconds{region="r1",source="src"}`; !strings.Contains(body, want) {
		t.Errorf("apply /metrics has no %s", want)
	}

	// A silent stream (capture stopped, so no heartbeats) makes the
	// applier not ready, while it stays alive.
	capt.Stop(t)
	waitFor(t, 30*time.Second, "apply /readyz to fail without heartbeats", func() (bool, string) {
		code, body := get(t, appAddr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no transaction or heartbeat"), fmt.Sprintf("%d %s", code, body)
	})
	if code, _ := get(t, appAddr, "/healthz"); code != http.StatusOK {
		t.Errorf("apply /healthz = %d after the capture stopped, want 200", code)
	}
	app.Stop(t)
	if _, err := http.Get("http://" + appAddr + "/healthz"); err == nil {
		t.Errorf("apply still serves %s after it exited", appAddr)
	}
}

// metricsAddr returns a free 127.0.0.1 address for --metrics-addr.
func metricsAddr(t *testing.T) string {
	t.Helper()
	port, err := local.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// get returns the status and body of GET http://addr/path; status 0 when
// the request failed.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// scrape reads /metrics at addr into name → value; every pgjet series must
// carry the source label.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := get(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics = %d: %s", addr, code, body)
	}
	out := map[string]float64{}
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		name, labels, _ := strings.Cut(series, "{")
		if strings.HasPrefix(name, "pgjet_") && !strings.Contains(labels, `source="src"`) {
			t.Errorf("series %s lacks the source label", series)
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[name] = v
	}
	return out
}
