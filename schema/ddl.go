package schema

// DDL capture and replay.
//
// Logical decoding does not carry schema changes. pgjet-capture installs an
// event trigger function on the source (DDLInstallSQL) that writes each
// schema-changing query into the WAL as a transactional logical message
// (prefix "pgjet.ddl", see stream.PrefixDDL) holding a DDL as JSON. The
// message travels inside its transaction, in commit order with the rows
// around it, and pgjet-apply replays the query on the target at that point
// (ReplayStatements).
//
// See https://www.postgresql.org/docs/15/event-triggers.html and
// https://www.postgresql.org/docs/15/functions-event-triggers.html

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// DDLOffSetting is the setting that turns DDL capture off for a session
// or a transaction on the source: SET pgjet.ddl_capture = off makes the
// schema changes that follow local to the source.
const DDLOffSetting = "pgjet.ddl_capture"

// DDLFunction is the event trigger function capture installs on the source.
const DDLFunction = "pgjet.ddl_capture()"

// Own is the schema of pgjet's own tables and functions on sources and
// targets (positions, restores, conflicts, DDL capture). Each database has
// its own: it is never captured, copied into snapshots or restored.
const Own = "pgjet"

// DDLTriggers are the event triggers capture installs on the source.
var DDLTriggers = []string{"pgjet_ddl_start", "pgjet_ddl_end", "pgjet_ddl_drop", "pgjet_ddl_publish", "pgjet_ddl_publish_start"}

