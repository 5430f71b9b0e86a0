package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestCapture_KeylessAttachPartition: under --keyless exclude, a table
// made without a key is left out of the list publication, and gets rows.
// ATTACH PARTITION makes it a partition of a published partitioned table
// (Postgres gives it the parent's key as it attaches). Its rows are now
// rows of a published table on the source that no replica got, as with
// "keyed after load": the ATTACH warns, naming the pgjet resync that
// copies them, capture logs the same, and after it the replica is equal.
// Under --keyless inserts-only, a table published inserts only is attached
// the same way: the updates and deletes of its rows never reached a
// replica.
func TestCapture_KeylessAttachPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	for _, tc := range []struct{ name, keyless string }{{"left out", "exclude"}, {"inserts only", "inserts-only"}} {
		t.Run(tc.name, func(t *testing.T) {
			name := "kattach_" + strings.ReplaceAll(tc.keyless, "-", "_")
			src, dst := keylessDBs(t, c, name)
			exec1(t, src, `CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k)`,
				`CREATE TABLE m1 PARTITION OF m FOR VALUES IN (1)`, `INSERT INTO m SELECT i, 1, 'v' FROM generate_series(1, 10) i`)
			capt, app := keylessPipeline(t, c, name, src, dst, "--keyless", tc.keyless)
			exec1(t, src, `CREATE TABLE m3 (id int NOT NULL, k int NOT NULL, v text)`, `INSERT INTO m3 SELECT i, 3, 'before attach' FROM generate_series(1, 10) i`,
				`UPDATE m3 SET v = 'updated before attach' WHERE id <= 3`, `DELETE FROM m3 WHERE id = 10`)
			out, err := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", src, "-c", `ALTER TABLE m ATTACH PARTITION m3 FOR VALUES IN (3)`).CombinedOutput()
			if err != nil {
				t.Fatalf("attach: %v\n%s", err, out)
			}
			t.Logf("ATTACH PARTITION:\n%s", out)
			exec1(t, src, `UPDATE m SET v = 'after attach' WHERE id = 1`, `UPDATE acct SET v = 1`)
			want := "pgjet resync --name " + name + " --table public.m3"
			if !strings.Contains(string(out), want) {
				t.Errorf("psql's output does not name %q", want)
			}
			waitFor(t, 60*time.Second, "capture to name the resync of public.m3", func() (bool, string) {
				return strings.Contains(capt.Output(), `"table":"public.m3"`) && strings.Contains(capt.Output(), want), "not yet"
			})
			if o, code := pgjetRun(t, "resync", "--db", src, "--nats", c.nats.ClientURL(), "--name", name, "--table", "public.m3"); code != 0 {
				t.Fatalf("pgjet resync exited %d:\n%s", code, o)
			}
			exec1(t, src, `UPDATE m SET v = 'after resync' WHERE id = 2`, `DELETE FROM m WHERE id = 4 AND k = 3`)
			waitSame(t, 60*time.Second, src, dst, "public.acct", "public.m1", "public.m3")
			capt.Stop(t)
			app.Stop(t)
		})
	}
}

// TestVerify_RepairSkipTimestamptzKey: TestVerify_RepairBesideConflictError
// with a timestamptz primary key on a target whose apply sessions run
// under another TimeZone than the repair's. verify --repair records the
// key of a row it deleted as jsonb rendered in its session; the applier
// under --conflict error, meeting the delete the repair already made,
// must find that record (comparing the key as a value, not as text) and
// pass over the delete instead of stopping at delete_missing.
func TestVerify_RepairSkipTimestamptzKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE ev (at timestamptz PRIMARY KEY, v text)", "CREATE TABLE gate (id int PRIMARY KEY, n int)")
	c.capture(t)
	// The apply role's sessions under the server's TimeZone (initdb takes
	// the host's), here given in its URL.
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst+"&timezone=Asia/Tokyo", "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1", "--conflict", "error")
	app.waitLog(t, "apply started")
	exec1(t, c.src, "INSERT INTO ev SELECT timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour', 'v' || g FROM generate_series(1, 20) g",
		"INSERT INTO gate VALUES (1, 0)")
	waitSame(t, 60*time.Second, c.src, c.dst)

	// The applier waits at gate's update, behind the source.
	repairBehindApplier(t, c, "public.ev", "1 deleted", "DELETE FROM ev WHERE at = timestamptz '2024-01-01 05:00:00+00'")
	exec1(t, c.src, "UPDATE gate SET n = 2 WHERE id = 1")
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)
}

// TestVerify_RepairRefusedCustomSlot: verify --repair refuses a target
// that pgjet captures too (active-active) unless --force, also when
// pgjet-capture --slot names its slot anything (not pgjet_*): repairing it
// would overwrite its region's writes on their way.
func TestVerify_RepairRefusedCustomSlot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	back := start(t, "pgjet-capture back", bins.capture, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "back", "--slot", "region_b", "--heartbeat", "1s")
	back.waitLog(t, "capture started")
	// A write of region b on its way to the source.
	exec1(t, c.dst, "INSERT INTO items VALUES (1, 'written in region b')")
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--name", "src", "--wait-lsn=false", "--repair")
	t.Logf("pgjet verify --repair exited %d:\n%s%s", code, out, errOut)
	if code == 0 || !strings.Contains(errOut, "--repair refused") {
		t.Errorf("pgjet verify --repair of a target captured through slot region_b exited %d, want it refused (--repair refused … --force)", code)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM items WHERE id = 1"); n != 1 {
		t.Errorf("region b's row 1, not yet on the source, was deleted by the repair")
	}
	back.Stop(t)
}

