package schema

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:secret@h:5432/db", "postgres://u:xxxxx@h:5432/db"},
		{"postgres://u@h/db?password=secret&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"postgres://h/db", "postgres://h/db"},
		{"host=h user=u password=secret dbname=d", "host=h user=u password=xxxxx dbname=d"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := Redact(tc.in); got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
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
