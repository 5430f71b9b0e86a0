package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/apply"
)

// corruptReplica changes the replica behind the applier's back: rows
// updated, deleted and inserted by hand, in a table with a generated
// column and in one with a composite text key whose values hold quotes
// and backslashes. It returns how many rows of each it changed.
func corruptReplica(t *testing.T, url string, round int) (updated, deleted, inserted int) {
	t.Helper()
	base := round * 100
	exec1(t, url,
		fmt.Sprintf("UPDATE items SET v = 'corrupt' WHERE id IN (%d, %d)", base+5, base+1505),
		fmt.Sprintf("DELETE FROM items WHERE id IN (%d, %d, %d)", base+10, base+11, base+1990),
		fmt.Sprintf("INSERT INTO items (id, v, n) VALUES (%d, 'extra', 1), (%d, 'extra', 2)", -1-round, 100000+round),
		fmt.Sprintf(`UPDATE pairs SET v = -1 WHERE a = %d`, base+7),
		fmt.Sprintf(`DELETE FROM pairs WHERE a = %d`, base+8),
		fmt.Sprintf(`INSERT INTO pairs VALUES (%d, 'x''y\z', 0)`, 50000+round))
	return 3, 4, 3
}

// TestVerify_Repair: verify --repair rewrites, from the source, the rows a
// replica lost, gained or changed by hand, records each in pgjet.conflicts
// (kind repair) and writes them under the replication origin of repairs,
// then verify passes, and the applier goes on applying. Run again while
// the source keeps writing the same key ranges (the applier waits on the
// repair's locks), the replica still ends equal to the source.
func TestVerify_Repair(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t,
		"CREATE TABLE items (id int PRIMARY KEY, v text, n int, twice int GENERATED ALWAYS AS (n * 2) STORED)",
		`CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (b, a))`)
	c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, "INSERT INTO items (id, v, n) SELECT g, 'v' || g, g FROM generate_series(1, 2000) g",
		`INSERT INTO pairs SELECT g, 'k''' || (g % 37) || '\b', g FROM generate_series(1, 1000) g`)
	waitSame(t, 60*time.Second, c.src, c.dst)

	updated, deleted, inserted := corruptReplica(t, c.dst, 0)
	if code, out, _ := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "300"); code != 1 {
		t.Fatalf("pgjet verify of the corrupted replica exited %d, want 1:\n%s", code, out)
	}
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "300", "--repair")
	t.Logf("pgjet verify --repair:\n%s%s", out, errOut)
	if code != 0 {
		t.Fatalf("pgjet verify --repair exited %d, want 0", code)
	}
	for _, want := range []string{"repair: public.items: 3 inserted, 2 updated, 2 deleted", "repair: public.pairs: 1 inserted, 1 updated, 1 deleted", "all 2 tables identical"} {
		if !strings.Contains(out, want) {
			t.Errorf("pgjet verify --repair output lacks %q", want)
		}
	}
	for _, d := range []struct {
		decision string
		n        int
	}{{"update", updated}, {"delete", inserted}, {"insert", deleted}} {
		if got := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts WHERE kind = $1 AND decision = $2 AND source = 'src'", apply.KindRepair, d.decision); got != int64(d.n) {
			t.Errorf("%d pgjet.conflicts rows of kind repair, decision %s; want %d", got, d.decision, d.n)
		}
	}
	if got := queryString(t, c.dst, "SELECT local_row->>'v' || ' -> ' || (remote_row->>'v') FROM pgjet.conflicts WHERE kind = 'repair' AND key = '{\"id\": 5}'"); got != "corrupt -> v5" {
		t.Errorf("the repair of items 5 is recorded as %q, want corrupt -> v5", got)
	}
	// Written under the repairs' origin: a capture of the replica leaves
	// them out, and the applier counts them as the source's.
	if got := queryString(t, c.dst, "SELECT r.roname FROM items i, pg_xact_commit_timestamp_origin(i.xmin) o JOIN pg_replication_origin r ON r.roident = o.roident WHERE i.id = 10"); got != perDatabaseOrigin(t, c.dst, "src")+".repair" {
		t.Errorf("the row repaired was written under origin %q, want %q", got, perDatabaseOrigin(t, c.dst, "src")+".repair")
	}
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify after the repair exited %d, want 0:\n%s%s", code, out, errOut)
	}

	// Again, while the source keeps changing rows of the ranges repaired.
	corruptReplica(t, c.dst, 1)
	stop := writeLoad(t, c.src, func(ctx context.Context, conn *pgx.Conn, _ int) {
		id := 100 + rand.IntN(1900)
		if id%100 == 5 || id%100 == 10 || id%100 == 11 || id%100 == 90 {
			return // the corrupted rows stay as the replica has them
		}
		_, _ = conn.Exec(ctx, "UPDATE items SET n = n + 1, v = 'w' || n WHERE id = $1", id)
	})
	_, out, errOut = runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "300", "--repair")
	stop()
	t.Logf("pgjet verify --repair under load:\n%s%s", out, errOut)
	if !strings.Contains(out, "repair: public.items: ") || !strings.Contains(out, "repair: public.pairs: 1 inserted, 1 updated, 1 deleted") {
		t.Errorf("pgjet verify --repair under load repaired nothing")
	}
	// The applier goes on applying.
	exec1(t, c.src, "INSERT INTO items (id, v, n) VALUES (3000, 'after', 1)", "UPDATE items SET v = 'after' WHERE id IN (5, 10, 105)",
		"DELETE FROM pairs WHERE a = 9")
	waitSame(t, 60*time.Second, c.src, c.dst)
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify after the repair under load exited %d, want 0:\n%s%s", code, out, errOut)
	}

	// The repair locks a range's target rows before it reads the source's:
	// a row the applier writes meanwhile (a session stands in for it here,
	// holding the row while the source commits the change it applies) is
	// read from the source after that change, so the repair never puts an
	// older value back over the applier's.
	app.Stop(t)
	exec1(t, c.dst, "UPDATE items SET v = 'corrupt' WHERE id = 1200")
	tx := openTx(t, c.dst, "UPDATE items SET v = 'newer' WHERE id = 1200")
	rp := start(t, "pgjet verify --repair", bins.pgjet, "verify", "--source", c.src, "--target", c.dst, "--chunk-rows", "300", "--wait-lsn=false", "--repair")
	waitFor(t, 90*time.Second, "the repair to wait for the row the applier holds", func() (bool, string) {
		n := queryInt(t, c.dst, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO pg_temp.pgjet_locked%'")
		return n == 1, fmt.Sprintf("%d waiting; pgjet verify: %s", n, rp.Output())
	})
	exec1(t, c.src, "UPDATE items SET v = 'newer' WHERE id = 1200")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if code := rp.Wait(t, 60*time.Second); code != 0 {
		t.Errorf("pgjet verify --repair beside the held row exited %d, want 0:\n%s", code, rp.Output())
	}
	if got := queryString(t, c.dst, "SELECT v FROM items WHERE id = 1200"); got != "newer" {
		t.Errorf("items 1200 is %q after the repair, want the applier's newer value", got)
	}
	// Rows a repair wrote are the source's: under keep-local, the source's
	// changes to them apply (items 110 was inserted by the second repair).
	c.apply(t, "--conflict", "keep-local")
	exec1(t, c.src, "UPDATE items SET v = 'source again' WHERE id = 110")
	if code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst); code != 0 {
		t.Errorf("pgjet verify at the end exited %d, want 0:\n%s%s", code, out, errOut)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts WHERE kind = 'update_changed' AND key = '{\"id\": 110}'"); n != 0 {
		t.Errorf("keep-local took the repaired row for a local one (%d update_changed conflicts)", n)
	}
}

// openTx begins a transaction on the database at url and runs sql in it;
// the test commits or rolls it back, and its connection closes at the
// test's end.
func openTx(t *testing.T, url, sql string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	return tx
}

// writeLoad runs write on a connection to the database at url, with the
// number of the call, every few milliseconds until stop is called; stop
// waits for the last call to end.
func writeLoad(t *testing.T, url string, write func(ctx context.Context, conn *pgx.Conn, i int)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		for i := 0; ctx.Err() == nil; i++ {
			write(ctx, conn, i)
			time.Sleep(5 * time.Millisecond) // a steady load, not a synchronisation
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
