package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestVerify_RepairBesideConflictError: verify --repair beside an applier
// running --conflict error that lags behind the source. The repair writes
// rows the stream has not brought yet (an insert, a delete, a row updated
// and then deleted); when the applier reaches those changes it meets the
// repaired rows, and takes them for what they are, the source's rows as of
// the repair's read: the inserts find their rows already there, the
// updates and deletes find theirs already gone. It records those as
// skipped and goes on; the replica ends equal to the source. A row that
// goes missing later, by a local delete the repair did not make, still
// stops the applier.
func TestVerify_RepairBesideConflictError(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)", "CREATE TABLE gate (id int PRIMARY KEY, n int)")
	c.capture(t)
	app := c.apply(t, "--conflict", "error")
	exec1(t, c.src, "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g", "INSERT INTO gate VALUES (1, 0)")
	waitSame(t, 60*time.Second, c.src, c.dst)

	// A session holds gate's row on the replica: the applier waits at the
	// next source transaction that writes it, behind the source as a
	// lagging applier is, with the changes to items after it not applied.
	repairBehindApplier(t, c, "public.items", "repair: public.items: 2 inserted, 1 updated, 2 deleted",
		"INSERT INTO items VALUES (101, 'new')",
		"DELETE FROM items WHERE id = 5",
		"UPDATE items SET v = 'changed' WHERE id = 6",
		"UPDATE items SET v = 'gone soon' WHERE id = 7",
		"DELETE FROM items WHERE id = 7",
		"INSERT INTO items VALUES (102, 'x')",
		"UPDATE items SET v = 'y' WHERE id = 102")

	// The applier applies the changes the repair already holds without
	// stopping, and goes on.
	exec1(t, c.src, "INSERT INTO items VALUES (103, 'after')", "UPDATE items SET v = 'after' WHERE id = 101")
	waitSame(t, 60*time.Second, c.src, c.dst)
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify after the repair exited %d, want 0:\n%s%s", code, out, errOut)
	}
	for _, w := range []struct {
		kind string
		keys string
	}{{"insert_exists", "101,102"}, {"update_missing", "7"}, {"delete_missing", "5,7"}} {
		got := queryString(t, c.dst, "SELECT string_agg(key->>'id', ',' ORDER BY (key->>'id')::int) FROM pgjet.conflicts WHERE kind = $1 AND decision = 'skip'", w.kind)
		if got != w.keys {
			t.Errorf("%s conflicts decided skip for ids %q, want %q", w.kind, got, w.keys)
		}
	}

	// The repair deleted items 5 before the applier met its delete. The
	// source inserts it again; a local delete then removes it here, which
	// no repair did: the next change of it stops the applier as before.
	exec1(t, c.src, "INSERT INTO items VALUES (5, 'again')")
	waitSame(t, 60*time.Second, c.src, c.dst)
	exec1(t, c.dst, "DELETE FROM items WHERE id = 5")
	exec1(t, c.src, "UPDATE items SET v = 'once more' WHERE id = 5")
	expectFatal(t, app, `update_missing on public.items key {"id": 5}`, "conflict policy of the table is error")
}

// repairBehindApplier holds gate's row (id 1) on the replica, so that the
// applier waits at the source's next update of it, behind the source;
// commits that update and changes on the source; runs verify --repair of
// table while the applier waits, which must exit 0 and print want; then
// lets the applier go on.
func repairBehindApplier(t *testing.T, c *cluster, table, want string, changes ...string) {
	t.Helper()
	tx := openTx(t, c.dst, "SELECT 1 FROM gate WHERE id = 1 FOR UPDATE")
	exec1(t, c.src, append([]string{"UPDATE gate SET n = 1 WHERE id = 1"}, changes...)...)
	waitFor(t, 60*time.Second, "the applier to wait for gate's row", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
		return n == 1, fmt.Sprintf("%d sessions waiting for a lock", n)
	})
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--tables", table, "--wait-lsn=false", "--repair")
	t.Logf("pgjet verify --repair:\n%s%s", out, errOut)
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("pgjet verify --repair exited %d, want 0 and %q", code, want)
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
}
