package apply

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// CodeActiveSQLTransaction is the SQLSTATE of a statement that cannot run
// inside a transaction block (CREATE INDEX CONCURRENTLY, ...).
const CodeActiveSQLTransaction = "25001"

// ddlDoneTable records schema changes an operator applied to the target by
// hand after pgjet-apply stopped on them: they are not replayed again.
const ddlDoneTable = "pgjet.ddl_done"

const ddlDoneSQL = `CREATE TABLE IF NOT EXISTS pgjet.ddl_done (source text, commit_lsn pg_lsn, content_md5 text, done_at timestamptz DEFAULT now(), PRIMARY KEY (source, commit_lsn, content_md5))`

// message applies a logical message of a source transaction, inside the
// open target transaction and after the rows before it. Messages other
// than pgjet's own are for other consumers of the stream.
func (s *session) message(ctx context.Context, env *stream.Envelope, ch *stream.Change, seq uint64) error {
	switch ch.Prefix {
	case stream.PrefixDDL:
		return s.replayDDL(ctx, env, ch, seq)
	case stream.PrefixSequences:
		return s.setSequences(ctx, env, ch, seq)
	case stream.PrefixResync:
		return s.resync(ctx, env, ch, seq)
	case stream.PrefixRepair:
		return s.applyRepair(ctx, env, ch, seq)
	}
	if s.a.log.Trace().Enabled() {
		s.a.log.Trace().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("prefix", ch.Prefix).Msg("logical message passed over")
	}
	return nil
}

// replayedDDL is what the session remembers of the schema change it
// replayed last: a continuing message of the same query string
// (schema.DDL.Continued) is checked against it.
type replayedDDL struct {
	lsn     stream.LSN
	sql     string
	keys    []string // content md5 of its messages (pgjet.ddl_done)
	hasDone bool     // pgjet.ddl_done exists
	// roles are the roles its statements replayed as, in order, repeats
	// removed; at indexes the role of the last message matched.
	roles []string
	at    int
	// skip is set when nothing of it was replayed: marked done by hand,
	// nothing to replay, or replayed as the apply role (--no-owners).
	skip bool
}

