package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// TestNATS_TLS runs capture and apply through a NATS server that requires
// TLS and verifies client certificates, all made by the test; and checks
// that a missing CA or a missing client certificate ends in one line
// naming the cause and the fix.
func TestNATS_TLS(t *testing.T) {
	t.Parallel()
	files, err := local.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := newClusterNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", TLS: &files, VerifyClients: true},
		"CREATE TABLE t (id int PRIMARY KEY, v text)")
	tlsFlags := []string{"--nats-tls-ca", files.CA, "--nats-tls-cert", files.ClientCert, "--nats-tls-key", files.ClientKey}

	t.Run("without the CA", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src",
			"--nats-tls-cert", files.ClientCert, "--nats-tls-key", files.ClientKey)
		expectFatal(t, p, "TLS failed", "signed by an unknown authority", "--nats-tls-ca")
	})
	t.Run("without a client certificate", func(t *testing.T) {
		p := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1",
			"--nats-tls-ca", files.CA)
		expectFatal(t, p, "TLS failed", "--nats-tls-cert")
	})
	t.Run("check-config", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, append([]string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--check-config"}, tlsFlags...)...)
		if code := p.Wait(t, 60*time.Second); code != 0 {
			t.Fatalf("--check-config exited %d, want 0:\n%s", code, p.Output())
		}
		if out := p.Output(); !strings.Contains(out, "with TLS") {
			t.Errorf("report does not say the connection uses TLS:\n%s", out)
		}
	})

	c.capture(t, tlsFlags...)
	c.apply(t, tlsFlags...)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g", "UPDATE t SET v = 'x' WHERE id <= 10")
	waitSame(t, 60*time.Second, c.src, c.dst)
}

// TestNATS_Auth runs capture and apply against password- and
// token-protected servers, with secrets from files, the environment and a
// config file, and checks that wrong credentials end in one clear line.
func TestNATS_Auth(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("user and password", func(t *testing.T) {
		c := newClusterNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", User: "pgjet", Password: "s3cret"},
			"CREATE TABLE t (id int PRIMARY KEY)")
		c.capture(t, "--nats-user", "pgjet", "--nats-password-file", write("nats-password", "s3cret\n"))
		// apply takes everything from a config file.
		cfg := write("apply.yaml", "db: "+c.dst+"\nnats: "+c.nats.ClientURL()+"\nname: src\nregion: r1\nnats-user: pgjet\nnats-password: s3cret\ngroup-txns: 10\n")
		p := start(t, "pgjet-apply", bins.apply, "--config", cfg)
		p.waitLog(t, "apply started")
		exec1(t, c.src, "INSERT INTO t SELECT generate_series(1, 50)")
		waitSame(t, 60*time.Second, c.src, c.dst)

		// The operator tool takes the same flags.
		for _, args := range [][]string{
			{"status", "--nats", c.nats.ClientURL(), "--name", "src", "--json"},
			{"tail", "--nats", c.nats.ClientURL(), "--name", "src", "--last", "1", "--follow=false"},
		} {
			tool := start(t, "pgjet "+args[0], bins.pgjet, append(args, "--nats-user", "pgjet", "--nats-password-file", filepath.Join(dir, "nats-password"))...)
			if code := tool.Wait(t, 30*time.Second); code != 0 {
				t.Errorf("pgjet %s with --nats-user/--nats-password-file exited %d:\n%s", args[0], code, tool.Output())
			}
		}

		bad := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src2",
			"--nats-user", "pgjet", "--nats-password", "wrong")
		expectFatal(t, bad, "refused the credentials", "--nats-user/--nats-password")
		if strings.Contains(bad.Output(), "wrong") {
			t.Errorf("the password appears in the output:\n%s", bad.Output())
		}
	})

	t.Run("token", func(t *testing.T) {
		c := newClusterNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", Token: "t0ken"}, "CREATE TABLE t (id int PRIMARY KEY)")
		c.capture(t, "--nats-token-file", write("nats-token", "t0ken"))
		t.Setenv("PGJET_NATS_TOKEN", "t0ken")
		app := c.apply(t)
		exec1(t, c.src, "INSERT INTO t SELECT generate_series(1, 50)")
		waitSame(t, 60*time.Second, c.src, c.dst)
		app.Stop(t) // the target's replication origin is free again

		t.Setenv("PGJET_NATS_TOKEN", "wrong")
		bad := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r2")
		expectFatal(t, bad, "refused the credentials")
	})
}

