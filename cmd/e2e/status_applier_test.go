package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/stream"
)

// TestStatus_ApplierState: `pgjet status` reads the state each applier
// records in its target (pgjet.applier_state). A running applier is
// "running" and status exits 0; one killed -9 leaves "running" behind with
// a heartbeat that stops, and status calls it down, saying for how long;
// one stopped by SIGTERM or on a fatal error recorded it, and status
// shows the error line; each exits 1. A --name that no stream has is one line and a
// non-zero exit, not a report of an empty source.
func TestStatus_ApplierState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	c.capture(t)
	app := c.apply(t, "--state-interval", "1s")
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 20) g")
	waitSame(t, 60*time.Second, c.src, c.dst)
	args := []string{"--nats", c.nats.ClientURL(), "--name", "src", "--db-region", "r1=" + c.dst, "--stall-timeout", "3s"}
	stateOf := func() string {
		return queryString(t, c.dst, "SELECT state || ' ' || coalesce(last_error, '-') FROM pgjet.applier_state WHERE source = 'src'")
	}

	t.Run("healthy", func(t *testing.T) {
		out := waitStatus(t, "status to show r1's applier running", 0, []string{"running", "healthy"}, args...)
		t.Logf("healthy:\n%s", out)
		if got, want := queryInt(t, c.dst, "SELECT pid FROM pgjet.applier_state WHERE source = 'src' AND state = 'running'"), int64(app.cmd.Process.Pid); got != want {
			t.Errorf("recorded pid = %d, want the applier's %d", got, want)
		}
	})

	t.Run("killed", func(t *testing.T) {
		app.Kill()
		out := waitStatus(t, "status to show r1's applier down", 1,
			[]string{"down (no heartbeat for", "applier of region r1 is down"}, args...)
		t.Logf("killed -9:\n%s", out)
		if got := stateOf(); !strings.HasPrefix(got, "running") {
			t.Errorf("state after kill -9 = %q, want running (nothing could record the end)", got)
		}
	})

	t.Run("clean stop", func(t *testing.T) {
		app = c.apply(t, "--state-interval", "1s")
		waitStatus(t, "status to show r1's applier running again", 0, []string{"running", "healthy"}, args...)
		app.Stop(t)
		if got, want := stateOf(), "stopped -"; got != want {
			t.Errorf("recorded state after SIGTERM = %q, want %q", got, want)
		}
		out := waitStatus(t, "status to show r1's applier stopped cleanly", 1, []string{"stopped", "a clean stop (SIGTERM)"}, args...)
		t.Logf("stopped by SIGTERM:\n%s", out)
	})

	t.Run("fatal error", func(t *testing.T) {
		app = c.apply(t, "--state-interval", "1s")
		waitStatus(t, "status to show r1's applier running again", 0, []string{"running", "healthy"}, args...)
		js := natsJS(t, c.nats.ClientURL())
		bad := nats.NewMsg(stream.TxnSubject("src"))
		bad.Data = garbageMsg
		if _, err := js.PublishMsg(ctx, bad); err != nil {
			t.Fatal(err)
		}
		if code := app.Wait(t, 60*time.Second); code == 0 {
			t.Fatalf("applier exited 0 on an undecodable message, want non-zero:\n%s", tail(app.Output(), 4096))
		}
		if got := stateOf(); !strings.HasPrefix(got, "stopped") || !strings.Contains(got, "cannot be decoded") {
			t.Errorf("recorded state = %q, want stopped with the decode error", got)
		}
		out := waitStatus(t, "status to show r1's applier stopped with its error", 1,
			[]string{"stopped", "cannot be decoded", "applier of region r1 stopped"}, args...)
		t.Logf("stopped on a fatal error:\n%s", out)
	})

	t.Run("wrong name", func(t *testing.T) {
		out, code := pgjetStatus(t, "--nats", c.nats.ClientURL(), "--name", "srcc")
		if code == 0 {
			t.Errorf("status --name srcc exited 0, want non-zero:\n%s", out)
		}
		out = strings.TrimSpace(out)
		if n := strings.Count(out, "\n") + 1; n != 1 || !strings.Contains(out, "srcc") {
			t.Errorf("status --name srcc printed %d lines, want one naming srcc:\n%s", n, out)
		}
		t.Logf("wrong --name (exit %d): %s", code, out)
	})
}
