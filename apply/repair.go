package apply

// What pgjet verify --repair needs of a target that only pgjet-apply knows:
// pgjet's tables, the replication origin the repaired rows are written
// under, and the shape of pgjet.conflicts. The repair itself is
// verify.Repair.

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/apply/verify"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
)

// KindRepair is the kind of the pgjet.conflicts rows of pgjet verify
// --repair: one per row it inserted, updated or deleted (the decision),
// with the row before (local_row) and after (remote_row).
const KindRepair = "repair"

// Repairer writes a repair of source's rows into a target.
type Repairer struct {
	source string
	origin bool // the session writes under RepairOriginName
	// Warnings say what the session runs without.
	Warnings []string
}

// PrepareRepair readies the session of conn, on the target db, for a
// repair of source's rows: pgjet's tables at this pgjet's version (the
// repair records into pgjet.conflicts), the replication origin
// RepairOriginName (so a capture of the target does not publish the rows
// again, and the applier counts them as the source's), and
// session_replication_role = replica, as the applier has (triggers and
// foreign keys do not fire for repaired rows). Without the privileges of
// the last two it goes on, saying so in Warnings.
func PrepareRepair(ctx context.Context, conn *pgx.Conn, db, source string) (*Repairer, error) {
	r := &Repairer{source: source}
	if err := migrate(ctx, conn, db); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return nil, pgerr.Fatalf(err, "the repair records what it changes in pgjet.conflicts, and this role may not create pgjet's tables on %s; run it as the apply role", redact.Postgres(db))
		}
		return nil, err
	}
	_, name, err := TargetOrigins(ctx, conn, source)
	if err != nil {
		return nil, err
	}
	_, err = takeOrigin(ctx, conn, name)
	switch {
	case err == nil:
		r.origin = true
	case pgerr.PgCode(err) == pgerr.CodeInsufficientPriv:
		r.Warnings = append(r.Warnings, fmt.Sprintf("may not use replication origins, so the repaired rows are not marked as pgjet's (%s): a capture of the target (active-active) would publish them again; run the repair as the apply role", name))
	case pgerr.PgCode(err) == pgerr.CodeObjectInUse:
		return nil, fmt.Errorf("replication origin %s is in use: another pgjet verify --repair of source %s runs on this database; wait for it", name, source)
	default:
		return nil, fmt.Errorf("set up replication origin %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		r.Warnings = append(r.Warnings, "may not set session_replication_role = replica: triggers and foreign keys fire for the repaired rows")
	}
	return r, nil
}

// Stamp marks repair transaction tx as written under the repair's origin,
// at the source's position lsn and time at.
func (r *Repairer) Stamp(ctx context.Context, tx pgx.Tx, lsn string, at time.Time) error {
	if !r.origin {
		return nil
	}
	if _, err := tx.Exec(ctx, originSQL, lsn, at); err != nil {
		return fmt.Errorf("stamp the repair with the source's position: %w", err)
	}
	return nil
}

// Record records the rows repair transaction tx changed
// (verify.RepairedTable) in pgjet.conflicts.
func (r *Repairer) Record(ctx context.Context, tx pgx.Tx, lsn string, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO pgjet.conflicts (source, kind, table_name, commit_lsn, key, local_row, remote_row, decision, remote_origin, remote_commit_time)
		SELECT $1, $2, table_name, $3::pg_lsn, key, old, new, op, $1, $4::timestamptz FROM `+verify.RepairedTable, r.source, KindRepair, lsn, at)
	if err != nil {
		return fmt.Errorf("record the repaired rows in pgjet.conflicts: %w", err)
	}
	return nil
}

// AppliedSources lists the pgjet sources applied into the database of
// conn: those whose applier has an origin there (OriginName), which it
// takes on start, before it applies anything, and those of its
// pgjet.applied, where the role may read it.
func AppliedSources(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	oid, err := databaseOID(ctx, conn)
	if err != nil {
		return nil, err
	}
	// By OID: a name would fail without USAGE on schema pgjet.
	var has bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'pgjet' AND c.relname = 'applied' AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))`).Scan(&has); err != nil {
		return nil, fmt.Errorf("look for pgjet.applied: %w", err)
	}
	q := `SELECT s FROM (SELECT split_part(substr(roname, $1), '.', 1) AS s, roname FROM pg_catalog.pg_replication_origin) o
		WHERE roname = $2 || s || '.' || $3`
	if has {
		q += " UNION SELECT source FROM pgjet.applied"
	}
	rows, err := conn.Query(ctx, q+" ORDER BY 1", len(OriginPrefix)+1, OriginPrefix, strconv.FormatUint(uint64(oid), 10))
	if err != nil {
		return nil, fmt.Errorf("list the pgjet sources applied here: %w", err)
	}
	sources, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the pgjet sources applied here: %w", err)
	}
	return sources, nil
}
