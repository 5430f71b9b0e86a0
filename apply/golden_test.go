package apply

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pgjet/pgjet/stream"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// checkGolden compares got with testdata/name (go test -update rewrites
// it).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./apply -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test ./apply -run %s -update rewrites it):\n%s", t.Name(), golden, t.Name(), lineDiff(string(want), got))
	}
}

// lineDiff lists the lines of want and got that differ, by position: the
// golden files hold one statement per few lines, so that is enough to see
// what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// cteBreak, mainBreak and unionBreak lay a statement out for reading:
// the builders write one line, broken here before each CTE, the main
// statement after them and each UNION ALL. The layout only adds line
// breaks, so every change to the SQL still shows.
var (
	cteBreak   = regexp.MustCompile(`\), (pgjet_\w+ AS \()`)
	mainBreak  = regexp.MustCompile(`\) (INSERT INTO pgjet\.conflicts \(|SELECT count\(\*\)|SELECT jsonb_agg\(j\))`)
	unionBreak = regexp.MustCompile(` UNION ALL `)
)

func layout(sql string) string {
	sql = cteBreak.ReplaceAllString(sql, "),\n  $1")
	sql = mainBreak.ReplaceAllString(sql, ")\n$1")
	return unionBreak.ReplaceAllString(sql, "\n  UNION ALL ")
}

// goldenStmt renders one statement, its parameter types and the
// arguments of the golden change for a golden file.
func goldenStmt(t *testing.T, b *strings.Builder, name, sql string, oids []uint32, args [][]byte) {
	t.Helper()
	if len(args) != len(oids) {
		t.Errorf("%s: %d arguments for %d parameters", name, len(args), len(oids))
	}
	fmt.Fprintf(b, "-- %s\n-- params:", name)
	for _, o := range oids {
		fmt.Fprintf(b, " %d", o)
	}
	b.WriteString("\n-- args:")
	for _, a := range args {
		if a == nil {
			b.WriteString(" NULL")
		} else {
			fmt.Fprintf(b, " %q", a)
		}
	}
	fmt.Fprintf(b, "\n%s;\n\n", layout(sql))
}

// The commit LSN and time of the golden changes.
var goldenLSN, goldenTS = []byte("0/AB"), []byte("2024-01-02 03:04:05.678901Z")

// goldenTarget is a target table with columns id int, v text, u int, and
// the given primary key and other unique indexes.
func goldenTarget(pk []string, uniques ...[]string) *target {
	t := &target{schema: "public", name: "t", qname: `"public"."t"`, pk: pk, cols: map[string]targetCol{
		"id": {typ: 23}, "v": {typ: 25}, "u": {typ: 23},
	}}
	if pk != nil {
		t.uniques = append(t.uniques, pk)
		t.nullsEqual = append(t.nullsEqual, false)
	}
	for _, u := range uniques {
		t.uniques = append(t.uniques, u)
		t.nullsEqual = append(t.nullsEqual, false)
	}
	return t
}

// goldenKind is a kind of plan: how the target finds rows.
type goldenKind struct {
	name     string
	identity uint8 // the source's replica identity
	target   func() *target
}

var goldenKinds = []goldenKind{
	// The source's key is the target's primary key: upserts.
	{"keyed", stream.IdentityDefault, func() *target { return goldenTarget([]string{"id"}) }},
	// Another unique index besides the key (NULLS NOT DISTINCT): the
	// policies check it before writing.
	{"unique", stream.IdentityDefault, func() *target {
		t := goldenTarget([]string{"id"}, []string{"u"})
		t.nullsEqual[1] = true
		return t
	}},
	// The key has no unique index on the target: no upsert.
	{"no-unique", stream.IdentityDefault, func() *target { return goldenTarget(nil) }},
	// Identity FULL with the target's primary key among the columns.
	{"full-pk", stream.IdentityFull, func() *target { return goldenTarget([]string{"id"}) }},
	// Identity FULL without a key: rows are found by every column.
	{"full", stream.IdentityFull, func() *target { return goldenTarget(nil) }},
	// The key has no unique index on the target, another column has: an
	// insert can only collide on that one.
	{"other-unique", stream.IdentityDefault, func() *target { return goldenTarget(nil, []string{"u"}) }},
	// Identity FULL without a key, and a unique index: the row found is
	// told from the one holding the new values by its ctid.
	{"full-unique", stream.IdentityFull, func() *target { return goldenTarget(nil, []string{"u"}) }},
	// id is GENERATED ALWAYS AS IDENTITY on the target.
	{"always", stream.IdentityDefault, func() *target {
		t := goldenTarget([]string{"id"})
		t.cols["id"] = targetCol{typ: 23, always: true}
		return t
	}},
}

func goldenRel(identity uint8) *stream.Relation {
	key := identity == stream.IdentityFull
	return &stream.Relation{ID: 1, Schema: "public", Name: "t", Identity: identity, Columns: []stream.Column{
		{Name: "id", Key: true, TypeOID: 23, Type: "integer"},
		{Name: "v", Key: key, TypeOID: 25, Type: "text"},
		{Name: "u", Key: key, TypeOID: 23, Type: "integer"},
	}}
}

