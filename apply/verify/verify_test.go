package verify

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestVerify_OptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for name, mod := range map[string]func(*Options){
		"zero chunk":       func(o *Options) { o.ChunkRows = 0 },
		"negative timeout": func(o *Options) { o.WaitTimeout = -1 },
		"negative recheck": func(o *Options) { o.Rechecks = -1 },
		"bad table":        func(o *Options) { o.Tables = []string{"a.b.c"} },
	} {
		t.Run(name, func(t *testing.T) {
			o := DefaultOptions()
			mod(&o)
			if err := o.Validate(); err == nil {
				t.Error("Validate() = nil, want an error")
			}
		})
	}
}

func testRelation(pk []string, cols ...column) relation {
	return relation{exists: true, cols: cols, pk: pk}
}

func TestVerify_PlanTable(t *testing.T) {
	id := pgx.Identifier{"public", "t"}
	src := testRelation([]string{"a", "b"},
		column{name: "a", typ: "integer", collation: "", notNull: true}, column{name: "b", typ: "text", collation: "en_US.utf8", notNull: true}, column{name: "c", typ: "text", collation: "en_US.utf8", notNull: true}, column{name: "d", typ: "integer", collation: "", notNull: true})

	t.Run("same", func(t *testing.T) {
		p, diffs := planTable(id, src, src)
		if len(diffs) != 0 {
			t.Errorf("diffs = %v, want none", diffs)
		}
		if got, want := strings.Join(p.cols, ","), "a,b,c,d"; got != want {
			t.Errorf("cols = %s, want %s", got, want)
		}
		if got, want := len(p.key), 2; got != want || p.key[1].collateC {
			t.Fatalf("key = %+v, want a and b in their own collation", p.key)
		}
	})
	t.Run("columns differ", func(t *testing.T) {
		dst := testRelation([]string{"a", "b"},
			column{name: "e", typ: "integer", collation: "", notNull: true}, column{name: "b", typ: "text", collation: "C", notNull: true}, column{name: "a", typ: "integer", collation: "", notNull: true}, column{name: "c", typ: "character varying(5)", collation: "en_US.utf8", notNull: true})
		p, diffs := planTable(id, src, dst)
		var got []string
		for _, d := range diffs {
			got = append(got, d.String())
		}
		want := []string{
			"column c is text on source, character varying(5) on target",
			"column d missing on target",
			"column e missing on source",
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("diffs = %q, want %q", got, want)
		}
		if got, want := strings.Join(p.cols, ","), "a,b,c"; got != want {
			t.Errorf("cols = %s, want %s (common, in source order)", got, want)
		}
		if len(p.key) != 2 || p.key[0].collateC || !p.key[1].collateC {
			t.Errorf("key = %+v, want b compared in C, its collations differing", p.key)
		}
	})
	t.Run("key nullable on target", func(t *testing.T) {
		dst := testRelation(nil, column{name: "a", typ: "integer"}, column{name: "b", typ: "text", collation: "en_US.utf8", notNull: true},
			column{name: "c", typ: "text", collation: "en_US.utf8"}, column{name: "d", typ: "integer"})
		if p, _ := planTable(id, src, dst); len(p.key) != 2 || !p.nullKeys {
			t.Errorf("key = %+v, nullKeys %v; want a and b, and a range for NULL keys", p.key, p.nullKeys)
		}
		if p, _ := planTable(id, src, src); p.nullKeys {
			t.Errorf("nullKeys set with the key NOT NULL on both sides")
		}
	})
	t.Run("key column retyped", func(t *testing.T) {
		dst := testRelation(nil, column{name: "a", typ: "bigint", collation: "", notNull: true}, column{name: "b", typ: "text", collation: "en_US.utf8", notNull: true}, column{name: "c", typ: "text", collation: "en_US.utf8", notNull: true}, column{name: "d", typ: "integer", collation: "", notNull: true})
		p, _ := planTable(id, src, dst)
		if len(p.key) != 0 {
			t.Errorf("key = %+v, want none (compared whole)", p.key)
		}
	})
}

