package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestLastOwnMessageFromZero: a region at stream sequence 0 has applied
// nothing, so a transaction at sequence 1 is after it. Promote once took
// sequence 0 for "look at nothing" and counted such a region caught up.
func TestLastOwnMessageFromZero(t *testing.T) {
	n, err := local.StartNATS(local.NATSOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := stream.EnsureStream(ctx, js, "src", stream.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := &stream.Envelope{Kind: stream.KindTxn, Source: "src", CommitLSN: 100, EndLSN: 101, CommitTime: time.Now(), Flags: stream.FlagFirst | stream.FlagLast}
	if _, err := js.Publish(ctx, stream.TxnSubject("src"), stream.Encode(env)); err != nil {
		t.Fatal(err)
	}
	tail, err := lastOwnMessage(ctx, st, "src", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if tail.txnAfter != 1 {
		t.Errorf("lastOwnMessage after sequence 0 found a transaction at %d, want 1", tail.txnAfter)
	}
}
