package e2e

import (
	"strings"
	"testing"
	"time"
)

// keylessDBs makes database name on both clusters of c, the source's with
// a table with a key and one without (log), both holding rows; the target
// stays empty, to be built from the snapshot. It returns their URLs.
func keylessDBs(t *testing.T, c *cluster, name string) (string, string) {
	t.Helper()
	exec1(t, c.src, "CREATE DATABASE "+name)
	exec1(t, c.dst, "CREATE DATABASE "+name)
	src, dst := c.primary.URL(name), c.replica.URL(name)
	exec1(t, src, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)`, `CREATE TABLE log (at int, what text)`,
		`INSERT INTO acct SELECT i, 0 FROM generate_series(1, 20) i`, `INSERT INTO log SELECT i, 'start' FROM generate_series(1, 20) i`)
	return src, dst
}

// keylessPipeline starts capture of src as source name with flags, and
// its applier into dst, and waits for the snapshot to be restored.
func keylessPipeline(t *testing.T, c *cluster, name, src, dst string, flags ...string) (*proc, *proc) {
	t.Helper()
	capt := start(t, "pgjet-capture "+name, bins.capture, append([]string{"--db", src, "--nats", c.nats.ClientURL(), "--name", name, "--heartbeat", "1s"}, flags...)...)
	capt.waitLog(t, "capture started")
	app := start(t, "pgjet-apply "+name, bins.apply, "--db", dst, "--nats", c.nats.ClientURL(), "--name", name, "--region", "r_"+name)
	app.waitLog(t, "snapshot restored; following changes")
	return capt, app
}

// TestCapture_KeylessTables: a table without a primary key under capture's
// publication would make every UPDATE and DELETE of it fail on the
// primary. Capture refuses to start before it makes its publication (so
// the application's UPDATE still works), naming the table and the three
// choices; each choice then works end to end, for the tables there at the
// start and for tables made later.
func TestCapture_KeylessTables(t *testing.T) {
	t.Parallel()
	c := newCluster(t)

	t.Run("refused", func(t *testing.T) {
		src, _ := keylessDBs(t, c, "krefused")
		args := []string{"--db", src, "--nats", c.nats.ClientURL(), "--name", "krefused"}
		checkConfig(t, bins.capture, 1, []string{"FAIL  tables without a key", "public.log", "--keyless identity-full"}, args...)
		p := start(t, "pgjet-capture", bins.capture, args...)
		expectFatal(t, p, "tables without a primary key nor replica identity: public.log; once publication pgjet_krefused publishes them", "--keyless identity-full", "--keyless exclude", "--keyless inserts-only")
		if n := queryInt(t, src, "SELECT count(*) FROM pg_publication"); n != 0 {
			t.Errorf("%d publications left by the refused start", n)
		}
		if n := queryInt(t, src, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"); n != 0 {
			t.Errorf("%d slots left by the refused start", n)
		}
		// The application goes on as before.
		exec1(t, src, `UPDATE log SET what = 'updated' WHERE at = 1`, `DELETE FROM log WHERE at = 2`)
	})

	t.Run("identity-full", func(t *testing.T) {
		src, dst := keylessDBs(t, c, "kfull")
		capt, app := keylessPipeline(t, c, "kfull", src, dst, "--keyless", "identity-full")
		if out := capt.Output(); !strings.Contains(out, `"table":"public.log"`) || !strings.Contains(out, `"message":"REPLICA IDENTITY FULL set`) {
			t.Errorf("capture did not name the table it set REPLICA IDENTITY FULL on:\n%s", tail(capt.Output(), 3000))
		}
		// A table made later without a key gets it too, as it is made.
		if got := notices(t, src, `CREATE TABLE later (a int, b text)`); !strings.Contains(got, "table public.later has no primary key: REPLICA IDENTITY FULL set") {
			t.Errorf("CREATE TABLE later: notices %q, want REPLICA IDENTITY FULL set", got)
		}
		exec1(t, src, `INSERT INTO later VALUES (1, 'one'), (2, 'two')`)
		exec1(t, src, `UPDATE log SET what = 'updated' WHERE at <= 5`, `DELETE FROM log WHERE at > 15`, `INSERT INTO log VALUES (100, 'new')`,
			`UPDATE later SET b = 'changed' WHERE a = 1`, `DELETE FROM later WHERE a = 2`, `UPDATE acct SET v = 1`)
		waitSame(t, 60*time.Second, src, dst)
		if got := queryString(t, src, "SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) FROM pg_class WHERE relname IN ('log', 'later', 'acct')"); got != "acct=d,later=f,log=f" {
			t.Errorf("replica identities %s, want acct=d,later=f,log=f", got)
		}
		capt.Stop(t)
		app.Stop(t)
	})

	// Without --keyless and without such tables at the start, the
	// publication is FOR ALL TABLES: a table made later without a key is
	// published as Postgres does, and its author is warned, as it is made,
	// that UPDATE and DELETE on it fail.
	t.Run("made later", func(t *testing.T) {
		exec1(t, c.src, "CREATE DATABASE klater")
		src := c.primary.URL("klater")
		exec1(t, src, `CREATE TABLE acct (id int PRIMARY KEY)`)
		capt := start(t, "pgjet-capture klater", bins.capture, "--db", src, "--nats", c.nats.ClientURL(), "--name", "klater", "--no-snapshot")
		capt.waitLog(t, "capture started")
		got := notices(t, src, `CREATE TABLE nokey (a int)`)
		if !strings.Contains(got, "WARNING: pgjet: UPDATE and DELETE on table public.nokey fail from now on") {
			t.Errorf("CREATE TABLE nokey: notices %q, want the warning that UPDATE and DELETE fail", got)
		}
		capt.Stop(t)
	})

	t.Run("exclude", func(t *testing.T) {
		src, dst := keylessDBs(t, c, "kout")
		capt, app := keylessPipeline(t, c, "kout", src, dst, "--keyless", "exclude")
		// Tables made later: one with a key joins the publication, in the
		// transaction that makes it (its first rows too); one without is
		// left out like log.
		exec1(t, src, `BEGIN; CREATE TABLE fresh (id int PRIMARY KEY, v text); INSERT INTO fresh VALUES (1, 'first'); COMMIT`,
			`CREATE TABLE scratch (a int)`, `INSERT INTO scratch VALUES (1)`)
		exec1(t, src, `UPDATE log SET what = 'updated'`, `DELETE FROM log WHERE at = 3`, `UPDATE scratch SET a = 2`,
			`INSERT INTO fresh VALUES (2, 'second')`, `UPDATE fresh SET v = 'changed' WHERE id = 1`, `UPDATE acct SET v = 2`)
		// One made without a key and given one while empty (as a dump
		// restores tables) joins then.
		exec1(t, src, `CREATE TABLE keyed_later (id int NOT NULL, v text)`, `ALTER TABLE keyed_later ADD PRIMARY KEY (id)`,
			`INSERT INTO keyed_later VALUES (1, 'one')`, `UPDATE keyed_later SET v = 'uno'`)
		// A table made inside CREATE SCHEMA, whose command tag is the
		// schema's, joins too.
		exec1(t, src, `CREATE SCHEMA more CREATE TABLE inner_t (id int PRIMARY KEY, v text)`, `INSERT INTO more.inner_t VALUES (1, 'in a new schema')`)
		waitSame(t, 60*time.Second, src, dst, "public.acct", "public.fresh", "public.keyed_later", "more.inner_t")
		for _, tb := range []string{"log", "scratch"} {
			if n := queryInt(t, dst, "SELECT count(*) FROM "+tb); n != 0 {
				t.Errorf("%s, left out, has %d rows on the replica", tb, n)
			}
		}
		capt.Stop(t)
		app.Stop(t)
	})

	t.Run("inserts-only", func(t *testing.T) {
		src, dst := keylessDBs(t, c, "kins")
		capt, app := keylessPipeline(t, c, "kins", src, dst, "--keyless-table", "public.l*=inserts-only")
		exec1(t, src, `INSERT INTO log VALUES (21, 'inserted')`, `UPDATE log SET what = 'updated' WHERE at = 1`, `DELETE FROM log WHERE at = 2`,
			`UPDATE acct SET v = 3`)
		waitSame(t, 60*time.Second, src, dst, "public.acct")
		if got := queryString(t, dst, "SELECT string_agg(at || ':' || what, ',' ORDER BY at) FROM log WHERE at IN (1, 2, 21)"); got != "1:start,2:start,21:inserted" {
			t.Errorf("log on the replica: %s, want its inserts only (1:start,2:start,21:inserted)", got)
		}
		if n := queryInt(t, dst, "SELECT count(*) FROM log"); n != 21 {
			t.Errorf("log has %d rows on the replica, want 21 (the snapshot's and the insert)", n)
		}
		// Given a key, it is published whole from then on.
		if got := notices(t, src, `ALTER TABLE log ADD PRIMARY KEY (at)`); !strings.Contains(got, "table public.log has a key now") {
			t.Errorf("ALTER TABLE log ADD PRIMARY KEY: notices %q, want it to move to the publication", got)
		}
		exec1(t, src, `UPDATE log SET what = 'after the key' WHERE at = 3`, `UPDATE acct SET v = 4`)
		waitSame(t, 60*time.Second, src, dst, "public.acct")
		if got := queryString(t, dst, "SELECT what FROM log WHERE at = 3"); got != "after the key" {
			t.Errorf("log row 3 on the replica: %q, want the update made after the key", got)
		}
		// A CREATE TABLE AS whose rows would not be published is refused;
		// one WITH NO DATA, then filled, is not.
		if err := execErr(src, `CREATE TABLE copied AS SELECT id FROM acct`); err == nil || !strings.Contains(err.Error(), "CREATE TABLE AS wrote rows into public.copied before it could join publication pgjet_kins") {
			t.Errorf("CREATE TABLE AS with rows: %v, want it refused", err)
		}
		exec1(t, src, `CREATE TABLE copied AS SELECT id FROM acct WITH NO DATA`, `ALTER TABLE copied ADD PRIMARY KEY (id)`,
			`INSERT INTO copied SELECT id FROM acct`, `UPDATE acct SET v = 5`)
		waitSame(t, 60*time.Second, src, dst, "public.acct", "public.copied")
		capt.Stop(t)
		app.Stop(t)
	})

	// A FOR ALL TABLES publication made before capture (as roles.sql
	// makes it) breaks such tables already: capture warns and goes on.
	// Given a choice that leaves tables out, it remakes the publication as
	// a list in one transaction, and the slot decodes the changes on both
	// sides of it.
	t.Run("existing publication", func(t *testing.T) {
		src, dst := keylessDBs(t, c, "kexist")
		exec1(t, src, `CREATE PUBLICATION pgjet_kexist FOR ALL TABLES`)
		checkConfig(t, bins.capture, 0, []string{"WARN  tables without a key", "public.log"},
			"--db", src, "--nats", c.nats.ClientURL(), "--name", "kexist")
		capt, app := keylessPipeline(t, c, "kexist", src, dst)
		if !strings.Contains(capt.Output(), "tables without a primary key nor replica identity: public.log") {
			t.Errorf("capture did not warn of public.log:\n%s", tail(capt.Output(), 3000))
		}
		exec1(t, src, `UPDATE acct SET v = 6 WHERE id <= 10`)
		capt.Stop(t)
		exec1(t, src, `UPDATE acct SET v = 7 WHERE id > 10`) // decoded under the old publication
		capt = start(t, "pgjet-capture kexist", bins.capture, "--db", src, "--nats", c.nats.ClientURL(), "--name", "kexist", "--heartbeat", "1s", "--keyless", "exclude")
		capt.waitLog(t, "capture started")
		if !strings.Contains(capt.Output(), `"message":"publication made a list of tables"`) {
			t.Errorf("capture did not remake its publication:\n%s", tail(capt.Output(), 3000))
		}
		exec1(t, src, `UPDATE log SET what = 'updated'`, `UPDATE acct SET v = 8 WHERE id = 1`)
		waitSame(t, 60*time.Second, src, dst, "public.acct")
		capt.Stop(t)
		app.Stop(t)
	})
}
