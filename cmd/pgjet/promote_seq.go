package main

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
)

// seqOnNew is a sequence of the new primary, with the column that owns it
// (serial, identity) when one does.
type seqOnNew struct {
	schema, name string
	increment    int64
	min, max     int64
	last         *int64 // last_value, nil when never used
	table, col   string // the owning column, "" when none
	integer      bool   // the owning column is of an integer type
}

// advanceSequences sets every sequence of the new primary past each id it
// may have handed out: past its value on the old primary (nil in a
// failover, where the replicated values are all there is), its own value
// (the last replicated one) and the largest value in use in the column
// that owns it, which rows applied after the last replicated value may
// hold. Descending sequences go below the smallest instead. gap moves
// them that much further (a failover's margin for ids handed out in
// transactions that never arrived). It returns how many it moved.
// Sequences only move forward.
func advanceSequences(ctx context.Context, conn, old *pgx.Conn, gap int64) (int, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, s.seqincrement, s.seqmin, s.seqmax, ps.last_value,
		coalesce(format('%I.%I', own.nspname, own.relname), ''), coalesce(own.attname, ''), coalesce(own.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype), false)
		FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = c.relname
		LEFT JOIN LATERAL (SELECT tn.nspname, t.relname, a.attname, a.atttypid FROM pg_depend d
			JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
			JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
			WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
			AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 LIMIT 1) own ON true
		WHERE n.nspname NOT IN ('pgjet', 'pg_catalog', 'information_schema')
		ORDER BY 1, 2`)
	if err != nil {
		return 0, fmt.Errorf("list the new primary's sequences: %w", err)
	}
	var seqs []seqOnNew
	for rows.Next() {
		var s seqOnNew
		if err := rows.Scan(&s.schema, &s.name, &s.increment, &s.min, &s.max, &s.last, &s.table, &s.col, &s.integer); err != nil {
			rows.Close()
			return 0, fmt.Errorf("list the new primary's sequences: %w", err)
		}
		seqs = append(seqs, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list the new primary's sequences: %w", err)
	}
	moved := 0
	for _, s := range seqs {
		up := s.increment > 0
		var want *int64
		take := func(v *int64) {
			if v != nil && (want == nil || up && *v > *want || !up && *v < *want) {
				want = v
			}
		}
		take(s.last)
		if old != nil {
			var v *int64
			err := old.QueryRow(ctx, "SELECT last_value FROM pg_sequences WHERE schemaname = $1 AND sequencename = $2", s.schema, s.name).Scan(&v)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return moved, fmt.Errorf("read sequence %s.%s on the old primary: %w", s.schema, s.name, err)
			}
			take(v)
		}
		if s.integer {
			agg := "max"
			if !up {
				agg = "min"
			}
			var v *int64
			col := pgx.Identifier{s.col}.Sanitize()
			if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT %s(%s)::bigint FROM %s", agg, col, s.table)).Scan(&v); err != nil {
				return moved, fmt.Errorf("read the largest %s.%s in use: %w", s.table, s.col, err)
			}
			take(v)
		}
		if want == nil {
			continue
		}
		if gap > 0 {
			// Within the sequence's bounds: a smallserial cannot take a
			// large gap, and gets what room it has.
			v := *want + min(gap, room(*want, s.max))
			if !up {
				v = *want - min(gap, room(s.min, *want))
			}
			want = &v
		}
		if s.last != nil && *want == *s.last {
			continue
		}
		reg := pgx.Identifier{s.schema, s.name}.Sanitize()
		if _, err := conn.Exec(ctx, "SELECT setval($1::regclass, $2, true)", reg, *want); err != nil {
			return moved, fmt.Errorf("set sequence %s past %d: %w", reg, *want, err)
		}
		moved++
	}
	return moved, nil
}

// room is hi - lo for lo <= hi, without overflowing int64.
func room(lo, hi int64) int64 {
	if d := uint64(hi) - uint64(lo); d <= math.MaxInt64 {
		return int64(d)
	}
	return math.MaxInt64
}
