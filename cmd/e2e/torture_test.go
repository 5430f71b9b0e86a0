package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
)

// The torture test: a seeded, randomized workload that mixes every kind of
// change pgjet carries, run against the real binaries across a hub and
// three regions while faults are injected at random moments. At quiescent
// points every replica must equal the primary table by table, the keyless
// audit table must hold each operation exactly once, and every sequence must
// be at least as far on a replica as on the primary.
//
// PGJET_TORTURE_DURATION sets how long it runs (default 3m, what make test
// runs); PGJET_TORTURE_SEED replays a run. `make soak DURATION=30m` is the
// long run.

const tortureSchema = `
CREATE TABLE items (id bigserial PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0, pad text);
CREATE TABLE scratch (id int PRIMARY KEY, v text);
CREATE TABLE audit (op bigint NOT NULL, kind text NOT NULL);
ALTER TABLE audit REPLICA IDENTITY FULL;
CREATE TABLE evolve (id int PRIMARY KEY, c0 text);
CREATE TABLE events (id bigint NOT NULL, at int NOT NULL, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (1000);
CREATE SEQUENCE counter_seq;
INSERT INTO items (v, n) SELECT 'seed' || g, g FROM generate_series(1, 200) g;
INSERT INTO evolve SELECT g, 'e' || g FROM generate_series(1, 50) g;
`

// tortureConfig reads the run's seed and duration from the environment.
func tortureConfig(t *testing.T) (seed uint64, dur time.Duration) {
	t.Helper()
	dur = 3 * time.Minute
	if s := os.Getenv("PGJET_TORTURE_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("PGJET_TORTURE_DURATION=%q: %v", s, err)
		}
		dur = d
	}
	seed = uint64(time.Now().UnixNano())
	if s := os.Getenv("PGJET_TORTURE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PGJET_TORTURE_SEED=%q: %v", s, err)
		}
		seed = n
	}
	return seed, dur
}

// torture is one run: the topology, the processes and what was drawn.
type torture struct {
	t       *testing.T
	rnd     *rand.Rand // faults; the workload has its own
	regions *regionSetup
	prim    *local.Postgres
	capArgs []string

	mu      sync.Mutex
	ops     []string       // the faults drawn, in order, for the report
	counts  map[string]int // workload operations by kind
	applyFl map[string][]string

	pause    chan chan struct{} // a quiescent point asks the workload to stop here
	workDone chan struct{}      // closed when the workload ends
	opSeq    atomic.Int64
	workErr  atomic.Value
}

func (x *torture) logf(format string, args ...any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := fmt.Sprintf(format, args...)
	x.ops = append(x.ops, s)
	x.t.Log(s)
}

func TestTorture(t *testing.T) {
	t.Parallel()
	seed, dur := tortureConfig(t)
	replay := fmt.Sprintf("make soak SEED=%d DURATION=%s", seed, dur)
	t.Logf("torture seed %d, duration %s; replay with: %s", seed, dur, replay)
	x := &torture{t: t, rnd: rand.New(rand.NewPCG(seed, 1)), counts: map[string]int{}, applyFl: map[string][]string{},
		pause: make(chan chan struct{})}
	defer func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		t.Logf("torture seed %d: %d faults: %s", seed, len(x.ops), strings.Join(x.ops, "; "))
		t.Logf("torture seed %d: workload: %v", seed, x.counts)
		if t.Failed() {
			t.Logf("replay this run with: %s", replay)
		}
	}()

	x.setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x.workDone = make(chan struct{})
	go func() {
		defer close(x.workDone)
		x.workload(ctx, rand.New(rand.NewPCG(seed, 2)))
	}()

	end := time.Now().Add(dur)
	nextCheck := time.Now().Add(40 * time.Second)
	bootstrapped := false
	for time.Now().Before(end) {
		x.sleep(2*time.Second + time.Duration(x.rnd.IntN(6000))*time.Millisecond)
		checkDaemons(t)
		if err, _ := x.workErr.Load().(error); err != nil {
			t.Fatalf("workload: %v", err)
		}
		if !bootstrapped && time.Until(end) < dur/2 && x.allowed("new-region") {
			x.snapshotAndNewRegion(t)
			bootstrapped = true
			continue
		}
		x.fault(t)
		if time.Now().After(nextCheck) {
			x.quiescent(t)
			nextCheck = time.Now().Add(40 * time.Second)
		}
	}
	if !bootstrapped && x.allowed("new-region") {
		x.snapshotAndNewRegion(t)
	}
	cancel()
	<-x.workDone
	x.quiescent(t)
	if err, _ := x.workErr.Load().(error); err != nil {
		t.Fatalf("workload: %v", err)
	}
}

