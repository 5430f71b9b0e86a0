package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// TestSnapshot_LeavesOutPgjetSchema: a database that is a pgjet target
// (it holds pgjet's tables) is itself captured, with the default FOR ALL
// TABLES publication, and a third database is built from it. pgjet's
// tables stay out of the snapshot and out of the change stream, so the
// third database's restore keeps its own pgjet.restore and nothing of the
// middle database's positions.
func TestSnapshot_LeavesOutPgjetSchema(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i`)
	c.capture(t)
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 60*time.Second, c.src, c.dst)

	// The replica, captured as source "mid", into a database "third".
	mid := start(t, "pgjet-capture mid", bins.capture, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "mid", "--heartbeat", "1s")
	mid.waitLog(t, "snapshot complete")
	// A write of pgjet's outside a replication origin, as a restore makes.
	exec1(t, c.dst, `UPDATE pgjet.restore SET finished_at = now()`, `INSERT INTO t VALUES (0, 'mid')`)
	exec1(t, c.src, "CREATE DATABASE third")
	third := c.primary.URL("third")
	app3 := start(t, "pgjet-apply third", bins.apply, "--db", third, "--nats", c.nats.ClientURL(), "--name", "mid", "--region", "third")
	app3.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 60*time.Second, c.dst, third)

	if n := queryInt(t, third, "SELECT count(*) FROM pgjet.restore WHERE source = 'mid' AND done"); n != 1 {
		t.Errorf("third: %d finished restores of source mid in pgjet.restore, want 1 (the snapshot emptied it)", n)
	}
	if n := queryInt(t, third, "SELECT count(*) FROM pgjet.restore WHERE source <> 'mid'"); n != 0 {
		t.Errorf("third: pgjet.restore holds %d rows of other sources, copied from the middle database", n)
	}
	if n := queryInt(t, third, "SELECT count(*) FROM pgjet.applied WHERE source <> 'mid'"); n != 0 {
		t.Errorf("third: pgjet.applied holds %d positions of other sources, copied from the middle database", n)
	}

	ctx := context.Background()
	js := natsJS(t, c.nats.ClientURL())
	st, err := js.Stream(ctx, stream.SnapshotStreamName("mid"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := stream.ListSnapshots(ctx, st, "mid")
	if err != nil || len(snaps) == 0 {
		t.Fatalf("snapshots of mid: %v, %v", snaps, err)
	}
	for _, tb := range snaps[0].Manifest.Tables {
		if tb.Schema == "pgjet" {
			t.Errorf("the snapshot of mid holds pgjet's table %s", tb.Key())
		}
	}
	// The change stream describes no relation of schema pgjet.
	cons, err := js.OrderedConsumer(ctx, stream.StreamName("mid"), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n := info.NumPending; n > 0; n-- {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		envs, err := stream.DecodeMessage(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, env := range envs {
			for _, rel := range env.Relations {
				if rel.Schema == "pgjet" {
					t.Errorf("the change stream of mid holds a change of pgjet.%s", rel.Name)
				}
			}
		}
	}
	mid.Stop(t)
	app3.Stop(t)
}
