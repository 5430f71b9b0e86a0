package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestAttack18_KeylessAttachPartition: under --keyless exclude, a table
// made without a key is left out of the list publication, and gets rows.
// ATTACH PARTITION makes it a partition of a published partitioned table
// (Postgres gives it the parent's key as it attaches). Its rows are now
// rows of a published table on the source that no replica got, as with
// "keyed after load"; pgjet must say so (the WARNING naming a resync) or
// the replica must get them. It does neither: the replica silently lacks
// them.
func TestAttack18_KeylessAttachPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	src, dst := keylessDBs(t, c, "kattach")
	exec1(t, src, `CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k)`,
		`CREATE TABLE m1 PARTITION OF m FOR VALUES IN (1)`, `INSERT INTO m SELECT i, 1, 'v' FROM generate_series(1, 10) i`)
	capt, app := keylessPipeline(t, c, "kattach", src, dst, "--keyless", "exclude")
	exec1(t, src, `CREATE TABLE m3 (id int NOT NULL, k int NOT NULL, v text)`, `INSERT INTO m3 SELECT i, 3, 'before attach' FROM generate_series(1, 10) i`)
	out, err := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", src, "-c", `ALTER TABLE m ATTACH PARTITION m3 FOR VALUES IN (3)`).CombinedOutput()
	if err != nil {
		t.Fatalf("attach: %v\n%s", err, out)
	}
	t.Logf("ATTACH PARTITION:\n%s", out)
	exec1(t, src, `UPDATE m SET v = 'after attach' WHERE id = 1`, `UPDATE acct SET v = 1`)
	if strings.Contains(string(out), "pgjet resync") {
		if o, code := pgjetRun(t, "resync", "--db", src, "--nats", c.nats.ClientURL(), "--name", "kattach", "--table", "public.m3"); code != 0 {
			t.Fatalf("pgjet resync exited %d:\n%s", code, o)
		}
	}
	waitSame(t, 30*time.Second, src, dst, "public.acct", "public.m1", "public.m3")
	capt.Stop(t)
	app.Stop(t)
}

