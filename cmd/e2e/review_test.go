package e2e

import (
	"context"
	"fmt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pgjet/pgjet/stream"
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
	t.Parallel()
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

// TestReview_DeadLetterHoldsGroupOpen: a bad single message with a pgjet
// message id is dead-lettered as a "whole transaction" (deadLetter sets
// s.drop and s.cur = true). s.cur stays set until the NEXT message
// arrives (handleEnvelope calls endDrop), and loop never commits an open
// group while s.cur: the good transactions grouped before the bad message
// stay in an open target transaction, invisible and holding their row
// locks, for as long as the source sends nothing (--heartbeat 0, capture
// down). On SIGTERM they are rolled back (s.cur).
func TestReview_DeadLetterHoldsGroupOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--heartbeat", "0")
	app := c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, "INSERT INTO t VALUES (1, 'first')")
	waitRows(t, c.dst, "t", 1)
	app.Stop(t)

	before := walInsert(t, c.src)
	exec1(t, c.src, "INSERT INTO t VALUES (2, 'grouped before the bad message')")
	waitSlotPast(t, 60*time.Second, c.src, "src", stream.LSN(before+1).String())
	capt.Stop(t)

	js := natsJS(t, c.nats.ClientURL())
	bad := nats.NewMsg(stream.TxnSubject("src"))
	bad.Data = []byte("PJ\x01\x01garbage")
	bad.Header.Set(jetstream.MsgIDHeader, stream.MsgID("src", stream.LSN(0x7FFFFFF0), 0, "deadbeef"))
	if _, err := js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}

	app = c.apply(t, "--on-bad-message", "dead-letter")
	defer app.Stop(t)
	app.waitLog(t, "bad message dead-lettered: kept with its origin in the dead-letter stream; apply goes on past it")
	deadline := time.Now().Add(15 * time.Second)
	for queryInt(t, c.dst, "SELECT count(*) FROM t WHERE id = 2") == 0 {
		if time.Now().After(deadline) {
			t.Logf("replica sessions idle in transaction: %d", queryInt(t, c.dst, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"))
			t.Fatalf("row 2, applied before the dead-lettered message, is still not committed on the replica 15s later: the group stays open while s.cur is set by the drop")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReview_ReplayHangsOnPartialTail: the stream ends with a transaction
// cut short (capture died while publishing its chunks and has not come
// back: the source is gone, which is when one replays). `pgjet replay`
// reads to the stream's end as it was at the start, but its stop check
// (loop: endSeq reached && !s.cur) never fires while the partial
// transaction is open, and nothing else arrives: replay never ends.
func TestReview_ReplayHangsOnPartialTail(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE big (id int PRIMARY KEY, pad text)`, `INSERT INTO big VALUES (0, 'first')`)
	capt := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src",
		"--heartbeat", "0", "--chunk-bytes", "4096")
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.src, `INSERT INTO big VALUES (1, 'single')`)
	ctx := context.Background()
	st, err := natsJS(t, c.nats.ClientURL()).Stream(ctx, "PGJET_src")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from := info.State.LastSeq
	// A transaction of thousands of chunks; capture is killed while it
	// publishes them.
	exec1(t, c.src, `INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(2, 150000) i`)
	waitFor(t, 60*time.Second, "the big transaction's first chunks in the stream", func() (bool, string) {
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.LastSeq > from+200, fmt.Sprint(info.State.LastSeq)
	})
	capt.Kill()
	info, err = st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	envs, err := stream.DecodeMessage(last.Data)
	if err != nil || len(envs) != 1 || envs[0].Last() {
		t.Fatalf("the stream's last message (seq %d) is not a chunk of a transaction cut short: the kill came too late, make the transaction larger", info.State.LastSeq)
	}
	t.Logf("stream ends at seq %d with chunk %d of transaction %s", info.State.LastSeq, envs[0].Chunk, envs[0].CommitLSN)

	exec1(t, c.dst, "CREATE DATABASE replayed")
	p := start(t, "pgjet replay", bins.pgjet, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("replayed"))
	p.Wait(t, 60*time.Second) // fails the test if replay does not end
	t.Logf("replay exited:\n%s", tail(p.Output(), 1500))
}

// TestReview_ReplayHangsOnDeletedLastMessage: replay stops once it has read
// the stream's LastSeq as it was at the start (endSeq). A deleted last
// message (an operator removed a bad message, as the decode error advises:
// "inspect it with `pgjet tail`, then remove it") keeps LastSeq, but is
// never delivered: replay never ends.
func TestReview_ReplayHangsOnDeletedLastMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (0, 'first')`)
	capt := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "0")
	capt.waitLog(t, "snapshot complete")
	before := walInsert(t, c.src)
	exec1(t, c.src, `INSERT INTO t VALUES (1, 'after the snapshot')`)
	waitSlotPast(t, 60*time.Second, c.src, "src", stream.LSN(before+1).String())
	capt.Stop(t)

	js := natsJS(t, c.nats.ClientURL())
	bad := nats.NewMsg(stream.TxnSubject("src"))
	bad.Data = []byte("PJ\x01\x01garbage")
	ack, err := js.PublishMsg(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "PGJET_src")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}

	exec1(t, c.dst, "CREATE DATABASE replayed")
	p := start(t, "pgjet replay", bins.pgjet, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("replayed"))
	p.Wait(t, 45*time.Second) // fails the test if replay does not end
}
