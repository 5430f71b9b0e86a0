package e2e

import (
	"strings"
	"testing"
)

// TestVerify_Filters: a replica of a capture with --exclude-tables and
// --exclude-columns lacks a table and holds NULL in a column. Verify with
// the same filters finds it identical and says what it left out; narrowed
// by PGJET_TABLES from the environment (meant for pgjet-capture), it says
// so and names the tables it did not compare, instead of reporting all
// tables identical.
func TestVerify_Filters(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY)`,
		`CREATE TABLE secret (id int PRIMARY KEY, ssn text, v text)`)
	exec1(t, c.src, `INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 10) g`, `INSERT INTO b SELECT generate_series(1, 10)`,
		`INSERT INTO secret SELECT g, 'ssn' || g, 'v' || g FROM generate_series(1, 10) g`)
	exec1(t, c.dst, `DROP TABLE b`, `INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 10) g`,
		`INSERT INTO secret SELECT g, NULL, 'v' || g FROM generate_series(1, 10) g`)
	base := []string{"--source", c.src, "--target", c.dst, "--wait-lsn=false"}

	expectVerify(t, 1, nil, base...) // unfiltered: the replica lacks what the capture left out
	out := expectVerify(t, 0, nil, append(base, "--exclude-tables", "public.b", "--exclude-columns", "*.secret.ssn")...)
	wantLines(t, out,
		"public.a: 10 rows in 1 chunks, ok",
		"public.secret: 10 rows in 1 chunks, ok (not compared: column ssn)",
		"filters: --exclude-tables public.b, --exclude-columns *.secret.ssn",
		"not compared: 1 source table: public.b",
		"all 2 tables identical (1 source table not compared)",
	)

	t.Run("PGJET_TABLES", func(t *testing.T) {
		wantLines(t, expectVerify(t, 0, []string{"PGJET_TABLES=public.a"}, base...),
			"filters: --tables public.a (from PGJET_TABLES)",
			"not compared: 2 source tables: public.b, public.secret",
			"all 1 tables identical (2 source tables not compared)",
		)
	})
}

// TestVerify_NullKeys: a target table without the source's primary key
// can hold rows whose key is NULL; no key range selects them, so they
// must be counted in a range of their own.
func TestVerify_NullKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE nk (id int PRIMARY KEY, v text)`, `INSERT INTO nk SELECT g, 'v' FROM generate_series(1, 10) g`)
	exec1(t, c.dst, `CREATE TABLE nk (id int, v text)`, `INSERT INTO nk SELECT g, 'v' FROM generate_series(1, 10) g`,
		`INSERT INTO nk VALUES (NULL, 'extra'), (NULL, 'extra')`)
	out := expectVerify(t, 1, nil, "--source", c.src, "--target", c.dst, "--wait-lsn=false", "--chunk-rows", "3")
	wantLines(t, out, "public.nk: 1 of 5 ranges differ: rows with a NULL key: 0 vs 2 rows")
}

// TestVerify_ICUDefault: the same text keys in a database whose default
// collation is ICU's and in one whose default is libc's, both with the
// same datcollate: key ranges must select the same keys on both sides.
func TestVerify_ICUDefault(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE DATABASE icu LOCALE_PROVIDER icu ICU_LOCALE 'und' TEMPLATE template0`)
	src := c.primary.URL("icu")
	if p := queryString(t, src, "SELECT datlocprovider::text FROM pg_database WHERE datname = current_database()"); p != "i" {
		t.Fatalf("database icu has locale provider %q, want i (ICU)", p)
	}
	words := `INSERT INTO words SELECT x FROM unnest(ARRAY['a', 'B', 'c', 'D', 'e', 'F', '_g', 'Hh', 'hh', 'i']) x`
	exec1(t, src, `CREATE TABLE words (w text PRIMARY KEY)`, words)
	exec1(t, c.dst, `CREATE TABLE words (w text PRIMARY KEY)`, words)
	out := expectVerify(t, 0, nil, "--source", src, "--target", c.dst, "--wait-lsn=false", "--chunk-rows", "3")
	wantLines(t, out, "public.words: 10 rows in 4 chunks, ok", "all 1 tables identical")
}

// expectVerify runs pgjet verify with env added to its environment, fails
// the test unless it exits with code, and returns its stdout.
func expectVerify(t *testing.T, code int, env []string, args ...string) string {
	t.Helper()
	got, out, errOut := runPgjetVerifyEnv(t, env, args...)
	if got != code {
		t.Fatalf("pgjet verify %s: exit %d, want %d; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, out, errOut)
	}
	return out
}
