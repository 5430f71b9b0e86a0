package layering

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pgjet/pgjet"

// deps maps each project package (without the test files) to the project
// packages it depends on, directly or not, as go list sees them.
func deps(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %s/...: %v\n%s", module, err, stderr)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		var own []string
		for _, d := range f[1:] {
			if inside(d, module) {
				own = append(own, strings.TrimPrefix(d, module+"/"))
			}
		}
		m[strings.TrimPrefix(f[0], module+"/")] = own
	}
	return m
}

// inside says whether package p is dir or below it.
func inside(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// TestImportRules fails when a change breaks the layering the README and
// the style guide promise. The two sides of the wire meet only in stream;
// stream and schema are imported by both and so may import neither, nor
// anything else of pgjet but leaves: the redactor and, for schema, its
// error classifier.
func TestImportRules(t *testing.T) {
	graph := deps(t)
	for _, rule := range []struct {
		from   string   // a package and everything below it
		forbid []string // may not depend on these trees
		allow  []string // or, when set, may depend on only these trees
	}{
		{from: "capture", forbid: []string{"apply"}},
		{from: "apply", forbid: []string{"capture"}},
		// pgjet.applied's one reader and verify's engine serve apply,
		// pgjet status and pgjet verify alike, so neither may pull in
		// the applier.
		{from: "apply/applied", allow: []string{"stream", "schema/redact"}},
		{from: "apply/verify", allow: []string{"apply/applied", "schema", "stream"}},
		{from: "stream", allow: []string{"schema/redact"}},
		{from: "schema", allow: []string{}},
		{from: "schema/pgerr", allow: []string{"schema/redact"}},
		{from: "schema/redact", allow: []string{}},
	} {
		t.Run(rule.from, func(t *testing.T) {
			found := false
			for pkg, ds := range graph {
				if !inside(pkg, rule.from) {
					continue
				}
				found = true
				for _, d := range ds {
					inTree := func(dir string) bool { return inside(d, dir) }
					if rule.allow != nil && !inside(d, rule.from) && !slices.ContainsFunc(rule.allow, inTree) {
						but := "outside " + rule.from
						if len(rule.allow) > 0 {
							but += " but " + strings.Join(rule.allow, ", ")
						}
						t.Errorf("%s depends on %s; it may depend on no pgjet package %s", pkg, d, but)
					}
					if slices.ContainsFunc(rule.forbid, inTree) {
						t.Errorf("%s depends on %s; %s and %s never import each other (what both need belongs in stream)", pkg, d, rule.from, strings.Join(rule.forbid, ", "))
					}
				}
			}
			if !found {
				t.Fatalf("no package %s: update this rule with the layout", rule.from)
			}
		})
	}
}
