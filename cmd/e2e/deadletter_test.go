package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// TestApply_DeadLetter: with --on-bad-message dead-letter, a garbled
// message and an envelope of another source, published into the source's
// stream mid-load, are republished,
// byte for byte and with headers naming its origin and the decode error,
// to the region's dead-letter stream; apply goes on, the rows after it
// arrive, the metric counts it, and a restart does not set it aside twice.
func TestApply_DeadLetter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	addr := metricsAddr(t)
	app := c.apply(t, "--on-bad-message", "dead-letter", "--metrics-addr", addr)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 50) g")
	waitSame(t, 60*time.Second, c.src, c.dst)

	js := natsJS(t, c.nats.ClientURL())
	bad := nats.NewMsg(stream.TxnSubject("src"))
	bad.Data = garbageMsg
	bad.Header.Set("X-Test", "kept")
	ack, err := js.PublishMsg(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	// A well-formed envelope of another source is set aside too.
	foreign := stream.Encode(&stream.Envelope{Kind: stream.KindHeartbeat, Source: "other", CommitLSN: 1, CommitTime: time.Now()})
	fack, err := js.Publish(ctx, stream.HeartbeatSubject("src"), foreign)
	if err != nil {
		t.Fatal(err)
	}
	exec1(t, c.src, "INSERT INTO t SELECT g, 'b' FROM generate_series(51, 100) g", "UPDATE t SET v = 'c' WHERE id % 7 = 0")
	waitSame(t, 60*time.Second, c.src, c.dst)

	dlq, err := js.Stream(ctx, apply.DeadLetterStream("src", "r1"))
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	m, err := dlq.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("first dead letter: %v", err)
	}
	if got, want := m.Subject, apply.DeadLetterSubject("src", "r1"); got != want {
		t.Errorf("dead letter subject = %q, want %q", got, want)
	}
	if !bytes.Equal(m.Data, garbageMsg) {
		t.Errorf("dead letter data = %q, want the original %q", m.Data, garbageMsg)
	}
	for h, want := range map[string]string{
		apply.HeaderDLQStream:   stream.StreamName("src"),
		apply.HeaderDLQSequence: strconv.FormatUint(ack.Sequence, 10),
		apply.HeaderDLQSubject:  stream.TxnSubject("src"),
		apply.HeaderDLQRegion:   "r1",
		"X-Test":                "kept",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("dead letter header %s = %q, want %q", h, got, want)
		}
	}
	if e := m.Header.Get(apply.HeaderDLQError); !strings.Contains(e, "cannot be decoded") {
		t.Errorf("dead letter header %s = %q, want the decode error", apply.HeaderDLQError, e)
	}
	m2, err := dlq.GetMsg(ctx, 2)
	if err != nil {
		t.Fatalf("second dead letter: %v", err)
	}
	if got, want := m2.Header.Get(apply.HeaderDLQSequence), strconv.FormatUint(fack.Sequence, 10); got != want || !bytes.Equal(m2.Data, foreign) {
		t.Errorf("second dead letter: sequence header %q, want %q; data equal: %v", got, want, bytes.Equal(m2.Data, foreign))
	}
	if e := m2.Header.Get(apply.HeaderDLQError); !strings.Contains(e, `belongs to source "other"`) {
		t.Errorf("second dead letter's error = %q, want the foreign source named", e)
	}
	if got := scrape(t, addr)["pgjet_apply_dead_letters_total"]; got != 2 {
		t.Errorf("pgjet_apply_dead_letters_total = %v, want 2", got)
	}
	if out := app.Output(); !strings.Contains(out, `"stream_seq":`+strconv.FormatUint(ack.Sequence, 10)) || !strings.Contains(out, "bad message dead-lettered") {
		t.Errorf("apply did not log the dead letter with its sequence:\n%s", tail(out, 2000))
	}

	// Capture's next publish expected its own last message; it reconnects
	// and goes on after the strangers.
	if out := capt.Output(); !strings.Contains(out, "capture goes on after them") {
		t.Errorf("capture did not report the foreign messages at the stream's end:\n%s", tail(out, 2000))
	}

	// The position moved past it: a restart neither stops on it nor sets
	// it aside again.
	app.Stop(t)
	c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, "INSERT INTO t SELECT g, 'd' FROM generate_series(101, 120) g")
	waitSame(t, 60*time.Second, c.src, c.dst)
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Msgs; got != 2 {
		t.Errorf("dead-letter stream holds %d messages after a restart, want 2", got)
	}
}

