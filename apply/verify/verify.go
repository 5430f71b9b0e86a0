// Package verify proves a replica equals its primary. Compare first waits
// until the target has caught up with the source (its position read
// through package applied), then compares the columns of each table and
// its rows, by primary-key ranges, with an order-independent digest;
// Repair rewrites the target's rows of the ranges found different. pgjet
// verify runs them: see cmd/pgjet/VERIFY.md.
package verify

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
)

// How Compare digests rows.
//
// The digest of a set of rows is the triple
//
//	(count(*), Σ hi64(md5(r)), Σ lo64(md5(r)))
//
// where r is the row's text form, ROW(c1, c2, ...)::text over the columns
// both sides have, in the source's column order, and hi64/lo64 are the two
// halves of the md5 read as signed 64-bit integers. The sums are exact
// (numeric), so the digest does not depend on row order and costs no sort.
// It is a multiset hash: duplicate rows count, and two different sets of
// rows collide only if their md5 differences cancel in both 64-bit lanes at
// once, about 2^-128 for accidental differences. It is not meant to resist a
// forger who can choose rows.

// DefaultChunkRows is the default number of source rows in one key range.
const DefaultChunkRows = 100000

// maxRecheckRanges is the most differing ranges of one table that are
// compared again; a table differing in more is not merely lagging, and
// recomparing all of them would redo the whole table several times.
const maxRecheckRanges = 100

// maxListedRanges is the most differing ranges Summary names.
const maxListedRanges = 10

// Options controls Compare. Start from DefaultOptions.
type Options struct {
	// Tables are the tables to compare, as "schema.name" (a name without a
	// dot is in public). Empty: every ordinary and partitioned table of
	// the source that is not a partition, outside pg_catalog,
	// information_schema, pg_* and pgjet* schemas.
	Tables []string
	// ChunkRows is the most source rows in one key range; at least 1.
	ChunkRows int64
	// WaitLSN makes Compare first wait until the target has applied every
	// source transaction committed when Compare started (see Wait).
	// A target without pgjet.applied is not waited for.
	WaitLSN bool
	// WaitTimeout bounds that wait; 0 waits as long as the context allows.
	WaitTimeout time.Duration
	// SourceName is the pgjet source name (pgjet-capture --name) whose row
	// of the target's pgjet.applied is waited on. Empty: the only row, or
	// the one whose slot pgjet_<name> is on the source.
	SourceName string
	// Settle is how long the target's applied position must stay still,
	// after the source's slot has confirmed past the start position, for
	// the target to count as caught up with an idle source.
	Settle time.Duration
	// Rechecks is how many times a differing range is compared again, each
	// time in fresh snapshots, before it is reported.
	Rechecks int
	// RecheckPause is the pause before the first recheck; it doubles for
	// each further one.
	RecheckPause time.Duration
	// Progress, when set, is called after each compared range, on the
	// goroutine running Compare; it must return quickly.
	Progress func(Progress)
	// Filter, when set, leaves out the tables and columns it does not
	// keep, as a capture's filters leave them out of its replicas (see
	// capture.Filter).
	Filter TableFilter
}

// TableFilter chooses the tables and columns Compare compares.
type TableFilter interface {
	// Table reports whether schemaName.name is compared.
	Table(schemaName, name string) bool
	// Column reports whether a column of a compared table is compared.
	Column(schemaName, table, column string) bool
}

// DefaultOptions returns the defaults: all tables, 100000 rows per
// range, waiting for the target (for at most a minute), 3 rechecks.
func DefaultOptions() Options {
	return Options{
		ChunkRows:    DefaultChunkRows,
		WaitLSN:      true,
		WaitTimeout:  time.Minute,
		Settle:       3 * time.Second,
		Rechecks:     3,
		RecheckPause: time.Second,
	}
}

// Validate reports the first invalid option.
func (o Options) Validate() error {
	switch {
	case o.ChunkRows < 1:
		return fmt.Errorf("chunk rows must be at least 1, not %d", o.ChunkRows)
	case o.WaitTimeout < 0:
		return fmt.Errorf("wait timeout must not be negative")
	case o.Settle < 0:
		return fmt.Errorf("settle time must not be negative")
	case o.Rechecks < 0:
		return fmt.Errorf("rechecks must not be negative")
	case o.RecheckPause < 0:
		return fmt.Errorf("recheck pause must not be negative")
	}
	for _, t := range o.Tables {
		if _, err := schema.ParseTable(t); err != nil {
			return err
		}
	}
	return nil
}

// Progress is where a Compare run stands.
type Progress struct {
	// Table is the table being compared, "schema.name".
	Table string
	// Rows is how many source rows of it have been compared so far.
	Rows int64
	// Chunks is how many of its ranges have been compared so far.
	Chunks int
	// Recheck, when not 0, says that recheck round Recheck is about to
	// compare Ranges differing ranges again, after Pause; Table, Rows and
	// Chunks are then empty.
	Recheck int
	Ranges  int
	Pause   time.Duration
	// Repair, when set, says that the repair of the differing ranges
	// begins; the rest is empty.
	Repair bool
}

