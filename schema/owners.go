package schema

// Owners and privileges in snapshots.
//
// A snapshot's schema is pg_dump's, with owners (ALTER ... OWNER TO) and
// privileges (GRANT, REVOKE, ALTER DEFAULT PRIVILEGES) kept, so a region
// built from it gives every role the rights it has on the source and no
// more. Roles are cluster-wide and not in the dump: the snapshot lists
// those it names (SnapshotRolesSQL), and a restore checks that the target
// has them before it runs the schema. See
// https://www.postgresql.org/docs/15/catalog-pg-shdepend.html

import (
	"slices"
	"strings"
)

// SnapshotRolesSQL lists the roles a pg_dump of the database (but pgjet's
// own schema, event triggers and publications) names, with whether each
// owns objects: owners, grantees and grantors of privileges and default
// privileges, and roles of row-level security policies. Columns: rolname,
// owns. pg_shdepend records every such reference but those to the
// bootstrap superuser, which is listed when it owns a dumped object.
const SnapshotRolesSQL = `WITH ns AS (
	SELECT oid FROM pg_namespace
	WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pgjet')
		AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
), refs AS (
	SELECT d.refobjid AS role, d.deptype = 'o' AS owns
	FROM pg_shdepend d
	WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND d.refclassid = 'pg_authid'::regclass AND d.deptype IN ('o', 'a', 'r')
		AND CASE d.classid
			WHEN 'pg_namespace'::regclass THEN d.objid IN (SELECT oid FROM ns)
			WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid) IN (SELECT oid FROM ns)
			WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objid) IN (SELECT oid FROM ns)
			WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid) IN (SELECT oid FROM ns)
			WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objid) IN (SELECT oid FROM ns)
			WHEN 'pg_default_acl'::regclass THEN (SELECT a.defaclnamespace = 0 OR a.defaclnamespace IN (SELECT oid FROM ns) FROM pg_default_acl a WHERE a.oid = d.objid)
			WHEN 'pg_event_trigger'::regclass THEN false
			WHEN 'pg_publication'::regclass THEN false
			WHEN 'pg_subscription'::regclass THEN false
			ELSE coalesce((SELECT o.schema FROM pg_identify_object(d.classid, d.objid, 0) o) NOT IN ('pgjet', 'pg_catalog', 'information_schema'), true)
		END
	UNION ALL
	(SELECT 10, true FROM (
			SELECT nspowner AS owner, oid AS ns, 'pg_namespace'::regclass AS cls, oid FROM pg_namespace WHERE nspname <> 'public'
			UNION ALL SELECT relowner, relnamespace, 'pg_class'::regclass, oid FROM pg_class
			UNION ALL SELECT proowner, pronamespace, 'pg_proc'::regclass, oid FROM pg_proc
			-- row types are their relation's, array types their element's
			UNION ALL SELECT typowner, typnamespace, 'pg_type'::regclass, oid FROM pg_type t
				WHERE t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)) x
		WHERE x.owner = 10 AND x.ns IN (SELECT oid FROM ns)
			AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = x.cls AND e.objid = x.oid AND e.deptype = 'e')
		LIMIT 1)
)
SELECT r.rolname::text, bool_or(refs.owns) FROM refs JOIN pg_roles r ON r.oid = refs.role GROUP BY r.rolname ORDER BY 1`

// SnapshotOwnerSchemasSQL lists, for the objects a pg_dump of the
// database holds (as SnapshotRolesSQL), each schema and role that owns
// objects in it without owning the schema, and whether that role may
// create in it. The bootstrap superuser is left out: only a superuser
// restores its objects. Columns: schema, owner, create.
const SnapshotOwnerSchemasSQL = `SELECT DISTINCT n.nspname::text, r.rolname::text, has_schema_privilege(r.oid, n.oid, 'CREATE')
FROM pg_shdepend d
CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
JOIN pg_namespace n ON n.nspname = o.schema
JOIN pg_roles r ON r.oid = d.refobjid
WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND d.refclassid = 'pg_authid'::regclass AND d.deptype = 'o'
	AND d.classid NOT IN ('pg_namespace'::regclass, 'pg_event_trigger'::regclass, 'pg_publication'::regclass, 'pg_subscription'::regclass)
	AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgjet')
	AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
	AND n.nspowner <> d.refobjid
	AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e')
ORDER BY 1, 2`

