package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// snapshotSchema is a primary with more than pgbench: a type of its own,
// a foreign key, a view, an index, a sequence in use and a keyless table.
const snapshotSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL, feel mood, tags text[], doc jsonb, born date);
CREATE TABLE pets (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner int NOT NULL REFERENCES people (id), name text, name_len int GENERATED ALWAYS AS (length(name)) STORED);
CREATE INDEX pets_owner ON pets (owner);
CREATE VIEW people_pets AS SELECT p.name AS person, x.name AS pet FROM people p JOIN pets x ON x.owner = p.id;
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
INSERT INTO people (name, feel, tags, doc, born)
	SELECT 'p' || i, (ARRAY['sad','ok','happy'])[1 + i % 3]::mood, ARRAY['a', NULL, 'line' || chr(10) || 'tab' || chr(9) || '\x'],
		jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'x')), date '2000-01-01' + i
	FROM generate_series(1, 5000) i;
INSERT INTO pets (owner, name) SELECT 1 + i % 5000, 'pet' || i FROM generate_series(1, 8000) i;
INSERT INTO nokey SELECT i % 100, 'v' FROM generate_series(1, 3000) i;
`

// snapshotPrimary is a cluster whose primary holds pgbench's tables with
// data and snapshotSchema, and whose replica is an empty database.
func snapshotPrimary(t *testing.T, scale string) *cluster {
	t.Helper()
	c := newCluster(t)
	pgbench(t, c.src, "-i", "-s", scale, "-q")
	exec1(t, c.src, historyIdentity, snapshotSchema)
	return c
}

// snapshotLoad is pgbench's own load plus writes to the other tables.
const snapshotLoad = `\set a random(1, 5000)
INSERT INTO nokey VALUES (:a % 100, 'w');
UPDATE people SET doc = doc || jsonb_build_object('n', :a) WHERE id = :a;
INSERT INTO pets (owner, name) VALUES (:a, 'new');
`

// TestSnapshot_EmptyRegions: capture starts fresh on a primary with data
// under load; an applier on an empty database builds schema and rows from
// the snapshot and then follows the changes; a second region started
// later, through its own NATS domain and with no route to the primary,
// builds itself from the mirrored streams alone. Both end identical.
func TestSnapshot_EmptyRegions(t *testing.T) {
	t.Parallel()
	top := local.NewTestTopology(t, local.TopologyOptions{Hub: "hub", Regions: []string{"r2"}})
	c := snapshotPrimary(t, "2")
	load := pgbenchAsync(t, c.src, "-n", "-c", "3", "-T", "25", "-b", "tpcb-like@4", "-f", writeScript(t, snapshotLoad)+"@1")
	waitRows(t, c.src, "pgbench_history", 50) // the snapshot starts under load

	capt := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", top.Hub.ClientURL(), "--name", "src",
		"--heartbeat", "1s", "--snapshot-workers", "3", "--snapshot-range-bytes", "4000000")
	capt.waitLog(t, "capture started")
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", top.Hub.ClientURL(), "--name", "src", "--region", "r1")
	app.waitLog(t, "snapshot restored; following changes")

	// The second region: its database and its applier know only their own
	// NATS server, a leafnode of the hub.
	r2 := local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-r2"}).URL("postgres")
	app2 := start(t, "pgjet-apply r2", bins.apply, "--db", r2, "--nats", top.Regions["r2"].ClientURL(), "--name", "src",
		"--region", "r2", "--upstream-domain", "hub")

	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	waitSame(t, 120*time.Second, c.src, c.dst)
	waitSame(t, 120*time.Second, c.src, r2)
	waitSameSchemaOf(t, 30*time.Second, c.src, c.dst)
	waitSameSchemaOf(t, 30*time.Second, c.src, r2)

	out := capt.Output()
	for _, want := range []string{`"message":"snapshot started"`, `"message":"snapshot complete"`} {
		if !strings.Contains(out, want) {
			t.Errorf("capture did not log %s", want)
		}
	}
	if !strings.Contains(app2.Output(), "snapshot restored; following changes") {
		t.Errorf("region r2 did not restore the snapshot:\n%s", tail(app2.Output(), 2048))
	}
	// Foreign keys, indexes and the view came with the schema, and
	// sequences keep handing out new ids on the replica.
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'pets'::regclass"); n != 1 {
		t.Errorf("replica: %d foreign keys on pets, want 1", n)
	}
	if n := queryInt(t, r2, "SELECT count(*) FROM people_pets"); n == 0 {
		t.Errorf("replica r2: view people_pets is empty")
	}
	capt.Stop(t)
	app.Stop(t)
	app2.Stop(t)
}

// TestSnapshot_ResumeAfterKill: capture is killed with SIGKILL in the
// middle of its snapshot under load; restarted, it keeps the tables it
// finished and copies the others again at a new point, and an applier on
// an empty database still ends identical (the keyless pgbench_history
// would show a change applied twice).
func TestSnapshot_ResumeAfterKill(t *testing.T) {
	t.Parallel()
	c := snapshotPrimary(t, "8")
	load := pgbenchAsync(t, c.src, "-n", "-c", "2", "-T", "30", "-b", "tpcb-like")
	waitRows(t, c.src, "pgbench_history", 50) // the snapshot starts under load
	args := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s",
		"--snapshot-workers", "2", "--snapshot-range-bytes", "8000000", "--chunk-bytes", "65536"}
	capt := start(t, "pgjet-capture", bins.capture, args...)

	js := natsJS(t, c.nats.ClientURL())
	ctx := context.Background()
	// Kill it once some rows are in the snapshot stream, before the end.
	waitFor(t, 60*time.Second, "snapshot rows in the stream", func() (bool, string) {
		st, err := js.Stream(ctx, stream.SnapshotStreamName("src"))
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= 40, "messages: " + strconv.FormatUint(info.State.Msgs, 10)
	})
	capt.Kill()
	if strings.Contains(capt.Output(), `"message":"snapshot complete"`) {
		t.Fatalf("the snapshot completed before the kill; make the primary larger")
	}
	capt = start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "resuming interrupted snapshot: whole tables kept, the others copied again at a new point")

	// The applier is killed in the middle of its restore too, and resumes
	// it: the rows it committed stay, the rest follow.
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	waitFor(t, 120*time.Second, "the restore to be under way", func() (bool, string) {
		checkDaemons(t)
		conn, err := pgx.Connect(ctx, c.dst)
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close(ctx)
		var seq int64
		var done bool
		if err := conn.QueryRow(ctx, "SELECT stream_seq, done FROM pgjet.restore").Scan(&seq, &done); err != nil {
			return false, err.Error()
		}
		if done {
			t.Fatalf("the restore finished before the kill; make the primary larger")
		}
		return seq > 200, fmt.Sprintf("restore at snapshot seq %d", seq)
	})
	app.Kill()
	app = c.apply(t)
	if !strings.Contains(app.Output(), `"message":"resuming interrupted restore"`) {
		t.Errorf("the applier did not resume its restore:\n%s", tail(app.Output(), 2000))
	}
	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	waitSame(t, 180*time.Second, c.src, c.dst)
	// Some tables were copied again, later than the snapshot's point, and
	// the applier skipped their changes up to their own point.
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.snapshot_tables"); n == 0 {
		t.Errorf("no table was copied again after the resume")
	}
	st, err := js.Stream(ctx, stream.SnapshotStreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := stream.ListSnapshots(ctx, st, "src")
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || !snaps[0].Complete {
		t.Errorf("snapshots after the resume: %+v, want one complete", snaps)
	}
	capt.Stop(t)
	app.Stop(t)
}

// runPgjet runs the pgjet tool and returns its exit status and output.
func runPgjet(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := start(t, "pgjet "+args[0], bins.pgjet, args...)
	p.expectExit = true
	code := p.Wait(t, 180*time.Second)
	return code, p.Output()
}

// TestReplay_ToAPoint: the stream rebuilds a database, with no connection
// to the primary, to the primary's state at an LSN in the middle of its
// history, at a time in the middle of it, and then, rolled forward, to the
// end. A database with tables of its own is refused.
func TestReplay_ToAPoint(t *testing.T) {
	t.Parallel()
	// The replica starts empty: it is built from the snapshot too.
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric(12,2), note text)`,
		`CREATE TABLE events (a int, b text)`, `ALTER TABLE events REPLICA IDENTITY FULL`,
		`INSERT INTO acct SELECT i, 'o' || i, i * 1.5, repeat('n', i % 50) FROM generate_series(1, 2000) i`,
		`INSERT INTO events SELECT i % 10, 'e' FROM generate_series(1, 500) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	ctx := context.Background()

	exec1(t, c.src, `UPDATE acct SET balance = balance + 1 WHERE id % 3 = 0`, `DELETE FROM acct WHERE id % 7 = 0`,
		`INSERT INTO acct SELECT i, 'new', 0, NULL FROM generate_series(3001, 3500) i`, `INSERT INTO events VALUES (1, 'one'), (1, 'one')`)
	midLSN := queryString(t, c.src, "SELECT pg_current_wal_lsn()::text")
	mid, err := local.Digest(ctx, c.src)
	if err != nil {
		t.Fatal(err)
	}
	// --until-time compares commit times: these pauses (not a guess at
	// any state) put a clear gap between midTime and the commits on either
	// side of it.
	time.Sleep(1100 * time.Millisecond)
	midTime := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(1100 * time.Millisecond)

	exec1(t, c.src, `UPDATE acct SET owner = 'later', note = 'x' WHERE id < 1000`, `DELETE FROM events WHERE a = 1`,
		`ALTER TABLE acct ADD COLUMN flag bool DEFAULT true`, `INSERT INTO acct VALUES (9999, 'last', 1, NULL, false)`, `TRUNCATE events`,
		`INSERT INTO events VALUES (5, 'after truncate')`)
	// The stream holds everything once a replica has it all.
	app := c.apply(t)
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)

	for _, until := range [][]string{{"--until-lsn", midLSN}, {"--until-time", midTime}} {
		url, out := c.replayInto(t, "replay"+strings.TrimPrefix(until[0], "--until-"), until...)
		for _, want := range []string{"replaying from snapshot", "restore", "replay reached its point", "replay complete"} {
			if !strings.Contains(out, want) {
				t.Errorf("replay %s did not log %q:\n%s", until[0], want, tail(out, 3000))
			}
		}
		got, err := local.Digest(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if d := local.DiffDigests(mid, got); len(d) > 0 {
			t.Errorf("replay %s differs from the primary at that point: %v", until[0], d)
		}
	}

	// --force: a database that holds the snapshot's tables (and rows of
	// its own) is emptied and loaded, then replayed to the point.
	exec1(t, c.dst, "CREATE DATABASE forced")
	forced := c.replica.URL("forced")
	exec1(t, forced, `CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric(12,2), note text)`,
		`CREATE TABLE events (a int, b text)`, `INSERT INTO acct VALUES (-1, 'stale', 0, NULL)`, `INSERT INTO events VALUES (-1, 'stale')`)
	if code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", forced, "--until-lsn", midLSN, "--force"); code != 0 {
		t.Fatalf("replay --force exited %d:\n%s", code, tail(out, 3000))
	}
	if got, err := local.Digest(ctx, forced); err != nil {
		t.Fatal(err)
	} else if d := local.DiffDigests(mid, got); len(d) > 0 {
		t.Errorf("replay --force differs from the primary at that point: %v", d)
	}

	// Rolled forward to the end, the first one matches the primary now.
	url := c.replica.URL("replaylsn")
	if code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", url); code != 0 {
		t.Fatalf("replay to the end exited %d:\n%s", code, tail(out, 3000))
	}
	waitSame(t, 5*time.Second, c.src, url)

	exec1(t, c.dst, "CREATE DATABASE busy")
	exec1(t, c.replica.URL("busy"), "CREATE TABLE mine (id int)")
	code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("busy"))
	if code != 1 || !strings.Contains(out, "holds 1 tables") || !strings.Contains(out, "--force") {
		t.Errorf("replay into a database with tables: exit %d, want 1 and a line naming --force:\n%s", code, tail(out, 2000))
	}
	capt.Stop(t)
}

// snapshotList lists the source's snapshots in the hub's stream.
func snapshotList(t *testing.T, natsURL string) ([]stream.SnapshotInfo, bool) {
	t.Helper()
	js := natsJS(t, natsURL)
	ctx := context.Background()
	st, err := js.Stream(ctx, stream.SnapshotStreamName("src"))
	if err != nil {
		return nil, false
	}
	snaps, err := stream.ListSnapshots(ctx, st, "src")
	if err != nil {
		t.Fatal(err)
	}
	return snaps, true
}

// TestSnapshot_ScheduleAndOptOut: --snapshot-every takes snapshots on a
// schedule and --snapshot-keep removes the oldest; pgjet snapshot takes
// one on demand; --no-snapshot takes none, and an empty target with
// --skip-snapshot follows the changes only.
func TestSnapshot_ScheduleAndOptOut(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	exec1(t, c.src, `INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i`)
	capt := c.capture(t, "--snapshot-every", "2s", "--snapshot-keep", "2", "--stream-retention", "snapshots")
	i := 100
	waitFor(t, 60*time.Second, "three snapshots (the initial one and two scheduled)", func() (bool, string) {
		checkDaemons(t)
		i++
		exec1(t, c.src, fmt.Sprintf("INSERT INTO t VALUES (%d, 'w')", i), fmt.Sprintf("UPDATE t SET v = 'u%d' WHERE id = %d", i, i-50))
		return strings.Count(capt.Output(), `"message":"snapshot complete"`) >= 3, tail(capt.Output(), 1000)
	})
	exec1(t, c.src, "DELETE FROM t WHERE id % 7 = 0")
	// The replay below must find the delete in the stream before capture
	// stops.
	c.waitCaptured(t)
	// A stop in the middle of a scheduled snapshot would leave it
	// interrupted beside the two kept: capture stops right after a
	// snapshot completed and pruned the oldest, the longest way from the
	// next one.
	const completed, removed = `"message":"snapshot complete"`, `"message":"old snapshot removed"`
	seen := strings.Count(capt.Output(), completed)
	waitFor(t, 60*time.Second, "a snapshot to complete and prune the oldest", func() (bool, string) {
		checkDaemons(t)
		out := capt.Output()
		n := strings.Count(out, completed)
		return n > seen && strings.Count(out, removed) == n-2, tail(out, 1000)
	})
	capt.Stop(t)
	// --stream-retention snapshots: the changes before the oldest kept
	// snapshot are gone, and a replay from the snapshots kept still
	// rebuilds the primary exactly.
	if !strings.Contains(capt.Output(), `"message":"change stream trimmed to the oldest snapshot kept"`) {
		t.Errorf("capture did not trim the change stream")
	}
	st, err := natsJS(t, c.nats.ClientURL()).Stream(context.Background(), stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	if first := st.CachedInfo().State.FirstSeq; first <= 1 {
		t.Errorf("change stream starts at sequence %d after trimming, want > 1", first)
	}
	exec1(t, c.dst, "CREATE DATABASE replayed")
	if code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("replayed")); code != 0 {
		t.Fatalf("replay after trimming exited %d:\n%s", code, tail(out, 3000))
	}
	waitSame(t, 5*time.Second, c.src, c.replica.URL("replayed"))
	snaps, _ := snapshotList(t, c.nats.ClientURL())
	// The stop may still land in a scheduled snapshot (one that takes
	// longer than the gap to the next): that one is left interrupted,
	// newest, beside the two complete ones kept.
	complete := 0
	for i, sn := range snaps {
		if sn.Complete {
			complete++
		} else if i != len(snaps)-1 {
			t.Errorf("snapshot %d of %d is incomplete and not the newest: %+v", i+1, len(snaps), snaps)
		}
	}
	if complete != 2 {
		t.Errorf("snapshots kept: %+v, want the 2 newest complete (and at most one interrupted by the stop)", snaps)
	}
	if !strings.Contains(capt.Output(), `"message":"old snapshot removed"`) {
		t.Errorf("capture did not log the removal of an old snapshot")
	}

	code, out := runPgjet(t, "snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src")
	rows := queryInt(t, c.src, "SELECT count(*) FROM t")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("1 tables, %d rows", rows)) {
		t.Fatalf("pgjet snapshot: exit %d:\n%s", code, tail(out, 2000))
	}
	if snaps, _ := snapshotList(t, c.nats.ClientURL()); len(snaps) != 2 {
		t.Errorf("after pgjet snapshot: %d snapshots, want 2 (--snapshot-keep's default)", len(snaps))
	}

	// A second source with --no-snapshot: no snapshot stream at all, and
	// an applier on an empty database with --skip-snapshot gets the
	// tables from replicated DDL and the rows from the changes.
	c2 := newCluster(t)
	capt2 := c2.capture(t, "--no-snapshot")
	if _, ok := snapshotList(t, c2.nats.ClientURL()); ok {
		t.Errorf("--no-snapshot created the snapshot stream")
	}
	app2 := c2.apply(t, "--skip-snapshot")
	exec1(t, c2.src, `CREATE TABLE later (id int PRIMARY KEY, v text)`, `INSERT INTO later VALUES (1, 'a'), (2, 'b')`)
	waitSame(t, 60*time.Second, c2.src, c2.dst)
	capt2.Stop(t)
	app2.Stop(t)
}

// rewriteSchema has two tables of rows rows, copied by two workers
// before the table the test rewrites. At 150000 rows (16 MB) each is too
// large for a socket's buffers: its COPY waits while capture is stopped.
func rewriteSchema(rows int) string {
	return fmt.Sprintf(`
