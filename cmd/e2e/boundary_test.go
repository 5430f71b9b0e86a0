package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// streamEnd decodes the first envelope of the change stream's message at
// its first or last sequence.
func streamEnd(t *testing.T, js jetstream.JetStream, last bool) (*stream.Envelope, uint64, error) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		return nil, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	if info.State.Msgs == 0 {
		return nil, 0, errors.New("the change stream is empty")
	}
	seq := info.State.FirstSeq
	if last {
		seq = info.State.LastSeq
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return nil, seq, err
	}
	envs, err := stream.DecodeMessage(m.Data)
	if err != nil {
		return nil, seq, err
	}
	return envs[0], seq, nil
}

// bigTxnLast waits until the change stream ends with the last chunk of a
// transaction of several chunks: nothing but it lies between the stream's
// end and a snapshot taken now.
func bigTxnLast(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	waitFor(t, 60*time.Second, "the last chunk of the big transaction at the stream's end", func() (bool, string) {
		checkDaemons(t)
		env, seq, err := streamEnd(t, js, true)
		if err != nil {
			return false, err.Error()
		}
		return env.Kind == stream.KindTxn && env.Last() && env.Chunk > 0,
			fmt.Sprintf("seq %d: kind %d chunk %d flags %d", seq, env.Kind, env.Chunk, env.Flags)
	})
}

