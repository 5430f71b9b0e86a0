package stream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ConnectOptions authenticate and secure a NATS connection. At most one
// way of authenticating is used: credentials file, NKey seed, user and
// password, or token (credentials in the URL are a fifth, kept for
// compatibility). The zero value connects as the URL says.
//
// See https://docs.nats.io/using-nats/developer/connecting/security.
type ConnectOptions struct {
	// Creds is a .creds file holding a user JWT and its NKey seed
	// (decentralised auth, `nsc generate creds`).
	Creds string
	// NKey is a file holding an NKey user seed (SU...).
	NKey string
	// User and Password authenticate with a user name and password.
	// Password is a secret: it is never logged.
	User, Password string
	// Token authenticates with a token; a secret, never logged.
	Token string
	// TLSCA is a PEM file of the CAs that sign the server's certificate;
	// setting it turns TLS on. Without it the system roots are used when
	// the server requires TLS.
	TLSCA string
	// TLSCert and TLSKey are the PEM client certificate and key, for
	// servers that verify clients (tls { verify: true }).
	TLSCert, TLSKey string
}

// Validate checks that the options name one way of authenticating and
// that every file they name can be read, so a typo is reported at start,
// not as a connection failure.
func (o ConnectOptions) Validate() error {
	var errs []error
	ways := 0
	for _, set := range []bool{o.Creds != "", o.NKey != "", o.User != "" || o.Password != "", o.Token != ""} {
		if set {
			ways++
		}
	}
	if ways > 1 {
		errs = append(errs, errors.New("--nats-creds, --nats-nkey, --nats-user/--nats-password and --nats-token exclude each other: give one"))
	}
	if o.Password != "" && o.User == "" {
		errs = append(errs, errors.New("--nats-password needs --nats-user"))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together: give both"))
	}
	for _, f := range []struct{ flag, path string }{
		{"--nats-creds", o.Creds}, {"--nats-nkey", o.NKey},
		{"--nats-tls-ca", o.TLSCA}, {"--nats-tls-cert", o.TLSCert}, {"--nats-tls-key", o.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		}
	}
	return errors.Join(errs...)
}

// natsOptions translates o into nats.go options.
func (o ConnectOptions) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case o.Creds != "":
		opts = append(opts, nats.UserCredentials(o.Creds))
	case o.NKey != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", o.NKey, err)
		}
		opts = append(opts, opt)
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// Connect dials NATS with settings suited to a long-running daemon: it
// retries forever on connection loss and reports state changes to log.
// It returns an *AuthError when the server refuses the credentials and a
// *TLSError when TLS cannot be established: waiting cures neither.
func Connect(url, name string, o ConnectOptions, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected, reconnecting")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", ConnectedURL(c)).Msg("nats reconnected")
		}),
	}
	auth, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, auth...), extra...)
	if err := ValidateURL("--nats", url); err != nil {
		return nil, &URLError{URL: RedactURL(url), Err: err}
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, classifyConnect(RedactURL(url), o, err)
	}
	return nc, nil
}

// ConnectedURL returns the URL nc is connected to without its password or
// token: nats.go's ConnectedUrlRedacted hides only a password.
func ConnectedURL(nc *nats.Conn) string { return RedactURL(nc.ConnectedUrl()) }

