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

// conflictColumns are the columns of pgjet.conflicts that apply writes,
// in the order of conflictSQL.record's values.
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
