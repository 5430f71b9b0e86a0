package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestApply_SequenceHoleWithoutMessage: a stream sequence that holds no
// message (here a stranger's message, deleted; in a NATS cluster a
// proposal dropped in a leader change) is not a loss when capture's chain
// of messages (Pgjet-Prev) runs across it: the applier goes on. A message
// of capture's that is gone is a loss, and stops it.
func TestApply_SequenceHoleWithoutMessage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO items SELECT g, 'a' FROM generate_series(1, 100) g`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)

	ctx := context.Background()
	js := natsJS(t, c.nats.ClientURL())
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: stream.TxnSubject("src"), Data: []byte("not pgjet's")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}

	capt = c.capture(t)
	app = c.apply(t)
	exec1(t, c.src, `INSERT INTO items SELECT g, 'b' FROM generate_series(101, 200) g`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if !strings.Contains(app.Output(), "the chain of capture's messages is whole") {
		t.Errorf("apply did not say it passed over the hole at sequence %d:\n%s", ack.Sequence, tail(app.Output(), 4096))
	}
	capt.Stop(t)
	app.Stop(t)

	// A message of capture's deleted: the chain breaks there, a loss.
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	capt = c.capture(t)
	exec1(t, c.src, `INSERT INTO items VALUES (201, 'c')`, `INSERT INTO items VALUES (202, 'd')`)
	waitFor(t, 30*time.Second, "two more transactions in the stream", func() (bool, string) {
		checkDaemons(t)
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.LastSeq >= last+2, "not yet"
	})
	capt.Stop(t)
	if err := st.DeleteMsg(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	app = start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	if code := app.Wait(t, 60*time.Second); code == 0 || !strings.Contains(app.Output(), "messages this region needs are gone") {
		t.Errorf("apply exited %d over a lost message, want non-zero naming the gap:\n%s", code, tail(app.Output(), 4096))
	}
}

// TestApply_DeliveriesLostInReconnect: messages the consumer delivered
// while the applier's link to NATS dropped them (a server killed or a link
// cut with deliveries in flight) are not in the target, and the stream
// still holds them. The consumer counts them as delivered; the next
// delivery the applier sees jumps past them. That is not a loss in the
// stream: the applier consumes again from what it applied, and converges.
func TestApply_DeliveriesLostInReconnect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	px, err := local.StartProxy(0, strings.TrimPrefix(c.nats.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	c.capture(t)
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", "nats://"+px.Addr(), "--name", "src", "--region", "r1")
	app.waitLog(t, "apply started")
	exec1(t, c.src, `INSERT INTO items SELECT g, 'a' FROM generate_series(1, 100) g`)
	waitSame(t, 60*time.Second, c.src, c.dst)

	js := natsJS(t, c.nats.ClientURL())
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	px.Blackhole()
	for i := 101; i <= 110; i++ {
		exec1(t, c.src, fmt.Sprintf(`INSERT INTO items VALUES (%d, 'lost in flight')`, i))
	}
	c.waitCaptured(t)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the consumer to deliver into the dropped link", func() (bool, string) {
		ci, err := st.Consumer(ctx, apply.ConsumerName("r1"))
		if err != nil {
			return false, err.Error()
		}
		d := ci.CachedInfo().Delivered.Stream
		return d >= info.State.LastSeq, fmt.Sprintf("delivered up to %d of %d", d, info.State.LastSeq)
	})
	px.Cut()
	if err := px.Heal(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "apply to reconnect to NATS", func() (bool, string) {
		checkDaemons(t)
		return strings.Contains(app.Output(), "nats reconnected"), "not yet"
	})
	exec1(t, c.src, `INSERT INTO items VALUES (111, 'after')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if !strings.Contains(app.Output(), "were lost on the way") {
		t.Errorf("apply did not say deliveries were lost:\n%s", tail(app.Output(), 4096))
	}
}

// TestRegions_HoleInMirror: a hole in the hub's stream (a stranger's
// message, deleted before the region saw it) reaches a region's mirror as a hole too, since a
// mirror keeps the hub's sequence numbers; the region's applier passes
// over it by capture's chain as on the hub.
func TestRegions_HoleInMirror(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newRegions(t, "r1")
	exec1(t, s.src, "INSERT INTO pgbench_branches VALUES (1, 0, 'before')")
	waitSame(t, time.Minute, s.src, s.dst["r1"])

	hub, err := s.js["hub"].Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	// The region is cut off while the stranger's message exists, so its
	// mirror only ever sees the hole.
	s.top.Proxies["r1"].Cut()
	ack, err := s.js["hub"].PublishMsg(ctx, &nats.Msg{Subject: stream.TxnSubject("src"), Data: []byte("not pgjet's")})
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	exec1(t, s.src, "INSERT INTO pgbench_branches VALUES (2, 0, 'after the hole')")
	if err := s.top.Proxies["r1"].Heal(); err != nil {
		t.Fatal(err)
	}
	waitSame(t, time.Minute, s.src, s.dst["r1"])
	if hubLast, mirrorLast := s.mustLastSeq(t, "hub"), s.mustLastSeq(t, "r1"); mirrorLast != hubLast {
		t.Errorf("mirror ends at sequence %d, hub at %d: the mirror renumbers", mirrorLast, hubLast)
	}
	if out := s.appliers["r1"].Output(); !strings.Contains(out, "the chain of capture's messages is whole") {
		t.Errorf("the region's applier did not pass over the hole at sequence %d:\n%s", ack.Sequence, tail(out, 4096))
	}
}
