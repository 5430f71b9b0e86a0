package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// CheckResult is one line of a daemon's --check-config report.
type CheckResult struct {
	// Name says what was checked: "postgres connection", "nats jetstream".
	Name string
	// OK is true when the check passed.
	OK bool
	// Detail says what was found, or, on failure, the cause and the fix.
	Detail string
}

// Pass and Fail build CheckResults.
func Pass(name, format string, args ...any) CheckResult {
	return CheckResult{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)}
}

// Fail is a failed check; detail names the cause and the fix.
func Fail(name, format string, args ...any) CheckResult {
	return CheckResult{Name: name, Detail: fmt.Sprintf(format, args...)}
}

// Result turns a check's error into a line of the report: ok says what
// was found when err is nil.
func Result(name string, err error, ok string) CheckResult {
	if err != nil {
		return Fail(name, "%s", err.Error())
	}
	return Pass(name, "%s", ok)
}

// checkTimeout bounds each network step of a check: a check reports, it
// does not wait for a server to come back.
const checkTimeout = 5 * time.Second

// CheckNATS connects to url once, without retrying, and checks that the
// server accepts the credentials. It returns the results and a JetStream
// context for domain ("" = the server's), nil when the connection failed;
// the caller closes nc.
func CheckNATS(url, name string, o ConnectOptions, domain string) (*nats.Conn, jetstream.JetStream, []CheckResult) {
	nc, err := Connect(url, name, o, zerolog.Nop(), nats.NoReconnect(), nats.Timeout(checkTimeout))
	if err != nil {
		detail := err.Error()
		if !IsPermanent(err) {
			detail += "; is nats-server running there? check --nats"
		}
		return nil, nil, []CheckResult{Fail("nats connection", "%s", detail)}
	}
	tls := "without TLS"
	if _, err := nc.TLSConnectionState(); err == nil {
		tls = "with TLS"
	}
	res := []CheckResult{Pass("nats connection", "connected to %s (%s, nats-server %s) %s", nc.ConnectedUrlRedacted(), nc.ConnectedServerName(), nc.ConnectedServerVersion(), tls)}
	js, err := NewJetStream(nc, domain)
	if err != nil {
		return nc, nil, append(res, Fail("nats jetstream", "%v", err))
	}
	return nc, js, res
}

// CheckStream looks up the stream name in js's domain and reports two
// lines: whether JetStream answers there, and whether the stream exists.
// When it does not, missing says what that means (capture creates it; an
// applier without --upstream-domain waits for it). The lookup is the one
// request a least-privilege user of deploy/nats may make, so it stands in
// for JetStream's account info.
func CheckStream(ctx context.Context, js jetstream.JetStream, name string, missing func() CheckResult) []CheckResult {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	where := "the connected server's domain"
	if d := js.Options().Domain; d != "" {
		where = "domain " + d
	}
	s, err := js.Stream(cctx, name)
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return []CheckResult{Fail("nats jetstream", "JetStream is not enabled in %s for this account; start nats-server with -js (or jetstream {} in its config) and enable it for the account", where)}
	case JetStreamMissing(js, err):
		return []CheckResult{Fail("nats jetstream", "%s", ErrNoJetStream)}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout):
		return []CheckResult{Fail("nats jetstream", "no JetStream answers in %s; check --domain/--upstream-domain, that the domain's server runs with JetStream, and the user's permission to publish to $JS.API.STREAM.INFO.%s", where, name)}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return []CheckResult{Pass("nats jetstream", "enabled in %s", where), missing()}
	case err != nil:
		return []CheckResult{Fail("nats jetstream", "look up stream %s in %s: %v; check the user's permissions (deploy/nats/permissions-*.conf)", name, where, err)}
	}
	info := s.CachedInfo()
	kind := "stream"
	if info.Config.Mirror != nil {
		kind = "mirror of domain " + info.Config.Mirror.Domain
	}
	return []CheckResult{Pass("nats jetstream", "enabled in %s", where),
		Pass("stream "+name, "present (%s, %d messages, last sequence %d)", kind, info.State.Msgs, info.State.LastSeq)}
}

// CanCreateStream says whether the account may hold one more stream: who
// creates name on start.
func CanCreateStream(ctx context.Context, js jetstream.JetStream, name, who string) CheckResult {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	info, err := js.AccountInfo(cctx)
	if err != nil {
		// A least-privilege user may not read account info: creating the
		// stream is then the test.
		return Pass("stream "+name, "absent; %s creates it on start (account limits not readable: %v)", who, err)
	}
	if info.Limits.MaxStreams > 0 && info.Streams >= info.Limits.MaxStreams {
		return Fail("stream "+name, "absent, and the account holds %d of its %d streams; raise max_streams for the account or remove a stream", info.Streams, info.Limits.MaxStreams)
	}
	return Pass("stream "+name, "absent; %s creates it on start", who)
}

// ErrNoJetStream says what JetStreamMissing detected, and the fix.
var ErrNoJetStream = errors.New("the connected NATS server runs without JetStream and none answers for it: start nats-server with -js (or jetstream {} in its config)")

// JetStreamMissing reports whether err, from a JetStream request in the
// connected server's own domain, went unanswered because that server runs
// without JetStream (as its INFO says). A leafnode without JetStream can
// still reach a hub's, hence the request first.
func JetStreamMissing(js jetstream.JetStream, err error) bool {
	if err == nil || js.Options().Domain != "" {
		return false
	}
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return false
	}
	on, _ := js.Conn().ConnectedServerJetStream()
	return !on
}