// Report is the outcome of Compare.
type Report struct {
	// Source and Target name the databases; Compare leaves them empty for
	// the caller to fill (redacted).
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
	// Wait says how the wait for the target ended; nil without WaitLSN.
	Wait *Wait `json:"wait,omitempty"`
	// Tables holds one verdict per compared table, in comparison order.
	Tables []TableVerdict `json:"tables"`
	// Filters describes the filters in effect, and where each came from;
	// Compare leaves it empty for the caller to fill.
	Filters []string `json:"filters,omitempty"`
	// NotCompared lists the source's tables that Tables or Filter left
	// out, "schema.name", sorted.
	NotCompared []string `json:"not_compared,omitempty"`
	// Repair says what a repair before this comparison changed (see
	// Repair); the caller fills it.
	Repair *RepairReport `json:"repair,omitempty"`
	// OK is true when every table is identical.
	OK bool `json:"ok"`
}

// Wait records the wait for the target to catch up with the source.
type Wait struct {
	// Skipped says why there was no wait ("" when there was one).
	Skipped string `json:"skipped,omitempty"`
	// Source is the pgjet source name whose applied position was read.
	Source string `json:"source,omitempty"`
	// SourceLSN is the source's WAL position when Compare started.
	SourceLSN string `json:"source_lsn,omitempty"`
	// AppliedLSN is the target's applied end LSN when the wait ended.
	AppliedLSN string `json:"applied_lsn,omitempty"`
	// Idle is true when the wait ended because the source had nothing
	// more to send (its slot confirmed past SourceLSN and the target's
	// position stayed still for the settle time), rather than because
	// AppliedLSN reached SourceLSN.
	Idle bool `json:"idle,omitempty"`
	// Seconds is how long the wait took.
	Seconds float64 `json:"seconds"`
}

// TableVerdict is the comparison of one table.
type TableVerdict struct {
	// Table is "schema.name", unquoted.
	Table string `json:"table"`
	// Key lists the primary key columns that cut the table into ranges;
	// empty when the table was compared whole.
	Key []string `json:"key,omitempty"`
	// Missing is "source" or "target" when the table exists on one side
	// only; nothing else is then compared.
	Missing string `json:"missing,omitempty"`
	// Columns lists the column differences; rows are compared over the
	// columns both sides have.
	Columns []ColumnDiff `json:"column_diffs,omitempty"`
	// NotCompared lists the columns the Filter left out.
	NotCompared []string `json:"columns_not_compared,omitempty"`
	// Rows and TargetRows are the row counts on each side.
	Rows       int64 `json:"rows"`
	TargetRows int64 `json:"target_rows"`
	// Chunks is the number of ranges compared.
	Chunks int `json:"chunks"`
	// Ranges lists the ranges that still differed after the rechecks, in
	// key order.
	Ranges []RangeDiff `json:"differing_ranges,omitempty"`
	// Converged counts ranges that differed at first and matched on a
	// recheck (a replica catching up).
	Converged int `json:"converged,omitempty"`
	// OK is true when the table is identical on both sides.
	OK bool `json:"ok"`
}

// ColumnDiff is a column that is missing on one side or typed differently.
type ColumnDiff struct {
	Column string `json:"column"`
	// SourceType and TargetType are the column's types; "" where the
	// column is missing.
	SourceType string `json:"source_type"`
	TargetType string `json:"target_type"`
}

func (c ColumnDiff) String() string {
	switch {
	case c.TargetType == "":
		return fmt.Sprintf("column %s missing on target", c.Column)
	case c.SourceType == "":
		return fmt.Sprintf("column %s missing on source", c.Column)
	}
	return fmt.Sprintf("column %s is %s on source, %s on target", c.Column, c.SourceType, c.TargetType)
}

// RangeDiff is a key range whose rows differ.
type RangeDiff struct {
	// After and Through bound the range: keys k with After < k <= Through,
	// compared as rows in key column order. Nil is unbounded. Values are
	// in Postgres text form.
	After   []string `json:"after"`
	Through []string `json:"through"`
	// Range describes the range for people, e.g. "id in (100, 200]".
	Range string `json:"range"`
	// SourceRows and TargetRows are the row counts in the range.
	SourceRows int64 `json:"source_rows"`
	TargetRows int64 `json:"target_rows"`
}

func (r RangeDiff) String() string {
	if r.SourceRows == r.TargetRows {
		return fmt.Sprintf("%s: same %d rows, different contents", r.Range, r.SourceRows)
	}
	return fmt.Sprintf("%s: %d vs %d rows", r.Range, r.SourceRows, r.TargetRows)
}

