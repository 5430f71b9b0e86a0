package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Ways a source role could get more rights on a replica than it has on the
// source, although schema changes replay as their author.

// ownersEscalationCluster is a cluster with role app on both sides, able
// to create objects in public on both, capture and apply running (apply as
// the superuser postgres, the harness' default).
func ownersEscalationCluster(t *testing.T) (*cluster, *proc) {
	t.Helper()
	c := newCluster(t, `CREATE TABLE base (id int PRIMARY KEY)`)
	for _, url := range []string{c.src, c.dst} {
		exec1(t, url, `CREATE ROLE app LOGIN`, `GRANT CREATE ON SCHEMA public TO app`)
	}
	c.capture(t)
	return c, c.apply(t)
}

// waitRoleSwitchStop waits for apply to stop at a schema change that
// switches its role on the target (which on the source did not give it
// more rights), and checks its line names the statement and the cause.
func waitRoleSwitchStop(t *testing.T, app *proc, stmt, pgMsg string) {
	t.Helper()
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line := stopLine(t, app, "pgjet-apply: ")
	for _, want := range []string{stmt, "changes its role or session authorization", `make the change on the target by hand as "app"`, "INSERT INTO pgjet.ddl_done", pgMsg} {
		if !strings.Contains(line, want) {
			t.Errorf("the stop line does not say %q:\n%s", want, line)
		}
	}
}

// becomeSuper is PL/pgSQL that makes app a superuser when the role it
// runs as may, and does nothing where it may not (app on the source).
const becomeSuper = `	BEGIN
		ALTER ROLE app SUPERUSER;
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
`

// appIsSuper reports whether role app is a superuser on the database at
// url.
func appIsSuper(t *testing.T, url string) bool {
	t.Helper()
	return queryInt(t, url, `SELECT count(*) FROM pg_roles WHERE rolname = 'app' AND rolsuper`) != 0
}

// waitReplicaHas waits until the replica has the relation or function
// (a to_regclass or to_regprocedure argument) named.
func waitReplicaHas(t *testing.T, c *cluster, fn, name string) {
	t.Helper()
	waitFor(t, 60*time.Second, name+" on the replica", func() (bool, string) {
		checkDaemons(t)
		got := queryString(t, c.dst, `SELECT coalesce(`+fn+`($1)::text, '')`, name)
		return got != "", "missing"
	})
}

// TestOwners_DOBlockCannotLeaveAuthorRole: a DO block is replayed as its
// author, but a RESET ROLE inside it returns to the session user, which
// on the replica is the apply role, not the author. On the source app's
// RESET ROLE stays app and its ALTER ROLE fails (and is caught); on the
// replica it must not run as the apply role: apply stops there instead,
// with nothing of the block applied.
func TestOwners_DOBlockCannotLeaveAuthorRole(t *testing.T) {
	t.Parallel()
	c, app := ownersEscalationCluster(t)
	exec1(t, as(t, c.src, "app"), `DO $$
BEGIN
	CREATE TABLE do_t (id int PRIMARY KEY);
	RESET ROLE;
`+becomeSuper+`END $$`)
	if appIsSuper(t, c.src) {
		t.Fatalf("app became a superuser on the source")
	}
	waitRoleSwitchStop(t, app, "CREATE TABLE do_t", `cannot set parameter "role" within security-definer function`)
	if appIsSuper(t, c.dst) {
		t.Errorf("a DO block app ran on the source made app a superuser on the replica (RESET ROLE inside it ran the rest as the apply role)")
	}
	if got := queryString(t, c.dst, `SELECT coalesce(to_regclass('public.do_t')::text, '')`); got != "" {
		t.Errorf("the replica has %s, made by the DO block apply stopped at", got)
	}
}

// TestOwners_RoleSwitchInsideQueryString: a migration run by a superuser
// as one query string that switches to app with SET ROLE before creating
// a SECURITY DEFINER function: on the source app is its definer, and the
// replica must not make the superuser its definer.
func TestOwners_RoleSwitchInsideQueryString(t *testing.T) {
	t.Parallel()
	c, _ := ownersEscalationCluster(t)
	exec1(t, c.src, `CREATE TABLE mig_t (id int PRIMARY KEY); SET ROLE app; `+
		`CREATE FUNCTION mig_f() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'; RESET ROLE`)
	if got := queryString(t, as(t, c.src, "app"), `SELECT mig_f()`); got != "app" {
		t.Fatalf("on the source mig_f() runs as %q, want app", got)
	}
	waitReplicaHas(t, c, "to_regprocedure", "public.mig_f()")
	if got := queryString(t, as(t, c.dst, "app"), `SELECT mig_f()`); got != "app" {
		t.Errorf("on the replica SECURITY DEFINER mig_f() runs as %q, on the source as \"app\"", got)
	}
}

