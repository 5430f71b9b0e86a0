package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// skipLSN reads the LSN the applier's error offers to pgjet skip.
var skipLSN = regexp.MustCompile(`pgjet skip --name src --region r1 --lsn ([0-9A-F]+/[0-9A-F]+) `)

// stoppedOn waits for the applier to exit 1 on a transaction the target
// cannot apply, and returns the commit LSN its error names.
func stoppedOn(t *testing.T, app *proc) stream.LSN {
	t.Helper()
	if code := app.Wait(t, 90*time.Second); code != 1 {
		t.Fatalf("pgjet-apply exited %d, want 1 on the transaction the replica refuses:\n%s", code, tail(app.Output(), 4096))
	}
	m := skipLSN.FindStringSubmatch(app.Output())
	if m == nil {
		t.Fatalf("pgjet-apply's error names no pgjet skip --lsn:\n%s", tail(app.Output(), 4096))
	}
	lsn, err := stream.ParseLSN(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// mustSkip runs pgjet skip and fails unless it exits with code and its
// output holds want.
func mustSkip(t *testing.T, c *cluster, lsn string, code int, want string) string {
	t.Helper()
	out, got := pgjetRun(t, "skip", "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1", "--lsn", lsn)
	if got != code || !strings.Contains(out, want) {
		t.Fatalf("pgjet skip --lsn %s exited %d, want %d with %q:\n%s", lsn, got, code, want, out)
	}
	if code != 0 && strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("pgjet skip --lsn %s refused in more than one line:\n%s", lsn, out)
	}
	t.Logf("pgjet skip --lsn %s (exit %d): %s", lsn, got, strings.TrimSpace(out))
	return out
}

// TestSkip_PoisonedTransaction: a transaction the replica cannot apply (a
// CHECK constraint only the replica has) stops the applier, with the
// transactions committed before it applied even though they shared its
// target transaction; pgjet skip refuses any other LSN and, given that
// one, makes the restarted applier pass over exactly it: its messages are
// in the dead-letter stream, a row in pgjet.conflicts records it, and
// everything after it is applied. The same holds for a transaction of
// several messages. The target then lacks only the skipped rows, which
// verify finds; repaired by hand, verify passes.
func TestSkip_PoisonedTransaction(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
	exec1(t, c.dst, "ALTER TABLE t ADD CONSTRAINT v_small CHECK (v < 1000)")
	// Small chunks: a transaction of a few hundred rows spans messages.
	c.capture(t, "--chunk-bytes", "1024")
	app := c.apply(t)
	exec1(t, c.src, "INSERT INTO t SELECT g, g FROM generate_series(1, 20) g")
	waitRows(t, c.dst, "t", 20)
	mustSkip(t, c, "0/1", 1, "runs without an error")
	app.Stop(t)

	// A backlog: the transaction before the poisoned one is grouped with it.
	exec1(t, c.src, "INSERT INTO t VALUES (21, 21)", "INSERT INTO t VALUES (22, 5000)", "INSERT INTO t VALUES (23, 23)")
	c.waitCaptured(t)
	app = start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	lsn := stoppedOn(t, app)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM t WHERE id = 21"); n != 1 {
		t.Errorf("the transaction before the poisoned one is not applied (%d rows of id 21): the position stops before the group, not right before the transaction", n)
	}
	if !strings.Contains(app.Output(), "applying the transactions before it one at a time") {
		t.Errorf("the applier did not isolate the failing transaction:\n%s", tail(app.Output(), 4096))
	}

	mustSkip(t, c, "0/1", 1, "is applied already")
	mustSkip(t, c, (lsn + 1).String(), 1, "is not the one the applier of region r1 applies next: that is "+lsn.String())
	mustSkip(t, c, lsn.String(), 0, "recorded: the applier of source src in region r1 skips transaction "+lsn.String())
	app = c.apply(t)
	waitRows(t, c.dst, "t", 22)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM t WHERE id IN (21, 23)"); n != 2 {
		t.Errorf("%d of the rows around the skipped transaction applied, want 2", n)
	}
	checkSkipped(t, c, lsn, 1)

	// A poisoned transaction of several messages, met by a running applier.
	exec1(t, c.src, "INSERT INTO t SELECT g, CASE WHEN g = 250 THEN 5000 ELSE g END FROM generate_series(100, 399) g", "INSERT INTO t VALUES (500, 500)")
	lsn2 := stoppedOn(t, app)
	mustSkip(t, c, lsn2.String(), 0, "recorded")
	app = c.apply(t)
	waitFor(t, 60*time.Second, "the row after the second skipped transaction", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM t WHERE id = 500")
		return n == 1, fmt.Sprintf("%d rows", n)
	})
	msgs := checkSkipped(t, c, lsn2, 2)
	if msgs < 3 {
		t.Errorf("the second skipped transaction took %d messages, want several (--chunk-bytes 1024)", msgs)
	}

	// The target lacks exactly the skipped rows.
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "1000")
	if code != 1 || !strings.Contains(out, "public.t: 1 of 1 ranges differ: all rows: 324 vs 23 rows") {
		t.Errorf("pgjet verify exited %d, want 1 naming the skipped rows:\n%s%s", code, out, errOut)
	}
	if got := queryString(t, c.dst, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id < 100 OR id > 399"); got != "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,23,500" {
		t.Errorf("target rows outside the second skipped transaction: %s", got)
	}
	exec1(t, c.dst, "ALTER TABLE t DROP CONSTRAINT v_small", "INSERT INTO t VALUES (22, 5000)",
		"INSERT INTO t SELECT g, CASE WHEN g = 250 THEN 5000 ELSE g END FROM generate_series(100, 399) g")
	exec1(t, c.src, "UPDATE t SET v = v + 1 WHERE id IN (22, 250, 500)")
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify after the repair by hand exited %d, want 0:\n%s%s", code, out, errOut)
	}
}