// Summary is the verdict in one line, e.g. "public.items: 7000 rows in 7
// chunks, ok" or "public.items: 1 of 7 ranges differ: id in (2000, 3000]:
// 1000 vs 999 rows".
func (v TableVerdict) Summary() string {
	if v.Missing != "" {
		return fmt.Sprintf("%s: missing on %s", v.Table, v.Missing)
	}
	if v.OK {
		s := fmt.Sprintf("%s: %d rows in %d chunks, ok", v.Table, v.Rows, v.Chunks)
		if len(v.NotCompared) > 0 {
			s += " (not compared: column " + strings.Join(v.NotCompared, ", ") + ")"
		}
		return s
	}
	var parts []string
	for _, c := range v.Columns {
		parts = append(parts, c.String())
	}
	if len(v.Ranges) > 0 {
		if len(v.Key) == 0 {
			parts = append(parts, "no primary key, compared whole: "+strings.TrimPrefix(v.Ranges[0].String(), v.Ranges[0].Range+": "))
		} else {
			var rs []string
			for i, r := range v.Ranges {
				if i == maxListedRanges {
					rs = append(rs, fmt.Sprintf("and %d more", len(v.Ranges)-i))
					break
				}
				rs = append(rs, r.String())
			}
			parts = append(parts, fmt.Sprintf("%d of %d ranges differ: %s", len(v.Ranges), v.Chunks, strings.Join(rs, "; ")))
		}
	} else {
		parts = append(parts, fmt.Sprintf("rows equal (%d in %d chunks)", v.Rows, v.Chunks))
	}
	return v.Table + ": " + strings.Join(parts, "; ")
}

// Compare compares tables of the source and target databases and reports,
// per table, whether they hold the same rows, and for keyed tables which
// key ranges differ. It returns an error only when it cannot compare (a
// query fails, the wait times out, ctx ends); differences are in the
// report.
//
// It blocks until done. It sets session parameters on both connections
// (TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output,
// lc_monetary) so that both render values alike, and leaves them set. The
// connections must not be in a transaction or used by others meanwhile;
// Compare only reads.
//
// A table with a primary key on the source (and the same key columns and
// types on the target) is cut into ranges of ChunkRows source rows by an
// ordered keyset walk of the source's key; each range is digested on both
// sides (see the digest note at the top of this file). Text key columns are
// compared in their own collation when both sides use the same one, and in
// "C" otherwise, so that a range selects the same keys on both sides. Other
// tables are compared whole. Each side of a table is read in one
// REPEATABLE READ READ ONLY transaction, so each side is self-consistent.
//
// With WaitLSN, Compare first waits until the target has caught up with the
// source (see Wait); ranges that differ are then compared again up to
// Rechecks times, in fresh snapshots, with growing pauses: a replica still
// catching up converges, a real difference persists and is reported.
func Compare(ctx context.Context, source, target *pgx.Conn, opts Options) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	v := &verifier{src: source, dst: target, opts: opts}
	for _, s := range []struct {
		name string
		conn *pgx.Conn
	}{{"source", source}, {"target", target}} {
		if _, err := s.conn.Exec(ctx, sessionSQL); err != nil {
			return nil, fmt.Errorf("set up %s session: %w", s.name, err)
		}
	}
	rep := &Report{}
	if opts.WaitLSN {
		w, err := v.wait(ctx)
		if err != nil {
			return nil, err
		}
		rep.Wait = w
	}

	all, err := listUserTables(ctx, source)
	if err != nil {
		return nil, err
	}
	tables := all
	if len(opts.Tables) > 0 {
		tables = nil
		for _, t := range opts.Tables {
			id, _ := schema.ParseTable(t) // validated
			tables = append(tables, id)
		}
	}
	if opts.Filter != nil {
		tables = slices.DeleteFunc(slices.Clone(tables), func(id pgx.Identifier) bool { return !opts.Filter.Table(id[0], id[1]) })
	}
	// What was left out is said, never silent: a filter from the
	// environment meant for capture narrows verify too.
	compared := map[string]bool{}
	for _, id := range tables {
		compared[id[0]+"."+id[1]] = true
	}
	for _, id := range all {
		if n := id[0] + "." + id[1]; !compared[n] {
			rep.NotCompared = append(rep.NotCompared, n)
		}
	}

	var pending []*pendingRange
	for _, id := range tables {
		verdict, diffs, err := v.table(ctx, id)
		if err != nil {
			return nil, err
		}
		rep.Tables = append(rep.Tables, verdict)
		for i, d := range diffs {
			d.verdict = len(rep.Tables) - 1
			if i >= maxRecheckRanges {
				d.final = true
			}
			pending = append(pending, d)
		}
	}
	if err := v.recheck(ctx, rep, pending); err != nil {
		return nil, err
	}

	rep.OK = true
	for i := range rep.Tables {
		t := &rep.Tables[i]
		t.OK = t.Missing == "" && len(t.Columns) == 0 && len(t.Ranges) == 0
		rep.OK = rep.OK && t.OK
	}
	return rep, nil
}

// sessionSQL makes both sides render values identically, whatever their
// own defaults.
const sessionSQL = `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres';
SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'`

type verifier struct {
	src, dst *pgx.Conn
	opts     Options
}

