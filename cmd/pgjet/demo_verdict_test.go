package main

import (
	"strings"
	"testing"

	"github.com/pgjet/pgjet/deploy/local"
)

// TestDemo_Verdict: the demo exits 0 only when every replica equals the
// primary; a table missing on either side, or differing, fails it.
func TestDemo_Verdict(t *testing.T) {
	prim := []local.TableDigest{{Table: "public.a", Rows: 2, MD5: "x"}, {Table: "public.b", Rows: 1, MD5: "y"}}
	tests := []struct {
		name    string
		replica []local.TableDigest
		ok      bool
		want    string
	}{
		{"equal", []local.TableDigest{{Table: "public.b", Rows: 1, MD5: "y"}, {Table: "public.a", Rows: 2, MD5: "x"}}, true, "public.b                          1 rows  match"},
		{"only on the replica", append(prim[:2:2], local.TableDigest{Table: "public.c", Rows: 3, MD5: "z"}), false, "public.c                          - rows  MISMATCH (only on the replica, which has 3 rows)"},
		{"missing on the replica", prim[:1], false, "public.b                          1 rows  MISMATCH (missing on the replica)"},
		{"rows differ", []local.TableDigest{prim[0], {Table: "public.b", Rows: 4, MD5: "y"}}, false, "MISMATCH (replica has 4 rows)"},
		{"contents differ", []local.TableDigest{prim[0], {Table: "public.b", Rows: 1, MD5: "q"}}, false, "MISMATCH (same row count, different contents)"},
		{"replica not read", nil, false, "public.a                          2 rows  MISMATCH (missing on the replica)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines, ok := verdict("r1", prim, tt.replica)
			out := strings.Join(lines, "\n")
			if ok != tt.ok || !strings.Contains(out, tt.want) {
				t.Errorf("verdict = %v:\n%s\nwant %v and a line with %q", ok, out, tt.ok, tt.want)
			}
			if got := strings.Count(out, "MISMATCH") == 0; got != tt.ok {
				t.Errorf("verdict %v, yet the lines say otherwise:\n%s", ok, out)
			}
		})
	}
}
