package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
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
	counted     bool   // counted in Stats.DeadLetterTxns
	// skip is set for a transaction skipped at the operator's request
	// (see skip.go), whose changes and tables its record names.
	skip    bool
	changes int
	tables  []string
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
		stored, err := s.publishDead(ctx, m.Subject(), m.Headers(), m.Data(), seq, cause, true)
		if err != nil {
			return err
		}
		if stored {
			s.reportHeld(m, seq)
		}
		if s.cur {
			// Inside a transaction: its last chunk, later in the stream,
			// carries the position past this message.
			return nil
		}
		return s.advance(ctx, m, seq)
	}
	return s.deadLetterTxn(ctx, m, seq, lsn, cause)
}

// deadLetterTxn sets aside transaction lsn whole, starting with its
// message m (stream sequence seq), bad because of cause.
func (s *session) deadLetterTxn(ctx context.Context, m jetstream.Msg, seq uint64, lsn stream.LSN, cause error) error {
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
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					// A sequence that holds no message, which the session
					// passed over by capture's chain (see chained).
					continue
				}
				if err != nil {
					return natsError{fmt.Errorf("read back stream %s sequence %d to dead-letter its transaction: %w", stream.StreamName(s.a.cfg.Name), q, err)}
				}
				stored, err := s.publishDead(ctx, raw.Subject, raw.Header, raw.Data, q, d.partOf(), false)
				if err != nil {
					return err
				}
				s.noteDropped(d, stored)
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
	if d.skip {
		return fmt.Errorf("with its transaction %s: %w", d.lsn, d.cause)
	}
	if d.bad == 0 {
		return fmt.Errorf("set aside with its transaction %s: %w", d.lsn, d.cause)
	}
	return fmt.Errorf("set aside with its transaction %s, whose message at stream sequence %d is bad: %w", d.lsn, d.bad, d.cause)
}

// errDropResumed is why the rest of a transaction is set aside after a
// restart: the position commits past each chunk of a transaction being set
// aside, so a restart can resume in its middle.
var errDropResumed = errors.New("its earlier messages were dead-lettered before pgjet-apply restarted")

// orphanChunk handles chunk env of message m (stream sequence seq), which
// does not follow the chunk before it. Either the chunks before it were
// dead-lettered before a restart (the stored position then lies inside
// its transaction), or they are missing or bad (a bad one without a
// message id was set aside alone). Under --on-bad-message dead-letter the
// rest of the transaction is set aside too, and apply goes on; otherwise
// the applier stops, once, with one line.
func (s *session) orphanChunk(ctx context.Context, m jetstream.Msg, seq uint64, env *stream.Envelope) error {
	a := s.a
	name := stream.StreamName(a.cfg.Name)
	resumed := !s.cur && s.sameTxnBefore(ctx, seq, env.CommitLSN)
	if resumed && s.skip != nil && env.CommitLSN == s.skip.lsn {
		// The position moved past the first chunks of a transaction being
		// skipped before the applier stopped.
		return s.startSkip(ctx, m, seq, env)
	}
	if a.cfg.OnBadMessage != OnBadMessageDeadLetter {
		if resumed {
			return pgerr.Fatalf(nil, "stream %s sequence %d holds chunk %d of transaction %s, whose earlier chunks were dead-lettered before this applier stopped; run pgjet-apply with --on-bad-message dead-letter to set the rest of it aside too",
				name, seq, env.Chunk, env.CommitLSN)
		}
		return pgerr.Fatalf(nil, "stream %s sequence %d holds chunk %d of transaction %s without the chunks before it; the stream is damaged: rebuild this target from a snapshot, or run with --on-bad-message dead-letter to set the transaction aside",
			name, seq, env.Chunk, env.CommitLSN)
	}
	if resumed && s.drop == nil {
		s.drop = &dropped{lsn: env.CommitLSN, copies: true, cause: errDropResumed, first: seq}
		s.cur, s.skipping = true, false
		return s.dropMsg(ctx, m, seq, nil)
	}
	cause := fmt.Errorf("chunk %d of transaction %s at stream %s sequence %d comes without the chunks before it (missing, or set aside alone)",
		env.Chunk, env.CommitLSN, name, seq)
	return s.deadLetterTxn(ctx, m, seq, env.CommitLSN, cause)
}

