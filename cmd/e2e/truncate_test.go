package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/stream"
)

// TestTruncate_RelationChangedInTransaction: a transaction inserts into b,
// alters b and then truncates a and b together. The new description of b
// closes the chunk in the middle of the TRUNCATE's relations; the chunk
// the TRUNCATE lands in must still describe a as well, or every region
// stops on it.
func TestTruncate_RelationChangedInTransaction(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, v text)`)
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO a SELECT i, 'a' FROM generate_series(1, 20) i`, `INSERT INTO b SELECT i, 'b' FROM generate_series(1, 20) i`)
	execTx(t, c.src, `INSERT INTO b VALUES (100, 'in the transaction')`, `ALTER TABLE b ADD COLUMN w int`,
		`TRUNCATE a, b`, `INSERT INTO b VALUES (2, 'after', 2)`)
	exec1(t, c.src, `INSERT INTO a VALUES (3, 'later')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestTruncate_TableCopiedAgain: capture is killed while its snapshot
// copies big, after small is whole; then small and z are truncated
// together and z gets new rows. The resumed snapshot copies big and z
// again, after the TRUNCATE: an applier built from it must empty small
// (copied before the TRUNCATE) and leave z's copy as it is.
func TestTruncate_TableCopiedAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE a_small (id int PRIMARY KEY, v text)`, `CREATE TABLE big (id int PRIMARY KEY, pad text)`,
		`CREATE TABLE z (id int PRIMARY KEY, v text)`,
		`INSERT INTO a_small SELECT i, 'before' FROM generate_series(1, 50) i`,
		`INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(1, 100000) i`,
		`INSERT INTO z SELECT i, 'before' FROM generate_series(1, 50) i`)
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
	exec1(t, c.src, `TRUNCATE a_small, z`, `INSERT INTO a_small VALUES (1, 'after')`, `INSERT INTO z SELECT i, 'after' FROM generate_series(100, 120) i`)
	capt = start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.src, `INSERT INTO z VALUES (200, 'later')`, `UPDATE a_small SET v = 'later'`)

	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	// What the test is about: z, not a_small, was copied again later.
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

// TestTruncate_KeepLocal: under keep-local, a TRUNCATE from the source
// deletes the rows the source wrote and keeps those written here (inserted
// or changed), recording one truncate_changed conflict per table that kept
// rows; a table truncated with it that holds only the source's rows is
// emptied without a record.
func TestTruncate_KeepLocal(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE acct (id int PRIMARY KEY, v text)", "CREATE TABLE other (id int PRIMARY KEY)")
	capt := c.capture(t)
	app := c.apply(t, "--conflict", "keep-local", "--local-name", "replica")
	exec1(t, c.src, "INSERT INTO acct SELECT i, 'source' FROM generate_series(1, 5) i", "INSERT INTO other SELECT generate_series(1, 5)")
	waitSame(t, 60*time.Second, c.src, c.dst)
	exec1(t, c.dst, "UPDATE acct SET v = 'changed here' WHERE id = 1", "INSERT INTO acct VALUES (10, 'written here')")
	exec1(t, c.src, "TRUNCATE acct, other", "INSERT INTO acct VALUES (6, 'after')", "INSERT INTO other VALUES (6)")
	waitFor(t, 60*time.Second, "the rows after the TRUNCATE", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM acct WHERE id = 6") + queryInt(t, c.dst, "SELECT count(*) FROM other WHERE id = 6")
		return n == 2, "not there yet"
	})
	var rows string
	if err := pgxQueryRow(t, c.dst, "SELECT string_agg(id || ' ' || v, '; ' ORDER BY id) FROM acct", &rows); err != nil {
		t.Fatal(err)
	}
	if want := "1 changed here; 6 after; 10 written here"; rows != want {
		t.Errorf("replica acct = %q, want %q", rows, want)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM other"); n != 1 {
		t.Errorf("replica other has %d rows, want 1 (the source's were truncated)", n)
	}
	got := conflicts(t, c.dst)
	checkConflicts(t, got, [][4]string{{"truncate_changed", "skip", "null", "replica"}})
	if len(got) == 1 && (got[0].Table != "public.acct" || string(got[0].Local) != `{"rows": 2}`) {
		t.Errorf("conflict = table %s local_row %s, want public.acct {\"rows\": 2}", got[0].Table, got[0].Local)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestTruncate_Error: under the error policy a TRUNCATE that would wipe
// rows written here stops the applier; nothing of its transaction is
// applied and the conflict is recorded.
func TestTruncate_Error(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE acct (id int PRIMARY KEY, v text)", "CREATE TABLE other (id int PRIMARY KEY)")
	capt := c.capture(t)
	app := c.apply(t, "--conflict", "error")
	exec1(t, c.src, "INSERT INTO acct SELECT i, 'source' FROM generate_series(1, 5) i", "INSERT INTO other SELECT generate_series(1, 5)")
	waitSame(t, 60*time.Second, c.src, c.dst)
	exec1(t, c.dst, "INSERT INTO acct VALUES (10, 'written here')")
	exec1(t, c.src, "BEGIN; INSERT INTO other VALUES (6); TRUNCATE acct; COMMIT")
	expectFatal(t, app, "truncate_changed on public.acct at LSN ", "conflict policy of the table is error", "--conflict-table public.acct=POLICY")
	if n := queryInt(t, c.dst, "SELECT count(*) FROM acct"); n != 6 {
		t.Errorf("replica acct has %d rows, want all 6 kept", n)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM other WHERE id = 6"); n != 0 {
		t.Errorf("the transaction of the conflict was partly applied: other has row 6")
	}
	checkConflicts(t, conflicts(t, c.dst), [][4]string{{"truncate_changed", "error", "null", "(local)"}})
	capt.Stop(t)
}
