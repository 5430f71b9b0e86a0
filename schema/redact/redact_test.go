package redact

import "testing"

// Postgres and NATS are tested through their callers, schema.Redact and
// stream.RedactURL, with a fuzz test each.

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
