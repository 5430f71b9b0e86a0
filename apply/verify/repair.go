package verify

// Repair rewrites the key ranges Compare found different: the target's rows
// of each range are made the source's, row by row (missing ones inserted,
// differing ones updated, extra ones deleted), and each row changed is
// left in RepairedTable for the caller to record.
//
// Concurrency with a running applier. Each range is repaired in one target
// transaction that first locks the target's rows of the range (FOR
// UPDATE), and only then reads the source's rows, with one COPY (a
// snapshot taken after the locks). So:
//
//   - every source transaction the applier committed to those rows before
//     the locks committed on the source before the read: the value written
//     is at least as new as the target's, never older;
//   - the applier cannot write those rows between the read and the commit
//     (it waits for the locks), and what it applies after the commit is the
//     stream after its position, in order: changes older than the read
//     are applied again over the newer value, and the stream's later ones
//     bring the row back to the source's, as a replica catching up does;
//   - a row the range lacks cannot be locked: it is inserted with ON
//     CONFLICT DO NOTHING, so a row the applier inserted meanwhile is kept
//     and followed by the stream.
//
// The repair transaction is stamped (RepairOptions.Stamp) with the source's
// time just before the read, less a margin, so that under last-writer-wins
// the changes the read holds lose against the repaired row and those after
// it win.

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
)

// RepairedTable is the temporary table, dropped at commit, in which a repair
// transaction lists the rows it changed: table_name ("schema.name"), op
// (insert, update, delete), key (jsonb of the columns pgjet-apply finds
// the row by: appliedKey), old and new (jsonb of the row before and after;
// NULL for an insert's old and a delete's new).
const RepairedTable = "pg_temp.pgjet_repaired"

// RepairStampMargin is how far before its source read a repair transaction
// is stamped: a source transaction whose commit time lies before the read
// but that was not visible to it yet (its commit record written, its
// visibility not yet) still wins over the repaired row.
const RepairStampMargin = time.Second

// RepairOptions are what Repair asks of its caller, which knows pgjet's
// own tables and origins.
type RepairOptions struct {
	// Stamp is called in each repair transaction on the target before its
	// rows are written, with the source's WAL position just after the
	// source's rows were read and its time just before (less
	// RepairStampMargin).
	Stamp func(ctx context.Context, tx pgx.Tx, lsn string, at time.Time) error
	// Record is called in each repair transaction after its rows are
	// written, to record those RepairedTable lists.
	Record func(ctx context.Context, tx pgx.Tx, lsn string, at time.Time) error
	// Retries is how often a range is repaired again after a deadlock or a
	// serialization failure (with the applier's transactions).
	Retries int
}

// RepairReport says what Repair changed.
type RepairReport struct {
	Tables []TableRepair `json:"tables"`
	// Warnings say what the repair ran without; the caller fills them.
	Warnings []string `json:"warnings,omitempty"`
}

// TableRepair is what Repair did to one table.
type TableRepair struct {
	Table    string `json:"table"`
	Ranges   int    `json:"ranges"`
	Inserted int64  `json:"inserted"`
	Updated  int64  `json:"updated"`
	Deleted  int64  `json:"deleted"`
	// NotRepaired says why the table, or a part of it, was not repaired.
	NotRepaired string `json:"not_repaired,omitempty"`
}

// Summary is the repair of a table in one line.
func (r TableRepair) Summary() string {
	s := fmt.Sprintf("%s: %d inserted, %d updated, %d deleted in %d ranges", r.Table, r.Inserted, r.Updated, r.Deleted, r.Ranges)
	if r.Ranges == 0 {
		s = r.Table + ":"
	}
	if r.NotRepaired != "" {
		s += "; not repaired: " + r.NotRepaired
	}
	return s
}

