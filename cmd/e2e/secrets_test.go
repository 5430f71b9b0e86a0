package e2e

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// noSecrets fails t when out holds any of the secrets.
func noSecrets(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s shows the password %q:\n%s", what, s, out)
		}
	}
}

// TestSecrets_MalformedURLs starts the daemons with connection URLs that
// do not parse, passwords and all: each stops with one line that names the
// fix and shows no piece of the password, where pgx and url.Parse quote
// the URL in their own errors.
func TestSecrets_MalformedURLs(t *testing.T) {
	t.Parallel()
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "malformed"})
	nats := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})
	port, _ := local.FreePort()
	deadNATS := fmt.Sprintf("nats://127.0.0.1:%d", port)
	for _, tc := range []struct {
		name, db, nats string
		secrets        []string
		want           string
	}{
		{"percent in the password", "postgres://u:pw%Zq9k@127.0.0.1:1/db", deadNATS, []string{"pw%Zq9k", "%Zq", "Zq9k"}, "malformed"},
		{"slash in the password", "postgres://u:pwA/Bq7@127.0.0.1:1/db", deadNATS, []string{"pwA/Bq7", "pwA", "Bq7"}, "malformed"},
		{"unclosed quote", "host=127.0.0.1 port=1 password='nevr clsd", deadNATS, []string{"nevr", "clsd"}, "malformed"},
		{"nats password with a slash", pg.URL("postgres"), strings.Replace(nats.ClientURL(), "nats://", "nats://u:pwN/Mz3@", 1), []string{"pwN/Mz3", "pwN", "Mz3"}, "NATS URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bin := range []struct{ name, path string }{{"pgjet-capture", bins.capture}, {"pgjet-apply", bins.apply}} {
				args := []string{"--db", tc.db, "--nats", tc.nats, "--name", "src"}
				if bin.name == "pgjet-apply" {
					args = append(args, "--region", "r1")
				}
				p := start(t, bin.name, bin.path, args...)
				expectFatal(t, p, tc.want, "percent-encode")
				noSecrets(t, bin.name, p.Output(), tc.secrets...)
			}
		})
	}
}

// TestSecrets_Status runs pgjet status with a NATS list whose every URL
// holds a password and a --db-region URL that does not parse: neither the
// text nor the JSON report shows a password, nor does the error when no
// server of the list answers.
func TestSecrets_Status(t *testing.T) {
	t.Parallel()
	nats := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", User: "u", Password: "p1secret"})
	port, _ := local.FreePort()
	list := strings.Replace(nats.ClientURL(), "nats://", "nats://u:p1secret@", 1) + fmt.Sprintf(",nats://u:p2secret@127.0.0.1:%d", port)
	secrets := []string{"p1secret", "p2secret", "p3se", "cret"}
	for _, format := range [][]string{nil, {"--json"}} {
		p := start(t, "pgjet status", bins.pgjet, append([]string{"status", "--nats", list, "--db-region", "r1=postgres://u:p3se%cret@127.0.0.1:1/db"}, format...)...)
		p.Wait(t, 60*time.Second)
		out := p.Output()
		if !strings.Contains(out, "is malformed") {
			t.Errorf("pgjet status %v does not report the malformed --db-region:\n%s", format, out)
		}
		if format != nil && !strings.Contains(out, `"nats": "nats://u:xxxxx@`) {
			t.Errorf("pgjet status --json does not show the NATS URLs redacted:\n%s", out)
		}
		noSecrets(t, fmt.Sprintf("pgjet status %v", format), out, secrets...)
	}

	port2, _ := local.FreePort()
	dead := fmt.Sprintf("nats://u:p1secret@127.0.0.1:%d,nats://u:p2secret@127.0.0.1:%d", port, port2)
	p := start(t, "pgjet status", bins.pgjet, "status", "--nats", dead, "--json")
	if code := p.Wait(t, 60*time.Second); code != 1 {
		t.Errorf("pgjet status with no NATS server exited %d, want 1:\n%s", code, p.Output())
	}
	noSecrets(t, "pgjet status with no NATS server", p.Output(), secrets...)
}

