package schema

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestWithoutOwners: pg_dump's scripts with owners and privileges (taken
// from PostgreSQL 15) lose every OWNER TO, GRANT, REVOKE and default
// privilege, and nothing else: a function body that holds such text,
// a view with a column named owner and the policies stay.
func TestWithoutOwners(t *testing.T) {
	for _, name := range []string{"owners-pre-data", "owners-post-data"} {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", name+".sql"))
			if err != nil {
				t.Fatal(err)
			}
			got := WithoutOwners(string(in))
			golden := filepath.Join("testdata", name+".no-owners.sql")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("WithoutOwners(%s) differs from %s (go test -run TestWithoutOwners -update rewrites it):\n%s", name, golden, got)
			}
			for _, st := range SplitStatements(got) {
				if ownerStatement(st) {
					t.Errorf("kept %q", st)
				}
			}
		})
	}
	for _, tc := range []struct {
		st    string
		owner bool
	}{
		{"ALTER TABLE public.t OWNER TO app", true},
		{`ALTER FUNCTION public.f(integer) OWNER TO "Odd ""x"""`, true},
		{"GRANT SELECT ON TABLE public.t TO reader", true},
		{"REVOKE ALL ON FUNCTION public.f() FROM PUBLIC", true},
		{"ALTER DEFAULT PRIVILEGES FOR ROLE app GRANT SELECT ON TABLES TO reader", true},
		{"SET SESSION AUTHORIZATION app", true},
		{"RESET SESSION AUTHORIZATION", true},
		{"ALTER TABLE ONLY public.t ALTER COLUMN owner SET DEFAULT 1", false},
		{`ALTER TABLE ONLY public.t ADD CONSTRAINT c CHECK (("OWNER" = 'TO'))`, false},
		{"CREATE POLICY p ON public.t TO reader USING (true)", false},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN ALTER TABLE t OWNER TO x; END$$", false},
		{"SET default_tablespace = ''", false},
	} {
		if got := ownerStatement(tc.st); got != tc.owner {
			t.Errorf("ownerStatement(%q) = %v, want %v", tc.st, got, tc.owner)
		}
	}
	if got := WithoutOwners("CREATE TABLE t (a int);\nALTER TABLE t OWNER TO x;"); !strings.HasPrefix(got, "CREATE TABLE t (a int);") || strings.Contains(got, "OWNER") {
		t.Errorf("WithoutOwners = %q", got)
	}
}
