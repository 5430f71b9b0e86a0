package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestFilters: --exclude-tables drops an excluded table's rows, truncates
// and schema changes; --include-tables keeps only matching tables;
// --exclude-columns leaves a column NULL on the replica while the others
// match.
func TestFilters(t *testing.T) {
	t.Parallel()
	c := newCluster(t,
		`CREATE TABLE users (id int PRIMARY KEY, name text, ssn text, email text)`,
		`CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric)`,
		`CREATE TABLE audit_log (id serial PRIMARY KEY, what text)`,
		`CREATE TABLE scratch_1 (a int)`, `ALTER TABLE scratch_1 REPLICA IDENTITY FULL`)
	capt := c.capture(t, "--include-tables", "public.users,public.orders,public.audit_*,public.new_*",
		"--exclude-tables", "public.audit_*", "--exclude-columns", "public.users.ssn,*.*.email")
	app := c.apply(t)
	exec1(t, c.src,
		`INSERT INTO users VALUES (1, 'ann', '123-45', 'ann@x'), (2, 'bob', '987-65', NULL)`,
		`INSERT INTO orders VALUES (1, 1, 9.5), (2, 2, 12)`,
		`INSERT INTO audit_log (what) VALUES ('login'), ('logout')`,
		`INSERT INTO scratch_1 VALUES (1)`,
		`UPDATE users SET ssn = '000', name = 'Ann' WHERE id = 1`,
		`UPDATE users SET email = 'bob@x' WHERE id = 2`,
		`TRUNCATE audit_log, scratch_1`,
		`INSERT INTO audit_log (what) VALUES ('again')`,
		`DELETE FROM orders WHERE id = 2`,
		// Schema changes of excluded tables are dropped too; the replica
		// does not have this column.
		`ALTER TABLE audit_log ADD COLUMN extra int`,
		`CREATE INDEX ON audit_log (what)`,
		// A new table matching --include-tables is created on the
		// replica and filled.
		`CREATE TABLE new_things (id int PRIMARY KEY, email text, v text)`,
		`INSERT INTO new_things VALUES (1, 'x@y', 'v')`,
	)
	cols := "SELECT coalesce(string_agg(format('%s %s %s %s', id, name, ssn, email), ', ' ORDER BY id), '') FROM users"
	waitFor(t, 60*time.Second, "users on the replica", func() (bool, string) {
		checkDaemons(t)
		got := queryString(t, c.dst, cols)
		return got == "1 Ann  , 2 bob  ", got // format() renders NULL as ''

	})
	waitSame(t, 60*time.Second, c.src, c.dst, "public.orders")
	if n := queryInt(t, c.dst, "SELECT count(*) FROM users WHERE ssn IS NOT NULL OR email IS NOT NULL"); n != 0 {
		t.Errorf("%d replica users have an excluded column set", n)
	}
	waitFor(t, 30*time.Second, "new_things on the replica", func() (bool, string) {
		// The table may be there before its row.
		got := queryString(t, c.dst, "SELECT coalesce((SELECT format('%s %s %s', id, email, v) FROM new_things), '')")
		return got == "1  v", got
	})
	if n := queryInt(t, c.dst, "SELECT count(*) FROM audit_log"); n != 0 {
		t.Errorf("excluded audit_log has %d rows on the replica, want 0", n)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM scratch_1"); n != 0 {
		t.Errorf("scratch_1 (not included) has %d rows on the replica, want 0", n)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'audit_log' AND column_name = 'extra'"); n != 0 {
		t.Errorf("a schema change of the excluded audit_log reached the replica")
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestFilters_KeyColumn: excluding a key column stops capture with an
// error naming it.
func TestFilters_KeyColumn(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE users (id int PRIMARY KEY, ssn text)`)
	capt := c.capture(t, "--exclude-columns", "public.users.id")
	exec1(t, c.src, `INSERT INTO users VALUES (1, 'x')`)
	if code := capt.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("capture exited %d, want 1", code)
	}
	if out := capt.Output(); !strings.Contains(out, "pgjet-capture: --exclude-columns: column public.users.id is part of its replica identity key") {
		t.Errorf("capture's error does not name the key column:\n%s", tail(out, 2048))
	}
}
