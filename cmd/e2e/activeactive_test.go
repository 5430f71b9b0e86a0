package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// aaRegion is one region of an active-active pair: its database is
// captured as source name and applies the other region's source.
type aaRegion struct {
	name    string
	url     string
	capture *proc
	apply   *proc
}

// newActiveActive starts two regions a and b, each with its own Postgres
// holding schemaSQL, its own capture (--name a, --name b) and an applier of
// the other region's stream, all on one NATS server. Capture runs without
// heartbeats, so the streams hold transactions only.
func newActiveActive(t *testing.T, schemaSQL string, applyArgs ...string) (a, b *aaRegion, js jetstream.JetStream) {
	t.Helper()
	return newActiveActiveCapture(t, schemaSQL, []string{"--heartbeat", "0"}, applyArgs...)
}

// newActiveActiveCapture is newActiveActive with these capture flags.
func newActiveActiveCapture(t *testing.T, schemaSQL string, captureArgs []string, applyArgs ...string) (a, b *aaRegion, js jetstream.JetStream) {
	t.Helper()
	n := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})
	a = &aaRegion{name: "a", url: local.NewTestPostgres(t, local.PostgresOptions{Name: "region-a"}).URL("postgres")}
	b = &aaRegion{name: "b", url: local.NewTestPostgres(t, local.PostgresOptions{Name: "region-b"}).URL("postgres")}
	for _, r := range []*aaRegion{a, b} {
		exec1(t, r.url, schemaSQL)
		args := append([]string{"--db", r.url, "--nats", n.ClientURL(), "--name", r.name}, captureArgs...)
		r.capture = start(t, "pgjet-capture "+r.name, bins.capture, args...)
		r.capture.waitLog(t, "capture started")
	}
	for _, pair := range [][2]*aaRegion{{a, b}, {b, a}} {
		here, there := pair[0], pair[1]
		args := append([]string{"--db", here.url, "--nats", n.ClientURL(), "--name", there.name, "--region", here.name, "--local-name", here.name}, applyArgs...)
		here.apply = start(t, "pgjet-apply "+here.name, bins.apply, args...)
		here.apply.waitLog(t, "apply started")
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return a, b, js
}

func streamLastSeq(t *testing.T, js jetstream.JetStream, source string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.StreamName(source))
	if err != nil {
		t.Fatalf("stream of %s: %v", source, err)
	}
	return st.CachedInfo().State.LastSeq
}

// streamTxnMsgs counts the transaction messages of source's stream: not
// its heartbeats, one of which capture writes to confirm the slot past the
// last changes an applier made in its database.
func streamTxnMsgs(t *testing.T, js jetstream.JetStream, source string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.StreamName(source))
	if err != nil {
		t.Fatalf("stream of %s: %v", source, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(stream.TxnSubject(source)))
	if err != nil {
		t.Fatalf("stream of %s: %v", source, err)
	}
	return info.State.Subjects[stream.TxnSubject(source)]
}