CREATE TABLE a_big (id int PRIMARY KEY, pad text);
INSERT INTO a_big SELECT i, repeat('a', 100) FROM generate_series(1, %d) i;
CREATE TABLE a_big2 (LIKE a_big INCLUDING ALL);
INSERT INTO a_big2 SELECT * FROM a_big;
CREATE TABLE b_mid (id int PRIMARY KEY, v text);
INSERT INTO b_mid SELECT i, 'b' || i FROM generate_series(1, 2000) i;
CREATE TABLE z_last (id int PRIMARY KEY, v int);
INSERT INTO z_last SELECT i, i FROM generate_series(1, 2000) i;
ANALYZE;
`, rows)
}

// activity counts the source's backends that match cond (SQL over
// pg_stat_activity).
func activity(t *testing.T, url, cond string) int64 {
	t.Helper()
	return queryInt(t, url, "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "+cond)
}

// activityList describes the source's other backends, for failure messages.
func activityList(t *testing.T, url string) string {
	t.Helper()
	return queryString(t, url, `SELECT string_agg(format('%s [%s %s/%s] %s', application_name, state, wait_event_type, wait_event, left(query, 80)), E'\n')
		FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' OR backend_type = 'walsender'`)
}

// TestSnapshot_TableRewritten: ALTER TABLE ... TYPE rewrites a table, and
// an older snapshot then sees it empty. Committed after the snapshot's
// point, such a change must not leave the table's rows out of the
// snapshot: issued while the copy runs it waits for the snapshot's locks,
// and committed before the locks are taken it makes the snapshot start
// again at a new point. The replica ends equal to the source either way.
func TestSnapshot_TableRewritten(t *testing.T) {
	t.Parallel()
	args := func(c *cluster) []string {
		return []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s",
			"--snapshot-workers", "2"}
	}
	finish := func(t *testing.T, c *cluster, capt *proc) {
		t.Helper()
		capt.waitLog(t, "snapshot complete")
		exec1(t, c.src, "UPDATE z_last SET v = v * 10000000000 WHERE id <= 5", "INSERT INTO z_last VALUES (5000, 5000000000)")
		app := c.apply(t)
		waitSame(t, 120*time.Second, c.src, c.dst)
		waitSameSchemaOf(t, 30*time.Second, c.src, c.dst)
		if got, want := queryInt(t, c.dst, "SELECT count(*) FROM z_last"), int64(2001); got != want {
			t.Errorf("replica z_last has %d rows, want %d", got, want)
		}
		capt.Stop(t)
		app.Stop(t)
	}

	t.Run("during the copy", func(t *testing.T) {
		c := newCluster(t)
		exec1(t, c.src, rewriteSchema(150000))
		capt := start(t, "pgjet-capture", bins.capture, args(c)...)
		// Capture is stopped (SIGSTOP) in the middle of the copy of a_big:
		// the COPY then waits on its client, and stays in progress while
		// the test alters z_last.
		copying := `state = 'active' AND query LIKE 'COPY (SELECT % FROM "public"."a_big%'`
		deadline := time.Now().Add(60 * time.Second)
		for activity(t, c.src, copying) == 0 {
			checkDaemons(t)
			if time.Now().After(deadline) {
				t.Fatalf("no copy of a_big in 60s:\n%s", activityList(t, c.src))
			}
		}
		if err := capt.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if activity(t, c.src, copying) == 0 {
			t.Fatalf("the copy of a_big ended before capture was stopped: make a_big larger")
		}
		altered := make(chan error, 1)
		go func() { altered <- execErr(c.src, "ALTER TABLE z_last ALTER COLUMN v TYPE bigint") }()
		// The change must wait for the snapshot's lock on z_last, taken
		// before the copy began; without it, it commits at once and the
		// snapshot later copies z_last empty.
		waited := false
		waitFor(t, 30*time.Second, "ALTER TABLE to wait for the snapshot's lock or commit", func() (bool, string) {
			select {
			case err := <-altered:
				altered <- err
				return true, ""
			default:
			}
			waited = activity(t, c.src, `query LIKE 'ALTER TABLE z_last%' AND wait_event_type = 'Lock'`) > 0
			return waited, activityList(t, c.src)
		})
		if activity(t, c.src, copying) == 0 {
			t.Fatalf("the copy of a_big ended while capture was stopped: make a_big larger")
		}
		if err := capt.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err := <-altered; err != nil {
			t.Fatalf("ALTER TABLE: %v", err)
		}
		if !waited {
			t.Errorf("ALTER TABLE z_last committed while the snapshot was copying a_big: the snapshot does not lock z_last")
		}
		finish(t, c, capt)
	})

	// A rewrite changes the table's file; a renamed column does not, but
	// the copy, planned by the current catalog, would fail on it.
	// finish writes bigints into z_last: the rename case widens it first.
	for _, tc := range []struct{ before, ddl string }{
		{"SELECT 1", "ALTER TABLE z_last ALTER COLUMN v TYPE bigint"},
		{"ALTER TABLE z_last ALTER COLUMN v TYPE bigint", "ALTER TABLE b_mid RENAME COLUMN v TO w"},
	} {
		ddl := tc.ddl
		t.Run("before the locks: "+ddl, func(t *testing.T) {
			c := newCluster(t)
			exec1(t, c.src, rewriteSchema(1000), tc.before)
			// Capture is stopped (SIGSTOP) as soon as the snapshot's slot
			// exists, before it copies anything: z_last is rewritten then, after
			// the snapshot's point, and capture continues.
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, c.src)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			capt := start(t, "pgjet-capture", bins.capture, args(c)...)
			deadline := time.Now().Add(60 * time.Second)
			for {
				var n int
				if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgjet\_src\_snap\_%'`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n > 0 {
					break
				}
				checkDaemons(t)
				if time.Now().After(deadline) {
					t.Fatalf("no snapshot slot in 60s:\n%s", activityList(t, c.src))
				}
			}
			if err := capt.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			if n := activity(t, c.src, `application_name = 'pgjet-capture snapshot' AND query LIKE 'COPY%'`); n > 0 {
				t.Fatalf("the snapshot was copying before capture was stopped")
			}
			if err := execErr(c.src, ddl); err != nil {
				t.Fatalf("%s: %v", ddl, err)
			}
			if err := capt.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			finish(t, c, capt)
			if !strings.Contains(capt.Output(), `"message":"taking the snapshot again at a new point"`) {
				t.Errorf("capture did not say it took the snapshot again after the rewrite:\n%s", tail(capt.Output(), 4096))
			}
		})
	}
}

