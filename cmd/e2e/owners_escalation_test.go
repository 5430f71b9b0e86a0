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
func ownersEscalationCluster(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t, `CREATE TABLE base (id int PRIMARY KEY)`)
	for _, url := range []string{c.src, c.dst} {
		exec1(t, url, `CREATE ROLE app LOGIN`, `GRANT CREATE ON SCHEMA public TO app`)
	}
	c.capture(t)
	c.apply(t)
	return c
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
// author with SET LOCAL ROLE, but a RESET ROLE inside it returns to the
// session user, which on the replica is the apply role, not the author.
// On the source app's RESET ROLE stays app and its ALTER ROLE fails (and
// is caught); on the replica it runs as the apply role.
func TestOwners_DOBlockCannotLeaveAuthorRole(t *testing.T) {
	t.Parallel()
	c := ownersEscalationCluster(t)
	exec1(t, as(t, c.src, "app"), `DO $$
BEGIN
	CREATE TABLE do_t (id int PRIMARY KEY);
	RESET ROLE;
`+becomeSuper+`END $$`)
	if appIsSuper(t, c.src) {
		t.Fatalf("app became a superuser on the source")
	}
	exec1(t, c.src, `INSERT INTO base VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitReplicaHas(t, c, "to_regclass", "public.do_t")
	if appIsSuper(t, c.dst) {
		t.Errorf("a DO block app ran on the source made app a superuser on the replica (RESET ROLE inside it ran the rest as the apply role)")
	}
}

// TestOwners_RoleSwitchInsideQueryString: a migration run by a superuser
// as one query string that switches to app with SET ROLE before creating
// a SECURITY DEFINER function: on the source app is its definer, and the
// replica must not make the superuser its definer.
func TestOwners_RoleSwitchInsideQueryString(t *testing.T) {
	t.Parallel()
	c := ownersEscalationCluster(t)
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

// TestOwners_SessionAuthorizationDoesNotStick: a DO block by app that
// sets its own session authorization (harmless on the source, where app
// logged in) must not leave the applier's session running as app: the
// rows and schema changes after it are written as the apply role.
func TestOwners_SessionAuthorizationDoesNotStick(t *testing.T) {
	t.Parallel()
	c := ownersEscalationCluster(t)
	exec1(t, as(t, c.src, "app"), `DO $$
BEGIN
	CREATE TABLE sa_t (id int PRIMARY KEY);
	SET SESSION AUTHORIZATION app;
END $$`)
	// Rows app may not write on either side, and a change by postgres.
	exec1(t, c.src, `INSERT INTO base VALUES (1)`, `CREATE TABLE later_t (id int PRIMARY KEY)`, `INSERT INTO later_t VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameDescription(t, c.src, c.dst, ownersSQL)
}

// TestOwners_ReplicatedRowRunsAuthorCodeAsApplyRole: a CHECK constraint
// runs its function as the role writing the row. On the source that is
// app; on the replica the apply role writes the row, so a function app
// wrote runs there with the apply role's rights.
func TestOwners_ReplicatedRowRunsAuthorCodeAsApplyRole(t *testing.T) {
	t.Parallel()
	c := ownersEscalationCluster(t)
	exec1(t, as(t, c.src, "app"), `CREATE FUNCTION chk(int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
		ALTER ROLE app SUPERUSER;
	END IF;
	RETURN true;
END $$`,
		`CREATE TABLE chk_t (id int PRIMARY KEY CHECK (chk(id)))`,
		`INSERT INTO chk_t VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if appIsSuper(t, c.dst) {
		t.Errorf("a row app inserted on the source made app a superuser on the replica (its CHECK function ran as the apply role)")
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
// least-privilege apply role of roles.sql, all objects owned by app, which
// pgjet_apply is a member of: the restore passes its role check, so it
// must build the region with the source's owners.
func TestOwners_LeastPrivilegeRestore(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE ROLE app LOGIN`, `CREATE ROLE reader LOGIN`, `GRANT CREATE ON SCHEMA public TO app`,
		`SET ROLE app; CREATE TABLE app_t (id int PRIMARY KEY); INSERT INTO app_t VALUES (1); GRANT SELECT ON app_t TO reader; RESET ROLE`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	args := leastPrivilegeTarget(t, c)
	checkConfig(t, bins.apply, 0, []string{"OK    roles"}, args...)
	app := start(t, "pgjet-apply", bins.apply, args...)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 60*time.Second, c.src, c.dst)
	waitSameDescription(t, c.src, c.dst, ownersSQL)
	exec1(t, as(t, c.src, "app"), `CREATE TABLE app_t2 (id int PRIMARY KEY)`, `INSERT INTO app_t2 VALUES (1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
}

// TestOwners_DOBlockCallingDefinerRunsAsCaller: the role recorded with a
// schema change is current_user where the DDL ran, which inside a
// SECURITY DEFINER function is its owner, while the text replayed is the
// whole query string its caller wrote. A DO block by app that calls a
// superuser's DDL helper (a partition maker, say) replays wholly as the
// superuser on the replica.
func TestOwners_DOBlockCallingDefinerRunsAsCaller(t *testing.T) {
	t.Parallel()
	c := ownersEscalationCluster(t)
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