// TestActiveActive_LastWriterWins: two regions update the same rows at
// once for ten seconds under last-writer-wins. Afterwards both databases
// are identical, conflicts were recorded, and nothing loops: once the
// writes stop, neither stream grows and neither database changes.
func TestActiveActive_LastWriterWins(t *testing.T) {
	t.Parallel()
	a, b, js := newActiveActive(t, "CREATE TABLE item (id int PRIMARY KEY, v int NOT NULL, writer text NOT NULL, n bigint NOT NULL DEFAULT 0)",
		"--conflict", "last-writer-wins")
	// Seeded in a; b gets the rows through the pipeline.
	exec1(t, a.url, "INSERT INTO item SELECT g, 0, 'seed' FROM generate_series(1, 50) g")
	waitSame(t, 60*time.Second, a.url, b.url)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	writes := map[string]int{}
	var mu sync.Mutex
	for i, r := range []*aaRegion{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), r.url)
			if err != nil {
				t.Errorf("connect %s: %v", r.name, err)
				return
			}
			defer conn.Close(context.Background())
			rnd := rand.New(rand.NewPCG(uint64(i), 42))
			next := 1000*(i+1) + 1 // rows of this region alone
			n := 0
			for ctx.Err() == nil {
				var err error
				switch k := rnd.IntN(10); {
				case k == 0: // a row only this region writes
					_, err = conn.Exec(context.Background(), "INSERT INTO item VALUES ($1, $2, $3)", next, rnd.IntN(1000), r.name)
					next++
				case k == 1: // two shared rows in one transaction, in key order
					id := 1 + rnd.IntN(49)
					_, err = conn.Exec(context.Background(), "UPDATE item SET v = $1, writer = $2, n = n + 1 WHERE id IN ($3, $4)", rnd.IntN(1000), r.name, id, id+1)
				default:
					_, err = conn.Exec(context.Background(), "UPDATE item SET v = $1, writer = $2, n = n + 1 WHERE id = $3", rnd.IntN(1000), r.name, 1+rnd.IntN(50))
				}
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
					// The applier writes the same rows: Postgres breaks a
					// deadlock by aborting one side, and an application
					// retries, as pgjet does for its own side.
					continue
				}
				if err != nil {
					t.Errorf("write in %s: %v", r.name, err)
					return
				}
				n++
				time.Sleep(time.Duration(2+rnd.IntN(4)) * time.Millisecond)
			}
			mu.Lock()
			writes[r.name] = n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("writes: %v", writes)

	waitSame(t, 120*time.Second, a.url, b.url)
	// Caught up: each applier stands at its stream's last message.
	for _, r := range []*aaRegion{a, b} {
		other := map[string]string{"a": "b", "b": "a"}[r.name]
		waitFor(t, 60*time.Second, r.name+" to apply all of "+other, func() (bool, string) {
			checkDaemons(t)
			last := streamLastSeq(t, js, other)
			got := queryInt(t, r.url, "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied WHERE source = $1", other)
			return uint64(got) == last, fmt.Sprintf("applied %d of %d", got, last)
		})
	}

	// Still: no stream grows, no database changes.
	seqA, seqB := streamTxnMsgs(t, js, "a"), streamTxnMsgs(t, js, "b")
	digA, err := local.Digest(context.Background(), a.url)
	if err != nil {
		t.Fatal(err)
	}
	// Each capture has been sent everything its region's applier wrote
	// (the applier's last commit, which its replication origin records):
	// had it published any of that, its stream would show it by now. The
	// walsender's sent position is the mark, not the slot: a transaction
	// that only moved pgjet's own tables is confirmed only by the next
	// message, and with the writes stopped none comes.
	for _, r := range []*aaRegion{a, b} {
		other := map[string]string{"a": "b", "b": "a"}[r.name]
		lsn := queryString(t, r.url, `SELECT s.local_lsn::text FROM pg_replication_origin_status s
			JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = $1`, perDatabaseOrigin(t, r.url, other))
		if lsn == "" {
			t.Fatalf("region %s has no replication origin %s: its applier wrote without one", r.name, perDatabaseOrigin(t, r.url, other))
		}
		waitFor(t, 60*time.Second, "capture of "+r.name+" to be sent "+lsn, func() (bool, string) {
			checkDaemons(t)
			n := queryInt(t, r.url, `SELECT count(*) FROM pg_stat_replication WHERE application_name LIKE 'pgjet-capture%' AND sent_lsn >= $1::pg_lsn`, lsn)
			return n > 0, "walsender not past it"
		})
	}
	checkDaemons(t)
	if got := streamTxnMsgs(t, js, "a"); got != seqA {
		t.Errorf("transactions in the stream of a grew from %d to %d after the writes stopped: applied changes loop", seqA, got)
	}
	if got := streamTxnMsgs(t, js, "b"); got != seqB {
		t.Errorf("transactions in the stream of b grew from %d to %d after the writes stopped: applied changes loop", seqB, got)
	}
	for _, r := range []*aaRegion{a, b} {
		d, err := local.Digest(context.Background(), r.url)
		if err != nil {
			t.Fatal(err)
		}
		if diff := local.DiffDigests(digA, d); len(diff) > 0 {
			t.Errorf("%s changed after the writes stopped: %s", r.name, strings.Join(diff, "; "))
		}
	}
	// Each stream holds only its own region's transactions: one per
	// write (and the seed in a), none written by an applier.
	for name, want := range map[string]int{"a": writes["a"] + 1, "b": writes["b"]} {
		txns, origins := streamTxns(t, js, name)
		if txns != want || origins != 0 {
			t.Errorf("stream of %s holds %d transactions, %d of them under a replication origin; want %d local ones only", name, txns, origins, want)
		}
	}

	var total int64
	for _, r := range []*aaRegion{a, b} {
		n := queryInt(t, r.url, "SELECT count(*) FROM pgjet.conflicts WHERE kind = 'update_changed'")
		skipped := queryInt(t, r.url, "SELECT count(*) FROM pgjet.conflicts WHERE kind = 'update_changed' AND decision = 'skip'")
		bad := queryInt(t, r.url, "SELECT count(*) FROM pgjet.conflicts WHERE remote_origin IS NULL OR remote_commit_time IS NULL OR local_origin IS NULL OR local_commit_time IS NULL OR decision NOT IN ('apply_remote', 'skip')")
		t.Logf("region %s: %d update_changed conflicts, %d skipped", r.name, n, skipped)
		if bad > 0 {
			t.Errorf("region %s: %d conflict records without both origins and commit times, or with another decision", r.name, bad)
		}
		total += skipped
	}
	if total == 0 {
		t.Errorf("no region skipped an older concurrent update: the writes did not collide, or last-writer-wins was not applied")
	}
	for _, r := range []*aaRegion{a, b} {
		r.apply.Stop(t)
		r.capture.Stop(t)
	}
}