// TestSecrets_PasswordFileWins signs in with a password (scram) given in
// --db-password-file while --db holds a wrong one, in the URL's user info
// and query and in keyword form: the file wins, as its help says.
func TestSecrets_PasswordFileWins(t *testing.T) {
	t.Parallel()
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "pwfile"})
	hba := filepath.Join(pg.DataDir(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	// The first matching pg_hba line wins: this role signs in with a password.
	if err := os.WriteFile(hba, append([]byte("host all pwuser 127.0.0.1/32 scram-sha-256\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	exec1(t, pg.URL("postgres"), "CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'goodPW9'", "SELECT pg_reload_conf()")
	file := filepath.Join(t.TempDir(), "db-password")
	if err := os.WriteFile(file, []byte("goodPW9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nats := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})
	for _, db := range []string{
		fmt.Sprintf("postgres://pwuser:badPW77@127.0.0.1:%d/postgres", pg.Port()),
		fmt.Sprintf("postgres://pwuser@127.0.0.1:%d/postgres?password=badPW77", pg.Port()),
		fmt.Sprintf("postgres://pwuser:badPW77@127.0.0.1:%d/postgres?sslmode=disable&password=badPW88", pg.Port()),
		fmt.Sprintf("host=127.0.0.1 port=%d user=pwuser dbname=postgres password=badPW77", pg.Port()),
	} {
		t.Run(db, func(t *testing.T) {
			p := start(t, "check-config", bins.capture, "--db", db, "--db-password-file", file, "--nats", nats.ClientURL(), "--name", "src", "--check-config")
			p.Wait(t, 60*time.Second)
			out := p.Output()
			if !strings.Contains(out, "OK    postgres connection") {
				t.Errorf("--db-password-file did not win over the password in --db:\n%s", out)
			}
			noSecrets(t, "--check-config", out, "goodPW9", "badPW")
		})
	}
}

// TestSecrets_NATSTokenInURL connects with a token in the NATS URL: the
// --check-config report names the server without it (nats.go's redacted
// URL hides only a password).
func TestSecrets_NATSTokenInURL(t *testing.T) {
	t.Parallel()
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "token"})
	nats := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", Token: "tokQ7zz"})
	url := strings.Replace(nats.ClientURL(), "nats://", "nats://tokQ7zz@", 1)
	p := start(t, "check-config", bins.capture, "--db", pg.URL("postgres"), "--nats", url, "--name", "src", "--check-config")
	p.Wait(t, 60*time.Second)
	out := p.Output()
	if !strings.Contains(out, "OK    nats connection") {
		t.Errorf("the token in the URL did not connect:\n%s", out)
	}
	noSecrets(t, "--check-config", out, "tokQ7zz")
}

// encryptedKeyCluster is a cluster whose source asks for client
// certificates; c.src connects with a client key encrypted with phrase,
// given as sslpassword. dir holds the TLS files.
func encryptedKeyCluster(t *testing.T, phrase string) (c *cluster, dir string) {
	t.Helper()
	dir, files := postgresTLS(t)
	cert, key, err := files.EncryptedClient(dir, "postgres", phrase)
	if err != nil {
		t.Fatal(err)
	}
	// The source asks for client certificates signed by the CA, which
	// postgres, not root, must read.
	for path, mode := range map[string]os.FileMode{dir: 0o711, files.CA: 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	c = &cluster{
		primary: local.NewTestPostgres(t, local.PostgresOptions{Name: "primary", TLS: &files,
			Settings: map[string]string{"ssl_ca_file": files.CA}}),
		replica: local.NewTestPostgres(t, local.PostgresOptions{Name: "replica"}),
		nats:    local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"}),
	}
	c.src, c.dst = c.primary.URL("postgres"), c.replica.URL("postgres")
	c.src += "&sslcert=" + url.QueryEscape(cert) + "&sslkey=" + url.QueryEscape(key) + "&sslpassword=" + url.PathEscape(phrase)
	return c, dir
}

// TestSecrets_SSLPasswordNotOnCommandLine: capture's source connection
// uses a client key that needs a pass phrase (sslpassword in --db). The
// snapshot's pg_dump needs it too; it used to get it on its command line,
// which every local user can read (ps). It now reads it from a service
// file of its own, private, removed when pg_dump ends, and the region
// built from the snapshot equals the source.
func TestSecrets_SSLPasswordNotOnCommandLine(t *testing.T) {
	t.Parallel()
	const phrase = "client key pass phrase 7"
	c, dir := encryptedKeyCluster(t, phrase)
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g")

	// A wrong pass phrase, or none, stops capture with one line that says so.
	for bad, want := range map[string]string{"&sslpassword=wrong": "does not decrypt the client key", "": "is encrypted"} {
		p := start(t, "pgjet-capture", bins.capture, "--db", strings.Replace(c.src, "&sslpassword="+url.PathEscape(phrase), bad, 1),
			"--nats", c.nats.ClientURL(), "--name", "src")
		expectFatal(t, p, want, "sslpassword")
	}

	// pg_dump, as a wrapper that writes down what it was given.
	seen := filepath.Join(dir, "pg_dump.seen")
	wrapper := filepath.Join(dir, "pg_dump")
	script := fmt.Sprintf("#!/bin/sh\n{ echo \"args: $*\"; echo \"servicefile: $(stat -L -c %%F \"$PGSERVICEFILE\")\"; } >> %s\nexec pg_dump \"$@\"\n", seen)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	capt := c.capture(t, "--pg-dump", wrapper)
	capt.waitLog(t, "snapshot complete")
	c.apply(t)
	exec1(t, c.src, "INSERT INTO t VALUES (11, 'after the snapshot')")
	waitSame(t, 60*time.Second, c.src, c.dst)
	// Connections with the key: the slot's, and the snapshot's.
	if n := queryInt(t, c.src, `SELECT count(*) FROM pg_stat_ssl WHERE client_dn = '/CN=postgres'`); n == 0 {
		t.Error("no connection to the source used the client key")
	}

	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	if !strings.Contains(out, "args: ") || !strings.Contains(out, "sslkey=") {
		t.Fatalf("pg_dump was not run with the connection:\n%s", out)
	}
	noSecrets(t, "pg_dump's command line", out, phrase, url.PathEscape(phrase))
	for _, line := range strings.Split(out, "\n") {
		if f, ok := strings.CutPrefix(line, "servicefile: "); ok {
			if f != "fifo" {
				// A pipe is never on disk, whatever becomes of capture.
				t.Errorf("pg_dump's service file is a %q, want a pipe:\n%s", f, out)
			}
		}
	}
}
