package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// ledgerWriter inserts rows one transaction at a time into table ledger
// of whichever database is the primary, and keeps the id of every insert
// whose COMMIT was acknowledged: those must never be lost.
type ledgerWriter struct {
	url   atomic.Pointer[string]
	mu    sync.Mutex
	acked []ledgerRow
	n     int
	byURL map[string]int
	// firstAt and lastAt are when the first and the last write on each
	// database were acknowledged.
	firstAt, lastAt map[string]time.Time
	errs            []string
	stop            chan struct{}
	done            chan struct{}
	// firstErr is when the first write was refused, firstOK when the
	// first write after it was acknowledged: the outage the writer saw.
	firstErr, firstOK time.Time
	once              sync.Once
}

// ledgerRow is a row a write made: the id the database gave it and the
// note the writer gave it, unique among the writer's writes.
type ledgerRow struct {
	id   int64
	note string
}

func newLedgerWriter(url string) *ledgerWriter {
	w := &ledgerWriter{stop: make(chan struct{}), done: make(chan struct{}), byURL: map[string]int{}, firstAt: map[string]time.Time{}, lastAt: map[string]time.Time{}}
	w.url.Store(&url)
	go w.run()
	return w
}

func (w *ledgerWriter) run() {
	defer close(w.done)
	ctx := context.Background()
	var conn *pgx.Conn
	var connURL string
	for {
		select {
		case <-w.stop:
			if conn != nil {
				conn.Close(ctx)
			}
			return
		default:
		}
		url := *w.url.Load()
		if conn == nil || connURL != url {
			if conn != nil {
				conn.Close(ctx)
			}
			var err error
			if conn, err = pgx.Connect(ctx, url); err != nil {
				conn = nil
				w.refused(err)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			connURL = url
		}
		var id int64
		w.n++
		note := fmt.Sprintf("w%d", w.n)
		if err := conn.QueryRow(ctx, "INSERT INTO ledger (note) VALUES ($1) RETURNING id", note).Scan(&id); err != nil {
			w.refused(err)
			conn.Close(ctx)
			conn = nil
			time.Sleep(20 * time.Millisecond)
			continue
		}
		w.mu.Lock()
		w.acked = append(w.acked, ledgerRow{id, note})
		if w.byURL[url]++; w.byURL[url] == 1 {
			w.firstAt[url] = time.Now()
		}
		w.lastAt[url] = time.Now()
		if !w.firstErr.IsZero() && w.firstOK.IsZero() {
			w.firstOK = time.Now()
		}
		w.mu.Unlock()
	}
}

func (w *ledgerWriter) refused(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.firstErr.IsZero() {
		w.firstErr = time.Now()
	}
	if len(w.errs) < 1000 {
		w.errs = append(w.errs, err.Error())
	}
}

func (w *ledgerWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *ledgerWriter) finish() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

// missing returns the acknowledged writes the database at url lacks, and
// those whose id it gave another row (an id handed out twice).
func (w *ledgerWriter) missing(t *testing.T, url string) (miss, reused []ledgerRow) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	byNote, byID := map[string]int64{}, map[int64]string{}
	rows, err := conn.Query(ctx, "SELECT id, note FROM ledger")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r ledgerRow
		if err := rows.Scan(&r.id, &r.note); err != nil {
			t.Fatal(err)
		}
		byNote[r.note], byID[r.id] = r.id, r.note
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.acked {
		if _, ok := byNote[r.note]; !ok {
			miss = append(miss, r)
		}
		if note, ok := byID[r.id]; ok && note != r.note {
			reused = append(reused, r)
		}
	}
	return miss, reused
}