func TestVerify_SQL(t *testing.T) {
	single := &tablePlan{id: pgx.Identifier{"public", "items"}, cols: []string{"id", "Name"}, key: []keyCol{{name: "id", typ: "integer"}}}
	composite := &tablePlan{id: pgx.Identifier{"s", "p"}, cols: []string{"r", "n", "v"},
		key: []keyCol{{name: "r", typ: "text", collateC: true}, {name: "n", typ: "bigint"}}}
	whole := &tablePlan{id: pgx.Identifier{"public", "nokey"}, cols: []string{"a"}}
	nullable := &tablePlan{id: composite.id, cols: composite.cols, key: composite.key, nullKeys: true}

	const sums = `SELECT count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0)::text, coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)::text FROM `
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"digest whole", whole.digestSQL(keyRange{}),
			sums + `(SELECT md5(ROW(t."a")::text) AS h FROM "public"."nokey" t OFFSET 0) s`},
		{"digest first range", single.digestSQL(keyRange{hi: []string{"1"}}),
			sums + `(SELECT md5(ROW(t."id", t."Name")::text) AS h FROM "public"."items" t WHERE t."id" <= $1::text::integer OFFSET 0) s`},
		{"digest middle range", single.digestSQL(keyRange{lo: []string{"1"}, hi: []string{"2"}}),
			sums + `(SELECT md5(ROW(t."id", t."Name")::text) AS h FROM "public"."items" t WHERE t."id" > $1::text::integer AND t."id" <= $2::text::integer OFFSET 0) s`},
		{"digest composite last range", composite.digestSQL(keyRange{lo: []string{"a", "1"}}),
			sums + `(SELECT md5(ROW(t."r", t."n", t."v")::text) AS h FROM "s"."p" t WHERE (t."r" COLLATE "C", t."n") > ($1::text::text, $2::text::bigint) OFFSET 0) s`},
		{"digest composite middle range", composite.digestSQL(keyRange{lo: []string{"a", "1"}, hi: []string{"b", "2"}}),
			sums + `(SELECT md5(ROW(t."r", t."n", t."v")::text) AS h FROM "s"."p" t WHERE (t."r" COLLATE "C", t."n") > ($1::text::text, $2::text::bigint) AND (t."r" COLLATE "C", t."n") <= ($3::text::text, $4::text::bigint) OFFSET 0) s`},
		{"digest nullable key range", nullable.digestSQL(keyRange{lo: []string{"a", "1"}}),
			sums + `(SELECT md5(ROW(t."r", t."n", t."v")::text) AS h FROM "s"."p" t WHERE t."r" IS NOT NULL AND t."n" IS NOT NULL AND (t."r" COLLATE "C", t."n") > ($1::text::text, $2::text::bigint) OFFSET 0) s`},
		{"digest NULL keys", nullable.digestSQL(keyRange{nulls: true}),
			sums + `(SELECT md5(ROW(t."r", t."n", t."v")::text) AS h FROM "s"."p" t WHERE t."r" IS NULL OR t."n" IS NULL OFFSET 0) s`},
		{"boundary first", single.boundarySQL(false),
			`SELECT t."id"::text FROM "public"."items" t ORDER BY t."id" OFFSET $1::bigint - 1 LIMIT 1`},
		{"boundary next", single.boundarySQL(true),
			`SELECT t."id"::text FROM "public"."items" t WHERE t."id" > $1::text::integer ORDER BY t."id" OFFSET $2::bigint - 1 LIMIT 1`},
		{"boundary composite next", composite.boundarySQL(true),
			`SELECT t."r"::text, t."n"::text FROM "s"."p" t WHERE (t."r" COLLATE "C", t."n") > ($1::text::text, $2::text::bigint) ORDER BY t."r" COLLATE "C", t."n" OFFSET $3::bigint - 1 LIMIT 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", tc.got, tc.want)
			}
		})
	}
}

func TestVerify_RangeLabel(t *testing.T) {
	single := &tablePlan{key: []keyCol{{name: "id", typ: "integer"}}}
	composite := &tablePlan{key: []keyCol{{name: "region", typ: "text"}, {name: "n", typ: "integer"}}}
	whole := &tablePlan{}
	for _, tc := range []struct {
		p      *tablePlan
		lo, hi []string
		want   string
	}{
		{whole, nil, nil, "all rows"},
		{single, nil, nil, "all rows"},
		{single, nil, []string{"1000"}, "id <= 1000"},
		{single, []string{"1000"}, []string{"2000"}, "id in (1000, 2000]"},
		{single, []string{"-2.5e+10"}, nil, "id > -2.5e+10"},
		{composite, []string{"eu", "1000"}, []string{"us", "500"}, "(region, n) in (('eu', 1000), ('us', 500)]"},
		{composite, []string{"it's", "1"}, nil, "(region, n) > ('it''s', 1)"},
		{composite, nil, []string{"2024-01-01", "1"}, "(region, n) <= ('2024-01-01', 1)"},
	} {
		if got := tc.p.rangeLabel(keyRange{lo: tc.lo, hi: tc.hi}); got != tc.want {
			t.Errorf("rangeLabel(%q, %q) = %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

func TestVerify_Summary(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    TableVerdict
		want string
	}{
		{"ok", TableVerdict{Table: "public.items", Rows: 7000, TargetRows: 7000, Chunks: 8, OK: true},
			"public.items: 7000 rows in 8 chunks, ok"},
		{"missing", TableVerdict{Table: "public.gone", Missing: "target"}, "public.gone: missing on target"},
		{"ranges", TableVerdict{Table: "public.items", Key: []string{"id"}, Chunks: 7, Ranges: []RangeDiff{
			{Range: "id in (200000, 300000]", SourceRows: 100000, TargetRows: 99999},
			{Range: "id > 600000", SourceRows: 12, TargetRows: 12},
		}}, "public.items: 2 of 7 ranges differ: id in (200000, 300000]: 100000 vs 99999 rows; id > 600000: same 12 rows, different contents"},
		{"keyless", TableVerdict{Table: "public.log", Chunks: 1, Ranges: []RangeDiff{{Range: "all rows", SourceRows: 5, TargetRows: 4}}},
			"public.log: no primary key, compared whole: 5 vs 4 rows"},
		{"columns only", TableVerdict{Table: "public.c", Rows: 3, Chunks: 1, Columns: []ColumnDiff{{Column: "x", SourceType: "integer"}}},
			"public.c: column x missing on target; rows equal (3 in 1 chunks)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.v.Summary(); got != tc.want {
				t.Errorf("Summary() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}

	t.Run("many ranges", func(t *testing.T) {
		v := TableVerdict{Table: "public.t", Key: []string{"id"}, Chunks: 20}
		for range 15 {
			v.Ranges = append(v.Ranges, RangeDiff{Range: "r", SourceRows: 1, TargetRows: 0})
		}
		if got := v.Summary(); !strings.HasSuffix(got, "; and 5 more") || strings.Count(got, "r: 1 vs 0 rows") != maxListedRanges {
			t.Errorf("Summary() = %s, want %d ranges named and the rest counted", got, maxListedRanges)
		}
	})
}
