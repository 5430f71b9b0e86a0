package apply

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgjet/pgjet/schema"
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
	}
	if s.a.log.Trace().Enabled() {
		s.a.log.Trace().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("prefix", ch.Prefix).Msg("logical message passed over")
	}
	return nil
}

// replayDDL runs a captured schema change on the target with the source's
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
		return schema.Fatalf(err, "the schema change message at LSN %s (stream seq %d) cannot be decoded; inspect it with `pgjet tail --from-seq %d`, make the target's schema match the source by hand, then %s",
			env.CommitLSN, seq, seq, s.markDone(env, key, true))
	}
	var replay []string
	opaque := ""
	for _, st := range schema.ReplayStatements(d.SQL) {
		switch st.Kind {
		case schema.Replay:
			replay = append(replay, st.SQL)
		case schema.Opaque:
			opaque = st.SQL
		}
	}
	if len(replay) == 0 && opaque == "" {
		s.a.log.Debug().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("tag", d.Tag).
			Msg("schema change needs nothing on the target (temporary or cluster-wide objects)")
		return nil
	}
	hasDone, done, err := s.ddlDone(ctx, env, key)
	if err != nil {
		return err
	}
	if done {
		s.a.log.Info().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("tag", d.Tag).
			Msg("schema change skipped: marked done in " + ddlDoneTable)
		s.schemaChanged()
		return nil
	}
	if len(replay) == 0 {
		return schema.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made by %q, which pgjet does not replay (a function or procedure call would repeat its other effects; SELECT INTO is not replayed, use CREATE TABLE AS): make the same change on the target by hand, then %s",
			d.Tag, env.CommitLSN, seq, schema.Truncate(opaque, 200), s.markDone(env, key, !hasDone))
	}

	var prev string
	if err := s.conn.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&prev); err != nil {
		return fmt.Errorf("read search_path before schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	// A message of a pgjet older than the role field, or --no-owners,
	// replays as the apply role.
	role := d.Role
	if s.a.cfg.NoOwners {
		role = ""
	}
	if role != "" {
		if err := s.setRole(ctx, env, seq, d, key, hasDone); err != nil {
			return err
		}
	}
	if _, err := s.conn.Exec(ctx, "SELECT set_config('search_path', $1, true)", d.SearchPath); err != nil {
		return s.ddlError(err, env, seq, "SET search_path = "+d.SearchPath, key, hasDone, role)
	}
	for _, st := range replay {
		// Simple protocol: no parameters, and the statement may be any
		// utility command.
		if _, err := s.pg.Exec(ctx, st).ReadAll(); err != nil {
			return s.ddlError(err, env, seq, st, key, hasDone, role)
		}
	}
	if role != "" {
		// The rows after the change in this transaction are written by
		// the apply role again.
		if _, err := s.conn.Exec(ctx, "RESET ROLE"); err != nil {
			return fmt.Errorf("reset role after schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
		}
	}
	if _, err := s.conn.Exec(ctx, "SELECT set_config('search_path', $1, true)", prev); err != nil {
		return fmt.Errorf("restore search_path after schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	s.schemaChanged()
	s.a.log.Info().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Str("tag", d.Tag).
		Str("role", role).Str("sql", schema.Truncate(d.SQL, 200)).Msg("schema change applied")
	return nil
}

// setRole makes the open target transaction run as the role that made a
// schema change on the source (SET LOCAL ROLE, until RESET ROLE): what
// the change creates gets the owner it has there, a SECURITY DEFINER
// function its definer, and the change is checked against that role's
// privileges, never the apply role's. A role missing on the target, or
// one the apply role may not become, stops apply naming the fix.
func (s *session) setRole(ctx context.Context, env *stream.Envelope, seq uint64, d *schema.DDL, key string, hasDone bool) error {
	var applyRole string
	var exists, member, super bool
	// SET ROLE is allowed to the roles the session user is a member of
	// (any role, for a superuser).
	err := s.conn.QueryRow(ctx, `SELECT session_user, r.oid IS NOT NULL,
			coalesce(pg_has_role(session_user, r.oid, 'MEMBER'), false), coalesce(r.rolsuper, false)
		FROM (SELECT $1::text AS name) x LEFT JOIN pg_roles r ON r.rolname = x.name`, d.Role).Scan(&applyRole, &exists, &member, &super)
	if err != nil {
		return fmt.Errorf("look up role %q of schema change at LSN %s (stream seq %d): %w", d.Role, env.CommitLSN, seq, err)
	}
	ident := pgx.Identifier{d.Role}.Sanitize()
	switch {
	case !exists:
		return schema.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made on the source by role %q, which does not exist on the target; create it there (pgjet roles --source SOURCE_URL --target TARGET_URL copies the source's roles, or CREATE ROLE %s) and restart pgjet-apply",
			d.Tag, env.CommitLSN, seq, d.Role, ident)
	case !member && super:
		return schema.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made on the source by role %q, a superuser, which the apply role %q may not become; make schema changes on the source as a role that is no superuser, or make this one on the target by hand, then %s",
			d.Tag, env.CommitLSN, seq, d.Role, applyRole, s.markDone(env, key, !hasDone))
	case !member:
		return schema.Fatalf(nil, "the schema change (%s) at LSN %s (stream seq %d) was made on the source by role %q, which the apply role %q may not become on the target; GRANT %s TO %s there (the apply role replays each schema change as the role that made it, see deploy/postgres/roles.sql) and restart pgjet-apply",
			d.Tag, env.CommitLSN, seq, d.Role, applyRole, ident, pgx.Identifier{applyRole}.Sanitize())
	}
	if _, err := s.conn.Exec(ctx, "SET LOCAL ROLE "+ident); err != nil {
		return s.ddlError(err, env, seq, "SET ROLE "+ident, key, hasDone, d.Role)
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
// applied by hand.
func (s *session) markDone(env *stream.Envelope, key string, create bool) string {
	ins := fmt.Sprintf("INSERT INTO %s (source, commit_lsn, content_md5) VALUES (%s, '%s', '%s')",
		ddlDoneTable, "'"+strings.ReplaceAll(s.a.cfg.Name, "'", "''")+"'", env.CommitLSN, key)
	if create {
		ins = ddlDoneSQL + "; " + ins
	}
	return "mark it done on the target and restart pgjet-apply: " + ins
}

// ddlError says which statement of a schema change failed, where, and how
// to proceed; role is the role it ran as ("" for the apply role).
func (s *session) ddlError(err error, env *stream.Envelope, seq uint64, st, key string, hasDone bool, role string) error {
	if schema.IsRetryable(err) {
		return fmt.Errorf("apply schema change at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == CodeActiveSQLTransaction {
		return schema.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) cannot run inside a transaction block, where pgjet-apply replays it with the rows around it; run it by hand on the target, then %s",
			schema.Truncate(st, 200), env.CommitLSN, seq, s.markDone(env, key, !hasDone))
	}
	if role != "" && schema.PgCode(err) == schema.CodeInsufficientPriv {
		return schema.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) failed on the target as role %q, which made it on the source: the role lacks a privilege there that it has on the source (ownership of an object a replica built by an older pgjet gave the apply role, CREATE on a schema, ...); give it the same ownership and grants as on the source and restart pgjet-apply, or make the change by hand, then %s",
			schema.Truncate(st, 200), env.CommitLSN, seq, role, s.markDone(env, key, !hasDone))
	}
	return schema.Fatalf(err, "the schema change %q at LSN %s (stream seq %d) failed on the target; make the target's schema match the source by hand (run the statement or its equivalent), then %s",
		schema.Truncate(st, 200), env.CommitLSN, seq, s.markDone(env, key, !hasDone))
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
		return schema.Fatalf(err, "the sequence values message at LSN %s (stream seq %d) cannot be decoded; inspect it with `pgjet tail --from-seq %d`",
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
	if schema.IsRetryable(err) {
		return fmt.Errorf("set sequences at LSN %s (stream seq %d): %w", env.CommitLSN, seq, err)
	}
	return schema.Fatalf(err, "setting sequence values at LSN %s (stream seq %d) failed on the target; give the apply role USAGE and UPDATE on the target's sequences (or make them match the source) and restart pgjet-apply",
		env.CommitLSN, seq)
}
