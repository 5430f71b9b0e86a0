package e2e

// Adversarial tests of pgjet promote (issue 11): failover paths that lose
// or diverge data. Each fails on the code it was written against.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/stream"
)

// healHome brings the hub's server and every region's link back.
func healHome(t *testing.T, s *regionSetup) {
	t.Helper()
	if err := s.top.Hub.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.top.Names {
		s.top.Proxies[r].Throttle(0)
		if err := s.top.Proxies[r].Heal(); err != nil {
			t.Fatal(err)
		}
	}
}

// promoteR1 fails over to r1 and starts its capture.
func promoteR1(t *testing.T, s *regionSetup) *proc {
	t.Helper()
	code, out := runPgjet(t, "promote", "--failover", "--db", s.dst["r1"], "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--region", "r1")
	if code != 0 {
		t.Fatalf("pgjet promote --failover exited %d:\n%s", code, out)
	}
	c := start(t, "pgjet-capture r1", bins.capture, "--db", s.dst["r1"], "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--heartbeat", "1s")
	c.waitLog(t, "capture started")
	return c
}

// TestAttack11_RepairRacesInsert: r2 applied a transaction r1 never got
// (insert key 100, update key 1). After the failover capture on r1 reads
// the rows of those keys FOR SHARE; key 100 is absent there, so nothing is
// locked, and an insert of key 100 on the new primary that commits
// between the repair's read and its commit comes before the repair in the
// WAL. r2 applies the insert, then the repair deletes key 100 again: r2
// lacks a row r1 holds.
func TestAttack11_RepairRacesInsert(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1", "r2")
	r1, r2 := s.dst["r1"], s.dst["r2"]
	exec1(t, s.src, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)`, `INSERT INTO acct SELECT g, 0 FROM generate_series(1, 10) g`)
	waitSame(t, 60*time.Second, s.src, r1)
	waitSame(t, 60*time.Second, s.src, r2)

	s.top.Proxies["r1"].Cut()
	r1Seq := s.mustLastSeq(t, "r1")
	// Key 100 first, then key 1: the repair reads them in that order.
	exec1(t, s.src, `BEGIN`, `INSERT INTO acct VALUES (100, 1)`, `UPDATE acct SET v = 1 WHERE id = 1`, `COMMIT`)
	waitSlotPast(t, 60*time.Second, s.src, "src", queryString(t, s.src, "SELECT pg_current_wal_lsn()::text"))
	hubSeq := s.mustLastSeq(t, "hub")
	waitFor(t, 60*time.Second, "r2 to apply the transaction r1 lacks", func() (bool, string) {
		got := s.appliedSeq(t, "r2")
		return got >= hubSeq, fmt.Sprintf("r2 at %d of %d", got, hubSeq)
	})
	if got := s.mustLastSeq(t, "r1"); got != r1Seq {
		t.Fatalf("r1's mirror grew from %d to %d while cut off", r1Seq, got)
	}

	failHome(t, s)
	newCapture := promoteR1(t, s)
	defer newCapture.Stop(t)

	// A session on the new primary holds key 1, so the repair stops
	// between its read of key 100 and its commit.
	ctx := context.Background()
	lock, err := pgx.Connect(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(ctx)
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM acct WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	healHome(t, s)
	s.appliers["r2"].Stop(t)
	follow := start(t, "pgjet-apply r2 following r1", bins.apply, "--db", r2, "--nats", s.top.Regions["r2"].ClientURL(),
		"--name", "src", "--region", "r2", "--upstream-domain", "r1")
	follow.waitLog(t, "apply started")
	waitFor(t, 60*time.Second, "the repair to wait for key 1 on r1", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, r1, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR SHARE%'`)
		return n == 1, fmt.Sprintf("%d waiting", n)
	})
	// The application inserts key 100 on the new primary meanwhile. A
	// repair that locks its tables makes the insert wait for it; one that
	// does not lets it commit first.
	inserted := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(ctx, r1)
		if err == nil {
			defer conn.Close(ctx)
			_, err = conn.Exec(ctx, `INSERT INTO acct VALUES (100, 2)`)
		}
		inserted <- err
	}()
	waitFor(t, 60*time.Second, "the insert to commit or wait for the repair", func() (bool, string) {
		if len(inserted) > 0 {
			return true, "committed"
		}
		n := queryInt(t, r1, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO acct%'`)
		return n == 1, fmt.Sprintf("%d waiting", n)
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}

	waitFor(t, 60*time.Second, "both keys repaired on r2", func() (bool, string) {
		checkDaemons(t)
		got := queryString(t, r2, `SELECT coalesce(string_agg(decision || ':' || n, ' '), 'none') FROM (SELECT decision, count(*) n FROM pgjet.conflicts WHERE kind = 'lost_in_failover' GROUP BY 1) d`)
		return got == "repaired:2", got
	})
	if got, want := queryInt(t, r2, `SELECT count(*) FROM acct WHERE id = 100`), queryInt(t, r1, `SELECT count(*) FROM acct WHERE id = 100`); got != want {
		t.Errorf("r2 holds %d rows of acct id 100, the new primary %d: the repair read key 100 before the insert committed and deleted it on r2 after the insert was applied", got, want)
	}
	follow.Stop(t)
}

// TestAttack11_OldCaptureUnretires: after a failover the new capture
// retires the old home's stream when the hub's server comes back. Then the
// old primary comes back and its capture is started again (a service
// manager): it must stop naming the promotion. It finds no generation
// marker in the old home's stream (the marker lives in r1's), makes that
// stream take the source's subjects again (stream.EnsureStream) and goes
// on publishing the old primary's writes of the old generation.
func TestAttack11_OldCaptureUnretires(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1")
	r1 := s.dst["r1"]
	exec1(t, s.src, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)`, `INSERT INTO acct SELECT g, 0 FROM generate_series(1, 10) g`)
	waitSame(t, 60*time.Second, s.src, r1)

	failHome(t, s)
	newCapture := promoteR1(t, s)
	defer newCapture.Stop(t)
	healHome(t, s)
	ctx := context.Background()
	subjects := func() string {
		st, err := s.js["hub"].Stream(ctx, stream.StreamName("src"))
		if err != nil {
			return err.Error()
		}
		return strings.Join(st.CachedInfo().Config.Subjects, ",")
	}
	waitFor(t, 60*time.Second, "the old home's stream retired", func() (bool, string) {
		got := subjects()
		return strings.HasPrefix(got, "pgjetretired."), got
	})
	hubBefore := s.mustLastSeq(t, "hub")

	// The old primary and its capture come back.
	if err := s.primary.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	old := start(t, "old pgjet-capture", bins.capture, "--db", s.src, "--nats", s.top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s")
	old.expectExit = true
	waitFor(t, 60*time.Second, "the old primary's capture to stop or start", func() (bool, string) {
		return old.Exited() || strings.Contains(old.Output(), `"message":"capture started"`), "running"
	})
	if !old.Exited() {
		t.Errorf("the old primary's capture started again after the failover to r1 instead of stopping, naming the promotion")
	}
	if got := subjects(); !strings.HasPrefix(got, "pgjetretired.") {
		t.Errorf("the old home's stream takes subjects %s again after the old capture started", got)
	}
	exec1(t, s.src, `INSERT INTO acct VALUES (500, 9)`)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if got := s.mustLastSeq(t, "hub"); got > hubBefore+3 {
			t.Errorf("the old home's stream took messages of the old primary after the failover: its last sequence went from %d to %d", hubBefore, got)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}