// querier is what a range query needs: a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// digest is the digest of one range on one side.
type digest struct {
	rows   int64
	hi, lo string // exact sums, as numeric text
}

// pendingRange is a differing range awaiting recheck.
type pendingRange struct {
	plan     *tablePlan
	verdict  int // index in the report
	index    int // position among the table's ranges
	r        keyRange
	src, dst digest
	final    bool // reported without recheck
}

// listUserTables lists the source's ordinary and partitioned tables
// outside system and pgjet schemas. Partitions are left out because their
// parent covers their rows, and a replica may partition differently.
func listUserTables(ctx context.Context, conn *pgx.Conn) ([]pgx.Identifier, error) {
	rows, err := conn.Query(ctx, `
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspname <> 'pgjet' AND n.nspname NOT LIKE 'pgjet\_%'
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgx.Identifier, error) {
		var schema, name string
		err := r.Scan(&schema, &name)
		return pgx.Identifier{schema, name}, err
	})
	if err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	return ids, nil
}

// column is one column of a relation as one side sees it.
type column struct {
	name, typ string
	// collation identifies the order of the column's collation: its
	// provider, locale, determinism and the version of the library that
	// sorts ("default" resolved to the database's, ICU or libc), "" for a
	// type without collation. Equal on both sides, the two order keys
	// alike.
	collation string
	notNull   bool
}

// relation is what Compare needs of a table on one side.
type relation struct {
	exists bool
	cols   []column
	pk     []string
	// replident is pg_class.relreplident; identity the columns of the
	// replica identity index under REPLICA IDENTITY USING INDEX ('i').
	replident string
	identity  []string
}

func (r *relation) col(name string) (column, bool) {
	for _, c := range r.cols {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

func describe(ctx context.Context, q querier, id pgx.Identifier) (relation, error) {
	var rel relation
	var oid *uint32
	if err := q.QueryRow(ctx, "SELECT to_regclass($1)::oid", id.Sanitize()).Scan(&oid); err != nil {
		return rel, err
	}
	if oid == nil {
		return rel, nil
	}
	rel.exists = true
	rows, err := q.Query(ctx, `
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(`+collationIdentity+`, '')
FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, *oid)
	if err != nil {
		return rel, err
	}
	rel.cols, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		err := r.Scan(&c.name, &c.typ, &c.notNull, &c.collation)
		return c, err
	})
	if err != nil {
		return rel, err
	}
	rows, err = q.Query(ctx, `
SELECT a.attname
FROM pg_index i
CROSS JOIN LATERAL generate_series(0, i.indnkeyatts - 1) AS s(n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[s.n]
WHERE i.indrelid = $1 AND i.indisprimary
ORDER BY s.n`, *oid)
	if err != nil {
		return rel, err
	}
	rel.pk, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return rel, err
	}
	err = q.QueryRow(ctx, `
SELECT c.relreplident::text, coalesce((SELECT array_agg(a.attname ORDER BY s.n)
	FROM pg_index i
	CROSS JOIN LATERAL generate_series(0, i.indnkeyatts - 1) AS s(n)
	JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[s.n]
	WHERE i.indrelid = c.oid AND i.indisreplident), '{}')
FROM pg_class c WHERE c.oid = $1`, *oid).Scan(&rel.replident, &rel.identity)
	return rel, err
}

// collationIdentity renders the identity of collation co (see
// column.collation): the default collation is the database's, whose
// provider may be ICU with datcollate still naming a libc locale. The
// locale columns are read through jsonb: their names changed in
// PostgreSQL 17 (colllocale, datlocale).
const collationIdentity = `CASE WHEN co.oid IS NULL THEN NULL
	WHEN co.collname = 'default' THEN (
		SELECT coalesce(j->>'datlocprovider', 'c') || ':' ||
			CASE WHEN j->>'datlocprovider' = 'i' THEN coalesce(j->>'daticulocale', j->>'datlocale') ELSE d.datcollate END ||
			':d:' || coalesce(pg_database_collation_actual_version(d.oid), '')
		FROM pg_database d, to_jsonb(d) j WHERE d.datname = current_database())
	ELSE co.collprovider::text || ':' ||
		CASE WHEN co.collprovider = 'i' THEN coalesce(to_jsonb(co)->>'colliculocale', to_jsonb(co)->>'colllocale') ELSE co.collcollate END ||
		CASE WHEN co.collisdeterministic THEN ':d:' ELSE ':n:' END || coalesce(pg_collation_actual_version(co.oid), '')
	END`

