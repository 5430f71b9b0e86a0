package e2e

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