// Repair rewrites, on target, the rows of the ranges rep (a Compare report
// made with opts) found different, from source; see the note at the top of
// the file. The connections are those Compare used. It returns an error when
// a range cannot be repaired; what it repaired before stays repaired.
func Repair(ctx context.Context, source, target *pgx.Conn, rep *Report, opts Options, ropts RepairOptions) (*RepairReport, error) {
	out := &RepairReport{}
	for _, t := range rep.Tables {
		if t.OK {
			continue
		}
		tr := TableRepair{Table: t.Table}
		switch {
		case t.Missing != "":
			tr.NotRepaired = "the table is missing on the " + t.Missing + "; create it as on the source"
		case len(t.Columns) > 0:
			tr.NotRepaired = "its columns differ; make them match the source by hand, then run verify --repair again"
		case len(t.Key) == 0:
			tr.NotRepaired = "it has no primary key (on the source, or the same on the target): a row without a key cannot be told from its duplicates; re-copy it"
		default:
			if err := repairTable(ctx, source, target, t, opts, ropts, &tr); err != nil {
				return out, err
			}
		}
		out.Tables = append(out.Tables, tr)
	}
	return out, nil
}

// repairTable repairs the differing ranges of table t.
func repairTable(ctx context.Context, source, target *pgx.Conn, t TableVerdict, opts Options, ropts RepairOptions, tr *TableRepair) error {
	id, err := schema.ParseTable(t.Table)
	if err != nil {
		return err
	}
	srel, err := describe(ctx, source, id)
	if err != nil {
		return fmt.Errorf("describe %s on the source: %w", t.Table, err)
	}
	drel, err := describe(ctx, target, id)
	if err != nil {
		return fmt.Errorf("describe %s on the target: %w", t.Table, err)
	}
	if f := opts.Filter; f != nil {
		left := func(c column) bool { return !f.Column(id[0], id[1], c.name) }
		srel.cols = slices.DeleteFunc(srel.cols, left)
		drel.cols = slices.DeleteFunc(drel.cols, left)
	}
	p, cdiffs := planTable(id, srel, drel)
	if len(cdiffs) > 0 || len(p.key) == 0 || !srel.exists || !drel.exists {
		tr.NotRepaired = "the table changed since it was compared; run verify --repair again"
		return nil
	}
	w, err := writable(ctx, target, id, p.cols)
	if err != nil {
		return fmt.Errorf("read the columns of %s on the target: %w", t.Table, err)
	}
	w.upsert = slices.Equal(srel.pk, drel.pk)
	p.recordKey = appliedKey(srel, drel, p.keyNames())
	for _, r := range t.Ranges {
		if r.After == nil && r.Through == nil && r.Range == "rows with a NULL key" {
			tr.NotRepaired = "rows with a NULL key on the target (it lacks the source's primary key): delete them by hand"
			continue
		}
		kr := keyRange{lo: r.After, hi: r.Through}
		for attempt := 0; ; attempt++ {
			err = p.repairRange(ctx, source, target, kr, w, ropts, tr)
			if err == nil || attempt >= ropts.Retries || !retryableRepair(err) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("repair %s %s: %w", t.Table, p.rangeLabel(kr), err)
		}
		tr.Ranges++
	}
	return nil
}

// appliedKey lists the columns by which pgjet-apply finds the rows of a
// table whose source is src and target dst (apply's newPlan): the source's
// replica identity index, or under REPLICA IDENTITY FULL the target's
// primary key, else the primary key pk. The repair records the key of
// each row it changes by them, so that the applier, meeting a change of a
// row the repair deleted, finds the record (apply's repairedAway).
func appliedKey(src, dst relation, pk []string) []string {
	var key []string
	switch src.replident {
	case "i":
		key = src.identity
	case "f":
		key = dst.pk
	}
	for _, k := range key {
		if _, ok := dst.col(k); !ok {
			return pk
		}
	}
	if len(key) == 0 {
		return pk
	}
	return key
}

// retryableRepair reports whether a range whose repair failed with err
// can be repaired again: it met the applier's transactions in a deadlock
// or a serialization failure, and was rolled back.
func retryableRepair(err error) bool {
	c := pgerr.PgCode(err)
	return c == "40P01" || c == "40001"
}

// writes are the columns a repair writes on the target.
type writes struct {
	// insert are the columns an INSERT gives values (not generated);
	// update those an UPDATE sets (not generated, not GENERATED ALWAYS
	// identity, not key).
	insert, update []string
	// upsert is set when the target's primary key is the source's: an
	// insert meeting a row inserted meanwhile leaves it (ON CONFLICT).
	upsert bool
}

