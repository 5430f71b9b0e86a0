package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// waitTable waits until table exists on the database at url with n rows.
func waitTable(t *testing.T, url, table string, n int64) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%s with %d rows", table, n), func() (bool, string) {
		checkDaemons(t)
		if queryString(t, url, "SELECT coalesce(to_regclass($1)::text, '')", table) == "" {
			return false, table + " missing"
		}
		got := queryInt(t, url, "SELECT count(*) FROM "+table)
		return got == n, fmt.Sprintf("%d rows", got)
	})
}

// notices runs sql on the database at url and returns the notices and
// warnings Postgres sent, one a line, each with its hint.
func notices(t *testing.T, url, sql string) string {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		line := n.Severity + ": " + n.Message
		if n.Hint != "" {
			line += " HINT: " + n.Hint
		}
		got = append(got, line)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return strings.Join(got, "\n")
}

// TestCapture_RoleNamedLikeItsSchema: the role the README's examples
// connect as is named pgjet, like pgjet's own schema, and with Postgres'
// default search_path ("$user", public) that role's unqualified CREATE
// TABLE would land in schema pgjet, which is never captured. Capture
// (here running as that role, a superuser) gives the role a search_path
// without "$user" in the source database, saying so; --check-config warns
// of it first. The role's table then lands in public and replicates.
func TestCapture_RoleNamedLikeItsSchema(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, "CREATE ROLE pgjet LOGIN SUPERUSER")
	exec1(t, c.dst, "CREATE ROLE pgjet LOGIN SUPERUSER") // the role schema changes replay as
	asPgjet := asUser(t, c.src, "pgjet")
	// An earlier pgjet's DDL capture: schema pgjet exists before the role uses it.
	exec1(t, c.src, "CREATE SCHEMA pgjet AUTHORIZATION pgjet")
	checkConfig(t, bins.capture, 0, []string{"WARN  schema pgjet", `role pgjet`, `"$user"`, `ALTER ROLE "pgjet" IN DATABASE "postgres" SET search_path = "public"`},
		"--db", asPgjet, "--nats", c.nats.ClientURL(), "--name", "src")

	capt := start(t, "pgjet-capture", bins.capture, "--db", asPgjet, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s")
	capt.waitLog(t, "capture started")
	capt.waitLog(t, "role pgjet's search_path set: its unqualified CREATE TABLE would land in pgjet's own schema, which is never replicated")
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")

	exec1(t, asPgjet, `CREATE TABLE notes (id int PRIMARY KEY, v text)`, `INSERT INTO notes VALUES (1, 'by pgjet')`)
	if got := queryString(t, c.src, "SELECT coalesce(to_regclass('public.notes')::text, '')"); got != "notes" {
		t.Fatalf("role pgjet's unqualified CREATE TABLE notes did not land in public (to_regclass: %q; in pgjet: %q)", got,
			queryString(t, c.src, "SELECT coalesce(to_regclass('pgjet.notes')::text, '')"))
	}
	waitTable(t, c.dst, "public.notes", 1)

	// A table made in schema pgjet all the same warns its author.
	if got := notices(t, asPgjet, `CREATE TABLE pgjet.stray (id int)`); !strings.Contains(got, "table pgjet.stray is in schema pgjet, which is pgjet's own and never replicated") {
		t.Errorf("CREATE TABLE pgjet.stray raised no warning; notices: %q", got)
	}
	capt.Stop(t)
	app.Stop(t)
}
