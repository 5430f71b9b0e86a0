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
// source database only, the same search_path without "$user". A session
// that SET ROLE to it keeps its own search_path, where "$user" now names
// schema.Own: no setting of the role changes that, so capture warns of it
// when the role may use the schema and has members or cannot log in.
//
// See https://www.postgresql.org/docs/15/ddl-schemas.html#DDL-SCHEMAS-PATH

// ownSchemaRole is the role named like schema.Own.
type ownSchemaRole struct {
	path  string   // its search_path in this database, as Postgres shows it
	fixed []string // that path without "$user", quoted
	db    string   // the source database
	// trapped: it logs in, and its unqualified CREATE lands in schema.Own
	// through "$user": guardOwnSchema sets its search_path.
	trapped bool
	// setRole: it may use schema.Own, and roles SET ROLE to it (members,
	// or it cannot log in): "$user" is then schema.Own in their sessions,
	// whose search_path no setting of this role changes.
	setRole bool
	members []string
}

// alterSQL is the statement that gives the role its fixed search_path in
// the source database.
func (r *ownSchemaRole) alterSQL() string {
	return "ALTER ROLE " + quoteIdent(schema.Own) + " IN DATABASE " + quoteIdent(r.db) + " SET search_path = " + strings.Join(r.fixed, ", ")
}

// setRoleLine says what SET ROLE to the role does, and what to do.
func (r *ownSchemaRole) setRoleLine() string {
	who := "sessions"
	if len(r.members) > 0 {
		who = "sessions of " + listSome(r.members)
	}
	return fmt.Sprintf("after SET ROLE %s (%s), an unqualified CREATE TABLE lands in schema %s, pgjet's own, which is never replicated, through \"$user\" in the session's search_path, which no setting of role %s changes; qualify table names after SET ROLE %s (or SET search_path = public), or give the role another name",
		schema.Own, who, schema.Own, schema.Own, schema.Own)
}

// findOwnSchemaRole returns the role named like schema.Own when its
// unqualified CREATE may land in schema.Own (see ownSchemaRole), or nil.
// Its path is the one a login of it gets in this database: its setting for
// this database, else its own, else the database's, else ALTER ROLE ALL's,
// else the server's. The server's is this session's unless a setting of
// this session's role or connection hides it; then it is Postgres' default
// (which lists "$user"): the configuration files are a superuser's to read.
func findOwnSchemaRole(ctx context.Context, q queryRower) (*ownSchemaRole, error) {
	var path, db *string
	var login, usable bool
	var members []string
	err := q.QueryRow(ctx, `WITH s AS (
			SELECT d.setdatabase, d.setrole, substr(c, length('search_path=') + 1) AS path
			FROM pg_db_role_setting d, unnest(d.setconfig) c WHERE c LIKE 'search\_path=%'),
		db AS (SELECT oid FROM pg_database WHERE datname = current_database())
		SELECT coalesce(
			(SELECT path FROM s WHERE setdatabase = (SELECT oid FROM db) AND setrole = r.oid),
			(SELECT path FROM s WHERE setdatabase = 0 AND setrole = r.oid),
			(SELECT path FROM s WHERE setdatabase = (SELECT oid FROM db) AND setrole = 0),
			(SELECT path FROM s WHERE setdatabase = 0 AND setrole = 0),
			(SELECT CASE WHEN source IN ('default', 'configuration file', 'command line', 'environment variable') THEN reset_val ELSE boot_val END
				FROM pg_settings WHERE name = 'search_path')), current_database(), r.rolcanlogin,
			r.rolsuper OR coalesce((SELECT has_schema_privilege(r.oid, n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = $1), false),
			coalesce((SELECT array_agg(m.rolname::text ORDER BY m.rolname) FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member WHERE a.roleid = r.oid), '{}')
		FROM pg_roles r WHERE r.rolname = $1`, schema.Own).Scan(&path, &db, &login, &usable, &members)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && path == nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the search_path of role %s: %w", schema.Own, err)
	}
	r := &ownSchemaRole{path: *path, db: *db, members: members, setRole: usable && (!login || len(members) > 0)}
	decided := false
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
		r.trapped, decided = login && own && usable, usable
	}
	if !r.trapped && !r.setRole {
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
// replicas. Sessions that SET ROLE to it keep their own search_path:
// capture warns of them.
func (c *Capture) guardOwnSchema(ctx context.Context, pool *pgxpool.Pool) error {
	r, err := findOwnSchemaRole(ctx, pool)
	if err != nil || r == nil {
		return err
	}
	if r.setRole {
		c.log.Warn().Str("role", schema.Own).Str("members", strings.Join(r.members, ",")).Msg("role " + schema.Own + " may use schema " + schema.Own + ": " + r.setRoleLine())
	}
	if !r.trapped {
		return nil
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
		return stream.Pass(name, "no role's unqualified CREATE lands in pgjet's own schema")
	case !r.trapped:
		return stream.Warn(name, "role %s may use schema %s: %s", schema.Own, schema.Own, r.setRoleLine())
	}
	also := ""
	if r.setRole {
		also = "; and " + r.setRoleLine()
	}
	var may bool
	if err := conn.QueryRow(ctx, `SELECT r.rolsuper OR current_user = $1 OR (r.rolcreaterole AND NOT t.rolsuper)
		FROM pg_roles r, pg_roles t WHERE r.rolname = current_user AND t.rolname = $1`, schema.Own).Scan(&may); err != nil {
		return stream.Fail(name, "read role attributes: %v", err)
	}
	if !may {
		return stream.Fail(name, "role %s's search_path (%s) makes its unqualified CREATE TABLE land in schema %s, pgjet's own, which is never replicated, and this role may not change it; run as a superuser: %s%s",
			schema.Own, r.path, schema.Own, r.alterSQL(), also)
	}
	return stream.Warn(name, "role %s's search_path (%s) makes its unqualified CREATE TABLE land in schema %s, pgjet's own, which is never replicated; capture runs %s on start%s",
		schema.Own, r.path, schema.Own, r.alterSQL(), also)
}