// replayDDL runs a captured schema change on the target, each statement
// as the role that ran it on the source (see runDDL), with the source's
// search_path, then drops every cached plan and table description: the
// relations that follow are planned against the changed schema. The group
// commits after this source transaction (s.ddl), so later transactions see
// the change committed (an enum value added by ALTER TYPE cannot be used
// in the transaction that added it).
func (s *session) replayDDL(ctx context.Context, env *stream.Envelope, ch *stream.Change, seq uint64) error {
	sum := md5.Sum(ch.Content)
	key := hex.EncodeToString(sum[:])
	d, err := schema.ParseDDL(ch.Content)
	if err != nil {
		return pgerr.Fatalf(err, "the schema change message at LSN %s (stream seq %d) cannot be decoded; inspect it with `pgjet tail --from-seq %d`, make the target's schema match the source by hand, then %s",
			env.CommitLSN, seq, seq, s.markDone(env, true, key))
	}
	if prev := s.lastDDL; d.Continued && prev != nil && prev.lsn == env.CommitLSN && prev.sql == d.SQL {
		return s.continuedDDL(env, seq, d, key, prev)
	}
	// A continuing message whose first was left out (the table filter)
	// replays the string itself.
	stmts := schema.ReplayStatements(d.SQL)
	var replay []int
	opaque := ""
	for i, st := range stmts {
		switch st.Kind {
		case schema.Replay:
			replay = append(replay, i)
		case schema.Opaque:
			opaque = st.SQL
		}
	}
	last := &replayedDDL{lsn: env.CommitLSN, sql: d.SQL, keys: []string{key}, skip: true}
	s.lastDDL = last
	if len(replay) == 0 && opaque == "" {
		s.a.log.Debug().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("tag", d.Tag).
			Msg("schema change needs nothing on the target (temporary or cluster-wide objects)")
		return nil
	}
	hasDone, done, err := s.ddlDone(ctx, env, key)
	if err != nil {
		return err
	}
	last.hasDone = hasDone
	if done {
		s.a.log.Info().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("tag", d.Tag).
			Msg("schema change skipped: marked done in " + ddlDoneTable)
		s.schemaChanged()
		return nil
	}
	if len(replay) == 0 {
		return pgerr.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made by %q, which pgjet does not replay (a function or procedure call would repeat its other effects; SELECT INTO is not replayed, use CREATE TABLE AS): make the same change on the target by hand, then %s",
			d.Tag, env.CommitLSN, seq, schema.Truncate(opaque, 200), s.markDone(env, !hasDone, key))
	}

	// A message of a pgjet older than the role field, or --no-owners,
	// replays as the apply role.
	role := d.Role
	if s.a.cfg.NoOwners {
		role = ""
	}
	roles := make([]string, len(stmts))
	if role != "" {
		roles = schema.StatementRoles(stmts, role, d.SessionRole)
	}
	var seen []string // the roles of the replayed statements, repeats removed
	for _, i := range replay {
		if role != "" && roles[i] == "" {
			return pgerr.Fatalf(nil, "the schema change %q at LSN %s (stream seq %d) follows a RESET SESSION AUTHORIZATION (or a role switch to a role its text does not name plainly) in its query string, so pgjet cannot tell the role it ran as on the source; make it on the target by hand as that role, then %s",
				schema.Truncate(stmts[i].SQL, 200), env.CommitLSN, seq, s.markDone(env, !hasDone, key))
		}
		if len(seen) == 0 || seen[len(seen)-1] != roles[i] {
			seen = append(seen, roles[i])
		}
	}
	at := 0
	if role != "" {
		if at = slices.Index(seen, role); at < 0 {
			return s.rolesDiffer(env, seq, role, seen, last)
		}
	}
	checked := map[string]bool{}
	for _, i := range replay {
		if r := roles[i]; r != "" && !checked[r] {
			if err := s.checkRole(ctx, env, seq, d, r, key, hasDone); err != nil {
				return err
			}
			checked[r] = true
		}
		if err := s.runDDL(ctx, env, seq, d.SearchPath, roles[i], stmts[i].SQL, key, hasDone); err != nil {
			return err
		}
	}
	last.roles, last.at, last.skip = seen, at, role == ""
	s.schemaChanged()
	s.a.log.Info().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("tag", d.Tag).
		Str("role", strings.Join(seen, ",")).Str("sql", schema.Truncate(d.SQL, 200)).Msg("schema change applied")
	return nil
}

// continuedDDL checks a continuing message of the query string replayed
// last (prev): its schema change ran on the source as d.Role, a role
// after the one of the message before it, and the string's statements
// must have replayed as that role too. Nothing is run: the string was
// replayed whole with its first message.
func (s *session) continuedDDL(env *stream.Envelope, seq uint64, d *schema.DDL, key string, prev *replayedDDL) error {
	prev.keys = append(prev.keys, key)
	if prev.skip {
		return nil
	}
	i := slices.Index(prev.roles[prev.at+1:], d.Role)
	if i < 0 {
		return s.rolesDiffer(env, seq, d.Role, prev.roles, prev)
	}
	prev.at += 1 + i
	s.a.log.Debug().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("role", d.Role).
		Msg("schema change replayed already with its query string, as the role that made it")
	return nil
}

