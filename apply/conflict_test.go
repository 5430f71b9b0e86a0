package apply

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

func TestParseConflictTables(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
		err  string
	}{
		{"", map[string]string{}, ""},
		{"s.a=keep-local, b=error", map[string]string{"s.a": "keep-local", "public.b": "error"}, ""},
		{"a=lww", nil, `unknown conflict policy "lww"`},
		{"a", nil, "want schema.table=policy"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseConflictTables(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestConfig_ConflictValidation(t *testing.T) {
	base := DefaultConfig()
	base.DB, base.NATS, base.Name, base.Region = "postgres://x", "nats://x", "a", "r"
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"default", func(*Config) {}, ""},
		{"lww needs local name", func(c *Config) { c.ConflictPolicy = "last-writer-wins" }, "--local-name"},
		{"lww per table needs local name", func(c *Config) { c.ConflictTables = map[string]string{"public.t": "last-writer-wins"} }, "--local-name"},
		{"lww", func(c *Config) { c.ConflictPolicy, c.LocalName = "last-writer-wins", "b" }, ""},
		{"local name is not the source", func(c *Config) { c.ConflictPolicy, c.LocalName = "last-writer-wins", "a" }, "is the source applied here"},
		{"bad policy", func(c *Config) { c.ConflictPolicy = "newest" }, "unknown conflict policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestPolicy_Decisions runs each policy's statements against a real
// Postgres, with the local row written locally, by this applier's origin
// or by another one, and checks the decision, the row afterwards and the
// conflict record.
func TestPolicy_Decisions(t *testing.T) {
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "policy"})
	ctx := context.Background()
	url := pg.URL("postgres")
	conn, err := pgx.Connect(ctx, url) // the applier's session
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	other, err := pgx.Connect(ctx, url) // local writers and other origins
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	mustExec := func(t *testing.T, c *pgx.Conn, sql string, args ...any) {
		t.Helper()
		if _, err := c.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec(t, conn, unversionedSQL)
	mustExec(t, conn, `CREATE TABLE t (id int PRIMARY KEY, v text, u int UNIQUE);
		CREATE TABLE f (a int, b text); ALTER TABLE f REPLICA IDENTITY FULL;
		SELECT pg_replication_origin_create('pgjet_src'), pg_replication_origin_create('pgjet_aaa'), pg_replication_origin_create('pgjet_zzz')`)
	var id uint32
	if err := conn.QueryRow(ctx, "SELECT pg_replication_origin_oid('pgjet_src')").Scan(&id); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "SELECT pg_replication_origin_session_setup('pgjet_src')")
	cx := &conflictEnv{source: "src", origin: id, commitTS: true, localName: "here"}

	now := time.Now().UTC()
	older, newer := now.Add(-time.Hour), now.Add(time.Hour)
	tie := time.Date(2020, 1, 2, 3, 4, 5, 678901000, time.UTC)
	// write puts a row version in place, written locally (origin ""), or
	// under a replication origin at commit time at.
	write := func(t *testing.T, sql, origin string, at time.Time) {
		t.Helper()
		c := other
		if origin == "" {
			mustExec(t, c, sql)
			return
		}
		if origin == "pgjet_src" {
			c = conn // the applier's session holds its origin
		} else {
			mustExec(t, c, "SELECT pg_replication_origin_session_setup($1)", origin)
			defer mustExec(t, c, "SELECT pg_replication_origin_session_reset()")
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if _, err := tx.Exec(ctx, "SELECT pg_replication_origin_xact_setup('0/1', $1)", at); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	text := func(s string) stream.Value { return stream.Value{Kind: stream.ValueText, Data: []byte(s)} }
	null := stream.Value{Kind: stream.ValueNull}
	relT := &stream.Relation{ID: 1, Schema: "public", Name: "t", Identity: stream.IdentityDefault, Columns: []stream.Column{
		{Name: "id", Key: true, TypeOID: 23}, {Name: "v", TypeOID: 25}, {Name: "u", TypeOID: 23}}}
	relF := &stream.Relation{ID: 2, Schema: "public", Name: "f", Identity: stream.IdentityFull, Columns: []stream.Column{
		{Name: "a", Key: true, TypeOID: 23}, {Name: "b", Key: true, TypeOID: 25}}}
	ins := func(id, v, u string) stream.Change {
		return stream.Change{Op: stream.OpInsert, New: []stream.Value{text(id), text(v), text(u)}}
	}
	upd := func(id, v, u string) stream.Change {
		return stream.Change{Op: stream.OpUpdate, New: []stream.Value{text(id), text(v), text(u)}}
	}
	del := func(id string) stream.Change {
		return stream.Change{Op: stream.OpDelete, Old: []stream.Value{text(id), null, null}}
	}

	for _, tc := range []struct {
		name   string
		policy Policy
		rel    *stream.Relation
		setup  func(*testing.T)
		ch     stream.Change
		at     time.Time // the change's source commit time
		rows   string    // the table afterwards
		kind   string    // the conflict recorded ("" none)
		dec    string
		origin string // local_origin recorded
	}{
		{"lww: remote newer than local write", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			upd("1", "remote", "1"), newer, "1 remote 1", "update_changed", "apply_remote", "here"},
		{"lww: local write newer", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			upd("1", "remote", "1"), older, "1 local 1", "update_changed", "skip", "here"},
		{"lww: row last written by this source", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'mine', 1)", "pgjet_src", newer) },
			upd("1", "remote", "1"), older, "1 remote 1", "", "", ""},
		{"lww: tie, remote name greater", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'aaa', 1)", "pgjet_aaa", tie) },
			upd("1", "remote", "1"), tie, "1 remote 1", "update_changed", "apply_remote", "aaa"},
		{"lww: tie, local name greater", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'zzz', 1)", "pgjet_zzz", tie) },
			upd("1", "remote", "1"), tie, "1 zzz 1", "update_changed", "skip", "zzz"},
		{"lww: update of a missing row: a delete wins", PolicyLastWriterWins, relT, func(*testing.T) {},
			upd("1", "remote", "1"), newer, "", "update_missing", "skip", ""},
		{"lww: insert over an older row", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			ins("1", "remote", "2"), newer, "1 remote 2", "insert_exists", "apply_remote", "here"},
		{"lww: insert over a newer row", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			ins("1", "remote", "2"), older, "1 local 1", "insert_exists", "skip", "here"},
		{"lww: delete wins over a newer local row", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			del("1"), older, "", "delete_changed", "apply_remote", "here"},
		{"lww: delete of a missing row", PolicyLastWriterWins, relT, func(*testing.T) {},
			del("1"), older, "", "delete_missing", "skip", ""},
		{"lww: unique violation stops", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (2, 'local', 7)", "", now) },
			ins("1", "remote", "7"), newer, "2 local 7", "unique_violation", "error", ""},
		{"lww: plain insert", PolicyLastWriterWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (2, 'local', 7)", "", now) },
			ins("1", "remote", "8"), newer, "1 remote 8; 2 local 7", "", "", ""},

		{"keep-local: update of a local write", PolicyKeepLocal, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			upd("1", "remote", "1"), newer, "1 local 1", "update_changed", "skip", "here"},
		{"keep-local: update of this source's row", PolicyKeepLocal, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'mine', 1)", "pgjet_src", older) },
			upd("1", "remote", "1"), newer, "1 remote 1", "", "", ""},
		{"keep-local: insert exists", PolicyKeepLocal, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'mine', 1)", "pgjet_src", older) },
			ins("1", "remote", "1"), newer, "1 mine 1", "insert_exists", "skip", "src"},
		{"keep-local: delete of a local write", PolicyKeepLocal, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			del("1"), newer, "1 local 1", "delete_changed", "skip", "here"},
		{"keep-local: unique violation skipped", PolicyKeepLocal, relT, func(t *testing.T) {
			write(t, "INSERT INTO t VALUES (1, 'mine', 1)", "pgjet_src", older)
			write(t, "INSERT INTO t VALUES (2, 'local', 2)", "", now)
		}, upd("1", "remote", "2"), newer, "1 mine 1; 2 local 2", "unique_violation", "skip", ""},

		{"error: update of a local write", PolicyError, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			upd("1", "remote", "1"), newer, "1 local 1", "update_changed", "error", "here"},
		{"error: delete of a missing row", PolicyError, relT, func(*testing.T) {},
			del("1"), newer, "", "delete_missing", "error", ""},
		{"error: insert exists", PolicyError, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'mine', 1)", "pgjet_src", older) },
			ins("1", "remote", "1"), newer, "1 mine 1", "insert_exists", "error", "src"},
		{"error: no conflict", PolicyError, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'mine', 1)", "pgjet_src", older) },
			upd("1", "remote", "1"), newer, "1 remote 1", "", "", ""},

		{"source-wins: insert exists records the local writer", PolicySourceWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			ins("1", "remote", "1"), older, "1 remote 1", "insert_exists", "apply_remote", "here"},
		{"source-wins: update of a local write is no conflict", PolicySourceWins, relT, func(t *testing.T) { write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now) },
			upd("1", "remote", "1"), older, "1 remote 1", "", "", ""},

		{"keep-local, keyless: update of a local write", PolicyKeepLocal, relF, func(t *testing.T) { write(t, "INSERT INTO f VALUES (1, 'x')", "", now) },
			stream.Change{Op: stream.OpUpdate, Old: []stream.Value{text("1"), text("x")}, New: []stream.Value{text("1"), text("y")}}, newer, "1 x", "update_changed", "skip", "here"},
		{"error, keyless: delete of this source's row", PolicyError, relF, func(t *testing.T) { write(t, "INSERT INTO f VALUES (1, 'x')", "pgjet_src", older) },
			stream.Change{Op: stream.OpDelete, Old: []stream.Value{text("1"), text("x")}}, newer, "", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustExec(t, other, "TRUNCATE t, f, pgjet.conflicts")
			tc.setup(t)
			tgt, err := loadTarget(ctx, conn, tc.rel.Schema, tc.rel.Name)
			if err != nil {
				t.Fatal(err)
			}
			p, err := newPlan(tgt, tc.rel)
			if err != nil {
				t.Fatal(err)
			}
			p.policy, p.cx = tc.policy, cx
			sql, oids := p.statement("src", &tc.ch)
			args := p.args(&tc.ch, []byte("0/AB"), []byte(tc.at.Format(timeFormat)), nil)
			mustExec(t, conn, "BEGIN")
			res := conn.PgConn().ExecParams(ctx, sql, args, oids, nil, nil).Read()
			if res.Err != nil {
				mustExec(t, conn, "ROLLBACK")
				t.Fatalf("%v\n%s", res.Err, sql)
			}
			mustExec(t, conn, "COMMIT")
			stopped := false
			if tc.policy != PolicySourceWins && (tc.ch.Op != stream.OpInsert || p.insertLogs(&tc.ch)) {
				if len(res.Rows) != 1 {
					t.Fatalf("rows = %v, want one", res.Rows)
				}
				stopped = res.Rows[0][1] != nil
			}
			if want := tc.dec == "error"; stopped != want {
				t.Errorf("stopped = %v, want %v", stopped, want)
			}
			var rows string
			q := "SELECT coalesce(string_agg(concat_ws(' ', id, v, u), '; ' ORDER BY id), '') FROM t"
			if tc.rel == relF {
				q = "SELECT coalesce(string_agg(concat_ws(' ', a, b), '; ' ORDER BY a), '') FROM f"
			}
			if err := other.QueryRow(ctx, q).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if got, want := rows, tc.rows; got != want {
				t.Errorf("rows = %q, want %q", got, want)
			}
			var recs []map[string]any
			var js []byte
			if err := other.QueryRow(ctx, "SELECT coalesce(jsonb_agg(c ORDER BY id), '[]') FROM pgjet.conflicts c").Scan(&js); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(js, &recs); err != nil {
				t.Fatal(err)
			}
			if tc.kind == "" {
				if len(recs) != 0 {
					t.Errorf("conflicts = %s, want none", js)
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("conflicts = %s, want one", js)
			}
			r := recs[0]
			if r["kind"] != tc.kind || r["decision"] != tc.dec || r["remote_origin"] != "src" || r["remote_commit_time"] == nil {
				t.Errorf("conflict = %s, want kind %s, decision %s", js, tc.kind, tc.dec)
			}
			if tc.origin != "" && (r["local_origin"] != tc.origin || r["local_commit_time"] == nil) {
				t.Errorf("local_origin, local_commit_time = %v, %v; want %s and a time", r["local_origin"], r["local_commit_time"], tc.origin)
			}
		})
	}

	t.Run("source-wins run records the local writer", func(t *testing.T) {
		mustExec(t, other, "TRUNCATE t, f, pgjet.conflicts")
		mustExec(t, other, "ALTER TABLE t DROP CONSTRAINT t_u_key") // one unique index: runs
		write(t, "INSERT INTO t VALUES (1, 'local', 1)", "", now)
		tgt, err := loadTarget(ctx, conn, "public", "t")
		if err != nil {
			t.Fatal(err)
		}
		p, err := newPlan(tgt, relT)
		if err != nil {
			t.Fatal(err)
		}
		p.cx = cx
		rows := []stream.Change{ins("1", "remote", "1"), ins("2", "two", "2")}
		if _, ok := p.batchable(&rows[0], nil); !ok {
			t.Fatal("inserts of a table with one unique index do not form a run")
		}
		sql, oids := p.runStatement("src", stream.OpInsert, &rows[0], 2)
		var args [][]byte
		for i := range rows {
			args = p.runArgs(&rows[i], []byte("0/AB"), []byte(older.Format(timeFormat)), args)
		}
		if res := conn.PgConn().ExecParams(ctx, sql, args, oids, nil, nil).Read(); res.Err != nil {
			t.Fatalf("%v\n%s", res.Err, sql)
		}
		var got string
		if err := other.QueryRow(ctx, "SELECT concat_ws(' ', kind, decision, local_origin, local_commit_time IS NOT NULL, remote_origin, remote_commit_time IS NOT NULL) FROM pgjet.conflicts").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := "insert_exists apply_remote here t src t"; got != want {
			t.Errorf("conflict = %q, want %q", got, want)
		}
	})
}
