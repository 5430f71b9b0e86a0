package stream

import (
	"context"
	"encoding/json"
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
	// Warn, with OK, marks a check that passed with a risk the operator
	// should know about (or could not tell): printed WARN, not a failure.
	Warn bool
}

// Pass and Fail build CheckResults.
func Pass(name, format string, args ...any) CheckResult {
	return CheckResult{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)}
}

// Fail is a failed check; detail names the cause and the fix.
func Fail(name, format string, args ...any) CheckResult {
	return CheckResult{Name: name, Detail: fmt.Sprintf(format, args...)}
}

// Warn is a check that passed with a risk; detail names it and the fix.
func Warn(name, format string, args ...any) CheckResult {
	return CheckResult{Name: name, OK: true, Warn: true, Detail: fmt.Sprintf(format, args...)}
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
	res := []CheckResult{Pass("nats connection", "connected to %s (%s, nats-server %s) %s", ConnectedURL(nc), nc.ConnectedServerName(), nc.ConnectedServerVersion(), tls)}
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

// CheckSync reports whether the connected nats-server fsyncs each JetStream
// write before acknowledging it (jetstream { sync_interval: always }).
// Without it an acknowledged message can be lost in a host crash, after
// capture confirmed its position to Postgres. Only the server's own
// monitoring answers this ($SYS.REQ.SERVER.<id>.JSZ, for users of the
// system account); for other users the line says it could not tell.
func CheckSync(nc *nats.Conn) CheckResult {
	const name = "nats durability"
	const fix = "set jetstream { sync_interval: always } on every nats-server of the stream (see deploy/nats)"
	srv := nc.ConnectedServerName()
	msg, err := nc.Request("$SYS.REQ.SERVER."+nc.ConnectedServerId()+".JSZ", []byte(`{}`), 2*time.Second)
	var resp struct {
		Data *struct {
			Config struct {
				SyncInterval time.Duration `json:"sync_interval"`
				SyncAlways   bool          `json:"sync_always"`
			} `json:"config"`
		} `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(msg.Data, &resp)
	}
	if err != nil || resp.Data == nil {
		return Warn(name, "cannot tell whether nats-server %s syncs JetStream writes before acknowledging them (only a system-account user may read its settings); unless it does, a host crash can lose acknowledged changes: %s", srv, fix)
	}
	if !resp.Data.Config.SyncAlways {
		interval := "default, 2m0s"
		if d := resp.Data.Config.SyncInterval; d > 0 {
			interval = d.String()
		}
		return Warn(name, "nats-server %s acknowledges JetStream writes before it fsyncs them (sync_interval %s): a host crash can lose acknowledged changes, and capture then stops until the stream is started again; %s", srv, interval, fix)
	}
	return Pass(name, "nats-server %s fsyncs each JetStream write before acknowledging it (sync_interval: always)", srv)
}