// TestOwners_HiddenRoleSwitchStops: a query string that switches role in
// a way its text does not show (set_config in a SELECT) between two
// schema changes: apply, which replays each statement as the role its
// text says, would make the superuser own what app owns on the source.
// Capture's continuing message tells it so, and apply stops.
func TestOwners_HiddenRoleSwitchStops(t *testing.T) {
	t.Parallel()
	c, app := ownersEscalationCluster(t)
	exec1(t, c.src, `CREATE TABLE h_t (id int PRIMARY KEY); SELECT set_config('role', 'app', false); `+
		`CREATE FUNCTION h_f() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'`)
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line := stopLine(t, app, "pgjet-apply: ")
	for _, want := range []string{`made a schema change on the source as role "app"`, `its statements ran as "postgres"`, "INSERT INTO pgjet.ddl_done"} {
		if !strings.Contains(line, want) {
			t.Errorf("the stop line does not say %q:\n%s", want, line)
		}
	}
	if got := queryString(t, c.dst, `SELECT coalesce(to_regprocedure('public.h_f()')::text, '')`); got != "" {
		t.Errorf("the replica has %s, made by the query string apply stopped at", got)
	}
}

// TestOwners_SessionAuthorizationDoesNotStick: a DO block by app that
// sets its own session authorization (harmless on the source, where app
// logged in) must not leave the applier's session running as app, nor
// break it with a misleading error later: apply stops at the block,
// naming it.
func TestOwners_SessionAuthorizationDoesNotStick(t *testing.T) {
	t.Parallel()
	c, app := ownersEscalationCluster(t)
	exec1(t, as(t, c.src, "app"), `DO $$
BEGIN
	CREATE TABLE sa_t (id int PRIMARY KEY);
	SET SESSION AUTHORIZATION app;
END $$`)
	// Rows app may not write on either side, and a change by postgres.
	exec1(t, c.src, `INSERT INTO base VALUES (1)`, `CREATE TABLE later_t (id int PRIMARY KEY)`, `INSERT INTO later_t VALUES (1)`)
	waitRoleSwitchStop(t, app, "SET SESSION AUTHORIZATION app", `cannot set parameter "session_authorization" within security-definer function`)
}

// TestOwners_DOBlockLeavesNothingInSession: a DO block app runs leaves
// in the applier's session what outlives it there (on the source it is
// app's own session): a temporary type that shadows the one pgjet's
// queries name, a prepared statement under the name of pgjet's own, a
// search_path that puts app's functions before Postgres' own. Each would
// run app's code as the apply role; replication must carry on as the
// source did, app no superuser.
func TestOwners_DOBlockLeavesNothingInSession(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, setup, block string }{
		{"temporary type", `CREATE FUNCTION esc() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
` + becomeSuper + `	RETURN true;
END $$`, `CREATE DOMAIN pg_temp.bool AS pg_catalog.bool CHECK (public.esc());`},
		{"prepared statement", `CREATE FUNCTION esc() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
` + becomeSuper + `	RETURN true;
END $$`, `BEGIN
		EXECUTE 'DEALLOCATE pgjet_pos';
	EXCEPTION WHEN invalid_sql_statement_name THEN
		NULL;
	END;
	EXECUTE 'PREPARE pgjet_pos(text, text, text, text, text, text) AS SELECT public.esc()';`},
		{"search path", `CREATE FUNCTION to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS $$
BEGIN
` + becomeSuper + `	RETURN pg_catalog.to_regclass($1);
END $$`, `PERFORM set_config('search_path', 'public, pg_catalog', false);`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := ownersEscalationCluster(t)
			exec1(t, as(t, c.src, "app"), tt.setup, `DO $$
BEGIN
	CREATE TABLE left_t (id int PRIMARY KEY);
	`+tt.block+`
END $$`)
			// Rows, a schema change and rows by postgres after it.
			exec1(t, c.src, `INSERT INTO base VALUES (1)`, `CREATE TABLE later_t (id int PRIMARY KEY)`, `INSERT INTO later_t VALUES (1)`)
			waitSame(t, 60*time.Second, c.src, c.dst)
			if appIsSuper(t, c.dst) {
				t.Errorf("a DO block app ran on the source left a %s in the applier's session that made app a superuser on the replica", tt.name)
			}
			waitSameDescription(t, c.src, c.dst, ownersSQL)
		})
	}
}