// rolesDiffer stops apply at a query string that made a schema change on
// the source as role, which its text does not tell: replaying it as the
// roles its text names (seen) could give an object another owner than on
// the source.
func (s *session) rolesDiffer(env *stream.Envelope, seq uint64, role string, seen []string, ddl *replayedDDL) error {
	return pgerr.Fatalf(nil, "the query string %q at LSN %s (stream seq %d) made a schema change on the source as role %q, but by its text its statements ran as %s: it switched role in a way its text does not show (set_config('role', ...), a function), or a statement pgjet does not replay (SELECT f(), CALL) changed the schema; make its changes on the target by hand, each as the role that made it, then %s",
		schema.Truncate(ddl.sql, 200), env.CommitLSN, seq, role, quoteAll(seen), s.markDone(env, !ddl.hasDone, ddl.keys...))
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", then ")
}

// ddlFunction replays one statement of a schema change: a SECURITY
// DEFINER function owned by the role that ran the statement on the
// source, made for that one statement in the session's temporary schema.
// It is never committed (cleanSession drops it), so no other session ever
// sees it. SET LOCAL ROLE would not do: a DO block or a function the
// statement runs may RESET ROLE (or SET ROLE, SET SESSION AUTHORIZATION)
// back to the apply role, and run the rest with the apply role's rights,
// which on the source it never had. Inside a SECURITY DEFINER function
// Postgres refuses to change role or session authorization: such a
// statement stops apply (see ddlError) instead.
const ddlFunction = "pg_temp.pgjet_ddl(pg_catalog.text)"

