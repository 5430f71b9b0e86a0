package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
)

// TestApply_SourceWins: a replica that diverged (rows written or deleted
// locally) converges to the primary, and each collision is recorded in
// pgjet.conflicts with both row images.
func TestApply_SourceWins(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int)")
	exec1(t, c.src, "INSERT INTO acct VALUES (2, 'two', 20), (3, 'three', 30)")
	exec1(t, c.dst, "INSERT INTO acct VALUES (1, 'local', -1)") // collides with the insert below
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src,
		"INSERT INTO acct VALUES (1, 'one', 10)",    // row already on the replica
		"UPDATE acct SET balance = 21 WHERE id = 2", // row missing on the replica
		"DELETE FROM acct WHERE id = 3",             // row missing on the replica
	)
	waitSame(t, 60*time.Second, c.src, c.dst)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT kind, table_name, decision, coalesce(local_row::text, ''), coalesce(remote_row::text, ''), key::text FROM pgjet.conflicts ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type conflict struct{ kind, table, decision, local, remote, key string }
	var got []conflict
	for rows.Next() {
		var c conflict
		if err := rows.Scan(&c.kind, &c.table, &c.decision, &c.local, &c.remote, &c.key); err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	want := []conflict{
		{"insert_exists", "public.acct", "apply_remote", `{"id": 1, "owner": "local", "balance": -1}`, `{"id": 1, "owner": "one", "balance": 10}`, `{"id": 1}`},
		{"update_missing", "public.acct", "apply_remote", "", `{"id": 2, "owner": "two", "balance": 21}`, `{"id": 2}`},
		{"delete_missing", "public.acct", "skip", "", "", `{"id": 3}`},
	}
	if len(got) != len(want) {
		t.Fatalf("conflicts = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("conflict %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestActiveActive_KeyChange: under last-writer-wins, two regions change
// the same rows while neither applies the other (appliers stopped), one of
// them changing primary keys; b writes last. Once both have applied
// everything, the two databases are equal, and the collisions are
// recorded. A key change is applied as a delete of the old key (which wins
// over a concurrent update) and an insert of the new row (newer wins):
//   - 1: a changes the key to 2, b updates v (newer): the key change
//     applies in b, and b's update misses in a;
//   - 11: a changes the key to 12, b deletes 11: both keep 12;
//   - 21: a changes the key to 22, b to 23: both keep both;
//   - 31: both change the key to 32: b's newer row wins in both;
//   - 41: a updates v, b changes the key to 42 (newer);
//   - 51: a changes the key to 52, b inserts a newer 52: b's 52 wins;
//   - 61: a inserts 62, b changes the key 61 to 62 (newer): b's wins.
func TestActiveActive_KeyChange(t *testing.T) {
	t.Parallel()
	a, b, js := newActiveActive(t, "CREATE TABLE item (id int PRIMARY KEY, v text NOT NULL)", "--conflict", "last-writer-wins")
	exec1(t, a.url, "INSERT INTO item SELECT g, 'seed' FROM unnest(ARRAY[1, 11, 21, 31, 41, 51, 61]) g")
	waitSame(t, 60*time.Second, a.url, b.url)
	for _, r := range []*aaRegion{a, b} {
		r.apply.Stop(t)
	}
	exec1(t, a.url,
		"UPDATE item SET id = 2, v = 'a' WHERE id = 1",
		"UPDATE item SET id = 12 WHERE id = 11",
		"UPDATE item SET id = 22 WHERE id = 21",
		"UPDATE item SET id = 32, v = 'a' WHERE id = 31",
		"UPDATE item SET v = 'a' WHERE id = 41",
		"UPDATE item SET id = 52 WHERE id = 51",
		"INSERT INTO item VALUES (62, 'a')")
	exec1(t, b.url,
		"UPDATE item SET v = 'b' WHERE id = 1",
		"DELETE FROM item WHERE id = 11",
		"UPDATE item SET id = 23 WHERE id = 21",
		"UPDATE item SET id = 32, v = 'b' WHERE id = 31",
		"UPDATE item SET id = 42, v = 'b' WHERE id = 41",
		"INSERT INTO item VALUES (52, 'b')",
		"UPDATE item SET id = 62, v = 'b' WHERE id = 61")
	// Both streams must hold all of their region's writes before the
	// appliers are judged by the streams' last sequences.
	for _, r := range []*aaRegion{a, b} {
		waitSlotPast(t, 60*time.Second, r.url, r.name, queryString(t, r.url, "SELECT pg_current_wal_lsn()::text"))
	}
	for _, pair := range [][2]*aaRegion{{a, b}, {b, a}} {
		here, there := pair[0], pair[1]
		here.apply = start(t, "pgjet-apply "+here.name, bins.apply, here.apply.cmd.Args[1:]...)
		waitFor(t, 60*time.Second, here.name+" to apply all of "+there.name, func() (bool, string) {
			checkDaemons(t)
			last := streamLastSeq(t, js, there.name)
			got := queryInt(t, here.url, "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied WHERE source = $1", there.name)
			return uint64(got) == last, fmt.Sprintf("applied %d of %d", got, last)
		})
	}
	ctx := context.Background()
	digA, err := local.Digest(ctx, a.url)
	if err != nil {
		t.Fatal(err)
	}
	digB, err := local.Digest(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	rows := func(url string) string {
		var s string
		if err := pgxQueryRow(t, url, "SELECT string_agg(id || ' ' || v, ', ' ORDER BY id) FROM item", &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if diff := local.DiffDigests(digA, digB); len(diff) > 0 {
		t.Fatalf("regions diverged: a has %s; b has %s", rows(a.url), rows(b.url))
	}
	if got, want := rows(a.url), "2 a, 12 seed, 22 seed, 23 seed, 32 b, 42 b, 52 b, 62 b"; got != want {
		t.Errorf("rows = %q, want %q", got, want)
	}
	kinds := func(url string) string {
		var s string
		if err := pgxQueryRow(t, url, "SELECT coalesce(string_agg(kind || ' ' || key::text || ' ' || decision, '; ' ORDER BY id), '') FROM pgjet.conflicts", &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, want := kinds(b.url), `update_changed {"id": 1} apply_remote; update_missing {"id": 11} apply_remote; update_missing {"id": 21} apply_remote; insert_exists {"id": 32} skip; update_missing {"id": 41} skip; insert_exists {"id": 52} skip; insert_exists {"id": 62} skip`; got != want {
		t.Errorf("conflicts in b = %s\nwant %s", got, want)
	}
	if got, want := kinds(a.url), `update_missing {"id": 1} skip; delete_missing {"id": 11} skip; update_missing {"id": 21} apply_remote; insert_exists {"id": 32} apply_remote; update_changed {"id": 41} apply_remote; insert_exists {"id": 52} apply_remote; update_changed {"id": 61} apply_remote; insert_exists {"id": 62} apply_remote`; got != want {
		t.Errorf("conflicts in a = %s\nwant %s", got, want)
	}
	for _, r := range []*aaRegion{a, b} {
		r.apply.Stop(t)
		r.capture.Stop(t)
	}
}
