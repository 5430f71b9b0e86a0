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
	n := local.NewTestNATS(t, local.NATSOptions{Name: "seek"})
	nc, err := stream.Connect(n.ClientURL(), "seek test", stream.ConnectOptions{}, local.TestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := stream.EnsureStream(ctx, js, "src", stream.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
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