// DDLFunctionBody is the PL/pgSQL body of DDLFunction. capture compares it
// with pg_proc.prosrc to tell whether the installed version is current.
//
// A table created in pgjet's own schema by anyone but pgjet (which turns
// capture off for its own changes) gets a WARNING to its author: it would
// never reach a replica.
//
// It emits one message per (transaction, statement start, query text): a
// query string with several statements fires the triggers several times,
// and the whole string is replayed once. Objects of pgjet's own schema,
// temporary objects and objects created by extension scripts are left out;
// a command that touches only such objects is not captured. CREATE TABLE AS
// is captured at ddl_command_start, before its rows enter the WAL, when the
// query itself is that statement.
//
// The role recorded is the role the query string runs as at the top level
// (SET ROLE's role, else the session user), not current_user: inside a
// SECURITY DEFINER function current_user is the function's owner, while
// what is replayed is the whole query string its caller sent (a DO block
// calling a superuser's DDL helper must not replay as that superuser; the
// helper, called again on the target, runs as its owner there too). A
// schema change of a query string already captured, run as another role
// (the string switched role between its statements), emits a message of
// its own marked continued: see StatementRoles.
const DDLFunctionBody = `
DECLARE
	q text := current_query();
	marker text;
	who text := coalesce(nullif(current_setting('role'), 'none'), session_user);
	continued boolean := false;
	objs jsonb := '[]';
	n int := 0;
	stray record;
BEGIN
	IF q IS NULL OR current_setting('pgjet.ddl_capture', true) = 'off' THEN
		RETURN;
	END IF;
	IF TG_TAG LIKE '% PUBLICATION' OR TG_TAG LIKE '% SUBSCRIPTION' OR TG_TAG LIKE '% EVENT TRIGGER' THEN
		RETURN; -- replication setup is each database's own
	END IF;
	IF TG_EVENT = 'ddl_command_end' AND TG_TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') THEN
		-- Tables of schema pgjet are never captured: one a user made there
		-- (an unqualified CREATE whose search_path begins with pgjet) would
		-- silently stay on the source. Replicas never had it, so moving it
		-- (ALTER TABLE ... SET SCHEMA, which is captured) would stop them:
		-- the hint makes it anew, each statement alone, since a captured
		-- query string is replayed whole.
		FOR stray IN SELECT c.object_identity AS ident, 'public.' || quote_ident(k.relname) AS anew
			FROM pg_event_trigger_ddl_commands() c JOIN pg_class k ON k.oid = c.objid
			WHERE c.object_type = 'table' AND c.schema_name = 'pgjet'
		LOOP
			RAISE WARNING 'pgjet: table % is in schema pgjet, which is pgjet''s own and never replicated', stray.ident
				USING HINT = format('Replicas lack it, so ALTER TABLE ... SET SCHEMA would stop them. Make it anew: CREATE TABLE %s (...), '
					'INSERT INTO %s SELECT * FROM %s if it has rows, then DROP TABLE %s, each statement sent alone; '
					'and keep schema pgjet out of the search_path of role %s (SET search_path = public).',
					stray.anew, stray.anew, stray.ident, stray.ident, current_user);
		END LOOP;
	END IF;
	marker := txid_current()::text || ':' || statement_timestamp()::text || ':' || md5(q);
	IF current_setting('pgjet.ddl_marker', true) IS NOT DISTINCT FROM marker THEN
		IF current_setting('pgjet.ddl_role', true) IS NOT DISTINCT FROM who THEN
			RETURN; -- this query string is captured already, as this role
		END IF;
		continued := true;
	END IF;
	IF TG_EVENT = 'ddl_command_start' THEN
		-- CREATE TABLE AS writes its rows before ddl_command_end: capture
		-- the query first when it is the statement itself (not a function
		-- call, not a temporary table; those are left to ddl_command_end).
		IF q !~* '^\s*create\s+(unlogged\s+)?table\M' THEN
			RETURN;
		END IF;
	ELSIF TG_EVENT = 'sql_drop' THEN
		SELECT count(*), coalesce(jsonb_agg(jsonb_build_object(
				'type', o.object_type, 'identity', o.object_identity, 'schema', o.schema_name,
				'table_schema', CASE WHEN o.object_type IN ('table', 'table column', 'table constraint', 'trigger', 'policy') THEN o.address_names[1] END,
				'table', CASE WHEN o.object_type IN ('table', 'table column', 'table constraint', 'trigger', 'policy') THEN o.address_names[2] END))
			FILTER (WHERE NOT o.is_temporary AND o.schema_name IS DISTINCT FROM 'pgjet'
				-- A dropped table's TOAST table goes with it: not an object
				-- of its own (a table of schema pgjet has one too).
				AND o.schema_name IS DISTINCT FROM 'pg_toast'
				AND NOT (o.object_type = 'schema' AND o.object_name = 'pgjet')), '[]')
		INTO n, objs
		FROM pg_event_trigger_dropped_objects() o;
	ELSE
		SELECT count(*), coalesce(jsonb_agg(jsonb_build_object(
				'type', c.object_type, 'identity', c.object_identity, 'schema', c.schema_name,
				'table_schema', tn.nspname, 'table', t.relname))
			FILTER (WHERE NOT coalesce(c.in_extension, false)
				AND coalesce(c.schema_name NOT IN ('pgjet', 'pg_temp') AND c.schema_name NOT LIKE 'pg\_temp\_%', true)
				AND coalesce(t.relpersistence, 'p') <> 't'
				AND NOT (c.object_type = 'schema' AND c.object_identity = 'pgjet')), '[]')
		INTO n, objs
		FROM pg_event_trigger_ddl_commands() c
		LEFT JOIN LATERAL (SELECT CASE c.classid
			WHEN 'pg_class'::regclass THEN (SELECT CASE
				WHEN r.relkind IN ('r', 'p') THEN r.oid
				WHEN r.relkind IN ('i', 'I') THEN (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = r.oid)
				WHEN r.relkind = 'S' THEN (SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
					AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1)
				END FROM pg_class r WHERE r.oid = c.objid)
			WHEN 'pg_constraint'::regclass THEN (SELECT nullif(k.conrelid, 0) FROM pg_constraint k WHERE k.oid = c.objid)
			WHEN 'pg_trigger'::regclass THEN (SELECT g.tgrelid FROM pg_trigger g WHERE g.oid = c.objid)
			WHEN 'pg_policy'::regclass THEN (SELECT p.polrelid FROM pg_policy p WHERE p.oid = c.objid)
			WHEN 'pg_attrdef'::regclass THEN (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = c.objid)
			WHEN 'pg_statistic_ext'::regclass THEN (SELECT s.stxrelid FROM pg_statistic_ext s WHERE s.oid = c.objid)
			END AS relid) x ON true
		LEFT JOIN pg_class t ON t.oid = x.relid AND t.relkind IN ('r', 'p')
		LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace;
		IF n = 0 AND TG_TAG LIKE 'DROP %' THEN
			RETURN; -- sql_drop reported it, or it dropped nothing
		END IF;
	END IF;
	IF n > 0 AND objs = '[]' THEN
		RETURN; -- only pgjet's own, temporary or extension objects
	END IF;
	PERFORM set_config('pgjet.ddl_marker', marker, true);
	PERFORM set_config('pgjet.ddl_role', who, true);
	PERFORM pg_logical_emit_message(true, 'pgjet.ddl', jsonb_build_object('tag', TG_TAG, 'sql', q,
		'search_path', current_setting('search_path'), 'objects', objs,
		'role', who, 'session_role', session_user, 'continued', continued)::text);
END
`

