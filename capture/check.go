package capture

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// checkTimeout bounds the Postgres part of a check: it reports, it does
// not wait for a server to come back.
const checkTimeout = 10 * time.Second

// Check runs pgjet-capture --check-config: with cfg already validated, it
// checks, without changing anything, what capture needs of the source
// (reachable with these credentials, wal_level = logical, REPLICATION,
// a replication connection, SELECT on the published tables, a slot or a
// free one) and of NATS (reachable, credentials, JetStream, the stream
// present or creatable). It never returns early on a failure that leaves
// other checks meaningful.
func Check(ctx context.Context, cfg Config) []stream.CheckResult {
	res := checkPostgres(ctx, cfg)
	if cfg.Snapshot || cfg.SnapshotEvery > 0 {
		res = append(res, checkPgDump(ctx, cfg))
	}
	nc, js, nres := stream.CheckNATS(cfg.NATS, "pgjet-capture check "+cfg.Name, cfg.NATSOptions, "")
	res = append(res, nres...)
	if nc != nil {
		defer nc.Close()
		res = append(res, stream.CheckSync(nc))
	}
	if js != nil {
		name := stream.StreamName(cfg.Name)
		res = append(res, stream.CheckStream(ctx, js, name, func() stream.CheckResult {
			return stream.CanCreateStream(ctx, js, name, "pgjet-capture")
		})...)
	}
	return res
}

func checkPostgres(ctx context.Context, cfg Config) []stream.CheckResult {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	where := redact.Postgres(cfg.DB)
	conn, ok, err := pgerr.CheckConnect(ctx, cfg.DB)
	res := []stream.CheckResult{stream.Result("postgres connection", err, ok)}
	if err != nil {
		return res
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var role string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil {
		return append(res, stream.Fail("replication privilege", "read role: %v", err))
	}
	res = append(res, stream.Result("wal_level", checkWALLevel(ctx, conn, where), "logical"))
	_, err = checkReplication(ctx, conn, where)
	res = append(res, stream.Result("replication privilege", err, "role "+role+" may replicate"))
	res = append(res, checkReplicationConn(ctx, cfg.DB, where))
	res = append(res, checkTables(ctx, conn, cfg, role))
	res = append(res, checkKeyless(ctx, conn, cfg))
	res = append(res, checkOwnSchema(ctx, conn))
	res = append(res, checkSlot(ctx, conn, cfg.Slot))
	return res
}

// checkReplicationConn opens the walsender connection capture streams
// through: pg_hba.conf may allow plain connections and not this one.
func checkReplicationConn(ctx context.Context, db, where string) stream.CheckResult {
	repl, err := pgconn.Connect(ctx, replicationURL(db))
	if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
		return stream.Fail("replication connection", "Postgres at %s refuses this role a walsender: it needs the REPLICATION attribute (see above)", where)
	}
	if err != nil {
		return stream.Fail("replication connection", "%v; allow this role's connections to the database in pg_hba.conf (a logical walsender matches the database name, not the replication keyword) and check max_wal_senders", pgerr.ClassifyConnect(db, err))
	}
	defer repl.Close(context.WithoutCancel(ctx))
	sys, err := pglogrepl.IdentifySystem(ctx, repl)
	if err != nil {
		return stream.Fail("replication connection", "IDENTIFY_SYSTEM on %s: %v", where, err)
	}
	return stream.Pass("replication connection", "walsender answers (timeline %d, WAL at %s)", sys.Timeline, sys.XLogPos)
}

// checkTables checks SELECT on what the publication holds, or, when it
// does not exist yet, that capture may create it.
func checkTables(ctx context.Context, conn *pgx.Conn, cfg Config, role string) stream.CheckResult {
	const name = "published tables"
	var exists, super bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
		cfg.Publication).Scan(&exists, &super); err != nil {
		return stream.Fail(name, "look up publication %q: %v", cfg.Publication, err)
	}
	if exists {
		rows, _ := conn.Query(ctx, `SELECT DISTINCT format('%I.%I', schemaname, tablename) FROM pg_publication_tables WHERE pubname = ANY($1)
			AND NOT has_table_privilege(format('%I.%I', schemaname, tablename), 'SELECT') ORDER BY 1`, []string{cfg.Publication, InsertsPublication(cfg.Publication)})
		denied, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return stream.Fail(name, "read publication %q: %v", cfg.Publication, err)
		}
		if len(denied) > 0 {
			return stream.Fail(name, "role %s lacks SELECT on %s (publication %s); GRANT SELECT ON them TO %s", role, listSome(denied), cfg.Publication, quoteIdent(role))
		}
		return stream.Pass(name, "publication %s exists; SELECT on each of its tables", cfg.Publication)
	}
	if len(cfg.Tables) == 0 {
		if !super {
			return stream.Fail(name, "publication %s is missing and only a superuser may create it FOR ALL TABLES; create it as a superuser (CREATE PUBLICATION %s FOR ALL TABLES) or give --tables", cfg.Publication, quoteIdent(cfg.Publication))
		}
		if cfg.listsTables() {
			return stream.Pass(name, "publication %s is missing; capture creates it as a list of every table, which DDL capture keeps up to date (--keyless %s)", cfg.Publication, cfg.Keyless)
		}
		return stream.Pass(name, "publication %s is missing; capture creates it FOR ALL TABLES", cfg.Publication)
	}
	var missing, denied, notOwned []string
	for _, t := range cfg.Tables {
		s, n, _ := strings.Cut(t, ".")
		var found, sel, owns bool
		err := conn.QueryRow(ctx, `SELECT c.oid IS NOT NULL, coalesce(has_table_privilege(c.oid, 'SELECT'), false), coalesce(pg_has_role(c.relowner, 'USAGE'), false)
			FROM (SELECT to_regclass($1) AS oid) r LEFT JOIN pg_class c ON c.oid = r.oid`, qualified(s, n)).Scan(&found, &sel, &owns)
		switch {
		case err != nil:
			return stream.Fail(name, "look up table %s: %v", t, err)
		case !found:
			missing = append(missing, t)
		case !sel:
			denied = append(denied, t)
		case !owns && !super:
			notOwned = append(notOwned, t)
		}
	}
	switch {
	case len(missing) > 0:
		return stream.Fail(name, "--tables names tables that do not exist: %s; fix --tables", listSome(missing))
	case len(denied) > 0:
		return stream.Fail(name, "role %s lacks SELECT on %s; GRANT SELECT ON them TO %s", role, listSome(denied), quoteIdent(role))
	case len(notOwned) > 0:
		return stream.Fail(name, "publication %s is missing and role %s may not create it: it does not own %s; create the publication as a superuser", cfg.Publication, role, listSome(notOwned))
	}
	return stream.Pass(name, "publication %s is missing; capture creates it for the %d tables of --tables", cfg.Publication, len(cfg.Tables))
}

