package verify

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestSQLString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "'plain'"},
		{"it's", "'it''s'"},
		{`a\b`, `E'a\\b'`},
		{`k'1\b`, `E'k''1\\b'`},
		{"", "''"},
	} {
		if got := sqlString(tc.in); got != tc.want {
			t.Errorf("sqlString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestLiteralWhere: COPY takes no parameters, so a range's bounds are
// written into its condition, ten and more parameters included.
func TestLiteralWhere(t *testing.T) {
	p := &tablePlan{id: pgx.Identifier{"public", "pairs"}, key: []keyCol{{name: "b", typ: "text", collateC: true}, {name: "a", typ: "integer"}}}
	for _, tc := range []struct {
		r    keyRange
		want string
	}{
		{keyRange{}, ""},
		{keyRange{hi: []string{`k'1\b $1::`, "7"}}, ` WHERE (t."b" COLLATE "C", t."a") <= (E'k''1\\b $1::'::text::text, '7'::text::integer)`},
		{keyRange{lo: []string{"x", "1"}, hi: []string{"y", "2"}}, ` WHERE (t."b" COLLATE "C", t."a") > ('x'::text::text, '1'::text::integer) AND (t."b" COLLATE "C", t."a") <= ('y'::text::text, '2'::text::integer)`},
	} {
		if got := p.literalWhere(tc.r); got != tc.want {
			t.Errorf("literalWhere(%v)\n got %s\nwant %s", tc.r, got, tc.want)
		}
	}
	wide := &tablePlan{id: pgx.Identifier{"public", "w"}}
	var lo []string
	for i := range 11 {
		wide.key = append(wide.key, keyCol{name: string(rune('a' + i)), typ: "integer"})
		lo = append(lo, string(rune('0'+i%10)))
	}
	got := wide.literalWhere(keyRange{lo: lo})
	if want := `'0'::text::integer, '1'::text::integer`; !strings.Contains(got, want) || strings.Contains(got, "$") {
		t.Errorf("literalWhere of 11 key columns: %s", got)
	}
}