// runDDL replays statement st of a schema change as role ("" for the
// apply role), with search path path.
func (s *session) runDDL(ctx context.Context, env *stream.Envelope, seq uint64, path, role, st, key string, hasDone bool) error {
	if _, err := s.pg.ExecParams(ctx, "SELECT pg_catalog.set_config('search_path', $1, true)", [][]byte{[]byte(path)}, nil, nil, nil).Close(); err != nil {
		return s.ddlError(err, env, seq, "SET search_path = "+path, key, hasDone, role)
	}
	create := "CREATE FUNCTION " + ddlFunction + " RETURNS pg_catalog.void LANGUAGE plpgsql SECURITY DEFINER AS 'BEGIN EXECUTE $1; END'"
	if _, err := s.pg.Exec(ctx, create).ReadAll(); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return pgerr.Fatalf(err, "pgjet-apply replays each schema change through a temporary function, and the apply role may not create temporary objects in database %q; GRANT TEMPORARY ON DATABASE %s TO %s there and restart pgjet-apply",
				s.database(), pgx.Identifier{s.database()}.Sanitize(), pgx.Identifier{s.conn.Config().User}.Sanitize())
		}
		return fmt.Errorf("create the function replaying the schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	if role != "" {
		ident := pgx.Identifier{role}.Sanitize()
		if _, err := s.pg.Exec(ctx, "ALTER FUNCTION "+ddlFunction+" OWNER TO "+ident).ReadAll(); err != nil {
			if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
				return pgerr.Fatalf(err, "pgjet-apply replays the schema change at LSN %s (stream seq %d) as role %q, which made it on the source, through a temporary function that role owns, and role %q may not create temporary objects in database %q on the target; GRANT TEMPORARY ON DATABASE %s TO %s there and restart pgjet-apply",
					env.CommitLSN, seq, role, role, s.database(), pgx.Identifier{s.database()}.Sanitize(), ident)
			}
			return fmt.Errorf("give role %q the function replaying the schema change at LSN %s (stream seq %d): %w", role, env.CommitLSN, seq, err)
		}
	}
	if _, err := s.pg.ExecParams(ctx, "SELECT pg_temp.pgjet_ddl($1)", [][]byte{[]byte(st)}, nil, nil, nil).Close(); err != nil {
		return s.ddlError(err, env, seq, st, key, hasDone, role)
	}
	if err := s.cleanSession(ctx); err != nil {
		return fmt.Errorf("reset the session after the schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	return nil
}

// database is the target database's name, for errors (Postgres takes
// the user's name when the URL names none).
func (s *session) database() string {
	if db := s.conn.Config().Database; db != "" {
		return db
	}
	return s.conn.Config().User
}

// cleanSession undoes what a replayed statement may have left in the
// session besides the objects it made, before the session runs anything
// else: settings (SET, even SET LOCAL, in a DO block), temporary objects
// (a temporary type or table shadows the permanent one of its name for
// every statement that follows, pgjet's own included, and a temporary
// domain's CHECK would run as the apply role) and prepared statements (a
// statement prepared under the name of one of pgjet's would run as the
// apply role). The session's own settings and statements are made again.
func (s *session) cleanSession(ctx context.Context) error {
	if _, err := s.pg.Exec(ctx, "DISCARD TEMP; RESET ALL").ReadAll(); err != nil {
		return err
	}
	if err := s.conn.DeallocateAll(ctx); err != nil { // and forgets pgx's own
		return err
	}
	s.stmts = newStmtCache(s.a.cfg.StatementCache)
	s.a.stats.Prepared.Store(0)
	if err := s.settings(ctx); err != nil {
		return err
	}
	return s.prepareOwn(ctx)
}

// checkRole checks that the apply role may replay a schema change as
// role, which made it on the source: what the change creates then gets
// the owner it has there, a SECURITY DEFINER function its definer, and
// the change is checked against that role's privileges, never the apply
// role's. A role missing on the target, or one the apply role may not
// become, stops apply naming the fix.
func (s *session) checkRole(ctx context.Context, env *stream.Envelope, seq uint64, d *schema.DDL, role, key string, hasDone bool) error {
	var applyRole string
	var exists, member, super bool
	// Owning an object is allowed to the roles the session user is a
	// member of (any role, for a superuser).
	err := s.conn.QueryRow(ctx, `SELECT session_user, r.oid IS NOT NULL,
			coalesce(pg_has_role(session_user, r.oid, 'MEMBER'), false), coalesce(r.rolsuper, false)
		FROM (SELECT $1::text AS name) x LEFT JOIN pg_roles r ON r.rolname = x.name`, role).Scan(&applyRole, &exists, &member, &super)
	if err != nil {
		return fmt.Errorf("look up role %q of schema change at LSN %s (stream seq %d): %w", role, env.CommitLSN, seq, err)
	}
	ident := pgx.Identifier{role}.Sanitize()
	switch {
	case !exists:
		return pgerr.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made on the source by role %q, which does not exist on the target; create it there (pgjet roles --source SOURCE_URL --target TARGET_URL copies the source's roles, or CREATE ROLE %s) and restart pgjet-apply",
			d.Tag, env.CommitLSN, seq, role, ident)
	case !member && super:
		return pgerr.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made on the source by role %q, a superuser, which the apply role %q may not become; make schema changes on the source as a role that is no superuser, or make this one on the target by hand, then %s",
			d.Tag, env.CommitLSN, seq, role, applyRole, s.markDone(env, !hasDone, key))
	case !member:
		return pgerr.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made on the source by role %q, which the apply role %q may not become on the target; GRANT %s TO %s there (the apply role replays each schema change as the role that made it, see deploy/postgres/roles.sql) and restart pgjet-apply",
			d.Tag, env.CommitLSN, seq, role, applyRole, ident, pgx.Identifier{applyRole}.Sanitize())
	}
	return nil
}

// schemaChanged forgets what the session knows of the target's tables and
// makes the group commit after this source transaction.
func (s *session) schemaChanged() {
	clear(s.plans)
	clear(s.tables)
	s.ddl = true
}

// ddlDone reports whether the ddl_done table exists and whether it marks
// this schema change as applied by hand.
func (s *session) ddlDone(ctx context.Context, env *stream.Envelope, key string) (exists, done bool, err error) {
	if err := s.conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", ddlDoneTable).Scan(&exists); err != nil {
		return false, false, fmt.Errorf("look up %s: %w", ddlDoneTable, err)
	}
	if !exists {
		return false, false, nil
	}
	err = s.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+ddlDoneTable+" WHERE source = $1 AND commit_lsn = $2::pg_lsn AND content_md5 = $3)",
		s.a.cfg.Name, env.CommitLSN.String(), key).Scan(&done)
	if err != nil {
		return true, false, fmt.Errorf("read %s: %w", ddlDoneTable, err)
	}
	return true, done, nil
}

