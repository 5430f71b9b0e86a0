package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
)

// Publisher publishes envelopes asynchronously with a bounded window and
// tracks which source position JetStream has durably acknowledged.
//
// Every message states the id of the message before it
// (Nats-Expected-Last-Msg-Id), so a message lost in flight makes the next
// one fail instead of leaving a hole: the stream never holds a gap or a
// reordering, whatever the network does. Acks are consumed strictly in
// publish order, so Acked only ever covers a prefix of what was published.
type Publisher struct {
	js     jetstream.JetStream
	bytes  *semaphore.Weighted
	maxMsg int64
	header nats.Header
	queue  chan pending
	lastID string
	prevID string // the last message of the chain (HeaderPrev)
	// bySeq chains messages by stream sequence instead of id; lastSeq is
	// the sequence the next message expects before it.
	bySeq   bool
	lastSeq uint64
	first   bool // nothing published yet
	acked   atomic.Uint64
	sent    atomic.Uint64
	errMu   sync.Mutex
	err     error
	failed  chan struct{}
	pending atomic.Int64
	// ackTimeout bounds the wait for each acknowledgement.
	ackTimeout time.Duration
}

type pending struct {
	fut     jetstream.PubAckFuture
	size    int64
	confirm LSN // 0: not the end of a transaction
}

// PublisherOptions bound a Publisher's window.
type PublisherOptions struct {
	// Window is the most messages awaiting an ack.
	Window int
	// WindowBytes is the most bytes awaiting an ack.
	WindowBytes int64
	// LastMsgID is the Nats-Msg-Id of the stream's last message ("" when
	// the stream is empty); the chain of expectations starts there.
	LastMsgID string
	// PrevMsgID is the id of the source's last message in the stream
	// (LastMsgID unless foreign or deleted messages follow it): the first
	// message published names it in HeaderPrev.
	PrevMsgID string
	// LastSeq is the stream's last sequence. When the last message has no
	// id (an empty or purged stream, a foreign message), the first publish
	// expects this sequence instead: a message of an earlier session still
	// in flight then makes it fail rather than be stored twice (message
	// ids differ between sessions, so deduplication would not catch it).
	LastSeq uint64
	// Start is the position already durable (the slot's confirmed LSN).
	Start LSN
	// AckTimeout bounds the wait for one acknowledgement (default 30s).
	AckTimeout time.Duration
	// Header is set on every message (HeaderSystem, HeaderTimeline).
	Header nats.Header
	// BySequence chains messages with Nats-Expected-Last-Sequence from
	// LastSeq (the stream's last sequence) instead of message ids. A
	// replicated stream needs it: nats-server checks an expected last
	// sequence on the leader before it proposes the message, but repeats
	// the expected-last-msg-id check as each replica applies it, and a
	// replica that disagrees after a leader change stops the stream
	// ("last msgid mismatch ... critical write error"). The publisher must
	// be the stream's only writer.
	BySequence bool
}

// NewPublisher returns a Publisher; it does no I/O. Run must be running
// for acks to be processed.
func NewPublisher(js jetstream.JetStream, o PublisherOptions) *Publisher {
	p := &Publisher{
		js:         js,
		bytes:      semaphore.NewWeighted(o.WindowBytes),
		maxMsg:     o.WindowBytes,
		header:     o.Header,
		queue:      make(chan pending, o.Window),
		lastID:     o.LastMsgID,
		prevID:     o.PrevMsgID,
		bySeq:      o.BySequence,
		lastSeq:    o.LastSeq,
		first:      true,
		failed:     make(chan struct{}),
		ackTimeout: o.AckTimeout,
	}
	if p.ackTimeout <= 0 {
		p.ackTimeout = 30 * time.Second
	}
	p.acked.Store(uint64(o.Start))
	p.sent.Store(uint64(o.Start))
	return p
}

