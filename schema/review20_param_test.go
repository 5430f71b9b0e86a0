package schema

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema/redact"
)

// TestParam_ReadsAsPgx: redact.Param is to read a parameter as pgx does:
// pg_dump's service file gets the sslpassword it reads, and pg_dump's
// command line no longer has it. pgx, as libpq, ends the user info at the
// first '@' before any '/', so a password may hold a raw '?'; Param took
// the query to start at the first '?' of the whole URL, inside the
// password, and missed its first parameter. In a keyword/value string that
// gives a parameter twice, Param read the first, pgx (as libpq) the last.
// Either way pg_dump got no sslpassword, or another than capture's own
// connection uses: every snapshot failed, and was retried for ever, where
// the command line had worked. application_name stands in for
// sslpassword, which pgx parses the same way but keeps in no field.
func TestParam_ReadsAsPgx(t *testing.T) {
	for _, conn := range []string{
		"postgres://u:pa?ss@h:5432/d?application_name=pgjetapp",
		"postgresql://u?x:pw@h/d?sslmode=disable&application_name=pgjetapp",
		// Given twice, the last one counts, for pgx as for libpq.
		"host=h application_name=first application_name=pgjetapp",
	} {
		cfg, err := pgx.ParseConfig(conn)
		if err != nil {
			t.Fatalf("pgx does not read %q: %v", conn, err)
		}
		want := cfg.RuntimeParams["application_name"]
		if got, ok := redact.Param(conn, "application_name"); !ok || got != want {
			t.Errorf("redact.Param(%q, application_name) = %q, %v; pgx reads %q", conn, got, ok, want)
		}
	}
}
