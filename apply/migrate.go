package apply

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
)

// pgjet's own tables on a target (pgjet.applied, pgjet.conflicts,
// pgjet.restore, pgjet.snapshot_tables) change with pgjet. Their layout
// has a version, recorded in pgjet.schema_version, and each change is a
// numbered migration that runs once, in one transaction with the record
// of its version: a target is always at one version, never between two,
// and an applier meeting a version newer than it knows refuses to touch
// tables whose meaning it does not know.

// migration is one numbered change of pgjet's tables.
type migration struct {
	version int
	// what says what the migration does; it is recorded with its version.
	what string
	sql  string
}

// migrations are every layout change, in order; the last one's version
// is the layout this pgjet writes. Never edit one that was released: add
// the next. Each runs in the transaction that records it, so it may use
// any transactional DDL.
var migrations = []migration{
	{1, "applied, conflicts, restore and snapshot_tables", unversionedSQL},
	{2, "applier_state", stateSQL},
	{3, "skip", skipSQL},
	{4, "generations", generationsSQL},
}

// unversionedSQL is the layout pgjet kept before versions, written so
// that it upgrades in place every layout an unversioned pgjet made (hence
// IF NOT EXISTS throughout): migration 1 of every target that predates
// versions, and the creation of a new target.
const unversionedSQL = `
CREATE SCHEMA IF NOT EXISTS pgjet;
CREATE TABLE IF NOT EXISTS pgjet.applied (
	source      text PRIMARY KEY,
	commit_lsn  pg_lsn NOT NULL,
	end_lsn     pg_lsn NOT NULL,
	stream_seq  bigint NOT NULL,
	commit_time timestamptz,
	applied_at  timestamptz NOT NULL DEFAULT now()
);
-- source_lsn is the source WAL position this target has caught up to: the
-- end of the newest applied transaction, or a newer heartbeat.
ALTER TABLE pgjet.applied ADD COLUMN IF NOT EXISTS source_lsn pg_lsn;
CREATE TABLE IF NOT EXISTS pgjet.conflicts (
	id          bigserial PRIMARY KEY,
	at          timestamptz NOT NULL DEFAULT now(),
	source      text NOT NULL,
	kind        text NOT NULL,
	table_name  text NOT NULL,
	commit_lsn  pg_lsn NOT NULL,
	key         jsonb,
	local_row   jsonb,
	remote_row  jsonb,
	decision    text NOT NULL
);
-- Who wrote each side of a conflict, and when: the writer of the local row
-- version (a source name, or this database's --local-name for local
-- writes) and its commit time (track_commit_timestamp), and the incoming
-- change's source and source commit time.
ALTER TABLE pgjet.conflicts
	ADD COLUMN IF NOT EXISTS local_origin text,
	ADD COLUMN IF NOT EXISTS local_commit_time timestamptz,
	ADD COLUMN IF NOT EXISTS remote_origin text,
	ADD COLUMN IF NOT EXISTS remote_commit_time timestamptz;
CREATE TABLE IF NOT EXISTS pgjet.restore (
	source      text PRIMARY KEY,
	snapshot    text NOT NULL,
	stream_seq  bigint NOT NULL,
	done        boolean NOT NULL DEFAULT false,
	started_at  timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz
);
-- Tables a resumed snapshot copied later than the snapshot's own point:
-- changes to them before their lsn are in their rows already.
CREATE TABLE IF NOT EXISTS pgjet.snapshot_tables (
	source      text NOT NULL,
	schema_name text NOT NULL,
	table_name  text NOT NULL,
	lsn         pg_lsn NOT NULL,
	PRIMARY KEY (source, schema_name, table_name)
);
-- rows_only: the restore loads rows into tables the target had (pgjet
-- replay --force); a resumed restore must not create the schema again,
-- and one that created it must not skip the rest of it.
ALTER TABLE pgjet.restore ADD COLUMN IF NOT EXISTS rows_only boolean NOT NULL DEFAULT false;`

// versionSQL creates the table of versions: one row per migration run.
const versionSQL = `
CREATE SCHEMA IF NOT EXISTS pgjet;
CREATE TABLE IF NOT EXISTS pgjet.schema_version (
	version    integer PRIMARY KEY,
	what       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
);`

// SchemaVersion is the version of pgjet's tables this pgjet writes.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrationLock is the key of the transaction-level advisory lock every
// migration takes ("pgjet" in ASCII): two appliers (of two sources) that
// start on one target together run the migrations one after the other,
// and the second finds them done.
const migrationLock int64 = 0x70676a6574

// queryRower is what reads the version: a connection or a transaction.
type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaVersion reads the version of pgjet's tables on a target: 0 when
// they predate versions or do not exist.
func schemaVersion(ctx context.Context, q queryRower) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('pgjet.schema_version') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("look up pgjet.schema_version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgjet.schema_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read pgjet.schema_version: %w", err)
	}
	return v, nil
}

// newerSchema is the error of a target whose tables a newer pgjet wrote.
func newerSchema(db string, have int) error {
	return pgerr.Fatalf(nil, "pgjet's tables on %s are at schema version %d, newer than version %d that this pgjet knows: a newer pgjet-apply has run there; upgrade pgjet-apply and pgjet to that release or later",
		redact.Postgres(db), have, SchemaVersion())
}

// checkSchemaVersion refuses a target whose tables are newer than this
// pgjet knows, changing nothing: for a reader that must not misread them
// before it migrates.
func checkSchemaVersion(ctx context.Context, q queryRower, db string) error {
	have, err := schemaVersion(ctx, q)
	if err != nil {
		return err
	}
	if have > SchemaVersion() {
		return newerSchema(db, have)
	}
	return nil
}

// migrate brings pgjet's tables on the target of conn to SchemaVersion:
// it runs, in one transaction under migrationLock, every migration past
// the target's version and records each. It does nothing to a target at
// the version, and refuses (a FatalError) one past it. The errors of
// Postgres come back wrapped, for the caller to name a missing privilege.
func migrate(ctx context.Context, conn *pgx.Conn, db string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate pgjet's tables: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("lock pgjet's tables for migration: %w", err)
	}
	// pgjet's own tables, on a target that is captured too: not a schema
	// change for pgjet's DDL capture to warn of (see schema.DDLFunctionBody).
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config($1, 'off', true)", schema.DDLOffSetting); err != nil {
		return fmt.Errorf("migrate pgjet's tables: %w", err)
	}
	have, err := schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if have > SchemaVersion() {
		return newerSchema(db, have)
	}
	if have == SchemaVersion() {
		return tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, versionSQL); err != nil {
		return fmt.Errorf("create pgjet.schema_version: %w", err)
	}
	for _, m := range migrations {
		if m.version <= have {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migrate pgjet's tables to version %d (%s): %w", m.version, m.what, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO pgjet.schema_version (version, what) VALUES ($1, $2)", m.version, m.what); err != nil {
			return fmt.Errorf("record pgjet's schema version %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit the migration of pgjet's tables to version %d: %w", SchemaVersion(), err)
	}
	return nil
}
