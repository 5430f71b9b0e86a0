package schema

// Copying roles between clusters (pgjet roles).
//
// Roles are cluster-wide: logical decoding does not carry them, and a
// replica needs the source's roles for the owners, grants and policies it
// keeps. ReadRoles reads a cluster's roles and memberships (pg_roles,
// pg_auth_members), and PlanRoles computes the statements that make a
// target's copy of the source's roles match, so running it again changes
// nothing. See https://www.postgresql.org/docs/15/sql-createrole.html

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema/pgerr"
)

// Role is a role's definition as pgjet roles copies it.
type Role struct {
	Name string
	// System roles are Postgres' own (the bootstrap superuser, pg_*):
	// never copied, but memberships in pg_* roles are.
	System bool
	// Super is rolsuper: a source's superuser is never copied, and a
	// target's is never changed.
	Super                                                        bool
	Inherit, CreateRole, CreateDB, Login, Replication, BypassRLS bool
	ConnLimit                                                    int
	// ValidUntil is rolvaliduntil as text (DateStyle ISO, UTC), "" when
	// unset.
	ValidUntil string
	// Password is the stored password verifier (SCRAM or md5, never the
	// clear text), read only with passwords; nil when the role has none.
	Password *string
}

// Membership is one role's membership in another (pg_auth_members).
type Membership struct {
	Role, Member string
	Admin        bool
}

// Roles is a cluster's roles and memberships.
type Roles struct {
	Roles   map[string]*Role
	Members []Membership
	// Current is the role connected (current_user).
	Current string
}

// ReadRoles reads the roles and memberships of conn's cluster. conn must
// render timestamps in ISO style and UTC (DateStyle, TimeZone), so that
// VALID UNTIL compares as text. With passwords it reads the password
// verifiers from pg_authid, which only a superuser may read.
func ReadRoles(ctx context.Context, conn *pgx.Conn, passwords bool) (*Roles, error) {
	pw := "NULL::text"
	from := "pg_roles"
	if passwords {
		pw, from = "rolpassword", "pg_authid"
	}
	rows, err := conn.Query(ctx, `SELECT rolname::text, oid < 16384 OR rolname ~ '^pg_', rolsuper, rolinherit, rolcreaterole, rolcreatedb,
			rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, coalesce(rolvaliduntil::text, ''), `+pw+`
		FROM `+from)
	if err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return nil, pgerr.Fatalf(err, "--with-passwords reads the password hashes in pg_authid, which only a superuser may read: connect as a superuser, or leave --with-passwords out")
		}
		return nil, fmt.Errorf("read roles: %w", err)
	}
	rs := &Roles{Roles: map[string]*Role{}}
	for rows.Next() {
		r := &Role{}
		if err := rows.Scan(&r.Name, &r.System, &r.Super, &r.Inherit, &r.CreateRole, &r.CreateDB, &r.Login, &r.Replication,
			&r.BypassRLS, &r.ConnLimit, &r.ValidUntil, &r.Password); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read roles: %w", err)
		}
		rs.Roles[r.Name] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read roles: %w", err)
	}
	rows, err = conn.Query(ctx, `SELECT r.rolname::text, m.rolname::text, a.admin_option
		FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member`)
	if err != nil {
		return nil, fmt.Errorf("read role memberships: %w", err)
	}
	for rows.Next() {
		var m Membership
		if err := rows.Scan(&m.Role, &m.Member, &m.Admin); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read role memberships: %w", err)
		}
		rs.Members = append(rs.Members, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read role memberships: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT current_user::text").Scan(&rs.Current); err != nil {
		return nil, fmt.Errorf("read current_user: %w", err)
	}
	return rs, nil
}

// RolesOptions say what PlanRoles copies.
type RolesOptions struct {
	// Passwords copies password verifiers too (both Roles read with
	// passwords).
	Passwords bool
	// Exclude are role name patterns (path.Match) left alone.
	Exclude []string
}

