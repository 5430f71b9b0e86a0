package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestTruncate_KeepLocalWithoutCommitTimestamps: keep-local tells rows
// written here by the commit timestamp and origin of their row version.
// A target with track_commit_timestamp off cannot tell them, so a
// TRUNCATE from the source must not wipe a row written here silently:
// the applier either keeps it or refuses to run, naming the setting.
func TestTruncate_KeepLocalWithoutCommitTimestamps(t *testing.T) {
	t.Parallel()
	c := &cluster{
		primary: local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}),
		replica: local.NewTestPostgres(t, local.PostgresOptions{Name: "replica", Settings: map[string]string{"track_commit_timestamp": "off"}}),
		nats:    local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"}),
	}
	c.src, c.dst = c.primary.URL("postgres"), c.replica.URL("postgres")
	exec1(t, c.src, "CREATE TABLE acct (id int PRIMARY KEY, v text)", "INSERT INTO acct SELECT i, 'source' FROM generate_series(1, 5) i")
	if err := local.CopySchema(context.Background(), c.src, c.dst); err != nil {
		t.Fatal(err)
	}
	exec1(t, c.dst, "INSERT INTO acct VALUES (10, 'written here')")
	capt := c.capture(t, "--no-snapshot")
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1",
		"--conflict", "keep-local", "--skip-snapshot")
	exec1(t, c.src, "TRUNCATE acct", "INSERT INTO acct VALUES (6, 'after')")
	waitFor(t, 60*time.Second, "the applier to refuse, or the rows after the TRUNCATE", func() (bool, string) {
		return app.Exited() || queryInt(t, c.dst, "SELECT count(*) FROM acct WHERE id = 6") == 1, "neither yet"
	})
	if app.Exited() {
		expectFatal(t, app, "track_commit_timestamp is off", "--conflict keep-local")
	} else {
		if n := queryInt(t, c.dst, "SELECT count(*) FROM acct WHERE id = 10"); n != 1 {
			t.Errorf("under keep-local the source's TRUNCATE wiped the row written here (track_commit_timestamp off), with %d conflicts recorded",
				queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"))
		}
		app.Stop(t)
	}
	capt.Stop(t)
}

// TestApply_TargetStatementTimeout: a statement_timeout set on the target
// (for the database or the apply role) cancels a replicated statement that
// takes longer, every time it is retried: the applier looped on it for
// ever, applying nothing. Replicated work must not be cut by it, as
// pg_dump and pg_restore are not, also after a schema change.
func TestApply_TargetStatementTimeout(t *testing.T) {
	t.Parallel()
	// The CHECK makes each insert take 0.5s on either side.
	c := newCluster(t, `CREATE FUNCTION slow(i int) RETURNS boolean LANGUAGE sql AS 'SELECT true FROM pg_sleep(0.5)'`,
		`CREATE TABLE t (id int PRIMARY KEY CHECK (slow(id)))`)
	exec1(t, c.dst, `ALTER DATABASE postgres SET statement_timeout = '200ms'`)
	capt := c.capture(t, "--no-snapshot")
	app := c.apply(t, "--skip-snapshot")
	// A replayed schema change resets the session's settings (RESET ALL),
	// back to the database's statement_timeout.
	exec1(t, c.src, `ALTER TABLE t ADD COLUMN w int`, `INSERT INTO t VALUES (1)`)
	waitFor(t, 30*time.Second, "the slow insert to be applied", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM t")
		return n == 1, fmt.Sprintf("%d rows, %d statement timeouts logged", n, strings.Count(app.Output(), "statement timeout"))
	})
	if n := queryInt(t, c.dst, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'w'"); n != 1 {
		t.Errorf("the schema change was not replayed before the insert")
	}
	app.Stop(t)
	capt.Stop(t)
}

// TestTruncate_TableCopiedAgainWithForeignKey: as
// TestTruncate_TableCopiedAgain, but z references a_small. The TRUNCATE
// of both reaches the applier with z's copy newer than it (z is passed
// over), so a_small is emptied alone, which a foreign key from z forbids
// to TRUNCATE: the applier must still get past it and match the source.
func TestTruncate_TableCopiedAgainWithForeignKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE a_small (id int PRIMARY KEY, v text)`, `CREATE TABLE big (id int PRIMARY KEY, pad text)`,
		`CREATE TABLE z (id int PRIMARY KEY, aid int REFERENCES a_small, v text)`,
		`INSERT INTO a_small SELECT i, 'before' FROM generate_series(1, 50) i`,
		`INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(1, 100000) i`,
		`INSERT INTO z SELECT i, i, 'before' FROM generate_series(1, 50) i`)
	args := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s", "--snapshot-workers", "1"}
	capt := start(t, "pgjet-capture", bins.capture, args...)

	// Killed once big's rows are coming (a_small is whole by then: tables
	// are copied in name order), long before z.
	js := natsJS(t, c.nats.ClientURL())
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		checkDaemons(t)
		if st, err := js.Stream(ctx, stream.SnapshotStreamName("src")); err == nil {
			if info, err := st.Info(ctx); err == nil && info.State.Msgs >= 7 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot rows of big after 60s:\n%s", tail(capt.Output(), 2000))
		}
		time.Sleep(5 * time.Millisecond)
	}
	capt.Kill()
	if strings.Contains(capt.Output(), `"message":"snapshot complete"`) {
		t.Fatalf("the snapshot completed before the kill; make big larger")
	}
	exec1(t, c.src, `TRUNCATE a_small, z`, `INSERT INTO a_small VALUES (1, 'after')`, `INSERT INTO z SELECT i, 1, 'after' FROM generate_series(100, 120) i`)
	capt = start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.src, `INSERT INTO z VALUES (200, 1, 'later')`, `UPDATE a_small SET v = 'later'`)

	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.snapshot_tables WHERE table_name = 'z'"); n != 1 {
		t.Fatalf("z was not copied again after the resume (the kill came too late?)")
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.snapshot_tables WHERE table_name = 'a_small'"); n != 0 {
		t.Fatalf("a_small was copied again after the resume (the kill came too early?)")
	}
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestReplay_TargetPastThePoint: pgjet replay --until-* on a database
// that already holds the source past the point (a replica, rolled back to
// before a bad change, --force or not) cannot go back: it must not report
// the replay complete while the database stays past the point.
func TestReplay_TargetPastThePoint(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO t VALUES (1, 'at the point')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	lsn := queryString(t, c.dst, "SELECT commit_lsn::text FROM pgjet.applied WHERE source = 'src'")
	exec1(t, c.src, `INSERT INTO t VALUES (2, 'the bad change')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)
	capt.Stop(t)

	code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.dst, "--until-lsn", lsn, "--force")
	rows := queryString(t, c.dst, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
	if code == 0 && rows != "1" {
		t.Fatalf("replay --until-lsn %s --force exited 0 and the database holds rows %s, want 1 (or a refusal):\n%s", lsn, rows, tail(out, 2000))
	}
	if code != 0 && !strings.Contains(out, "past") {
		t.Errorf("replay refused without saying the database is past the point:\n%s", tail(out, 2000))
	}
}
