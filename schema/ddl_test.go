package schema

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		name, sql string
		want      []string
	}{
		{"one", "ALTER TABLE t ADD COLUMN c int", []string{"ALTER TABLE t ADD COLUMN c int"}},
		{"trailing semicolon", "CREATE TABLE t (a int);  \n", []string{"CREATE TABLE t (a int)"}},
		{"several", "BEGIN; CREATE TABLE a (x int); INSERT INTO a VALUES (1);COMMIT",
			[]string{"BEGIN", "CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)", "COMMIT"}},
		{"semicolon in string", "COMMENT ON TABLE t IS 'a;b''c;'; SELECT 1", []string{"COMMENT ON TABLE t IS 'a;b''c;'", "SELECT 1"}},
		{"escape string", `COMMENT ON TABLE t IS E'it\'s;'; SELECT 1`, []string{`COMMENT ON TABLE t IS E'it\'s;'`, "SELECT 1"}},
		{"quoted identifier", `CREATE TABLE "a;b" (x int); SELECT 1`, []string{`CREATE TABLE "a;b" (x int)`, "SELECT 1"}},
		{"dollar quote", "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$; SELECT 1",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$", "SELECT 1"}},
		{"tagged dollar quote", "DO $x$ BEGIN EXECUTE $$a;b$$; END $x$; SELECT 1", []string{"DO $x$ BEGIN EXECUTE $$a;b$$; END $x$", "SELECT 1"}},
		{"parameter is no dollar quote", "SELECT $1; SELECT $2", []string{"SELECT $1", "SELECT $2"}},
		{"dollar in identifier", "CREATE TABLE a$b (x int); SELECT 1", []string{"CREATE TABLE a$b (x int)", "SELECT 1"}},
		{"comments", "-- a; b\nCREATE TABLE t (x int); /* c; /* nested; */ d; */ SELECT 1; -- end;",
			[]string{"-- a; b\nCREATE TABLE t (x int)", "/* c; /* nested; */ d; */ SELECT 1"}},
		{"atomic body", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT 3",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END", "SELECT 3"}},
		{"or replace procedure body", "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END; COMMIT",
			[]string{"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END", "COMMIT"}},
		{"begin outside routines", "BEGIN; END;", []string{"BEGIN", "END"}},
		{"empty", " ; ;\n", nil},
		{"unterminated string", "COMMENT ON TABLE t IS 'abc; SELECT 1", []string{"COMMENT ON TABLE t IS 'abc; SELECT 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SplitStatements(tt.sql); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SplitStatements(%q) = %q, want %q", tt.sql, got, tt.want)
			}
		})
	}
}

func TestReplayStatements(t *testing.T) {
	tests := []struct {
		sql  string
		want []Statement
	}{
		{"ALTER TABLE t ADD COLUMN c int", []Statement{{"ALTER TABLE t ADD COLUMN c int", Replay}}},
		{"begin; create index on t (a); commit", []Statement{{"begin", Skip}, {"create index on t (a)", Replay}, {"commit", Skip}}},
		{"CREATE TABLE a (x int); INSERT INTO a VALUES (1)", []Statement{{"CREATE TABLE a (x int)", Replay}, {"INSERT INTO a VALUES (1)", Skip}}},
		{"CREATE TEMP TABLE x (a int)", []Statement{{"CREATE TEMP TABLE x (a int)", Skip}}},
		{"create global temporary table x (a int)", []Statement{{"create global temporary table x (a int)", Skip}}},
		{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", []Statement{{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", Skip}}},
		{"CREATE ROLE r; GRANT SELECT ON t TO r", []Statement{{"CREATE ROLE r", Skip}, {"GRANT SELECT ON t TO r", Replay}}},
		{"CREATE PUBLICATION p FOR ALL TABLES", []Statement{{"CREATE PUBLICATION p FOR ALL TABLES", Skip}}},
		{"DROP EVENT TRIGGER x", []Statement{{"DROP EVENT TRIGGER x", Skip}}},
		{"SELECT migrate()", []Statement{{"SELECT migrate()", Opaque}}},
		{"CALL migrate()", []Statement{{"CALL migrate()", Opaque}}},
		{"DO $$BEGIN EXECUTE 'ALTER TABLE t ADD c int'; END$$", []Statement{{"DO $$BEGIN EXECUTE 'ALTER TABLE t ADD c int'; END$$", Replay}}},
		{"SET search_path = s; CREATE TABLE t (a int)", []Statement{{"SET search_path = s", Skip}, {"CREATE TABLE t (a int)", Replay}}},
		{"CREATE TABLE t AS SELECT * FROM s", []Statement{{"CREATE TABLE t AS SELECT * FROM s WITH NO DATA", Replay}}},
		{"create unlogged table if not exists t (a, b) as select 1, 2 with data", []Statement{{"create unlogged table if not exists t (a, b) as select 1, 2 with NO DATA", Replay}}},
		{"CREATE TABLE t AS TABLE s WITH NO DATA", []Statement{{"CREATE TABLE t AS TABLE s WITH NO DATA", Replay}}},
		{"CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY, b int GENERATED ALWAYS AS (id * 2) STORED)",
			[]Statement{{"CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY, b int GENERATED ALWAYS AS (id * 2) STORED)", Replay}}},
		{"CREATE MATERIALIZED VIEW m AS SELECT 1", []Statement{{"CREATE MATERIALIZED VIEW m AS SELECT 1", Replay}}},
	}
	for _, tt := range tests {
		if got := ReplayStatements(tt.sql); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ReplayStatements(%q) = %+v, want %+v", tt.sql, got, tt.want)
		}
	}
}

