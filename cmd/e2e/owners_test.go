package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// Roles are cluster-wide and every test starts clusters of its own, so the
// role names below meet no other test's.

// as is url with role as its user.
func as(t *testing.T, url, role string) string {
	t.Helper()
	u := strings.Replace(url, "postgres@", role+"@", 1)
	if u == url {
		t.Fatalf("cannot make a URL for role %s from %s", role, url)
	}
	return u
}

// ownersSQL lists the owner of every table, index, sequence, view and
// function of schema public, one per line.
const ownersSQL = `SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
	SELECT format('%s %s %s', c.relkind, c.relname, pg_get_userbyid(c.relowner)) AS x
		FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
	UNION ALL SELECT format('f %s %s', p.proname, pg_get_userbyid(p.proowner))
		FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace) s`

// privilegesSQL describes grants, default privileges and row-level
// security policies of schema public.
const privilegesSQL = `SELECT concat_ws(E'\n',
	(SELECT string_agg(format('%s %s', c.relname, c.relacl), E'\n' ORDER BY c.relname)
		FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')),
	(SELECT string_agg(format('f %s %s', p.proname, p.proacl), E'\n' ORDER BY p.proname)
		FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace),
	(SELECT string_agg(format('default %s %s %s', pg_get_userbyid(d.defaclrole), d.defaclobjtype, d.defaclacl), E'\n' ORDER BY d.defaclrole, d.defaclobjtype)
		FROM pg_default_acl d),
	(SELECT string_agg(format('policy %s %s %s %s', tablename, policyname, roles, qual), E'\n' ORDER BY tablename, policyname)
		FROM pg_policies WHERE schemaname = 'public'),
	(SELECT string_agg(format('rls %s %s', relname, relrowsecurity), E'\n' ORDER BY relname)
		FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'))`

// waitSameOwners waits until the replica's owners and privileges describe
// as the primary's.
func waitSameOwners(t *testing.T, primary, replica string) {
	t.Helper()
	waitSameDescription(t, primary, replica, "SELECT ("+ownersSQL+") || E'\\n' || ("+privilegesSQL+")")
}

// waitSameDescription waits until the query describes both databases the
// same.
func waitSameDescription(t *testing.T, primary, replica, query string) {
	t.Helper()
	waitFor(t, 60*time.Second, "replica to describe as the primary", func() (bool, string) {
		checkDaemons(t)
		a, b := queryString(t, primary, query), queryString(t, replica, query)
		return a == b, "primary:\n" + a + "\nreplica:\n" + b
	})
}

// stopLine returns the plain line a daemon that stopped wrote last to
// stderr (the one after its JSON log events), and fails unless it is the
// only such line.
func stopLine(t *testing.T, p *proc, prefix string) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(p.Output()), "\n") {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%s wrote %d lines starting %q, want 1:\n%s", p.name, len(lines), prefix, tail(p.Output(), 4096))
	}
	return lines[0]
}