// DDLInstallSQL creates (or replaces) DDLFunctions and DDLTriggers. It
// needs a superuser, and runs in one transaction so DDL is never missed
// between the drop and the creation of a trigger.
func DDLInstallSQL() string {
	return `CREATE SCHEMA IF NOT EXISTS pgjet;
CREATE OR REPLACE FUNCTION ` + DDLFunction + ` RETURNS event_trigger LANGUAGE plpgsql AS $pgjet$` + DDLFunctionBody + `$pgjet$;
DROP EVENT TRIGGER IF EXISTS pgjet_ddl_start;
DROP EVENT TRIGGER IF EXISTS pgjet_ddl_end;
DROP EVENT TRIGGER IF EXISTS pgjet_ddl_drop;
CREATE EVENT TRIGGER pgjet_ddl_start ON ddl_command_start WHEN TAG IN ('CREATE TABLE AS') EXECUTE FUNCTION ` + DDLFunction + `;
CREATE EVENT TRIGGER pgjet_ddl_end ON ddl_command_end EXECUTE FUNCTION ` + DDLFunction + `;
CREATE EVENT TRIGGER pgjet_ddl_drop ON sql_drop EXECUTE FUNCTION ` + DDLFunction + `;
CREATE OR REPLACE FUNCTION ` + DDLPublishFunction + ` RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgjet$` + DDLPublishFunctionBody + `$pgjet$;
DROP EVENT TRIGGER IF EXISTS pgjet_ddl_publish;
DROP EVENT TRIGGER IF EXISTS pgjet_ddl_publish_start;
CREATE EVENT TRIGGER pgjet_ddl_publish ON ddl_command_end WHEN TAG IN (` + publishTags + `) EXECUTE FUNCTION ` + DDLPublishFunction + `;
CREATE EVENT TRIGGER pgjet_ddl_publish_start ON ddl_command_start WHEN TAG IN (` + publishTags + `) EXECUTE FUNCTION ` + DDLPublishFunction + `;`
}

// publishTags are the commands DDLPublishFunction handles. It runs at
// their start too, only to take its lock (PublicationLockKey) before the
// command locks a table: a command waiting for capture's lock then holds
// no lock of its own that capture, making its publication, may need.
const publishTags = `'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE SCHEMA'`

// DDL is a schema change captured on the source: the content of a
// pgjet.ddl logical message.
type DDL struct {
	// Tag is the command tag of the first command of the query that
	// fired the trigger, e.g. "ALTER TABLE".
	Tag string `json:"tag"`
	// SQL is the whole query string the client sent (current_query()):
	// it may hold several statements, and for DDL run by a function it is
	// the outer query that called the function.
	SQL string `json:"sql"`
	// SearchPath is the source session's search_path when it ran.
	SearchPath string `json:"search_path"`
	// Role is the role the query string ran as on the source when it
	// made the change (SET ROLE's role, else the session user): what it
	// created belongs to that role, and its privileges were checked. The
	// target replays it as that role. Empty in messages of a pgjet older
	// than this field; those replay as the apply role.
	Role string `json:"role,omitempty"`
	// SessionRole is the session user (session_user): it differs from
	// Role after SET ROLE, and is the role RESET ROLE returns to.
	SessionRole string `json:"session_role,omitempty"`
	// Continued marks a further schema change of a query string captured
	// already in this transaction, run as another role (Role) than the
	// message before it: the string switched role between its statements.
	// The applier replayed the string with the message before and checks
	// that it ran this change's statements as Role.
	Continued bool `json:"continued,omitempty"`
	// Objects are the objects the first command created, altered or
	// dropped.
	Objects []DDLObject `json:"objects"`
}