// seedPromote creates table ledger (for ledgerWriter) and pgbench's rows
// at scale 4 (100,000 accounts) on the primary, runs extra there, and
// waits until r1 has all of it.
func seedPromote(t *testing.T, s *regionSetup, extra ...string) {
	t.Helper()
	exec1(t, s.src, append([]string{`CREATE TABLE ledger (id bigserial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`INSERT INTO pgbench_branches (bid, bbalance) SELECT g, 0 FROM generate_series(1, 4) g`,
		`INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT g, 1 + g % 4, 0 FROM generate_series(1, 40) g`,
		`INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT g, 1 + g % 4, 0, '' FROM generate_series(1, 100000) g`}, extra...)...)
	waitSame(t, 120*time.Second, s.src, s.dst["r1"])
}

// TestPromote_Switchover: under a pgbench load and a writer that records
// every acknowledged commit, pgjet promote fences the primary, waits for
// r1 to apply its last transaction and makes r1 the primary of generation
// 2. Nothing acknowledged is lost, r1's sequences never hand out an id
// the old primary used, r1's applier stops and refuses to start again, the
// old capture stops by itself, capture on r1 continues the same stream,
// and r2 follows r1 through the generation marker without a snapshot,
// ending identical to it.
func TestPromote_Switchover(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1", "r2")
	r1, r2 := s.dst["r1"], s.dst["r2"]
	// Sequence values are not replicated: r1's sequences are where
	// promote sets them, or nowhere.
	s.capture.Stop(t)
	s.capture = start(t, "pgjet-capture", bins.capture, "--db", s.src, "--nats", s.top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s", "--sequences=false")
	s.capture.waitLog(t, "capture started")
	seedPromote(t, s, `CREATE TABLE tickets (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)`,
		`INSERT INTO tickets (v) SELECT g FROM generate_series(1, 50) g`,
		// Ids handed out and never used in a row.
		`BEGIN; SELECT nextval('tickets_id_seq') FROM generate_series(1, 25); ROLLBACK`)

	w := newLedgerWriter(s.src)
	defer w.finish()
	bench := pgbenchAsync(t, s.src, "-n", "-c", "3", "-T", "600", "-s", "4")
	waitFor(t, 60*time.Second, "the writer's first commits", func() (bool, string) {
		return w.count() >= 200, fmt.Sprintf("%d", w.count())
	})

	// The processes promote stops.
	s.appliers["r1"].expectExit = true
	s.capture.expectExit = true
	started := time.Now()
	code, out := runPgjet(t, "promote", "--db", r1, "--old-db", s.src, "--nats", s.top.Hub.ClientURL(), "--name", "src", "--region", "r1")
	took := time.Since(started)
	if code != 0 {
		t.Fatalf("pgjet promote exited %d:\n%s", code, out)
	}
	t.Logf("pgjet promote took %s:\n%s", took.Round(time.Millisecond), out)
	if !strings.Contains(out, "writes refused for") || !strings.Contains(out, "nothing was lost") {
		t.Errorf("pgjet promote does not say how long writes were refused:\n%s", out)
	}
	w.url.Store(&r1)
	oldLedger := queryInt(t, s.src, "SELECT last_value FROM ledger_id_seq")
	if got, want := queryInt(t, r1, "SELECT last_value FROM tickets_id_seq"), int64(75); got < want {
		t.Errorf("r1's tickets_id_seq is at %d after promote, below the %d the old primary handed out", got, want)
	}
	if got := queryInt(t, r1, "SELECT last_value FROM ledger_id_seq"); got < oldLedger {
		t.Errorf("r1's ledger_id_seq is at %d after promote, below the old primary's %d", got, oldLedger)
	}
	exec1(t, r1, `INSERT INTO tickets (v) VALUES (0)`)
	if got := queryInt(t, r1, "SELECT max(id) FROM tickets"); got != 76 {
		t.Errorf("the first ticket on the new primary got id %d, want 76", got)
	}
	select {
	case <-bench: // ended by the fence
	case <-time.After(30 * time.Second):
		t.Errorf("pgbench still runs against the fenced primary")
	}
	if got := queryString(t, s.src, "SHOW default_transaction_read_only"); got != "on" {
		t.Errorf("old primary's default_transaction_read_only = %s, want on", got)
	}

	// r1's applier stops for good, in one line.
	if code := s.appliers["r1"].Wait(t, 60*time.Second); code != 1 {
		t.Errorf("r1's applier exited %d, want 1", code)
	}
	const promotedLine = "was promoted to the primary of source src (generation 2, region r1"
	if !strings.Contains(s.appliers["r1"].Output(), promotedLine) {
		t.Errorf("r1's applier does not say the target was promoted:\n%s", tail(s.appliers["r1"].Output(), 2048))
	}
	again := start(t, "pgjet-apply r1 again", bins.apply, "--db", r1, "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--region", "r1", "--upstream-domain", "hub")
	if code := again.Wait(t, 60*time.Second); code != 1 || !strings.Contains(again.Output(), promotedLine) {
		t.Errorf("r1's applier started again exited %d, want 1 naming the promotion:\n%s", code, tail(again.Output(), 2048))
	}

	// The new primary's capture goes on in the same stream.
	newCapture := start(t, "pgjet-capture r1", bins.capture, "--db", r1, "--nats", s.top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s")
	newCapture.waitLog(t, "capture started")
	// The old one stops at its next heartbeat, naming the new primary.
	if code := s.capture.Wait(t, 60*time.Second); code != 1 || !strings.Contains(s.capture.Output(), "is no longer the primary of source src") {
		t.Errorf("old capture exited %d, want 1 saying it is no longer the primary:\n%s", code, tail(s.capture.Output(), 2048))
	}

	// Writes on the new primary: the writer, and pgbench.
	before := w.count()
	waitFor(t, 60*time.Second, "the writer's commits on r1", func() (bool, string) {
		return w.count() >= before+200, fmt.Sprintf("%d", w.count()-before)
	})
	pgbench(t, r1, "-n", "-c", "2", "-t", "200", "-s", "4")
	w.finish()
	for _, e := range w.errs {
		if strings.Contains(e, "duplicate key") {
			t.Errorf("a write on the new primary reused an id: %s", e)
			break
		}
	}
	t.Logf("writer: %d commits acknowledged (%v), %d writes refused; the writer saw writes refused for %s",
		len(w.acked), w.byURL, len(w.errs), w.firstOK.Sub(w.firstErr).Round(time.Millisecond))

	waitSame(t, 120*time.Second, r1, r2)
	for _, url := range []string{r1, r2} {
		miss, reused := w.missing(t, url)
		if len(miss) > 0 {
			t.Errorf("%d acknowledged commits are missing on %s, e.g. ledger id %d", len(miss), url, miss[0].id)
		}
		if len(reused) > 0 {
			t.Errorf("%d ids of acknowledged commits were given to other rows on %s, e.g. ledger id %d", len(reused), url, reused[0].id)
		}
	}
	if got := queryInt(t, r2, "SELECT coalesce(max(generation), 0) FROM pgjet.generations WHERE source = 'src' AND NOT primary_here"); got != 2 {
		t.Errorf("r2 records generation %d, want 2", got)
	}
	if got := queryInt(t, r2, "SELECT count(*) FROM pgjet.restore"); got != 0 {
		t.Errorf("r2 restored a snapshot (%d): it must follow without one", got)
	}
	newCapture.Stop(t)
	s.appliers["r2"].Stop(t)
}

// TestPromote_Failover: the home region dies under load (its Postgres and
// capture killed with -9, its nats-server gone, the regions' links cut);
// pgjet promote --failover makes r1 the primary from what its mirror
// holds. r1 applied every whole transaction its mirror received, its
// mirror became the stream, and r1's capture goes on in it. RPO
// (acknowledged commits lost) and RTO (from promote to the first write
// r1 acknowledges) are logged.
func TestPromote_Failover(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1", "r2")
	r1 := s.dst["r1"]
	seedPromote(t, s)

	w := newLedgerWriter(s.src)
	defer w.finish()
	pgbenchAsync(t, s.src, "-n", "-c", "3", "-T", "600", "-s", "4")
	// A steady state: the pipeline runs at the load's pace before it dies.
	waitFor(t, 60*time.Second, "the writer's first commits", func() (bool, string) {
		return w.count() >= 1500, fmt.Sprintf("%d", w.count())
	})

	// The home region dies.
	failHome(t, s)

	started := time.Now()
	code, out := runPgjet(t, "promote", "--failover", "--db", r1, "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--region", "r1")
	took := time.Since(started)
	if code != 0 {
		t.Fatalf("pgjet promote --failover exited %d:\n%s", code, out)
	}
	w.url.Store(&r1)
	waitFor(t, 60*time.Second, "the first write on the new primary", func() (bool, string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.byURL[r1] > 0, fmt.Sprintf("%v", w.byURL)
	})
	w.mu.Lock()
	rto := w.firstAt[r1].Sub(started)
	w.mu.Unlock()
	t.Logf("pgjet promote --failover took %s:\n%s", took.Round(time.Millisecond), out)
	for _, want := range []string{"newest message the mirror received", "may be lost", "generation 2 of source src begins"} {
		if !strings.Contains(out, want) {
			t.Errorf("pgjet promote --failover does not say %q", want)
		}
	}

	// r1 applied every whole transaction its mirror received.
	js := s.js["r1"]
	ctx := context.Background()
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().Config.Mirror != nil {
		t.Fatalf("r1's stream is still a mirror")
	}
	g, markerSeq, err := stream.LastGeneration(ctx, st, "src")
	if err != nil || g == nil {
		t.Fatalf("no generation marker in r1's stream: %v", err)
	}
	var newest stream.LSN
	for seq := markerSeq - 1; seq > 0 && newest == 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range envs {
			if e.Kind == stream.KindTxn && e.Last() {
				newest = e.CommitLSN
			}
		}
	}
	if got := queryString(t, r1, "SELECT commit_lsn::text FROM pgjet.applied WHERE source = 'src'"); got != newest.String() || g.PrevLSN != newest {
		t.Errorf("r1 applied up to %s (marker says %s), but its mirror's newest whole transaction is %s", got, g.PrevLSN, newest)
	}

	if code := s.appliers["r1"].Wait(t, 60*time.Second); code != 1 || !strings.Contains(s.appliers["r1"].Output(), "was promoted to the primary of source src") {
		t.Errorf("r1's applier exited %d, want 1 naming the promotion:\n%s", code, tail(s.appliers["r1"].Output(), 2048))
	}

	// r1's capture goes on in the stream its mirror became.
	newCapture := start(t, "pgjet-capture r1", bins.capture, "--db", r1, "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--heartbeat", "1s")
	newCapture.waitLog(t, "capture started")
	system := queryString(t, r1, "SELECT system_identifier::text FROM pg_control_system()")
	waitFor(t, 60*time.Second, "r1's transactions in its stream", func() (bool, string) {
		checkDaemons(t)
		m, err := st.GetLastMsgForSubject(ctx, stream.TxnSubject("src"))
		if err != nil {
			return false, err.Error()
		}
		return m.Sequence > markerSeq && m.Header.Get(stream.HeaderSystem) == system, fmt.Sprintf("last transaction at sequence %d from system %s", m.Sequence, m.Header.Get(stream.HeaderSystem))
	})

	// The hub's NATS comes back (the way between r1 and r2), without the
	// old primary; r2's applier, started again with r1 as its upstream,
	// follows r1 from where it stood, without a snapshot.
	hubSeq, err := s.lastSeq("hub")
	if err == nil {
		t.Fatalf("the hub's stream answers while its server is down (last sequence %d)", hubSeq)
	}
	if err := s.top.Hub.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.top.Names {
		if err := s.top.Proxies[r].Heal(); err != nil {
			t.Fatal(err)
		}
	}
	hubBefore := s.mustLastSeq(t, "hub")
	s.appliers["r2"].Stop(t)
	r2 := start(t, "pgjet-apply r2 following r1", bins.apply, "--db", s.dst["r2"], "--nats", s.top.Regions["r2"].ClientURL(),
		"--name", "src", "--region", "r2", "--upstream-domain", "r1")
	r2.waitLog(t, "apply started")
	before := w.count()
	waitFor(t, 60*time.Second, "more writes on r1", func() (bool, string) {
		return w.count() >= before+200, fmt.Sprintf("%d", w.count()-before)
	})
	w.finish()
	waitSame(t, 120*time.Second, r1, s.dst["r2"])
	if got := queryInt(t, s.dst["r2"], "SELECT coalesce(max(generation), 0) FROM pgjet.generations WHERE source = 'src'"); got != 2 {
		t.Errorf("r2 records generation %d, want 2", got)
	}
	if got := queryInt(t, s.dst["r2"], "SELECT count(*) FROM pgjet.restore"); got != 0 {
		t.Errorf("r2 restored a snapshot (%d): it must follow without one", got)
	}
	if hubAfter := s.mustLastSeq(t, "hub"); hubAfter != hubBefore {
		t.Errorf("the old home's stream took r1's messages too: its last sequence went from %d to %d", hubBefore, hubAfter)
	}
	r2.Stop(t)
	for _, e := range w.errs {
		if strings.Contains(e, "duplicate key") {
			t.Errorf("a write on the new primary reused an id: %s", e)
			break
		}
	}
	lost, reused := w.missing(t, r1)
	if len(reused) > 0 {
		t.Errorf("the new primary gave %d ids of commits the old one acknowledged to other rows, e.g. ledger id %d", len(reused), reused[0].id)
	}
	applied := queryString(t, r1, "SELECT commit_time::text FROM pgjet.applied WHERE source = 'src'")
	var lag time.Duration
	if at, err := time.Parse("2006-01-02 15:04:05.999999-07", applied); err == nil {
		lag = w.lastAt[s.src].Sub(at)
	}
	t.Logf("writer: %v acknowledged; the last commit the old primary acknowledged came %s after the last transaction r1 applied (%s)", w.byURL, lag.Round(time.Millisecond), applied)
	t.Logf("RPO: %d of %d acknowledged commits lost (ledger ids %s); RTO: %s from pgjet promote to the first write the new primary acknowledged (promote itself %s)",
		len(lost), w.byURL[s.src], idRange(lost), rto.Round(time.Millisecond), took.Round(time.Millisecond))
	newCapture.Stop(t)
}

// idRange shows the ids of rows as first..last.
func idRange(rows []ledgerRow) string {
	if len(rows) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d..%d", rows[0].id, rows[len(rows)-1].id)
}

// TestPromote_FailoverRegionAhead: r2 applied transactions r1 never got
// (r1's link was cut) when the home region died. After r1 is promoted,
// r2, started again with r1 as its upstream, records every key those
// transactions touched as lost_in_failover, has the new primary's capture
// send those rows through the stream, and ends identical to r1: updates,
// inserts, deletes, a key change and a row of a table without a key
// (REPLICA IDENTITY FULL) undone, with a write made on r1 meanwhile kept.
func TestPromote_FailoverRegionAhead(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1", "r2")
	r1, r2 := s.dst["r1"], s.dst["r2"]
	seedPromote(t, s)
	exec1(t, s.src, `INSERT INTO ledger (note) SELECT 'kept' FROM generate_series(1, 20)`)
	waitSame(t, 60*time.Second, s.src, r1)
	waitSame(t, 60*time.Second, s.src, r2)

	// r1 is cut off; r2 gets what follows.
	s.top.Proxies["r1"].Cut()
	r1Seq := s.mustLastSeq(t, "r1")
	exec1(t, s.src, `UPDATE pgbench_accounts SET abalance = 777 WHERE aid BETWEEN 1 AND 10`,
		`INSERT INTO ledger (note) SELECT 'lost' FROM generate_series(1, 5)`,
		`DELETE FROM pgbench_accounts WHERE aid BETWEEN 11 AND 15`,
		`UPDATE pgbench_tellers SET tid = 1000 WHERE tid = 40`,
		`INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) VALUES (1, 1, 1, 5, '2020-01-01', 'lost')`)
	waitSlotPast(t, 60*time.Second, s.src, "src", queryString(t, s.src, "SELECT pg_current_wal_lsn()::text"))
	hubSeq := s.mustLastSeq(t, "hub")
	waitFor(t, 60*time.Second, "r2 to apply the transactions r1 lacks", func() (bool, string) {
		got := s.appliedSeq(t, "r2")
		return got >= hubSeq, fmt.Sprintf("r2 at %d of %d", got, hubSeq)
	})
	if got := s.mustLastSeq(t, "r1"); got != r1Seq {
		t.Fatalf("r1's mirror grew from %d to %d while cut off", r1Seq, got)
	}

	// The home region dies.
	if err := s.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	s.capture.Kill()
	s.top.Proxies["r2"].Cut()
	s.top.Hub.Shutdown()
	s.appliers["r1"].expectExit = true
	code, out := runPgjet(t, "promote", "--failover", "--db", r1, "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--region", "r1")
	if code != 0 {
		t.Fatalf("pgjet promote --failover exited %d:\n%s", code, out)
	}
	newCapture := start(t, "pgjet-capture r1", bins.capture, "--db", r1, "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src", "--heartbeat", "1s")
	newCapture.waitLog(t, "capture started")
	// A write on the new primary to a key the lost transactions touched.
	exec1(t, r1, `UPDATE pgbench_accounts SET abalance = 5 WHERE aid = 3`, `INSERT INTO ledger (note) VALUES ('new')`)

	if err := s.top.Hub.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.top.Names {
		if err := s.top.Proxies[r].Heal(); err != nil {
			t.Fatal(err)
		}
	}
	s.appliers["r2"].Stop(t)
	follow := start(t, "pgjet-apply r2 following r1", bins.apply, "--db", r2, "--nats", s.top.Regions["r2"].ClientURL(),
		"--name", "src", "--region", "r2", "--upstream-domain", "r1")
	follow.waitLog(t, "apply started")
	waitSame(t, 120*time.Second, r1, r2)
	const lostKeys = 10 + 5 + 5 + 2 + 1 // accounts updated, ledger rows, accounts deleted, tellers 40 and 1000, a history row
	waitFor(t, 60*time.Second, "every key lost in failover repaired", func() (bool, string) {
		checkDaemons(t)
		got := queryString(t, r2, `SELECT coalesce(string_agg(decision || ':' || n, ' '), 'none') FROM (SELECT decision, count(*) n FROM pgjet.conflicts WHERE kind = 'lost_in_failover' GROUP BY 1) d`)
		return got == fmt.Sprintf("repaired:%d", lostKeys), got
	})
	if got := queryInt(t, r2, "SELECT count(*) FROM pgjet.restore"); got != 0 {
		t.Errorf("r2 restored a snapshot (%d): it must follow without one", got)
	}
	if got := queryInt(t, r2, "SELECT abalance FROM pgbench_accounts WHERE aid = 3"); got != 5 {
		t.Errorf("r2's account 3 has balance %d, want the new primary's 5", got)
	}
	follow.Stop(t)
	newCapture.Stop(t)
}

// TestCapture_PromotedStandbyWithoutSlot: the primary fails over to its
// physical standby (as Patroni, repmgr or pg_auto_failover do), which had
// received everything. Postgres 15 keeps no logical slot on a standby, so
// the promoted standby lacks capture's slot: capture must not make a new
// one and go on (what was committed between the stream's tail and the
// promotion would be lost), but stop with one line naming the failover and
// both remedies.
func TestCapture_PromotedStandbyWithoutSlot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
	waitConfirmed(t, c.src, "pgjet_src")
	capt.Stop(t)
	// A standby that received all of it: the stream's tail lies in its
	// history, before the promotion.
	standby := local.NewTestPostgres(t, local.PostgresOptions{Name: "standby", BackupOf: c.primary, Standby: true})
	db := standby.URL("postgres")
	if err := c.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	exec1(t, db, "SELECT pg_promote()")
	waitFor(t, time.Minute, "the standby to be promoted", func() (bool, string) {
		return queryInt(t, db, "SELECT CASE WHEN pg_is_in_recovery() THEN 0 ELSE 1 END") == 1, "in recovery"
	})
	exec1(t, db, "INSERT INTO t VALUES (-1, 'after the failover')")
	out := refused(t, "pgjet-capture promoted standby", "--db", db, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s")
	for _, want := range []string{"slot \"pgjet_src\" is missing", "promoted from timeline 1 to timeline 2", "Postgres 15 keeps no logical slots on standbys", "start a new stream", "permanent logical slot"} {
		if !strings.Contains(out, want) {
			t.Errorf("capture of a promoted standby without its slot does not say %q:\n%s", want, tail(out, 2048))
		}
	}
	if n := queryInt(t, db, "SELECT count(*) FROM pg_replication_slots"); n != 0 {
		t.Errorf("capture made %d slots on the promoted standby", n)
	}
}

// failHome kills the home region under load:
// the primary and its capture with -9, every region's link cut, the hub's
// server down.
func failHome(t *testing.T, s *regionSetup) {
	t.Helper()
	if err := s.primary.Kill(); err != nil {
		t.Fatal(err)
	}
	s.capture.Kill()
	for _, r := range s.top.Names {
		s.top.Proxies[r].Cut()
	}
	s.top.Hub.Shutdown()
	s.appliers["r1"].expectExit = true
}
