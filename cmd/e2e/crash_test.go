package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// pgbench runs pgbench against url and fails the test on error.
func pgbench(t *testing.T, url string, args ...string) {
	t.Helper()
	cmd := exec.Command("pgbench", append(args, url)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench %v: %v\n%s (install postgresql-client-15 if pgbench is missing)", args, err, out)
	}
}

// pgbenchAsync runs pgbench in the background; the returned channel gets
// its error when it ends.
func pgbenchAsync(t *testing.T, url string, args ...string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	cmd := exec.Command("pgbench", append(args, url)...)
	out, err := os.Create(filepath.Join(t.TempDir(), "pgbench.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbench: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	go func() {
		err := cmd.Wait()
		if err != nil {
			b, _ := os.ReadFile(out.Name())
			t.Logf("pgbench output:\n%s", tail(string(b), 2048))
		}
		done <- err
	}()
	return done
}

const noKeyScript = `\set a random(1, 500)
INSERT INTO nokey VALUES (:a, 'v');
UPDATE nokey SET b = b || 'x' WHERE a = :a AND length(b) < 50;
DELETE FROM nokey WHERE a = :a AND random() < 0.2;
`

// pgbenchCluster is a cluster with pgbench's tables (no data yet) and a
// table without a primary key, on the primary and the replica.
func pgbenchCluster(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t)
	pgbench(t, c.src, "-i", "-I", "dtp", "-s", "1", "-q")
	exec1(t, c.src, historyIdentity, "CREATE TABLE nokey (a int, b text)", "ALTER TABLE nokey REPLICA IDENTITY FULL")
	copySchema(t, c)
	return c
}

// historyIdentity gives pgbench_history, which has no key, the replica
// identity capture asks for before it publishes such a table (without
// one, pgjet-capture refuses to start: see TestCapture_KeylessTables).
const historyIdentity = "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"

func copySchema(t *testing.T, c *cluster) {
	t.Helper()
	if err := localCopySchema(context.Background(), c.src, c.dst); err != nil {
		t.Fatal(err)
	}
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script.sql")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPipeline_KillNine kills capture and apply with SIGKILL at random
// points of a pgbench load; the replica must end identical to the primary:
// nothing lost, nothing applied twice (pgbench_history and nokey have no
// primary key, so a duplicate shows in their digests).
func TestPipeline_KillNine(t *testing.T) {
	t.Parallel()
	c := pgbenchCluster(t)
	capt := c.capture(t)
	app := c.apply(t)
	pgbench(t, c.src, "-i", "-I", "g", "-s", "1", "-q")

	script := writeScript(t, noKeyScript)
	load := pgbenchAsync(t, c.src, "-n", "-c", "4", "-T", "40", "-b", "tpcb-like@4", "-f", script+"@1")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for running := true; running; {
		select {
		case err := <-load:
			if err != nil {
				t.Fatalf("pgbench: %v", err)
			}
			running = false
		case <-time.After(time.Duration(1500+rng.IntN(3000)) * time.Millisecond):
			if rng.IntN(2) == 0 {
				capt.Kill()
				capt = start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s")
			} else {
				app.Kill()
				app = start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
			}
			kills++
		}
	}
	t.Logf("%d kills during the load", kills)
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if n := queryInt(t, c.src, "SELECT count(*) FROM pgbench_history"); n < 100 {
		t.Fatalf("pgbench_history has %d rows: the load did not run", n)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("conflicts = %d, want 0: a change was applied twice or lost", n)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestPipeline_NATSRestart restarts the NATS server in the middle of a load.
func TestPipeline_NATSRestart(t *testing.T) {
	t.Parallel()
	c := pgbenchCluster(t)
	capt := c.capture(t)
	app := c.apply(t)
	pgbench(t, c.src, "-i", "-I", "g", "-s", "1", "-q")
	load := pgbenchAsync(t, c.src, "-n", "-c", "2", "-T", "20", "-b", "tpcb-like@4", "-f", writeScript(t, noKeyScript)+"@1")
	// NATS goes away once the load runs (capture publishes it as it
	// commits; the replica may still be applying pgbench's initial data),
	// and comes back once both daemons have lost it.
	waitRows(t, c.src, "pgbench_history", 100)
	c.nats.Shutdown()
	capt.waitLog(t, "nats disconnected, reconnecting")
	app.waitLog(t, "nats disconnected, reconnecting")
	if err := c.nats.Restart(); err != nil {
		t.Fatalf("restart nats: %v", err)
	}
	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if capt.Exited() || app.Exited() {
		t.Fatalf("a daemon exited during the NATS restart")
	}
	capt.Stop(t)
	app.Stop(t)
}
