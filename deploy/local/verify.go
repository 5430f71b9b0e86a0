package local

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema/redact"
)

// CopySchema copies the schema (no data, owners or grants) of the database
// at fromURL into the database at toURL by piping
// pg_dump --schema-only --no-owner --no-privileges into
// psql -v ON_ERROR_STOP=1, so a replica starts with the primary's tables.
// The target must not already hold the objects. Errors include the tools'
// stderr.
func CopySchema(ctx context.Context, fromURL, toURL string) error {
	pgDump, err := findPGTool("", "pg_dump")
	if err != nil {
		return err
	}
	psql, err := findPGTool("", "psql")
	if err != nil {
		return err
	}
	// Both are clients: unlike the server they run fine as root.
	dump := exec.CommandContext(ctx, pgDump, "--schema-only", "--no-owner", "--no-privileges", "--dbname="+fromURL)
	dump.Env = cleanEnv()
	var dumpErr bytes.Buffer
	dump.Stderr = &dumpErr

	restore := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname="+toURL)
	restore.Env = cleanEnv()
	var restoreErr bytes.Buffer
	restore.Stdout = io.Discard
	restore.Stderr = &restoreErr
	pipe, err := dump.StdoutPipe()
	if err != nil {
		return fmt.Errorf("copy schema: %w", err)
	}
	restore.Stdin = pipe

	if err := dump.Start(); err != nil {
		return fmt.Errorf("copy schema: start pg_dump: %w", err)
	}
	if err := restore.Start(); err != nil {
		dump.Process.Kill()
		dump.Wait()
		return fmt.Errorf("copy schema: start psql: %w", err)
	}
	// psql holds its own copy of the pipe's read end, so waiting for pg_dump
	// (which closes ours) cannot cut psql's input short.
	dumpWaitErr := dump.Wait()
	restoreWaitErr := restore.Wait()
	// psql failing first makes pg_dump die of SIGPIPE; psql's error is the cause.
	if restoreWaitErr != nil {
		return fmt.Errorf("copy schema: psql into %s: %w: %s", redact.Postgres(toURL), restoreWaitErr, strings.TrimSpace(restoreErr.String()))
	}
	if dumpWaitErr != nil {
		return fmt.Errorf("copy schema: pg_dump from %s: %w: %s", redact.Postgres(fromURL), dumpWaitErr, strings.TrimSpace(dumpErr.String()))
	}
	return nil
}

// TableDigest summarises one table's contents independently of row order.
type TableDigest struct {
	// Table is "schema.name", unquoted.
	Table string
	// Rows is the row count.
	Rows int64
	// MD5 is the md5 of the sorted md5s of every row's text form, "" for an
	// empty table.
	MD5 string
}

// Digest returns a digest of each table of the database at url, read in one
// REPEATABLE READ snapshot so that all tables are seen at the same moment.
// Tables are given as "schema.name" (a name without a dot is in public);
// with none given, every user table is digested, sorted by name, except
// those in pg_catalog, information_schema, pg_* and pgjet* schemas (pgjet's
// own bookkeeping differs between primary and replica by design).
//
// A row's text form is Postgres' rendering of the whole row, so two
// databases digest equal exactly when every table holds the same values in
// the same column order. It costs one sort of 32 bytes per row on the server.
func Digest(ctx context.Context, url string, tables ...string) ([]TableDigest, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("digest: connect to %s: %w", redact.Postgres(url), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("digest: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	var idents []pgx.Identifier
	if len(tables) == 0 {
		idents, err = userTables(ctx, tx)
		if err != nil {
			return nil, err
		}
	} else {
		for _, t := range tables {
			idents = append(idents, splitTable(t))
		}
	}
	out := make([]TableDigest, 0, len(idents))
	for _, id := range idents {
		// The alias is unlikely to shadow a column: a column named like the
		// alias would turn the whole-row reference into that column.
		q := "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') " +
			"FROM (SELECT md5(pgjet_digest_row::text) h FROM " + id.Sanitize() + " pgjet_digest_row) s"
		d := TableDigest{Table: id[0] + "." + id[1]}
		if err := tx.QueryRow(ctx, q).Scan(&d.Rows, &d.MD5); err != nil {
			return nil, fmt.Errorf("digest table %s: %w", d.Table, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// splitTable turns "schema.name" into an identifier; names without a schema
// are in public.
func splitTable(t string) pgx.Identifier {
	if schema, name, ok := strings.Cut(t, "."); ok {
		return pgx.Identifier{schema, name}
	}
	return pgx.Identifier{"public", t}
}

// userTables lists ordinary and partitioned tables outside system and pgjet
// schemas. Partitions are left out because their parent already covers
// their rows, and a replica may partition differently.
func userTables(ctx context.Context, tx pgx.Tx) ([]pgx.Identifier, error) {
	rows, err := tx.Query(ctx, `
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\_%'
  AND n.nspname <> 'pgjet' AND n.nspname NOT LIKE 'pgjet\_%'
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("digest: list tables: %w", err)
	}
	var ids []pgx.Identifier
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			return nil, fmt.Errorf("digest: list tables: %w", err)
		}
		ids = append(ids, pgx.Identifier{schema, name})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("digest: list tables: %w", err)
	}
	return ids, nil
}

// TableComparison is one table of two digests being compared: its
// digest on each side, nil on a side that lacks the table.
type TableComparison struct {
	Table string
	A, B  *TableDigest
}

// Equal reports whether both sides hold the table with the same rows.
func (c TableComparison) Equal() bool {
	return c.A != nil && c.B != nil && c.A.Rows == c.B.Rows && c.A.MD5 == c.B.MD5
}

// CompareDigests pairs the tables of a and b by name: one entry per table
// either side has, sorted by table.
func CompareDigests(a, b []TableDigest) []TableComparison {
	byName := make(map[string]*TableComparison, len(a)+len(b))
	var out []TableComparison
	for _, side := range []struct {
		digests []TableDigest
		first   bool
	}{{a, true}, {b, false}} {
		for _, d := range side.digests {
			c, ok := byName[d.Table]
			if !ok {
				c = &TableComparison{Table: d.Table}
				byName[d.Table] = c
			}
			if side.first {
				c.A = &d
			} else {
				c.B = &d
			}
		}
	}
	for _, c := range byName {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out
}

// DiffDigests returns one human-readable line per table whose digest differs
// between a and b or that only one side has, sorted by table; nil when the
// two are equal.
func DiffDigests(a, b []TableDigest) []string {
	var diffs []string
	for _, c := range CompareDigests(a, b) {
		n, da, db := c.Table, c.A, c.B
		switch {
		case c.Equal():
		case db == nil:
			diffs = append(diffs, fmt.Sprintf("%s: only in first (%d rows)", n, da.Rows))
		case da == nil:
			diffs = append(diffs, fmt.Sprintf("%s: only in second (%d rows)", n, db.Rows))
		case da.Rows != db.Rows:
			diffs = append(diffs, fmt.Sprintf("%s: %d rows vs %d rows", n, da.Rows, db.Rows))
		default:
			diffs = append(diffs, fmt.Sprintf("%s: same %d rows, different contents (md5 %s vs %s)", n, da.Rows, da.MD5, db.MD5))
		}
	}
	return diffs
}
