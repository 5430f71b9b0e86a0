package e2e

import (
	"testing"
	"time"
)

// TestSnapshot_RestoreUnderSourceOrigin: regions under last-writer-wins
// and keep-local are built from a snapshot while the source keeps
// updating and deleting rows of it. The restored rows are the source's,
// not local writes: every change after the snapshot's point applies, no
// conflict is recorded, and each replica equals the source.
func TestSnapshot_RestoreUnderSourceOrigin(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL, note text)`,
		`INSERT INTO acct SELECT i, 0, 'n' || i FROM generate_series(1, 3000) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	// Committed after the snapshot's point and before any restore ends.
	exec1(t, c.src, `UPDATE acct SET v = v + 1 WHERE id % 2 = 0`, `DELETE FROM acct WHERE id % 10 = 0`,
		`INSERT INTO acct VALUES (5000, 1, 'new')`)

	for _, policy := range []string{"last-writer-wins", "keep-local"} {
		t.Run(policy, func(t *testing.T) {
			db := "r_" + map[string]string{"last-writer-wins": "lww", "keep-local": "keep"}[policy]
			exec1(t, c.dst, "CREATE DATABASE "+db)
			url := c.replica.URL(db)
			// The source goes on writing while the region is built.
			load := pgbenchAsync(t, c.src, "-n", "-c", "2", "-T", "4", "-f",
				writeScript(t, "\\set a random(1, 3000)\nUPDATE acct SET v = v + 1, note = 'load' WHERE id = :a;\n"))
			started := time.Now()
			app := start(t, "pgjet-apply "+policy, bins.apply, "--db", url, "--nats", c.nats.ClientURL(), "--name", "src",
				"--region", db, "--local-name", db, "--conflict", policy)
			app.waitLog(t, "snapshot restored; following changes")
			if err := <-load; err != nil {
				t.Fatalf("pgbench: %v", err)
			}
			waitSame(t, 60*time.Second, c.src, url, "acct")
			if n := queryInt(t, url, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
				t.Errorf("%d conflicts recorded: the restored rows count as local writes (%s)", n,
					queryString(t, url, "SELECT string_agg(DISTINCT kind || '/' || decision || '/' || coalesce(local_origin, '?'), ', ') FROM pgjet.conflicts"))
			}
			// Every row is the source's, and the rows no change touched
			// since the snapshot carry its time, not the restore's.
			if n := queryInt(t, url, `SELECT count(*) FROM acct a, pg_xact_commit_timestamp_origin(a.xmin) o
				WHERE o.roident IS DISTINCT FROM (SELECT roident FROM pg_replication_origin WHERE roname = $1)`, perDatabaseOrigin(t, url, "src")); n != 0 {
				t.Errorf("%d rows were not written under the origin %s", n, perDatabaseOrigin(t, url, "src"))
			}
			if n := queryInt(t, url, `SELECT count(*) FROM acct WHERE v = 0 AND note = 'n' || id AND pg_xact_commit_timestamp(xmin) >= $1`, started); n != 0 {
				t.Errorf("%d restored rows have a commit time later than the snapshot's", n)
			}
			app.Stop(t)
		})
	}
	capt.Stop(t)
}
