package capture

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// pgjet's own schema (schema.Own) is never captured nor copied into
// snapshots. A login role of the same name makes it a trap: under
// Postgres' default search_path, "$user", public, that role's unqualified
// CREATE TABLE lands in the first schema of the path that exists and that
// it may use, which is pgjet's; the table would then never reach a
// replica. A role without USAGE on the schema falls through to public
// (lacking CREATE does not: the CREATE fails), but a superuser, or the
// schema's owner, always has it. So capture gives that role, in the
// source database only, the same search_path without "$user".
//
// See https://www.postgresql.org/docs/15/ddl-schemas.html#DDL-SCHEMAS-PATH

// ownSchemaRole is a login role whose unqualified CREATE would land in
// schema.Own through "$user" in its search_path.
type ownSchemaRole struct {
	path  string   // its search_path in this database, as Postgres shows it
	fixed []string // that path without "$user", quoted
	db    string   // the source database
}

// alterSQL is the statement that gives the role its fixed search_path in
// the source database.
func (r *ownSchemaRole) alterSQL() string {
	return "ALTER ROLE " + quoteIdent(schema.Own) + " IN DATABASE " + quoteIdent(r.db) + " SET search_path = " + strings.Join(r.fixed, ", ")
}

// findOwnSchemaRole returns the login role named like schema.Own when its
// search_path in this database reaches schema.Own through "$user" before
// any other schema it may create in, or nil. The path is the role's
// setting for this database, else its own, else the database's, else the
// server's (pg_settings' reset value).
func findOwnSchemaRole(ctx context.Context, q queryRower) (*ownSchemaRole, error) {
	var path, db *string
	err := q.QueryRow(ctx, `WITH s AS (
			SELECT d.setdatabase, d.setrole, substr(c, length('search_path=') + 1) AS path
			FROM pg_db_role_setting d, unnest(d.setconfig) c WHERE c LIKE 'search\_path=%'),
		db AS (SELECT oid FROM pg_database WHERE datname = current_database())
		SELECT coalesce(
			(SELECT path FROM s WHERE setdatabase = (SELECT oid FROM db) AND setrole = r.oid),
			(SELECT path FROM s WHERE setdatabase = 0 AND setrole = r.oid),
			(SELECT path FROM s WHERE setdatabase = (SELECT oid FROM db) AND setrole = 0),
			(SELECT reset_val FROM pg_settings WHERE name = 'search_path')), current_database()
		FROM pg_roles r WHERE r.rolname = $1 AND r.rolcanlogin`, schema.Own).Scan(&path, &db)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && path == nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the search_path of role %s: %w", schema.Own, err)
	}
	r := &ownSchemaRole{path: *path, db: *db}
	trapped, decided := false, false
	for _, e := range splitSearchPath(*path) {
		own := e == "$user" || e == schema.Own
		if !own {
			r.fixed = append(r.fixed, quoteIdent(e))
		}
		if decided {
			continue
		}
		// The first schema of the path that exists and that the role may
		// use takes what it creates unqualified. Schema pgjet counts even
		// where it does not exist yet: capture's DDL capture makes it.
		usable, err := schemaUsable(ctx, q, e, own)
		if err != nil {
			return nil, err
		}
		trapped, decided = own && usable, usable
	}
	if !trapped {
		return nil, nil
	}
	if len(r.fixed) == 0 {
		r.fixed = []string{"public"}
	}
	return r, nil
}

// schemaUsable reports whether the role named like schema.Own may use
// schema nsp (superuser, owner, or USAGE); own says nsp is pgjet's own
// (or "$user"), which counts as usable where it does not exist yet.
func schemaUsable(ctx context.Context, q queryRower, nsp string, own bool) (bool, error) {
	if own {
		nsp = schema.Own
	}
	var usable bool
	err := q.QueryRow(ctx, `SELECT coalesce((SELECT has_schema_privilege($1, n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = $2), $3)`,
		schema.Own, nsp, own).Scan(&usable)
	if err != nil {
		return false, fmt.Errorf("check the privileges of role %s on schema %s: %w", schema.Own, nsp, err)
	}
	return usable, nil
}

// splitSearchPath splits a search_path value into schema names: quoted
// names unquoted, unquoted ones folded to lower case, "$user" kept.
func splitSearchPath(path string) []string {
	var out []string
	for _, raw := range strings.Split(path, ",") {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		if strings.HasPrefix(e, `"`) && strings.HasSuffix(e, `"`) && len(e) >= 2 {
			e = strings.ReplaceAll(e[1:len(e)-1], `""`, `"`)
		} else {
			e = strings.ToLower(e)
		}
		out = append(out, e)
	}
	return out
}

// guardOwnSchema gives the role named like schema.Own a search_path
// without "$user" in the source database when its unqualified CREATE
// would land in schema.Own, naming the change. A capture that may not
// change the role stops with a FatalError naming the statement to run:
// until then every table that role creates unqualified is lost to the
// replicas.
func (c *Capture) guardOwnSchema(ctx context.Context, pool *pgxpool.Pool) error {
	r, err := findOwnSchemaRole(ctx, pool)
	if err != nil || r == nil {
		return err
	}
	sql := r.alterSQL()
	if _, err := pool.Exec(ctx, sql); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return pgerr.Fatalf(err, "role %s's search_path (%s) makes its unqualified CREATE TABLE land in schema %s, pgjet's own, which is never replicated, and this role may not change it; run as a superuser: %s (or give the role another name)",
				schema.Own, r.path, schema.Own, sql)
		}
		return fmt.Errorf("set the search_path of role %s: %w", schema.Own, err)
	}
	c.log.Warn().Str("role", schema.Own).Str("search_path", r.path).Str("new_search_path", strings.Join(r.fixed, ", ")).Str("sql", sql).
		Msg("role " + schema.Own + "'s search_path set: its unqualified CREATE TABLE would land in pgjet's own schema, which is never replicated")
	return nil
}

// checkOwnSchema is --check-config's view of guardOwnSchema.
func checkOwnSchema(ctx context.Context, conn *pgx.Conn) stream.CheckResult {
	const name = "schema " + schema.Own
	r, err := findOwnSchemaRole(ctx, conn)
	switch {
	case err != nil:
		return stream.Fail(name, "%v", err)
	case r == nil:
		return stream.Pass(name, "no login role's unqualified CREATE lands in pgjet's own schema")
	}
	var may bool
	if err := conn.QueryRow(ctx, `SELECT r.rolsuper OR current_user = $1 OR (r.rolcreaterole AND NOT t.rolsuper)
		FROM pg_roles r, pg_roles t WHERE r.rolname = current_user AND t.rolname = $1`, schema.Own).Scan(&may); err != nil {
		return stream.Fail(name, "read role attributes: %v", err)
	}
	if !may {
		return stream.Fail(name, "role %s's search_path (%s) makes its unqualified CREATE TABLE land in schema %s, pgjet's own, which is never replicated, and this role may not change it; run as a superuser: %s",
			schema.Own, r.path, schema.Own, r.alterSQL())
	}
	return stream.Warn(name, "role %s's search_path (%s) makes its unqualified CREATE TABLE land in schema %s, pgjet's own, which is never replicated; capture runs %s on start",
		schema.Own, r.path, schema.Own, r.alterSQL())
}