var (
	gText  = func(s string) stream.Value { return stream.Value{Kind: stream.ValueText, Data: []byte(s)} }
	gNull  = stream.Value{Kind: stream.ValueNull}
	gToast = stream.Value{Kind: stream.ValueUnchanged}
)

// goldenChanges are the change shapes every kind of plan is rendered for.
func goldenChanges(identity uint8) []struct {
	name string
	ch   stream.Change
} {
	old := []stream.Value{gText("1"), gNull, gNull}
	if identity == stream.IdentityFull {
		old = []stream.Value{gText("1"), gText("a"), gToast}
	}
	return []struct {
		name string
		ch   stream.Change
	}{
		{"insert", stream.Change{Op: stream.OpInsert, New: []stream.Value{gText("1"), gText("a"), gNull}}},
		{"update", stream.Change{Op: stream.OpUpdate, New: []stream.Value{gText("1"), gText("b"), gText("2")}}},
		{"update leaving unchanged TOAST", stream.Change{Op: stream.OpUpdate, New: []stream.Value{gText("1"), gToast, gText("2")}}},
		{"update with the old row", stream.Change{Op: stream.OpUpdate, Old: old, New: []stream.Value{gText("2"), gText("b"), gText("2")}}},
		{"delete", stream.Change{Op: stream.OpDelete, Old: old}},
	}
}

// goldenEnv is the session of the golden statements: an applier writing
// under its replication origin on a target that keeps commit timestamps,
// as every policy but source-wins requires.
func goldenEnv() *conflictEnv {
	return &conflictEnv{source: "src", origin: 7, legacy: 3, repair: RepairOriginName("src", 16384), commitTS: true, localName: "here"}
}

// TestGolden renders the statements apply sends for each kind of plan
// and conflict policy, and checks them against testdata/<kind>.<policy>.golden:
// a change to the generated SQL shows there as a diff, without a
// database (the end-to-end and TestPolicy_Decisions tests check what the
// statements do). go test ./apply -run TestGolden -update rewrites them.
func TestGolden(t *testing.T) {
	for _, k := range goldenKinds {
		for _, pol := range []Policy{PolicySourceWins, PolicyLastWriterWins, PolicyKeepLocal, PolicyError} {
			t.Run(k.name+"."+pol.String(), func(t *testing.T) {
				envs := []struct {
					name string
					cx   *conflictEnv
				}{{"", goldenEnv()}}
				if pol == PolicySourceWins {
					// Source-wins runs without an origin or commit
					// timestamps too.
					envs = append(envs, struct {
						name string
						cx   *conflictEnv
					}{" (no origin, no commit timestamps)", nil})
				}
				var b strings.Builder
				for _, env := range envs {
					for _, c := range goldenChanges(k.identity) {
						p, err := newPlan(k.target(), goldenRel(k.identity))
						if err != nil {
							t.Fatal(err)
						}
						p.policy, p.cx = pol, env.cx
						if (c.ch.Op == stream.OpUpdate || c.ch.Op == stream.OpDelete) && len(p.keys) == 0 && !p.fullMatch {
							continue // refused before any statement (no replica identity)
						}
						sql, oids := p.statement("src", &c.ch)
						goldenStmt(t, &b, c.name+env.name, sql, oids, p.args(&c.ch, goldenLSN, goldenTS, nil))
					}
				}
				checkGolden(t, k.name+"."+pol.String()+".golden", b.String())
			})
		}
	}
	for _, pol := range []Policy{PolicyKeepLocal, PolicyError} {
		// Only these two policies check a TRUNCATE for rows written here.
		t.Run("truncate."+pol.String(), func(t *testing.T) {
			p, err := newPlan(goldenTarget([]string{"id"}), goldenRel(stream.IdentityDefault))
			if err != nil {
				t.Fatal(err)
			}
			p.policy, p.cx = pol, goldenEnv()
			var b strings.Builder
			goldenStmt(t, &b, "truncate", p.truncateCheck("src", p.cx), []uint32{0, 0}, [][]byte{goldenLSN, goldenTS})
			checkGolden(t, "truncate."+pol.String()+".golden", b.String())
		})
	}
	t.Run("run.source-wins", func(t *testing.T) {
		var b strings.Builder
		for _, k := range goldenKinds {
			for _, cx := range []*conflictEnv{goldenEnv(), nil} {
				for _, c := range goldenChanges(k.identity) {
					p, err := newPlan(k.target(), goldenRel(k.identity))
					if err != nil {
						t.Fatal(err)
					}
					p.cx = cx
					if _, ok := p.batchable(&c.ch, nil); !ok {
						continue
					}
					name := k.name + ": " + c.name + " (2 rows)"
					if cx == nil {
						name += " (no origin, no commit timestamps)"
					}
					sql, oids := p.runStatement("src", c.ch.Op, &c.ch, 2)
					args := p.runArgs(&c.ch, goldenLSN, goldenTS, nil)
					args = p.runArgs(&c.ch, goldenLSN, goldenTS, args)
					goldenStmt(t, &b, name, sql, oids, args)
				}
			}
		}
		checkGolden(t, "run.source-wins.golden", b.String())
	})
}