func TestParseDDL(t *testing.T) {
	d, err := ParseDDL([]byte(`{"sql": "CREATE INDEX ON t(a)", "tag": "CREATE INDEX", "objects": [
		{"type": "index", "table": "t", "schema": "public", "identity": "public.t_a_idx", "table_schema": "public"},
		{"type": "type", "table": null, "schema": "public", "identity": "public.mood", "table_schema": null},
		{"type": "table", "table": "t", "schema": "public", "identity": "public.t", "table_schema": "public"}],
		"search_path": "\"$user\", public", "role": "app", "session_role": "alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.SearchPath, `"$user", public`; got != want {
		t.Errorf("search_path = %q, want %q", got, want)
	}
	if d.Role != "app" || d.SessionRole != "alice" {
		t.Errorf("role, session_role = %q, %q, want app, alice", d.Role, d.SessionRole)
	}
	// A message of an older capture names no role: it replays as the
	// apply role, as it did.
	old, err := ParseDDL([]byte(`{"sql": "CREATE INDEX ON t(a)", "tag": "CREATE INDEX", "search_path": "public"}`))
	if err != nil || old.Role != "" {
		t.Errorf("ParseDDL of a message without role = %+v, %v; want Role empty", old, err)
	}
	if got, want := d.Tables(), [][2]string{{"public", "t"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Tables() = %q, want %q", got, want)
	}
	for _, bad := range []string{``, `{`, `{"sql": ""}`, `[]`} {
		if _, err := ParseDDL([]byte(bad)); err == nil {
			t.Errorf("ParseDDL(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseSequences(t *testing.T) {
	vs, err := ParseSequences([]byte(`[{"schema":"public","name":"t_id_seq","value":42},{"schema":"s","name":"n","value":-9223372036854775808}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []SequenceValue{{"public", "t_id_seq", 42}, {"s", "n", -9223372036854775808}}
	if !reflect.DeepEqual(vs, want) {
		t.Errorf("ParseSequences = %+v, want %+v", vs, want)
	}
	if _, err := ParseSequences([]byte(`{"schema":1}`)); err == nil {
		t.Error("ParseSequences of an object succeeded, want an error")
	}
}

func TestTruncate(t *testing.T) {
	if got, want := Truncate("ALTER  TABLE\n\tt", 200), "ALTER TABLE t"; got != want {
		t.Errorf("Truncate = %q, want %q", got, want)
	}
	got := Truncate(strings.Repeat("é", 300), 201)
	if len(got) > 204 || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "éé") {
		t.Errorf("Truncate cut badly: %q", got)
	}
}

// FuzzSplitStatements: any input splits without panicking into trimmed,
// non-empty pieces of the input, in order.
func FuzzSplitStatements(f *testing.F) {
	for _, s := range []string{"CREATE TABLE t (a int); SELECT 1", "DO $x$ a;b $x$;", "E'\\';'", "/* /* */", "$a", "CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		rest := sql
		for _, st := range SplitStatements(sql) {
			if st == "" || st != strings.TrimSpace(st) {
				t.Fatalf("statement %q is empty or untrimmed", st)
			}
			i := strings.Index(rest, st)
			if i < 0 {
				t.Fatalf("statement %q is not in order in %q", st, sql)
			}
			rest = rest[i+len(st):]
		}
		_ = ReplayStatements(sql)
	})
}
