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

// dropped is a transaction being dead-lettered whole.
type dropped struct {
	lsn stream.LSN // its commit LSN
	// copies is false for a transaction applied before: only its bad
	// messages are dead-lettered, the rest is skipped as usual.
	copies      bool
	bad         uint64 // stream sequence of the bad message that set it aside
	cause       error
	first, last uint64 // stream sequences of its first and last message
	n           int    // messages dead-lettered
}

// deadLetter sets aside message m (stream sequence seq), which cannot be
// applied because of cause.
//
// A bad chunk of a transaction (its Nats-Msg-Id, which capture gives every
// chunk, says which) takes the whole transaction with it: applying the
// rest would commit part of a source transaction. The rows applied of it
// so far are rolled back, its earlier chunks are read back from the stream
// and dead-lettered, and so are its later ones as they arrive (see
// handleEnvelope), until the next transaction begins; then apply goes on.
// A message of no transaction of this source (a stranger published into
// the stream) goes alone and leaves a transaction it interrupts alone.
func (s *session) deadLetter(ctx context.Context, m jetstream.Msg, seq uint64, cause error) error {
	src, lsn, _, ok := stream.ParseMsgID(m.Headers().Get(jetstream.MsgIDHeader))
	if !ok || src != s.a.cfg.Name {
		if err := s.publishDead(ctx, m.Subject(), m.Headers(), m.Data(), seq, cause, true); err != nil {
			return err
		}
		if s.cur {
			// Inside a transaction: its last chunk, later in the stream,
			// carries the position past this message.
			return nil
		}
		return s.advance(ctx, m, seq)
	}
	if s.drop != nil && lsn != s.drop.lsn {
		s.endDrop() // the bad message begins the next transaction
	}
	if s.drop == nil {
		d := &dropped{lsn: lsn, copies: true, bad: seq, cause: cause, first: seq}
		if s.cur && s.skipping {
			d.copies = false
		} else if s.cur {
			// The transaction has a target transaction of its own.
			s.rollback(ctx)
			for q := s.curFirst; q < seq; q++ {
				raw, err := s.src.GetMsg(ctx, q)
				if err != nil {
					return natsError{fmt.Errorf("read back stream %s sequence %d to dead-letter its transaction: %w", stream.StreamName(s.a.cfg.Name), q, err)}
				}
				if err := s.publishDead(ctx, raw.Subject, raw.Header, raw.Data, q, d.partOf(), false); err != nil {
					return err
				}
				d.n++
			}
			d.first = s.curFirst
		}
		s.drop = d
		s.cur, s.skipping = true, false
	}
	return s.dropMsg(ctx, m, seq, cause)
}

// partOf is the reason a good chunk of d is dead-lettered.
func (d *dropped) partOf() error {
	return fmt.Errorf("set aside with its transaction %s, whose message at stream sequence %d is bad: %w", d.lsn, d.bad, d.cause)
}

// dropMsg dead-letters message m (stream sequence seq) of the transaction
// being set aside: bad because of cause, or (nil) a good chunk of it. The
// position moves past it; the group commits once the transaction ended.
func (s *session) dropMsg(ctx context.Context, m jetstream.Msg, seq uint64, cause error) error {
	d := s.drop
	if cause != nil || d.copies {
		why := cause
		if why == nil {
			why = d.partOf()
		}
		if err := s.publishDead(ctx, m.Subject(), m.Headers(), m.Data(), seq, why, cause != nil); err != nil {
			return err
		}
		d.n++
	}
	d.last = seq
	return s.advance(ctx, m, seq)
}

// endDrop ends the transaction being set aside: the next one begins.
func (s *session) endDrop() {
	d := s.drop
	s.drop, s.cur = nil, false
	if d.n > 1 {
		s.a.log.Warn().Err(d.cause).Str("lsn", d.lsn.String()).Int("messages", d.n).
			Uint64("first_stream_seq", d.first).Uint64("last_stream_seq", d.last).Uint64("bad_stream_seq", d.bad).
			Msg("transaction dead-lettered whole: one of its messages is bad, so none of its rows was applied and all its messages are in the dead-letter stream; apply goes on with the next transaction")
	}
}

// publishDead republishes a message of the stream (stream sequence seq),
// set aside because of cause, to the region's dead-letter subject and
// waits for JetStream to store it; bad says whether the message itself is
// bad (or good, but of a transaction set aside). A failure to store it is
// returned (and retried by the session): a message is never skipped
// without a copy.
func (s *session) publishDead(ctx context.Context, subject string, hdr nats.Header, data []byte, seq uint64, cause error, bad bool) error {
	a := s.a
	dlq := DeadLetterSubject(a.cfg.Name, a.cfg.Region)
	out := nats.NewMsg(dlq)
	out.Data = data
	// The original's own headers travel too, except JetStream's: an
	// expected-last-id or a message id would make the publish fail or be
	// dropped as a duplicate.
	for k, vs := range hdr {
		if !strings.HasPrefix(k, "Nats-") {
			out.Header[k] = vs
		}
	}
	out.Header.Set(HeaderDLQStream, stream.StreamName(a.cfg.Name))
	out.Header.Set(HeaderDLQSequence, strconv.FormatUint(seq, 10))
	out.Header.Set(HeaderDLQSubject, subject)
	out.Header.Set(HeaderDLQError, cause.Error())
	out.Header.Set(HeaderDLQRegion, a.cfg.Region)
	if id := hdr.Get(jetstream.MsgIDHeader); id != "" {
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
		return natsError{fmt.Errorf("dead-letter stream %s sequence %d to %s: %w", stream.StreamName(a.cfg.Name), seq, dlq, err)}
	}
	a.stats.DeadLetters.Add(1)
	if bad {
		a.log.Warn().Err(cause).Uint64("stream_seq", seq).Str("subject", subject).
			Str("dead_letter_stream", ack.Stream).Uint64("dead_letter_seq", ack.Sequence).
			Msg("bad message dead-lettered: kept with its origin in the dead-letter stream; apply goes on past it")
	} else {
		a.log.Debug().Uint64("stream_seq", seq).Uint64("dead_letter_seq", ack.Sequence).Msg("chunk dead-lettered with its transaction")
	}
	return nil
}