// streamTxns decodes every message of source's stream and counts the
// transactions in it, and those written under a replication origin.
func streamTxns(t *testing.T, js jetstream.JetStream, source string) (txns, origins int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.StreamName(source))
	if err != nil {
		t.Fatalf("stream of %s: %v", source, err)
	}
	for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d of stream %s: %v", seq, source, err)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil {
			t.Fatalf("decode message %d of stream %s: %v", seq, source, err)
		}
		for _, e := range envs {
			if e.Kind == stream.KindTxn && e.Last() {
				txns++
				if e.Origin != "" {
					origins++
				}
			}
		}
	}
	return txns, origins
}

// conflictRecord is a row of pgjet.conflicts as the tests read it.
type conflictRecord struct {
	Kind       string          `json:"kind"`
	Table      string          `json:"table_name"`
	Key        json.RawMessage `json:"key"`
	Local      json.RawMessage `json:"local_row"`
	Remote     json.RawMessage `json:"remote_row"`
	Decision   string          `json:"decision"`
	LOrigin    *string         `json:"local_origin"`
	LTime      *string         `json:"local_commit_time"`
	ROrigin    *string         `json:"remote_origin"`
	RTime      *string         `json:"remote_commit_time"`
	CommitLSN  string          `json:"commit_lsn"`
	SourceName string          `json:"source"`
}

func conflicts(t *testing.T, url string) []conflictRecord {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var js []byte
	if err := conn.QueryRow(ctx, "SELECT coalesce(jsonb_agg(c ORDER BY id), '[]') FROM pgjet.conflicts c").Scan(&js); err != nil {
		t.Fatal(err)
	}
	var out []conflictRecord
	if err := json.Unmarshal(js, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkConflicts compares records with want (kind, decision, key, local
// writer; "" matches anything) and checks the incoming side is named.
func checkConflicts(t *testing.T, got []conflictRecord, want [][4]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("conflicts = %+v, want %v", got, want)
	}
	for i, w := range want {
		g := got[i]
		lo := ""
		if g.LOrigin != nil {
			lo = *g.LOrigin
		}
		if g.Kind != w[0] || g.Decision != w[1] || string(g.Key) != w[2] || w[3] != "" && lo != w[3] {
			t.Errorf("conflict %d = %s %s key %s local origin %q, want %v", i, g.Kind, g.Decision, g.Key, lo, w)
		}
		if w[3] != "" && g.LTime == nil {
			t.Errorf("conflict %d has no local commit time", i)
		}
		if g.ROrigin == nil || *g.ROrigin != "src" || g.RTime == nil || g.SourceName != "src" {
			t.Errorf("conflict %d does not name the incoming change's source and commit time: %+v", i, g)
		}
	}
}

// TestConflict_KeepLocal: rows changed on the replica stay as they are
// there; the source's changes to them are skipped and recorded, the rest
// applies.
func TestConflict_KeepLocal(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int)")
	capt := c.capture(t)
	app := c.apply(t, "--conflict", "keep-local", "--local-name", "replica")
	// Seeded through the pipeline: the replica's rows are the applier's.
	exec1(t, c.src, "INSERT INTO acct VALUES (1, 'one', 10), (3, 'three', 30)")
	waitSame(t, 60*time.Second, c.src, c.dst)
	exec1(t, c.dst,
		"UPDATE acct SET balance = -1 WHERE id = 1",    // changed here
		"INSERT INTO acct VALUES (2, 'local two', -2)", // written here
	)
	exec1(t, c.src,
		"UPDATE acct SET balance = 11 WHERE id = 1",
		"INSERT INTO acct VALUES (2, 'two', 20)",
		"UPDATE acct SET balance = 31 WHERE id = 3", // no conflict: applies
		"INSERT INTO acct VALUES (4, 'four', 40)",
	)
	waitFor(t, 60*time.Second, "the source's changes to apply", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM acct WHERE id = 4")
		return n == 1, "row 4 not there yet"
	})
	var rows string
	if err := pgxQueryRow(t, c.dst, "SELECT string_agg(concat_ws(' ', id, owner, balance), '; ' ORDER BY id) FROM acct", &rows); err != nil {
		t.Fatal(err)
	}
	if want := "1 one -1; 2 local two -2; 3 three 31; 4 four 40"; rows != want {
		t.Errorf("replica rows = %q, want %q", rows, want)
	}
	checkConflicts(t, conflicts(t, c.dst), [][4]string{
		{"update_changed", "skip", `{"id": 1}`, "replica"},
		{"insert_exists", "skip", `{"id": 2}`, "replica"},
	})
	capt.Stop(t)
	app.Stop(t)
}

