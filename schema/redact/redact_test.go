package redact

import (
	"strings"
	"testing"
)

// Postgres and NATS are tested through their callers, with a fuzz test
// each: pgerr's FuzzRedact (with the errors of pgerr.ClassifyConnect) and
// stream.RedactURL.

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"connect to postgres://u:secret@h/db: refused", "connect to postgres://u:xxxxx@h/db: refused"},
		{"from postgres://u:p1@a/db to postgres://u:p2@b/db", "from postgres://u:xxxxx@a/db to postgres://u:xxxxx@b/db"},
		{"cannot parse `host=h password='a b'`: invalid", "cannot parse `host=h password=xxxxx`: invalid"},
		{"bad u:secret@h/db given", "bad u:xxxxx@h/db given"},
		{`password authentication failed for user "u"`, `password authentication failed for user "u"`},
		{"dial tcp 127.0.0.1:5432: connection refused", "dial tcp 127.0.0.1:5432: connection refused"},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWithin(t *testing.T) {
	conn := "postgres://u:sec/ret@h/db"
	if got, want := Within(`invalid port "sec/ret" in postgres://u:sec/ret@h/db`, conn), `invalid port "xxxxx" in postgres://u:xxxxx@h/db`; got != want {
		t.Errorf("Within = %q, want %q", got, want)
	}
}

// TestParam: a parameter is read as pgx reads it, in every form, and the
// client key's pass phrase is one of the secrets WithoutPassword removes.
func TestParam(t *testing.T) {
	for _, tc := range []struct{ conn, want string }{
		{"host=h sslpassword=plain dbname=d", "plain"},
		{`host=h sslpassword='a b\'c\\d' dbname=d`, `a b'c\d`},
		{`sslpassword = 'sp aced'`, "sp aced"},
		{`sslpassword=a\ b host=h`, "a b"},
		{"postgres://u@h/d?sslmode=require&sslpassword=a%20b%26c+d", "a b&c+d"},
		{"postgresql://u@h/d?sslpassword=x%2Fy", "x/y"},
	} {
		got, ok := Param(tc.conn, "sslpassword")
		if !ok || got != tc.want {
			t.Errorf("Param(%q) = %q, %v; want %q", tc.conn, got, ok, tc.want)
		}
		if out := WithoutPassword(tc.conn); strings.Contains(out, "sslpassword") {
			t.Errorf("WithoutPassword(%q) = %q keeps the sslpassword", tc.conn, out)
		}
	}
	for _, conn := range []string{"host=h dbname=d", "postgres://u:pw@h/d", "host=h password=sslpassword"} {
		if v, ok := Param(conn, "sslpassword"); ok {
			t.Errorf("Param(%q) = %q, want none", conn, v)
		}
	}
}