// writable reads which of cols the target lets a repair write.
func writable(ctx context.Context, target *pgx.Conn, id pgx.Identifier, cols []string) (writes, error) {
	var w writes
	rows, err := target.Query(ctx, `SELECT a.attname, a.attgenerated <> '', a.attidentity = 'a',
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey))
		FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY ($2)
		ORDER BY a.attnum`, id.Sanitize(), cols)
	if err != nil {
		return w, err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var generated, always, key bool
		if err := rows.Scan(&name, &generated, &always, &key); err != nil {
			return w, err
		}
		if generated {
			continue
		}
		w.insert = append(w.insert, name)
		if !always && !key {
			w.update = append(w.update, name)
		}
	}
	return w, rows.Err()
}

// repairRange repairs range r in one target transaction; see the note at
// the top of the file.
func (p *tablePlan) repairRange(ctx context.Context, source, target *pgx.Conn, r keyRange, w writes, ropts RepairOptions, tr *TableRepair) error {
	tx, err := target.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin target transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	where := p.literalWhere(r)
	qt := p.id.Sanitize()
	cols := make([]string, len(p.cols))
	for i, c := range p.cols {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	list := strings.Join(cols, ", ")
	keys := make([]string, len(p.key))
	for i, k := range p.key {
		keys[i] = pgx.Identifier{k.name}.Sanitize()
	}
	if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE pgjet_repair ON COMMIT DROP AS SELECT "+list+" FROM "+qt+" WITH NO DATA; "+
		"CREATE TEMPORARY TABLE pgjet_locked ON COMMIT DROP AS SELECT "+strings.Join(keys, ", ")+" FROM "+qt+" WITH NO DATA; "+
		"CREATE TEMPORARY TABLE pgjet_repaired (table_name text, op text, key jsonb, old jsonb, new jsonb) ON COMMIT DROP"); err != nil {
		return fmt.Errorf("create the temporary tables of the repair: %w", err)
	}
	// The target's rows of the range, locked before the source is read.
	// Only these are updated or deleted: a row the applier inserts into
	// the range meanwhile may be newer than the read, and is left to the
	// stream.
	if _, err := tx.Exec(ctx, "INSERT INTO pg_temp.pgjet_locked SELECT "+prefixed("t", keys)+" FROM "+qt+" t"+where+" FOR UPDATE OF t"); err != nil {
		return fmt.Errorf("lock the target's rows: %w", err)
	}
	var at time.Time
	if err := source.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&at); err != nil {
		return fmt.Errorf("read the source's time: %w", err)
	}
	at = at.Add(-RepairStampMargin)
	if err := copyRows(ctx, source, tx, "COPY (SELECT "+list+" FROM "+qt+" t"+where+") TO STDOUT", "COPY pg_temp.pgjet_repair ("+list+") FROM STDIN"); err != nil {
		return err
	}
	// The position after the read: every source transaction the read saw
	// committed before it (its commit record inserted before it became
	// visible, also under synchronous_commit = off). An applier passes over
	// a change to a row the repair deleted when it committed before this.
	var lsn string
	if err := source.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return fmt.Errorf("read the source's position: %w", err)
	}
	if ropts.Stamp != nil {
		if err := ropts.Stamp(ctx, tx, lsn, at); err != nil {
			return err
		}
	}

	keyEq := func(a, b string) string {
		var eq []string
		for _, k := range p.key {
			n := pgx.Identifier{k.name}.Sanitize()
			eq = append(eq, a+"."+n+" = "+b+"."+n)
		}
		return strings.Join(eq, " AND ")
	}
	keyJSON := func(a string) string {
		var kv []string
		for _, k := range p.recordKey {
			kv = append(kv, "'"+strings.ReplaceAll(k, "'", "''")+"', "+a+"."+pgx.Identifier{k}.Sanitize())
		}
		return "jsonb_build_object(" + strings.Join(kv, ", ") + ")"
	}
	name := "'" + strings.ReplaceAll(p.id[0]+"."+p.id[1], "'", "''") + "'"
	record := func(op, cte string) string {
		return " INSERT INTO " + RepairedTable + " (table_name, op, key, old, new) SELECT " + name + ", '" + op + "', k, o, n FROM " + cte
	}
	row := func(a string) string {
		rc := make([]string, len(cols))
		for i, c := range cols {
			rc[i] = a + "." + c
		}
		return "ROW(" + strings.Join(rc, ", ") + ")::text"
	}
	var n [3]int64
	stmts := []string{
		"WITH d AS (DELETE FROM " + qt + " t USING pg_temp.pgjet_locked l WHERE " + keyEq("l", "t") +
			" AND NOT EXISTS (SELECT 1 FROM pg_temp.pgjet_repair s WHERE " + keyEq("s", "t") + ") " +
			"RETURNING " + keyJSON("t") + " AS k, to_jsonb(t) AS o, NULL::jsonb AS n)" + record("delete", "d"),
		"",
		"",
	}
	if len(w.update) > 0 {
		set := make([]string, len(w.update))
		for i, c := range w.update {
			q := pgx.Identifier{c}.Sanitize()
			set[i] = q + " = s." + q
		}
		stmts[1] = "WITH u AS (UPDATE " + qt + " t SET " + strings.Join(set, ", ") +
			" FROM (SELECT s.*, to_jsonb(o) AS pgjet_old FROM pg_temp.pgjet_repair s JOIN pg_temp.pgjet_locked l ON " + keyEq("s", "l") +
			" JOIN " + qt + " o ON " + keyEq("l", "o") +
			" WHERE " + row("o") + " IS DISTINCT FROM " + row("s") + ") s WHERE " + keyEq("t", "s") +
			" RETURNING " + keyJSON("t") + " AS k, s.pgjet_old AS o, to_jsonb(t) AS n)" + record("update", "u")
	}
	ins := make([]string, len(w.insert))
	for i, c := range w.insert {
		ins[i] = pgx.Identifier{c}.Sanitize()
	}
	conflict := ""
	if w.upsert {
		conflict = " ON CONFLICT (" + strings.Join(keys, ", ") + ") DO NOTHING"
	}
	stmts[2] = "WITH i AS (INSERT INTO " + qt + " AS t (" + strings.Join(ins, ", ") + ") OVERRIDING SYSTEM VALUE SELECT " + prefixed("s", ins) +
		" FROM pg_temp.pgjet_repair s WHERE NOT EXISTS (SELECT 1 FROM " + qt + " o WHERE " + keyEq("o", "s") + ")" + conflict +
		" RETURNING " + keyJSON("t") + " AS k, NULL::jsonb AS o, to_jsonb(t) AS n)" + record("insert", "i")
	for i, st := range stmts {
		if st == "" {
			continue
		}
		tag, err := tx.Exec(ctx, st)
		if err != nil {
			return fmt.Errorf("%s rows: %w", []string{"delete", "update", "insert"}[i], err)
		}
		n[i] = tag.RowsAffected()
	}
	if ropts.Record != nil && n[0]+n[1]+n[2] > 0 {
		if err := ropts.Record(ctx, tx, lsn, at); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	tr.Deleted += n[0]
	tr.Updated += n[1]
	tr.Inserted += n[2]
	return nil
}