func (x *torture) allowed(fault string) bool {
	only := os.Getenv("PGJET_TORTURE_FAULTS")
	return only == "" || slices.Contains(strings.Split(only, ","), fault)
}

func (x *torture) sleep(d time.Duration) { time.Sleep(d) }

// setup starts the hub with the primary and capture, and regions r1 and
// r2, each with an empty replica built from capture's first snapshot.
// Region r3 gets its replica later, from a snapshot taken mid-load.
func (x *torture) setup(t *testing.T) {
	t.Helper()
	s := &regionSetup{
		// Servers run as processes, so that a fault can kill one with
		// SIGKILL (a crash loses what a clean shutdown would flush).
		top:      local.NewTestTopology(t, local.TopologyOptions{Hub: "hub", Regions: []string{"r1", "r2", "r3"}, Proxied: true, Processes: true}),
		dst:      map[string]string{},
		appliers: map[string]*proc{},
	}
	x.regions = s
	x.prim = local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"})
	s.src = x.prim.URL("postgres")
	exec1(t, s.src, tortureSchema)
	for _, r := range []string{"r1", "r2", "r3"} {
		s.dst[r] = local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-" + r}).URL("postgres")
	}
	// Small chunks: many transactions span several messages.
	x.capArgs = []string{"--db", s.src, "--nats", s.top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s", "--chunk-bytes", "16384"}
	x.startCapture(t)
	for _, r := range []string{"r1", "r2"} {
		x.startApply(t, r, nil)
	}
}

func (x *torture) startCapture(t *testing.T) {
	t.Helper()
	x.regions.capture = start(t, "pgjet-capture", bins.capture, x.capArgs...)
	x.regions.capture.waitLog(t, "capture started")
}

// startApply starts region r's applier; it does not wait for it, since an
// applier of an empty replica first waits for and restores a snapshot.
func (x *torture) startApply(t *testing.T, r string, flags []string) {
	t.Helper()
	args := append([]string{"--db", x.regions.dst[r], "--nats", x.regions.top.Regions[r].ClientURL(),
		"--name", "src", "--region", r, "--upstream-domain", "hub"}, flags...)
	x.regions.appliers[r] = start(t, "pgjet-apply "+r, bins.apply, args...)
	x.applyFl[r] = flags
}

// faultNames name the faults, in the order fault draws them;
// PGJET_TORTURE_FAULTS=a,b keeps only those (to narrow down a failure).
var faultNames = []string{"kill-capture", "kill-apply", "apply-flags", "restart-nats", "kill-postgres", "cut-leafnode", "restart-apply", "new-region"}

// fault draws one fault and injects it.
func (x *torture) fault(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	s := x.regions
	regions := []string{"r1", "r2"}
	if _, ok := s.appliers["r3"]; ok {
		regions = append(regions, "r3")
	}
	r := regions[x.rnd.IntN(len(regions))]
	k := x.rnd.IntN(len(faultNames) - 1) // new-region is drawn once, by the run
	if !x.allowed(faultNames[k]) {
		return
	}
	switch k {
	case 0:
		x.logf("kill -9 capture")
		s.capture.Kill()
		x.startCapture(t)
	case 1:
		x.logf("kill -9 apply %s", r)
		s.appliers[r].Kill()
		x.startApply(t, r, x.applyFl[r])
	case 2:
		flags := [][]string{nil, {"--group-txns", "1"}, {"--group-txns", "7", "--pipeline", "1"},
			{"--group-bytes", "65536", "--group-delay", "0s"}}[x.rnd.IntN(4)]
		x.logf("restart apply %s with flags %v", r, flags)
		s.appliers[r].Stop(t)
		x.startApply(t, r, flags)
	case 3:
		name := append([]string{"hub"}, regions...)[x.rnd.IntN(len(regions)+1)]
		srv := s.top.Server(name)
		if x.rnd.IntN(2) == 0 {
			x.logf("kill -9 nats-server %s, start it again", name)
			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
		} else {
			x.logf("restart nats-server %s", name)
		}
		if err := srv.Restart(); err != nil {
			t.Fatalf("restart nats-server %s: %v", name, err)
		}
	case 4:
		x.logf("kill -9 postgres primary, start it again")
		if err := x.prim.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := x.prim.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	case 5:
		cut := time.Duration(1000+x.rnd.IntN(5000)) * time.Millisecond
		x.logf("cut leafnode %s for %s", r, cut)
		s.top.Proxies[r].Cut()
		x.sleep(cut)
		if err := s.top.Proxies[r].Heal(); err != nil {
			t.Fatalf("heal %s: %v", r, err)
		}
	case 6:
		x.logf("restart apply %s (SIGTERM)", r)
		s.appliers[r].Stop(t)
		x.startApply(t, r, x.applyFl[r])
	}
}

// snapshotAndNewRegion takes a snapshot on demand in the middle of the
// load, then builds region r3 from it.
func (x *torture) snapshotAndNewRegion(t *testing.T) {
	t.Helper()
	x.logf("snapshot on demand, then region r3 built from it")
	// Under this workload's rate of schema changes and TRUNCATEs a
	// snapshot may give up, saying so; a user would run it again.
	for try := 1; ; try++ {
		snap := start(t, "pgjet snapshot", bins.pgjet, "snapshot", "--db", x.regions.src, "--nats", x.regions.top.Hub.ClientURL(), "--name", "src")
		code := snap.Wait(t, 3*time.Minute)
		if code == 0 {
			break
		}
		if try == 3 || !strings.Contains(snap.Output(), "overtaken by a schema change or TRUNCATE") {
			t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(snap.Output(), 4096))
		}
		x.logf("snapshot gave up (overtaken by schema changes), run again")
	}
	x.startApply(t, "r3", nil)
}

