package capture

import (
	"strings"
	"testing"
)

func TestFilterDump(t *testing.T) {
	in := `--
-- PostgreSQL database dump
--

\restrict abc123

SET statement_timeout = 0;

--
-- Name: t; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.t (id int);

--
-- Name: pgjet_ddl_end; Type: EVENT TRIGGER; Schema: -; Owner: -
--

CREATE EVENT TRIGGER pgjet_ddl_end ON ddl_command_end
   EXECUTE FUNCTION pgjet.ddl_capture();

--
-- Name: pgjet_ddl_drop; Type: EVENT TRIGGER; Schema: -; Owner: -
--

CREATE EVENT TRIGGER pgjet_ddl_drop ON sql_drop
   EXECUTE FUNCTION pgjet.ddl_capture();

--
-- Name: u; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.u (id int);

--
-- Name: pgjet_ddl_x; Type: EVENT TRIGGER; Schema: -; Owner: -
--

CREATE EVENT TRIGGER pgjet_ddl_x ON sql_drop
   EXECUTE FUNCTION pgjet.ddl_capture();

--
-- PostgreSQL database dump complete
--

\unrestrict abc123
`
	got := string(filterDump([]byte(in)))
	for _, gone := range []string{"EVENT TRIGGER", "pgjet.ddl_capture", `\restrict`, `\unrestrict`} {
		if strings.Contains(got, gone) {
			t.Errorf("filtered script still holds %q:\n%s", gone, got)
		}
	}
	for _, kept := range []string{"SET statement_timeout = 0;", "CREATE TABLE public.t (id int);\n", "CREATE TABLE public.u (id int);\n", "-- Name: u; Type: TABLE"} {
		if !strings.Contains(got, kept) {
			t.Errorf("filtered script lost %q:\n%s", kept, got)
		}
	}
}

// TestSplitPassword checks that pg_dump gets the password pgx would use
// in PGPASSWORD and a connection string without any password, since its
// command line is visible to every local user (ps).
func TestSplitPassword(t *testing.T) {
	for _, tc := range []struct{ in, dsn, pw string }{
		{"postgres://app:s3cret@db:5432/app?sslmode=require", "postgres://app@db:5432/app?sslmode=require", "s3cret"},
		{"postgres://app@db/app?sslmode=require&password=s3cret", "postgres://app@db/app?sslmode=require", "s3cret"},
		{"postgres://app:old@db/app?password=s3cret&application_name=a", "postgres://app@db/app?application_name=a", "s3cret"},
		{"host=db user=app password='s3 cret' dbname=app", "host=db user=app dbname=app", "s3 cret"},
		{"host=db password=old user=app password = s3cret", "host=db user=app", "s3cret"},
		{"host=db user=app", "host=db user=app", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Setenv("PGPASSWORD", "")
			t.Setenv("PGPASSFILE", "/nonexistent")
			dsn, pw := splitPassword(tc.in)
			if dsn != tc.dsn || pw != tc.pw {
				t.Errorf("splitPassword(%q) = %q, %q; want %q, %q", tc.in, dsn, pw, tc.dsn, tc.pw)
			}
		})
	}
}