// TestOwners_ReplicatedRowRunsAuthorCodeAsApplyRole: a CHECK constraint
// runs its function as the role writing the row. On the source that is
// app; on the replica it is the apply role, as in Postgres' own logical
// replication (the subscription owner). README "Security model" says so,
// and that the apply role must therefore be roles.sql's least-privilege
// pgjet_apply, no superuser: the function app wrote then runs there with
// pgjet_apply's rights (it may comment on pgjet_apply's schema pgjet) and
// no more (it may not make app a superuser).
func TestOwners_ReplicatedRowRunsAuthorCodeAsApplyRole(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE base (id int PRIMARY KEY)`)
	exec1(t, c.src, `CREATE ROLE app LOGIN`, `GRANT CREATE ON SCHEMA public TO app`)
	c.capture(t)
	args := leastPrivilegeTarget(t, c)
	exec1(t, c.dst, `GRANT CREATE ON SCHEMA public TO app`)
	start(t, "pgjet-apply", bins.apply, args...).waitLog(t, "apply started")
	exec1(t, as(t, c.src, "app"), `CREATE FUNCTION chk(int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		EXECUTE format('COMMENT ON SCHEMA pgjet IS %L', 'checked by ' || current_user);
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
`+becomeSuper+`	RETURN true;
END $$`,
		`CREATE TABLE chk_t (id int PRIMARY KEY CHECK (chk(id)))`,
		`INSERT INTO chk_t VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if got, want := queryString(t, c.dst, `SELECT coalesce(obj_description('pgjet'::regnamespace, 'pg_namespace'), '')`), "checked by pgjet_apply"; got != want {
		t.Errorf("on the replica the CHECK function left %q on schema pgjet, want %q (it runs as the apply role)", got, want)
	}
	if appIsSuper(t, c.dst) {
		t.Errorf("a row app inserted on the source made app a superuser on the replica (its CHECK function ran as a superuser)")
	}
}

// leastPrivilegeTarget makes the replica's pgjet_apply as
// deploy/postgres/roles.sql does (owner app), after pgjet roles copied the
// source's roles, and lets it create the restored tables in public.
func leastPrivilegeTarget(t *testing.T, c *cluster) []string {
	t.Helper()
	if code, out := runPgjet(t, "roles", "--source", c.src, "--target", c.dst); code != 0 {
		t.Fatalf("pgjet roles exited %d:\n%s", code, out)
	}
	roles := filepath.Join("..", "..", "deploy", "postgres", "roles.sql")
	psql := exec.Command("psql", "-X", "-q", "-v", "side=target", "-v", "owner=app", "-f", roles, c.dst)
	if out, err := psql.CombinedOutput(); err != nil {
		t.Fatalf("psql -f roles.sql: %v\n%s", err, out)
	}
	exec1(t, c.dst, `GRANT CREATE ON SCHEMA public TO pgjet_apply`)
	return []string{"--db", as(t, c.dst, "pgjet_apply"), "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1"}
}

// TestOwners_RestoreNeverAsksForSuperuserMembership: a snapshot with a
// table owned by the source's superuser, restored by the least-privilege
// apply role. roles.sql refuses to make pgjet_apply a member of a
// superuser (a member may SET ROLE to it); the restore's stop line must
// not tell the operator to do just that.
func TestOwners_RestoreNeverAsksForSuperuserMembership(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE ROLE app LOGIN`, `GRANT CREATE ON SCHEMA public TO app`,
		`CREATE TABLE plain (id int PRIMARY KEY)`, `INSERT INTO plain VALUES (1)`,
		`SET ROLE app; CREATE TABLE app_t (id int PRIMARY KEY); INSERT INTO app_t VALUES (1); RESET ROLE`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	args := leastPrivilegeTarget(t, c)
	app := start(t, "pgjet-apply", bins.apply, args...)
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	line := stopLine(t, app, "pgjet-apply: ")
	if strings.Contains(line, `GRANT "postgres" TO`) || !strings.Contains(line, "superuser") {
		t.Errorf("the restore's line tells to make the apply role a member of the superuser postgres, or does not say postgres is one:\n%s", line)
	}
}

// TestOwners_LeastPrivilegeRestore: a region built from a snapshot by the
// least-privilege apply role of roles.sql, the objects owned by app and
// app2, which pgjet_apply is a member of. A role that is no superuser may
// give an object to a role only while that role may create in its
// schema: app may not create in the target's public (the source's grant
// is in the snapshot, but only public's owner may run it), which
// --check-config and the restore's check report with the GRANT to run,
// and app2 may create in schema s once the snapshot's grants on s, which
// pg_dump writes last, ran before its table is given to it. Then the
// restore builds the region with the source's owners, and app's schema
// changes replay as app, until app may not create temporary objects.
func TestOwners_LeastPrivilegeRestore(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE ROLE app LOGIN`, `CREATE ROLE app2 LOGIN`, `CREATE ROLE reader LOGIN`, `GRANT CREATE ON SCHEMA public TO app`,
		`CREATE SCHEMA s AUTHORIZATION app`, `GRANT USAGE, CREATE ON SCHEMA s TO app2`,
		`SET ROLE app; CREATE TABLE app_t (id int PRIMARY KEY); INSERT INTO app_t VALUES (1); GRANT SELECT ON app_t TO reader; RESET ROLE`,
		`SET ROLE app2; CREATE TABLE s.t2 (id int PRIMARY KEY); INSERT INTO s.t2 VALUES (1); RESET ROLE`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	args := leastPrivilegeTarget(t, c)
	exec1(t, c.dst, `GRANT app2 TO pgjet_apply`)
	checkConfig(t, bins.apply, 1, []string{`FAIL  roles`, `GRANT CREATE ON SCHEMA "public" TO "app" on the target as the schema's owner`}, args...)
	exec1(t, c.dst, `GRANT CREATE ON SCHEMA public TO app`)
	checkConfig(t, bins.apply, 0, []string{"OK    roles"}, args...)
	app := start(t, "pgjet-apply", bins.apply, args...)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameDescription(t, c.src, c.dst, ownersSQL)
	if got := queryString(t, c.dst, `SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 's.t2'::regclass`); got != "app2" {
		t.Errorf("on the replica s.t2 belongs to %q, on the source to app2", got)
	}
	exec1(t, as(t, c.src, "app"), `CREATE TABLE app_t2 (id int PRIMARY KEY)`, `INSERT INTO app_t2 VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)

	// app's schema changes replay in a temporary function app owns,
	// which needs TEMPORARY on the database (PUBLIC's by default).
	exec1(t, c.dst, `REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC`)
	exec1(t, as(t, c.src, "app"), `CREATE TABLE app_t3 (id int PRIMARY KEY)`)
	if code := app.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("apply exited %d, want 1", code)
	}
	if line := stopLine(t, app, "pgjet-apply: "); !strings.Contains(line, `GRANT TEMPORARY ON DATABASE "postgres" TO "app"`) {
		t.Errorf("the stop line does not name the missing TEMPORARY:\n%s", line)
	}
}

// TestOwners_DOBlockCallingDefinerRunsAsCaller: the role recorded with a
// schema change is current_user where the DDL ran, which inside a
// SECURITY DEFINER function is its owner, while the text replayed is the
// whole query string its caller wrote. A DO block by app that calls a
// superuser's DDL helper (a partition maker, say) replays wholly as the
// superuser on the replica.
func TestOwners_DOBlockCallingDefinerRunsAsCaller(t *testing.T) {
	t.Parallel()
	c, _ := ownersEscalationCluster(t)
	exec1(t, c.src, `CREATE FUNCTION mk_part(n text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY)', n);
END $$`)
	exec1(t, as(t, c.src, "app"), `DO $$
BEGIN
	PERFORM mk_part('part_1');
`+becomeSuper+`END $$`)
	if appIsSuper(t, c.src) {
		t.Fatalf("app became a superuser on the source")
	}
	waitReplicaHas(t, c, "to_regclass", "public.part_1")
	if appIsSuper(t, c.dst) {
		t.Errorf("a DO block app ran on the source made app a superuser on the replica (replayed as the definer of the function it called)")
	}
}