// lastLine is the last line of out that starts with prefix.
func lastLine(out, prefix string) string {
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			line = l
		}
	}
	return line
}

func pgxQueryRow(t *testing.T, url, sql string, dst ...any) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dst...)
}

// TestConflict_Error: a collision stops the applier with exit status 1 and
// a message naming table, key, LSN and stream sequence; nothing of that
// source transaction is applied, the conflict is recorded, and a restart
// with another policy for the table goes on from there.
func TestConflict_Error(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int)", "CREATE TABLE other (id int PRIMARY KEY)")
	capt := c.capture(t)
	app := c.apply(t, "--conflict", "error")
	exec1(t, c.src, "INSERT INTO acct VALUES (1, 'one', 10)", "INSERT INTO other VALUES (1)") // no conflict: applies
	waitSame(t, 60*time.Second, c.src, c.dst)
	exec1(t, c.dst, "UPDATE acct SET balance = -1 WHERE id = 1")
	exec1(t, c.src, "BEGIN; INSERT INTO other VALUES (2); UPDATE acct SET balance = 11 WHERE id = 1; COMMIT")
	expectFatal(t, app, "update_changed on public.acct key {\"id\": 1} at LSN ", "stream seq ", "conflict policy of the table is error", "--conflict-table public.acct=POLICY")
	t.Logf("pgjet-apply stopped: %s", lastLine(app.Output(), "pgjet-apply: "))

	if n := queryInt(t, c.dst, "SELECT count(*) FROM other WHERE id = 2"); n != 0 {
		t.Errorf("the transaction of the conflict was partly applied: other has row 2")
	}
	if n := queryInt(t, c.dst, "SELECT balance FROM acct WHERE id = 1"); n != -1 {
		t.Errorf("the conflicting row was changed to %d", n)
	}
	got := conflicts(t, c.dst)
	checkConflicts(t, got, [][4]string{{"update_changed", "error", `{"id": 1}`, "(local)"}})
	if !strings.Contains(app.Output(), "LSN "+got[0].CommitLSN+" ") {
		t.Errorf("the message does not name the commit LSN %s of the conflict:\n%s", got[0].CommitLSN, app.Output())
	}

	// The operator decides: the source wins for this table.
	app = c.apply(t, "--conflict", "error", "--conflict-table", "public.acct=source-wins")
	waitSame(t, 60*time.Second, c.src, c.dst)
	if n := len(conflicts(t, c.dst)); n != 1 {
		t.Errorf("conflicts = %d after the restart, want the 1 recorded before", n)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestConflict_SourceWinsOrigins: with replication origins, source-wins
// applies over rows changed locally without calling it a conflict, records
// an insert over a local row with both writers and commit times, and stops
// on a unique violation it cannot resolve without deleting a row of
// another key.
func TestConflict_SourceWinsOrigins(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int, email text UNIQUE)")
	exec1(t, c.src, "INSERT INTO acct VALUES (1, 'one', 10, 'one@x')")
	exec1(t, c.dst, "INSERT INTO acct VALUES (1, 'one', 10, 'one@x')")
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.dst, "UPDATE acct SET balance = -1 WHERE id = 1", "INSERT INTO acct VALUES (2, 'local', -2, 'local@x')")
	exec1(t, c.src, "UPDATE acct SET balance = 11 WHERE id = 1", "INSERT INTO acct VALUES (2, 'two', 20, 'two@x')")
	waitSame(t, 60*time.Second, c.src, c.dst)
	got := conflicts(t, c.dst)
	checkConflicts(t, got, [][4]string{{"insert_exists", "apply_remote", `{"id": 2}`, "(local)"}})
	origin := perDatabaseOrigin(t, c.dst, "src")
	if o := queryInt(t, c.dst, "SELECT count(*) FROM pg_replication_origin WHERE roname = $1", origin); o != 1 {
		t.Errorf("replication origin %s missing on the replica", origin)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM acct a, pg_xact_commit_timestamp_origin(a.xmin) o JOIN pg_replication_origin r ON r.roident = o.roident WHERE r.roname = $1", origin); n != 2 {
		t.Errorf("%d applied rows carry the applier's origin, want 2", n)
	}
	// The commit timestamp of an applied row is the source's commit time.
	var srcTime, dstTime time.Time
	if err := pgxQueryRow(t, c.src, "SELECT pg_xact_commit_timestamp(xmin) FROM acct WHERE id = 2", &srcTime); err != nil {
		t.Fatal(err)
	}
	if err := pgxQueryRow(t, c.dst, "SELECT pg_xact_commit_timestamp(xmin) FROM acct WHERE id = 2", &dstTime); err != nil {
		t.Fatal(err)
	}
	if !srcTime.Equal(dstTime) {
		t.Errorf("commit time of the applied row = %s, want the source's %s", dstTime, srcTime)
	}

	exec1(t, c.dst, "INSERT INTO acct VALUES (9, 'local', 0, 'three@x')")
	exec1(t, c.src, "INSERT INTO acct VALUES (3, 'three', 30, 'three@x')")
	expectFatal(t, app, "unique_violation: insert of public.acct", "acct_email_key", "three@x")
	capt.Stop(t)
}

