package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestCapture_RoleNamedLikeItsSchemaSetRole: a role named like pgjet's
// schema that no one logs in as, but that login roles SET ROLE to: the
// search_path capture gives a login role does not apply after SET ROLE, so
// capture warns of it on start, naming the members. A table made by that
// role in schema pgjet warns its author, and the hint's fix gets the table
// to the replica without stopping it (ALTER TABLE ... SET SCHEMA would:
// the replica never had the table).
func TestCapture_RoleNamedLikeItsSchemaSetRole(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, "CREATE ROLE pgjet NOLOGIN", "CREATE SCHEMA pgjet AUTHORIZATION pgjet", "GRANT CREATE ON SCHEMA public TO pgjet",
		"CREATE ROLE dev LOGIN IN ROLE pgjet")
	exec1(t, c.dst, "CREATE ROLE pgjet NOLOGIN", "GRANT CREATE ON SCHEMA public TO pgjet")
	checkConfig(t, bins.capture, 0, []string{"WARN  schema pgjet", "SET ROLE pgjet", "dev"},
		"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src")
	capt := c.capture(t)
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	if out := capt.Output(); !strings.Contains(out, "SET ROLE pgjet") || !strings.Contains(out, `"members":"dev"`) {
		t.Errorf("capture did not warn that SET ROLE pgjet (by dev) lands unqualified CREATE TABLE in schema pgjet:\n%s", tail(out, 3000))
	}

	asDev := asUser(t, c.src, "dev")
	got := notices(t, asDev, `SET ROLE pgjet; CREATE TABLE notes (id int PRIMARY KEY, v text)`)
	if !strings.Contains(got, "table pgjet.notes is in schema pgjet, which is pgjet's own and never replicated") {
		t.Fatalf("CREATE TABLE notes after SET ROLE pgjet: notices %q, want the warning", got)
	}
	for _, want := range []string{"DROP TABLE pgjet.notes", "CREATE TABLE public.notes"} {
		if !strings.Contains(got, want) {
			t.Errorf("the warning's hint lacks %q: %q", want, got)
		}
	}
	if strings.Contains(got, "SET SCHEMA public)") {
		t.Errorf("the warning's hint suggests ALTER TABLE ... SET SCHEMA, which stops replicas (they lack the table): %q", got)
	}
	// The hint's fix, each statement sent alone.
	exec1(t, c.src, `INSERT INTO pgjet.notes VALUES (1, 'by pgjet')`)
	exec1(t, asDev, `SET ROLE pgjet`, `CREATE TABLE public.notes (id int PRIMARY KEY, v text)`, `INSERT INTO public.notes SELECT * FROM pgjet.notes`,
		`DROP TABLE pgjet.notes`, `INSERT INTO notes VALUES (2, 'after the move')`)
	waitTable(t, c.dst, "public.notes", 2)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestCapture_RoleNamedLikeItsSchemaAllRoles: the search_path of the role
// named like pgjet's schema comes from ALTER ROLE ALL, while capture's own
// role has a search_path of its own: capture still finds the trap (it
// does not take its own session's path for the role's) and fixes it.
func TestCapture_RoleNamedLikeItsSchemaAllRoles(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, "CREATE ROLE pgjet LOGIN SUPERUSER", `ALTER ROLE ALL SET search_path = "$user", public`,
		`ALTER ROLE postgres IN DATABASE postgres SET search_path = public`)
	exec1(t, c.dst, "CREATE ROLE pgjet LOGIN SUPERUSER")
	capt := c.capture(t)
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	asPgjet := asUser(t, c.src, "pgjet")
	exec1(t, asPgjet, `CREATE TABLE notes (id int PRIMARY KEY, v text)`, `INSERT INTO notes VALUES (1, 'by pgjet')`)
	if got := queryString(t, c.src, "SELECT coalesce(to_regclass('public.notes')::text, '')"); got != "public.notes" && got != "notes" {
		t.Fatalf("role pgjet's unqualified CREATE TABLE notes did not land in public (in pgjet: %q); capture:\n%s",
			queryString(t, c.src, "SELECT coalesce(to_regclass('pgjet.notes')::text, '')"), tail(capt.Output(), 3000))
	}
	waitTable(t, c.dst, "public.notes", 1)
	capt.Stop(t)
	app.Stop(t)
}