// TestResync_CopyGoneStreamRemade: TestResync_CopyGone, but the copy
// left with its whole snapshot stream, made anew (deleted and made again
// with the same configuration, as an operator does to change what
// JetStream cannot change in place): the stream holds fewer messages than
// the marker's BeginSeq, which for the source's own stream (no mirror
// catching up) means the copy is gone. The applier stops with the fix
// instead of waiting for ever, and after the fix the replica is equal.
func TestResync_CopyGoneStreamRemade(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int PRIMARY KEY)")
	c.capture(t)
	js := natsJS(t, c.nats.ClientURL())
	resyncStreamRemade(t, c.src, c.dst, c.nats.ClientURL(), js, nil, func() *proc { return c.apply(t) })
}

// TestResync_CopyGoneStreamRemadeMirror: the same in a region reading a
// mirror of the snapshot stream, both made anew: the new mirror holds
// fewer messages than the marker's BeginSeq, as a mirror catching up
// does, but so does its upstream, which it copies: the copy is gone.
func TestResync_CopyGoneStreamRemadeMirror(t *testing.T) {
	t.Parallel()
	top := local.NewTestTopology(t, local.TopologyOptions{Hub: "hub", Regions: []string{"r1"}})
	src := local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}).URL("postgres")
	dst := local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-r1"}).URL("postgres")
	for _, db := range []string{src, dst} {
		exec1(t, db, "CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int PRIMARY KEY)")
	}
	capt := start(t, "pgjet-capture", bins.capture, "--db", src, "--nats", top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s")
	capt.waitLog(t, "capture started")
	r1 := natsJSDomain(t, top.Regions["r1"].ClientURL(), "r1")
	resyncStreamRemade(t, src, dst, top.Hub.ClientURL(), natsJS(t, top.Hub.ClientURL()), r1, func() *proc {
		p := start(t, "pgjet-apply", bins.apply, "--db", dst, "--nats", top.Regions["r1"].ClientURL(),
			"--name", "src", "--region", "r1", "--upstream-domain", "hub")
		p.waitLog(t, "apply started")
		return p
	})
}

// resyncStreamRemade resyncs table a of source src (captured, its stream
// on natsURL, js) while the applier apply starts is stopped, makes the
// snapshot stream anew (and region's mirror of it in js region, if any),
// and checks that the applier stops naming the fix, and that the fix
// works.
func resyncStreamRemade(t *testing.T, src, dst, natsURL string, js, region jetstream.JetStream, apply func() *proc) {
	ctx := context.Background()
	app := apply()
	exec1(t, src, "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 200) g", "INSERT INTO b VALUES (1)")
	waitSame(t, 60*time.Second, src, dst)
	app.Stop(t)
	exec1(t, dst, "UPDATE a SET v = 'corrupt' WHERE id BETWEEN 10 AND 19")
	resync := []string{"--db", src, "--nats", natsURL, "--name", "src", "--table", "public.a"}
	if out, code := pgjetRun(t, "resync", resync...); code != 0 {
		t.Fatalf("pgjet resync exited %d:\n%s", code, out)
	}
	exec1(t, src, "INSERT INTO b VALUES (2)")

	snaps, err := js.Stream(ctx, stream.SnapshotStreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := snaps.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot stream %s: last seq %d; made anew", info.Config.Name, info.State.LastSeq)
	if err := js.DeleteStream(ctx, info.Config.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	if region != nil {
		// The region's mirror, if the applier made one yet: it makes it
		// anew, a copy of the remade stream.
		if err := region.DeleteStream(ctx, info.Config.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatal(err)
		}
	}

	app = apply()
	expectFatal(t, app, "of public.a", "no longer in this region's snapshot stream", "run pgjet resync --table public.a again")

	if out, code := pgjetRun(t, "resync", resync...); code != 0 {
		t.Fatalf("pgjet resync (again) exited %d:\n%s", code, out)
	}
	if region != nil {
		// The applier passes over the marker for a later resync that its
		// region holds.
		waitFor(t, 60*time.Second, "the region's mirror to hold the new resync", func() (bool, string) {
			st, err := region.Stream(ctx, info.Config.Name)
			if err != nil {
				return false, err.Error()
			}
			rs, err := stream.ListResyncs(ctx, st, "src")
			return err == nil && len(rs) == 1 && rs[0].Complete, fmt.Sprintf("%d resyncs, %v", len(rs), err)
		})
	}
	app = apply()
	app.waitLog(t, "table re-copied from its resync: its changes before the copy's point are passed over, those after it follow")
	waitSame(t, 60*time.Second, src, dst)
	app.Stop(t)
}

// TestVerify_RepairSkipIdentityIndexKey: the same pass-over, for a table
// whose replica identity is a unique index, not its primary key. The
// applier finds the row by the source's identity columns (code), so the
// repair must record the key by them, not by the primary key (id), for
// the delete it already made to be passed over.
func TestVerify_RepairSkipIdentityIndexKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)",
		"ALTER TABLE items REPLICA IDENTITY USING INDEX items_code_key", "CREATE TABLE gate (id int PRIMARY KEY, n int)")
	c.capture(t)
	app := c.apply(t, "--conflict", "error")
	exec1(t, c.src, "INSERT INTO items SELECT g, 'c' || g, 'v' || g FROM generate_series(1, 20) g", "INSERT INTO gate VALUES (1, 0)")
	waitSame(t, 60*time.Second, c.src, c.dst)

	repairBehindApplier(t, c, "public.items", "1 deleted", "DELETE FROM items WHERE id = 5")
	exec1(t, c.src, "UPDATE gate SET n = 2 WHERE id = 1")
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)
}