// DDLObject is an object a DDL command touched.
type DDLObject struct {
	Type     string `json:"type"`     // e.g. "table", "index", "table column"
	Identity string `json:"identity"` // quoted, schema-qualified, e.g. public."T"
	Schema   string `json:"schema"`
	// TableSchema and Table name, unquoted, the table the object belongs
	// to (the table itself, a column's, an index's or a constraint's
	// table); empty when the object is not part of a table or the table
	// is unknown (a dropped index).
	TableSchema string `json:"table_schema"`
	Table       string `json:"table"`
}

// ParseDDL decodes the content of a pgjet.ddl message.
func ParseDDL(content []byte) (*DDL, error) {
	var d DDL
	if err := json.Unmarshal(content, &d); err != nil {
		return nil, fmt.Errorf("decode pgjet.ddl message: %w", err)
	}
	if strings.TrimSpace(d.SQL) == "" {
		return nil, errors.New("decode pgjet.ddl message: no sql")
	}
	return &d, nil
}

// Tables returns the tables (schema, name) the DDL's objects belong to,
// each once, in order.
func (d *DDL) Tables() [][2]string {
	var out [][2]string
	seen := map[[2]string]bool{}
	for _, o := range d.Objects {
		if o.Table == "" {
			continue
		}
		k := [2]string{o.TableSchema, o.Table}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// SequenceValue is the position of one source sequence, as carried by a
// pgjet.sequences message (a JSON array of them).
type SequenceValue struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Value is the sequence's last_value: the last value handed out.
	Value int64 `json:"value"`
}

// ParseSequences decodes the content of a pgjet.sequences message.
func ParseSequences(content []byte) ([]SequenceValue, error) {
	var vs []SequenceValue
	if err := json.Unmarshal(content, &vs); err != nil {
		return nil, fmt.Errorf("decode pgjet.sequences message: %w", err)
	}
	return vs, nil
}

// Truncate shortens s to about n bytes for error messages, on a rune
// boundary, marking the cut.
func Truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// StatementKind classifies a statement of a captured query string for
// replay.
type StatementKind int

const (
	// Replay statements change the schema and are run on the target.
	Replay StatementKind = iota
	// Skip statements need not run on the target: transaction control,
	// session settings, row changes (they reach the target through the
	// stream), temporary objects and cluster-wide or replication objects.
	Skip
	// Opaque statements may have changed the schema through functions or
	// procedures they called (SELECT f(), CALL p(), SELECT INTO): pgjet
	// cannot replay the change they made without repeating their other
	// effects.
	Opaque
)

// Statement is one statement of a captured query string.
type Statement struct {
	SQL  string
	Kind StatementKind
}

// ReplayStatements splits a captured query string into its statements
// and classifies each. CREATE TABLE AS is rewritten to WITH NO DATA: its
// rows reach the target through the stream.
func ReplayStatements(sql string) []Statement {
	var out []Statement
	for _, st := range SplitStatements(sql) {
		toks := tokens(st, 8)
		kind := classify(toks)
		if kind == Replay && isCreateTableAs(st) {
			st = withNoData(st)
		}
		out = append(out, Statement{SQL: st, Kind: kind})
	}
	return out
}

func classify(toks []string) StatementKind {
	if len(toks) == 0 {
		return Skip
	}
	at := func(i int) string {
		if i < len(toks) {
			return toks[i]
		}
		return ""
	}
	switch toks[0] {
	case "CREATE", "ALTER", "DROP":
		i := 1
		if toks[0] == "CREATE" && at(1) == "OR" && at(2) == "REPLACE" {
			i = 3
		}
		if at(i) == "GLOBAL" || at(i) == "LOCAL" {
			i++
		}
		switch at(i) {
		case "TEMP", "TEMPORARY":
			return Skip
		case "ROLE", "USER", "GROUP", "DATABASE", "TABLESPACE", "SYSTEM", "PUBLICATION", "SUBSCRIPTION":
			return Skip // cluster-wide, or the database's own replication setup
		case "EVENT":
			if at(i+1) == "TRIGGER" {
				return Skip
			}
		}
		return Replay
	case "COMMENT", "GRANT", "REVOKE", "SECURITY", "IMPORT", "REFRESH", "DO":
		return Replay
	case "SELECT", "WITH", "CALL", "EXECUTE", "EXPLAIN", "(":
		return Opaque
	}
	return Skip
}

// isCreateTableAs reports whether st is CREATE [UNLOGGED] TABLE ... AS
// query: an AS keyword outside parentheses.
func isCreateTableAs(st string) bool {
	toks := tokens(st, 4)
	i := 1
	if len(toks) < 3 || toks[0] != "CREATE" {
		return false
	}
	if toks[i] == "UNLOGGED" {
		i++
	}
	if toks[i] != "TABLE" {
		return false
	}
	found := false
	scan(st, func(tok string, depth int, _ int) bool {
		if depth == 0 && tok == "AS" {
			found = true
			return false
		}
		return true
	})
	return found
}

// withNoData makes a CREATE TABLE AS statement create the table empty.
func withNoData(st string) string {
	var toks []string
	var ends []int
	scan(st, func(tok string, depth int, end int) bool {
		toks = append(toks, tok)
		ends = append(ends, end)
		return true
	})
	n := len(toks)
	if n >= 3 && toks[n-3] == "WITH" && toks[n-2] == "NO" && toks[n-1] == "DATA" {
		return st
	}
	if n >= 2 && toks[n-2] == "WITH" && toks[n-1] == "DATA" {
		// Replace "DATA" by "NO DATA": ends[n-1] is just past DATA.
		return st[:ends[n-1]-len("DATA")] + "NO DATA" + st[ends[n-1]:]
	}
	return strings.TrimRight(st, " \t\r\n") + " WITH NO DATA"
}

// tokens returns up to n leading keyword-like tokens of st, upper-cased;
// quoted identifiers, strings and other symbols are returned as themselves.
func tokens(st string, n int) []string {
	var out []string
	scan(st, func(tok string, _ int, _ int) bool {
		out = append(out, tok)
		return len(out) < n
	})
	return out
}

// SplitStatements splits a query string at its top-level semicolons, the
// way psql does: quotes, dollar quotes, comments and the BEGIN ... END
// bodies of CREATE FUNCTION and CREATE PROCEDURE are respected. Empty
// statements are dropped; statements are returned without the semicolon
// and trimmed of surrounding whitespace.
func SplitStatements(sql string) []string {
	var out []string
	start := 0
	var idents []string // leading identifiers of the current statement
	beginDepth := 0
	emit := func(end int) {
		if st := strings.TrimSpace(sql[start:end]); st != "" && !onlyComments(st) {
			out = append(out, st)
		}
		idents, beginDepth = idents[:0], 0
	}
	lx := lexer{s: sql}
	for {
		tok, kind, ok := lx.next()
		if !ok {
			break
		}
		switch kind {
		case tokSymbol:
			switch tok {
			case ";":
				if beginDepth == 0 {
					emit(lx.pos - 1)
					start = lx.pos
				}
			}
		case tokWord:
			idents = append(idents, tok)
			if routineBody(idents) && lx.depth == 0 {
				switch tok {
				case "BEGIN":
					beginDepth++
				case "CASE":
					if beginDepth >= 1 {
						beginDepth++
					}
				case "END":
					if beginDepth > 0 {
						beginDepth--
					}
				}
			}
		}
	}
	emit(len(sql))
	return out
}

// routineBody reports whether a statement starts CREATE [OR REPLACE]
// FUNCTION|PROCEDURE, whose SQL-standard body may hold semicolons.
func routineBody(idents []string) bool {
	if len(idents) < 2 || idents[0] != "CREATE" {
		return false
	}
	if idents[1] == "FUNCTION" || idents[1] == "PROCEDURE" {
		return true
	}
	return len(idents) >= 4 && idents[1] == "OR" && idents[2] == "REPLACE" && (idents[3] == "FUNCTION" || idents[3] == "PROCEDURE")
}

func onlyComments(st string) bool {
	lx := lexer{s: st}
	_, _, ok := lx.next()
	return !ok
}

// scan calls f with each token of st (words upper-cased), its parenthesis
// depth and the offset just past it, until f returns false.
func scan(st string, f func(tok string, depth int, end int) bool) {
	lx := lexer{s: st}
	for {
		d := lx.depth
		tok, _, ok := lx.next()
		if !ok {
			return
		}
		if tok == ")" {
			d = lx.depth
		}
		if !f(tok, d, lx.pos) {
			return
		}
	}
}

type tokKind int

const (
	tokWord   tokKind = iota // keyword or unquoted identifier, upper-cased
	tokQuoted                // string, quoted identifier or dollar-quoted text
	tokSymbol                // anything else, one byte (or a number)
)

// lexer tokenizes SQL just enough to find statement boundaries and
// leading keywords. It never fails: unterminated quotes and comments run
// to the end of the input.
type lexer struct {
	s     string
	pos   int
	depth int // parenthesis depth
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

func (lx *lexer) next() (string, tokKind, bool) {
	s := lx.s
	for lx.pos < len(s) {
		c := s[lx.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			lx.pos++
		case c == '-' && lx.pos+1 < len(s) && s[lx.pos+1] == '-':
			for lx.pos < len(s) && s[lx.pos] != '\n' {
				lx.pos++
			}
		case c == '/' && lx.pos+1 < len(s) && s[lx.pos+1] == '*':
			lx.pos += 2
			for nest := 1; nest > 0 && lx.pos < len(s); {
				switch {
				case strings.HasPrefix(s[lx.pos:], "/*"):
					nest++
					lx.pos += 2
				case strings.HasPrefix(s[lx.pos:], "*/"):
					nest--
					lx.pos += 2
				default:
					lx.pos++
				}
			}
		case c == '\'':
			start := lx.pos
			lx.quoted('\'', false)
			return s[start:lx.pos], tokQuoted, true
		case c == '"':
			start := lx.pos
			lx.quoted('"', false)
			return s[start:lx.pos], tokQuoted, true
		case (c == 'e' || c == 'E') && lx.pos+1 < len(s) && s[lx.pos+1] == '\'':
			start := lx.pos
			lx.pos++
			lx.quoted('\'', true)
			return s[start:lx.pos], tokQuoted, true
		case c == '$':
			start := lx.pos
			if tag, ok := dollarTag(s[lx.pos:]); ok {
				lx.pos += len(tag)
				if end := strings.Index(s[lx.pos:], tag); end >= 0 {
					lx.pos += end + len(tag)
				} else {
					lx.pos = len(s)
				}
				return s[start:lx.pos], tokQuoted, true
			}
			lx.pos++ // a parameter ($1) or a stray dollar
			for lx.pos < len(s) && s[lx.pos] >= '0' && s[lx.pos] <= '9' {
				lx.pos++
			}
			return s[start:lx.pos], tokSymbol, true
		case isIdentStart(c):
			start := lx.pos
			for lx.pos < len(s) && isIdentChar(s[lx.pos]) {
				lx.pos++
			}
			// U&'...' and B'...', X'...' strings: the prefix is a word
			// followed by a quote, which the next call reads as a string.
			return strings.ToUpper(s[start:lx.pos]), tokWord, true
		case c >= '0' && c <= '9':
			start := lx.pos
			for lx.pos < len(s) && (isIdentChar(s[lx.pos]) || s[lx.pos] == '.') {
				lx.pos++
			}
			return s[start:lx.pos], tokSymbol, true
		default:
			lx.pos++
			switch c {
			case '(':
				lx.depth++
			case ')':
				if lx.depth > 0 {
					lx.depth--
				}
			}
			return string(c), tokSymbol, true
		}
	}
	return "", 0, false
}

// quoted skips a quoted string or identifier starting at lx.pos; a doubled
// quote is an escaped quote, and with backslash (E'...') so is \'.
func (lx *lexer) quoted(q byte, backslash bool) {
	s := lx.s
	lx.pos++
	for lx.pos < len(s) {
		c := s[lx.pos]
		switch {
		case backslash && c == '\\':
			lx.pos += 2
		case c == q:
			if lx.pos+1 < len(s) && s[lx.pos+1] == q {
				lx.pos += 2
				continue
			}
			lx.pos++
			return
		default:
			lx.pos++
		}
	}
	lx.pos = len(s)
}

// dollarTag returns the opening $tag$ at the start of s, if s starts one.
func dollarTag(s string) (string, bool) {
	if len(s) < 2 || s[0] != '$' {
		return "", false
	}
	if s[1] == '$' {
		return "$$", true
	}
	if !isIdentStart(s[1]) {
		return "", false
	}
	for i := 2; i < len(s); i++ {
		switch {
		case s[i] == '$':
			return s[:i+1], true
		case isIdentChar(s[i]):
		default:
			return "", false
		}
	}
	return "", false
}
