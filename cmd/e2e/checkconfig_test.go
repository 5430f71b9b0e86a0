package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// checkConfig runs bin --check-config and checks its exit status and that
// every want is in its report.
func checkConfig(t *testing.T, bin string, code int, want []string, args ...string) string {
	t.Helper()
	p := start(t, "check-config", bin, append(args, "--check-config")...)
	got := p.Wait(t, 60*time.Second)
	out := p.Output()
	t.Logf("%s --check-config:\n%s", bin, out)
	if got != code {
		t.Fatalf("exit %d, want %d:\n%s", got, code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "goroutine ") {
		t.Errorf("report has a stack trace:\n%s", out)
	}
	return out
}

// TestCheckConfig: --check-config on both daemons reports one line per
// check and exits 0 when all pass; a misconfigured source, target or NATS
// fails with the cause and the fix on the check's line, and exit 1. The
// checks change nothing: no slot, publication, stream or schema appears.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY)")
	capArgs := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"}
	appArgs := []string{"--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1"}

	t.Run("capture ok", func(t *testing.T) {
		checkConfig(t, bins.capture, 0, []string{
			"OK    postgres connection", "OK    wal_level", "OK    replication privilege", "OK    replication connection",
			"OK    published tables", "publication pgjet_src is missing; capture creates it FOR ALL TABLES",
			"OK    replication slot", "slot pgjet_src is missing; capture creates it",
			"OK    nats connection", "OK    nats jetstream", "OK    stream PGJET_src", "absent; pgjet-capture creates it",
			"OK    pg_dump", "OK    configuration",
			// The test server syncs always, but only a system-account user may see it.
			"WARN  nats durability", "cannot tell whether nats-server hub syncs", "sync_interval: always",
			"OK    schema pgjet", "OK    tables without a key", "all 14 checks passed, 1 with a warning",
		}, capArgs...)
		if n := queryInt(t, c.src, "SELECT count(*) FROM pg_replication_slots"); n != 0 {
			t.Errorf("--check-config left %d replication slots", n)
		}
	})

	t.Run("capture misconfigured", func(t *testing.T) {
		pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "replicalevel", WALLevel: "replica"})
		exec1(t, pg.URL("postgres"), "CREATE ROLE plain LOGIN")
		port, _ := local.FreePort()
		checkConfig(t, bins.capture, 1, []string{
			"OK    postgres connection",
			"FAIL  wal_level", "set wal_level = logical",
			"FAIL  replication privilege", `run ALTER ROLE "plain" REPLICATION`, "refuses this role a walsender",
			"FAIL  published tables", "only a superuser may create it FOR ALL TABLES",
			"FAIL  nats connection", "is nats-server running there?",
			"FAIL  pg_dump", "/nonexistent/pg_dump not found", "--no-snapshot",
			"checks failed",
		}, "--db", strings.Replace(pg.URL("postgres"), "postgres@", "plain@", 1), "--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "--name", "src",
			"--pg-dump", "/nonexistent/pg_dump")
	})

	t.Run("apply misconfigured", func(t *testing.T) {
		exec1(t, c.dst, "CREATE ROLE plain LOGIN")
		checkConfig(t, bins.apply, 1, []string{
			"OK    postgres connection",
			"FAIL  pgjet schema", "may not create it; GRANT CREATE ON DATABASE",
			"OK    nats jetstream",
			"FAIL  stream PGJET_src", "start pgjet-capture --name src first",
		}, "--db", strings.Replace(c.dst, "postgres@", "plain@", 1), "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	})

	t.Run("wrong password, NATS without JetStream", func(t *testing.T) {
		// The role signs in with a password (scram), not trust: the
		// first matching pg_hba line wins.
		hba := filepath.Join(c.primary.DataDir(), "pg_hba.conf")
		old, err := os.ReadFile(hba)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hba, append([]byte("host all pwuser 127.0.0.1/32 scram-sha-256\n"), old...), 0o600); err != nil {
			t.Fatal(err)
		}
		exec1(t, c.src, "CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'right'", "SELECT pg_reload_conf()")
		nojs := local.NewTestNATS(t, local.NATSOptions{Name: "nojs", NoJetStream: true})
		wrong := strings.Replace(c.src, "postgres@", "pwuser:wrong@", 1)
		out := checkConfig(t, bins.capture, 1, []string{
			"FAIL  postgres connection", "password authentication failed", "pwuser",
			"OK    nats connection",
			"FAIL  nats jetstream", "-js",
			"checks failed",
		}, "--db", wrong, "--nats", nojs.ClientURL(), "--name", "src")
		if strings.Contains(out, ":wrong@") {
			t.Errorf("the report shows the password:\n%s", out)
		}
		checkConfig(t, bins.apply, 1, []string{
			"FAIL  nats jetstream", "-js",
		}, "--db", c.dst, "--nats", nojs.ClientURL(), "--name", "src", "--region", "r1")
	})

	t.Run("apply ok", func(t *testing.T) {
		// The source's roles reach the target as pgjet roles would copy
		// them; whether or not capture's snapshot is complete when the
		// check runs, the roles check then passes.
		exec1(t, c.dst, "CREATE ROLE pwuser LOGIN REPLICATION")
		c.capture(t)
		checkConfig(t, bins.apply, 0, []string{
			"OK    postgres connection", "OK    pgjet schema", "missing; pgjet-apply creates it",
			"OK    nats connection", "OK    stream PGJET_src", "present (stream",
			"OK    target is not the source", "OK    stream PGJET_DLQ_src_r1", "OK    roles", "all 9 checks passed",
		}, append(appArgs, "--on-bad-message", "dead-letter")...)
	})
}
