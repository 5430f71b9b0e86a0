package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultOutageLimit is how long a stream may stay unreachable before a
// daemon says so (and /readyz fails). A leader change in a healthy NATS
// cluster takes a few seconds; a stream without a leader for this long has
// lost its quorum, or its servers are unreachable.
const DefaultOutageLimit = 30 * time.Second

// Outage tracks how long a daemon has failed to reach its stream. Every
// retried NATS failure extends the outage; the first success ends it. The
// daemon reports the outage once, when it passes the limit, and /readyz
// fails for as long as it lasts. Its methods are safe for concurrent use.
type Outage struct {
	limit  time.Duration
	stream string

	mu       sync.Mutex
	since    time.Time // zero: the stream answers
	last     error
	reported bool
}

// NewOutage returns an Outage of stream (its name, for the messages)
// reported after limit (DefaultOutageLimit when 0 or less).
func NewOutage(stream string, limit time.Duration) *Outage {
	if limit <= 0 {
		limit = DefaultOutageLimit
	}
	return &Outage{limit: limit, stream: stream}
}

// Fail records a failure to reach the stream at now. It returns the error
// to report when the outage has just passed the limit, once per outage.
func (o *Outage) Fail(err error, now time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		o.since = now
	}
	o.last = err
	if o.reported || now.Sub(o.since) < o.limit {
		return nil
	}
	o.reported = true
	return o.errLocked(now)
}

// OK records that the stream answered at now. It returns how long the
// outage lasted when it had been reported, else 0.
func (o *Outage) OK(now time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var d time.Duration
	if o.reported {
		d = now.Sub(o.since)
	}
	o.since, o.last, o.reported = time.Time{}, nil, false
	return d
}

// Err returns the outage as an error once it passed the limit, else nil.
func (o *Outage) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() || time.Since(o.since) < o.limit {
		return nil
	}
	return o.errLocked(time.Now())
}

func (o *Outage) errLocked(now time.Time) error {
	return fmt.Errorf("stream %s unreachable for %s (last error: %v): the NATS cluster has no leader for it (a majority of its servers down) or the servers cannot be reached; start the stopped nats-servers or restore the network, and this resumes by itself",
		o.stream, now.Sub(o.since).Round(time.Second), o.last)
}

// Probe checks that stream st of source has a leader, asking it for the
// source's last heartbeat: only the leader answers a message read, while
// a replicated stream without a leader still answers stream info from a
// surviving member's own state. No heartbeat there ("not found") is an
// answer too. It blocks until the answer or ctx's end.
func Probe(ctx context.Context, st jetstream.Stream, source string) error {
	_, err := st.GetLastMsgForSubject(ctx, HeartbeatSubject(source))
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("read stream %s: %w", StreamName(source), err)
}
