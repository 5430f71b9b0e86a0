package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/stream"
)

// TestResync_Table: pgjet resync re-copies one table, whose replica rows
// were damaged by hand, into the region while the source keeps writing it
// and another table: the applier reaches the resync's marker, replaces the
// table's rows with the copy (taken in parallel block ranges, with a row
// cut over several messages, and referenced by another table's foreign
// key), passes over the table's changes older than the copy, and applies
// the rest; the replica ends equal to the source. The copy is no snapshot
// a region could be built from, and a table that is not captured is
// refused in one line.
func TestResync_Table(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE a (id int PRIMARY KEY, v text, n int)", "CREATE TABLE b (id int PRIMARY KEY, n int)",
		"CREATE TABLE c (id int PRIMARY KEY, a_id int REFERENCES a (id))")
	c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, "INSERT INTO a SELECT g, 'v' || g, g FROM generate_series(1, 3000) g",
		"UPDATE a SET v = repeat('big', 30000) WHERE id = 1500",
		"INSERT INTO b SELECT g, g FROM generate_series(1, 500) g",
		"INSERT INTO c SELECT g, g FROM generate_series(1, 100) g")
	waitSame(t, 60*time.Second, c.src, c.dst)

	// The replica's a is damaged behind the applier's back.
	exec1(t, c.dst, "DELETE FROM a WHERE id BETWEEN 200 AND 219", "UPDATE a SET v = 'corrupt' WHERE id BETWEEN 300 AND 319",
		"INSERT INTO a SELECT g, 'extra', 0 FROM generate_series(100001, 100005) g")

	out, code := pgjetRun(t, "resync", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--table", "public.nosuch")
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") > 0 || !strings.Contains(out, "table public.nosuch is not captured") {
		t.Errorf("pgjet resync of a table not captured exited %d, want 1 and one line:\n%s", code, out)
	}

	stop := writeLoad(t, c.src, func(ctx context.Context, conn *pgx.Conn, i int) {
		_, _ = conn.Exec(ctx, "UPDATE a SET n = n + 1, v = 'w' || $2::text WHERE id = $1", 1+rand.IntN(3000), i)
		_, _ = conn.Exec(ctx, "INSERT INTO a VALUES ($1, 'new', 0)", 10000+i)
		_, _ = conn.Exec(ctx, "UPDATE b SET n = n + 1 WHERE id = $1", 1+rand.IntN(500))
	})
	// Parallel block ranges and messages smaller than the big row.
	out, code = pgjetRun(t, "resync", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--table", "public.a",
		"--snapshot-range-bytes", "16384", "--snapshot-workers", "3", "--chunk-bytes", "4096")
	t.Logf("pgjet resync: %s", out)
	if code != 0 || !strings.Contains(out, "resync resync-") {
		stop()
		t.Fatalf("pgjet resync exited %d, want 0", code)
	}
	app.waitLog(t, "table re-copied from its resync: its changes before the copy's point are passed over, those after it follow")
	// The rows only the replica had are gone with the copy (no change of
	// the source's could remove them).
	waitFor(t, 30*time.Second, "the rows only the replica had to go", func() (bool, string) {
		n := queryInt(t, c.dst, "SELECT count(*) FROM a WHERE id > 100000")
		return n == 0, fmt.Sprintf("%d left", n)
	})
	// Changes keep flowing past the copy's point for a while.
	waitRows(t, c.dst, "a", 3000+int64(queryInt(t, c.src, "SELECT count(*) FROM a WHERE id >= 10000"))+20)
	stop()
	waitSame(t, 60*time.Second, c.src, c.dst)
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify after the resync exited %d, want 0:\n%s%s", code, out, errOut)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.snapshot_tables WHERE source = 'src' AND schema_name = 'public' AND table_name = 'a'"); n != 1 {
		t.Errorf("%d rows of pgjet.snapshot_tables for public.a, want 1", n)
	}

	st, err := natsJS(t, c.nats.ClientURL()).Stream(ctx, stream.SnapshotStreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := stream.ListSnapshots(ctx, st, "src")
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range snaps {
		if stream.IsResyncID(si.ID) {
			t.Errorf("the resync %s is listed among the snapshots regions build from", si.ID)
		}
	}
	rs, err := stream.ListResyncs(ctx, st, "src")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || !rs[0].Complete || len(rs[0].Manifest.Tables) != 1 || rs[0].Manifest.Tables[0].Key() != "public.a" {
		t.Errorf("resyncs in the snapshot stream: %s, want one complete of public.a", fmt.Sprint(rs))
	}
}
