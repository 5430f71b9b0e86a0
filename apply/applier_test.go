package apply

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// fakeMsg is a delivery of stream sequence seq as the consumer's
// delivery number delivered.
type fakeMsg struct {
	jetstream.Msg
	seq, delivered uint64
	hdr            nats.Header
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq, Consumer: m.delivered}}, nil
}
func (m *fakeMsg) Headers() nats.Header { return m.hdr }

// fakeStream holds capture's heartbeats at sequences 1 to last, each with
// the message id "id<seq>".
type fakeStream struct {
	jetstream.Stream
	last uint64
}

func (s *fakeStream) GetMsg(_ context.Context, seq uint64, _ ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	if seq == 0 || seq > s.last {
		return nil, jetstream.ErrMsgNotFound
	}
	env := stream.Envelope{Kind: stream.KindHeartbeat, Source: "src", CommitLSN: stream.LSN(seq), EndLSN: stream.LSN(seq),
		CommitTime: time.Now(), Flags: stream.FlagFirst | stream.FlagLast}
	return &jetstream.RawStreamMsg{Sequence: seq, Data: stream.Encode(&env),
		Header: nats.Header{jetstream.MsgIDHeader: {fmt.Sprintf("id%d", seq)}}}, nil
}

// TestSession_DeliveriesLostBeforeRedelivery: deliveries 101 to 105 (stream
// sequences 101 to 105) are lost with a dropped link, and so are the acks
// of what was applied. After AckWait the consumer redelivers stream
// sequences 51 to 100 first (delivery numbers 106 to 155), which the
// session passes over, then delivers the new stream sequence 106. The jump
// in delivery numbers came with the redelivery, not with 106: the loss is
// still deliveries lost on the way, which consuming again from the applied
// position cures, not a gap in the stream that stops the applier.
func TestSession_DeliveriesLostBeforeRedelivery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := &session{a: &Applier{cfg: Config{Name: "src"}, log: zerolog.Nop()}, src: &fakeStream{last: 106}, lastSeq: 100, delivered: 100}
	for i := uint64(0); i < 50; i++ {
		if err := s.handle(ctx, &fakeMsg{seq: 51 + i, delivered: 106 + i}); err != nil {
			t.Fatalf("redelivery of stream sequence %d: %v", 51+i, err)
		}
	}
	err := s.handle(ctx, &fakeMsg{seq: 106, delivered: 156, hdr: nats.Header{stream.HeaderPrev: {"id105"}}})
	if err == nil || pgerr.IsFatal(err) || !retryable(err) {
		t.Fatalf("handle = %v, want a retryable error (deliveries lost on the way)", err)
	}
}
