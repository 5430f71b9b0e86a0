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
	garbage := []byte("PJ\x01\x01garbage")
	bad := nats.NewMsg(stream.TxnSubject("src"))
	bad.Data = garbage
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
	if !bytes.Equal(m.Data, garbage) {
		t.Errorf("dead letter data = %q, want the original %q", m.Data, garbage)
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
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	// The chunks of each multi-chunk transaction, by stream sequence.
	var msgs []*jetstream.RawStreamMsg
	var txns [][]uint64
	waitFor(t, 60*time.Second, "three multi-chunk transactions and the last insert in the stream", func() (bool, string) {
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
					if len(txns) == 3 {
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
		return len(txns) == 3 && singles > 0, fmt.Sprintf("%d multi-chunk transactions, %d after them", len(txns), singles)
	})
	capt.Stop(t)
	for i, chunks := range txns {
		if len(chunks) < 3 {
			t.Fatalf("transaction %d has %d chunks, want at least 3 (a middle one)", i, len(chunks))
		}
	}
	bad := map[uint64]bool{txns[0][1]: true, txns[1][0]: true, txns[2][len(txns[2])-1]: true}
	garbage := []byte("PJ\x01\x01garbage")

	// Rebuild the stream with the same messages, three of them garbled.
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		out := nats.NewMsg(m.Subject)
		for k, vs := range m.Header {
			if !strings.HasPrefix(k, "Nats-Expected") {
				out.Header[k] = vs
			}
		}
		out.Data = m.Data
		if bad[m.Sequence] {
			out.Data = garbage
		}
		ack, err := js.PublishMsg(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != m.Sequence {
			t.Fatalf("republished message %d landed at %d", m.Sequence, ack.Sequence)
		}
	}

	app := c.apply(t, "--on-bad-message", "dead-letter")
	ids := func() string {
		var s string
		conn, err := pgx.Connect(ctx, c.dst)
		if err != nil {
			return err.Error()
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t").Scan(&s); err != nil {
			return err.Error()
		}
		return s
	}
	waitFor(t, 60*time.Second, "the transactions after the bad ones, and none of theirs", func() (bool, string) {
		checkDaemons(t)
		got := ids()
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
				wantData = garbage
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
	if got := ids(); got != "1001,1002,1003" {
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
