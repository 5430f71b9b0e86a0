package status

// What the console shows beyond the health of each part, read from the
// same sources: the source's snapshots (its snapshot stream in the home
// domain) and the one each region's target was built from
// (pgjet.restore), and each target's conflicts per minute by kind and
// decision (pgjet.conflicts). Every read is a read: a NATS user that may
// read streams and a Postgres role that may SELECT pgjet's tables suffice.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// ConflictWindow is how far back Target.Conflicts counts, one bucket a
// minute.
const ConflictWindow = 15 * time.Minute

// Snapshot is one snapshot of a source in its snapshot stream.
type Snapshot struct {
	ID     string `json:"id"`
	Domain string `json:"domain"`
	// State is "complete", "in progress" or "aborted".
	State    string     `json:"state"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// LSN is the source position the snapshot was taken at.
	LSN    string `json:"lsn,omitempty"`
	Tables int    `json:"tables"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	// Regions are the --db-region targets built from this snapshot
	// (their pgjet.restore names it).
	Regions []string `json:"regions"`
}

// Restore is the snapshot a region's target was built from.
type Restore struct {
	Snapshot   string     `json:"snapshot"`
	Done       bool       `json:"done"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// ConflictCount is how many conflicts of one kind a target decided one
// way in each of the last 15 minutes.
type ConflictCount struct {
	Kind     string `json:"kind"`
	Decision string `json:"decision"`
	// PerMinute holds one count a minute, oldest first; the last is the
	// minute now running.
	PerMinute []int64 `json:"per_minute"`
	Total     int64   `json:"total"`
}

// snapshotStatus lists the snapshots in the source's snapshot stream of
// the home stream's domain. A source without one (pgjet-capture
// --no-snapshot) has none; an error is returned for the report's source
// row.
func snapshotStatus(ctx context.Context, nc *nats.Conn, home *Stream, source string) ([]Snapshot, error) {
	js, err := stream.NewJetStream(nc, home.asked)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream.SnapshotStreamName(source))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", stream.SnapshotStreamName(source), err)
	}
	infos, err := stream.ListSnapshots(ctx, st, source)
	if err != nil {
		return nil, err
	}
	out := make([]Snapshot, 0, len(infos))
	for _, si := range infos {
		m := si.Manifest
		sn := Snapshot{ID: si.ID, Domain: home.Domain, State: "in progress", Tables: len(m.Tables), Rows: m.Rows, Bytes: m.Bytes, Regions: []string{}}
		switch {
		case si.Complete:
			sn.State = "complete"
		case si.Aborted:
			sn.State = "aborted"
		}
		if !m.Started.IsZero() {
			sn.Started = utc(&m.Started)
		} else if t, ok := snapshotIDTime(si.ID); ok {
			sn.Started = &t
		}
		if !m.Finished.IsZero() {
			sn.Finished = utc(&m.Finished)
		}
		if m.LSN > 0 {
			sn.LSN = m.LSN.String()
		}
		out = append(out, sn)
	}
	// Newest first: the one a new region is built from leads.
	slices.Reverse(out)
	return out, nil
}

// snapshotIDTime is the time a snapshot began, read from its id
// (stream.NewSnapshotID): an unfinished snapshot's manifest may not say.
func snapshotIDTime(id string) (time.Time, bool) {
	if len(id) != len("20060102T150405")+len("000000000Z") {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102T150405.000000000Z", id[:15]+"."+id[15:])
	return t, err == nil
}

// markRestored names, on each snapshot, the regions built from it.
func markRestored(s *Source) {
	for i := range s.Snapshots {
		sn := &s.Snapshots[i]
		for _, t := range s.Targets {
			if t.Restore != nil && t.Restore.Snapshot == sn.ID {
				sn.Regions = append(sn.Regions, t.Region)
			}
		}
	}
}

// readTargetDetail reads, per source of out, the snapshot the target was
// built from and its conflicts of the last 15 minutes by kind and
// decision. A target whose tables predate pgjet.restore reports no
// restore.
func readTargetDetail(ctx context.Context, conn *pgx.Conn, names []string, out map[string]Target) error {
	var hasRestore bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('pgjet.restore') IS NOT NULL").Scan(&hasRestore); err != nil {
		return fmt.Errorf("look up pgjet.restore: %w", err)
	}
	restoreSQL := `SELECT source, snapshot, done, started_at, finished_at FROM pgjet.restore
		WHERE coalesce(cardinality($1::text[]), 0) = 0 OR source = ANY($1)`
	if !hasRestore {
		restoreSQL = `SELECT '', '', false, NULL::timestamptz, NULL::timestamptz WHERE $1::text[] IS NULL AND false`
	}
	rows, err := conn.Query(ctx, restoreSQL, names)
	if err != nil {
		return fmt.Errorf("read pgjet.restore: %w", err)
	}
	for rows.Next() {
		var src string
		var r Restore
		if err := rows.Scan(&src, &r.Snapshot, &r.Done, &r.StartedAt, &r.FinishedAt); err != nil {
			return fmt.Errorf("read pgjet.restore: %w", err)
		}
		r.StartedAt, r.FinishedAt = utc(r.StartedAt), utc(r.FinishedAt)
		if tr, ok := out[src]; ok {
			tr.Restore = &r
			out[src] = tr
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read pgjet.restore: %w", err)
	}

	buckets := int(ConflictWindow / time.Minute)
	// Minute 0 is the one running now; the bucket is counted back from
	// the database's clock, so the console's clock does not matter.
	rows, err = conn.Query(ctx, `SELECT source, kind, decision, floor(extract(epoch FROM clock_timestamp() - at) / 60)::int, count(*)
		FROM pgjet.conflicts WHERE at > clock_timestamp() - make_interval(mins => $2)
			AND (coalesce(cardinality($1::text[]), 0) = 0 OR source = ANY($1))
		GROUP BY 1, 2, 3, 4`, names, buckets)
	if err != nil {
		return fmt.Errorf("count pgjet.conflicts by kind: %w", err)
	}
	bySource := map[string]map[[2]string]*ConflictCount{}
	for rows.Next() {
		var src, kind, decision string
		var ago int
		var n int64
		if err := rows.Scan(&src, &kind, &decision, &ago, &n); err != nil {
			return fmt.Errorf("count pgjet.conflicts by kind: %w", err)
		}
		if ago < 0 || ago >= buckets {
			continue
		}
		m := bySource[src]
		if m == nil {
			m = map[[2]string]*ConflictCount{}
			bySource[src] = m
		}
		c := m[[2]string{kind, decision}]
		if c == nil {
			c = &ConflictCount{Kind: kind, Decision: decision, PerMinute: make([]int64, buckets)}
			m[[2]string{kind, decision}] = c
		}
		c.PerMinute[buckets-1-ago] += n
		c.Total += n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count pgjet.conflicts by kind: %w", err)
	}
	for src, m := range bySource {
		tr, ok := out[src]
		if !ok {
			continue
		}
		for _, c := range m {
			tr.Conflicts = append(tr.Conflicts, *c)
		}
		slices.SortFunc(tr.Conflicts, func(a, b ConflictCount) int {
			return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Decision, b.Decision))
		})
		out[src] = tr
	}
	return nil
}

// Target states (Target.State), for readers of a Report.
const (
	TargetCaughtUp   = stateCaughtUp
	TargetCatchingUp = stateCatchingUp
	TargetStalled    = stateStalled
	TargetCutOff     = stateCutOff
)

// Consumer states (Consumer.State), for readers of a Report.
const (
	ConsumerWaiting  = stateWaiting
	ConsumerApplying = stateApplying
	ConsumerStopped  = stateStopped
)

// Applier states (Target.ApplierState), for readers of a Report.
const (
	ApplierRunning = applierRunning
	ApplierLagging = applierLagging
	ApplierStopped = applierStopped
	ApplierDown    = applierDown
)
