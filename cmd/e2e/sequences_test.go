package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSequences: sequences used on the primary (serial and identity
// columns) are at least as far on the replica after catch-up, so ids
// drawn on a promoted replica do not collide; a replica sequence that ran
// ahead is never moved back; a sequence missing on the replica is passed
// over.
func TestSequences(t *testing.T) {
	c := newCluster(t, `CREATE TABLE serials (id serial PRIMARY KEY, v text)`,
		`CREATE TABLE idents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)`,
		`CREATE SEQUENCE down INCREMENT BY -1 MAXVALUE 0 START WITH 0`,
		`CREATE SEQUENCE unused`)
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO serials (v) SELECT 'p' FROM generate_series(1, 120)`,
		`INSERT INTO idents (v) SELECT g FROM generate_series(1, 30) g`,
		`SELECT nextval('down') FROM generate_series(1, 5)`,
		// A sequence only the primary has: its value is passed over.
		`SET pgjet.ddl_capture = off; CREATE SEQUENCE lonely; SELECT nextval('lonely')`)
	waitSame(t, 60*time.Second, c.src, c.dst)

	seqs := map[string]string{"serials_id_seq": "SELECT max(id) FROM serials", "idents_id_seq": "SELECT max(id) FROM idents"}
	for seq, maxSQL := range seqs {
		max := queryInt(t, c.src, maxSQL)
		waitFor(t, 30*time.Second, seq+" on the replica to reach the primary's max id", func() (bool, string) {
			checkDaemons(t)
			got := queryInt(t, c.dst, "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = $1", seq)
			return got >= max, fmt.Sprintf("last_value %d, max(id) %d", got, max)
		})
	}
	waitFor(t, 30*time.Second, "descending sequence on the replica", func() (bool, string) {
		got := queryInt(t, c.dst, "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = 'down'")
		return got == -4, fmt.Sprintf("last_value %d", got)
	})
	if got := queryString(t, c.dst, "SELECT last_value::text FROM pg_sequences WHERE sequencename = 'unused'"); got != "" {
		t.Errorf("unused sequence has last_value %s on the replica, want none", got)
	}
	if got := queryString(t, c.dst, "SELECT to_regclass('lonely')::text"); got != "" {
		t.Errorf("sequence lonely was created on the replica despite pgjet.ddl_capture = off")
	}

	// A replica sequence ahead of the primary stays where it is.
	exec1(t, c.dst, `SELECT setval('serials_id_seq', 10000)`)
	exec1(t, c.src, `INSERT INTO serials (v) SELECT 'p2' FROM generate_series(1, 10)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	time.Sleep(3 * time.Second) // a few heartbeats, each publishing the changed values
	if got := queryInt(t, c.dst, "SELECT last_value FROM serials_id_seq"); got != 10000 {
		t.Errorf("replica sequence moved from 10000 to %d: it must never go back", got)
	}
	exec1(t, c.dst, `SELECT setval('serials_id_seq', 130)`)
	exec1(t, c.src, `INSERT INTO serials (v) VALUES ('p3')`)
	waitFor(t, 30*time.Second, "serials_id_seq to move forward again", func() (bool, string) {
		got := queryInt(t, c.dst, "SELECT last_value FROM serials_id_seq")
		return got == 131, fmt.Sprintf("last_value %d, want 131", got)
	})
	if out := app.Output(); strings.Contains(out, `"level":"error"`) {
		t.Errorf("apply logged an error:\n%s", tail(out, 2048))
	}
	capt.Stop(t)
	app.Stop(t)

	// The replica, promoted, hands out new ids without collisions.
	exec1(t, c.dst, `INSERT INTO serials (v) SELECT 'r' FROM generate_series(1, 5)`,
		`INSERT INTO idents (v) SELECT g FROM generate_series(1, 5) g`)
}
