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

func TestSplitPassword(t *testing.T) {
	dsn, pw := splitPassword("postgres://app:s3cret@db:5432/app?sslmode=require")
	if pw != "s3cret" || strings.Contains(dsn, "s3cret") || !strings.Contains(dsn, "app@db:5432/app?sslmode=require") {
		t.Errorf("splitPassword = %q, %q", dsn, pw)
	}
	if dsn, pw := splitPassword("host=db user=app"); dsn != "host=db user=app" || pw != "" {
		t.Errorf("keyword form changed: %q, %q", dsn, pw)
	}
}
