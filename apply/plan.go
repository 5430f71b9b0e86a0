package apply

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// target is a table on the target database.
type target struct {
	schema, name string
	qname        string // quoted, schema-qualified
	cols         map[string]targetCol
	uniques      [][]string // column sets of the primary key and unique indexes
	nullsEqual   []bool     // per unique index: NULLS NOT DISTINCT
	pk           []string
}

type targetCol struct {
	typ       uint32
	generated bool
	// always is an identity column GENERATED ALWAYS: inserts need
	// OVERRIDING SYSTEM VALUE and updates may not set it.
	always bool
}

// plan binds a source relation (as one envelope describes it) to a target
// table: which target column each source column fills and how rows are
// found. Plans are cached by the relation's description.
type plan struct {
	t      *target
	rel    stream.Relation
	oids   []uint32 // target type of each source column
	keys   []int    // source columns that find a row; nil with fullMatch
	upsert bool     // keys are covered by a unique index on the target
	// fullMatch finds rows by every old column (identity FULL without a
	// usable key on the target).
	fullMatch bool
	// overriding is set when the target has a GENERATED ALWAYS identity
	// column: the source's values are kept, as native replication does.
	overriding bool
	always     []bool            // per source column: GENERATED ALWAYS identity on the target
	runs       map[string]runSQL // shape and row count → run statement
	// policy resolves conflicts on this table; cx describes the session's
	// origin and commit timestamps (nil: neither).
	policy Policy
	cx     *conflictEnv
}

func relationKey(r *stream.Relation) string {
	var b strings.Builder
	b.WriteString(r.Schema)
	b.WriteByte(0)
	b.WriteString(r.Name)
	b.WriteByte(0)
	b.WriteByte(r.Identity)
	for _, c := range r.Columns {
		b.WriteByte(0)
		b.WriteString(c.Name)
		if c.Key {
			b.WriteByte(1)
		}
	}
	return b.String()
}

