package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/stream"
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
	// The primary's new value must have reached the replica before the
	// replica's value proves anything.
	waitSequenceApplied(t, c, "serials_id_seq", queryInt(t, c.src, "SELECT last_value FROM serials_id_seq"))
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

// waitSequenceApplied waits until the replica has applied a pgjet.sequences
// message (capture publishes them at heartbeats) that carries sequence name
// at value or later.
func waitSequenceApplied(t *testing.T, c *cluster, name string, value int64) {
	t.Helper()
	js := natsJS(t, c.nats.ClientURL())
	ctx := context.Background()
	var next, found uint64 = 1, 0
	waitFor(t, 60*time.Second, fmt.Sprintf("%s at %d in the stream", name, value), func() (bool, string) {
		checkDaemons(t)
		st, err := js.Stream(ctx, stream.StreamName("src"))
		if err != nil {
			return false, err.Error()
		}
		for ; found == 0 && next <= st.CachedInfo().State.LastSeq; next++ {
			m, err := st.GetMsg(ctx, next)
			if err != nil {
				t.Fatalf("message %d of the stream: %v", next, err)
			}
			envs, err := stream.DecodeMessage(m.Data)
			if err != nil {
				t.Fatalf("decode message %d of the stream: %v", next, err)
			}
			for _, env := range envs {
				for _, ch := range env.Changes {
					if ch.Op != stream.OpMessage || ch.Prefix != stream.PrefixSequences {
						continue
					}
					var vals []schema.SequenceValue
					if err := json.Unmarshal(ch.Content, &vals); err != nil {
						t.Fatalf("sequences message %d: %v", next, err)
					}
					for _, v := range vals {
						if v.Name == name && v.Value >= value {
							found = next
						}
					}
				}
			}
		}
		return found > 0, fmt.Sprintf("none in messages 1..%d", next-1)
	})
	waitFor(t, 60*time.Second, fmt.Sprintf("the replica to apply stream message %d", found), func() (bool, string) {
		checkDaemons(t)
		n := uint64(queryInt(t, c.dst, "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied WHERE source = 'src'"))
		return n >= found, fmt.Sprintf("applied seq %d", n)
	})
}