// Publish sends data to subject with the given Nats-Msg-Id. confirm, when
// non-zero, is the source position that becomes durable once this and all
// earlier messages are acknowledged. It blocks while the window is full
// and returns the first asynchronous publish error, after which the
// Publisher is unusable. It must not be called concurrently.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte, msgID string, confirm LSN) error {
	if err := p.Err(); err != nil {
		return err
	}
	size := min(int64(len(data)), p.maxMsg)
	if err := p.bytes.Acquire(ctx, size); err != nil {
		return err
	}
	// A copy per message: the client adds the message's own headers to it.
	h := make(nats.Header, len(p.header)+3)
	for k, v := range p.header {
		h[k] = v
	}
	if p.prevID != "" {
		h.Set(HeaderPrev, p.prevID)
	}
	m := &nats.Msg{Subject: subject, Data: data, Header: h}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID)}
	switch {
	case p.bySeq:
		opts = append(opts, jetstream.WithExpectLastSequence(p.lastSeq))
	case p.lastID != "":
		opts = append(opts, jetstream.WithExpectLastMsgID(p.lastID))
	case p.first:
		opts = append(opts, jetstream.WithExpectLastSequence(p.lastSeq))
	}
	fut, err := p.js.PublishMsgAsync(m, opts...)
	if err != nil {
		p.bytes.Release(size)
		return fmt.Errorf("publish %s: %w", msgID, err)
	}
	p.lastID, p.prevID, p.first = msgID, msgID, false
	p.lastSeq++
	if confirm != 0 {
		p.sent.Store(uint64(confirm))
	}
	return p.enqueue(ctx, pending{fut: fut, size: size, confirm: confirm})
}

// Confirm records that the source position confirm is durable once every
// message published so far is: a transaction that publishes nothing (it
// touched no published table, or it is skipped) still moves the slot.
func (p *Publisher) Confirm(ctx context.Context, confirm LSN) error {
	p.sent.Store(uint64(confirm))
	return p.enqueue(ctx, pending{confirm: confirm})
}

func (p *Publisher) enqueue(ctx context.Context, e pending) error {
	p.pending.Add(1)
	select {
	case p.queue <- e:
		return nil
	case <-p.failed:
		p.pending.Add(-1)
		return p.Err()
	case <-ctx.Done():
		p.pending.Add(-1)
		return ctx.Err()
	}
}

// Acked is the highest source position whose messages, and all before
// them, JetStream has acknowledged.
func (p *Publisher) Acked() LSN { return LSN(p.acked.Load()) }

// Sent is the highest source position handed to Publish or Confirm.
func (p *Publisher) Sent() LSN { return LSN(p.sent.Load()) }

// Pending is the number of messages and marks awaiting acknowledgement.
func (p *Publisher) Pending() int64 { return p.pending.Load() }

// Err returns the error that stopped the Publisher, if any.
func (p *Publisher) Err() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

func (p *Publisher) fail(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.err == nil {
		p.err = err
		close(p.failed)
	}
}

// ErrPublisherStopped is returned by Publish after Run returned.
var ErrPublisherStopped = errors.New("publisher stopped")

// Run consumes acknowledgements in publish order until ctx ends or a
// publish fails. It returns ctx.Err() or the publish error.
func (p *Publisher) Run(ctx context.Context) error {
	// One timer, reset per message, bounds the wait for an ack: cheaper
	// than the client's per-message ack timeout, and just as safe since
	// acks are awaited in order.
	timeout := time.NewTimer(time.Hour)
	defer timeout.Stop()
	for {
		var e pending
		select {
		case <-ctx.Done():
			p.fail(ErrPublisherStopped)
			return ctx.Err()
		case e = <-p.queue:
		}
		if e.fut != nil {
			timeout.Reset(p.ackTimeout)
			select {
			case <-ctx.Done():
				p.fail(ErrPublisherStopped)
				return ctx.Err()
			case <-timeout.C:
				err := fmt.Errorf("publish %s: no acknowledgement from JetStream in %s", e.fut.Msg().Header.Get(jetstream.MsgIDHeader), p.ackTimeout)
				p.fail(err)
				return err
			case <-e.fut.Ok():
			case err := <-e.fut.Err():
				err = fmt.Errorf("publish %s: %w", e.fut.Msg().Header.Get(jetstream.MsgIDHeader), err)
				p.fail(err)
				return err
			}
			p.bytes.Release(e.size)
		}
		if e.confirm != 0 {
			p.acked.Store(uint64(e.confirm))
		}
		p.pending.Add(-1)
	}
}

// Drain waits until everything handed to Publish and Confirm so far is
// acknowledged, the Publisher fails, or ctx ends.
func (p *Publisher) Drain(ctx context.Context) error {
	for p.pending.Load() > 0 {
		if err := p.Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.failed:
			return p.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