// TestApply_DeadLetterWholeTransaction: with --on-bad-message dead-letter,
// one bad chunk of a multi-chunk transaction sets the whole transaction
// aside: every chunk of it, before and after the bad one, is in the
// dead-letter stream in stream order, none of its rows is applied, and
// apply goes on with the next transaction, saying so. The bad chunk is the
// middle, the first and the last chunk of three transactions. The stream is
// rebuilt from the capture's own messages with that chunk garbled, as a
// damaged store would hold it.
func TestApply_DeadLetterWholeTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--chunk-bytes", "1024", "--no-snapshot")
	big := func(from int) string {
		return fmt.Sprintf("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(%d, %d) g", from, from+39)
	}
	exec1(t, c.src, big(1), "INSERT INTO t VALUES (1001, 'after middle')",
		big(101), "INSERT INTO t VALUES (1002, 'after first')",
		big(201), "INSERT INTO t VALUES (1003, 'after last')")

	js := natsJS(t, c.nats.ClientURL())
	name := stream.StreamName("src")
	msgs, txns := multiChunkTxns(t, js, 3)
	capt.Stop(t)
	bad := map[uint64]bool{txns[0][1]: true, txns[1][0]: true, txns[2][len(txns[2])-1]: true}

	// Rebuild the stream with the same messages, three of them garbled.
	emptyStream(t, js)
	republish(t, js, msgs, func(m *nats.Msg, seq uint64) {
		if bad[seq] {
			m.Data = garbageMsg
		}
	})

	app := c.apply(t, "--on-bad-message", "dead-letter")
	waitFor(t, 60*time.Second, "the transactions after the bad ones, and none of theirs", func() (bool, string) {
		checkDaemons(t)
		got := targetIDs(t, c.dst)
		return got == "1001,1002,1003" && strings.Count(app.Output(), "dead-lettered whole") == 3,
			fmt.Sprintf("target ids %s; %d transactions said dead-lettered", got, strings.Count(app.Output(), "dead-lettered whole"))
	})

	dlq, err := js.Stream(ctx, apply.DeadLetterStream("src", "r1"))
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	var want []uint64
	for _, chunks := range txns {
		want = append(want, chunks...)
	}
	checkDLQ := func() {
		t.Helper()
		dinfo, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := dinfo.State.Msgs; got != uint64(len(want)) {
			t.Fatalf("dead-letter stream holds %d messages, want the %d chunks of the three transactions", got, len(want))
		}
		for i, seq := range want {
			d, err := dlq.GetMsg(ctx, dinfo.State.FirstSeq+uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Header.Get(apply.HeaderDLQSequence); got != strconv.FormatUint(seq, 10) {
				t.Errorf("dead letter %d is stream seq %s, want %d", i+1, got, seq)
			}
			wantData := msgs[seq-msgs[0].Sequence].Data
			if bad[seq] {
				wantData = garbageMsg
			}
			if !bytes.Equal(d.Data, wantData) {
				t.Errorf("dead letter %d (stream seq %d): data differs from the stream's", i+1, seq)
			}
		}
	}
	checkDLQ()

	// The position is past them all: a restart sets nothing aside again.
	app.Stop(t)
	app = c.apply(t, "--on-bad-message", "dead-letter")
	if got := targetIDs(t, c.dst); got != "1001,1002,1003" {
		t.Errorf("target ids after a restart: %s", got)
	}
	waitFor(t, 30*time.Second, "the restarted applier to reach the stream's end", func() (bool, string) {
		cons, err := js.Consumer(ctx, name, apply.ConsumerName("r1"))
		if err != nil {
			return false, err.Error()
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return ci.Delivered.Stream >= msgs[len(msgs)-1].Sequence, fmt.Sprintf("delivered through %d", ci.Delivered.Stream)
	})
	checkDLQ()
}

// garbageMsg is a message body no decoder reads.
var garbageMsg = []byte("PJ\x01\x01garbage")

// multiChunkTxns waits until the source's stream holds n transactions of
// several chunks and a single-chunk one after them, and returns every
// message of the stream and, per multi-chunk transaction, the stream
// sequences of its chunks (at least three each: a middle one).
func multiChunkTxns(t *testing.T, js jetstream.JetStream, n int) ([]*jetstream.RawStreamMsg, [][]uint64) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	var txns [][]uint64
	waitFor(t, 60*time.Second, fmt.Sprintf("%d multi-chunk transactions and the last insert in the stream", n), func() (bool, string) {
		msgs, txns = nil, nil
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		at := map[stream.LSN]int{}
		singles := 0
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				return false, err.Error()
			}
			msgs = append(msgs, m)
			envs, err := stream.DecodeMessage(m.Data)
			if err != nil {
				t.Fatalf("capture's message %d: %v", seq, err)
			}
			for _, env := range envs {
				switch {
				case env.Kind != stream.KindTxn:
				case env.First() && env.Last():
					if len(txns) == n {
						singles++
					}
				case env.First():
					at[env.CommitLSN] = len(txns)
					txns = append(txns, []uint64{seq})
				default:
					txns[at[env.CommitLSN]] = append(txns[at[env.CommitLSN]], seq)
				}
			}
		}
		return len(txns) == n && singles > 0, fmt.Sprintf("%d multi-chunk transactions, %d after them", len(txns), singles)
	})
	for i, chunks := range txns {
		if len(chunks) < 3 {
			t.Fatalf("transaction %d has %d chunks, want at least 3 (a middle one)", i, len(chunks))
		}
	}
	return msgs, txns
}

