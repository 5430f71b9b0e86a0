package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// bins holds the binaries built once for all tests.
var bins struct{ capture, apply, pgjet string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgjet-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.capture = filepath.Join(dir, "pgjet-capture")
	bins.apply = filepath.Join(dir, "pgjet-apply")
	bins.pgjet = filepath.Join(dir, "pgjet")
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/pgjet/pgjet/cmd/pgjet-capture", "github.com/pgjet/pgjet/cmd/pgjet-apply", "github.com/pgjet/pgjet/cmd/pgjet")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	// Tests that kill -9 a nats-server run the standalone binary: the one
	// of the version go.mod pins, built here, so a fresh machine needs no
	// install step and no other version can slip in from $PATH.
	build = exec.Command("go", "build", "-o", filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build nats-server:", err)
		os.Exit(1)
	}
	os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a pgjet binary running as a child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
	// expectExit is set once the test stops or kills the process itself.
	expectExit bool
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output is everything the process wrote so far.
func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	level := os.Getenv("PGJET_TEST_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	p.cmd.Env = append(os.Environ(), "PGJET_LOG_LEVEL="+level)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	daemons.Store(p, t.Name())
	t.Cleanup(func() {
		daemons.Delete(p)
		p.Kill()
		if t.Failed() {
			t.Logf("--- %s output (last 4KB) ---\n%s", name, tail(p.Output(), 4096))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Kill sends SIGKILL and waits for the process to end.
func (p *proc) Kill() {
	p.expectExit = true
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits for a clean exit.
func (p *proc) Stop(t *testing.T) {
	t.Helper()
	p.expectExit = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM, want 0:\n%s", p.name, code, tail(p.Output(), 4096))
	}
}

// Wait waits for the process to exit and returns its exit code.
func (p *proc) Wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	p.expectExit = true
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s:\n%s", p.name, timeout, tail(p.Output(), 4096))
	}
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond until it holds or timeout passes; cond describes the
// state it saw, for the failure message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// daemons are the running pgjet processes, by test name: waiting for a
// replica fails at once when one of them died instead of timing out.
var daemons sync.Map

func checkDaemons(t *testing.T) {
	t.Helper()
	daemons.Range(func(k, v any) bool {
		p := k.(*proc)
		if v.(string) == t.Name() && p.Exited() && !p.expectExit {
			t.Fatalf("%s exited unexpectedly:\n%s", p.name, tail(p.Output(), 4096))
		}
		return true
	})
}

// waitSame waits until every table of the primary has the same digest on
// the replica.
func waitSame(t *testing.T, timeout time.Duration, primary, replica string, tables ...string) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, timeout, "replica to match primary", func() (bool, string) {
		checkDaemons(t)
		a, err := local.Digest(ctx, primary, tables...)
		if err != nil {
			return false, err.Error()
		}
		b, err := local.Digest(ctx, replica, tables...)
		if err != nil {
			return false, err.Error()
		}
		if len(a) == 0 {
			return false, "primary has no tables"
		}
		d := local.DiffDigests(a, b)
		return len(d) == 0, strings.Join(d, "; ")
	})
}

func exec1(t *testing.T, url string, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	for _, s := range sqls {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("exec %q: %v", s, err)
		}
	}
}

func queryInt(t *testing.T, url, sql string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	return n
}

// cluster is one source, one replica and one NATS server.
type cluster struct {
	primary, replica *local.Postgres
	nats             *local.NATS
	src, dst         string // database URLs
}

func newCluster(t *testing.T, schemaSQL ...string) *cluster {
	t.Helper()
	return newClusterNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"}, schemaSQL...)
}

// newClusterNATS is newCluster with a NATS server of these options (TLS,
// authentication).
func newClusterNATS(t *testing.T, nopts local.NATSOptions, schemaSQL ...string) *cluster {
	t.Helper()
	c := &cluster{
		primary: local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}),
		replica: local.NewTestPostgres(t, local.PostgresOptions{Name: "replica"}),
		nats:    local.NewTestNATS(t, nopts),
	}
	c.src, c.dst = c.primary.URL("postgres"), c.replica.URL("postgres")
	if len(schemaSQL) > 0 {
		exec1(t, c.src, schemaSQL...)
		if err := local.CopySchema(context.Background(), c.src, c.dst); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// capture starts pgjet-capture and waits until it streams from its slot,
// so that every write made after it returns is captured.
func (c *cluster) capture(t *testing.T, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s"}, extra...)
	p := start(t, "pgjet-capture", bins.capture, args...)
	p.waitLog(t, "capture started")
	return p
}

// apply starts pgjet-apply and waits until it consumes.
func (c *cluster) apply(t *testing.T, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1"}, extra...)
	p := start(t, "pgjet-apply", bins.apply, args...)
	p.waitLog(t, "apply started")
	return p
}

// waitLog waits until the process has logged msg.
func (p *proc) waitLog(t *testing.T, msg string) {
	t.Helper()
	waitFor(t, 60*time.Second, p.name+" to log "+msg, func() (bool, string) {
		// Exited is read before Output: a process that logged msg and
		// then exited has done what is waited for.
		exited := p.Exited()
		if strings.Contains(p.Output(), `"message":"`+msg+`"`) {
			return true, ""
		}
		if exited {
			t.Fatalf("%s exited before logging %q:\n%s", p.name, msg, tail(p.Output(), 4096))
		}
		return false, "not yet"
	})
}

// waitSlotPast waits until source's slot on the database at url has
// confirmed lsn: capture confirms only what the stream acknowledged, so
// everything it publishes of the WAL before lsn is then in the stream.
func waitSlotPast(t *testing.T, timeout time.Duration, url, source, lsn string) {
	t.Helper()
	slot := "pgjet_" + source
	waitFor(t, timeout, "slot "+slot+" to confirm "+lsn, func() (bool, string) {
		checkDaemons(t)
		got := queryString(t, url, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot)
		past := queryInt(t, url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn", slot, lsn)
		return past == 1, "confirmed " + got
	})
}

// waitCaptured waits until capture has published everything written to
// the source so far: its slot confirms the source's current WAL position,
// which takes a heartbeat after the last write.
func (c *cluster) waitCaptured(t *testing.T) {
	t.Helper()
	waitSlotPast(t, 60*time.Second, c.src, "src", queryString(t, c.src, "SELECT pg_current_wal_lsn()::text"))
}

// waitRows waits until table on the database at url holds at least n rows:
// a load has got that far, or that much of it has been applied.
func waitRows(t *testing.T, url, table string, n int64) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d rows in %s", n, table), func() (bool, string) {
		checkDaemons(t)
		got := queryInt(t, url, "SELECT count(*) FROM "+table)
		return got >= n, fmt.Sprintf("%d rows", got)
	})
}

var localCopySchema = local.CopySchema

// natsJS connects to a NATS server for the test's own JetStream calls.
func natsJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	return natsJSDomain(t, url, "")
}

// natsJSDomain is natsJS for JetStream domain ("" = the server's own).
func natsJSDomain(t *testing.T, url, domain string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := stream.NewJetStream(nc, domain)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