// RoleStatement is one statement of a plan.
type RoleStatement struct {
	SQL string
	// Show is SQL with any password hash replaced by '…', for output.
	Show string
}

// RolesPlan is what makes a target's roles match a source's.
type RolesPlan struct {
	Statements []RoleStatement
	// Created, Altered, Granted and Revoked count the statements by kind.
	Created, Altered, Granted, Revoked int
	// Skipped says, one line each, which roles were left alone and why.
	Skipped []string
}

// PlanRoles computes the statements that make dst's copy of src's roles
// match src: roles missing on dst are created, those that differ are
// altered, and memberships among the copied roles (and in Postgres' pg_*
// roles) are granted or revoked to match. Superusers and Postgres' own
// roles of src are never copied; roles only dst has, dst's superusers and
// the role dst is connected as are never changed, nor are memberships in
// roles src does not copy. Passwords are copied only with o.Passwords.
func PlanRoles(src, dst *Roles, o RolesOptions) RolesPlan {
	var p RolesPlan
	excluded := func(name string) bool {
		return slices.ContainsFunc(o.Exclude, func(pat string) bool { ok, _ := path.Match(pat, name); return ok })
	}
	// copied are the source roles dst's copy follows.
	copied := map[string]bool{}
	for _, name := range sortedNames(src.Roles) {
		s := src.Roles[name]
		d := dst.Roles[name]
		switch {
		case s.System:
			continue
		case excluded(name):
			p.Skipped = append(p.Skipped, fmt.Sprintf("excluded %q (--exclude)", name))
			continue
		case s.Super:
			p.Skipped = append(p.Skipped, fmt.Sprintf("superuser %q: a replica gets no superuser from the source; create it by hand where one is needed", name))
			continue
		case d != nil && d.Super:
			p.Skipped = append(p.Skipped, fmt.Sprintf("%q is a superuser on the target: left as it is", name))
			continue
		case d != nil && name == dst.Current:
			p.Skipped = append(p.Skipped, fmt.Sprintf("%q is the role connected to the target: left as it is", name))
			continue
		case d != nil && d.System:
			p.Skipped = append(p.Skipped, fmt.Sprintf("%q is one of Postgres' own roles on the target: left as it is", name))
			continue
		}
		copied[name] = true
		ident := pgx.Identifier{name}.Sanitize()
		if d == nil {
			sql := "CREATE ROLE " + ident
			if attrs := roleAttrs(s, nil); len(attrs) > 0 {
				sql += " WITH " + strings.Join(attrs, " ")
			}
			show := sql
			if o.Passwords && s.Password != nil {
				sql, show = sql+passwordClause(s.Password, false), show+passwordClause(s.Password, true)
			}
			p.Statements = append(p.Statements, RoleStatement{SQL: sql, Show: show})
			p.Created++
			continue
		}
		attrs := roleAttrs(s, d)
		pwDiffers := o.Passwords && !equalPtr(s.Password, d.Password)
		if len(attrs) == 0 && !pwDiffers {
			continue
		}
		sql := "ALTER ROLE " + ident + " WITH"
		if len(attrs) > 0 {
			sql += " " + strings.Join(attrs, " ")
		}
		show := sql
		if pwDiffers {
			sql, show = sql+passwordClause(s.Password, false), show+passwordClause(s.Password, true)
		}
		p.Statements = append(p.Statements, RoleStatement{SQL: sql, Show: show})
		p.Altered++
	}

	// Memberships: granted role copied (or one of Postgres' own that dst
	// has too), member copied.
	follows := func(role, member string, rs *Roles) bool {
		if !copied[member] {
			return false
		}
		if copied[role] {
			return true
		}
		r := rs.Roles[role]
		return r != nil && r.System && strings.HasPrefix(role, "pg_") && dst.Roles[role] != nil && dst.Roles[role].System
	}
	type key struct{ role, member string }
	have := map[key]bool{}
	for _, m := range dst.Members {
		if follows(m.Role, m.Member, dst) {
			have[key{m.Role, m.Member}] = m.Admin
		}
	}
	want := map[key]bool{}
	for _, m := range src.Members {
		if follows(m.Role, m.Member, src) {
			want[key{m.Role, m.Member}] = m.Admin
		}
	}
	grant := func(k key, admin bool) {
		sql := "GRANT " + pgx.Identifier{k.role}.Sanitize() + " TO " + pgx.Identifier{k.member}.Sanitize()
		if admin {
			sql += " WITH ADMIN OPTION"
		}
		p.Statements = append(p.Statements, RoleStatement{SQL: sql, Show: sql})
		p.Granted++
	}
	revoke := func(k key, adminOnly bool) {
		sql := "REVOKE "
		if adminOnly {
			sql += "ADMIN OPTION FOR "
		}
		sql += pgx.Identifier{k.role}.Sanitize() + " FROM " + pgx.Identifier{k.member}.Sanitize()
		p.Statements = append(p.Statements, RoleStatement{SQL: sql, Show: sql})
		p.Revoked++
	}
	for _, k := range sortedKeys(want, func(k key) string { return k.role + "\x00" + k.member }) {
		admin, ok := have[k]
		switch {
		case !ok:
			grant(k, want[k])
		case want[k] && !admin:
			grant(k, true)
		case !want[k] && admin:
			revoke(k, true)
		}
	}
	for _, k := range sortedKeys(have, func(k key) string { return k.role + "\x00" + k.member }) {
		if _, ok := want[k]; !ok {
			revoke(k, false)
		}
	}
	return p
}