// emptyStream deletes the source's stream and creates it again, empty,
// with the same configuration.
func emptyStream(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	name := stream.StreamName("src")
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, st.CachedInfo().Config); err != nil {
		t.Fatal(err)
	}
}

// republish publishes msgs again, each to the sequence it had, with its
// headers (but the expected-last checks of capture's chain); edit may
// change each before it goes, as a damaged store would hold it.
func republish(t *testing.T, js jetstream.JetStream, msgs []*jetstream.RawStreamMsg, edit func(m *nats.Msg, seq uint64)) {
	t.Helper()
	for _, m := range msgs {
		out := nats.NewMsg(m.Subject)
		for k, vs := range m.Header {
			if !strings.HasPrefix(k, "Nats-Expected") {
				out.Header[k] = vs
			}
		}
		out.Data = m.Data
		edit(out, m.Sequence)
		ack, err := js.PublishMsg(context.Background(), out)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != m.Sequence {
			t.Fatalf("republished message %d landed at %d", m.Sequence, ack.Sequence)
		}
	}
}

// TestApply_DeadLetterBatchOfTransactions: a message that packs several
// transactions and cannot be applied (one entry damaged, or one of another
// source) is set aside whole, and says so: one warning names how many
// transactions of the source went with it and their LSNs, and the metric
// of dead-lettered transactions counts them.
func TestApply_DeadLetterBatchOfTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	c.capture(t)
	addr := metricsAddr(t)
	app := c.apply(t, "--on-bad-message", "dead-letter", "--metrics-addr", addr)
	exec1(t, c.src, "INSERT INTO t VALUES (1, 'before')")
	waitSame(t, 60*time.Second, c.src, c.dst)

	base := stream.LSN(walInsert(t, c.src)) + 0x100000
	txn := func(source string, lsn stream.LSN) []byte {
		return stream.Encode(&stream.Envelope{Kind: stream.KindTxn, Source: source, Flags: stream.FlagFirst | stream.FlagLast,
			CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: time.Now()})
	}
	garbled := stream.AppendBatch(nil, [][]byte{txn("src", base), txn("src", base+0x100), garbageMsg})
	foreign := stream.AppendBatch(nil, [][]byte{txn("src", base+0x200), txn("src", base+0x300), txn("other", base+0x400)})
	js := natsJS(t, c.nats.ClientURL())
	for _, b := range [][]byte{garbled, foreign} {
		if _, err := js.Publish(ctx, stream.TxnSubject("src"), b); err != nil {
			t.Fatal(err)
		}
	}
	exec1(t, c.src, "INSERT INTO t VALUES (2, 'after')")
	waitSame(t, 60*time.Second, c.src, c.dst)

	out := app.Output()
	for _, want := range [][]string{
		{`"transactions":3`, `"unreadable":1`, `"` + base.String() + `"`, `"` + (base + 0x100).String() + `"`},
		{`"transactions":2`, `"other_sources":1`, `"` + (base + 0x200).String() + `"`, `"` + (base + 0x300).String() + `"`},
	} {
		found := false
		for line := range strings.Lines(out) {
			if !strings.Contains(line, "transactions of this source set aside with it") {
				continue
			}
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			found = found || all
		}
		if !found {
			t.Errorf("no warning naming %q:\n%s", want, tail(out, 3000))
		}
	}
	m := scrape(t, addr)
	if got := m["pgjet_apply_dead_letters_total"]; got != 2 {
		t.Errorf("pgjet_apply_dead_letters_total = %v, want 2", got)
	}
	if got := m["pgjet_apply_dead_letter_transactions_total"]; got != 5 {
		t.Errorf("pgjet_apply_dead_letter_transactions_total = %v, want 5 (3 + 2 of this source)", got)
	}
}

