package e2e

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// pgjetDrop runs `pgjet drop` with args and returns its output (stdout and
// stderr) and exit code.
func pgjetDrop(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return pgjetRun(t, "drop", args...)
}

// mustDrop runs `pgjet drop` and fails unless it exits 0 and its output
// holds every string of want.
func mustDrop(t *testing.T, want []string, args ...string) string {
	t.Helper()
	out, code := pgjetDrop(t, args...)
	if code != 0 {
		t.Fatalf("pgjet drop %s exited %d:\n%s", strings.Join(args[:1], " "), code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("pgjet drop %s output lacks %q:\n%s", args[0], w, out)
		}
	}
	return out
}

// mustRefuse runs `pgjet drop` and fails unless it exits non-zero with one
// line holding want.
func mustRefuse(t *testing.T, want string, args ...string) {
	t.Helper()
	out, code := pgjetDrop(t, args...)
	out = strings.TrimSpace(out)
	if code == 0 || strings.Contains(out, "\n") || !strings.Contains(out, want) {
		t.Errorf("pgjet drop %s exited %d, want non-zero and one line holding %q:\n%s", args[0], code, want, out)
	}
	t.Logf("pgjet drop %s refused (exit %d): %s", args[0], code, out)
}

// pgjetStreams lists the streams of the NATS server at url.
func pgjetStreams(t *testing.T, url string) []string {
	t.Helper()
	var names []string
	l := natsJS(t, url).ListStreams(context.Background())
	for info := range l.Info() {
		names = append(names, info.Config.Name)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestDrop_Pipeline: after a whole pipeline ran, `pgjet drop region` and
// `pgjet drop source` leave nothing of pgjet behind: no slot, publication,
// event trigger, function or schema on the source, no replication origin
// or schema pgjet on the target, no consumer and (with --streams) no
// stream, naming each thing they remove. While capture or the applier
// still runs each refuses in one line. A second run finds nothing left
// and exits 0. The replica's own tables stay as they are.
func TestDrop_Pipeline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	app := c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 50) g", "CREATE TABLE u (id int PRIMARY KEY)")
	waitSame(t, 60*time.Second, c.src, c.dst)
	nurl := c.nats.ClientURL()
	source := []string{"source", "--db", c.src, "--name", "src", "--nats", nurl, "--streams"}
	region := []string{"region", "--db", c.dst, "--name", "src", "--region", "r1", "--nats", nurl, "--streams"}

	t.Run("refused while running", func(t *testing.T) {
		mustRefuse(t, "pgjet_src", source...)
		mustRefuse(t, "r1", region...)
		if n := queryInt(t, c.src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgjet_src'"); n != 1 {
			t.Errorf("%d slots pgjet_src after a refused drop, want 1", n)
		}
		if n := queryInt(t, c.dst, "SELECT count(*) FROM pg_replication_origin WHERE roname = $1", perDatabaseOrigin(t, c.dst, "src")); n != 1 {
			t.Errorf("%d origins %s after a refused drop, want 1", n, perDatabaseOrigin(t, c.dst, "src"))
		}
	})
	capt.Stop(t)
	app.Stop(t)

	t.Run("region", func(t *testing.T) {
		out := mustDrop(t, []string{apply.ConsumerName("r1"), perDatabaseOrigin(t, c.dst, "src"), "schema pgjet", apply.DeadLetterStream("src", "r1")}, region...)
		t.Logf("drop region:\n%s", out)
		if n := queryInt(t, c.dst, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'pgjet%'"); n != 0 {
			t.Errorf("%d pgjet replication origins left on the target", n)
		}
		if n := queryInt(t, c.dst, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgjet'"); n != 0 {
			t.Errorf("schema pgjet left on the target")
		}
		st, err := natsJS(t, nurl).Stream(ctx, stream.StreamName("src"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Consumer(ctx, apply.ConsumerName("r1")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("consumer %s after drop region: %v, want not found", apply.ConsumerName("r1"), err)
		}
		if slices.Contains(pgjetStreams(t, nurl), apply.DeadLetterStream("src", "r1")) {
			t.Errorf("dead-letter stream %s left", apply.DeadLetterStream("src", "r1"))
		}
		if d := local.DiffDigests(mustDigest(t, c.src), mustDigest(t, c.dst)); len(d) > 0 {
			t.Errorf("drop region changed the replica's tables: %s", strings.Join(d, "; "))
		}
	})

	t.Run("source", func(t *testing.T) {
		out := mustDrop(t, []string{"slot pgjet_src", "publication pgjet_src", "event trigger pgjet_ddl_end", "function pgjet.ddl_capture()",
			"schema pgjet", "stream " + stream.StreamName("src"), "stream " + stream.SnapshotStreamName("src")}, source...)
		t.Logf("drop source:\n%s", out)
		noPgjetLeft(t, c.src, "after drop source")
		if left := pgjetStreams(t, nurl); len(left) > 0 {
			t.Errorf("streams left: %v", left)
		}
		// The application goes on without pgjet: DDL and writes work.
		exec1(t, c.src, "CREATE TABLE w (id int PRIMARY KEY)", "INSERT INTO t VALUES (1000, 'after')")
	})

	t.Run("twice", func(t *testing.T) {
		for _, args := range [][]string{region, source} {
			out := mustDrop(t, []string{"nothing left to remove"}, args...)
			t.Logf("drop %s again:\n%s", args[0], out)
		}
	})
}

// noPgjetLeft fails the test for each kind of pgjet object left on the
// source database at url.
func noPgjetLeft(t *testing.T, url, when string) {
	t.Helper()
	for what, sql := range map[string]string{
		"slots":          "SELECT count(*) FROM pg_replication_slots",
		"publications":   "SELECT count(*) FROM pg_publication",
		"event triggers": "SELECT count(*) FROM pg_event_trigger",
		"functions":      "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgjet'",
		"schemas pgjet":  "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgjet'",
		"origins":        "SELECT count(*) FROM pg_replication_origin",
	} {
		if n := queryInt(t, url, sql); n != 0 {
			t.Errorf("%d %s left on the source %s", n, what, when)
		}
	}
}

func mustDigest(t *testing.T, url string) []local.TableDigest {
	t.Helper()
	d, err := local.Digest(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDrop_ForceActiveSlot: `pgjet drop source` refuses a slot capture
// streams from, in one line naming it; with --force it ends capture's
// connection and drops the slot, and capture, finding its slot gone while
// the stream holds changes, stops instead of starting a new one.
func TestDrop_ForceActiveSlot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g")
	c.waitCaptured(t)
	args := []string{"source", "--db", c.src, "--name", "src"}
	mustRefuse(t, "slot pgjet_src", args...)
	out := mustDrop(t, []string{"slot pgjet_src", "publication pgjet_src"}, append(args, "--force")...)
	t.Logf("drop source --force:\n%s", out)
	expectFatal(t, capt, "slot \"pgjet_src\" is missing")
	// Reconnecting, capture made the publication and DDL capture again
	// before it found the slot gone, and removed them as it stopped.
	noPgjetLeft(t, c.src, "after drop --force and capture's end")
}

// TestCapture_FailedFirstStartCleansUp: a first start of capture that
// fails (here the source allows no replication slot, so the slot cannot
// be created) removes what it made before failing: the publication and
// the DDL capture event triggers, function and schema. A source it never
// ran on is left as it was.
func TestCapture_FailedFirstStartCleansUp(t *testing.T) {
	t.Parallel()
	primary := local.NewTestPostgres(t, local.PostgresOptions{Name: "primary", Settings: map[string]string{"max_replication_slots": "0"}})
	n := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})
	src := primary.URL("postgres")
	exec1(t, src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := start(t, "pgjet-capture", bins.capture, "--db", src, "--nats", n.ClientURL(), "--name", "src")
	expectFatal(t, capt, "max_replication_slots")
	noPgjetLeft(t, src, "after a failed first start")
	// Where the publication existed before, it stays.
	exec1(t, src, "CREATE PUBLICATION pgjet_src FOR ALL TABLES")
	capt = start(t, "pgjet-capture", bins.capture, "--db", src, "--nats", n.ClientURL(), "--name", "src")
	expectFatal(t, capt, "max_replication_slots")
	if got := queryInt(t, src, "SELECT count(*) FROM pg_publication WHERE pubname = 'pgjet_src'"); got != 1 {
		t.Errorf("the publication made before capture ran was removed by its failed start")
	}
}

// TestDrop_RegionMirror: in a region that applies from its own mirror of
// the hub's stream, `pgjet drop region --streams` removes the region's
// consumer and mirror and leaves the hub's stream, which `pgjet drop
// source --streams` then removes; pointed at the region's server instead
// of the hub's, drop source refuses before removing anything.
func TestDrop_RegionMirror(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newRegions(t, "r1")
	exec1(t, s.src, "INSERT INTO pgbench_branches VALUES (1, 0, 'before the drop')")
	waitSame(t, 60*time.Second, s.src, s.dst["r1"])
	s.capture.Stop(t)
	s.appliers["r1"].Stop(t)
	r1 := s.top.Regions["r1"].ClientURL()

	// Pointed at the region's server, drop source finds a mirror where the
	// source's stream should be, and removes nothing.
	mustRefuse(t, "is a mirror of domain hub", "source", "--db", s.src, "--name", "src", "--nats", r1, "--streams")
	if n := queryInt(t, s.src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgjet_src'"); n != 1 {
		t.Errorf("%d slots pgjet_src after a refused drop, want 1", n)
	}

	out := mustDrop(t, []string{apply.ConsumerName("r1"), "mirror " + stream.StreamName("src") + " (domain r1, of domain hub)"},
		"region", "--db", s.dst["r1"], "--name", "src", "--region", "r1", "--nats", r1, "--streams")
	t.Logf("drop region r1:\n%s", out)
	if left := pgjetStreams(t, r1); len(left) > 0 {
		t.Errorf("streams left in domain r1: %v", left)
	}
	if _, err := s.js["hub"].Stream(ctx, stream.StreamName("src")); err != nil {
		t.Errorf("the hub's stream after drop region: %v, want it kept", err)
	}

	out = mustDrop(t, []string{"stream " + stream.StreamName("src") + " (domain hub"},
		"source", "--db", s.src, "--name", "src", "--nats", s.top.Hub.ClientURL(), "--streams")
	t.Logf("drop source:\n%s", out)
	noPgjetLeft(t, s.src, "after drop source")
	if left := pgjetStreams(t, s.top.Hub.ClientURL()); len(left) > 0 {
		t.Errorf("streams left in the hub: %v", left)
	}
}
