package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/stream"
)

// TestApply_DeadLetterTransactionAcrossHole: a multi-chunk transaction
// whose chunks run across a sequence that holds no message (the chain of
// capture's messages is whole there) and that has a bad chunk after the
// hole is set aside whole like any other, and apply goes on. Dead-lettering
// reads its earlier chunks back by sequence, and must pass over the hole
// rather than retry reading it for ever.
func TestApply_DeadLetterTransactionAcrossHole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	js, msgs, chunks := bigTxnEmptied(t, c)
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	first := int(chunks[0] - msgs[0].Sequence)
	republish(t, js, msgs[:first+1], func(*nats.Msg, uint64) {})
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: stream.TxnSubject("src"), Data: []byte("not pgjet's")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	// The rest one sequence later, the chunk after the hole garbled.
	for _, m := range msgs[first+1:] {
		out := copyMsg(m)
		if m.Sequence == chunks[1] {
			out.Data = garbageMsg
		}
		if _, err := js.PublishMsg(ctx, out); err != nil {
			t.Fatal(err)
		}
	}

	app := c.apply(t, "--on-bad-message", "dead-letter")
	waitFor(t, 60*time.Second, "the row after the transaction set aside", func() (bool, string) {
		checkDaemons(t)
		got := targetIDs(t, c.dst)
		return got == "1001", "target ids " + got
	})
	if !strings.Contains(app.Output(), "dead-lettered whole") {
		t.Errorf("apply did not say the transaction was dead-lettered whole:\n%s", tail(app.Output(), 3000))
	}
}

// TestApply_DeadLetteredStrangerThenHole: a stranger's message set aside
// by --on-bad-message dead-letter, followed by a sequence that holds no
// message, then capture's next message: capture's chain (Pgjet-Prev) runs
// from its own last message across both, so nothing of the source is
// missing and apply goes on. The chain is capture's: the stranger's
// message, the last one apply handled, is not where it starts.
func TestApply_DeadLetteredStrangerThenHole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	app := c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, `INSERT INTO items SELECT g, 'a' FROM generate_series(1, 100) g`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)

	js := natsJS(t, c.nats.ClientURL())
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: stream.TxnSubject("src"), Data: garbageMsg}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: stream.TxnSubject("src"), Data: []byte("not pgjet's")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}

	c.capture(t)
	c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, `INSERT INTO items SELECT g, 'b' FROM generate_series(101, 200) g`)
	waitSame(t, 60*time.Second, c.src, c.dst)
}
