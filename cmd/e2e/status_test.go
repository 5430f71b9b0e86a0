package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// pgjetStatus runs `pgjet status` with args and returns its output (stdout
// and stderr) and exit code.
func pgjetStatus(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return pgjetRun(t, "status", args...)
}

// pgjetRun runs `pgjet command` with args and returns its output (stdout
// and stderr) and exit code.
func pgjetRun(t *testing.T, command string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.pgjet, append([]string{command}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pgjet %s: %v\n%s", command, err, out)
	}
	return string(out), 0
}

// waitStatus polls `pgjet status` until its exit code is code and its
// output holds every string of want.
func waitStatus(t *testing.T, what string, code int, want []string, args ...string) string {
	t.Helper()
	var out string
	waitFor(t, 30*time.Second, what, func() (bool, string) {
		checkDaemons(t)
		var got int
		out, got = pgjetStatus(t, args...)
		if got != code {
			return false, fmt.Sprintf("exit %d, want %d:\n%s", got, code, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false, fmt.Sprintf("output lacks %q:\n%s", w, out)
			}
		}
		return true, ""
	})
	return out
}

// TestStatus_Unhealthy: `pgjet status` exits 0 only while everything
// works, and names each thing that does not: dead letters set aside, an
// applier that stopped (not a slow one), a capture that is down, and a
// target database that does not answer.
func TestStatus_Unhealthy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	app := c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 20) g")
	waitSame(t, 60*time.Second, c.src, c.dst)
	args := []string{"--nats", c.nats.ClientURL(), "--name", "src", "--db-region", "r1=" + c.dst,
		"--source-db", c.src, "--stall-timeout", "3s"}

	t.Run("healthy", func(t *testing.T) {
		out := waitStatus(t, "status to report a healthy pipeline", 0, []string{"healthy"}, args...)
		t.Logf("healthy:\n%s", out)
	})

	t.Run("dead letters", func(t *testing.T) {
		js := natsJS(t, c.nats.ClientURL())
		bad := nats.NewMsg(stream.TxnSubject("src"))
		bad.Data = garbageMsg
		if _, err := js.PublishMsg(ctx, bad); err != nil {
			t.Fatal(err)
		}
		app.waitLog(t, "bad message dead-lettered: kept with its origin in the dead-letter stream; apply goes on past it")
		out := waitStatus(t, "status to report the dead letter", 1,
			[]string{apply.DeadLetterStream("src", "r1"), "region r1 set aside 1 message"}, args...)
		t.Logf("after a dead letter:\n%s", out)

		// Handled: the operator purges the dead letters, and status is
		// healthy again.
		dlq, err := js.Stream(ctx, apply.DeadLetterStream("src", "r1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := dlq.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, "status to be healthy after the dead letters were purged", 0, []string{"healthy"}, args...)
	})

	t.Run("applier stopped", func(t *testing.T) {
		app.Kill()
		out := waitStatus(t, "status to report the applier stopped", 1, []string{"applier of region r1 is not running"}, args...)
		t.Logf("applier killed:\n%s", out)
		app = c.apply(t, "--on-bad-message", "dead-letter")
		waitStatus(t, "status to be healthy with the applier back", 0, []string{"healthy"}, args...)
	})

	t.Run("capture down", func(t *testing.T) {
		capt.Kill()
		out := waitStatus(t, "status to report capture down", 1, []string{"capture is down"}, args...)
		t.Logf("capture killed:\n%s", out)
		capt = c.capture(t)
		waitStatus(t, "status to be healthy with capture back", 0, []string{"healthy"}, args...)
	})

	t.Run("replica down", func(t *testing.T) {
		if err := c.replica.Kill(); err != nil {
			t.Fatal(err)
		}
		out := waitStatus(t, "status to report the replica down", 1, []string{"database of region r1"}, args...)
		t.Logf("replica killed:\n%s", out)
	})
	_ = capt
}

// TestStatus_RegionCutOff: a region whose leafnode link is cut never shows
// as caught up, even on an idle source where it holds the newest
// transaction: status compares it with the source's stream in the hub,
// not with its own stale mirror, and exits 1. Asked through the cut
// region's own server, status reaches for the hub and says it cannot.
func TestStatus_RegionCutOff(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1")
	exec1(t, s.src, "INSERT INTO pgbench_branches VALUES (1, 0, 'before the cut')")
	waitSame(t, 60*time.Second, s.src, s.dst["r1"])
	hubArgs := []string{"--nats", s.top.Hub.ClientURL(), "--name", "src", "--domains", "hub,r1",
		"--db-region", "r1=" + s.dst["r1"], "--stall-timeout", "3s"}
	waitStatus(t, "status to report r1 caught up", 0, []string{"(caught up)", "healthy"}, hubArgs...)

	s.top.Proxies["r1"].Cut()
	// A cut is a cut when r1's mirror stands still while the hub's stream
	// (heartbeats every second) grows.
	frozen := s.mustLastSeq(t, "r1")
	hubAt := s.mustLastSeq(t, "hub")
	waitFor(t, 30*time.Second, "the hub to grow while r1's mirror stands still", func() (bool, string) {
		n := s.mustLastSeq(t, "r1")
		if n != frozen {
			frozen, hubAt = n, s.mustLastSeq(t, "hub")
			return false, fmt.Sprintf("r1 mirror moved to %d", n)
		}
		h := s.mustLastSeq(t, "hub")
		return h >= hubAt+5, fmt.Sprintf("hub %d, r1 %d", h, n)
	})

	out := waitStatus(t, "status through the hub to report r1 behind", 1, []string{"region r1"}, hubArgs...)
	if strings.Contains(out, "(caught up)") {
		t.Errorf("status through the hub says r1 is caught up while its link is cut:\n%s", out)
	}
	t.Logf("through the hub:\n%s", out)

	r1Args := []string{"--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--db-region", "r1=" + s.dst["r1"], "--stall-timeout", "3s"}
	out = waitStatus(t, "status through r1 to report the hub unreachable", 1, []string{"hub"}, r1Args...)
	if strings.Contains(out, "(caught up)") {
		t.Errorf("status through r1 says r1 is caught up while its link is cut:\n%s", out)
	}
	t.Logf("through r1:\n%s", out)
}
