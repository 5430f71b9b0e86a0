package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// expectFatal waits for p to exit 1 and checks its output names the cause
// (every want) in one line, without a panic or a stack trace.
func expectFatal(t *testing.T, p *proc, want ...string) {
	t.Helper()
	if code := p.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("%s exited %d, want 1:\n%s", p.name, code, p.Output())
	}
	out := p.Output()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s output lacks %q:\n%s", p.name, w, out)
		}
	}
	for _, bad := range []string{"panic", "goroutine "} {
		if strings.Contains(out, bad) {
			t.Errorf("%s output has %q:\n%s", p.name, bad, out)
		}
	}
	var line string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, p.name+": ") {
			line = l
		}
	}
	if line == "" {
		t.Errorf("%s printed no one-line cause to stderr:\n%s", p.name, out)
	}
	t.Logf("%s", line)
}

// expectRetrying checks that p stays up and says it is retrying.
func expectRetrying(t *testing.T, p *proc, want string) {
	t.Helper()
	waitFor(t, 30*time.Second, p.name+" to report retries", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("%s exited instead of retrying:\n%s", p.name, p.Output())
		}
		out := p.Output()
		return strings.Contains(out, "retrying") && strings.Contains(out, want), tail(out, 300)
	})
}

func TestCapture_Errors(t *testing.T) {
	t.Parallel()
	nats := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})

	t.Run("wal_level replica", func(t *testing.T) {
		pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "replicalevel", WALLevel: "replica"})
		p := start(t, "pgjet-capture", bins.capture, "--db", pg.URL("postgres"), "--nats", nats.ClientURL(), "--name", "src")
		expectFatal(t, p, "wal_level is replica", "set wal_level = logical")
	})

	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"})
	t.Run("no replication privilege", func(t *testing.T) {
		exec1(t, pg.URL("postgres"), "CREATE ROLE plain LOGIN")
		url := strings.Replace(pg.URL("postgres"), "postgres@", "plain@", 1)
		p := start(t, "pgjet-capture", bins.capture, "--db", url, "--nats", nats.ClientURL(), "--name", "src")
		expectFatal(t, p, `role \"plain\" lacks the REPLICATION attribute`, "run ALTER ROLE \\\"plain\\\" REPLICATION")
	})

	t.Run("pg_dump missing", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, "--db", pg.URL("postgres"), "--nats", nats.ClientURL(), "--name", "nodump",
			"--pg-dump", "/nonexistent/pg_dump")
		expectFatal(t, p, "/nonexistent/pg_dump not found", "--no-snapshot")
	})

	t.Run("nats without jetstream", func(t *testing.T) {
		nojs := local.NewTestNATS(t, local.NATSOptions{Name: "nojs", NoJetStream: true})
		p := start(t, "pgjet-capture", bins.capture, "--db", pg.URL("postgres"), "--nats", nojs.ClientURL(), "--name", "nojs")
		expectFatal(t, p, "without JetStream", "-js")
		a := start(t, "pgjet-apply", bins.apply, "--db", pg.URL("postgres"), "--nats", nojs.ClientURL(), "--name", "nojs", "--region", "r1")
		expectFatal(t, a, "without JetStream", "-js")
	})

	t.Run("database missing", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, "--db", pg.URL("nosuchdb"), "--nats", nats.ClientURL(), "--name", "src")
		expectFatal(t, p, "does not exist")
	})

	t.Run("postgres unreachable", func(t *testing.T) {
		port, _ := local.FreePort()
		p := start(t, "pgjet-capture", bins.capture, "--db", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", port), "--nats", nats.ClientURL(), "--name", "src")
		expectRetrying(t, p, "connect to postgres")
	})

	t.Run("nats unreachable", func(t *testing.T) {
		port, _ := local.FreePort()
		p := start(t, "pgjet-capture", bins.capture, "--db", pg.URL("postgres"), "--nats", fmt.Sprintf("nats://127.0.0.1:%d", port), "--name", "src")
		expectRetrying(t, p, "connect to nats")
	})

	t.Run("bad flags", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, "--name", "bad name!")
		if code := p.Wait(t, 10*time.Second); code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
		if out := p.Output(); !strings.Contains(out, "--db is required") || !strings.Contains(out, "source name") {
			t.Errorf("output does not explain the flags:\n%s", out)
		}
	})
}

func TestApply_Errors(t *testing.T) {
	t.Parallel()
	t.Run("table missing on target", func(t *testing.T) {
		c := newCluster(t, "CREATE TABLE present (id int PRIMARY KEY)")
		exec1(t, c.src, "CREATE TABLE absent (id int PRIMARY KEY, v text)")
		c.capture(t)
		app := c.apply(t)
		exec1(t, c.src, "INSERT INTO present VALUES (1)", "INSERT INTO absent VALUES (1, 'x')")
		expectFatal(t, app, `table \"public\".\"absent\" is missing on the target`, "restart pgjet-apply")
		// Once the table exists, a restart applies what was held back:
		// nothing is lost around the failure.
		exec1(t, c.dst, "CREATE TABLE absent (id int PRIMARY KEY, v text)")
		c.apply(t)
		waitSame(t, 60*time.Second, c.src, c.dst)
	})

	t.Run("column missing on target", func(t *testing.T) {
		c := newCluster(t, "CREATE TABLE wide (id int PRIMARY KEY)")
		exec1(t, c.src, "ALTER TABLE wide ADD COLUMN extra text")
		c.capture(t)
		app := c.apply(t)
		exec1(t, c.src, "INSERT INTO wide VALUES (1, 'x')")
		expectFatal(t, app, `column \"extra\" of table public.wide is missing on the target`)
	})

	t.Run("undecodable message", func(t *testing.T) {
		c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY)")
		c.capture(t)
		app := c.apply(t)
		exec1(t, c.src, "INSERT INTO t VALUES (1)")
		waitSame(t, 60*time.Second, c.src, c.dst)
		nc, err := nats.Connect(c.nats.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ack, err := js.Publish(context.Background(), stream.TxnSubject("src"), []byte("PJ\x01\x01garbage"))
		if err != nil {
			t.Fatal(err)
		}
		expectFatal(t, app, fmt.Sprintf("sequence %d", ack.Sequence), "cannot be decoded")
	})
}