// loadTarget reads a table's columns and unique keys from the target catalog.
func loadTarget(ctx context.Context, conn *pgx.Conn, schemaName, name string) (*target, error) {
	t := &target{schema: schemaName, name: name, qname: pgx.Identifier{schemaName, name}.Sanitize(), cols: map[string]targetCol{}}
	rows, err := conn.Query(ctx, `
		SELECT a.attname, a.atttypid, a.attgenerated <> '', a.attidentity = 'a'
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, schemaName, name)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t.qname, err)
	}
	for rows.Next() {
		var col string
		var c targetCol
		if err := rows.Scan(&col, &c.typ, &c.generated, &c.always); err != nil {
			return nil, err
		}
		t.cols[col] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", t.qname, err)
	}
	if len(t.cols) == 0 {
		return nil, nil
	}
	rows, err = conn.Query(ctx, `
		SELECT i.indisprimary, array_agg(a.attname ORDER BY k.ord),
			bool_or(coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::bool, false))
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indimmediate
		GROUP BY i.indexrelid, i.indisprimary`, schemaName, name)
	if err != nil {
		return nil, fmt.Errorf("read unique indexes of %s: %w", t.qname, err)
	}
	for rows.Next() {
		var primary, nullsEqual bool
		var cols []string
		if err := rows.Scan(&primary, &cols, &nullsEqual); err != nil {
			return nil, err
		}
		t.uniques = append(t.uniques, cols)
		t.nullsEqual = append(t.nullsEqual, nullsEqual)
		if primary {
			t.pk = cols
		}
	}
	return t, rows.Err()
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return true
}

// newPlan checks that the target can hold what the source sends and
// decides how rows are found.
func newPlan(t *target, rel *stream.Relation) (*plan, error) {
	p := &plan{t: t, rel: *rel}
	p.rel.Columns = append([]stream.Column(nil), rel.Columns...)
	p.oids = make([]uint32, len(rel.Columns))
	idx := map[string]int{}
	for i, c := range rel.Columns {
		tc, ok := t.cols[c.Name]
		if !ok {
			return nil, pgerr.Fatalf(nil, "column %q of table %s.%s is missing on the target: add it (ALTER TABLE %s ADD COLUMN %s %s) and restart pgjet-apply",
				c.Name, rel.Schema, rel.Name, t.qname, pgx.Identifier{c.Name}.Sanitize(), c.Type)
		}
		if tc.generated {
			return nil, pgerr.Fatalf(nil, "column %q of table %s.%s is generated on the target but not on the source: make the schemas match", c.Name, rel.Schema, rel.Name)
		}
		p.oids[i] = tc.typ
		idx[c.Name] = i
		if tc.always {
			p.overriding = true
		}
	}
	p.always = make([]bool, len(rel.Columns))
	for i, c := range rel.Columns {
		p.always[i] = t.cols[c.Name].always
	}
	var keyNames []string
	for i, c := range rel.Columns {
		if c.Key {
			p.keys = append(p.keys, i)
			keyNames = append(keyNames, c.Name)
		}
	}
	if rel.Identity == stream.IdentityFull {
		// Every column is flagged as key under FULL: prefer the target's
		// primary key when the source sends all of its columns.
		p.keys, keyNames = nil, nil
		for _, col := range t.pk {
			i, ok := idx[col]
			if !ok {
				p.keys, keyNames = nil, nil
				break
			}
			p.keys = append(p.keys, i)
			keyNames = append(keyNames, col)
		}
		p.fullMatch = len(p.keys) == 0
	}
	for _, u := range t.uniques {
		if len(keyNames) > 0 && sameSet(u, keyNames) {
			p.upsert = true
		}
	}
	return p, nil
}

// shape is the cache key of one statement form: the operation and which
// values are unchanged TOAST (they are left out of the statement). NULL
// travels as a parameter like any value: a key per NULL pattern would
// prepare up to 2^columns statements for one table.
func shape(op stream.Op, ch *stream.Change) string {
	kind := func(v stream.Value) byte {
		if v.Kind == stream.ValueUnchanged {
			return 'u'
		}
		return 'v'
	}
	var b []byte
	b = append(b, byte(op))
	for _, v := range ch.New {
		b = append(b, kind(v))
	}
	b = append(b, '|')
	if op == stream.OpUpdate && ch.Old != nil {
		b = append(b, 'o')
	}
	if op != stream.OpInsert {
		for _, v := range ch.Old {
			b = append(b, kind(v))
		}
	}
	return string(b)
}

// statement builds the SQL of a change of this plan's shape. The
// parameter order matches args().
func (p *plan) statement(source string, ch *stream.Change) (string, []uint32) {
	if p.policy != PolicySourceWins && (ch.Op != stream.OpInsert || p.insertLogs(ch)) {
		return p.policyStatement(source, ch)
	}
	switch ch.Op {
	case stream.OpInsert:
		return p.insertStatement(source)
	case stream.OpUpdate, stream.OpDelete:
		return p.changeStatement(source, ch)
	}
	return "", nil
}

// insertStatement builds the source-wins insert: an upsert when the key
// has a unique index, which records the row it overwrites.
func (p *plan) insertStatement(source string) (string, []uint32) {
	var sb sqlBuilder
	all := p.allColumns()
	vals := p.params(&sb, all)
	ins := p.insertInto(all) + " VALUES (" + commas(vals) + ")"
	if !p.upsert {
		return ins, sb.oids
	}
	rec := newConflictSQL(source, &p.rel, sb.param(0)+"::pg_lsn", sb.param(timestamptzOID))
	name, lts, join := p.env(source).writer("pgjet_old.x")
	var w with
	w.add("pgjet_old", "SELECT to_jsonb(t) AS j, t.xmin AS x FROM "+p.t.qname+" t WHERE "+p.match("t", p.keys, vals))
	w.add("pgjet_ins", ins+" ON CONFLICT ("+commas(p.colNames(p.keys))+") "+p.upsertAction()+" RETURNING 1")
	return w.then(insertConflicts("", rec.record("insert_exists", p.jsonOf(p.keys, vals), "pgjet_old.j", p.jsonOf(all, vals), "'apply_remote'", name, lts, "FROM pgjet_old"+join))), sb.oids
}

// changeStatement builds the source-wins update or delete: a missing row
// is recorded, and an update that sends the whole row inserts it.
func (p *plan) changeStatement(source string, ch *stream.Change) (string, []uint32) {
	var sb sqlBuilder
	// New values first (update), then what finds the row.
	var set []int
	if ch.Op == stream.OpUpdate {
		set = sentColumns(ch.New)
	}
	vals := p.params(&sb, set)
	f := p.finder(&sb, ch)
	where := f.on("t")
	if p.fullMatch {
		// Without a key, duplicates are indistinguishable: change
		// exactly one of them, as the source did.
		where = "t.ctid = (SELECT t2.ctid FROM " + p.t.qname + " t2 WHERE " + f.on("t2") + " LIMIT 1)"
	}
	rec := newConflictSQL(source, &p.rel, sb.param(0)+"::pg_lsn", sb.param(timestamptzOID))
	var w with
	if ch.Op == stream.OpDelete {
		w.add("pgjet_del", "DELETE FROM "+p.t.qname+" t WHERE "+where+" RETURNING 1")
		return w.then(insertConflicts("", rec.record("delete_missing", f.key(), "NULL", "NULL", "'skip'", "NULL", "NULL", "WHERE NOT EXISTS (SELECT 1 FROM pgjet_del)"))), sb.oids
	}
	sets := p.updateSets(set, vals)
	w.add("pgjet_upd", "UPDATE "+p.t.qname+" t SET "+sets+" WHERE "+where+" RETURNING 1")
	decision := "'skip'"
	if len(set) == len(p.rel.Columns) && !p.fullMatch {
		// The source wins: a row missing here is inserted whole.
		w.add("pgjet_ins", p.insertInto(p.allColumns())+" SELECT "+commas(pick(set, vals))+
			" WHERE NOT EXISTS (SELECT 1 FROM pgjet_upd) ON CONFLICT DO NOTHING RETURNING 1")
		decision = "CASE WHEN EXISTS (SELECT 1 FROM pgjet_ins) THEN 'apply_remote' ELSE 'skip' END"
	}
	return w.then(insertConflicts("", rec.record("update_missing", f.key(), "NULL", p.jsonOf(set, vals), decision, "NULL", "NULL", "WHERE NOT EXISTS (SELECT 1 FROM pgjet_upd)"))), sb.oids
}

// args returns the parameter values of a change in statement order;
// nil is NULL. lsn and ts are the source commit LSN and time, for conflict
// records.
func (p *plan) args(ch *stream.Change, lsn, ts []byte, dst [][]byte) [][]byte {
	switch ch.Op {
	case stream.OpInsert:
		for _, v := range ch.New {
			dst = append(dst, argValue(v))
		}
		if p.policy == PolicySourceWins && p.upsert || p.policy != PolicySourceWins && p.insertLogs(ch) {
			dst = append(dst, lsn, ts)
		}
	case stream.OpUpdate, stream.OpDelete:
		if ch.Op == stream.OpUpdate {
			for _, v := range ch.New {
				if v.Kind != stream.ValueUnchanged {
					dst = append(dst, argValue(v))
				}
			}
		}
		find := findValues(ch)
		for _, i := range p.findColumns(ch) {
			dst = append(dst, argValue(find[i]))
		}
		dst = append(dst, lsn, ts)
	}
	return dst
}

// argValue is a value as a statement argument: nil is NULL, and an empty
// value is not NULL.
func argValue(v stream.Value) []byte {
	if v.Kind == stream.ValueNull {
		return nil
	}
	if v.Data == nil {
		return []byte{}
	}
	return v.Data
}

// stmtShape is the cache key of ch's single-row statement.
func (p *plan) stmtShape(ch *stream.Change) string {
	k := shape(ch.Op, ch)
	if p.policy == PolicyLastWriterWins && p.keyChange(ch) {
		k += "k" // the old key was sent (identity FULL) and differs
	}
	return k
}

func opName(op stream.Op) string {
	switch op {
	case stream.OpInsert:
		return "insert"
	case stream.OpUpdate:
		return "update"
	case stream.OpDelete:
		return "delete"
	case stream.OpTruncate:
		return "truncate"
	}
	return "change"
}