// table compares one table and returns its verdict and differing ranges.
func (v *verifier) table(ctx context.Context, id pgx.Identifier) (TableVerdict, []*pendingRange, error) {
	name := id[0] + "." + id[1]
	verdict := TableVerdict{Table: name}
	ro := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	stx, err := v.src.BeginTx(ctx, ro)
	if err != nil {
		return verdict, nil, fmt.Errorf("begin source transaction: %w", err)
	}
	defer stx.Rollback(context.WithoutCancel(ctx))
	dtx, err := v.dst.BeginTx(ctx, ro)
	if err != nil {
		return verdict, nil, fmt.Errorf("begin target transaction: %w", err)
	}
	defer dtx.Rollback(context.WithoutCancel(ctx))

	srel, err := describe(ctx, stx, id)
	if err != nil {
		return verdict, nil, fmt.Errorf("describe %s on the source: %w", name, err)
	}
	drel, err := describe(ctx, dtx, id)
	if err != nil {
		return verdict, nil, fmt.Errorf("describe %s on the target: %w", name, err)
	}
	switch {
	case !srel.exists:
		verdict.Missing = "source"
		return verdict, nil, nil
	case !drel.exists:
		verdict.Missing = "target"
		return verdict, nil, nil
	}
	if f := v.opts.Filter; f != nil {
		keep := func(c column) bool { return f.Column(id[0], id[1], c.name) }
		for _, c := range srel.cols {
			if !keep(c) {
				verdict.NotCompared = append(verdict.NotCompared, c.name)
			}
		}
		// Left out on both sides: a replica holds such a column empty,
		// or not at all.
		srel.cols = slices.DeleteFunc(srel.cols, func(c column) bool { return !keep(c) })
		drel.cols = slices.DeleteFunc(drel.cols, func(c column) bool { return !keep(c) })
	}
	plan, cdiffs := planTable(id, srel, drel)
	verdict.Columns = cdiffs
	verdict.Key = plan.keyNames()

	var diffs []*pendingRange
	compare := func(r keyRange) error {
		sd, dd, err := plan.digestBoth(ctx, stx, dtx, r)
		if err != nil {
			return err
		}
		verdict.Rows += sd.rows
		verdict.TargetRows += dd.rows
		if sd != dd {
			diffs = append(diffs, &pendingRange{plan: plan, index: verdict.Chunks, r: r, src: sd, dst: dd})
		}
		verdict.Chunks++
		if v.opts.Progress != nil {
			v.opts.Progress(Progress{Table: name, Rows: verdict.Rows, Chunks: verdict.Chunks})
		}
		return nil
	}
	var lo []string
	for {
		r := keyRange{lo: lo}
		if len(plan.key) > 0 {
			if r.hi, err = plan.boundary(ctx, stx, lo, v.opts.ChunkRows); err != nil {
				return verdict, nil, fmt.Errorf("walk the key of %s on the source: %w", name, err)
			}
		}
		if err := compare(r); err != nil {
			return verdict, nil, err
		}
		if r.hi == nil {
			break
		}
		lo = r.hi
	}
	if plan.nullKeys {
		// The rows no key range selects: a target without the source's
		// primary key may hold keys with a NULL.
		if err := compare(keyRange{nulls: true}); err != nil {
			return verdict, nil, err
		}
	}
	// Read-only: committing only ends the snapshots.
	if err := stx.Commit(ctx); err != nil {
		return verdict, nil, fmt.Errorf("end source transaction: %w", err)
	}
	if err := dtx.Commit(ctx); err != nil {
		return verdict, nil, fmt.Errorf("end target transaction: %w", err)
	}
	return verdict, diffs, nil
}

