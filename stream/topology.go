package stream

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/redact"
)

var sourceNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateSource checks a source name: it becomes part of subjects, stream
// and consumer names, so it is restricted to letters, digits, '_' and '-'.
func ValidateSource(name string) error { return validateName("source", name) }

// ValidateRegion checks a region name, which names consumers and streams
// as a source name does.
func ValidateRegion(name string) error { return validateName("region", name) }

func validateName(kind, name string) error {
	if !sourceNameRE.MatchString(name) {
		return fmt.Errorf("%s name %q is invalid: use 1-64 letters, digits, '_' or '-'", kind, name)
	}
	return nil
}

// StreamName is the JetStream stream of a source, in its home domain and,
// as a mirror, in every region.
func StreamName(source string) string { return "PGJET_" + source }

// TxnSubject carries the transaction chunks of a source.
func TxnSubject(source string) string { return "pgjet." + source + ".tx" }

// HeartbeatSubject carries the heartbeats of a source.
func HeartbeatSubject(source string) string { return "pgjet." + source + ".hb" }

// StreamOptions shape a source's stream.
type StreamOptions struct {
	// MaxAge bounds how long changes are kept; 0 keeps them until MaxBytes.
	// It must outlast the longest partition a region may suffer.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; 0 is unlimited.
	MaxBytes int64
	// Replicas is the stream's replication factor inside its cluster; 0
	// keeps an existing stream's, and creates a new one with 1.
	Replicas int
	// Duplicates is the Nats-Msg-Id dedup window.
	Duplicates time.Duration
}

// EnsureStream creates the source's stream, or updates it when it exists
// with another config (see ensureStream). It is idempotent.
func EnsureStream(ctx context.Context, js jetstream.JetStream, source string, o StreamOptions) (jetstream.Stream, error) {
	cfg := jetstream.StreamConfig{
		Name:        StreamName(source),
		Description: "pgjet change stream of source " + source,
		Subjects:    []string{"pgjet." + source + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		MaxBytes:    o.MaxBytes,
		Replicas:    o.Replicas,
		Duplicates:  o.Duplicates,
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	return ensureStream(ctx, js, cfg)
}

// ErrStreamRetired: the stream exists but was retired by a failover that
// moved the source's home (RetireOldHome). It is a fence: EnsureStream never
// gives it the source's subjects again, since a capture of the old primary
// would then go on publishing the old generation there.
var ErrStreamRetired = errors.New("stream retired by a promotion")

// ensureStream creates stream cfg, or updates the stream when what exists
// differs from cfg in a field pgjet sets or has sources or a mirror. A
// stream as wanted is only looked up (STREAM.INFO), so that once an admin
// made it, a user without STREAM.CREATE and STREAM.UPDATE can run: those
// rights let a user write any config, another source's stream as a source
// included, since nats-server checks only the request's subject.
//
// Replicas 0 keeps what exists: a capture restarted without
// --stream-replicas must not scale a replicated stream down.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Name)
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
		if err == nil {
			cfg.Replicas = s.CachedInfo().Config.Replicas
		}
	}
	switch {
	case err == nil && retired(s.CachedInfo().Config):
		return nil, fmt.Errorf("%w: stream %s (%s)", ErrStreamRetired, cfg.Name, s.CachedInfo().Config.Description)
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.UpdateStream(ctx, cfg) // made meanwhile, with another config
		}
	case err == nil && !streamAsWanted(s.CachedInfo().Config, cfg):
		s, err = js.UpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// retired reports whether a stream's config is one RetireOldHome left.
func retired(cfg jetstream.StreamConfig) bool {
	return len(cfg.Subjects) > 0 && strings.HasPrefix(cfg.Subjects[0], "pgjetretired.")
}

// streamAsWanted reports whether the config of an existing stream, as the
// server returns it, is want in every field pgjet sets.
func streamAsWanted(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Description == want.Description &&
		have.Storage == want.Storage && have.Retention == want.Retention && have.Discard == want.Discard &&
		have.MaxAge == want.MaxAge && have.MaxBytes == want.MaxBytes && have.Replicas == want.Replicas &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) && have.AllowDirect == want.AllowDirect &&
		have.Mirror == nil && len(have.Sources) == 0
}

// MirrorLimits bound a region's mirror of a source's stream. The origin's
// own limits do not reach a mirror, which without limits of its own would
// keep every change for ever.
type MirrorLimits struct {
	// MaxAge bounds how long changes are kept; 0 keeps them until MaxBytes.
	MaxAge time.Duration
	// MaxBytes bounds the mirror's size; 0 is unlimited.
	MaxBytes int64
}