// SchemaACLsFirst moves the privileges on schemas (pg_dump's "Type: ACL"
// entries of "SCHEMA x") of a pre-data script to just after the schemas
// are made. pg_dump writes every privilege at the end, after the
// ALTER ... OWNER TO of each object; a role that is no superuser may give
// an object to a role only while that role may create in its schema, so
// a restore by the least-privilege apply role stopped at the first object
// owned by a role whose CREATE on the schema came later in the script.
// Statements are moved whole (SplitStatements), never text inside a
// function body.
func SchemaACLsFirst(script string) string {
	var acls, rest []string
	var typ, name string
	at := -1 // where in rest the schema ACLs go
	for _, st := range SplitStatements(script) {
		if t, n, ok := tocEntry(st); ok {
			typ, name = t, n
		}
		if typ == "ACL" && strings.HasPrefix(name, "SCHEMA ") {
			acls = append(acls, st)
			continue
		}
		rest = append(rest, st)
		switch {
		case typ == "SCHEMA":
			at = len(rest) // after the last schema
		case typ != "" && at < 0:
			at = len(rest) - 1 // before the first entry, when no schema is made
		}
	}
	if len(acls) == 0 {
		return script
	}
	if at < 0 {
		at = len(rest)
	}
	var b strings.Builder
	for _, st := range slices.Concat(rest[:at], acls, rest[at:]) {
		b.WriteString(st)
		b.WriteString(";\n\n")
	}
	return b.String()
}

// tocEntry reads the pg_dump entry header ("-- Name: x; Type: ACL;
// Schema: -; Owner: y") among the comment lines that open st.
func tocEntry(st string) (typ, name string, ok bool) {
	for _, line := range strings.Split(st, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "--") {
			break
		}
		rest, found := strings.CutPrefix(line, "-- Name: ")
		if !found {
			continue
		}
		// The name may hold "; " itself (a function's arguments): the
		// type is the field after the last "; Type: ".
		i := strings.LastIndex(rest, "; Type: ")
		if i < 0 {
			continue
		}
		name = rest[:i]
		typ, _, _ = strings.Cut(rest[i+len("; Type: "):], ";")
		ok = true
	}
	return typ, name, ok
}

// CopiedRolesWhere is the condition on pg_roles (or pg_authid) of the
// roles pgjet roles copies: neither Postgres' own (the bootstrap
// superuser, pg_* roles) nor superusers, which a replica must not get
// from replication.
const CopiedRolesWhere = `oid >= 16384 AND NOT rolsuper AND rolname !~ '^pg_'`

// WithoutOwners removes from a pg_dump script what the source's owners
// and privileges add to it (ALTER ... OWNER TO, GRANT, REVOKE, ALTER
// DEFAULT PRIVILEGES, SET SESSION AUTHORIZATION), giving what pg_dump
// --no-owner --no-privileges writes: the objects then belong to the role
// that runs the script. Policies are schema, not privileges, and stay.
func WithoutOwners(script string) string {
	var b strings.Builder
	for _, st := range SplitStatements(script) {
		if ownerStatement(st) {
			continue
		}
		b.WriteString(st)
		b.WriteString(";\n\n")
	}
	return b.String()
}

// ownerStatement reports whether st sets an owner or a privilege.
func ownerStatement(st string) bool {
	toks := tokens(st, 3)
	at := func(i int) string {
		if i < len(toks) {
			return toks[i]
		}
		return ""
	}
	switch at(0) {
	case "GRANT", "REVOKE":
		return true
	case "SET", "RESET":
		return at(1) == "SESSION" && at(2) == "AUTHORIZATION"
	case "ALTER":
		if at(1) == "DEFAULT" && at(2) == "PRIVILEGES" {
			return true
		}
		// ALTER <object> OWNER TO role, at the top level.
		owner := false
		prev := ""
		scan(st, func(tok string, depth int, _ int) bool {
			if depth == 0 && prev == "OWNER" && tok == "TO" {
				owner = true
				return false
			}
			prev = tok
			return true
		})
		return owner
	}
	return false
}