// TestSnapshot_StartsOnTransactionBoundary: with no heartbeat, a
// transaction of many chunks is the last thing in the change stream
// before a snapshot. A region built from that snapshot, a pgjet replay
// from it, and the change stream trimmed to it (--stream-retention
// snapshots) all start on a transaction's first chunk, never in the
// middle of one.
func TestSnapshot_StartsOnTransactionBoundary(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE big (id int PRIMARY KEY, pad text)`, `INSERT INTO big VALUES (0, 'first')`)
	capt := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src",
		"--heartbeat", "0", "--chunk-bytes", "4096")
	capt.waitLog(t, "snapshot complete")
	js := natsJS(t, c.nats.ClientURL())

	// About 100 chunks, then a snapshot with nothing after them.
	exec1(t, c.src, `INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(1, 2000) i`)
	bigTxnLast(t, js)
	snap := []string{"snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--chunk-bytes", "4096"}
	if code, out := runPgjet(t, snap...); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(out, 2000))
	}

	// A new region on an empty database.
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	exec1(t, c.src, `INSERT INTO big VALUES (-1, 'after the snapshot')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	// Replication origins are the cluster's: the replays below, into
	// databases of the replica's cluster, run while the applier is stopped.
	app.Stop(t)

	// pgjet replay to the stream's end.
	exec1(t, c.dst, "CREATE DATABASE replayed")
	if code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("replayed")); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, tail(out, 3000))
	}
	waitSame(t, 5*time.Second, c.src, c.replica.URL("replayed"))

	// Trimmed to a snapshot taken right after another big transaction,
	// the stream starts on a transaction's first chunk.
	app = c.apply(t)
	exec1(t, c.src, `UPDATE big SET pad = repeat('y', 200)`)
	bigTxnLast(t, js)
	waitSame(t, 60*time.Second, c.src, c.dst) // the region needs nothing trimmed
	if code, out := runPgjet(t, append(snap, "--snapshot-keep", "1", "--stream-retention", "snapshots")...); code != 0 {
		t.Fatalf("pgjet snapshot --stream-retention snapshots exited %d:\n%s", code, tail(out, 2000))
	}
	exec1(t, c.src, `INSERT INTO big VALUES (-2, 'after the trim')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	// The stream holds the insert now: it was empty, or began at the big
	// transaction's last chunk, right after the trim.
	env, seq, err := streamEnd(t, js, false)
	if err != nil {
		t.Fatal(err)
	}
	if seq <= 1 {
		t.Errorf("the change stream was not trimmed (first sequence %d)", seq)
	}
	if env.Kind == stream.KindTxn && !env.First() {
		t.Errorf("the trimmed change stream starts at sequence %d with chunk %d of transaction %s, not on a transaction's first chunk",
			seq, env.Chunk, env.CommitLSN)
	}
	app.Stop(t)
	exec1(t, c.dst, "CREATE DATABASE trimmed")
	if code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("trimmed")); code != 0 {
		t.Fatalf("replay after trimming exited %d:\n%s", code, tail(out, 3000))
	}
	waitSame(t, 5*time.Second, c.src, c.replica.URL("trimmed"))
	if out := capt.Output() + app.Output(); strings.Contains(out, "without the chunks before it") {
		t.Errorf("a process met a transaction without its first chunk:\n%s", tail(out, 2000))
	}
	capt.Stop(t)
}

// TestSnapshot_RestoreWhileCaptureIsBehind: a capture behind the source
// (restarted, catching up) publishes transactions committed before a
// snapshot's point after the point was taken. A region restored then
// started between two chunks of such a transaction, and stopped at the next
// one ("whose earlier chunks were dead-lettered", torture seed
// 1795955780168941403), although the transaction was in its snapshot: it
// now passes over the rest of it.
func TestSnapshot_RestoreWhileCaptureIsBehind(t *testing.T) {
	t.Parallel()
	c := newCluster(t) // the region gets its table from the snapshot
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	js, msgs, chunks := bigTxnEmptied(t, c)
	// The stream holds the big transaction up to its second chunk when
	// the snapshot is taken and the region restored from it.
	cut := int(chunks[1] - msgs[0].Sequence + 1)
	republish(t, js, msgs[:cut], func(*nats.Msg, uint64) {})
	if code, out := runPgjet(t, "snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(out, 2000))
	}
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	republish(t, js, msgs[cut:], func(*nats.Msg, uint64) {})
	capt := c.capture(t, "--no-snapshot")
	exec1(t, c.src, "INSERT INTO t VALUES (2002, 'after the snapshot')")
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestSnapshot_RestoreBeforeOlderTransactionsSentAgain: a stream whose
// commit LSNs do not grow with its sequence (older transactions stored
// again once the duplicate window passed, as by a capture that did not
// check the stream's tail). The restore looked for its start by commit
// LSN, by halves, and landed after a transaction the snapshot lacks: the
// region never had it. The snapshot now records where the change stream
// stood when its point was taken, and the restore starts there.
func TestSnapshot_RestoreBeforeOlderTransactionsSentAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--no-snapshot", "--heartbeat", "0")
	js := natsJS(t, c.nats.ClientURL())
	ctx := context.Background()
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 { return streamLastSeq(t, js, "src") }
	waitSeq := func(seq uint64) {
		waitFor(t, 30*time.Second, fmt.Sprintf("stream sequence %d", seq), func() (bool, string) {
			checkDaemons(t)
			n := lastSeq()
			return n >= seq, fmt.Sprintf("last sequence %d", n)
		})
	}
	before := lastSeq()
	exec1(t, c.src, "INSERT INTO t VALUES (1, 'before the snapshot')")
	waitSeq(before + 1)
	old, err := st.GetMsg(ctx, lastSeq())
	if err != nil {
		t.Fatal(err)
	}
	if code, out := runPgjet(t, "snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(out, 2000))
	}
	at := lastSeq()
	exec1(t, c.src, "INSERT INTO t VALUES (2, 'after the snapshot')")
	waitSeq(at + 1)
	capt.Stop(t)

	// The older transaction, sent again once the duplicate window has
	// passed, several times: most of the stream lies after the later one.
	cfg := st.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		time.Sleep(300 * time.Millisecond)
		ack, err := js.PublishMsg(ctx, copyMsg(old))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate {
			t.Fatal("the transaction sent again was taken for a duplicate")
		}
	}
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 30*time.Second, c.src, c.dst)
	app.Stop(t)
}

// TestApply_SkippedTransactionRestartKeepsGroup: a transaction applied
// before arrives again (it was passed over, chunk by chunk) and restarts
// from its first chunk once more, while a group of later transactions is
// open in the target. The restart rolled the target transaction back, as
// for a transaction being applied, and took the group with it; the next
// commit then moved the position past the group's transactions, which the
// region never had.
func TestApply_SkippedTransactionRestartKeepsGroup(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--chunk-bytes", "1024", "--no-snapshot")
	exec1(t, c.src, "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 40) g", "INSERT INTO t VALUES (1001, 'after')")
	js := natsJS(t, c.nats.ClientURL())
	multiChunkTxns(t, js, 1)
	// A heartbeat last: the stream's tail, which capture checks its slot
	// against when it starts again, lies past everything.
	waitFor(t, 30*time.Second, "a heartbeat at the stream's end", func() (bool, string) {
		env, seq, err := streamEnd(t, js, true)
		if err != nil {
			return false, err.Error()
		}
		return env.Kind == stream.KindHeartbeat, fmt.Sprintf("seq %d: kind %d", seq, env.Kind)
	})
	capt.Stop(t)
	msgs, txns := multiChunkTxns(t, js, 1)
	chunks := txns[0]
	emptyStream(t, js)
	republish(t, js, msgs, func(*nats.Msg, uint64) {})
	// The big transaction's first chunk twice more, then the rest of it,
	// and the stream's last heartbeat, each under a message id of its own
	// as a new capture session gives.
	var again []*jetstream.RawStreamMsg
	for _, m := range msgs {
		if m.Sequence == chunks[0] {
			again = append(again, m, m)
		}
	}
	for _, m := range msgs {
		if m.Sequence > chunks[0] && m.Sequence <= chunks[len(chunks)-1] {
			again = append(again, m)
		}
	}
	again = append(again, msgs[len(msgs)-1])
	ctx := context.Background()
	for i, m := range again {
		out := copyMsg(m)
		out.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-again-%d", m.Header.Get(jetstream.MsgIDHeader), i))
		if _, err := js.PublishMsg(ctx, out); err != nil {
			t.Fatal(err)
		}
	}
	c.apply(t, "--group-txns", "100")
	capt = c.capture(t, "--no-snapshot")
	exec1(t, c.src, "INSERT INTO t VALUES (2002, 'after')")
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
}
