package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// ensureDDLCapture installs pgjet's event triggers on the source when they
// are missing or outdated (see schema.DDLInstallSQL). Only a superuser may
// create event triggers: for any other role DDL capture stays off, with a
// warning, and capture goes on.
func (c *Capture) ensureDDLCapture(ctx context.Context, pool *pgxpool.Pool) error {
	if !c.cfg.DDL {
		// pg_event_trigger is readable by any role; the pgjet schema may not be.
		var triggers int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_event_trigger WHERE evtname = ANY($1) AND evtenabled <> 'D'", schema.DDLTriggers).Scan(&triggers); err != nil {
			return fmt.Errorf("look up DDL capture triggers: %w", err)
		}
		if triggers > 0 {
			c.log.Warn().Msg("pgjet's DDL event triggers are installed but --ddl=false: the schema changes they capture are dropped; " +
				"DROP EVENT TRIGGER pgjet_ddl_start, pgjet_ddl_end, pgjet_ddl_drop to stop capturing them")
		}
		return nil
	}
	names, bodies := make([]string, len(schema.DDLFunctions)), make([]string, len(schema.DDLFunctions))
	for i, f := range schema.DDLFunctions {
		names[i], bodies[i] = f.Name, f.Body
	}
	// current: every function is there with this pgjet's body; some: any is.
	var current, some bool
	var triggers int
	err := pool.QueryRow(ctx, `SELECT coalesce(bool_and(p.prosrc IS NOT DISTINCT FROM f.body), false), coalesce(bool_or(p.oid IS NOT NULL), false),
		(SELECT count(*) FROM pg_event_trigger WHERE evtname = ANY($3) AND evtenabled <> 'D')
		FROM unnest($1::text[], $2::text[]) f(name, body) LEFT JOIN pg_proc p ON p.oid = to_regprocedure(f.name)`,
		names, bodies, schema.DDLTriggers).Scan(&current, &some, &triggers)
	if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
		c.log.Warn().Err(err).Msg("DDL capture is off: this role may not use schema pgjet on the source; GRANT USAGE ON SCHEMA pgjet to it (deploy/postgres/roles.sql) or run with --ddl=false")
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up DDL capture triggers: %w", err)
	}
	if current && triggers == len(schema.DDLTriggers) {
		c.log.Debug().Msg("DDL capture installed")
		return nil
	}
	var super bool
	var role string
	if err := pool.QueryRow(ctx, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&role, &super); err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !super {
		if some && triggers > 0 {
			c.log.Warn().Str("role", role).Msg("pgjet's DDL event triggers on the source are from another pgjet version and role is not a superuser, so they cannot be updated; run pgjet-capture once as a superuser to update them")
			return nil
		}
		c.log.Warn().Str("role", role).Msgf("DDL capture is off: role %q is not a superuser, and only superusers can create the event triggers that capture schema changes; "+
			"schema changes on the source are not replicated (apply them to every replica by hand before using them), or run pgjet-capture once as a superuser to install them", role)
		return nil
	}
	var hadSchema bool
	if err := pool.QueryRow(ctx, "SELECT to_regnamespace($1) IS NOT NULL", schema.Own).Scan(&hadSchema); err != nil {
		return fmt.Errorf("look up schema %s: %w", schema.Own, err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("install DDL capture: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The installation itself is not a schema change to replicate.
	if _, err := tx.Exec(ctx, "SET LOCAL "+schema.DDLOffSetting+" = off"); err != nil {
		return fmt.Errorf("install DDL capture: %w", err)
	}
	if _, err := tx.Exec(ctx, schema.DDLInstallSQL()); err != nil {
		return fmt.Errorf("install DDL capture: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("install DDL capture: %w", err)
	}
	// Made anew (not an update of an older version's): a start that
	// fails for good removes it again.
	if !some && triggers == 0 {
		c.made.add(func(s *madeSet) { s.ddl, s.schema = true, s.schema || !hadSchema })
	}
	c.log.Info().Msg("DDL capture installed: event triggers " + strings.Join(schema.DDLTriggers, ", "))
	return nil
}

// seqState is what the heartbeat loop remembers of published sequences.
type seqState struct {
	last  string // content of the last pgjet.sequences message
	beats int    // heartbeats since it was published
}

// sequencesSQL lists the source's sequences that have handed out a value,
// with the table that owns each (serial or identity column), if any.
const sequencesSQL = `SELECT s.schemaname, s.sequencename, s.last_value, coalesce(tn.nspname, ''), coalesce(t.relname, '')
FROM pg_sequences s
JOIN pg_namespace sn ON sn.nspname = s.schemaname
JOIN pg_class sc ON sc.relnamespace = sn.oid AND sc.relname = s.sequencename
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = sc.oid AND d.objsubid = 0
	AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE s.schemaname <> 'pgjet' AND s.last_value IS NOT NULL
ORDER BY 1, 2`

// sequences publishes the source's sequence values when they changed
// since the last time, or SequenceEvery heartbeats passed. Pgoutput does
// not decode sequences (PG15): the values travel as a transactional
// logical message in a transaction of their own, so they reach replicas in
// commit order like rows. With a table filter, only sequences owned by
// captured tables are published.
func (c *Capture) sequences(ctx context.Context, pool *pgxpool.Pool, st *seqState) error {
	st.beats++
	rows, err := pool.Query(ctx, sequencesSQL)
	if err != nil {
		return fmt.Errorf("read sequences: %w", err)
	}
	f := newFilter(&c.cfg)
	var vals []schema.SequenceValue
	for rows.Next() {
		var v schema.SequenceValue
		var tschema, table string
		if err := rows.Scan(&v.Schema, &v.Name, &v.Value, &tschema, &table); err != nil {
			rows.Close()
			return fmt.Errorf("read sequences: %w", err)
		}
		if f.tableFilter() && (table == "" || !f.table(tschema, table)) {
			continue
		}
		vals = append(vals, v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read sequences: %w", err)
	}
	if len(vals) == 0 {
		return nil
	}
	b, err := json.Marshal(vals)
	if err != nil {
		return fmt.Errorf("encode sequences: %w", err)
	}
	content := string(b)
	if content == st.last && st.beats < SequenceEvery {
		return nil
	}
	// A logical message cannot be cut into pieces as rows are: many
	// sequences go in several messages of one transaction, each well
	// under a message (each applies on its own).
	parts, err := sequenceParts(vals, seqPartBytes)
	if err != nil {
		return err
	}
	batch := &pgx.Batch{}
	for _, part := range parts {
		batch.Queue("SELECT pg_logical_emit_message(true, $1, $2)", stream.PrefixSequences, part)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() }); err != nil {
		return fmt.Errorf("emit sequence values: %w", err)
	}
	c.log.Debug().Int("sequences", len(vals)).Int("messages", len(parts)).Msg("sequence values published")
	st.last, st.beats = content, 0
	return nil
}

// seqPartBytes bounds one pgjet.sequences message: far below any
// max_payload a NATS server is given.
const seqPartBytes = 8 << 10

// sequenceParts encodes vals as JSON arrays of at most max bytes each
// (one value alone may exceed it).
func sequenceParts(vals []schema.SequenceValue, max int) ([]string, error) {
	var parts []string
	part := []byte{'['}
	for _, v := range vals {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode sequences: %w", err)
		}
		if len(part) > 1 && len(part)+len(b)+1 > max {
			parts = append(parts, string(append(part, ']')))
			part = []byte{'['}
		}
		if len(part) > 1 {
			part = append(part, ',')
		}
		part = append(part, b...)
	}
	return append(parts, string(append(part, ']'))), nil
}
