package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// TestReplay_ForceForeignKeys: replay --force into a database that holds
// the snapshot's tables, joined by a foreign key, with rows of their own,
// and a table the snapshot does not hold. The snapshot's tables are
// emptied together (one by one, the referenced table cannot be), the
// other table is left as it is, and the replay says so.
func TestReplay_ForceForeignKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE parent (id int PRIMARY KEY, v text)`,
		`CREATE TABLE child (id int PRIMARY KEY, p int NOT NULL REFERENCES parent)`,
		`INSERT INTO parent SELECT i, 'p' FROM generate_series(1, 100) i`,
		`INSERT INTO child SELECT i, i FROM generate_series(1, 100) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	ctx := context.Background()

	exec1(t, c.dst, "CREATE DATABASE forced")
	forced := c.replica.URL("forced")
	if err := local.CopySchema(ctx, c.src, forced); err != nil {
		t.Fatal(err)
	}
	exec1(t, forced, `INSERT INTO parent VALUES (-1, 'stale')`, `INSERT INTO child VALUES (-1, -1)`,
		`CREATE TABLE mine (id int)`, `INSERT INTO mine VALUES (7)`)
	code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", forced, "--force")
	if code != 0 {
		t.Fatalf("replay --force exited %d:\n%s", code, tail(out, 3000))
	}
	a, err := local.Digest(ctx, c.src, "public.parent", "public.child")
	if err != nil {
		t.Fatal(err)
	}
	b, err := local.Digest(ctx, forced, "public.parent", "public.child")
	if err != nil {
		t.Fatal(err)
	}
	if d := local.DiffDigests(a, b); len(d) > 0 {
		t.Errorf("replay --force differs from the primary: %v", d)
	}
	if n := queryInt(t, forced, "SELECT count(*) FROM mine WHERE id = 7"); n != 1 {
		t.Errorf("the table the snapshot does not hold lost its row")
	}
	if !strings.Contains(out, "left as they were") || !strings.Contains(out, "public.mine") {
		t.Errorf("replay --force does not say it left public.mine as it was:\n%s", tail(out, 3000))
	}
	capt.Stop(t)
}

// TestReplay_ForceNeedsReplicaRole: loading rows into tables whose foreign
// keys and triggers are in place needs session_replication_role =
// replica; a role that may not set it is told so, in one line, instead of
// failing on a foreign key half-way through.
func TestReplay_ForceNeedsReplicaRole(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE parent (id int PRIMARY KEY)`, `CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent)`,
		`INSERT INTO parent SELECT generate_series(1, 10)`, `INSERT INTO child SELECT i, i FROM generate_series(1, 10) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.dst, "CREATE ROLE app LOGIN", "CREATE DATABASE forced OWNER app")
	u := asUser(t, c.replica.URL("forced"), "app")
	exec1(t, u, `CREATE TABLE parent (id int PRIMARY KEY)`, `CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent)`)
	p := start(t, "pgjet replay", bins.pgjet, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", u, "--force")
	expectFatal(t, p, "session_replication_role", "GRANT SET ON PARAMETER session_replication_role")
	capt.Stop(t)
}

// TestReplay_ResumeAfterInterruption: a replay killed after it restored
// the snapshot's table definitions, before its rows, keys and indexes, is
// run again with --force, as the refusal of a database with tables
// suggests. It must resume the restore and create the keys and indexes,
// not load rows into tables that never get them.
func TestReplay_ResumeAfterInterruption(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE big (id int PRIMARY KEY, pad text)`, `CREATE INDEX big_pad ON big (pad)`,
		`INSERT INTO big SELECT i, repeat('x', 100) || i FROM generate_series(1, 300000) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")

	exec1(t, c.dst, "CREATE DATABASE replayed")
	replayed := c.replica.URL("replayed")
	args := []string{"replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", replayed}
	p := start(t, "pgjet replay", bins.pgjet, args...)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.Output(), `"section":"pre-data"`) {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("replay did not restore the pre-data schema:\n%s", tail(p.Output(), 3000))
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Kill()
	if n := queryInt(t, replayed, "SELECT count(*) FROM pgjet.restore WHERE NOT done"); n != 1 {
		t.Fatalf("the replay was not interrupted in its restore (killed too late?):\n%s", tail(p.Output(), 3000))
	}

	code, out := runPgjet(t, append(args, "--force")...)
	if code != 0 {
		t.Fatalf("replay after the interruption exited %d:\n%s", code, tail(out, 3000))
	}
	waitSame(t, 5*time.Second, c.src, replayed)
	if n := queryInt(t, replayed, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'big'::regclass AND contype = 'p'"); n != 1 {
		t.Errorf("big has no primary key after the resumed replay")
	}
	if n := queryInt(t, replayed, "SELECT count(*) FROM pg_indexes WHERE indexname = 'big_pad'"); n != 1 {
		t.Errorf("big has no index big_pad after the resumed replay")
	}
	capt.Stop(t)
}
