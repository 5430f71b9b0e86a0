package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestApply_SourceWins: a replica that diverged (rows written or deleted
// locally) converges to the primary, and each collision is recorded in
// pgjet.conflicts with both row images.
func TestApply_SourceWins(t *testing.T) {
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