// checkSlot checks the slot is usable, or that one can be created.
func checkSlot(ctx context.Context, conn *pgx.Conn, slot string) stream.CheckResult {
	const name = "replication slot"
	var plugin, db, current string
	var confirmed *string
	var active bool
	err := conn.QueryRow(ctx, `SELECT plugin, database, confirmed_flush_lsn::text, active, current_database() FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&plugin, &db, &confirmed, &active, &current)
	if err == nil {
		switch {
		case plugin != "pgoutput":
			return stream.Fail(name, "slot %q uses plugin %s, not pgoutput; drop it or choose another --slot", slot, plugin)
		case db != current:
			return stream.Fail(name, "slot %q belongs to database %s, not %s; choose another --slot", slot, db, current)
		case confirmed == nil:
			return stream.Fail(name, "slot %q has no confirmed position (invalidated?); drop it and restart capture", slot)
		}
		state := "idle"
		if active {
			state = "in use by a running capture"
		}
		return stream.Pass(name, "slot %s present at %s (%s)", slot, *confirmed, state)
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return stream.Fail(name, "look up slot %q: %v", slot, err)
	}
	var maxSlots, used int
	if err := conn.QueryRow(ctx, "SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)").Scan(&maxSlots, &used); err != nil {
		return stream.Fail(name, "count replication slots: %v", err)
	}
	if used >= maxSlots {
		return stream.Fail(name, "slot %s is missing and all %d replication slots are taken; raise max_replication_slots (restart needed) or drop an unused slot", slot, maxSlots)
	}
	return stream.Pass(name, "slot %s is missing; capture creates it (%d of %d slots free)", slot, maxSlots-used, maxSlots)
}

// listSome names up to five items of a list, for one line of a report.
func listSome(items []string) string {
	if len(items) <= 5 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:5], ", "), len(items)-5)
}

// checkPgDump finds the pg_dump that snapshots copy the schema with.
func checkPgDump(ctx context.Context, cfg Config) stream.CheckResult {
	path, err := exec.LookPath(cfg.PgDump)
	if err != nil {
		return stream.Fail("pg_dump", "%s not found: snapshots copy the schema with it; install the PostgreSQL client (the server's version or newer), set --pg-dump, or pass --no-snapshot", cfg.PgDump)
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return stream.Fail("pg_dump", "%s --version: %v; set --pg-dump to a working pg_dump, or pass --no-snapshot", path, err)
	}
	return stream.Pass("pg_dump", "%s (%s)", path, strings.TrimSpace(string(out)))
}

// CaptureSlots lists the replication slots pgjet captures the database of
// conn through: a database with one is a source, whose own writes reach
// the regions that apply it. --slot names a slot anything, so a logical
// pgoutput slot of the database counts when it is named as DefaultSlot
// names them, or when what pgjet-capture installs is there: a publication
// of the slot's name (--publication's default), a publication marked as
// pgjet's (schema.KeylessComment), or pgjet's DDL event triggers. A
// snapshot's temporary slots are left out.
func CaptureSlots(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT s.slot_name::text FROM pg_replication_slots s
WHERE NOT s.temporary AND s.plugin = 'pgoutput' AND s.database = current_database()
AND (s.slot_name LIKE 'pgjet\_%'
	OR EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.slot_name::text OR obj_description(p.oid, 'pg_publication') LIKE '{"pgjet":%')
	OR EXISTS (SELECT 1 FROM pg_event_trigger e WHERE e.evtname = ANY ($1)))
ORDER BY 1`, schema.DDLTriggers)
	if err != nil {
		return nil, fmt.Errorf("list the pgjet slots of the database: %w", err)
	}
	slots, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the pgjet slots of the database: %w", err)
	}
	return slots, nil
}
