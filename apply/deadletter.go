package apply

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// DeadLetterSubject is where region's applier of source republishes the
// messages it cannot apply (--on-bad-message dead-letter). It lies outside
// pgjet.<source>.>, so the source's stream never takes a dead letter back,
// and names the region, so that each region's dead-letter stream holds
// only its own even where leafnodes share subjects between regions.
func DeadLetterSubject(source, region string) string {
	return "pgjetdlq." + source + "." + region
}

// DeadLetterStream is the stream, in the applier's JetStream domain, that
// keeps region's dead letters of source.
func DeadLetterStream(source, region string) string {
	return "PGJET_DLQ_" + source + "_" + region
}

// Headers of a dead letter, naming where the message came from and why it
// was set aside. The payload is the original message's, byte for byte.
const (
	HeaderDLQStream   = "Pgjet-Dlq-Stream"
	HeaderDLQSequence = "Pgjet-Dlq-Sequence"
	HeaderDLQSubject  = "Pgjet-Dlq-Subject"
	HeaderDLQError    = "Pgjet-Dlq-Error"
	HeaderDLQMsgID    = "Pgjet-Dlq-Msg-Id"
	HeaderDLQRegion   = "Pgjet-Dlq-Region"
)

// EnsureDeadLetters creates the region's dead-letter stream when missing.
// Dead letters are kept for a month: they wait for a person. It is
// idempotent.
func EnsureDeadLetters(ctx context.Context, js jetstream.JetStream, source, region string) error {
	name := DeadLetterStream(source, region)
	_, err := js.Stream(ctx, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up dead-letter stream %s: %w", name, err)
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "pgjet-apply dead letters of source " + source + " in region " + region,
		Subjects:    []string{DeadLetterSubject(source, region)},
		Storage:     jetstream.FileStorage,
		MaxAge:      30 * 24 * time.Hour,
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create dead-letter stream %s: %w", name, err)
	}
	return nil
}

// deadLetter republishes message m (stream sequence seq), which cannot be
// applied because of cause, to the region's dead-letter subject, waits
// for JetStream to store it, and moves the position past it. A failure to
// store it is returned (and retried by the session): a bad message is
// never skipped without a copy.
func (s *session) deadLetter(ctx context.Context, m jetstream.Msg, seq uint64, cause error) error {
	a := s.a
	subject := DeadLetterSubject(a.cfg.Name, a.cfg.Region)
	out := nats.NewMsg(subject)
	out.Data = m.Data()
	// The original's own headers travel too, except JetStream's: an
	// expected-last-id or a message id would make the publish fail or be
	// dropped as a duplicate.
	for k, vs := range m.Headers() {
		if !strings.HasPrefix(k, "Nats-") {
			out.Header[k] = vs
		}
	}
	out.Header.Set(HeaderDLQStream, stream.StreamName(a.cfg.Name))
	out.Header.Set(HeaderDLQSequence, strconv.FormatUint(seq, 10))
	out.Header.Set(HeaderDLQSubject, m.Subject())
	out.Header.Set(HeaderDLQError, cause.Error())
	out.Header.Set(HeaderDLQRegion, a.cfg.Region)
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		out.Header.Set(HeaderDLQMsgID, id)
	}
	// Deduplicated by origin: a restart before the position moved past the
	// message dead-letters it again, and JetStream drops the copy (within
	// its dedup window).
	out.Header.Set(jetstream.MsgIDHeader, stream.StreamName(a.cfg.Name)+":"+strconv.FormatUint(seq, 10))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := s.js.PublishMsg(pctx, out)
	if err != nil {
		return natsError{fmt.Errorf("dead-letter stream %s sequence %d to %s: %w", stream.StreamName(a.cfg.Name), seq, subject, err)}
	}
	a.stats.DeadLetters.Add(1)
	a.log.Warn().Err(cause).Uint64("stream_seq", seq).Str("subject", m.Subject()).
		Str("dead_letter_stream", ack.Stream).Uint64("dead_letter_seq", ack.Sequence).
		Msg("bad message dead-lettered: kept with its origin in the dead-letter stream; apply goes on past it")
	if s.cur {
		// Inside a multi-chunk transaction: its last chunk, later in the
		// stream, carries the position past this message.
		return nil
	}
	return s.advance(ctx, m, seq)
}
