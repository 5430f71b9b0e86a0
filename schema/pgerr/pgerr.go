// Package pgerr tells a Postgres error a user must fix (FatalError, with a
// message naming cause and fix) from one that retrying will cure, by
// SQLSTATE code and by the connection errors pgx returns. Connection
// strings in its messages are redacted (package redact).
//
// See https://www.postgresql.org/docs/15/errcodes-appendix.html
package pgerr

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgjet/pgjet/schema/redact"
)

// FatalError is an error that retrying cannot cure: the user must change
// a setting, a privilege or the data. Its message names cause and fix.
type FatalError struct {
	Msg string
	Err error
}

func (e *FatalError) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + " (" + e.Err.Error() + ")"
}

func (e *FatalError) Unwrap() error { return e.Err }

// Fatalf returns a FatalError whose message is formatted; err (may be nil)
// is kept as the cause.
func Fatalf(err error, format string, args ...any) error {
	return &FatalError{Msg: fmt.Sprintf(format, args...), Err: err}
}

// IsFatal reports whether err, or an error it wraps, is a FatalError.
func IsFatal(err error) bool {
	var f *FatalError
	return errors.As(err, &f)
}

// SQLSTATE codes pgjet classifies.
const (
	CodeInvalidPassword      = "28P01"
	CodeInvalidAuthorization = "28000"
	CodeInvalidCatalogName   = "3D000"
	CodeInsufficientPriv     = "42501"
	CodeUndefinedTable       = "42P01"
	CodeUndefinedColumn      = "42703"
	CodeObjectInUse          = "55006"
	CodeDuplicateObject      = "42710"
)

// PgCode returns the SQLSTATE of err, or "".
func PgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// ClassifyConnect turns an error from connecting to Postgres at url into
// a FatalError when the user must fix something (password, database name,
// role), and leaves it retryable otherwise (server down, network).
func ClassifyConnect(url string, err error) error {
	if err == nil {
		return nil
	}
	where := redact.Postgres(url)
	switch PgCode(err) {
	case CodeInvalidPassword:
		return Fatalf(err, "postgres rejected the password for %s: fix the password in the URL or PGPASSWORD", where)
	case CodeInvalidAuthorization:
		return Fatalf(err, "postgres refused the connection to %s (pg_hba.conf or role): allow this host/role in pg_hba.conf or use another role", where)
	case CodeInvalidCatalogName:
		return Fatalf(err, "database in %s does not exist: create it or fix the URL", where)
	}
	var pe *pgconn.ParseConfigError
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pe) && errors.As(err, &pathErr):
		return Fatalf(withheld{err, redact.Within(pathErr.Error(), url)}, "a file that %s names cannot be read (sslrootcert, sslcert, sslkey or passfile): fix the path or its permissions", where)
	case errors.As(err, &pe) && (errors.Is(err, x509.IncorrectPasswordError) || strings.Contains(err.Error(), "decryption password incorrect")):
		return Fatalf(withheld{err, parseDetail(url, pe)}, "the sslpassword in %s does not decrypt the client key (sslkey): give the key's pass phrase", where)
	case errors.As(err, &pe) && strings.Contains(err.Error(), "unable to find sslpassword"):
		return Fatalf(withheld{err, parseDetail(url, pe)}, "the client key (sslkey) that %s names is encrypted: give its pass phrase with sslpassword=... in the URL", where)
	case errors.As(err, &pe):
		return Fatalf(withheld{err, parseDetail(url, pe)}, "connection URL %s is malformed: use postgres://user:password@host:port/dbname with characters such as @ : / ? # %% in the password percent-encoded, or give the password with --db-password-file or PGPASSWORD", where)
	}
	// TLS to Postgres that cannot be established: waiting cures nothing.
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownCA):
		return Fatalf(err, "postgres TLS at %s: the server's certificate is signed by an unknown authority; name the CA that signed it with sslrootcert=FILE in the URL", where)
	case errors.As(err, &hostname):
		return Fatalf(err, "postgres TLS at %s: the server's certificate is not valid for this host name; connect by a name it lists, or use sslmode=verify-ca", where)
	case errors.As(err, &invalid):
		return Fatalf(err, "postgres TLS at %s: the server's certificate is invalid (expired?); renew it", where)
	}
	return fmt.Errorf("connect to postgres %s: %w", where, err)
}

// IsRetryable reports whether err is likely cured by waiting: a network
// error, a server shutting down or starting, a connection lost.
func IsRetryable(err error) bool {
	if err == nil || IsFatal(err) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	code := PgCode(err)
	switch {
	case code == "":
		return true // connection-level failures carry no SQLSTATE
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "57"), strings.HasPrefix(code, "53"):
		return true // connection exception, operator intervention, resources
	case code == CodeObjectInUse, code == "40001", code == "40P01":
		return true
	}
	return false
}

// withheld wraps an error whose message may quote a password: errors.Is
// and errors.As still reach it, but msg is shown instead.
type withheld struct {
	err error
	msg string
}

func (w withheld) Error() string { return w.msg }
func (w withheld) Unwrap() error { return w.err }

// quotedPiece is a quoted piece of input in a pgx parse error.
var quotedPiece = regexp.MustCompile(`"[^"]*"`)

// parseDetail returns what pgx found wrong in the connection string dsn,
// without the string itself: pgx quotes it with a best-effort redaction
// that lets parts of a malformed password through.
func parseDetail(dsn string, pe *pgconn.ParseConfigError) string {
	msg := pe.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		msg = msg[i+len("`: "):]
	}
	msg = quotedPiece.ReplaceAllString(msg, `"..."`)
	return redact.Within(msg, dsn)
}

// CheckConnect connects to db once, for a --check-config report. On
// success it returns the connection and a line saying where and as whom;
// otherwise an error naming the cause and the fix.
func CheckConnect(ctx context.Context, db string) (*pgx.Conn, string, error) {
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		err = ClassifyConnect(db, err)
		if !IsFatal(err) {
			err = fmt.Errorf("%w; is Postgres running there? check --db", err)
		}
		return nil, "", err
	}
	var role, version string
	if err := conn.QueryRow(ctx, "SELECT current_user, current_setting('server_version')").Scan(&role, &version); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, "", fmt.Errorf("query %s: %w", redact.Postgres(db), err)
	}
	return conn, fmt.Sprintf("connected to %s as %s (PostgreSQL %s)", redact.Postgres(db), role, version), nil
}