// sameTxnBefore reports whether the message before stream sequence seq is
// a chunk of transaction lsn.
func (s *session) sameTxnBefore(ctx context.Context, seq uint64, lsn stream.LSN) bool {
	if seq <= 1 {
		return false
	}
	raw, err := s.src.GetMsg(ctx, seq-1)
	if err != nil {
		return false
	}
	if src, l, _, ok := stream.ParseMsgID(raw.Header.Get(jetstream.MsgIDHeader)); ok {
		return src == s.a.cfg.Name && l == lsn
	}
	envs, err := stream.DecodeMessage(raw.Data)
	return err == nil && len(envs) == 1 && envs[0].Kind == stream.KindTxn && envs[0].CommitLSN == lsn
}

// heldTxns is what a message set aside held, as far as it can be read.
type heldTxns struct {
	lsns       []stream.LSN // commit LSNs of the source's transactions
	unreadable int          // entries of a batch that do not decode
	others     int          // envelopes of other sources
	// first and last are the commit LSNs a batch's message id names.
	first, last stream.LSN
}

// txns is how many of the source's transactions went with the message.
func (h heldTxns) txns() int { return len(h.lsns) + h.unreadable }

// readHeld reads what a message set aside held. Each entry of a batch
// whose framing holds is a whole transaction, readable or not; a message
// that is no batch counts only when it decodes.
func readHeld(source string, hdr nats.Header, data []byte) heldTxns {
	var h heldTxns
	if src, first, last, ok := stream.ParseBatchMsgID(hdr.Get(jetstream.MsgIDHeader)); ok && src == source {
		h.first, h.last = first, last
	}
	entries, err := stream.SplitBatch(data)
	batch := err == nil
	if !batch {
		entries = [][]byte{data}
	}
	for _, e := range entries {
		env, err := stream.Decode(e)
		switch {
		case err != nil:
			if batch {
				h.unreadable++
			}
		case env.Source != source:
			h.others++
		case env.Kind == stream.KindTxn:
			h.lsns = append(h.lsns, env.CommitLSN)
		}
	}
	return h
}

// reportHeld says which of the source's transactions went with message m
// (stream sequence seq), set aside as a whole: a batch of capture's holds
// several, and none of their rows is applied.
func (s *session) reportHeld(m jetstream.Msg, seq uint64) {
	h := readHeld(s.a.cfg.Name, m.Headers(), m.Data())
	if h.txns() == 0 && h.first == 0 {
		return
	}
	s.a.stats.DeadLetterTxns.Add(int64(h.txns()))
	lsns := make([]string, len(h.lsns))
	for i, l := range h.lsns {
		lsns[i] = l.String()
	}
	ev := s.a.log.Warn().Uint64("stream_seq", seq).Int("transactions", h.txns()).Strs("lsns", lsns).
		Int("unreadable", h.unreadable).Int("other_sources", h.others)
	if h.first != 0 {
		ev = ev.Str("first_lsn", h.first.String()).Str("last_lsn", h.last.String())
	}
	ev.Msg("bad message held transactions: the transactions of this source set aside with it (lsns, and unreadable ones) are not applied; they are in the dead-letter stream with it")
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
		stored, err := s.publishDead(ctx, m.Subject(), m.Headers(), m.Data(), seq, why, cause != nil)
		if err != nil {
			return err
		}
		s.noteDropped(d, stored)
	}
	d.last = seq
	return s.advance(ctx, m, seq)
}

// noteDropped counts a message of d handed to the dead-letter stream, and
// d among the transactions set aside once one of its messages is stored
// there in this process (one stored before a restart was counted then).
func (s *session) noteDropped(d *dropped, stored bool) {
	d.n++
	if stored && d.copies && !d.counted {
		d.counted = true
		s.a.stats.DeadLetterTxns.Add(1)
	}
}

// endDrop ends the transaction being set aside: the next one begins.
func (s *session) endDrop() {
	d := s.drop
	s.drop, s.cur = nil, false
	if d.skip {
		// Its first chunk comes again (capture re-sent it whole), to be
		// skipped from there.
		s.a.log.Info().Str("lsn", d.lsn.String()).Int("messages", d.n).
			Msg("transaction being skipped ends without its last chunk (capture sent it again); its messages so far are in the dead-letter stream")
		return
	}
	if d.copies {
		s.a.log.Warn().Err(d.cause).Str("lsn", d.lsn.String()).Int("messages", d.n).
			Uint64("first_stream_seq", d.first).Uint64("last_stream_seq", d.last).Uint64("bad_stream_seq", d.bad).
			Msg("transaction dead-lettered whole: one of its messages is bad, so none of its rows was applied and all its messages are in the dead-letter stream; apply goes on with the next transaction")
	}
}

