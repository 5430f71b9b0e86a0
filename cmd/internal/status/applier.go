package status

// The applier states `pgjet status` reads from each --db-region target
// (pgjet.applier_state, recorded by pgjet-apply): running, lagging,
// stopped with the error line that stopped it, or down when its record
// says running but its heartbeat stopped (killed -9, host gone).

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// Region applier states (Target.ApplierState).
const (
	applierRunning = "running"
	applierLagging = "lagging"
	applierStopped = "stopped"
	applierDown    = "down"
)

// Applier is the state an applier records in its target.
type Applier struct {
	// State is what the applier recorded: running or stopped.
	State     string     `json:"state"`
	PID       *int32     `json:"pid,omitempty"`
	Host      string     `json:"host,omitempty"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	StoppedAt *time.Time `json:"stopped_at,omitempty"`
	// HeartbeatSeconds is the time since the applier last recorded that
	// it runs; IntervalSeconds is how often it does.
	HeartbeatSeconds float64 `json:"heartbeat_seconds"`
	IntervalSeconds  float64 `json:"heartbeat_interval_seconds"`
	// LastError is the error that stopped it, or, while it runs, the one
	// it retries after.
	LastError string `json:"last_error,omitempty"`

	stoppedAgo *float64
}

// readApplierStates reads pgjet.applier_state of a target into out, per
// source (all when names is empty); a target without the table (an older
// pgjet-apply, or --state-interval 0) reports nothing.
func readApplierStates(ctx context.Context, conn *pgx.Conn, names []string, region string, out map[string]Target) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('pgjet.applier_state') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("look up pgjet.applier_state: %w", err)
	}
	if !exists {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT source, state, pid, host, started_at, stopped_at, last_error,
			greatest(extract(epoch FROM clock_timestamp() - heartbeat_at), 0)::float8, extract(epoch FROM heartbeat_interval)::float8,
			greatest(extract(epoch FROM clock_timestamp() - stopped_at), 0)::float8
		FROM pgjet.applier_state WHERE coalesce(cardinality($1::text[]), 0) = 0 OR source = ANY($1)`, names)
	if err != nil {
		return fmt.Errorf("read pgjet.applier_state: %w", err)
	}
	for rows.Next() {
		var src string
		var host, lastErr *string
		var ar Applier
		if err := rows.Scan(&src, &ar.State, &ar.PID, &host, &ar.StartedAt, &ar.StoppedAt, &lastErr,
			&ar.HeartbeatSeconds, &ar.IntervalSeconds, &ar.stoppedAgo); err != nil {
			return fmt.Errorf("read pgjet.applier_state: %w", err)
		}
		ar.StartedAt, ar.StoppedAt = utc(ar.StartedAt), utc(ar.StoppedAt)
		if host != nil {
			ar.Host = *host
		}
		if lastErr != nil {
			ar.LastError = *lastErr
		}
		tr, ok := out[src]
		if !ok {
			tr = Target{Region: region, Error: "no applied position for source " + src + " yet"}
		}
		tr.Applier = &ar
		out[src] = tr
	}
	return rows.Err()
}

// applierDownAfter is how old a running applier's heartbeat may grow
// before it counts as down: the stall timeout, and at least three of its
// heartbeat intervals.
func applierDownAfter(ar *Applier, stall time.Duration) float64 {
	return max(stall.Seconds(), 3*ar.IntervalSeconds)
}

// fillApplierState sums a region's applier up in one word: down, stopped,
// lagging (running, but behind or applying nothing) or running; "" when
// its target holds no record.
func fillApplierState(tr *Target, stall time.Duration) {
	ar := tr.Applier
	switch {
	case ar == nil:
	case ar.State == apply.StateStopped:
		tr.ApplierState = applierStopped
	case ar.HeartbeatSeconds > applierDownAfter(ar, stall):
		tr.ApplierState = applierDown
	case tr.State == stateCatchingUp || tr.State == stateStalled || tr.State == stateCutOff:
		tr.ApplierState = applierLagging
	default:
		tr.ApplierState = applierRunning
	}
}

