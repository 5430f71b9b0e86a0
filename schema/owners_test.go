package schema

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// checkGolden compares got with testdata/name (go test -update rewrites
// it).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name)
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
		t.Errorf("%s differs from %s (go test -run %s -update rewrites it):\n%s", t.Name(), golden, t.Name(), got)
	}
}

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
			checkGolden(t, name+".no-owners.sql", got)
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

// TestSchemaACLsFirst: the privileges on schemas move to just after the
// schemas are made, before the first object whose ALTER ... OWNER TO
// needs them; nothing else moves, and text in a function body that looks
// like a pg_dump entry is never taken for one.
func TestSchemaACLsFirst(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "owners-pre-data.sql"))
	if err != nil {
		t.Fatal(err)
	}
	got := SchemaACLsFirst(string(in))
	checkGolden(t, "owners-pre-data.schema-acls-first.sql", got)
	if g, o := strings.Index(got, "GRANT CREATE ON SCHEMA public TO app"), strings.Index(got, "ALTER TYPE public.mood OWNER TO app"); g < 0 || g > o {
		t.Errorf("the schema's GRANT is not before the first OWNER TO:\n%s", got)
	}

	script := `SET check_function_bodies = false;

--
-- Name: s; Type: SCHEMA; Schema: -; Owner: app
--

CREATE SCHEMA s;


ALTER SCHEMA s OWNER TO app;

--
-- Name: f(); Type: FUNCTION; Schema: s; Owner: app2
--

CREATE FUNCTION s.f() RETURNS void
    LANGUAGE sql
    AS $$
--
-- Name: SCHEMA s; Type: ACL; Schema: -; Owner: app
--
SELECT 1; $$;


ALTER FUNCTION s.f() OWNER TO app2;

--
-- Name: SCHEMA s; Type: ACL; Schema: -; Owner: app
--

GRANT CREATE ON SCHEMA s TO app2;
REVOKE USAGE ON SCHEMA s FROM PUBLIC;
`
	got = SchemaACLsFirst(script)
	stmts := SplitStatements(got)
	var order []string
	for _, st := range stmts {
		toks := tokens(st, 2)
		order = append(order, strings.Join(toks, " "))
	}
	if want := []string{"SET CHECK_FUNCTION_BODIES", "CREATE SCHEMA", "ALTER SCHEMA", "GRANT CREATE", "REVOKE USAGE", "CREATE FUNCTION", "ALTER FUNCTION"}; strings.Join(order, ", ") != strings.Join(want, ", ") {
		t.Errorf("statements in order %q, want %q:\n%s", order, want, got)
	}
	if len(SplitStatements(script)) != len(stmts) || !strings.Contains(got, "$$\n--\n-- Name: SCHEMA s; Type: ACL; Schema: -; Owner: app\n--\nSELECT 1; $$") {
		t.Errorf("the function body changed:\n%s", got)
	}
	if plain := "SET x = 1;\nCREATE TABLE t (a int);\n"; SchemaACLsFirst(plain) != plain {
		t.Errorf("a script without schema privileges changed: %q", SchemaACLsFirst(plain))
	}
}
