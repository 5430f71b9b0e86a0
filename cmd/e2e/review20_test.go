package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestSnapshot_RestoreOnStreamMadeAgain: a snapshot records the change
// stream's next sequence (stream_next), and a restore starts there. The
// change stream can be deleted and made again while the snapshot stream
// keeps its snapshots (an admin removes it, or its store is lost: capture
// makes it again on its next start and goes on from its slot, from
// sequence 1). The sequences of the new stream say nothing of the
// snapshot, but a region built from it started at the old stream's
// stream_next, and passed over, silently, every change the new stream
// holds below it. A search by commit LSN (what restores did before)
// finds them.
func TestSnapshot_RestoreOnStreamMadeAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t) // the region gets its table from the snapshot
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--no-snapshot", "--heartbeat", "0")
	js := natsJS(t, c.nats.ClientURL())
	waitSeq := func(seq uint64) {
		waitFor(t, 30*time.Second, fmt.Sprintf("stream sequence %d", seq), func() (bool, string) {
			checkDaemons(t)
			n := streamLastSeq(t, js, "src")
			return n >= seq, fmt.Sprintf("last sequence %d", n)
		})
	}
	for i := 1; i <= 5; i++ {
		exec1(t, c.src, fmt.Sprintf("INSERT INTO t VALUES (%d, 'before the snapshot')", i))
	}
	waitSeq(5)
	if code, out := runPgjet(t, "snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(out, 2000))
	}
	capt.Stop(t)

	// The change stream is made again, empty; capture goes on into it.
	emptyStream(t, js)
	capt = c.capture(t, "--no-snapshot", "--heartbeat", "0")
	exec1(t, c.src, "INSERT INTO t VALUES (6, 'in the stream made again')")
	waitSeq(1)

	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 30*time.Second, c.src, c.dst)
	app.Stop(t)
	capt.Stop(t)
}