// quiescent pauses the workload, heals every link, waits for every
// replica to equal the primary and checks the audit table and sequences.
func (x *torture) quiescent(t *testing.T) {
	t.Helper()
	resume := make(chan struct{})
	select {
	case x.pause <- resume:
		defer close(resume)
	case <-x.workDone:
	}
	s := x.regions
	for r, p := range s.top.Proxies {
		if !p.Healed() {
			if err := p.Heal(); err != nil {
				t.Fatalf("heal %s: %v", r, err)
			}
		}
	}
	began := time.Now()
	ops := queryInt(t, s.src, "SELECT count(*) FROM audit")
	for r, dst := range s.dst {
		if _, ok := s.appliers[r]; !ok {
			continue
		}
		// A mirror resumes after a cut with a backoff of up to tens of
		// seconds; three minutes is far beyond any healthy catch-up.
		t.Logf("quiescent: waiting for region %s to equal the primary", r)
		x.reportItems(t, r, dst)
		waitSame(t, 3*time.Minute, s.src, dst)
		if d := queryInt(t, dst, "SELECT count(*) - count(DISTINCT op) FROM audit"); d != 0 {
			t.Fatalf("region %s: %d duplicated operations in the keyless audit table", r, d)
		}
		waitFor(t, time.Minute, r+"'s sequences to reach the primary's", func() (bool, string) {
			checkDaemons(t)
			var behind []string
			for _, q := range []string{"items_id_seq", "counter_seq"} {
				a := queryInt(t, s.src, "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = $1", q)
				b := queryInt(t, dst, "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = $1", q)
				if b < a {
					behind = append(behind, fmt.Sprintf("%s %d < %d", q, b, a))
				}
			}
			return len(behind) == 0, strings.Join(behind, ", ")
		})
	}
	x.logf("quiescent: %d regions equal the primary (%d operations) after %s", len(s.appliers), ops, time.Since(began).Round(time.Second))
}

