package apply

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema/pgerr"
)

// OriginPrefix begins the name of every replication origin a pgjet applier
// writes under. pgjet-capture drops the transactions of such origins, so
// what an applier wrote is never published again: nothing loops between
// regions that replicate each other.
const OriginPrefix = "pgjet_"

// OriginName is the replication origin that the applier, restores and
// replays of source write under in the target database whose OID is
// database: pgjet_<source>.<oid>. Origins belong to the whole cluster,
// and one session holds an origin at a time, so each database has its own:
// a replay into a scratch database runs beside the applier of the same
// source on that cluster. Source names hold no '.', so the source is the
// part between the prefix and the dot.
//
// See https://www.postgresql.org/docs/15/replication-origins.html
func OriginName(source string, database uint32) string {
	return OriginPrefix + source + "." + strconv.FormatUint(uint64(database), 10)
}

// LegacyOriginName is the origin pgjet wrote source's changes under before
// origins were per database, shared by every database of a cluster. Rows
// written under it stay the source's (see conflictEnv.legacy).
func LegacyOriginName(source string) string { return OriginPrefix + source }

// RepairOriginName is the replication origin pgjet verify --repair writes
// the rows of source under in the database whose OID is database: like
// the applier's it starts with OriginPrefix, so capture does not publish
// them again, and the applier counts its rows as the source's. The
// applier holds its own origin while it runs, and a session cannot take
// an origin another session holds.
func RepairOriginName(source string, database uint32) string {
	return OriginName(source, database) + ".repair"
}

// databaseOID returns the OID of the database conn is connected to.
func databaseOID(ctx context.Context, conn *pgx.Conn) (uint32, error) {
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT oid FROM pg_database WHERE datname = current_database()").Scan(&oid); err != nil {
		return 0, fmt.Errorf("read the target database's OID: %w", err)
	}
	return oid, nil
}

// TargetOrigins returns the origins source's changes are written under in
// the database conn is connected to: the applier's, restores' and
// replays' (OriginName), and pgjet verify --repair's (RepairOriginName).
func TargetOrigins(ctx context.Context, conn *pgx.Conn, source string) (origin, repair string, err error) {
	oid, err := databaseOID(ctx, conn)
	if err != nil {
		return "", "", err
	}
	return OriginName(source, oid), RepairOriginName(source, oid), nil
}

// legacyOrigin returns the roident of LegacyOriginName(source), or 0 when
// there is none: the rows an earlier pgjet wrote under it in this database
// are the source's, as if written under this database's own origin.
func legacyOrigin(ctx context.Context, conn *pgx.Conn, source string) (uint32, error) {
	var id *uint32
	if err := conn.QueryRow(ctx, "SELECT pg_replication_origin_oid($1)", LegacyOriginName(source)).Scan(&id); err != nil {
		return 0, fmt.Errorf("look up replication origin %q: %w", LegacyOriginName(source), err)
	}
	if id == nil {
		return 0, nil
	}
	return *id, nil
}

// originSourceSQL renders the source name of the origin named by the SQL
// expression roname when it is a pgjet applier's (pgjet_<source> or
// pgjet_<source>.<oid>), else the name itself.
func originSourceSQL(roname string) string {
	return "CASE WHEN " + roname + " LIKE 'pgjet\\_%' THEN split_part(substr(" + roname + ", " + strconv.Itoa(len(OriginPrefix)+1) + "), '.', 1) ELSE " + roname + " END"
}

// takeOrigin makes the session of conn write under replication origin
// name, created when missing, and returns its roident. One session holds
// an origin at a time: one that is ending (an earlier session's, or a
// restore's, which writes under the origin too) is waited for, a few
// seconds at most; then the error is CodeObjectInUse.
func takeOrigin(ctx context.Context, conn *pgx.Conn, name string) (uint32, error) {
	var id *uint32
	err := conn.QueryRow(ctx, "SELECT pg_replication_origin_oid($1)", name).Scan(&id)
	if err == nil && id == nil {
		var created uint32
		err = conn.QueryRow(ctx, "SELECT pg_replication_origin_create($1)", name).Scan(&created)
		if pgerr.PgCode(err) == codeUniqueViolation { // created by a concurrent session
			err = conn.QueryRow(ctx, "SELECT pg_replication_origin_oid($1)", name).Scan(&id)
		} else if err == nil {
			id = &created
		}
	}
	if err != nil {
		return 0, err
	}
	if id == nil {
		return 0, fmt.Errorf("replication origin %q vanished as it was created", name)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", name)
		if pgerr.PgCode(err) != pgerr.CodeObjectInUse || time.Now().After(deadline) {
			return *id, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