func (l MirrorLimits) apply(cfg *jetstream.StreamConfig) {
	cfg.MaxAge, cfg.MaxBytes = l.MaxAge, l.MaxBytes
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
}

// EnsureMirror creates, in the JetStream domain js talks to, a mirror of
// the source's stream that lives in upstreamDomain, with limits lim.
// Mirrors keep the origin's sequence numbers, so positions are comparable
// across regions. It is idempotent: an existing mirror is returned as it
// is (see UpdateMirrorLimits).
func EnsureMirror(ctx context.Context, js jetstream.JetStream, source, upstreamDomain string, lim MirrorLimits) (jetstream.Stream, error) {
	return ensureMirror(ctx, js, StreamName(source), "pgjet mirror of source "+source+" from domain "+upstreamDomain, upstreamDomain, &lim)
}

// UpdateMirrorLimits sets the limits of mirror st to lim when they
// differ, and reports whether it changed them.
func UpdateMirrorLimits(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, lim MirrorLimits) (bool, error) {
	cfg := st.CachedInfo().Config
	want := cfg
	lim.apply(&want)
	if want.MaxAge == cfg.MaxAge && want.MaxBytes == cfg.MaxBytes {
		return false, nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return false, fmt.Errorf("update the limits of mirror %s to max age %s, max bytes %d: %w", cfg.Name, want.MaxAge, want.MaxBytes, err)
	}
	return true, nil
}

// MirrorConflictError is the error of EnsureMirror and
// EnsureSnapshotMirror that waiting cannot cure: a stream of the mirror's
// name in this domain that is not that mirror (the stream itself, where
// --upstream-domain is given in the stream's own domain, or a mirror of
// something else).
type MirrorConflictError struct{ Msg string }

func (e *MirrorConflictError) Error() string { return e.Msg }

// MirrorConflict returns a *MirrorConflictError when the existing stream
// of config cfg is not the mirror of the stream of its name in
// upstreamDomain, or nil when it is.
func MirrorConflict(cfg jetstream.StreamConfig, upstreamDomain string) error {
	name, m := cfg.Name, cfg.Mirror
	if m == nil {
		return &MirrorConflictError{fmt.Sprintf("stream %s exists in this domain and is not a mirror: the stream lives where pgjet-apply connects (one domain, or the source's home), so drop --upstream-domain; or connect pgjet-apply to its own region's NATS", name)}
	}
	// A mirror of another stream, which a user allowed STREAM.CREATE on
	// this name can make, would feed this source's target with another
	// source's changes.
	if from := MirrorDomain(m); m.Name != name || from != upstreamDomain {
		return &MirrorConflictError{fmt.Sprintf("stream %s in this domain mirrors %s of domain %q, not %s of domain %q: delete it (nats stream rm %s) and let pgjet-apply make it, or check --upstream-domain", name, m.Name, from, name, upstreamDomain, name)}
	}
	return nil
}

// ensureMirror makes mirror name of upstreamDomain's stream; lim nil
// leaves it without limits.
func ensureMirror(ctx context.Context, js jetstream.JetStream, name, description, upstreamDomain string, lim *MirrorLimits) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, name)
	if err == nil {
		if err := MirrorConflict(s.CachedInfo().Config, upstreamDomain); err != nil {
			return nil, err
		}
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up mirror %s: %w", name, err)
	}
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Storage:     jetstream.FileStorage,
		Mirror:      &jetstream.StreamSource{Name: name, Domain: upstreamDomain},
	}
	if lim != nil {
		lim.apply(&cfg)
	}
	s, err = js.CreateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create mirror %s of domain %s: %w", name, upstreamDomain, err)
	}
	return s, nil
}

// MirrorDomain returns the JetStream domain mirror m copies from. The
// server stores StreamSource.Domain as the API prefix $JS.<domain>.API;
// another prefix (a mirror from another account) is returned as it is.
func MirrorDomain(m *jetstream.StreamSource) string {
	if m.Domain != "" || m.External == nil {
		return m.Domain
	}
	p := m.External.APIPrefix
	if d, ok := strings.CutPrefix(p, "$JS."); ok {
		if d, ok := strings.CutSuffix(d, ".API"); ok && d != "" {
			return d
		}
	}
	return p
}

// NewJetStream returns a JetStream context for domain ("" = the domain of
// the server nc is connected to).
func NewJetStream(nc *nats.Conn, domain string, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	if domain == "" {
		return jetstream.New(nc, opts...)
	}
	return jetstream.NewWithDomain(nc, domain, opts...)
}

// RedactURL returns a NATS URL or comma-separated list with passwords and
// tokens replaced, fit for logs, also when a URL is malformed or has no
// scheme (see package redact).
func RedactURL(u string) string { return redact.NATS(u) }