// reportItems logs, if the test fails, which items rows region r lacks or
// has in excess: the first clue to what was lost.
func (x *torture) reportItems(t *testing.T, r, dst string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ids := func(url string) map[int64]string {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Logf("connect %s: %v", url, err)
				return nil
			}
			defer conn.Close(ctx)
			rows, _ := conn.Query(ctx, "SELECT id, v || ' n=' || n || ' pad=' || coalesce(length(pad), -1) FROM items")
			m := map[int64]string{}
			for rows.Next() {
				var id int64
				var v string
				_ = rows.Scan(&id, &v)
				m[id] = v
			}
			return m
		}
		a, b := ids(x.regions.src), ids(dst)
		var missing, extra []string
		for id, v := range a {
			if w, ok := b[id]; !ok {
				missing = append(missing, fmt.Sprintf("%d(%s)", id, v))
			} else if w != v {
				missing = append(missing, fmt.Sprintf("%d(%s vs %s)", id, v, w))
			}
		}
		for id, v := range b {
			if _, ok := a[id]; !ok {
				extra = append(extra, fmt.Sprintf("%d(%s)", id, v))
			}
		}
		slices.Sort(missing)
		slices.Sort(extra)
		t.Logf("region %s items: %d missing or different: %v; %d extra: %v", r, len(missing), missing[:min(len(missing), 40)], len(extra), extra[:min(len(extra), 40)])
	})
}

// workload runs random transactions on the primary until ctx ends. Each
// transaction also inserts its operation number into the keyless audit
// table, where a duplicate or a loss shows. Errors from a primary that is
// restarting are retried; a transaction whose commit was cut off may or may
// not have committed, which the comparison with the primary does not mind.
func (x *torture) workload(ctx context.Context, rnd *rand.Rand) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	parts, extras := 1, 0
	for ctx.Err() == nil {
		select {
		case resume := <-x.pause:
			<-resume
		default:
		}
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, x.regions.src)
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			conn = c
		}
		kind, sqls := x.draw(rnd, &parts, &extras)
		if kind == "rename-column" {
			q, err := renameColumn(ctx, conn, rnd)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			sqls = q
		}
		op := x.opSeq.Add(1)
		sqls = append(sqls, fmt.Sprintf("INSERT INTO audit VALUES (%d, '%s')", op, kind))
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, q := range sqls {
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("%s: %w", q, err)
				}
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if conn.IsClosed() || isConnErr(err) {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			x.workErr.Store(fmt.Errorf("operation %d (%s): %w", op, kind, err))
			return
		}
		x.mu.Lock()
		x.counts[kind]++
		x.mu.Unlock()
		time.Sleep(time.Duration(rnd.IntN(30)) * time.Millisecond)
	}
}

// isConnErr reports an error of a connection that the primary's restart
// broke, as opposed to an error of the statement itself.
func isConnErr(err error) bool {
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) {
		// admin_shutdown, crash_shutdown, cannot_connect_now
		code := pe.SQLState()
		return code == "57P01" || code == "57P02" || code == "57P03" || strings.HasPrefix(code, "08")
	}
	return true
}

// renameColumn renames one of evolve's added columns to a free name, or
// does nothing when there is none (DDL in a DO block is not replayed, so
// the choice is made here).
func renameColumn(ctx context.Context, conn *pgx.Conn, rnd *rand.Rand) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'evolve' AND column_name ~ '^c[1-6]$'")
	if err != nil {
		return nil, err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	to := fmt.Sprintf("c%d", 1+rnd.IntN(6))
	if len(cols) == 0 || have[to] {
		return nil, nil
	}
	return []string{fmt.Sprintf("ALTER TABLE evolve RENAME COLUMN %s TO %s", cols[rnd.IntN(len(cols))], to)}, nil
}

