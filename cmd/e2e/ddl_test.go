package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// execTx runs sqls in one transaction, one statement per round trip, as
// psql and most drivers send them.
func execTx(t *testing.T, url string, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, s := range sqls {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("exec %q: %v", s, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func queryString(t *testing.T, url, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var s *string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	if s == nil {
		return ""
	}
	return *s
}

// schemaSQL describes the user schema of a database: tables with their
// columns and types, indexes and enum labels.
const schemaSQL = `SELECT concat_ws(E'\n',
	(SELECT string_agg(format('%s.%s.%s %s', table_schema, table_name, column_name, data_type), E'\n' ORDER BY table_schema, table_name, ordinal_position)
		FROM information_schema.columns WHERE table_schema = 'public'),
	(SELECT string_agg(indexdef, E'\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'),
	(SELECT string_agg(format('%s=%s', t.typname, e.enumlabel), E'\n' ORDER BY t.typname, e.enumsortorder)
		FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid))`

// waitSameSchema waits until the replica's schema describes as the
// primary's.
func waitSameSchema(t *testing.T, timeout time.Duration, c *cluster) {
	t.Helper()
	waitSameSchemaOf(t, timeout, c.src, c.dst)
}

func waitSameSchemaOf(t *testing.T, timeout time.Duration, primary, replica string) {
	t.Helper()
	waitFor(t, timeout, "replica schema to match primary", func() (bool, string) {
		checkDaemons(t)
		a, b := queryString(t, primary, schemaSQL), queryString(t, replica, schemaSQL)
		return a == b, "primary:\n" + a + "\nreplica:\n" + b
	})
}

// TestDDL_Statements: schema changes made on the primary reach the replica
// in commit order with the rows around them, in the same transaction as
// rows and in transactions of their own, sent one statement at a time or
// as one multi-statement query string.
func TestDDL_Statements(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE items (id int PRIMARY KEY, name text)`)
	capt := c.capture(t)
	if !strings.Contains(capt.Output(), "DDL capture installed") {
		t.Fatalf("capture did not install DDL capture:\n%s", capt.Output())
	}
	app := c.apply(t)

	// CREATE TABLE, then rows of it.
	exec1(t, c.src, `CREATE TABLE created (id serial PRIMARY KEY, v text)`,
		`INSERT INTO created (v) VALUES ('a'), ('b')`)
	// ADD COLUMN with rows before and after it in the same transaction.
	execTx(t, c.src, `INSERT INTO items VALUES (1, 'a'), (2, 'b')`,
		`ALTER TABLE items ADD COLUMN price numeric(10,2) DEFAULT 1.5`,
		`INSERT INTO items VALUES (3, 'c', 2.25)`,
		`UPDATE items SET price = 3 WHERE id = 1`)
	// The same as one query string: it is replayed once, DDL only.
	exec1(t, c.src, `BEGIN; INSERT INTO items VALUES (4, 'd', 4); ALTER TABLE items ADD COLUMN qty int NOT NULL DEFAULT 0; INSERT INTO items VALUES (5, 'e', 5, 7); COMMIT`)
	// RENAME COLUMN, ALTER COLUMN TYPE and DROP COLUMN in transactions
	// of their own, rows in between.
	exec1(t, c.src, `ALTER TABLE items RENAME COLUMN name TO title`,
		`INSERT INTO items VALUES (6, 'f', 6, 1)`,
		`ALTER TABLE items ALTER COLUMN qty TYPE bigint`,
		`UPDATE items SET qty = 9000000000 WHERE id = 6`,
		`ALTER TABLE items DROP COLUMN price`,
		`INSERT INTO items VALUES (7, 'g', 2)`,
		`UPDATE items SET title = 'A' WHERE id = 1`)
	execTx(t, c.src, `ALTER TABLE items ADD COLUMN note text`, `UPDATE items SET note = 'n' || id`,
		`ALTER TABLE items ALTER COLUMN note TYPE varchar(20)`, `DELETE FROM items WHERE id = 2`)
	// Indexes.
	exec1(t, c.src, `CREATE INDEX items_title_idx ON items (title)`, `CREATE UNIQUE INDEX ON created (v)`)
	// An enum, a value added to it, then used.
	exec1(t, c.src, `CREATE TYPE mood AS ENUM ('sad', 'ok')`,
		`CREATE TABLE moods (id int PRIMARY KEY, m mood)`,
		`INSERT INTO moods VALUES (1, 'ok')`,
		`ALTER TYPE mood ADD VALUE 'happy'`,
		`INSERT INTO moods VALUES (2, 'happy')`,
		`ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'`)
	execTx(t, c.src, `UPDATE moods SET m = 'meh' WHERE id = 1`)
	// CREATE TABLE AS: its rows come through the stream, not twice.
	exec1(t, c.src, `CREATE TABLE snapshot AS SELECT id, title FROM items`,
		`SELECT * INTO TEMP scratch FROM items`, `CREATE TEMP TABLE scratch2 (a int)`)
	// A DO block is replayed as it is.
	exec1(t, c.src, `DO $$BEGIN EXECUTE 'ALTER TABLE created ADD COLUMN at date'; END$$`,
		`UPDATE created SET at = '2024-01-01'`)
	// Renamed tables and tables moved to another schema.
	exec1(t, c.src, `ALTER TABLE moods RENAME TO feelings`, `INSERT INTO feelings VALUES (3, 'sad')`,
		`CREATE SCHEMA archive`, `CREATE TABLE archive.old (id int PRIMARY KEY)`, `INSERT INTO archive.old VALUES (1)`,
		`ALTER TABLE archive.old SET SCHEMA public`, `INSERT INTO old VALUES (2)`)
	// DROP TABLE.
	exec1(t, c.src, `CREATE TABLE doomed (a int)`, `INSERT INTO doomed VALUES (1)`, `DROP TABLE doomed`)

	waitSameSchema(t, 60*time.Second, c)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if n := queryInt(t, c.dst, `SELECT count(*) FROM old`); n != 2 {
		t.Errorf("old has %d rows on the replica, want 2", n)
	}
	if n := queryInt(t, c.dst, `SELECT count(*) FROM snapshot`); n != 6 {
		t.Errorf("snapshot has %d rows on the replica, want 6", n)
	}
	if got := queryString(t, c.dst, `SELECT to_regclass('public.doomed')::text`); got != "" {
		t.Errorf("doomed still exists on the replica")
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("conflicts = %d, want 0", n)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestDDL_Failure: a schema change that fails on the target stops the
// applier with the statement, the position and what to do; marked done
// after fixing the target by hand, it is not replayed again.
func TestDDL_Failure(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	// The replica already has the column the primary is about to add.
	exec1(t, c.dst, `ALTER TABLE t ADD COLUMN c int`)
	// Capture creates its slot, then stops: the changes below wait in the
	// WAL and the restarted capture packs them into one batch message, so
	// every stop below falls inside a message that was partly applied.
	capt := c.capture(t)
	capt.Stop(t)
	exec1(t, c.src, `INSERT INTO t VALUES (1)`, `ALTER TABLE t ADD COLUMN c int`, `INSERT INTO t VALUES (2, 2)`,
		`CREATE INDEX CONCURRENTLY t_c_idx ON t (c)`, `INSERT INTO t VALUES (3, 3)`,
		`CREATE FUNCTION widen() RETURNS void LANGUAGE plpgsql AS $$BEGIN ALTER TABLE t ADD COLUMN d int; END$$`,
		`SELECT widen()`, `INSERT INTO t VALUES (4, 4, 4)`)
	capt = c.capture(t)
	// Not c.apply: it stops at the first schema change straight away.
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	out := app.Output()
	for _, want := range []string{`ALTER TABLE t ADD COLUMN c int`, "stream seq", "INSERT INTO pgjet.ddl_done", "restart pgjet-apply"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply's error does not say %q:\n%s", want, tail(out, 2048))
		}
	}
	exec1(t, c.dst, markDoneSQL(t, out))
	// It starts, then stops at the next schema change: not c.apply,
	// which would fail on the quick exit.
	app = start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	// Next: CREATE INDEX CONCURRENTLY cannot run in the applier's
	// transaction.
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	out = app.Output()
	for _, want := range []string{"CREATE INDEX CONCURRENTLY", "cannot run inside a transaction block", "run it by hand on the target"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply's error does not say %q:\n%s", want, tail(out, 2048))
		}
	}
	exec1(t, c.dst, `CREATE INDEX CONCURRENTLY t_c_idx ON t (c)`, markDoneSQL(t, out))
	// Next: DDL made by a function is not replayed by calling it again.
	app = start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	out = app.Output()
	for _, want := range []string{`made by \"SELECT widen()\"`, "make the same change on the target by hand"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply's error does not say %q:\n%s", want, tail(out, 2048))
		}
	}
	exec1(t, c.dst, `SET session_replication_role = replica; SELECT widen()`, markDoneSQL(t, out))
	app = c.apply(t)
	waitSameSchema(t, 60*time.Second, c)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// markDoneSQL extracts the statements apply's error gives to mark a
// schema change done.
func markDoneSQL(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		const key = "restart pgjet-apply: "
		if i := strings.Index(line, key); i >= 0 && strings.HasPrefix(line, "pgjet-apply: ") {
			s := line[i+len(key):]
			if j := strings.Index(s, " (ERROR: "); j >= 0 {
				s = s[:j]
			}
			return s
		}
	}
	t.Fatalf("no mark-done statement in apply's output:\n%s", tail(out, 2048))
	return ""
}

// TestDDL_UnderLoad: a column added to pgbench_accounts and an index
// created while pgbench runs are replicated with no row lost around them.
func TestDDL_UnderLoad(t *testing.T) {
	t.Parallel()
	c := pgbenchCluster(t)
	capt := c.capture(t)
	app := c.apply(t)
	pgbench(t, c.src, "-i", "-I", "g", "-s", "1", "-q")
	load := pgbenchAsync(t, c.src, "-n", "-c", "4", "-T", "20", "-b", "tpcb-like@4", "-f", writeScript(t, noKeyScript)+"@1")
	// Each schema change comes once more of the load has committed: rows
	// commit on both sides of every change, however slow the machine.
	waitRows(t, c.src, "pgbench_history", 100)
	exec1(t, c.src, `ALTER TABLE pgbench_accounts ADD COLUMN note text DEFAULT 'x'`)
	waitRows(t, c.src, "pgbench_history", queryInt(t, c.src, "SELECT count(*) FROM pgbench_history")+200)
	exec1(t, c.src, `CREATE INDEX ON pgbench_history (mtime)`, `ALTER TABLE pgbench_history ADD COLUMN tag text`)
	waitRows(t, c.src, "pgbench_history", queryInt(t, c.src, "SELECT count(*) FROM pgbench_history")+200)
	execTx(t, c.src, `ALTER TABLE nokey ADD COLUMN c int DEFAULT 7`, `UPDATE pgbench_branches SET filler = 'ddl' WHERE bid = 1`)
	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	waitSameSchema(t, 3*time.Minute, c)
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgbench_accounts WHERE note = 'x'"); n != 100000 {
		t.Errorf("%d accounts have note 'x' on the replica, want 100000", n)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("conflicts = %d, want 0", n)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestDDL_NotSuperuser: a capture role without superuser cannot install
// the event triggers: capture warns that DDL capture is off, and runs.
func TestDDL_NotSuperuser(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	exec1(t, c.src, `CREATE ROLE capturer LOGIN REPLICATION`, `GRANT SELECT ON ALL TABLES IN SCHEMA public TO capturer`,
		`CREATE PUBLICATION pgjet_src FOR ALL TABLES`)
	url := strings.Replace(c.src, "postgres@", "capturer@", 1)
	if url == c.src {
		t.Fatalf("cannot make a URL for role capturer from %s", c.src)
	}
	args := []string{"--db", url, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s"}
	capt := start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "capture started")
	if out := capt.Output(); !strings.Contains(out, `DDL capture is off: role \"capturer\" is not a superuser`) {
		t.Errorf("capture did not warn that DDL capture is off:\n%s", out)
	}
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO t VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}
