package pgerr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgjet/pgjet/schema/redact"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:secret@h:5432/db", "postgres://u:xxxxx@h:5432/db"},
		{"postgres://u@h/db?password=secret&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"postgres://u@h/db?sslmode=disable&sslpassword=secret", "postgres://u@h/db?sslmode=disable&sslpassword=xxxxx"},
		{"postgres://u@h/db?pass%77ord=secret", "postgres://u@h/db?pass%77ord=xxxxx"},
		{"postgres://h/db", "postgres://h/db"},
		{"postgres://u@h1:5432,h2:5433/db", "postgres://u@h1:5432,h2:5433/db"},
		{"host=h user=u password=secret dbname=d", "host=h user=u password=xxxxx dbname=d"},
		// url.Parse rejects these; the password must go all the same.
		{"postgres://u:se%cret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:sec/ret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:sec#ret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:1234#secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:sec@ret@h/db", "postgres://u:xxxxx@h/db"},
		// Keyword form as libpq reads it: quoted, spaced, escaped.
		{"host=h password='a b c' dbname=d", "host=h password=xxxxx dbname=d"},
		{"host=h password = secret dbname=d", "host=h password = xxxxx dbname=d"},
		{`host=h password='it\'s secret' dbname=d`, "host=h password=xxxxx dbname=d"},
		{`host=h password=sec\ ret dbname=d`, "host=h password=xxxxx dbname=d"},
		{"host=h password='unterminated secret", "host=h password=xxxxx"},
		{"host=h sslpassword=secret", "host=h sslpassword=xxxxx"},
		{"host='h'password=secret", "host='h'password=xxxxx"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := redact.Postgres(tc.in); got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestClassifyConnect_Malformed checks that the error for a connection
// string pgx cannot parse names the fix without quoting the password, which
// pgx's own message may do.
func TestClassifyConnect_Malformed(t *testing.T) {
	for _, tc := range []struct{ url, secret string }{
		{"postgres://u:se%cret@h/db", "se%cret"},
		{"postgres://u:sec/ret@h/db", "sec/ret"},
		{"postgres://u:sec#ret@h:x/db", "sec#ret"},
		{"postgres://a@u:sec:ret@h/db", "sec:ret"},
		{"host=h password='never closed", "never closed"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := pgx.ParseConfig(tc.url)
			if err == nil {
				t.Fatalf("pgx parsed %q; the test wants a malformed one", tc.url)
			}
			got := ClassifyConnect(tc.url, err)
			if !IsFatal(got) {
				t.Errorf("ClassifyConnect = %v, want a fatal error", got)
			}
			if msg := got.Error(); strings.Contains(msg, tc.secret) || strings.Count(msg, "\n") > 0 {
				t.Errorf("error is not one line without the password %q: %s", tc.secret, msg)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, tc := range []struct {
		name             string
		err              error
		fatal, retryable bool
	}{
		{"password", ClassifyConnect("postgres://u:p@h/d", pg(CodeInvalidPassword)), true, false},
		{"no database", ClassifyConnect("postgres://u:p@h/d", pg(CodeInvalidCatalogName)), true, false},
		{"refused", ClassifyConnect("postgres://u:p@h/d", errors.New("dial tcp: connection refused")), false, true},
		{"shutdown", fmt.Errorf("x: %w", pg("57P01")), false, true},
		{"syntax", pg("42601"), false, false},
		{"canceled", context.Canceled, false, false},
		{"fatal", Fatalf(nil, "fix it"), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsFatal(tc.err); got != tc.fatal {
				t.Errorf("IsFatal(%v) = %v, want %v", tc.err, got, tc.fatal)
			}
			if got := IsRetryable(tc.err); got != tc.retryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.retryable)
			}
		})
	}
	if got := ClassifyConnect("postgres://u:secret@h/d", pg(CodeInvalidPassword)).Error(); contains(got, "secret") {
		t.Errorf("error leaks the password: %s", got)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestRedact_KeywordPasswordWithSpaces: a keyword/value password with a
// space that is not quoted as libpq wants (unquoted, or in double quotes)
// is malformed, and the error prints the string: no piece of the
// password may show, in Redact or in the error.
func TestRedact_KeywordPasswordWithSpaces(t *testing.T) {
	t.Parallel()
	for _, conn := range []string{
		`host=h user=u password=first Second3rd dbname=d`,
		`host=h user=u password="first Second3rd" dbname=d`,
		`host=h user=u password="first Second3rd"`,
		`host=h password = first Second3rd Third4th dbname=d`,
	} {
		t.Run(conn, func(t *testing.T) {
			if got := redact.Postgres(conn); strings.Contains(got, "Second3rd") || strings.Contains(got, "Third4th") {
				t.Errorf("Redact(%q) = %q shows a piece of the password", conn, got)
			}
			_, err := pgx.ParseConfig(conn)
			if err == nil {
				t.Fatalf("pgx parsed %q; the test wants a malformed one", conn)
			}
			if msg := ClassifyConnect(conn, err).Error(); strings.Contains(msg, "Second3rd") || strings.Contains(msg, "Third4th") {
				t.Errorf("ClassifyConnect of %q shows a piece of the password: %s", conn, msg)
			}
		})
	}
}