// roleAttrs lists the attributes of s that d (nil: a new role with the
// defaults) does not have, in CREATE/ALTER ROLE syntax.
func roleAttrs(s, d *Role) []string {
	if d == nil {
		d = &Role{Inherit: true, ConnLimit: -1}
	}
	var out []string
	flag := func(want, have bool, on, off string) {
		if want != have {
			if want {
				out = append(out, on)
			} else {
				out = append(out, off)
			}
		}
	}
	flag(s.Inherit, d.Inherit, "INHERIT", "NOINHERIT")
	flag(s.CreateRole, d.CreateRole, "CREATEROLE", "NOCREATEROLE")
	flag(s.CreateDB, d.CreateDB, "CREATEDB", "NOCREATEDB")
	flag(s.Login, d.Login, "LOGIN", "NOLOGIN")
	flag(s.Replication, d.Replication, "REPLICATION", "NOREPLICATION")
	flag(s.BypassRLS, d.BypassRLS, "BYPASSRLS", "NOBYPASSRLS")
	if s.ConnLimit != d.ConnLimit {
		out = append(out, fmt.Sprintf("CONNECTION LIMIT %d", s.ConnLimit))
	}
	// No VALID UNTIL and 'infinity' mean the same; ALTER ROLE cannot
	// set it back to none.
	until := func(v string) string {
		if v == "" {
			return "infinity"
		}
		return v
	}
	if until(s.ValidUntil) != until(d.ValidUntil) {
		out = append(out, "VALID UNTIL "+quoteLiteral(until(s.ValidUntil)))
	}
	return out
}

// passwordClause is " PASSWORD 'verifier'", or " PASSWORD NULL" for a
// role without one; hide replaces the verifier by '…', for output.
// Postgres stores a SCRAM or md5 verifier given as the password as it is,
// so the role logs in on the target with the same password.
func passwordClause(pw *string, hide bool) string {
	switch {
	case pw == nil:
		return " PASSWORD NULL"
	case hide:
		return " PASSWORD '…'"
	}
	return " PASSWORD " + quoteLiteral(*pw)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func equalPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func sortedNames(m map[string]*Role) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedKeys[K comparable](m map[K]bool, str func(K) string) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b K) int { return strings.Compare(str(a), str(b)) })
	return out
}