// TestApply_LastWriterWinsNeedsOrigins: a role that may not use
// replication origins cannot apply under last-writer-wins.
func TestApply_LastWriterWinsNeedsOrigins(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.dst, "CREATE ROLE app LOGIN", "GRANT CREATE ON DATABASE postgres TO app")
	u := asUser(t, c.dst, "app")
	app := start(t, "pgjet-apply", bins.apply, "--db", u, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1",
		"--conflict", "last-writer-wins", "--local-name", "here")
	expectFatal(t, app, "last-writer-wins needs the replication origin \"pgjet_src.", "GRANT EXECUTE ON FUNCTION pg_replication_origin")
}

// TestApply_KeepLocalAndErrorNeedOrigins: keep-local and error tell rows
// written here from the source's by the replication origin the applier
// writes under; a role that may not use origins is refused at the start,
// in one line naming the privilege, instead of silently applying over
// rows changed here as source-wins would.
func TestApply_KeepLocalAndErrorNeedOrigins(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.dst, "CREATE ROLE app LOGIN", "GRANT CREATE ON DATABASE postgres TO app")
	u := asUser(t, c.dst, "app")
	for _, flags := range [][]string{{"--conflict", "keep-local"}, {"--conflict", "error"}, {"--conflict-table", "public.acct=keep-local"}} {
		t.Run(strings.Join(flags, "="), func(t *testing.T) {
			policy := flags[1][strings.Index(flags[1], "=")+1:]
			app := start(t, "pgjet-apply", bins.apply, append([]string{"--db", u, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1"}, flags...)...)
			expectFatal(t, app, "--conflict "+policy+" needs the replication origin \"pgjet_src.", "GRANT EXECUTE ON FUNCTION pg_replication_origin")
		})
	}
}

// asUser is the database URL dbURL with the role user instead (the test
// clusters trust local connections).
func asUser(t *testing.T, dbURL, user string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}