// markDone is the instruction that tells pgjet-apply a schema change was
// applied by hand: keys are the content md5 of its messages.
func (s *session) markDone(env *stream.Envelope, create bool, keys ...string) string {
	rows := make([]string, len(keys))
	for i, key := range keys {
		rows[i] = fmt.Sprintf("(%s, '%s', '%s')", "'"+strings.ReplaceAll(s.a.cfg.Name, "'", "''")+"'", env.CommitLSN, key)
	}
	ins := fmt.Sprintf("INSERT INTO %s (source, commit_lsn, content_md5) VALUES %s", ddlDoneTable, strings.Join(rows, ", "))
	if create {
		ins = ddlDoneSQL + "; " + ins
	}
	return "mark it done on the target and restart pgjet-apply: " + ins
}

// settingRoutines are the Postgres functions that refuse to change a
// setting (PgError.Routine): "cannot set parameter "role" within
// security-definer function", "permission denied to set parameter" (PG 15:
// set_config_option, set_config_option_ext; PG 16 and later:
// set_config_with_handle). Only the wording of the stop line depends on
// it: Postgres' own message is in the line either way.
var settingRoutines = map[string]bool{"set_config_option": true, "set_config_option_ext": true, "set_config_with_handle": true}

// ddlError says which statement of a schema change failed, where, and how
// to proceed; role is the role it ran as ("" for the apply role).
func (s *session) ddlError(err error, env *stream.Envelope, seq uint64, st, key string, hasDone bool, role string) error {
	if pgerr.IsRetryable(err) {
		return fmt.Errorf("apply schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == CodeActiveSQLTransaction {
		return pgerr.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) cannot run inside a transaction block, where pgjet-apply replays it with the rows around it; run it by hand on the target, then %s",
			schema.Truncate(st, 200), env.CommitLSN, seq, s.markDone(env, !hasDone, key))
	}
	if errors.As(err, &pe) && pe.Code == pgerr.CodeInsufficientPriv && settingRoutines[pe.Routine] {
		who := "the apply role"
		if role != "" {
			who = strconv.Quote(role)
		}
		return pgerr.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) changes its role or session authorization (SET ROLE, RESET ROLE, SET SESSION AUTHORIZATION in a DO block or a function it runs), or a setting its role may not set: pgjet-apply replays a schema change as the role that made it and does not let it switch, since on the target the rest would run with another role's rights than on the source; make the change on the target by hand as %s, then %s",
			schema.Truncate(st, 200), env.CommitLSN, seq, who, s.markDone(env, !hasDone, key))
	}
	if role != "" && pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
		return pgerr.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) failed on the target as role %q, which made it on the source: the role lacks a privilege there that it has on the source (ownership of an object a replica built by an older pgjet gave the apply role, CREATE on a schema, ...); give it the same ownership and grants as on the source and restart pgjet-apply, or make the change by hand, then %s",
			schema.Truncate(st, 200), env.CommitLSN, seq, role, s.markDone(env, !hasDone, key))
	}
	return pgerr.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) failed on the target; make the target's schema match the source by hand (run the statement or its equivalent), then %s",
		schema.Truncate(st, 200), env.CommitLSN, seq, s.markDone(env, !hasDone, key))
}

