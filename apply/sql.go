package apply

import (
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/stream"
)

// The pieces apply's statements are built from: the single-row
// statements (plan.statement, policyStatement), the run statements
// (runStatement) and the TRUNCATE conflict check. Every statement's
// output is pinned by the golden files in testdata (TestGolden).

// lit renders s as an SQL string literal.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ident quotes a column name.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// commas joins SQL items with commas.
func commas(items []string) string { return strings.Join(items, ", ") }

// and joins conditions.
func and(conds []string) string { return strings.Join(conds, " AND ") }

// sqlBuilder numbers parameters and records their types.
type sqlBuilder struct {
	oids []uint32
}

func (s *sqlBuilder) param(oid uint32) string {
	s.oids = append(s.oids, oid)
	return "$" + strconv.Itoa(len(s.oids))
}

// jsonObject renders jsonb_build_object over name/expression pairs,
// split in groups because a function takes at most 100 arguments.
func jsonObject(names, exprs []string) string {
	if len(names) == 0 {
		return "NULL::jsonb"
	}
	var parts []string
	for start := 0; start < len(names); start += 50 {
		end := min(start+50, len(names))
		var args []string
		for i := start; i < end; i++ {
			args = append(args, lit(names[i]), exprs[i])
		}
		parts = append(parts, "jsonb_build_object("+commas(args)+")")
	}
	return strings.Join(parts, " || ")
}

// with collects the common table expressions of a statement.
type with []string

// add appends the CTE name AS (body).
func (w *with) add(name, body string) { *w = append(*w, name+" AS ("+body+")") }

// then renders the statement: the CTEs, then main.
func (w with) then(main string) string { return "WITH " + commas(w) + " " + main }

// conflictColumns are the columns of pgjet.conflicts (made by the
// migrations in migrate.go) that apply writes, in the order of
// conflictSQL.record's values.
const conflictColumns = "source, kind, table_name, commit_lsn, key, local_row, remote_row, decision, local_origin, local_commit_time, remote_origin, remote_commit_time"

// insertConflicts renders the INSERT of conflict records (rendered by
// conflictSQL.record); alias names pgjet.conflicts for a RETURNING
// clause, "" for none.
func insertConflicts(alias string, records ...string) string {
	as := ""
	if alias != "" {
		as = " AS " + alias
	}
	return "INSERT INTO pgjet.conflicts" + as + " (" + conflictColumns + ") " + strings.Join(records, " UNION ALL ")
}

// conflictSQL renders the pgjet.conflicts records of one statement: what
// is the same in each, the source (which is also the remote origin), the
// table and the source commit LSN and time, as SQL expressions.
type conflictSQL struct {
	source, table string
	lsn, ts       string
}

// newConflictSQL renders the records of a statement of relation rel
// applied from source, whose commit LSN and time are the expressions
// lsn (a pg_lsn) and ts.
func newConflictSQL(source string, rel *stream.Relation, lsn, ts string) conflictSQL {
	return conflictSQL{source: lit(source), table: lit(rel.Schema + "." + rel.Name), lsn: lsn, ts: ts}
}

// record renders the SELECT of one record of the given kind; the other
// values are SQL expressions, and from (its FROM and WHERE) ends it.
func (c conflictSQL) record(kind, key, local, remote, decision, localOrigin, localTime, from string) string {
	return "SELECT " + commas([]string{c.source, lit(kind), c.table, c.lsn, key, local, remote, decision, localOrigin, localTime, c.source, c.ts}) + " " + from
}

// repairedAway renders whether pgjet verify --repair deleted the row that
// on (a condition over the alias k of the target table qname's row type)
// finds, after the change committed: its record's commit_lsn, the source's
// WAL position just after the repair read the source's rows, lies beyond
// the change's. The repair records the key as jsonb, whose text depends on
// its session (a timestamptz in its TimeZone, a bytea in its
// bytea_output): the record's key is read back as a row of the table and
// compared as values. The records are narrowed first (OFFSET 0 keeps the
// planner from merging the two), so that only a recent repair's keys are
// parsed.
func (c conflictSQL) repairedAway(qname, on string) string {
	return "EXISTS (SELECT 1 FROM (SELECT r.key FROM pgjet.conflicts r WHERE r.kind = " + lit(KindRepair) + " AND r.decision = 'delete' AND r.source = " + c.source +
		" AND r.table_name = " + c.table + " AND r.commit_lsn > " + c.lsn + " OFFSET 0) r CROSS JOIN LATERAL jsonb_populate_record(NULL::" + qname + ", r.key) k WHERE " + on + ")"
}

// env is the conflictEnv of p's statements: a session without origin or
// commit timestamps when p has none.
func (p *plan) env(source string) *conflictEnv {
	if p.cx == nil {
		return &conflictEnv{source: source}
	}
	return p.cx
}

// col renders source column i's name, quoted.
func (p *plan) col(i int) string { return ident(p.rel.Columns[i].Name) }

// colNames renders the quoted names of cols.
func (p *plan) colNames(cols []int) []string {
	out := make([]string, len(cols))
	for j, i := range cols {
		out[j] = p.col(i)
	}
	return out
}

// allColumns lists every source column.
func (p *plan) allColumns() []int {
	out := make([]int, len(p.rel.Columns))
	for i := range out {
		out[i] = i
	}
	return out
}

// sentColumns lists the columns of vals that are sent: all but unchanged
// TOAST values.
func sentColumns(vals []stream.Value) []int {
	var out []int
	for i, v := range vals {
		if v.Kind != stream.ValueUnchanged {
			out = append(out, i)
		}
	}
	return out
}

