package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestReplay_PointInclusive: --until-lsn and --until-time include a
// transaction committed exactly at the point (as PostgreSQL's
// recovery_target_inclusive does) and stop before the next one; the
// heartbeats between the two, past the point, must not move the position
// the replayed target says it has caught up to (pgjet.applied.source_lsn)
// beyond the last transaction replayed.
func TestReplay_PointInclusive(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO t VALUES (1, 'at the point')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	// The commit LSN and time of that transaction, as the stream has them.
	lsn := queryString(t, c.dst, "SELECT commit_lsn::text FROM pgjet.applied WHERE source = 'src'")
	at := queryString(t, c.dst, `SELECT to_char(commit_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM pgjet.applied WHERE source = 'src'`)
	// Heartbeats after the point reach the stream, then the transaction
	// past it.
	c.waitCaptured(t)
	c.waitCaptured(t)
	exec1(t, c.src, `INSERT INTO t VALUES (2, 'past the point')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)

	for _, until := range [][]string{{"--until-lsn", lsn}, {"--until-time", at}} {
		url, _ := c.replayInto(t, "replay"+strings.TrimPrefix(until[0], "--until-"), until...)
		if got := queryString(t, url, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"); got != "1" {
			t.Errorf("replay %v: rows %q, want 1 (the transaction at the point, not the one after it)", until, got)
		}
		end := queryString(t, url, "SELECT end_lsn::text FROM pgjet.applied WHERE source = 'src'")
		caught := queryString(t, url, "SELECT source_lsn::text FROM pgjet.applied WHERE source = 'src'")
		if caught != end {
			t.Errorf("replay %v: caught-up position %s, want the replayed transaction's end %s (heartbeats past the point moved it)", until, caught, end)
		}
	}
	capt.Stop(t)
}

// replayInto runs pgjet replay of source src with args into a new database
// db of the replica's cluster, fails the test unless it exits 0, and
// returns the database's URL and the replay's output.
func (c *cluster) replayInto(t *testing.T, db string, args ...string) (string, string) {
	t.Helper()
	exec1(t, c.dst, "CREATE DATABASE "+db)
	url := c.replica.URL(db)
	code, out := runPgjet(t, append([]string{"replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", url}, args...)...)
	if code != 0 {
		t.Fatalf("replay %v into %s exited %d:\n%s", args, db, code, tail(out, 3000))
	}
	return url, out
}
