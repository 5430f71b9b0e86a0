package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// waitConfirmed waits until the slot has confirmed everything the source
// has written so far: the stream holds it.
func waitConfirmed(t *testing.T, db, slot string) {
	t.Helper()
	want := queryInt(t, db, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
	waitFor(t, 60*time.Second, "slot "+slot+" to confirm the last write", func() (bool, string) {
		n := queryInt(t, db, "SELECT coalesce((SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = $1), 0)::bigint", slot)
		return n >= want, fmt.Sprintf("confirmed %X, want %X", n, want)
	})
}

// refused runs pgjet-capture with args and returns its output once it has
// exited 1, failing the test when it runs on or exits otherwise.
func refused(t *testing.T, name string, args ...string) string {
	t.Helper()
	return refusedBy(t, name, bins.capture, args...)
}

// refusedBy is refused for the binary bin.
func refusedBy(t *testing.T, name, bin string, args ...string) string {
	t.Helper()
	p := start(t, name, bin, args...)
	if code := p.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("%s exited %d, want 1:\n%s", name, code, tail(p.Output(), 4096))
	}
	out := strings.TrimSpace(p.Output())
	t.Logf("%s: %s", name, out[strings.LastIndex(out, "\n")+1:])
	return out
}

// TestCapture_RefusesAnotherSource points capture, with the same --name,
// at Postgres clusters other than the one that wrote its stream: another
// cluster (another system identifier) and a restored backup of the source
// (same system, WAL behind the stream). Either would have transactions
// below the stream's tail skipped silently; capture must stop with one
// line that names the remedy.
func TestCapture_RefusesAnotherSource(t *testing.T) {
	t.Parallel()
	const ddl = "CREATE TABLE t (id int PRIMARY KEY, v text)"
	c := newCluster(t, ddl)
	capt := c.capture(t)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
	waitConfirmed(t, c.src, "pgjet_src")
	backup := local.NewTestPostgres(t, local.PostgresOptions{Name: "backup", BackupOf: c.primary})
	standby := local.NewTestPostgres(t, local.PostgresOptions{Name: "standby", BackupOf: c.primary, Standby: true})
	// The source goes on past the backup, and the stream with it.
	for i := 1; i <= 5; i++ {
		exec1(t, c.src, fmt.Sprintf("INSERT INTO t SELECT g, 'b' FROM generate_series(%d, %d) g", 1000*i, 1000*i+500))
	}
	waitConfirmed(t, c.src, "pgjet_src")
	capt.Stop(t)

	t.Run("another cluster", func(t *testing.T) {
		other := local.NewTestPostgres(t, local.PostgresOptions{Name: "other"})
		exec1(t, other.URL("postgres"), ddl)
		out := refused(t, "pgjet-capture other", "--db", other.URL("postgres"), "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s")
		if !strings.Contains(out, "holds changes of Postgres system") || !strings.Contains(out, "start a new stream") {
			t.Errorf("capture of another cluster did not name the cause and the remedy:\n%s", tail(out, 2048))
		}
	})
	t.Run("restored backup", func(t *testing.T) {
		out := refused(t, "pgjet-capture backup", "--db", backup.URL("postgres"), "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s")
		if !strings.Contains(out, "the stream's last transactions are not in this source") || !strings.Contains(out, "start a new stream") {
			t.Errorf("capture of a restored backup did not name the cause and the remedy:\n%s", tail(out, 2048))
		}
	})
	t.Run("promoted standby on another timeline", func(t *testing.T) {
		// A failover to a replica that lagged: it starts timeline 2 where
		// it stood, before the stream's tail, and writes on past it. Its
		// WAL reaches beyond the stream's tail, but on another history.
		db := standby.URL("postgres")
		exec1(t, db, "SELECT pg_promote()")
		waitFor(t, time.Minute, "the standby to be promoted", func() (bool, string) {
			return queryInt(t, db, "SELECT CASE WHEN pg_is_in_recovery() THEN 0 ELSE 1 END") == 1, "in recovery"
		})
		for i := 0; walInsert(t, db) <= walInsert(t, c.src); i++ {
			exec1(t, db, fmt.Sprintf("INSERT INTO t SELECT g, 'c' FROM generate_series(%d, %d) g", -1000*(i+1), -1000*i-1))
		}
		out := refused(t, "pgjet-capture standby", "--db", db, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s")
		if !strings.Contains(out, "which left timeline 1 at") || !strings.Contains(out, "start a new stream") {
			t.Errorf("capture of a promoted standby did not name the timeline switch and the remedy:\n%s", tail(out, 2048))
		}
	})
	t.Run("same source resumes", func(t *testing.T) {
		c.capture(t)
		exec1(t, c.src, "INSERT INTO t VALUES (-1, 'after')")
		waitConfirmed(t, c.src, "pgjet_src")
	})
}

// walInsert is the source's WAL insert position: a transaction committed
// after it ends past it.
func walInsert(t *testing.T, db string) int64 {
	t.Helper()
	return queryInt(t, db, "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
}

// TestCapture_SlotAgainstStream checks the slot against the stream on
// start. A slot ahead of the stream's last message means the stream lost
// acknowledged messages (a nats-server crash before its fsync: here the
// last message is deleted); a missing slot while the stream holds changes
// means the changes between are gone (here the slot is dropped). Both
// stop capture with one line instead of resuming past a hole. Transactions
// that publish nothing (a filtered table, with no heartbeats) still move
// the slot, and never ahead of the stream: a restart after them passes.
func TestCapture_SlotAgainstStream(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE u (id int PRIMARY KEY, v text)")
	args := []string{"--heartbeat", "0", "--exclude-tables", "public.u"}
	capt := c.capture(t, args...)
	before := walInsert(t, c.src)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
	waitSlotPast(t, 60*time.Second, c.src, "src", stream.LSN(before+1).String())
	for i := 1; i <= 20; i++ {
		before = walInsert(t, c.src)
		exec1(t, c.src, fmt.Sprintf("INSERT INTO u VALUES (%d, 'filtered')", i))
	}
	waitSlotPast(t, 60*time.Second, c.src, "src", stream.LSN(before+1).String())
	capt.Stop(t)

	t.Run("restart after unpublished transactions", func(t *testing.T) {
		capt := c.capture(t, args...)
		before := walInsert(t, c.src)
		exec1(t, c.src, "INSERT INTO t VALUES (-1, 'after restart')")
		waitSlotPast(t, 60*time.Second, c.src, "src", stream.LSN(before+1).String())
		capt.Stop(t)
	})
	t.Run("stream lost its last message", func(t *testing.T) {
		ctx := context.Background()
		st, err := natsJS(t, c.nats.ClientURL()).Stream(ctx, "PGJET_src")
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteMsg(ctx, info.State.LastSeq); err != nil {
			t.Fatal(err)
		}
		out := refused(t, "pgjet-capture", append([]string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"}, args...)...)
		if !strings.Contains(out, "the stream lost acknowledged messages") || !strings.Contains(out, "start a new stream") {
			t.Errorf("capture did not name the lost messages and the remedy:\n%s", tail(out, 2048))
		}
	})
	t.Run("slot dropped", func(t *testing.T) {
		// The walsender of the capture refused above may linger a moment.
		waitFor(t, 30*time.Second, "slot pgjet_src to be idle", func() (bool, string) {
			return queryInt(t, c.src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgjet_src' AND active") == 0, "active"
		})
		exec1(t, c.src, "SELECT pg_drop_replication_slot('pgjet_src')")
		out := refused(t, "pgjet-capture", append([]string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"}, args...)...)
		if !strings.Contains(out, `slot "pgjet_src" is missing`) || !strings.Contains(out, "start a new stream") {
			t.Errorf("capture did not name the missing slot and the remedy:\n%s", tail(out, 2048))
		}
	})
}

// TestApply_RefusesTheSource: pgjet-apply pointed at the source database
// itself (the primary, which holds capture's slot) stops with one line
// before it writes anything, and --check-config fails on it.
func TestApply_RefusesTheSource(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g")
	c.waitCaptured(t)
	args := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "oops"}
	check := start(t, "pgjet-apply --check-config", bins.apply, append(args, "--check-config")...)
	if code := check.Wait(t, 60*time.Second); code == 0 || !strings.Contains(check.Output(), "it is the source itself") {
		t.Errorf("--check-config against the source exited %d, want non-zero naming it:\n%s", code, tail(check.Output(), 2048))
	}
	out := refusedBy(t, "pgjet-apply at the source", bins.apply, args...)
	if !strings.Contains(out, "it is the source itself") || !strings.Contains(out, "point --db at the replica") {
		t.Errorf("apply at the source did not name the cause and the fix:\n%s", tail(out, 2048))
	}
	if n := queryInt(t, c.src, "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'pgjet%'"); n != 0 {
		t.Errorf("apply at the source left %d replication origins behind", n)
	}
	if n := queryInt(t, c.src, "SELECT count(*) FROM t"); n != 10 {
		t.Errorf("the source holds %d rows, want 10", n)
	}
	capt.Stop(t)
}
