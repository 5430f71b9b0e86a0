package apply

import (
	"strings"
	"testing"

	"github.com/pgjet/pgjet/stream"
)

func rel(identity uint8, cols ...stream.Column) *stream.Relation {
	return &stream.Relation{ID: 1, Schema: "public", Name: "t", Identity: identity, Columns: cols}
}

func col(name string, key bool) stream.Column {
	return stream.Column{Name: name, Key: key, TypeOID: 23, Type: "integer"}
}

func tgt(pk []string, cols ...string) *target {
	t := &target{schema: "public", name: "t", qname: `"public"."t"`, cols: map[string]targetCol{}, pk: pk}
	for _, c := range cols {
		t.cols[c] = targetCol{typ: 23}
	}
	if pk != nil {
		t.uniques = [][]string{pk}
	}
	return t
}

func TestNewPlan(t *testing.T) {
	for _, tc := range []struct {
		name      string
		t         *target
		r         *stream.Relation
		keys      []int
		upsert    bool
		fullMatch bool
		err       string
	}{
		{"primary key", tgt([]string{"id"}, "id", "v"), rel('d', col("id", true), col("v", false)), []int{0}, true, false, ""},
		{"composite key in other order", tgt([]string{"b", "a"}, "a", "b", "v"), rel('d', col("a", true), col("b", true), col("v", false)), []int{0, 1}, true, false, ""},
		{"full with target pk", tgt([]string{"id"}, "id", "v"), rel('f', col("id", true), col("v", true)), []int{0}, true, false, ""},
		{"full without key", tgt(nil, "a", "b"), rel('f', col("a", true), col("b", true)), nil, false, true, ""},
		{"key without unique index on target", tgt(nil, "id", "v"), rel('d', col("id", true), col("v", false)), []int{0}, false, false, ""},
		{"missing column", tgt([]string{"id"}, "id"), rel('d', col("id", true), col("v", false)), nil, false, false, `column "v" of table public.t is missing on the target`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newPlan(tc.t, tc.r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(p.keys), len(tc.keys); got != want {
				t.Fatalf("keys = %v, want %v", p.keys, tc.keys)
			}
			for i := range tc.keys {
				if p.keys[i] != tc.keys[i] {
					t.Errorf("keys = %v, want %v", p.keys, tc.keys)
				}
			}
			if p.upsert != tc.upsert || p.fullMatch != tc.fullMatch {
				t.Errorf("upsert, fullMatch = %v, %v; want %v, %v", p.upsert, p.fullMatch, tc.upsert, tc.fullMatch)
			}
		})
	}
}

func TestStatementArgs(t *testing.T) {
	text := func(s string) stream.Value { return stream.Value{Kind: stream.ValueText, Data: []byte(s)} }
	null := stream.Value{Kind: stream.ValueNull}
	toast := stream.Value{Kind: stream.ValueUnchanged}
	lsn := []byte("0/1")
	ts := []byte("2024-01-01 00:00:00Z")
	keyed, _ := newPlan(tgt([]string{"id"}, "id", "v", "w"), rel('d', col("id", true), col("v", false), col("w", false)))
	full, _ := newPlan(tgt(nil, "a", "b"), rel('f', col("a", true), col("b", true)))
	for _, tc := range []struct {
		name     string
		p        *plan
		ch       stream.Change
		params   int
		args     []string // "<nil>" for NULL
		contains []string
		absent   []string
	}{
		{"upsert", keyed, stream.Change{Op: stream.OpInsert, New: []stream.Value{text("1"), null, text("x")}}, 5,
			[]string{"1", "<nil>", "x", "0/1", "2024-01-01 00:00:00Z"}, []string{"ON CONFLICT (\"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\"", "'insert_exists'"}, nil},
		{"update leaves unchanged toast alone", keyed, stream.Change{Op: stream.OpUpdate, New: []stream.Value{text("1"), text("v2"), toast}}, 5,
			[]string{"1", "v2", "1", "0/1", "2024-01-01 00:00:00Z"}, []string{`"v" = $2`, "'update_missing'"}, []string{`"w" =`, "pgjet_ins"}},
		{"update of a changed key finds the old key", keyed, stream.Change{Op: stream.OpUpdate, Old: []stream.Value{text("1"), null, null}, New: []stream.Value{text("2"), text("v"), text("w")}}, 6,
			[]string{"2", "v", "w", "1", "0/1", "2024-01-01 00:00:00Z"}, []string{"pgjet_ins", `t."id" = $4`}, nil},
		{"delete by key", keyed, stream.Change{Op: stream.OpDelete, Old: []stream.Value{text("7"), null, null}}, 3,
			[]string{"7", "0/1", "2024-01-01 00:00:00Z"}, []string{"DELETE FROM", "'delete_missing'"}, nil},
		{"delete by full row", full, stream.Change{Op: stream.OpDelete, Old: []stream.Value{text("1"), null}}, 4,
			[]string{"1", "<nil>", "0/1", "2024-01-01 00:00:00Z"}, []string{"IS NOT DISTINCT FROM", "LIMIT 1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sql, oids := tc.p.statement("src", &tc.ch)
			args := tc.p.args(&tc.ch, lsn, ts, nil)
			if got, want := len(oids), tc.params; got != want {
				t.Errorf("params = %d, want %d\n%s", got, want, sql)
			}
			if got, want := len(args), len(oids); got != want {
				t.Fatalf("args = %d, params = %d\n%s", got, want, sql)
			}
			for i, a := range args {
				s := string(a)
				if a == nil {
					s = "<nil>"
				}
				if s != tc.args[i] {
					t.Errorf("arg %d = %q, want %q", i, s, tc.args[i])
				}
			}
			for _, c := range tc.contains {
				if !strings.Contains(sql, c) {
					t.Errorf("sql lacks %q:\n%s", c, sql)
				}
			}
			for _, c := range tc.absent {
				if strings.Contains(sql, c) {
					t.Errorf("sql has %q:\n%s", c, sql)
				}
			}
		})
	}
}

func TestJSONObjectSplitsArguments(t *testing.T) {
	var names, exprs []string
	for i := 0; i < 120; i++ {
		names = append(names, "c")
		exprs = append(exprs, "$1")
	}
	if got, want := strings.Count(jsonObject(names, exprs), "jsonb_build_object("), 3; got != want {
		t.Errorf("jsonb_build_object calls = %d, want %d (at most 50 pairs each)", got, want)
	}
}
