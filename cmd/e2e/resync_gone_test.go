package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// TestResync_CopyGone: the copy of a resync leaves the snapshot stream
// before a stopped applier reaches the resync's marker (a purge stands in
// here for the stream's limits, or for a region's snapshot mirror made
// after pgjet resync pruned the copy). The applier does not wait for it
// for ever: it stops with one line naming the resync, the table and the
// fix. After pgjet resync is run again, the restarted applier passes over
// the old marker, re-copies the table at the new one, and the replica
// ends equal to the source.
func TestResync_CopyGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int PRIMARY KEY)")
	c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 200) g", "INSERT INTO b VALUES (1)")
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)
	exec1(t, c.dst, "UPDATE a SET v = 'corrupt' WHERE id BETWEEN 10 AND 19")

	resync := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--table", "public.a"}
	out, code := pgjetRun(t, "resync", resync...)
	if code != 0 {
		t.Fatalf("pgjet resync exited %d:\n%s", code, out)
	}
	exec1(t, c.src, "INSERT INTO b VALUES (2)", "UPDATE a SET v = 'after the first' WHERE id = 1")
	snaps, err := natsJS(t, c.nats.ClientURL()).Stream(ctx, stream.SnapshotStreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := stream.ListResyncs(ctx, snaps, "src")
	if err != nil || len(rs) != 1 {
		t.Fatalf("resyncs in the snapshot stream: %v, %v; want one", rs, err)
	}
	if err := snaps.Purge(ctx, jetstream.WithPurgeSubject(stream.SnapshotAllSubjects("src", rs[0].ID))); err != nil {
		t.Fatal(err)
	}

	app = c.apply(t)
	expectFatal(t, app, "resync "+rs[0].ID+" of public.a", "no longer in this region's snapshot stream", "run pgjet resync --table public.a again")
	if out := app.Output(); strings.Contains(out, "table re-copied") {
		t.Errorf("the applier re-copied a table without its copy:\n%s", out)
	}

	out, code = pgjetRun(t, "resync", resync...)
	if code != 0 {
		t.Fatalf("pgjet resync (again) exited %d:\n%s", code, out)
	}
	app = c.apply(t)
	app.waitLog(t, "the resync's copy is no longer in the region's snapshot stream; a later resync of the table re-copies it at its own marker: this one is passed over")
	app.waitLog(t, "table re-copied from its resync: its changes before the copy's point are passed over, those after it follow")
	waitSame(t, 60*time.Second, c.src, c.dst)
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify after the second resync exited %d, want 0:\n%s%s", code, out, errOut)
	}
}