// describe is the applier's state for people.
func (tr *Target) describeApplier() string {
	ar := tr.Applier
	switch tr.ApplierState {
	case applierDown:
		return fmt.Sprintf("down (no heartbeat for %.0fs)", ar.HeartbeatSeconds)
	case applierStopped:
		return "stopped " + agoSeconds(ar.stoppedAgo)
	}
	return tr.ApplierState
}

// applierWhere names the process that recorded ar.
func (ar *Applier) where() string {
	if ar.PID == nil {
		return "host " + orDash(ar.Host)
	}
	return fmt.Sprintf("pid %d on %s", *ar.PID, orDash(ar.Host))
}

// applierProblems reports the regions whose applier is stopped or down,
// and returns them: their consumer's and target's symptoms say nothing
// more.
func applierProblems(s *Source, add func(string, ...any)) map[string]bool {
	out := map[string]bool{}
	for _, t := range s.Targets {
		ar := t.Applier
		switch t.ApplierState {
		case applierStopped:
			why := "a clean stop (SIGTERM)"
			if ar.LastError != "" {
				why = "its last error: " + ar.LastError
			}
			add("applier of region %s stopped %s (%s), %s; fix the cause and start pgjet-apply --name %s --region %s again",
				t.Region, agoSeconds(ar.stoppedAgo), ar.where(), why, s.Source, t.Region)
		case applierDown:
			add("applier of region %s is down: no heartbeat for %.0fs while its record says running (%s): it was killed, or its host or its connection to the target is gone; start pgjet-apply --name %s --region %s",
				t.Region, ar.HeartbeatSeconds, ar.where(), s.Source, t.Region)
		default:
			continue
		}
		out[t.Region] = true
	}
	return out
}

// printAppliers writes the applier table of a source's regions.
func printAppliers(w io.Writer, s Source) {
	n := 0
	for _, t := range s.Targets {
		if t.Applier == nil {
			continue
		}
		if n == 0 {
			fmt.Fprintf(w, "\n  REGION\tAPPLIER\tPROCESS\tSTARTED\tHEARTBEAT\tLAST ERROR\n")
		}
		n++
		ar := t.Applier
		started := "-"
		if ar.StartedAt != nil {
			started = ar.StartedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%.1fs ago\t%s\n", t.Region, t.describeApplier(), ar.where(), started, ar.HeartbeatSeconds, orDash(ar.LastError))
	}
}

// NoSourceError is a --name that no domain asked has a stream of.
type NoSourceError struct {
	name    string
	domains []string
	known   []string
}

// Error names the source, the domains asked and the sources they hold.
func (e *NoSourceError) Error() string {
	known := "none"
	if len(e.known) > 0 {
		known = strings.Join(e.known, ", ")
	}
	return fmt.Sprintf("--name %s: no stream %s in domain %s (sources there: %s); check --name, and --domains",
		e.name, stream.StreamName(e.name), strings.Join(e.domains, ", "), known)
}

// checkSourceName returns an NoSourceError when --name names a source none
// of the domains asked holds a stream of, and every one of them answered:
// a typo, not an outage, and a report of an empty source would hide it.
func checkSourceName(ctx context.Context, nc *nats.Conn, o Options, rep *Report, found []domainFound) error {
	if o.Name == "" {
		return nil
	}
	for _, df := range found {
		if len(df.streams) > 0 {
			return nil
		}
	}
	e := &NoSourceError{name: o.Name}
	seen := map[string]bool{}
	for _, d := range rep.Domains {
		if d.Error != "" {
			return nil
		}
		e.domains = append(e.domains, orDash(d.Domain))
		js, err := stream.NewJetStream(nc, d.Domain)
		if err != nil {
			continue
		}
		l := js.ListStreams(ctx)
		for info := range l.Info() {
			if name := strings.TrimPrefix(info.Config.Name, statusStreamPrefix); statusChangeStream(info.Config) && !seen[name] {
				seen[name] = true
				e.known = append(e.known, name)
			}
		}
		_ = l.Err() // the list of known sources is a hint
	}
	return e
}