// TestApply_DeadLetterDuplicateAck: JetStream answers a publish whose
// message id it saw within its dedup window with an ack marked duplicate,
// and stores nothing. A dead letter set aside again (the target was
// restored from a backup taken before it) is then already there: it is
// not counted twice. But when the dead-letter stream was purged in the
// meantime, the duplicate ack points at nothing: the dead letter is
// stored anew, never counted as kept while it is not.
func TestApply_DeadLetterDuplicateAck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	app := c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, "INSERT INTO t VALUES (1, 'before')")
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t) // the bad message is then the stream's last

	js := natsJS(t, c.nats.ClientURL())
	bad := nats.NewMsg(stream.TxnSubject("src"))
	bad.Data = garbageMsg
	ack, err := js.PublishMsg(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := js.Stream(ctx, apply.DeadLetterStream("src", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	dlqMsgs := func() uint64 {
		t.Helper()
		info, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	waitFor(t, 30*time.Second, "the applier past the bad message", func() (bool, string) {
		n := queryInt(t, c.dst, "SELECT stream_seq FROM pgjet.applied WHERE source = 'src'")
		return uint64(n) == ack.Sequence, fmt.Sprintf("applied stream seq %d, bad message at %d", n, ack.Sequence)
	})
	if got := dlqMsgs(); got != 1 {
		t.Fatalf("dead-letter stream holds %d messages, want 1", got)
	}

	// The target goes back to before the bad message, as a restore from
	// a backup would take it.
	again := func(addr string) *proc {
		t.Helper()
		app.Stop(t)
		exec1(t, c.dst, fmt.Sprintf("UPDATE pgjet.applied SET stream_seq = %d WHERE source = 'src'", ack.Sequence-1))
		app = c.apply(t, "--on-bad-message", "dead-letter", "--metrics-addr", addr)
		waitFor(t, 30*time.Second, "the applier past the bad message again", func() (bool, string) {
			checkDaemons(t)
			n := queryInt(t, c.dst, "SELECT stream_seq FROM pgjet.applied WHERE source = 'src'")
			return uint64(n) == ack.Sequence, fmt.Sprintf("applied stream seq %d", n)
		})
		return app
	}

	t.Run("kept already", func(t *testing.T) {
		addr := metricsAddr(t)
		p := again(addr)
		if got := dlqMsgs(); got != 1 {
			t.Errorf("dead-letter stream holds %d messages, want still 1", got)
		}
		if got := scrape(t, addr)["pgjet_apply_dead_letters_total"]; got != 0 {
			t.Errorf("pgjet_apply_dead_letters_total = %v, want 0: the dead letter was kept before, not now", got)
		}
		if !strings.Contains(p.Output(), "already in the dead-letter stream") {
			t.Errorf("apply did not say the dead letter was kept already:\n%s", tail(p.Output(), 3000))
		}
	})

	t.Run("purged since", func(t *testing.T) {
		if err := dlq.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		addr := metricsAddr(t)
		p := again(addr)
		if !strings.Contains(p.Output(), "stored it again under a new id") {
			t.Errorf("apply did not say JetStream dropped the dead letter as a duplicate:\n%s", tail(p.Output(), 3000))
		}
		if got := dlqMsgs(); got != 1 {
			t.Errorf("dead-letter stream holds %d messages after the dead letter was set aside again, want 1: it was dropped as a duplicate", got)
		}
		if got := scrape(t, addr)["pgjet_apply_dead_letters_total"]; got != 1 {
			t.Errorf("pgjet_apply_dead_letters_total = %v, want 1", got)
		}
	})
}

// deadLetteredOnce checks that the dead-letter stream holds each of the
// stream sequences want exactly once.
func deadLetteredOnce(t *testing.T, js jetstream.JetStream, want []uint64) {
	t.Helper()
	ctx := context.Background()
	dlq, err := js.Stream(ctx, apply.DeadLetterStream("src", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		got[m.Header.Get(apply.HeaderDLQSequence)]++
	}
	for _, seq := range want {
		if n := got[fmt.Sprint(seq)]; n != 1 {
			t.Errorf("stream seq %d is %d times in the dead-letter stream, want once", seq, n)
		}
	}
	if uint64(len(want)) != info.State.Msgs {
		t.Errorf("dead-letter stream holds %d messages, want %d (by origin: %v)", info.State.Msgs, len(want), got)
	}
}

// targetIDs lists the ids of table t on the database at url.
func targetIDs(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err.Error()
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t").Scan(&s); err != nil {
		return err.Error()
	}
	return s
}

// waitTargetIDs waits until table t on the database at url holds exactly
// the ids want (comma-separated, in order).
func waitTargetIDs(t *testing.T, url, want string) {
	t.Helper()
	waitFor(t, 30*time.Second, "target ids "+want, func() (bool, string) {
		checkDaemons(t)
		got := targetIDs(t, url)
		return got == want, "target ids " + got
	})
}

// bigTxnEmptied writes a transaction of several chunks and a single row
// 1001 after it, waits for them in the stream and stops capture, then
// empties the stream for the test to publish them again as it likes. It
// returns the stream's messages and the big transaction's chunks.
func bigTxnEmptied(t *testing.T, c *cluster) (jetstream.JetStream, []*jetstream.RawStreamMsg, []uint64) {
	t.Helper()
	capt := c.capture(t, "--chunk-bytes", "1024", "--no-snapshot")
	exec1(t, c.src, "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 40) g", "INSERT INTO t VALUES (1001, 'after')")
	js := natsJS(t, c.nats.ClientURL())
	msgs, txns := multiChunkTxns(t, js, 1)
	capt.Stop(t)
	emptyStream(t, js)
	return js, msgs, txns[0]
}

// TestApply_DeadLetterResumesAfterRestart: an applier setting a
// transaction aside commits its position past each chunk it set aside.
// Stopped in the middle (the stream ended there for the moment), it used
// to come back to a chunk without the chunks before it and stop on "the
// stream is damaged", at every restart. It now goes on setting the
// transaction aside, and applies what follows.
func TestApply_DeadLetterResumesAfterRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	js, msgs, chunks := bigTxnEmptied(t, c)
	// The stream up to the big transaction's third chunk, its second
	// garbled.
	cut := int(chunks[2] - msgs[0].Sequence + 1)
	republish(t, js, msgs[:cut], func(m *nats.Msg, seq uint64) {
		if seq == chunks[1] {
			m.Data = garbageMsg
		}
	})
	app := c.apply(t, "--on-bad-message", "dead-letter")
	waitFor(t, 30*time.Second, "the applier to commit its position in the middle of the transaction it sets aside", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied WHERE source = 'src'")
		return uint64(n) == chunks[2], fmt.Sprintf("applied stream seq %d, third chunk at %d", n, chunks[2])
	})
	app.Stop(t)

	republish(t, js, msgs[cut:], func(*nats.Msg, uint64) {})
	app = c.apply(t, "--on-bad-message", "dead-letter")
	waitTargetIDs(t, c.dst, "1001")
	deadLetteredOnce(t, js, chunks)
}

// TestApply_DeadLetterChunkWithoutID: a bad middle chunk whose message id
// is gone too cannot say which transaction it belongs to, so it is set
// aside alone; the next chunk then arrives without the one before it. It
// used to stop the applier ("the stream is damaged"), again at every
// restart; now the whole transaction is set aside and apply goes on.
func TestApply_DeadLetterChunkWithoutID(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	js, msgs, chunks := bigTxnEmptied(t, c)
	republish(t, js, msgs, func(m *nats.Msg, seq uint64) {
		if seq == chunks[1] {
			m.Data = garbageMsg
			m.Header.Del(jetstream.MsgIDHeader)
		}
	})
	app := c.apply(t, "--on-bad-message", "dead-letter")
	waitTargetIDs(t, c.dst, "1001")
	deadLetteredOnce(t, js, chunks)
	if !strings.Contains(app.Output(), "dead-lettered whole") {
		t.Errorf("apply did not say the transaction was dead-lettered whole:\n%s", tail(app.Output(), 3000))
	}
}