// setSequences moves the target's sequences forward to the source's
// values, never backwards: a promoted replica must not hand out ids its
// rows already use, and a replica that ran ahead keeps its values.
// Sequences missing on the target are passed over, and so are those of a
// writing region (--local-name) that --follow-sequences does not name:
// that region hands out ids from its own series, which another region's
// values would move into the other's (START 1/START 2, INCREMENT 2).
func (s *session) setSequences(ctx context.Context, env *stream.Envelope, ch *stream.Change, seq uint64) error {
	all, err := schema.ParseSequences(ch.Content)
	if err != nil {
		return pgerr.Fatalf(err, "the sequence values message at LSN %s (stream seq %d) cannot be decoded; inspect it with `pgjet tail --from-seq %d`",
			env.CommitLSN, seq, seq)
	}
	vals := all[:0]
	for _, v := range all {
		if s.a.cfg.followsSequence(v.Schema, v.Name) {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return nil
	}
	schemas, names, values := make([]string, len(vals)), make([]string, len(vals)), make([]int64, len(vals))
	for i, v := range vals {
		schemas[i], names[i], values[i] = v.Schema, v.Name, v.Value
	}
	// last_value is NULL for a sequence that has handed out nothing since
	// its creation or a setval(..., false): its next value is then read
	// from the sequence itself below.
	rows, err := s.conn.Query(ctx, `SELECT x.ord - 1, q.sequencename IS NOT NULL, q.last_value, coalesce(q.increment_by, 1),
			coalesce(x.v BETWEEN q.min_value AND q.max_value, false)
		FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS x(s, n, v, ord)
		LEFT JOIN pg_sequences q ON q.schemaname = x.s AND q.sequencename = x.n`, schemas, names, values)
	if err != nil {
		return s.seqError(err, env, seq)
	}
	type state struct {
		present, inRange bool
		last             *int64
		inc              int64
	}
	states := make([]state, len(vals))
	for rows.Next() {
		var i int
		var st state
		if err := rows.Scan(&i, &st.present, &st.last, &st.inc, &st.inRange); err != nil {
			rows.Close()
			return s.seqError(err, env, seq)
		}
		if i >= 0 && i < len(states) {
			states[i] = st
		}
	}
	if err := rows.Err(); err != nil {
		return s.seqError(err, env, seq)
	}
	var setS, setN []string
	var setV []int64
	for i, v := range vals {
		st := states[i]
		name := pgx.Identifier{v.Schema, v.Name}.Sanitize()
		switch {
		case !st.present:
			s.a.log.Debug().Str("sequence", name).Msg("sequence missing on the target: value not set")
			continue
		case !st.inRange:
			s.a.log.Warn().Str("sequence", name).Int64("value", v.Value).Msg("source sequence value outside the target sequence's range: not set")
			continue
		}
		forward := false
		if st.last != nil {
			forward = st.inc > 0 && v.Value > *st.last || st.inc < 0 && v.Value < *st.last
		} else {
			// Nothing handed out: the sequence's own last_value is the
			// next value nextval returns.
			var next int64
			if err := s.conn.QueryRow(ctx, "SELECT last_value FROM "+name).Scan(&next); err != nil {
				return s.seqError(err, env, seq)
			}
			forward = st.inc > 0 && v.Value >= next || st.inc < 0 && v.Value <= next
		}
		if forward {
			setS, setN, setV = append(setS, v.Schema), append(setN, v.Name), append(setV, v.Value)
		}
	}
	if len(setV) == 0 {
		return nil
	}
	if _, err := s.conn.Exec(ctx, `SELECT setval(format('%I.%I', x.s, x.n)::regclass, x.v, true)
		FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(s, n, v)`, setS, setN, setV); err != nil {
		return s.seqError(err, env, seq)
	}
	if s.a.log.Debug().Enabled() {
		s.a.log.Debug().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Int("sequences", len(setV)).Msg("sequences moved forward")
	}
	return nil
}

func (s *session) seqError(err error, env *stream.Envelope, seq uint64) error {
	if pgerr.IsRetryable(err) {
		return fmt.Errorf("set sequences at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	return pgerr.Fatalf(err, "setting sequence values at LSN %s (stream seq %d) failed on the target; give the apply role USAGE and UPDATE on the target's sequences (or make them match the source) and restart pgjet-apply",
		env.CommitLSN, seq)
}