// prefixed lists quoted columns as alias.column.
func prefixed(alias string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = alias + "." + c
	}
	return strings.Join(out, ", ")
}

// literalWhere is where(r) with the bounds written in as literals: COPY
// takes no parameters.
func (p *tablePlan) literalWhere(r keyRange) string {
	vals := append(slices.Clone(r.lo), r.hi...)
	// In one pass: a value written in may itself read "$1::".
	return paramRef.ReplaceAllStringFunc(p.where(r.lo != nil, r.hi != nil), func(m string) string {
		n, _ := strconv.Atoi(m[1 : len(m)-2])
		return sqlString(vals[n-1]) + "::"
	})
}

// paramRef is a parameter of where, as it is cast.
var paramRef = regexp.MustCompile(`\$[0-9]+::`)

// sqlString quotes s as a string literal, whatever
// standard_conforming_strings says.
func sqlString(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// copyRows copies the rows of a COPY ... TO STDOUT on source into a COPY
// ... FROM STDIN in tx, streaming: no more than a pipe's buffer is held.
func copyRows(ctx context.Context, source *pgx.Conn, tx pgx.Tx, out, in string) error {
	pr, pw := io.Pipe()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := source.PgConn().CopyTo(gctx, pw, out)
		pw.CloseWithError(err)
		if err != nil {
			return fmt.Errorf("read the source's rows: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		_, err := tx.Conn().PgConn().CopyFrom(gctx, pr, in)
		pr.CloseWithError(err)
		if err != nil {
			return fmt.Errorf("load the source's rows on the target: %w", err)
		}
		return nil
	})
	return g.Wait()
}
