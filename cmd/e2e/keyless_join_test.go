package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema"
)

// remakeAllTables makes capture's publication FOR ALL TABLES again, as
// roles.sql makes it, in one transaction (the slot never decodes a change
// while it is missing): capture's next start with --keyless exclude then
// remakes it as a list.
func remakeAllTables(t *testing.T, src, pub string) {
	t.Helper()
	exec1(t, src, fmt.Sprintf(`BEGIN; DROP PUBLICATION %s; CREATE PUBLICATION %s FOR ALL TABLES; COMMIT`, pub, pub))
}

// TestCapture_KeylessTablesRemake: capture remakes a FOR ALL TABLES
// publication as a list (--keyless exclude) while tables are being made.
// A table whose CREATE TABLE ran before the remake read the list of tables,
// but committed after it, must not be missed; nor may one made while
// capture restarts again and again. Every table and every row reaches the
// replica.
func TestCapture_KeylessTablesRemake(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, "CREATE DATABASE kremake")
	exec1(t, c.dst, "CREATE DATABASE kremake")
	src, dst := c.primary.URL("kremake"), c.replica.URL("kremake")
	exec1(t, src, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)`, `INSERT INTO acct SELECT i, 0 FROM generate_series(1, 20) i`,
		`CREATE PUBLICATION pgjet_kremake FOR ALL TABLES`)
	flags := []string{"--db", src, "--nats", c.nats.ClientURL(), "--name", "kremake", "--heartbeat", "1s", "--keyless", "exclude"}
	capt, app := keylessPipeline(t, c, "kremake", src, dst, "--keyless", "exclude")
	restart := func() {
		t.Helper()
		capt.Stop(t)
		remakeAllTables(t, src, "pgjet_kremake")
		capt = start(t, "pgjet-capture kremake", bins.capture, flags...)
	}

	// A table made in a transaction still open while capture remakes its
	// publication.
	capt.Stop(t)
	remakeAllTables(t, src, "pgjet_kremake")
	ctx := context.Background()
	open, err := pgx.Connect(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	for _, s := range []string{`BEGIN`, `CREATE TABLE racer (id int PRIMARY KEY, v text)`, `INSERT INTO racer VALUES (1, 'in the open transaction')`} {
		if _, err := open.Exec(ctx, s); err != nil {
			t.Fatalf("exec %q: %v", s, err)
		}
	}
	capt = start(t, "pgjet-capture kremake", bins.capture, flags...)
	// Capture either remakes its publication past the open transaction or
	// waits for it.
	waitFor(t, 60*time.Second, "capture to remake its publication or wait for the open transaction", func() (bool, string) {
		out := capt.Output()
		return strings.Contains(out, `"message":"capture started"`) ||
			strings.Contains(out, `"message":"waiting for schema changes in progress to end before changing the publication"`), "not yet"
	})
	waited := strings.Contains(capt.Output(), "waiting for schema changes in progress")
	if _, err := open.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	capt.waitLog(t, "capture started")
	t.Logf("capture waited for the open transaction: %v", waited)
	exec1(t, src, `INSERT INTO racer VALUES (2, 'after the remake')`, `UPDATE acct SET v = 1`)
	waitSame(t, 60*time.Second, src, dst)

	// Tables made all along while capture restarts, remaking its
	// publication each time.
	stop := writeLoad(t, src, func(ctx context.Context, conn *pgx.Conn, i int) {
		name := fmt.Sprintf("made_%d", i)
		if _, err := conn.Exec(ctx, "CREATE TABLE "+name+" (id int PRIMARY KEY, v text)"); err != nil {
			return
		}
		_, _ = conn.Exec(ctx, "INSERT INTO "+name+" VALUES (1, 'first'), (2, 'second')")
		time.Sleep(10 * time.Millisecond) // a steady load, not a synchronisation
	})
	for i := 0; i < 4; i++ {
		restart()
		capt.waitLog(t, "capture started")
	}
	stop()
	made := queryInt(t, src, `SELECT count(*) FROM pg_class WHERE relname LIKE 'made\_%' AND relkind = 'r'`)
	exec1(t, src, `UPDATE acct SET v = 2`)
	waitSame(t, 90*time.Second, src, dst)
	t.Logf("%d tables made during 4 restarts", made)
	capt.Stop(t)
	app.Stop(t)
}

// TestCapture_KeylessTablesJoin: under a list publication (--keyless
// exclude), tables that get a usable identity or stop being partitions
// join it, and capture's own publication works when a role that is not a
// superuser made it.
func TestCapture_KeylessTablesJoin(t *testing.T) {
	t.Parallel()
	c := newCluster(t)

	// pg_dump restores each table without a key, loads it, then adds the
	// key. The table joins the publication with its key; its rows loaded
	// before are copied to replicas by the pgjet resync capture names.
	t.Run("keyed after load", func(t *testing.T) {
		src, dst := keylessDBs(t, c, "kdump")
		exec1(t, c.src, "CREATE DATABASE korigin")
		origin := c.primary.URL("korigin")
		exec1(t, origin, `CREATE TABLE orders (id int PRIMARY KEY, what text)`, `CREATE TABLE lines (order_id int, n int, qty int, PRIMARY KEY (order_id, n))`,
			`INSERT INTO orders SELECT i, 'order ' || i FROM generate_series(1, 100) i`,
			`INSERT INTO lines SELECT i, j, i * j FROM generate_series(1, 100) i, generate_series(1, 3) j`)
		capt, app := keylessPipeline(t, c, "kdump", src, dst, "--keyless", "exclude")
		restore := exec.Command("sh", "-c", `pg_dump --no-owner "$1" | psql -X -q -v ON_ERROR_STOP=1 "$2"`, "sh", origin, src)
		out, err := restore.CombinedOutput()
		if err != nil {
			t.Fatalf("pg_dump | psql: %v\n%s", err, out)
		}
		t.Logf("pg_dump | psql:\n%s", out)
		exec1(t, src, `UPDATE orders SET what = 'changed' WHERE id <= 10`, `INSERT INTO lines VALUES (101, 1, 1)`, `UPDATE acct SET v = 1`)
		for _, tb := range []string{"public.orders", "public.lines"} {
			want := "pgjet resync --name kdump --table " + tb
			if !strings.Contains(string(out), want) {
				t.Errorf("psql's output does not name %q", want)
			}
			waitFor(t, 60*time.Second, "capture to name the resync of "+tb, func() (bool, string) {
				return strings.Contains(capt.Output(), `"table":"`+tb+`"`) && strings.Contains(capt.Output(), want), "not yet"
			})
			if out, code := pgjetRun(t, "resync", "--db", src, "--nats", c.nats.ClientURL(), "--name", "kdump", "--table", tb); code != 0 {
				t.Fatalf("pgjet resync --table %s exited %d:\n%s", tb, code, out)
			}
		}
		waitSame(t, 60*time.Second, src, dst, "public.acct", "public.orders", "public.lines")
		capt.Stop(t)
		app.Stop(t)
	})

	// A partition detached from a published parent is a table of its own,
	// which the list must then hold.
	t.Run("detached partition", func(t *testing.T) {
		src, dst := keylessDBs(t, c, "kdetach")
		exec1(t, src, `CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k)`,
			`CREATE TABLE m1 PARTITION OF m FOR VALUES IN (1)`, `CREATE TABLE m2 PARTITION OF m FOR VALUES IN (2)`,
			`INSERT INTO m SELECT i, 1 + i % 2, 'v' FROM generate_series(1, 40) i`)
		capt, app := keylessPipeline(t, c, "kdetach", src, dst, "--keyless", "exclude")
		exec1(t, src, `ALTER TABLE m DETACH PARTITION m2`)
		exec1(t, src, `UPDATE m2 SET v = 'after the detach'`, `INSERT INTO m2 VALUES (100, 2, 'new')`, `DELETE FROM m2 WHERE id = 2`,
			`UPDATE m SET v = 'parent'`, `UPDATE acct SET v = 1`)
		waitSame(t, 60*time.Second, src, dst, "public.acct", "public.m1", "public.m2")
		capt.Stop(t)
		app.Stop(t)
	})

	// Capture run by a role that is not a superuser, with what the README
	// asks of it: REPLICATION, owner of the tables and CREATE on the
	// database, so it may make its list publication itself. DDL capture
	// was installed by a superuser.
	t.Run("not a superuser", func(t *testing.T) {
		exec1(t, c.src, "CREATE ROLE kapp LOGIN REPLICATION", "CREATE DATABASE kowner OWNER kapp")
		exec1(t, c.dst, "CREATE ROLE kapp LOGIN", "CREATE DATABASE kowner OWNER kapp")
		src, dst := c.primary.URL("kowner"), c.replica.URL("kowner")
		exec1(t, src, "SET pgjet.ddl_capture = off; "+schema.DDLInstallSQL(), "GRANT USAGE ON SCHEMA pgjet TO kapp")
		asApp := asUser(t, src, "kapp")
		exec1(t, asApp, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)`, `CREATE TABLE log (at int, what text)`,
			`INSERT INTO acct SELECT i, 0 FROM generate_series(1, 20) i`, `INSERT INTO log SELECT i, 'start' FROM generate_series(1, 20) i`)
		capt, app := keylessPipeline(t, c, "kowner", asApp, dst, "--keyless", "exclude")
		if owner := queryString(t, src, `SELECT pubowner::regrole::text FROM pg_publication WHERE pubname = 'pgjet_kowner'`); owner != "kapp" {
			t.Fatalf("publication pgjet_kowner owned by %q, want kapp", owner)
		}
		exec1(t, asApp, `CREATE TABLE later (id int PRIMARY KEY, v text)`, `INSERT INTO later VALUES (1, 'one'), (2, 'two')`,
			`UPDATE later SET v = 'uno' WHERE id = 1`, `UPDATE acct SET v = 1`)
		waitSame(t, 60*time.Second, src, dst, "public.acct", "public.later")
		capt.Stop(t)
		app.Stop(t)
	})
}
