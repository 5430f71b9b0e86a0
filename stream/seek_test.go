package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestSeekLSN: the position found for a snapshot's point is a message
// where a transaction starts, holding the first transaction committed at
// or after the point: a batch that holds it, never the last chunk of a
// transaction of several chunks committed before it. TxnStart finds the
// first chunk of a transaction from any of its chunks.
func TestSeekLSN(t *testing.T) {
	ctx, js, st := seekStream(t)
	if seq, err := stream.SeekLSN(ctx, st, 0x10); err != nil || seq != 1 {
		t.Errorf("SeekLSN on an empty stream = %d, %v; want 1", seq, err)
	}

	env := func(kind stream.Kind, lsn stream.LSN, chunk uint32, flags uint8) []byte {
		return stream.Encode(&stream.Envelope{Kind: kind, Source: "src", CommitLSN: lsn, EndLSN: lsn + 8,
			CommitTime: time.Now(), Chunk: chunk, Flags: flags})
	}
	const whole = stream.FlagFirst | stream.FlagLast
	msgs := [][]byte{
		env(stream.KindTxn, 0x10, 0, whole), // 1
		stream.AppendBatch(nil, [][]byte{env(stream.KindTxn, 0x20, 0, whole), env(stream.KindTxn, 0x30, 0, whole)}), // 2
		env(stream.KindTxn, 0x40, 0, stream.FlagFirst),                                                              // 3
		env(stream.KindTxn, 0x40, 1, 0),                                                                             // 4
		env(stream.KindTxn, 0x40, 2, stream.FlagLast),                                                               // 5
		env(stream.KindHeartbeat, 0x50, 0, whole),                                                                   // 6
		env(stream.KindTxn, 0x60, 0, stream.FlagFirst),                                                              // 7
		env(stream.KindTxn, 0x60, 1, stream.FlagLast),                                                               // 8
	}
	for _, m := range msgs {
		if _, err := js.Publish(ctx, stream.TxnSubject("src"), m); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		lsn  stream.LSN
		want uint64
	}{
		{0x05, 1}, {0x10, 1},
		{0x11, 2}, {0x25, 2}, // the batch holds 0/30
		{0x31, 3},
		{0x41, 6}, {0x50, 6}, // not the last chunk of 0/40
		{0x51, 7},
		{0x61, 9}, // past the end
	} {
		if got, err := stream.SeekLSN(ctx, st, tc.lsn); err != nil || got != tc.want {
			t.Errorf("SeekLSN(%s) = %d, %v; want %d", tc.lsn, got, err, tc.want)
		}
	}

	// 0/70 sent again from its first chunk after a capture crash.
	for _, m := range [][]byte{
		env(stream.KindTxn, 0x70, 0, stream.FlagFirst), // 9
		env(stream.KindTxn, 0x70, 1, 0),                // 10
		env(stream.KindTxn, 0x70, 0, stream.FlagFirst), // 11
		env(stream.KindTxn, 0x70, 1, 0),                // 12
		env(stream.KindTxn, 0x70, 2, stream.FlagLast),  // 13
	} {
		if _, err := js.Publish(ctx, stream.TxnSubject("src"), m); err != nil {
			t.Fatal(err)
		}
	}
	txnStart := func(when string, cases map[uint64]uint64) {
		t.Helper()
		for seq, want := range cases {
			if got, err := stream.TxnStart(ctx, st, seq); err != nil || got != want {
				t.Errorf("%s: TxnStart(%d) = %d, %v; want %d", when, seq, got, err, want)
			}
		}
	}
	txnStart("whole stream", map[uint64]uint64{1: 1, 2: 2, 3: 3, 4: 3, 5: 3, 6: 6, 8: 7, 12: 11, 13: 11})
	// A sequence missing between the chunks: the start of the first send.
	if err := st.DeleteMsg(ctx, 11); err != nil {
		t.Fatal(err)
	}
	txnStart("sequence 11 deleted", map[uint64]uint64{13: 9, 12: 9})
	// The first chunk purged: nothing earlier to point at.
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(4)); err != nil {
		t.Fatal(err)
	}
	txnStart("purged below 4", map[uint64]uint64{5: 5, 4: 4, 8: 7})
}

// TestSeekTime: the first transaction committed after a time, by the
// source's commit times: inside a batch, at a transaction of several
// chunks (its first), past heartbeats whose capture-clock times say
// otherwise; and, past every transaction, the end of the stream.
func TestSeekTime(t *testing.T) {
	ctx, js, st := seekStream(t)
	t0 := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	if lsn, past, err := stream.SeekTime(ctx, st, "src", at(0)); err != nil || past || lsn != 0 {
		t.Errorf("SeekTime on an empty stream = %s, %v, %v; want 0/0, false", lsn, past, err)
	}
	env := func(kind stream.Kind, lsn stream.LSN, s int, chunk uint32, flags uint8) []byte {
		return stream.Encode(&stream.Envelope{Kind: kind, Source: "src", CommitLSN: lsn, EndLSN: lsn + 8,
			CommitTime: at(s), Chunk: chunk, Flags: flags})
	}
	const whole = stream.FlagFirst | stream.FlagLast
	for _, m := range []struct {
		subject string
		data    []byte
	}{
		{stream.TxnSubject("src"), env(stream.KindTxn, 0x10, 10, 0, whole)},
		{stream.HeartbeatSubject("src"), env(stream.KindHeartbeat, 0x18, 100, 0, whole)}, // capture's clock, far ahead
		{stream.TxnSubject("src"), stream.AppendBatch(nil, [][]byte{env(stream.KindTxn, 0x20, 20, 0, whole), env(stream.KindTxn, 0x30, 30, 0, whole)})},
		{stream.TxnSubject("src"), env(stream.KindTxn, 0x40, 40, 0, stream.FlagFirst)},
		{stream.TxnSubject("src"), env(stream.KindTxn, 0x40, 40, 1, stream.FlagLast)},
		{stream.HeartbeatSubject("src"), env(stream.KindHeartbeat, 0x50, 45, 0, whole)},
		{stream.HeartbeatSubject("src"), env(stream.KindHeartbeat, 0x60, 50, 0, whole)},
	} {
		if _, err := js.Publish(ctx, m.subject, m.data); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		at   int
		lsn  stream.LSN
		past bool
	}{
		{5, 0x10, true},
		{10, 0x20, true}, // committed at the point: not past it
		{25, 0x30, true}, // the second of a batch
		{35, 0x40, true}, // several chunks
		{40, 0x68, false},
		{200, 0x68, false}, // the end of the last heartbeat
	} {
		if lsn, past, err := stream.SeekTime(ctx, st, "src", at(tc.at)); err != nil || lsn != tc.lsn || past != tc.past {
			t.Errorf("SeekTime(+%ds) = %s, %v, %v; want %s, %v", tc.at, lsn, past, err, tc.lsn, tc.past)
		}
	}
}

// seekStream starts a NATS server and makes the change stream of source
// src in it; the context ends with the test, within 30s.
func seekStream(t *testing.T) (context.Context, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	n := local.NewTestNATS(t, local.NATSOptions{Name: "seek"})
	nc, err := stream.Connect(n.ClientURL(), "seek test", stream.ConnectOptions{}, local.TestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st, err := stream.EnsureStream(ctx, js, "src", stream.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, js, st
}