// TestConfigFile_Errors checks that a config file with an unknown key or a
// value of the wrong type stops a daemon with exit 2, naming key and file.
func TestConfigFile_Errors(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "pgjet.yaml")
	if err := os.WriteFile(cfg, []byte("db: postgres://x@127.0.0.1/db\nnats: nats://127.0.0.1:1\nname: src\nregion: r1\ngroup_txns: 5\nheartbeat: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bin  string
		args []string
		want []string
	}{
		{bins.apply, nil, []string{`unknown key "group_txns"`, cfg}},
		{bins.capture, nil, []string{`unknown key "region"`, `key "heartbeat": expected a duration`, cfg}},
		// A secret file that is not there is a configuration error too.
		{bins.capture, []string{"--db", "postgres://x@127.0.0.1/db", "--nats", "nats://127.0.0.1:1", "--name", "src", "--db-password-file", "/nonexistent/pw"},
			[]string{"--db-password-file: open /nonexistent/pw"}},
		{bins.apply, []string{"--db", "postgres://x@127.0.0.1/db", "--nats", "nats://127.0.0.1:1", "--name", "src", "--region", "r1", "--nats-tls-cert", "/nonexistent/cert"},
			[]string{"--nats-tls-cert and --nats-tls-key go together", "--nats-tls-cert: stat /nonexistent/cert"}},
	} {
		args := tc.args
		if args == nil {
			args = []string{"--config", cfg}
		}
		p := start(t, filepath.Base(tc.bin), tc.bin, args...)
		if code := p.Wait(t, 10*time.Second); code != 2 {
			t.Fatalf("%s exited %d, want 2:\n%s", p.name, code, p.Output())
		}
		for _, w := range tc.want {
			if !strings.Contains(p.Output(), w) {
				t.Errorf("%s output lacks %q:\n%s", p.name, w, p.Output())
			}
		}
	}
}

// TestConfigFile_DeployExamples checks that the YAML files of
// deploy/systemd are valid configurations of their daemons: every key a
// flag, every value of its type. A bad --log-level given on the command
// line stops each daemon right after the file is read, before it would
// connect to the example hosts.
func TestConfigFile_DeployExamples(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ bin, file string }{
		{bins.capture, "capture.yaml.example"},
		{bins.apply, "apply.yaml.example"},
	} {
		p := start(t, filepath.Base(tc.bin), tc.bin, "--config", filepath.Join("..", "..", "deploy", "systemd", tc.file), "--log-level", "nope")
		code := p.Wait(t, 10*time.Second)
		if lines := outputLines(p.Output()); code != 2 || len(lines) != 1 || !strings.Contains(lines[0], `--log-level "nope"`) {
			t.Errorf("%s --config %s: exit %d, want 2 and one line for the bad --log-level only:\n%s", p.name, tc.file, code, p.Output())
		}
	}
}

// postgresTLS makes a throwaway CA and certificates in a directory of
// its own under /tmp, whose files test Postgres clusters copy.
func postgresTLS(t *testing.T) (string, local.TLSFiles) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgjet-pgtls-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	files, err := local.GenerateTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// TestPostgres_TLS runs capture and apply against Postgres servers that
// accept TCP connections only over TLS (hostssl), through URLs with
// sslmode=verify-full and sslrootcert, as README.md documents; checks that
// capture's walsender connection is encrypted too; and that a URL without
// the CA stops with one line naming sslrootcert.
func TestPostgres_TLS(t *testing.T) {
	t.Parallel()
	_, files := postgresTLS(t)
	c := &cluster{
		primary: local.NewTestPostgres(t, local.PostgresOptions{Name: "primary", TLS: &files}),
		replica: local.NewTestPostgres(t, local.PostgresOptions{Name: "replica", TLS: &files}),
		nats:    local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"}),
	}
	c.src, c.dst = c.primary.URL("postgres"), c.replica.URL("postgres")
	if !strings.Contains(c.src, "sslmode=verify-full") {
		t.Fatalf("URL %s does not verify the server", c.src)
	}
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	exec1(t, c.dst, "CREATE TABLE t (id int PRIMARY KEY, v text)")

	t.Run("without the CA", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, "--db", strings.Replace(c.src, "sslrootcert=", "sslrootcert=/nonexistent", 1),
			"--nats", c.nats.ClientURL(), "--name", "src")
		expectFatal(t, p, "cannot be read", "sslrootcert")
	})

	t.Run("another CA", func(t *testing.T) {
		other, err := local.GenerateTLS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		p := start(t, "pgjet-apply", bins.apply, "--db", strings.Replace(c.dst, url.QueryEscape(files.CA), url.QueryEscape(other.CA), 1),
			"--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
		expectFatal(t, p, "signed by an unknown authority", "sslrootcert=FILE")
	})

	c.capture(t)
	c.apply(t)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g")
	waitSame(t, 60*time.Second, c.src, c.dst)
	// The slot's walsender streams over TLS, and so does every other one
	// (a snapshot's, while it runs).
	if n := queryInt(t, c.src, `SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
		WHERE r.application_name = 'pgjet-capture' AND s.ssl`); n != 1 {
		t.Errorf("%d TLS walsenders of pgjet-capture, want 1", n)
	}
	if n := queryInt(t, c.src, `SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.backend_type = 'walsender' AND NOT s.ssl`); n != 0 {
		t.Errorf("%d walsenders without TLS", n)
	}
	if n := queryInt(t, c.dst, `SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.application_name LIKE 'pgjet%' AND NOT s.ssl`); n != 0 {
		t.Errorf("%d pgjet connections to the replica without TLS", n)
	}
}
