package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

const basicSchema = `
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12,2), tags text[], data jsonb, at timestamptz);
CREATE TABLE pairs (a int, b int, note text, PRIMARY KEY (a, b));
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;`

func TestPipeline_Changes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, basicSchema)
	cap := c.capture(t)
	app := c.apply(t)

	exec1(t, c.src,
		`INSERT INTO items SELECT g, 'item '||g, g*1.5, ARRAY['a',NULL,'c'], jsonb_build_object('g', g), now() FROM generate_series(1, 500) g`,
		`INSERT INTO items VALUES (1000, NULL, NULL, NULL, NULL, NULL), (1001, '', 0, '{}', '{}', '-infinity')`,
		`UPDATE items SET price = price + 1 WHERE id % 3 = 0`,
		`DELETE FROM items WHERE id % 7 = 0`,
		`UPDATE items SET id = id + 10000 WHERE id BETWEEN 10 AND 20`,
		`BEGIN; INSERT INTO pairs VALUES (1,1,'x'),(1,2,'y'),(2,1,'z'); UPDATE items SET name = 'multi' WHERE id = 1; DELETE FROM pairs WHERE a = 1 AND b = 2; COMMIT`,
		`INSERT INTO nokey VALUES (1,'dup'),(1,'dup'),(2,'two'),(3,NULL)`,
		`UPDATE nokey SET b = 'changed' WHERE a = 2`,
		`DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1)`,
		`UPDATE nokey SET a = 30 WHERE b IS NULL`,
	)
	waitSame(t, 60*time.Second, c.src, c.dst)

	exec1(t, c.src, `TRUNCATE pairs`, `INSERT INTO pairs VALUES (5,5,'after truncate')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("conflicts = %d, want 0 on a clean replica", n)
	}

	cap.Stop(t)
	app.Stop(t)
}

// TestCapture_HeartbeatAdvancesIdleSlot: WAL written elsewhere (another
// database) is not decoded into changes for this slot, yet the slot must
// not hold it back: heartbeats move the confirmed position.
func TestCapture_HeartbeatAdvancesIdleSlot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE idle (id int PRIMARY KEY)")
	if err := c.primary.CreateDatabase(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	capt := c.capture(t)
	// The slot cannot have confirmed past where the WAL stood before the
	// filler; a heartbeat may move it into the filler's WAL while that is
	// written, so "behind" is measured from there, not after the fact.
	before := queryString(t, c.src, "SELECT pg_current_wal_lsn()::text")
	exec1(t, c.primary.URL("other"), "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
	after := queryString(t, c.src, "SELECT pg_current_wal_lsn()::text")
	if n := queryInt(t, c.src, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint", after, before); n < 5<<20 {
		t.Fatalf("the filler wrote only %d bytes of WAL; the test needs the WAL to be behind", n)
	}
	retained := func() int64 {
		return queryInt(t, c.src, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'pgjet_src'")
	}
	waitFor(t, 30*time.Second, "heartbeats to advance the idle slot", func() (bool, string) {
		r := retained()
		return r < 64<<10, fmt.Sprintf("%d bytes retained", r)
	})
	waitSlotPast(t, 30*time.Second, c.src, "src", after)
	capt.Stop(t)
}