// classifyConnect tells refused credentials and TLS failures, which no
// retry cures, from a server that is not (yet) there.
func classifyConnect(url string, o ConnectOptions, err error) error {
	var bad *neturl.Error
	if errors.As(err, &bad) && bad.Op == "parse" {
		return &URLError{URL: url, Err: err}
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		return &AuthError{URL: url, Err: err}
	}
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownCA):
		fix := "pass the CA that signed it with --nats-tls-ca"
		if o.TLSCA != "" {
			fix = "--nats-tls-ca " + o.TLSCA + " is not the CA that signed it: pass the right one"
		}
		return &TLSError{URL: url, Err: err, Fix: "the server's certificate is signed by an unknown authority; " + fix}
	case errors.As(err, &hostname):
		return &TLSError{URL: url, Err: err, Fix: "the server's certificate is not valid for this host name; connect by a name the certificate lists"}
	case errors.As(err, &invalid):
		return &TLSError{URL: url, Err: err, Fix: "the server's certificate is invalid (expired?); renew it"}
	case errors.Is(err, nats.ErrSecureConnRequired):
		return &TLSError{URL: url, Err: err, Fix: "the server requires TLS; use tls:// in --nats or give --nats-tls-ca"}
	case errors.Is(err, nats.ErrSecureConnWanted):
		return &TLSError{URL: url, Err: err, Fix: "the server does not offer TLS; drop --nats-tls-* or enable tls on the server"}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		// A TLS alert from the server: with verify on, a missing or
		// untrusted client certificate.
		fix := "the server rejected the TLS handshake; give a client certificate it trusts with --nats-tls-cert and --nats-tls-key"
		if o.TLSCert != "" {
			fix = "the server rejected the client certificate " + o.TLSCert + "; give one signed by a CA the server trusts"
		}
		return &TLSError{URL: url, Err: err, Fix: fix}
	}
	return fmt.Errorf("connect to nats %s: %w", url, err)
}

// AuthError is returned by Connect when NATS refuses the credentials:
// retrying cannot cure it.
type AuthError struct {
	URL string
	Err error
}

func (e *AuthError) Error() string {
	return "nats at " + e.URL + " refused the credentials: fix --nats-user/--nats-password, --nats-token, --nats-creds, --nats-nkey or the credentials in the URL (" + e.Err.Error() + ")"
}

func (e *AuthError) Unwrap() error { return e.Err }

// URLError is returned by Connect when a server URL does not parse:
// retrying cannot cure it. Its message leaves out url.Parse's, which
// quotes the URL and pieces of it, password and all.
type URLError struct {
	URL string // redacted
	Err error
}

func (e *URLError) Error() string {
	var scheme *SchemeError
	if errors.As(e.Err, &scheme) {
		return scheme.Error()
	}
	return "NATS URL " + e.URL + " is malformed: use nats://user:password@host:4222 with characters such as @ : / ? # % in the password percent-encoded, or give it with --nats-user and --nats-password-file"
}

func (e *URLError) Unwrap() error { return e.Err }

// natsSchemes are the URL schemes nats.go speaks. It dials any other
// (http://, say) as nats://, so a URL copied from a monitoring page or a
// proxy would connect to whatever answers on its port.
var natsSchemes = []string{"nats", "tls", "ws", "wss"}

// SchemeError is the error of ValidateURL: a server URL whose scheme is
// not NATS's.
type SchemeError struct {
	Flag, URL, Scheme string
}

func (e *SchemeError) Error() string {
	return fmt.Sprintf("%s %s: %s:// is not a NATS URL; use nats://host:4222 (or tls://, ws://, wss://)", e.Flag, e.URL, e.Scheme)
}

// ValidateURL checks that each server of urls (a --nats value: URLs
// separated by commas) has a NATS scheme, or none (nats:// is meant). It
// returns a *SchemeError naming flag otherwise.
func ValidateURL(flag, urls string) error {
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		scheme, _, ok := strings.Cut(u, "://")
		if ok && !slices.Contains(natsSchemes, strings.ToLower(scheme)) {
			return &SchemeError{Flag: flag, URL: RedactURL(u), Scheme: scheme}
		}
	}
	return nil
}

// TLSError is returned by Connect when a TLS connection to NATS cannot be
// established: retrying cannot cure it.
type TLSError struct {
	URL string
	Err error
	// Fix names the cause and what to change.
	Fix string
}

func (e *TLSError) Error() string {
	return "nats at " + e.URL + ": TLS failed: " + e.Fix + " (" + e.Err.Error() + ")"
}

func (e *TLSError) Unwrap() error { return e.Err }

// IsPermanent reports whether err from Connect is one that retrying cannot
// cure (refused credentials, a TLS failure, a malformed URL).
func IsPermanent(err error) bool {
	var a *AuthError
	var t *TLSError
	var u *URLError
	return errors.As(err, &a) || errors.As(err, &t) || errors.As(err, &u)
}