// TestOwners_DDLAsAuthor: a schema change replays on the replica as the
// role that made it on the source: tables and functions get the same
// owners, and a SECURITY DEFINER function runs as its source definer, not
// as the apply role (a superuser here). A change made by a role the
// replica lacks stops apply with one line naming it; pgjet roles creates
// it, and the restarted applier goes on.
func TestOwners_DDLAsAuthor(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE base (id int PRIMARY KEY)`)
	for _, url := range []string{c.src, c.dst} {
		exec1(t, url, `CREATE ROLE app LOGIN`, `CREATE ROLE other LOGIN`)
	}
	capt := c.capture(t)
	app := c.apply(t)
	// Replicated, made by postgres: it exists on both sides.
	exec1(t, c.src, `GRANT CREATE ON SCHEMA public TO app`)
	exec1(t, as(t, c.src, "app"),
		`CREATE TABLE app_t (id int PRIMARY KEY, v text)`,
		`CREATE FUNCTION app_f() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'`,
		`INSERT INTO app_t VALUES (1, 'a')`)
	// A session that became app with SET ROLE makes app's objects too.
	exec1(t, c.src, `SET ROLE app; CREATE SEQUENCE app_seq; RESET ROLE`, `INSERT INTO base VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameOwners(t, c.src, c.dst)
	for _, role := range []string{"app", "other"} {
		if got := queryString(t, as(t, c.dst, role), `SELECT app_f()`); got != "app" {
			t.Errorf("on the replica, role %s calling SECURITY DEFINER app_f() runs it as %q, want \"app\"", role, got)
		}
	}

	// A role only the source has.
	exec1(t, c.src, `CREATE ROLE ghost LOGIN`, `GRANT CREATE ON SCHEMA public TO PUBLIC`)
	exec1(t, as(t, c.src, "ghost"), `CREATE TABLE ghost_t (id int PRIMARY KEY)`, `INSERT INTO ghost_t VALUES (1)`)
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line := stopLine(t, app, "pgjet-apply: ")
	for _, want := range []string{`role "ghost"`, "does not exist on the target", "pgjet roles --source", `CREATE ROLE "ghost"`, "stream seq"} {
		if !strings.Contains(line, want) {
			t.Errorf("apply's line does not say %q:\n%s", want, line)
		}
	}
	if got := queryString(t, c.dst, `SELECT to_regclass('public.ghost_t')::text`); got != "" {
		t.Errorf("ghost_t exists on the replica after apply stopped on it")
	}
	code, out := runPgjet(t, "roles", "--source", c.src, "--target", c.dst)
	if code != 0 {
		t.Fatalf("pgjet roles exited %d:\n%s", code, out)
	}
	if !strings.Contains(out, `CREATE ROLE "ghost"`) {
		t.Errorf("pgjet roles did not say it creates ghost:\n%s", out)
	}
	app = c.apply(t)
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameOwners(t, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestOwners_ApplyRoleMembership: a least-privilege apply role (set up by
// deploy/postgres/roles.sql, no superuser) replays the schema changes of
// the roles it is a member of, as them. A change by a role it may not
// become stops it with the GRANT that fixes it; after the grant it goes
// on. A superuser's change names what to do instead.
func TestOwners_ApplyRoleMembership(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE base (id int PRIMARY KEY)`)
	// Before capture starts: nothing here is replicated.
	for _, url := range []string{c.src, c.dst} {
		exec1(t, url, `CREATE ROLE app LOGIN`, `CREATE ROLE other LOGIN`, `GRANT CREATE ON SCHEMA public TO app, other`)
	}
	roles := filepath.Join("..", "..", "deploy", "postgres", "roles.sql")
	psql := exec.Command("psql", "-X", "-q", "-v", "side=target", "-v", "owner=app", "-f", roles, c.dst)
	if out, err := psql.CombinedOutput(); err != nil {
		t.Fatalf("psql -f roles.sql: %v\n%s", err, out)
	}
	capt := c.capture(t)
	applyArgs := []string{"--db", as(t, c.dst, "pgjet_apply"), "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1"}
	app := start(t, "pgjet-apply", bins.apply, applyArgs...)
	app.waitLog(t, "apply started")
	exec1(t, as(t, c.src, "app"), `CREATE TABLE app_t (id int PRIMARY KEY)`, `INSERT INTO app_t VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	// Owners only: roles.sql grants pgjet_apply privileges on the replica.
	waitSameDescription(t, c.src, c.dst, ownersSQL)

	exec1(t, as(t, c.src, "other"), `CREATE TABLE other_t (id int PRIMARY KEY)`, `INSERT INTO other_t VALUES (1)`)
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line := stopLine(t, app, "pgjet-apply: ")
	for _, want := range []string{`role "other"`, `may not become`, `GRANT "other" TO "pgjet_apply"`} {
		if !strings.Contains(line, want) {
			t.Errorf("apply's line does not say %q:\n%s", want, line)
		}
	}
	exec1(t, c.dst, `GRANT other TO pgjet_apply`)
	app = start(t, "pgjet-apply", bins.apply, applyArgs...)
	app.waitLog(t, "apply started")
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameDescription(t, c.src, c.dst, ownersSQL)

	// A superuser's change: the apply role cannot become it.
	exec1(t, c.src, `CREATE TABLE su_t (id int PRIMARY KEY)`)
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line = stopLine(t, app, "pgjet-apply: ")
	for _, want := range []string{`role "postgres"`, "superuser", "INSERT INTO pgjet.ddl_done"} {
		if !strings.Contains(line, want) {
			t.Errorf("apply's line does not say %q:\n%s", want, line)
		}
	}
	capt.Stop(t)
}

// ownersSchema is a primary whose application role owns its objects and
// gave a read-only role SELECT, default privileges and a policy.
const ownersSchema = `
CREATE ROLE app LOGIN;
CREATE ROLE reader LOGIN;
CREATE ROLE auditor NOLOGIN;
GRANT CREATE ON SCHEMA public TO app;
CREATE TABLE plain (id int PRIMARY KEY);
INSERT INTO plain SELECT generate_series(1, 10);
SET ROLE app;
CREATE TABLE app_t (id int PRIMARY KEY, v text);
INSERT INTO app_t SELECT i, 'v' || i FROM generate_series(1, 500) i;
CREATE FUNCTION app_f() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text';
GRANT SELECT ON app_t TO reader;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reader;
ALTER TABLE app_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY readable ON app_t TO reader, auditor USING (id > 0);
RESET ROLE;
`

// TestOwners_Snapshot: a region built from a snapshot keeps the source's
// owners, grants, default privileges and policies: a read-only role
// granted SELECT on the primary reads the replica, and SECURITY DEFINER
// runs as its definer. The restore first checks that every role the
// snapshot names exists: it stops before loading a row with one line
// listing them all; pgjet roles creates them, and the restarted applier
// builds the region. --no-owners restores without them, as the apply role.
func TestOwners_Snapshot(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, ownersSchema)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line := stopLine(t, app, "pgjet-apply: ")
	for _, want := range []string{"auditor", "app", "reader", "missing on the target", "pgjet roles --source"} {
		if !strings.Contains(line, want) {
			t.Errorf("apply's line does not say %q:\n%s", want, line)
		}
	}
	if got := queryString(t, c.dst, `SELECT to_regclass('public.app_t')::text`); got != "" {
		t.Errorf("the restore created app_t before it stopped on the missing roles")
	}

	// --check-config sees the same.
	checkConfig(t, bins.apply, 1, []string{"FAIL  roles", "auditor", "pgjet roles --source"},
		"--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")

	code, out := runPgjet(t, "roles", "--source", c.src, "--target", c.dst)
	if code != 0 {
		t.Fatalf("pgjet roles exited %d:\n%s", code, out)
	}
	checkConfig(t, bins.apply, 0, []string{"OK    roles"},
		"--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	app = c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameOwners(t, c.src, c.dst)
	if n := queryInt(t, as(t, c.dst, "reader"), `SELECT count(*) FROM app_t`); n != 500 {
		t.Errorf("reader sees %d rows of app_t on the replica, want 500", n)
	}
	if got := queryString(t, as(t, c.dst, "reader"), `SELECT app_f()`); got != "app" {
		t.Errorf("on the replica, SECURITY DEFINER app_f() runs as %q, want \"app\"", got)
	}

	// After the bootstrap: a table app creates gets reader's SELECT from
	// the default privileges on both sides.
	exec1(t, as(t, c.src, "app"), `CREATE TABLE app_t2 (id int PRIMARY KEY)`, `INSERT INTO app_t2 VALUES (1), (2)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameOwners(t, c.src, c.dst)
	if n := queryInt(t, as(t, c.dst, "reader"), `SELECT count(*) FROM app_t2`); n != 2 {
		t.Errorf("reader sees %d rows of app_t2 on the replica, want 2", n)
	}

	// --no-owners: the old way, every object the apply role's. Another
	// database of the same cluster: replication origins are cluster-wide,
	// so the first region's applier stops first.
	app.Stop(t)
	ctx := context.Background()
	if err := c.replica.CreateDatabase(ctx, "plainr"); err != nil {
		t.Fatal(err)
	}
	r2 := c.replica.URL("plainr")
	app2 := start(t, "pgjet-apply r2", bins.apply, "--db", r2, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r2", "--no-owners")
	app2.waitLog(t, "snapshot restored; following changes")
	exec1(t, as(t, c.src, "app"), `CREATE TABLE app_t3 (id int PRIMARY KEY)`)
	waitSame(t, 60*time.Second, c.src, r2)
	if got := queryString(t, r2, `SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class WHERE relnamespace = 'public'::regnamespace`); got != "postgres" {
		t.Errorf("with --no-owners, the owners of r2's objects are %q, want postgres", got)
	}
	if got := queryString(t, r2, `SELECT relacl::text FROM pg_class WHERE oid = 'app_t'::regclass`); got != "" {
		t.Errorf("with --no-owners, app_t has the grants %s, want none", got)
	}
	capt.Stop(t)
	app2.Stop(t)
}

// TestRoles_Copy: pgjet roles copies role attributes and memberships,
// never superusers and never passwords unless --with-passwords; a second
// run changes nothing, and a run after the source changed makes the
// target match. --dry-run prints the statements and changes nothing.
func TestRoles_Copy(t *testing.T) {
	t.Parallel()
	src := local.NewTestPostgres(t, local.PostgresOptions{Name: "rsrc"}).URL("postgres")
	dst := local.NewTestPostgres(t, local.PostgresOptions{Name: "rdst"}).URL("postgres")
	exec1(t, src,
		`CREATE ROLE app LOGIN CONNECTION LIMIT 5 PASSWORD 'secret' VALID UNTIL '2100-01-01'`,
		`CREATE ROLE reader NOLOGIN NOINHERIT`,
		`CREATE ROLE "Odd ""name""" CREATEDB BYPASSRLS`,
		`CREATE ROLE admin SUPERUSER LOGIN`,
		`GRANT reader TO app`, `GRANT pg_read_all_data TO reader WITH ADMIN OPTION`, `GRANT app TO "Odd ""name"""`,
		`GRANT app TO admin`)
	// A role that exists on the target already, with other attributes,
	// and a role only the target has.
	exec1(t, dst, `CREATE ROLE reader LOGIN CONNECTION LIMIT 1`, `CREATE ROLE local_only LOGIN`, `GRANT local_only TO reader`)

	rolesSQL := `SELECT string_agg(format('%s super=%s inherit=%s createrole=%s createdb=%s login=%s repl=%s bypassrls=%s connlimit=%s until=%s pw=%s',
			rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil, rolpassword IS NOT NULL), E'\n' ORDER BY rolname)
		FROM pg_authid WHERE oid >= 16384 AND rolname NOT IN ('admin', 'local_only')`
	membersSQL := `SELECT string_agg(m, E'\n' ORDER BY m) FROM (
		SELECT format('%s in %s admin=%s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option) AS m
		FROM pg_auth_members WHERE pg_get_userbyid(member) NOT IN ('admin', 'local_only') AND pg_get_userbyid(roleid) <> 'local_only') s`

	code, out := runPgjet(t, "roles", "--source", src, "--target", dst, "--dry-run")
	if code != 0 {
		t.Fatalf("pgjet roles --dry-run exited %d:\n%s", code, out)
	}
	if !strings.Contains(out, `CREATE ROLE "app"`) || queryInt(t, dst, `SELECT count(*) FROM pg_roles WHERE rolname = 'app'`) != 0 {
		t.Errorf("--dry-run did not print CREATE ROLE \"app\", or created it:\n%s", out)
	}

	code, out = runPgjet(t, "roles", "--source", src, "--target", dst)
	t.Logf("pgjet roles:\n%s", out)
	if code != 0 {
		t.Fatalf("pgjet roles exited %d:\n%s", code, out)
	}
	want := strings.ReplaceAll(queryString(t, src, rolesSQL), "pw=t", "pw=f")
	if got := queryString(t, dst, rolesSQL); got != want {
		t.Errorf("target roles:\n%s\nwant:\n%s", got, want)
	}
	if got, want := queryString(t, dst, membersSQL), queryString(t, src, membersSQL); got != want {
		t.Errorf("target memberships:\n%s\nwant:\n%s", got, want)
	}
	if n := queryInt(t, dst, `SELECT count(*) FROM pg_roles WHERE rolname = 'admin'`); n != 0 {
		t.Errorf("the superuser admin was copied")
	}
	if !strings.Contains(out, `superuser "admin"`) {
		t.Errorf("pgjet roles did not say it skipped the superuser admin:\n%s", out)
	}
	if n := queryInt(t, dst, `SELECT count(*) FROM pg_auth_members WHERE roleid = 'local_only'::regrole AND member = 'reader'::regrole`); n != 1 {
		t.Errorf("a membership in a role only the target has was revoked")
	}

	code, out = runPgjet(t, "roles", "--source", src, "--target", dst)
	if code != 0 || !strings.Contains(out, "nothing to change") {
		t.Errorf("a second run exited %d and did not say it had nothing to change:\n%s", code, out)
	}

	exec1(t, src, `ALTER ROLE app CONNECTION LIMIT 7 NOLOGIN`, `REVOKE reader FROM app`, `GRANT reader TO "Odd ""name"""`)
	code, out = runPgjet(t, "roles", "--source", src, "--target", dst, "--with-passwords")
	if code != 0 {
		t.Fatalf("pgjet roles --with-passwords exited %d:\n%s", code, out)
	}
	if got, want := queryString(t, dst, rolesSQL), queryString(t, src, rolesSQL); got != want {
		t.Errorf("target roles after the source changed:\n%s\nwant:\n%s", got, want)
	}
	if got, want := queryString(t, dst, membersSQL), queryString(t, src, membersSQL); got != want {
		t.Errorf("target memberships after the source changed:\n%s\nwant:\n%s", got, want)
	}
	pw := `SELECT rolpassword FROM pg_authid WHERE rolname = 'app'`
	if got, want := queryString(t, dst, pw), queryString(t, src, pw); got != want || got == "" {
		t.Errorf("--with-passwords: target password of app %q, want the source's %q", got, want)
	}
	if strings.Contains(out, "SCRAM-SHA-256$") {
		t.Errorf("pgjet roles printed a password hash:\n%s", out)
	}
}