// recheck compares differing ranges again, in rounds separated by growing
// pauses, each range in a fresh snapshot on each side; what still differs
// is put in the report.
func (v *verifier) recheck(ctx context.Context, rep *Report, pending []*pendingRange) error {
	pause := v.opts.RecheckPause
	for round := 0; round < v.opts.Rechecks; round++ {
		var todo []*pendingRange
		for _, p := range pending {
			if !p.final {
				todo = append(todo, p)
			}
		}
		if len(todo) == 0 {
			break
		}
		if v.opts.Progress != nil {
			v.opts.Progress(Progress{Recheck: round + 1, Ranges: len(todo), Pause: pause})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause *= 2
		still := pending[:0:0]
		for _, p := range pending {
			if p.final {
				still = append(still, p)
				continue
			}
			sd, dd, err := p.plan.digestBoth(ctx, v.src, v.dst, p.r)
			if err != nil {
				return err
			}
			t := &rep.Tables[p.verdict]
			t.Rows += sd.rows - p.src.rows
			t.TargetRows += dd.rows - p.dst.rows
			p.src, p.dst = sd, dd
			if sd == dd {
				t.Converged++
				continue
			}
			still = append(still, p)
		}
		pending = still
	}
	for _, p := range pending {
		t := &rep.Tables[p.verdict]
		t.Ranges = append(t.Ranges, RangeDiff{
			After: p.r.lo, Through: p.r.hi, Range: p.plan.rangeLabel(p.r),
			SourceRows: p.src.rows, TargetRows: p.dst.rows,
		})
	}
	return nil
}

// keyCol is one primary key column as a range predicate uses it.
type keyCol struct {
	name, typ string
	// collateC forces COLLATE "C": the two sides' collations differ, and
	// only a collation both have orders keys alike on both.
	collateC bool
}

// tablePlan is how one table is compared: the columns of the row text and
// the key that cuts it into ranges (none: compared whole).
type tablePlan struct {
	id   pgx.Identifier
	cols []string
	key  []keyCol
	// nullKeys is set when a key column may be NULL on the target (it
	// lacks the source's primary key): key ranges select only keys
	// without a NULL, and one more range holds the others.
	nullKeys bool
	// recordKey are the columns by which a repair records the rows it
	// changes (appliedKey).
	recordKey []string
}

// keyRange is a range of a table's rows: those whose key is in (lo, hi],
// either bound optional (nil); or, with nulls, those whose key has a NULL.
type keyRange struct {
	lo, hi []string
	nulls  bool
}

// planTable compares the two sides' columns. Rows are compared over the
// columns both have, in the source's order. The source's primary key cuts
// ranges when every key column is on the target with the same type.
func planTable(id pgx.Identifier, src, dst relation) (*tablePlan, []ColumnDiff) {
	p := &tablePlan{id: id}
	var diffs []ColumnDiff
	for _, c := range src.cols {
		d, ok := dst.col(c.name)
		switch {
		case !ok:
			diffs = append(diffs, ColumnDiff{Column: c.name, SourceType: c.typ})
			continue
		case d.typ != c.typ:
			diffs = append(diffs, ColumnDiff{Column: c.name, SourceType: c.typ, TargetType: d.typ})
		}
		p.cols = append(p.cols, c.name)
	}
	for _, d := range dst.cols {
		if _, ok := src.col(d.name); !ok {
			diffs = append(diffs, ColumnDiff{Column: d.name, TargetType: d.typ})
		}
	}
	for _, k := range src.pk {
		s, _ := src.col(k)
		d, ok := dst.col(k)
		if !ok || d.typ != s.typ {
			p.key = nil
			break
		}
		p.key = append(p.key, keyCol{name: k, typ: s.typ, collateC: s.collation != d.collation})
		p.nullKeys = p.nullKeys || !d.notNull
	}
	if p.key == nil {
		p.nullKeys = false
	}
	return p, diffs
}

func (p *tablePlan) keyNames() []string {
	var ns []string
	for _, k := range p.key {
		ns = append(ns, k.name)
	}
	return ns
}

// keyExpr is key column i as the table's rows are ordered and compared.
func (p *tablePlan) keyExpr(i int) string {
	e := "t." + pgx.Identifier{p.key[i].name}.Sanitize()
	if p.key[i].collateC {
		e += ` COLLATE "C"`
	}
	return e
}

// keyTuple is the key of a row: the column itself for one column, a row
// constructor for several.
func (p *tablePlan) keyTuple() string {
	es := make([]string, len(p.key))
	for i := range p.key {
		es[i] = p.keyExpr(i)
	}
	if len(es) == 1 {
		return es[0]
	}
	return "(" + strings.Join(es, ", ") + ")"
}

// paramTuple is a key given as text parameters starting at $first, cast
// to the key's types.
func (p *tablePlan) paramTuple(first int) string {
	es := make([]string, len(p.key))
	for i, k := range p.key {
		es[i] = fmt.Sprintf("$%d::text::%s", first+i, k.typ)
	}
	if len(es) == 1 {
		return es[0]
	}
	return "(" + strings.Join(es, ", ") + ")"
}

// where is the condition selecting keys in (lo, hi], either bound
// optional, with lo's parameters first; "" for no condition.
func (p *tablePlan) where(hasLo, hasHi bool) string {
	var conds []string
	if p.nullKeys {
		for i := range p.key {
			conds = append(conds, "t."+pgx.Identifier{p.key[i].name}.Sanitize()+" IS NOT NULL")
		}
	}
	n := 1
	if hasLo {
		conds = append(conds, p.keyTuple()+" > "+p.paramTuple(n))
		n += len(p.key)
	}
	if hasHi {
		conds = append(conds, p.keyTuple()+" <= "+p.paramTuple(n))
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// digestSQL digests the rows in (lo, hi] (see the note at the top of the
// file): count, and the exact sums of both 64-bit halves of each row's md5.
// OFFSET 0 keeps the planner from inlining the subquery, which would
// compute each row's md5 once per half: twice the cost.
func (p *tablePlan) digestSQL(r keyRange) string {
	cols := make([]string, len(p.cols))
	for i, c := range p.cols {
		cols[i] = "t." + pgx.Identifier{c}.Sanitize()
	}
	where := p.where(r.lo != nil, r.hi != nil)
	if r.nulls {
		nulls := make([]string, len(p.key))
		for i := range p.key {
			nulls[i] = "t." + pgx.Identifier{p.key[i].name}.Sanitize() + " IS NULL"
		}
		where = " WHERE " + strings.Join(nulls, " OR ")
	}
	return "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0)::text, " +
		"coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)::text " +
		"FROM (SELECT md5(ROW(" + strings.Join(cols, ", ") + ")::text) AS h FROM " + p.id.Sanitize() + " t" +
		where + " OFFSET 0) s"
}

// boundarySQL finds the key of the n-th row after lo in key order, n given
// as the last parameter. An index on the key makes it read n index
// entries, so walking the whole table is linear.
func (p *tablePlan) boundarySQL(hasLo bool) string {
	sel := make([]string, len(p.key))
	ord := make([]string, len(p.key))
	for i, k := range p.key {
		sel[i] = "t." + pgx.Identifier{k.name}.Sanitize() + "::text"
		ord[i] = p.keyExpr(i)
	}
	n := 1
	if hasLo {
		n += len(p.key)
	}
	return "SELECT " + strings.Join(sel, ", ") + " FROM " + p.id.Sanitize() + " t" + p.where(hasLo, false) +
		" ORDER BY " + strings.Join(ord, ", ") + fmt.Sprintf(" OFFSET $%d::bigint - 1 LIMIT 1", n)
}

// boundary returns the key ending the range that starts after lo and holds
// n source rows, or nil when fewer than n rows follow lo.
func (p *tablePlan) boundary(ctx context.Context, q querier, lo []string, n int64) ([]string, error) {
	args := make([]any, 0, len(lo)+1)
	for _, s := range lo {
		args = append(args, s)
	}
	args = append(args, n)
	vals := make([]string, len(p.key))
	dest := make([]any, len(vals))
	for i := range vals {
		dest[i] = &vals[i]
	}
	err := q.QueryRow(ctx, p.boundarySQL(lo != nil), args...).Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return vals, nil
}

func (p *tablePlan) digest(ctx context.Context, q querier, r keyRange) (digest, error) {
	args := make([]any, 0, len(r.lo)+len(r.hi))
	for _, s := range r.lo {
		args = append(args, s)
	}
	for _, s := range r.hi {
		args = append(args, s)
	}
	var d digest
	err := q.QueryRow(ctx, p.digestSQL(r), args...).Scan(&d.rows, &d.hi, &d.lo)
	return d, err
}

// digestBoth digests the range on both sides at once.
func (p *tablePlan) digestBoth(ctx context.Context, src, dst querier, r keyRange) (digest, digest, error) {
	var sd, dd digest
	g, gctx := errgroup.WithContext(ctx)
	table := p.id[0] + "." + p.id[1]
	g.Go(func() (err error) {
		if sd, err = p.digest(gctx, src, r); err != nil {
			return fmt.Errorf("digest %s %s on the source: %w", table, p.rangeLabel(r), err)
		}
		return nil
	})
	g.Go(func() (err error) {
		if dd, err = p.digest(gctx, dst, r); err != nil {
			return fmt.Errorf("digest %s %s on the target: %w", table, p.rangeLabel(r), err)
		}
		return nil
	})
	err := g.Wait()
	return sd, dd, err
}

var plainValue = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// literal shows a key value: numbers as they are, anything else quoted.
func literal(s string) string {
	if plainValue.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func (p *tablePlan) tupleLabel(vals []string) string {
	ls := make([]string, len(vals))
	for i, s := range vals {
		ls[i] = literal(s)
	}
	if len(ls) == 1 {
		return ls[0]
	}
	return "(" + strings.Join(ls, ", ") + ")"
}

// rangeLabel describes a range for people: "id <= 1000",
// "id in (1000, 2000]", "(a, b) > (1, 'x')", "all rows" or "rows with a
// NULL key".
func (p *tablePlan) rangeLabel(r keyRange) string {
	lo, hi := r.lo, r.hi
	switch {
	case r.nulls:
		return "rows with a NULL key"
	case len(p.key) == 0 || (lo == nil && hi == nil):
		return "all rows"
	}
	key := strings.Join(p.keyNames(), ", ")
	if len(p.key) > 1 {
		key = "(" + key + ")"
	}
	switch {
	case lo == nil:
		return key + " <= " + p.tupleLabel(hi)
	case hi == nil:
		return key + " > " + p.tupleLabel(lo)
	}
	return key + " in (" + p.tupleLabel(lo) + ", " + p.tupleLabel(hi) + "]"
}

// wait waits until the target has applied what the source committed
// before the wait began. See Wait and cmd/pgjet/VERIFY.md.
//
// L is the source's pg_current_wal_lsn() when the wait begins, and E the
// source position the target caught up to (pgjet.applied.source_lsn: the
// end of the last applied transaction, moved on by heartbeats the applier
// passed; end_lsn on targets without it), written in the same target
// transaction as the rows. The target has caught up when
//
//   - E >= L: every transaction committed before L ends at or before L, and
//     transactions are applied in commit order; or
//   - the source's slot pgjet_<name> has confirmed a position >= L (capture
//     has published, and JetStream acknowledged, everything before L) and E
//     has not moved for Settle: the applier has nothing left to apply. This
//     is what ends the wait on an idle source, whose WAL moves on (capture's
//     heartbeats) while E, which only transactions move, stays behind L.
//     Without such a slot on the source, E standing still is taken alone.
func (v *verifier) wait(ctx context.Context) (*Wait, error) {
	start := time.Now()
	w := &Wait{}
	has, err := applied.Exists(ctx, v.dst)
	if err != nil {
		return nil, fmt.Errorf("look for pgjet.applied on the target: %w", err)
	}
	if !has {
		w.Skipped = "the target has no pgjet.applied table: not a pgjet replica, compared without waiting"
		return w, nil
	}
	name, err := v.sourceName(ctx)
	if err != nil {
		return nil, err
	}
	w.Source = name
	var l string
	if err := v.src.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&l); err != nil {
		return nil, fmt.Errorf("read the source's WAL position: %w", err)
	}
	w.SourceLSN = l
	target, err := pglogrepl.ParseLSN(l)
	if err != nil {
		return nil, fmt.Errorf("source WAL position %q: %w", l, err)
	}

	var deadline <-chan time.Time
	if v.opts.WaitTimeout > 0 {
		t := time.NewTimer(v.opts.WaitTimeout)
		defer t.Stop()
		deadline = t.C
	}
	var last pglogrepl.LSN
	still := time.Now()
	for first := true; ; first = false {
		e, err := v.applied(ctx, name)
		if err != nil {
			return nil, err
		}
		w.AppliedLSN = e.String()
		if e >= target {
			break
		}
		if first || e != last {
			last, still = e, time.Now()
		}
		if time.Since(still) >= v.opts.Settle {
			confirmed, ok, err := v.slotConfirmed(ctx, name)
			if err != nil {
				return nil, err
			}
			if !ok || confirmed >= target {
				w.Idle = true
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, pgerr.Fatalf(nil, "the target has not caught up with the source after %s: it applied up to %s of source %q, the source's WAL was at %s; check that pgjet-capture and pgjet-apply run (or compare without waiting: --wait-lsn=false)",
				v.opts.WaitTimeout, e, name, l)
		case <-time.After(200 * time.Millisecond):
		}
	}
	w.Seconds = time.Since(start).Seconds()
	return w, nil
}

// applied reads the target's applied end LSN for source name; 0/0 when
// nothing was applied yet. It is the position's SourceLSN: source_lsn
// moves with heartbeats too, so on an idle source E still reaches L
// exactly.
func (v *verifier) applied(ctx context.Context, name string) (pglogrepl.LSN, error) {
	p, _, err := applied.ReadSource(ctx, v.dst, name)
	if err != nil {
		return 0, fmt.Errorf("read the target's applied position: %w", err)
	}
	return pglogrepl.LSN(p.SourceLSN), nil
}

// slotConfirmed reads the confirmed position of the source's slot
// pgjet_<name>; ok is false when there is no such slot.
func (v *verifier) slotConfirmed(ctx context.Context, name string) (lsn pglogrepl.LSN, ok bool, err error) {
	var s *string
	err = v.src.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
		"pgjet_"+name).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && s == nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read the source's slot pgjet_%s: %w", name, err)
	}
	lsn, err = pglogrepl.ParseLSN(*s)
	if err != nil {
		return 0, false, fmt.Errorf("slot pgjet_%s position %q: %w", name, *s, err)
	}
	return lsn, true, nil
}

// sourceName picks the pgjet source whose applied position is waited on:
// the one given, else the target's only one, else the one whose slot is
// on the source.
func (v *verifier) sourceName(ctx context.Context) (string, error) {
	if v.opts.SourceName != "" {
		return v.opts.SourceName, nil
	}
	positions, err := applied.Read(ctx, v.dst)
	if err != nil {
		return "", fmt.Errorf("read the target's pgjet.applied: %w", err)
	}
	var sources []string
	for _, p := range positions {
		sources = append(sources, p.Source)
	}
	if len(sources) == 1 {
		return sources[0], nil
	}
	// Only a source's stream slot names a source: a snapshot's slot
	// (pgjet_<name>_snap_<8 hex>, see capture/snapshot.go) is temporary and
	// lives only while capture copies the tables.
	rows, err := v.src.Query(ctx, `SELECT substr(slot_name, 7) FROM pg_replication_slots
WHERE slot_name LIKE 'pgjet\_%' AND slot_name !~ '_snap_[0-9a-f]{8}$' AND NOT temporary
  AND plugin = 'pgoutput' AND database = current_database() ORDER BY 1`)
	if err != nil {
		return "", fmt.Errorf("list the source's pgjet slots: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("list the source's pgjet slots: %w", err)
	}
	var both []string
	for _, s := range slots {
		if len(sources) == 0 {
			both = append(both, s)
			continue
		}
		for _, a := range sources {
			if a == s {
				both = append(both, s)
			}
		}
	}
	switch {
	case len(both) == 1:
		return both[0], nil
	case len(sources) == 0 && len(slots) == 0:
		return "", nil // nothing applied, no slot: only a still position can end the wait
	}
	return "", pgerr.Fatalf(nil, "cannot tell which pgjet source feeds the target (applied: %s; source slots: %s): pass --name SOURCE",
		listOrNone(sources), listOrNone(slots))
}

func listOrNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}