// draw picks the next operation: its kind and statements.
func (x *torture) draw(rnd *rand.Rand, parts, extras *int) (string, []string) {
	pick := func() string { return "(SELECT id FROM items ORDER BY random() LIMIT 1)" }
	switch n := rnd.IntN(100); {
	case n < 30:
		return "insert", []string{fmt.Sprintf("INSERT INTO items (v, n) SELECT md5(random()::text), g FROM generate_series(1, %d) g", 1+rnd.IntN(20))}
	case n < 50:
		return "update", []string{fmt.Sprintf("UPDATE items SET n = n + 1, v = v || 'u' WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT %d)", 1+rnd.IntN(10))}
	case n < 60:
		return "delete", []string{fmt.Sprintf("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT %d)", 1+rnd.IntN(5))}
	case n < 66:
		return "pk-change", []string{"UPDATE items SET id = nextval('items_id_seq') WHERE id = " + pick()}
	case n < 70:
		// Far larger than --chunk-bytes: one transaction in many messages.
		rows := 200 + rnd.IntN(500)
		return "multi-chunk", []string{fmt.Sprintf("INSERT INTO items (v, n, pad) SELECT 'big', g, repeat(md5(g::text), %d) FROM generate_series(1, %d) g", 2+rnd.IntN(5), rows),
			fmt.Sprintf("UPDATE items SET pad = NULL WHERE id > currval('items_id_seq') - %d AND n %% 3 = 0", rows)}
	case n < 74:
		return "truncate", []string{"TRUNCATE scratch", fmt.Sprintf("INSERT INTO scratch SELECT g, 's' FROM generate_series(1, %d) g", rnd.IntN(50))}
	case n < 80:
		return "sequence", []string{fmt.Sprintf("SELECT nextval('counter_seq') FROM generate_series(1, %d)", 1+rnd.IntN(5))}
	case n < 84:
		return "evolve-rows", []string{fmt.Sprintf("INSERT INTO evolve (id) VALUES (%d) ON CONFLICT DO NOTHING", 100+rnd.IntN(100000)),
			"UPDATE evolve SET id = id WHERE id IN (SELECT id FROM evolve ORDER BY random() LIMIT 3)"}
	case n < 88:
		return "add-column", []string{fmt.Sprintf("ALTER TABLE evolve ADD COLUMN IF NOT EXISTS c%d int", 1+rnd.IntN(6)),
			"UPDATE evolve SET id = id WHERE id < 20"}
	case n < 90:
		return "drop-column", []string{fmt.Sprintf("ALTER TABLE evolve DROP COLUMN IF EXISTS c%d", 1+rnd.IntN(6))}
	case n < 92:
		// Filled in by renameColumn, which reads the current columns.
		return "rename-column", nil
	case n < 94:
		return "type-change", []string{"ALTER TABLE items ALTER COLUMN n TYPE " + []string{"bigint", "int", "numeric"}[rnd.IntN(3)]}
	case n < 96:
		*extras++
		return "new-table", []string{fmt.Sprintf("CREATE TABLE extra_%d (id int PRIMARY KEY, v text)", *extras),
			fmt.Sprintf("INSERT INTO extra_%d SELECT g, 'x' FROM generate_series(1, 10) g", *extras)}
	case n < 98:
		*parts++
		return "new-partition", []string{fmt.Sprintf("CREATE TABLE events_%d PARTITION OF events FOR VALUES FROM (%d) TO (%d)", *parts, (*parts-1)*1000, *parts*1000),
			fmt.Sprintf("INSERT INTO events SELECT g, %d + g %% 1000, 'e' FROM generate_series(1, 20) g", (*parts-1)*1000)}
	default:
		return "events", []string{fmt.Sprintf("INSERT INTO events SELECT nextval('counter_seq'), %d, 'e' FROM generate_series(1, 5)", rnd.IntN(1000))}
	}
}
