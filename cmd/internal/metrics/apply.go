package metrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgjet/pgjet/apply"
)

// DefaultStallTimeout is how long an applier may go without consuming a
// transaction or heartbeat before /readyz fails: three heartbeats at the
// capture's default --heartbeat of 10s.
const DefaultStallTimeout = 30 * time.Second

// Apply is the Probe of a pgjet-apply.
type Apply struct {
	a      *apply.Applier
	stall  time.Duration
	labels prometheus.Labels
	prog   progress
}

var _ Probe = (*Apply)(nil)

// NewApply returns the Probe of a, whose cfg passed Validate. stall is how
// long a without a consumed transaction or heartbeat is not ready (keep it
// above three of the capture's heartbeat intervals); 0 means
// DefaultStallTimeout. It does no I/O.
func NewApply(a *apply.Applier, cfg apply.Config, stall time.Duration) *Apply {
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	return &Apply{a: a, stall: stall, labels: prometheus.Labels{"source": cfg.Name, "region": cfg.Region}}
}

// Register adds the applier's collectors to reg.
func (m *Apply) Register(reg prometheus.Registerer) error {
	st, l := m.a.Stats(), m.labels
	return register(reg,
		gauge("pgjet_apply_applied_lsn", "Commit LSN of the newest source transaction committed on the target.", l,
			func() float64 { return float64(st.AppliedLSN.Load()) }),
		gauge("pgjet_apply_source_lsn", "Source WAL position (LSN as a byte number) the target has caught up to, heartbeats included.", l,
			func() float64 { return float64(st.SourceLSN.Load()) }),
		gauge("pgjet_apply_stream_seq", "Stream sequence of the newest message applied.", l,
			func() float64 { return float64(st.StreamSeq.Load()) }),
		gauge("pgjet_apply_lag_seconds", "Now minus the source commit time of the newest applied transaction or heartbeat (0 before the first).", l,
			func() float64 { return st.Lag().Seconds() }),
		counter("pgjet_apply_transactions_total", "Source transactions applied.", l,
			func() float64 { return float64(st.Txns.Load()) }),
		counter("pgjet_apply_changes_total", "Row changes applied.", l,
			func() float64 { return float64(st.Changes.Load()) }),
		counter("pgjet_apply_commits_total", "Target transactions committed (each holds one or more source transactions).", l,
			func() float64 { return float64(st.Commits.Load()) }),
		counter("pgjet_apply_conflicts_total", "Conflicts recorded in pgjet.conflicts.", l,
			func() float64 { return float64(st.Conflicts.Load()) }),
		gauge("pgjet_apply_prepared_statements", "Change statements the apply session holds prepared on the target (at most --statement-cache).", l,
			func() float64 { return float64(st.Prepared.Load()) }),
		counter("pgjet_apply_dead_letters_total", "Messages that could not be decoded, or belonged to another source, republished to the dead-letter subject (--on-bad-message dead-letter).", l,
			func() float64 { return float64(st.DeadLetters.Load()) }),
		counter("pgjet_apply_dead_letter_transactions_total", "Source transactions set aside with dead letters: each transaction dead-lettered whole, and each of a batch message set aside (--on-bad-message dead-letter).", l,
			func() float64 { return float64(st.DeadLetterTxns.Load()) }),
	)
}

// Ready reports whether the applier consumes its stream: a transaction or
// heartbeat from the source was applied within the stall timeout, or its
// counters moved within it (a backlog or a large transaction is being
// applied). An idle source still sends heartbeats, so a silent stream means
// the capture, NATS or this applier is stuck.
func (m *Apply) Ready(context.Context) error {
	if err := m.a.Outage(); err != nil {
		return err
	}
	st := m.a.Stats()
	src := st.SourceTime.Load()
	if src == 0 {
		return errors.New("nothing consumed yet: no transaction or heartbeat received from the stream")
	}
	last := m.prog.moved([3]int64{src, st.Changes.Load(), st.Txns.Load()}, time.Unix(0, src))
	if lag := st.Lag(); lag <= m.stall {
		return nil
	}
	if since := time.Since(last); since > m.stall {
		return fmt.Errorf("no transaction or heartbeat consumed for %s (lag %s): check that pgjet-capture runs and NATS is reachable",
			since.Round(time.Second), st.Lag().Round(time.Second))
	}
	return nil
}
