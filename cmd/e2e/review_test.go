package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestReview_HeartbeatAbutsCommit: a heartbeat's LSN is the END of its WAL
// record, which is where the next record begins. When the stream's last
// message is a heartbeat at E and the next transaction's commit record
// begins at E (its rows were written before the heartbeat), a restarted
// capture computes skipBelow = E+1 (streamTail) and skips that transaction
// (FinalLSN E < E+1): it is never published, the replica misses it.
func TestReview_HeartbeatAbutsCommit(t *testing.T) {
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--heartbeat", "0")
	ap := c.apply(t)
	defer ap.Stop(t)
	exec1(t, c.src, "INSERT INTO t VALUES (1, 'before')")
	waitRows(t, c.dst, "t", 1)

	ctx := context.Background()
	tx, err := pgx.Connect(ctx, c.src)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close(ctx)
	if _, err := tx.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2, 'committed right after a heartbeat')"); err != nil {
		t.Fatal(err)
	}
	// The heartbeat record comes after the row, before the commit.
	hb := queryString(t, c.src, "SELECT pg_logical_emit_message(false, 'pgjet.heartbeat', 'src')::text")
	waitSlotPast(t, 60*time.Second, c.src, "src", hb)
	capt.Kill()
	var ins string
	if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&ins); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	t.Logf("heartbeat ends at %s; the commit record is inserted at %s", hb, ins)

	capt = c.capture(t, "--heartbeat", "1s")
	defer capt.Stop(t)
	exec1(t, c.src, "INSERT INTO t VALUES (3, 'after restart')")
	waitFor(t, 60*time.Second, "row 3 on the replica", func() (bool, string) {
		return queryInt(t, c.dst, "SELECT count(*) FROM t WHERE id = 3") == 1, "not yet"
	})
	time.Sleep(2 * time.Second)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM t WHERE id = 2"); n != 1 {
		t.Fatalf("row 2 (committed right after the heartbeat that was the stream's last message) is missing on the replica: the restarted capture skipped its transaction")
	}
}