// checkSkipped checks what the skip of transaction lsn left: no request,
// one pgjet.conflicts row, and its messages (n skips so far) in the
// dead-letter stream, each naming the skip. It returns how many messages
// the skipped transaction took.
func checkSkipped(t *testing.T, c *cluster, lsn stream.LSN, n int) int {
	t.Helper()
	ctx := context.Background()
	if got := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.skip"); got != 0 {
		t.Errorf("%d skip requests left after the skip", got)
	}
	if got := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts WHERE kind = 'skipped' AND decision = 'skip' AND commit_lsn = $1::pg_lsn AND table_name = 'public.t' AND remote_origin = 'src'", lsn.String()); got != 1 {
		t.Errorf("%d pgjet.conflicts rows record the skip of %s, want 1", got, lsn)
	}
	msgs := int(queryInt(t, c.dst, "SELECT (remote_row->>'messages')::int FROM pgjet.conflicts WHERE kind = 'skipped' AND commit_lsn = $1::pg_lsn", lsn.String()))
	dlq, err := natsJS(t, c.nats.ClientURL()).Stream(ctx, apply.DeadLetterStream("src", "r1"))
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil || len(envs) != 1 {
			t.Fatalf("dead letter %d: %d envelopes, %v; want the skipped transaction's own", seq, len(envs), err)
		}
		if envs[0].CommitLSN != lsn {
			continue
		}
		found++
		if e := m.Header.Get(apply.HeaderDLQError); !strings.Contains(e, "pgjet skip") {
			t.Errorf("dead letter %d says %q, want the skip", seq, e)
		}
		if _, err := strconv.ParseUint(m.Header.Get(apply.HeaderDLQSequence), 10, 64); err != nil {
			t.Errorf("dead letter %d names no stream sequence", seq)
		}
	}
	if found == 0 || found != msgs {
		t.Errorf("dead-letter stream holds %d messages of transaction %s, pgjet.conflicts says %d", found, lsn, msgs)
	}
	if got := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts WHERE kind = 'skipped'"); got != int64(n) {
		t.Errorf("%d skips recorded, want %d", got, n)
	}
	return found
}
