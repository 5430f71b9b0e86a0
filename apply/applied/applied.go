// Package applied reads pgjet.applied, the table in which pgjet-apply
// records, per source, the position of the last source transaction it
// applied to a target, in the same target transaction as that
// transaction's rows. pgjet-apply makes the table (its numbered
// migrations) and writes it; this package is the one reader of it: the
// applier resuming, pgjet replay and pgjet skip finding where a target
// stands, pgjet verify waiting for a target to catch up, and pgjet status.
package applied

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/stream"
)

// Table is the table pgjet-apply records its positions in.
const Table = "pgjet.applied"

// ErrNoTable is returned by Read for a database without pgjet.applied:
// pgjet-apply has not run against it.
var ErrNoTable = errors.New("no table " + Table)

// Querier is what reads the table: a *pgx.Conn or a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Position is where a target stands in one source's change stream.
type Position struct {
	// Source is the source's name (pgjet-capture --name).
	Source string
	// CommitLSN is the source LSN of the commit of the last transaction
	// applied; EndLSN is the end of its commit record.
	CommitLSN stream.LSN
	EndLSN    stream.LSN
	// SourceLSN is the source WAL position the target has caught up to:
	// EndLSN, or a later heartbeat the applier passed (EndLSN on a table
	// older than its source_lsn column).
	SourceLSN stream.LSN
	// StreamSeq is the stream sequence of that transaction's last message.
	StreamSeq uint64
	// CommitTime is the transaction's commit time on the source; nil for
	// a position a snapshot's restore wrote.
	CommitTime *time.Time
	// AppliedAt is when the target committed the position.
	AppliedAt time.Time
	// Clock is the target's clock_timestamp() when the row was read: ages
	// measured from it do not depend on the reader's clock.
	Clock time.Time
}

// readSQL reads the rows of the sources $1 (all when empty). source_lsn
// is read through jsonb so that a table made before that column still
// reads, as pgjet verify reads a target it does not migrate.
const readSQL = `SELECT source, commit_lsn::text, end_lsn::text, coalesce((to_jsonb(a)->>'source_lsn')::pg_lsn, a.end_lsn)::text,
	stream_seq, commit_time, applied_at, clock_timestamp()
	FROM ` + Table + ` a WHERE coalesce(cardinality($1::text[]), 0) = 0 OR source = ANY($1) ORDER BY source`

// Exists reports whether q's database has pgjet.applied.
func Exists(ctx context.Context, q Querier) (bool, error) {
	var has bool
	rows, err := q.Query(ctx, "SELECT to_regclass('"+Table+"') IS NOT NULL")
	if err == nil {
		has, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
	}
	if err != nil {
		return false, fmt.Errorf("look up %s: %w", Table, err)
	}
	return has, nil
}

// Read returns the positions of sources, or of every source when none is
// given, ordered by source; a source without a position is left out. It
// returns ErrNoTable when the database has no pgjet.applied. It looks
// the table up first, so a missing one does not abort a transaction.
func Read(ctx context.Context, q Querier, sources ...string) ([]Position, error) {
	has, err := Exists(ctx, q)
	if err != nil {
		return nil, err
	}
	if !has {
		return nil, ErrNoTable
	}
	rows, err := q.Query(ctx, readSQL, sources)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Table, err)
	}
	var out []Position
	for rows.Next() {
		var p Position
		var commit, end, caught string
		var seq int64
		if err := rows.Scan(&p.Source, &commit, &end, &caught, &seq, &p.CommitTime, &p.AppliedAt, &p.Clock); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read %s: %w", Table, err)
		}
		p.StreamSeq = uint64(seq)
		for _, l := range []struct {
			to   *stream.LSN
			text string
		}{{&p.CommitLSN, commit}, {&p.EndLSN, end}, {&p.SourceLSN, caught}} {
			if *l.to, err = stream.ParseLSN(l.text); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read %s of source %s: %w", Table, p.Source, err)
			}
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", Table, err)
	}
	return out, nil
}

// ReadSource returns the position of source; ok is false when the
// database holds none, also when it has no pgjet.applied at all.
func ReadSource(ctx context.Context, q Querier, source string) (p Position, ok bool, err error) {
	ps, err := Read(ctx, q, source)
	switch {
	case errors.Is(err, ErrNoTable):
		return Position{}, false, nil
	case err != nil:
		return Position{}, false, err
	case len(ps) == 0:
		return Position{}, false, nil
	}
	return ps[0], true, nil
}
