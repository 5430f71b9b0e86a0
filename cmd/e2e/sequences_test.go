package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/stream"
)

// TestSequences: sequences used on the primary (serial and identity
// columns) are at least as far on the replica after catch-up, so ids
// drawn on a promoted replica do not collide; a replica sequence that ran
// ahead is never moved back; a sequence missing on the replica is passed
// over.
func TestSequences(t *testing.T) {
	t.Parallel()
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

// TestActiveActive_SequencesStayLocal: two writing regions with disjoint
// series (START 1 / START 2, INCREMENT 2, as the README advises) and
// heartbeats on both insert at once. Each region's sequence follows only
// its own database: once each applier has applied the other region's
// newest sequence values, both sequences are where their own region left
// them, every id has its region's parity, and new ids still do not
// collide. A sequence named in --follow-sequences does follow the other
// region.
func TestActiveActive_SequencesStayLocal(t *testing.T) {
	t.Parallel()
	a, b, js := newActiveActiveCapture(t, `CREATE SEQUENCE order_id START 1 INCREMENT 2;
		CREATE TABLE orders (id bigint PRIMARY KEY DEFAULT nextval('order_id'), region text NOT NULL);
		CREATE SEQUENCE ticket`,
		[]string{"--heartbeat", "200ms"},
		"--conflict", "last-writer-wins", "--follow-sequences", "public.ticket")
	exec1(t, b.url, "SET pgjet.ddl_capture = off; ALTER SEQUENCE order_id START 2 RESTART 2")

	inserts := map[string]int{"a": 60, "b": 20}
	var wg sync.WaitGroup
	for _, r := range []*aaRegion{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, r.url)
			if err != nil {
				t.Errorf("connect %s: %v", r.name, err)
				return
			}
			defer conn.Close(ctx)
			for i := 0; i < inserts[r.name]; i++ {
				if _, err := conn.Exec(ctx, "INSERT INTO orders (region) VALUES ($1)", r.name); err != nil {
					t.Errorf("insert in %s: %v", r.name, err)
					return
				}
				// Paced over several heartbeats, so sequence values
				// cross while both regions write.
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	exec1(t, a.url, "SELECT nextval('ticket') FROM generate_series(1, 7)")
	want := map[string]map[string]int64{
		"a": {"public.order_id": 1 + 2*59, "public.ticket": 7},
		"b": {"public.order_id": 2 + 2*19},
	}
	// Each applier has applied the other region's sequence values as they
	// stand after the writes.
	for _, pair := range [][2]*aaRegion{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		waitFor(t, 60*time.Second, to.name+" to apply "+from.name+"'s newest sequence values", func() (bool, string) {
			checkDaemons(t)
			seq, vals := lastSequences(t, js, from.name)
			for name, v := range want[from.name] {
				if vals[name] != v {
					return false, fmt.Sprintf("newest sequence message of %s (stream seq %d) has %s = %d, want %d", from.name, seq, name, vals[name], v)
				}
			}
			applied := queryInt(t, to.url, "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied WHERE source = $1", from.name)
			return uint64(applied) >= seq, fmt.Sprintf("applied %d, sequence message at %d", applied, seq)
		})
	}
	waitSame(t, 60*time.Second, a.url, b.url)
	for _, r := range []*aaRegion{a, b} {
		if got, want := queryInt(t, r.url, "SELECT last_value FROM order_id"), want[r.name]["public.order_id"]; got != want {
			t.Errorf("order_id in %s = %d, want %d: the applier moved it to the other region's series", r.name, got, want)
		}
		if n := queryInt(t, r.url, "SELECT count(*) FROM orders WHERE (region = 'a') <> (id % 2 = 1)"); n != 0 {
			t.Errorf("%s holds %d orders whose id is from the other region's series", r.name, n)
		}
	}
	if got := queryInt(t, b.url, "SELECT last_value FROM ticket"); got != 7 {
		t.Errorf("ticket in b = %d, want a's 7: --follow-sequences public.ticket did not follow", got)
	}

	// New ids still come from each region's own series.
	exec1(t, a.url, "INSERT INTO orders (region) VALUES ('a')")
	exec1(t, b.url, "INSERT INTO orders (region) VALUES ('b')")
	waitFor(t, 60*time.Second, "both new orders in both regions", func() (bool, string) {
		checkDaemons(t)
		na := queryInt(t, a.url, "SELECT count(*) FROM orders WHERE id IN (121, 42)")
		nb := queryInt(t, b.url, "SELECT count(*) FROM orders WHERE id IN (121, 42)")
		return na == 2 && nb == 2, fmt.Sprintf("a has %d, b has %d of orders 121 and 42", na, nb)
	})
	waitSame(t, 60*time.Second, a.url, b.url)
	for _, r := range []*aaRegion{a, b} {
		if n := queryInt(t, r.url, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
			t.Errorf("%s recorded %d conflicts: %+v", r.name, n, conflicts(t, r.url))
		}
	}
	for _, r := range []*aaRegion{a, b} {
		r.apply.Stop(t)
		r.capture.Stop(t)
	}
}

// lastSequences returns the newest sequence values message on source's
// stream: its stream sequence and its values by schema.name (0, nil when
// there is none).
func lastSequences(t *testing.T, js jetstream.JetStream, source string) (uint64, map[string]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.StreamName(source))
	if err != nil {
		t.Fatalf("stream of %s: %v", source, err)
	}
	for seq := st.CachedInfo().State.LastSeq; seq > 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d of stream %s: %v", seq, source, err)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil {
			t.Fatalf("decode message %d of stream %s: %v", seq, source, err)
		}
		for _, e := range envs {
			for _, ch := range e.Changes {
				if ch.Op != stream.OpMessage || ch.Prefix != stream.PrefixSequences {
					continue
				}
				vals, err := schema.ParseSequences(ch.Content)
				if err != nil {
					t.Fatalf("sequence message %d of stream %s: %v", seq, source, err)
				}
				out := map[string]int64{}
				for _, v := range vals {
					out[v.Schema+"."+v.Name] = v.Value
				}
				return seq, out
			}
		}
	}
	return 0, nil
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