// params numbers a parameter of each of cols, of its target type. The
// result is indexed by source column ("" for the others), as every
// values slice below.
func (p *plan) params(sb *sqlBuilder, cols []int) []string {
	out := make([]string, len(p.rel.Columns))
	for _, i := range cols {
		out[i] = sb.param(p.oids[i])
	}
	return out
}

// pick lists vals of cols.
func pick(cols []int, vals []string) []string {
	out := make([]string, len(cols))
	for j, i := range cols {
		out[j] = vals[i]
	}
	return out
}

// jsonOf renders cols as a jsonb object of their names and vals.
func (p *plan) jsonOf(cols []int, vals []string) string {
	names := make([]string, len(cols))
	for j, i := range cols {
		names[j] = p.rel.Columns[i].Name
	}
	return jsonObject(names, pick(cols, vals))
}

// match renders the condition that the columns cols of the table alias
// equal vals.
func (p *plan) match(alias string, cols []int, vals []string) string {
	var cond []string
	for _, i := range cols {
		cond = append(cond, alias+"."+p.col(i)+" = "+vals[i])
	}
	return and(cond)
}

// equal renders the condition that a and b are equal on cols.
func equal(cols []int, a, b []string) string {
	var cond []string
	for _, i := range cols {
		cond = append(cond, a[i]+" = "+b[i])
	}
	return and(cond)
}

// assign renders the SET list col = vals[col] over cols.
func (p *plan) assign(cols []int, vals []string) string {
	var sets []string
	for _, i := range cols {
		sets = append(sets, p.col(i)+" = "+vals[i])
	}
	return commas(sets)
}

// updateSets renders the SET list of an update that sends the columns
// set (vals their parameters). With nothing it may set (only GENERATED
// ALWAYS identities sent), a column is set to itself: the update still
// finds the row, or tells that it is missing.
func (p *plan) updateSets(set []int, vals []string) string {
	if sets := p.assign(p.settable(set), vals); sets != "" {
		return sets
	}
	return p.col(0) + " = t." + p.col(0)
}

// insertInto renders the head of an INSERT of cols, OVERRIDING SYSTEM
// VALUE when the target has a GENERATED ALWAYS identity.
func (p *plan) insertInto(cols []int) string {
	return "INSERT INTO " + p.t.qname + " (" + commas(p.colNames(cols)) + ")" + p.overridingClause()
}

func (p *plan) overridingClause() string {
	if p.overriding {
		return " OVERRIDING SYSTEM VALUE"
	}
	return ""
}

// settable lists the columns of cols an UPDATE may set: not a GENERATED
// ALWAYS identity.
func (p *plan) settable(cols []int) []int {
	var out []int
	for _, i := range cols {
		if !p.always[i] {
			out = append(out, i)
		}
	}
	return out
}

// upsertColumns lists the columns an insert whose key is taken sets: all
// but the key (every column is flagged key under identity FULL) and
// GENERATED ALWAYS identities.
func (p *plan) upsertColumns() []int {
	var out []int
	for i, c := range p.rel.Columns {
		if (!c.Key || p.rel.Identity == stream.IdentityFull) && !p.always[i] {
			out = append(out, i)
		}
	}
	return out
}

// upsertAction renders what an insert whose key is taken does: set the
// upsertColumns to the new values.
func (p *plan) upsertAction() string {
	sets := p.upsertColumns()
	if len(sets) == 0 {
		return "DO NOTHING"
	}
	excluded := make([]string, len(p.rel.Columns))
	for _, i := range sets {
		excluded[i] = "EXCLUDED." + p.col(i)
	}
	return "DO UPDATE SET " + p.assign(sets, excluded)
}

// findValues is the tuple whose values find the row of an update or
// delete: the old one when sent (identity FULL, or a changed key).
func findValues(ch *stream.Change) []stream.Value {
	if ch.Old != nil {
		return ch.Old
	}
	return ch.New
}

// findColumns lists the columns whose values find ch's row on the
// target, in parameter order: the key, or under fullMatch every value the
// source sent.
func (p *plan) findColumns(ch *stream.Change) []int {
	if p.fullMatch {
		return sentColumns(findValues(ch))
	}
	return p.keys
}

// rowFinder renders how an update or delete finds its row: the key
// columns equal their values, or (fullMatch) every sent column equals its
// old value, compared as text.
type rowFinder struct {
	p    *plan
	cols []int
	vals []string
}

// finder numbers the parameters that find ch's row.
func (p *plan) finder(sb *sqlBuilder, ch *stream.Change) rowFinder {
	cols := p.findColumns(ch)
	return rowFinder{p: p, cols: cols, vals: p.params(sb, cols)}
}

// alias is the table alias the finding condition is rendered over in a
// statement's own table: a subquery's (t2) under fullMatch, which picks
// one row of those that match, the target's (t) otherwise.
func (f rowFinder) alias() string {
	if f.p.fullMatch {
		return "t2"
	}
	return "t"
}

// on renders the condition over the table alias a; false when nothing
// finds the row.
func (f rowFinder) on(a string) string {
	if len(f.cols) == 0 {
		return "false"
	}
	if !f.p.fullMatch {
		return f.p.match(a, f.cols, f.vals)
	}
	var cond []string
	for _, i := range f.cols {
		// Compare text renderings: works for types without an
		// equality operator (json, point, xml).
		cond = append(cond, "("+a+"."+f.p.col(i)+")::text IS NOT DISTINCT FROM ("+f.vals[i]+")::text")
	}
	return and(cond)
}

// key renders the values that find the row as the key of a conflict
// record.
func (f rowFinder) key() string { return f.p.jsonOf(f.cols, f.vals) }