// keptAlready reports whether the dead letter a duplicate ack points at is
// out: the same message of the same stream sequence.
func (s *session) keptAlready(ctx context.Context, ack *jetstream.PubAck, out *nats.Msg) (bool, error) {
	st, err := s.js.Stream(ctx, ack.Stream)
	if err != nil {
		return false, err
	}
	raw, err := st.GetMsg(ctx, ack.Sequence)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return raw.Header.Get(HeaderDLQStream) == out.Header.Get(HeaderDLQStream) &&
		raw.Header.Get(HeaderDLQSequence) == out.Header.Get(HeaderDLQSequence) && bytes.Equal(raw.Data, out.Data), nil
}

// publishDead republishes a message of the stream (stream sequence seq),
// set aside because of cause, to the region's dead-letter subject and
// waits for JetStream to store it; bad says whether the message itself is
// bad (or good, but of a transaction set aside). A failure to store it is
// returned (and retried by the session): a message is never skipped
// without a copy. stored is false when the dead-letter stream held the
// same dead letter already (set aside before a restart).
func (s *session) publishDead(ctx context.Context, subject string, hdr nats.Header, data []byte, seq uint64, cause error, bad bool) (stored bool, err error) {
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
	// its dedup window); a duplicate ack is checked below, since it is
	// also what a dead letter purged since gets.
	out.Header.Set(jetstream.MsgIDHeader, stream.StreamName(a.cfg.Name)+":"+strconv.FormatUint(seq, 10))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := s.js.PublishMsg(pctx, out)
	if err != nil {
		return false, natsError{fmt.Errorf("dead-letter stream %s sequence %d to %s: %w", stream.StreamName(a.cfg.Name), seq, dlq, err)}
	}
	if ack.Duplicate {
		// JetStream stored nothing: it saw the id within its dedup
		// window. The dead letter it kept then may be this one (set aside
		// before a restart), or gone (the stream was purged since) or
		// another (a recreated source stream reuses sequences).
		kept, err := s.keptAlready(pctx, ack, out)
		if err != nil {
			return false, natsError{fmt.Errorf("dead-letter stream %s sequence %d: read back the duplicate %s sequence %d: %w", stream.StreamName(a.cfg.Name), seq, ack.Stream, ack.Sequence, err)}
		}
		if kept {
			a.log.Info().Uint64("stream_seq", seq).Uint64("dead_letter_seq", ack.Sequence).
				Msg("message already in the dead-letter stream (set aside before a restart); not stored twice")
			return false, nil
		}
		out.Header.Set(jetstream.MsgIDHeader, out.Header.Get(jetstream.MsgIDHeader)+":"+strconv.FormatInt(time.Now().UnixNano(), 36))
		if ack, err = s.js.PublishMsg(pctx, out); err != nil {
			return false, natsError{fmt.Errorf("dead-letter stream %s sequence %d to %s: %w", stream.StreamName(a.cfg.Name), seq, dlq, err)}
		}
		if ack.Duplicate {
			return false, natsError{fmt.Errorf("dead-letter stream %s sequence %d to %s: dropped as a duplicate twice", stream.StreamName(a.cfg.Name), seq, dlq)}
		}
		a.log.Warn().Uint64("stream_seq", seq).Uint64("dead_letter_seq", ack.Sequence).
			Msg("the dead-letter stream dropped this message as a duplicate of one it no longer holds (purged, or of a recreated stream); stored it again under a new id")
	}
	a.stats.DeadLetters.Add(1)
	if bad {
		a.log.Warn().Err(cause).Uint64("stream_seq", seq).Str("subject", subject).
			Str("dead_letter_stream", ack.Stream).Uint64("dead_letter_seq", ack.Sequence).
			Msg("bad message dead-lettered: kept with its origin in the dead-letter stream; apply goes on past it")
	} else {
		a.log.Debug().Uint64("stream_seq", seq).Uint64("dead_letter_seq", ack.Sequence).Msg("chunk dead-lettered with its transaction")
	}
	return true, nil
}
