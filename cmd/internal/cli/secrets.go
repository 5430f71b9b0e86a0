package cli

import (
	"fmt"
	neturl "net/url"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// NATSFlags are the NATS authentication and TLS flags of every command
// that connects to NATS. Secrets come from files (--nats-password-file,
// --nats-token-file) or the environment (PGJET_NATS_PASSWORD,
// PGJET_NATS_TOKEN), so they stay out of process listings.
type NATSFlags struct {
	opts         stream.ConnectOptions
	passwordFile string
	tokenFile    string
}

// Register adds the --nats-* auth and TLS flags to fs.
func (n *NATSFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&n.opts.Creds, "nats-creds", "", "NATS credentials file (user JWT and NKey seed)")
	fs.StringVar(&n.opts.NKey, "nats-nkey", "", "file holding a NATS NKey user seed")
	fs.StringVar(&n.opts.User, "nats-user", "", "NATS user name")
	fs.StringVar(&n.opts.Password, "nats-password", "", "NATS password (prefer PGJET_NATS_PASSWORD or --nats-password-file)")
	fs.StringVar(&n.passwordFile, "nats-password-file", "", "file whose content is the NATS password")
	fs.StringVar(&n.opts.Token, "nats-token", "", "NATS token (prefer PGJET_NATS_TOKEN or --nats-token-file)")
	fs.StringVar(&n.tokenFile, "nats-token-file", "", "file whose content is the NATS token")
	fs.StringVar(&n.opts.TLSCA, "nats-tls-ca", "", "PEM file of the CA(s) that sign the NATS server's certificate (turns TLS on)")
	fs.StringVar(&n.opts.TLSCert, "nats-tls-cert", "", "PEM client certificate, for servers that verify clients")
	fs.StringVar(&n.opts.TLSKey, "nats-tls-key", "", "PEM key of --nats-tls-cert")
}

// Options returns the connect options, with the password and token read
// from their files.
func (n *NATSFlags) Options() (stream.ConnectOptions, error) {
	o := n.opts
	var err error
	if n.passwordFile != "" {
		if o.Password != "" {
			return o, fmt.Errorf("--nats-password and --nats-password-file exclude each other: give one")
		}
		if o.Password, err = ReadSecret("--nats-password-file", n.passwordFile); err != nil {
			return o, err
		}
	}
	if n.tokenFile != "" {
		if o.Token != "" {
			return o, fmt.Errorf("--nats-token and --nats-token-file exclude each other: give one")
		}
		if o.Token, err = ReadSecret("--nats-token-file", n.tokenFile); err != nil {
			return o, err
		}
	}
	return o, o.Validate()
}

// ReadSecret reads a secret from a file, without the trailing newline an
// editor or `echo` leaves. flag names the flag in the error.
func ReadSecret(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return s, nil
}

// DBFlags are the Postgres secret flags of the daemons.
type DBFlags struct {
	passwordFile string
}

// Register adds --db-password-file to fs.
func (d *DBFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&d.passwordFile, "db-password-file", "", "file whose content is the database password; replaces any password in --db (PGPASSWORD and ~/.pgpass work too)")
}

// URL returns db with the password from --db-password-file, if given; on
// an error, db unchanged.
// Both URL (postgres://) and keyword/value (host=... user=...) forms are
// accepted, as by libpq.
func (d *DBFlags) URL(db string) (string, error) {
	if d.passwordFile == "" || db == "" {
		return db, nil
	}
	pw, err := ReadSecret("--db-password-file", d.passwordFile)
	if err != nil {
		return db, err // db stays, so no "--db is required" follows
	}
	url, err := WithPassword(db, pw)
	if err != nil {
		return db, err
	}
	return url, nil
}

// WithPassword returns the connection string db with pw as its only
// password: any password db holds (in the user info, a password= query
// parameter or keyword) is dropped, so that the file's wins.
func WithPassword(db, pw string) (string, error) {
	db = redact.WithoutPassword(db)
	if strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") {
		scheme, rest, _ := strings.Cut(db, "://")
		user := ""
		// pgx's user info ends at an '@' before any '/'.
		if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
			user, rest = rest[:i], rest[i+1:]
		}
		name, err := neturl.PathUnescape(user)
		if err != nil {
			// The error would quote the user name.
			return "", fmt.Errorf("--db: the user name in the URL is not valid percent-encoding")
		}
		return scheme + "://" + neturl.UserPassword(name, pw).String() + "@" + rest, nil
	}
	// Keyword/value form.
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)
	return strings.TrimSpace(db + " password='" + quoted + "'"), nil
}