// execErr runs sql on url and returns its error.
func execErr(url, sql string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// TestSnapshot_NewRegionRestoresNewest: a region whose applier starts
// right after an on-demand snapshot, with a mirror that must first copy an
// older, larger snapshot, restores the newest one (waiting for its mirror
// to receive it), not the older one it sees first: that one is correct too
// but leaves every change since to replay, hours on a busy source.
func TestSnapshot_NewRegionRestoresNewest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	top := local.NewTestTopology(t, local.TopologyOptions{Hub: "hub", Regions: []string{"r2"}, Proxied: true})
	c := newCluster(t)
	// About 10 MB, which r2's link, throttled below, takes seconds to carry.
	exec1(t, c.src, `CREATE TABLE wide (id int PRIMARY KEY, pad text);
		INSERT INTO wide SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 40000) i`)
	capt := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s")
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.src, `INSERT INTO wide SELECT i, 'after the first snapshot' FROM generate_series(150001, 150100) i`)
	snap := start(t, "pgjet snapshot", bins.pgjet, "snapshot", "--db", c.src, "--nats", top.Hub.ClientURL(), "--name", "src")
	if code := snap.Wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(snap.Output(), 4096))
	}
	hub := natsJS(t, top.Hub.ClientURL())
	st, err := hub.Stream(ctx, stream.SnapshotStreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := stream.ListSnapshots(ctx, st, "src")
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 || !snaps[1].Complete {
		t.Fatalf("snapshots in the hub: %+v, want two, the second complete", snaps)
	}
	newest := snaps[1].ID

	top.Proxies["r2"].Throttle(2 << 20)
	r2 := local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-r2"}).URL("postgres")
	app := start(t, "pgjet-apply r2", bins.apply, "--db", r2, "--nats", top.Regions["r2"].ClientURL(), "--name", "src",
		"--region", "r2", "--upstream-domain", "hub")
	app.waitLog(t, "snapshot restored; following changes")
	restored := ""
	for _, l := range strings.Split(app.Output(), "\n") {
		if strings.Contains(l, `"message":"restoring snapshot"`) {
			restored = l
		}
	}
	t.Logf("newest snapshot %s; region r2: %s", newest, restored)
	if !strings.Contains(restored, `"snapshot":"`+newest+`"`) {
		t.Errorf("region r2 did not restore the newest snapshot %s: %s", newest, restored)
	}
	waitSame(t, 2*time.Minute, c.src, r2)
	capt.Stop(t)
	app.Stop(t)
}
