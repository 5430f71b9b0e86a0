package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// statusFlags are the flags of `pgjet status`.
type statusFlags struct {
	nats     string
	name     string
	domains  []string
	json     bool
	dbRegion []string // region=URL
	sourceDB string
	slot     string
	timeout  time.Duration
	// stall is how long a region, applier, mirror or capture may go
	// without progress before status counts it as stopped.
	stall time.Duration
	auth  cli.NATSFlags
}

// statusStreamPrefix is what every pgjet stream name starts with.
var statusStreamPrefix = stream.StreamName("")

// statusConsumerPrefix is what every applier's durable consumer name
// starts with.
var statusConsumerPrefix = apply.ConsumerName("")

func runStatus(args []string) int {
	var f statusFlags
	fs := pflag.NewFlagSet("pgjet status", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet status shows, for a source (or every source), each region's copy of the stream\n"+
			"and how far its applier has come:\n"+
			"  - per JetStream domain: the stream's last sequence and message time; for a mirror, its\n"+
			"    lag behind the origin, its last contact with it and any error (a cut-off region shows\n"+
			"    a growing last contact);\n"+
			"  - per applier consumer (pgjet_apply_<region>): ack floor, pending messages, lag in\n"+
			"    messages (stream last sequence - ack floor), and whether an applier pulls from it;\n"+
			"  - with --db-region: the position in the target's pgjet.applied, the lag in seconds (now -\n"+
			"    commit time of the last applied transaction), the source WAL bytes between it and the\n"+
			"    newest transaction in the stream, and conflicts in the last hour; and the state its\n"+
			"    applier records there (pgjet.applier_state): running, lagging, stopped (with the error\n"+
			"    that stopped it) or down (recorded as running, but its heartbeat stopped: killed);\n"+
			"  - per region: the dead letters its applier set aside (--on-bad-message dead-letter);\n"+
			"  - with --source-db: capture's slot on the source (active, confirmed position).\n"+
			"The lag in seconds keeps growing while the source is idle, because no transaction commits;\n"+
			"\"caught up\" then tells an idle source from a stuck applier, and capture's heartbeats\n"+
			"(--heartbeat) keep the stream's last message time fresh. A region is compared with the\n"+
			"source's own stream (asked in its home domain even when --domains leaves it out).\n\n"+
			"Usage:\n  pgjet status --nats URL [--name SOURCE] [--domains hub,r1,r2] [--db-region r1=postgres://...]...\n"+
			"               [--source-db postgres://...] [--stall-timeout 30s] [--json]\n\n"+
			"Other domains are reached through the connected server (leafnodes join them). The last lines\n"+
			"list every problem found. Exit status: 0 when there is none (healthy), 1 when there is one\n"+
			"(a domain, database or the source unreachable, a mirror in error, cut off or with a gap, an\n"+
			"applier stopped or down, capture stopped, a region applying nothing, dead letters) or NATS\n"+
			"cannot be reached at all, 2 for bad flags or a --name no domain asked has a stream of.\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&f.nats, "nats", "", "NATS URL, e.g. nats://hub:4222")
	fs.StringVar(&f.name, "name", "", "source name (stream PGJET_<name>); default every PGJET_* stream")
	fs.StringSliceVar(&f.domains, "domains", nil, "JetStream domains to ask, comma-separated (default: the connected server's)")
	fs.BoolVar(&f.json, "json", false, "print one JSON document instead of tables")
	fs.StringArrayVar(&f.dbRegion, "db-region", nil, "region=postgres://... of a target whose pgjet.applied to read; repeat for several (the variable holds one)")
	fs.StringVar(&f.sourceDB, "source-db", "", "postgres://... of the source: check capture's slot there (needs --name)")
	fs.StringVar(&f.slot, "slot", "", "capture's slot on the source (default pgjet_<name>)")
	fs.DurationVar(&f.stall, "stall-timeout", 30*time.Second, "how long without progress before a region, applier, mirror or capture counts as stopped (keep it above 3 x the capture's --heartbeat)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "how long to wait for each domain and database")
	f.auth.Register(fs)
	cli.Parse(fs, args)

	if f.nats == "" {
		fmt.Fprintln(os.Stderr, "pgjet status: --nats is required (nats://host:4222)")
		return 2
	}
	if f.name != "" {
		if err := stream.ValidateSource(f.name); err != nil {
			fmt.Fprintf(os.Stderr, "pgjet status: --name: %v\n", err)
			return 2
		}
	}
	if f.sourceDB != "" && f.name == "" {
		fmt.Fprintln(os.Stderr, "pgjet status: --source-db needs --name, the source whose slot to check")
		return 2
	}
	if f.slot == "" && f.name != "" {
		f.slot = "pgjet_" + f.name
	}
	if f.stall <= 0 {
		fmt.Fprintln(os.Stderr, "pgjet status: --stall-timeout must be positive (e.g. 30s)")
		return 2
	}
	targets, err := parseDBRegions(f.dbRegion)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet status: %v\n", err)
		return 2
	}

	log := zerolog.New(consoleWriter()).Level(zerolog.ErrorLevel).With().Timestamp().Str("cmd", "pgjet status").Logger()
	ctx, stop := cli.SignalContext()
	defer stop()
	rep, err := gatherStatus(ctx, f, targets, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet status: %v\n", err)
		if errors.As(err, new(*errNoSource)) {
			return 2
		}
		return 1
	}
	if f.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet status: write output: %v\n", err)
		return 1
	}
	if !rep.Healthy {
		return 1
	}
	return 0
}

// dbRegion is one --db-region.
type dbRegion struct{ region, url string }

func parseDBRegions(vals []string) ([]dbRegion, error) {
	var out []dbRegion
	seen := map[string]bool{}
	for _, v := range vals {
		region, url, ok := strings.Cut(v, "=")
		if !ok || url == "" {
			return nil, fmt.Errorf("--db-region %q: use region=postgres://user@host:5432/db", redact.Postgres(v))
		}
		if err := stream.ValidateSource(region); err != nil {
			return nil, fmt.Errorf("--db-region: region: %w", err)
		}
		if seen[region] {
			return nil, fmt.Errorf("--db-region: region %s given twice", region)
		}
		seen[region] = true
		out = append(out, dbRegion{region, url})
	}
	return out, nil
}

// statusReport is what `pgjet status` prints; --json prints it as is.
type statusReport struct {
	At   time.Time `json:"at"`
	NATS string    `json:"nats"`
	// Healthy is true when Problems is empty: the exit status is then 0.
	Healthy bool `json:"healthy"`
	// Problems are one line each: what is wrong, where, and what to do.
	Problems []string `json:"problems"`
	// Domains lists every domain asked, with the error that kept it from
	// answering.
	Domains []domainReport `json:"domains"`
	// DBErrors lists the --db-region targets that could not be read.
	DBErrors []targetReport `json:"db_errors,omitempty"`
	Sources  []sourceReport `json:"sources"`
}

type domainReport struct {
	// Domain is the JetStream domain ("" when the server has none).
	Domain string `json:"domain"`
	Error  string `json:"error,omitempty"`
}

type sourceReport struct {
	Source string `json:"source"`
	// Streams are the home stream and its mirrors, one per domain.
	Streams []streamReport `json:"streams"`
	// Targets are the --db-region targets' applied positions.
	Targets []targetReport `json:"targets,omitempty"`
	// DeadLetters are the regions' dead-letter streams that hold messages.
	DeadLetters []deadLetterReport `json:"dead_letters,omitempty"`
	// Capture is the source's slot, with --source-db.
	Capture *captureReport `json:"capture,omitempty"`
}

type streamReport struct {
	Domain string `json:"domain"`
	Stream string `json:"stream"`
	// Role is "home" for the stream capture publishes to, "mirror" for a
	// region's copy.
	Role     string     `json:"role"`
	Messages uint64     `json:"messages"`
	Bytes    uint64     `json:"bytes"`
	FirstSeq uint64     `json:"first_seq"`
	LastSeq  uint64     `json:"last_seq"`
	LastTime *time.Time `json:"last_time,omitempty"`
	// LastTxnLSN is the source LSN of the newest transaction in the stream
	// (end of its commit, or its commit when its last chunk is missing).
	LastTxnLSN string        `json:"last_txn_lsn,omitempty"`
	Mirror     *mirrorReport `json:"mirror,omitempty"`
	// Gap says which messages this copy lost, if any.
	Gap       string           `json:"gap,omitempty"`
	Consumers []consumerReport `json:"consumers"`

	lastTxn stream.LSN
	asked   string // the domain as asked: "" for the connected server's
}

type mirrorReport struct {
	// Upstream is the origin's domain.
	Upstream string `json:"upstream_domain"`
	// Lag is how many messages the mirror trails its origin, as of its
	// last contact.
	Lag uint64 `json:"lag"`
	// LastContactSeconds is the time since the mirror last heard from its
	// origin; null when it never has.
	LastContactSeconds *float64 `json:"last_contact_seconds"`
	Error              string   `json:"error,omitempty"`
}

type consumerReport struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	// AckFloor is the stream sequence up to which everything is applied
	// and acknowledged.
	AckFloor  uint64 `json:"ack_floor_seq"`
	Delivered uint64 `json:"delivered_seq"`
	// Pending counts the messages not yet delivered to the applier.
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	// Lag is the stream's last sequence minus the ack floor.
	Lag uint64 `json:"lag"`
	Gap string `json:"gap,omitempty"`
	// Waiting counts the applier's pull requests the server holds: a
	// running applier always has one out, a stopped one none.
	Waiting int `json:"waiting"`
	// LastActiveSeconds is the time since the consumer last delivered a
	// message or received an ack; null when it never has.
	LastActiveSeconds *float64 `json:"last_active_seconds"`
	// State is "waiting" (everything delivered), "applying" (messages
	// pending, and moving) or "stopped" (no applier pulls from it).
	State string `json:"state"`
}

type targetReport struct {
	Region    string `json:"region"`
	Error     string `json:"error,omitempty"`
	CommitLSN string `json:"commit_lsn,omitempty"`
	EndLSN    string `json:"end_lsn,omitempty"`
	// SourceLSN is the source position the target has caught up to,
	// heartbeats included.
	SourceLSN  string     `json:"source_lsn,omitempty"`
	StreamSeq  uint64     `json:"stream_seq,omitempty"`
	CommitTime *time.Time `json:"commit_time,omitempty"`
	AppliedAt  *time.Time `json:"applied_at,omitempty"`
	// LagSeconds is now minus the source commit time of the last applied
	// transaction; it grows on an idle source.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// BehindBytes is the source WAL between the end of the last applied
	// transaction and the newest transaction in the stream.
	BehindBytes *uint64 `json:"behind_bytes,omitempty"`
	// CaughtUp is true when the target has applied the newest transaction
	// in the source's stream and nothing waits for it longer than the
	// stall timeout: a growing LagSeconds then means an idle source. Null
	// when the source's stream did not answer.
	CaughtUp *bool `json:"caught_up,omitempty"`
	// WaitingSeconds is the age of the oldest message of the source's
	// stream this target has not applied (0: none).
	WaitingSeconds *float64 `json:"waiting_seconds,omitempty"`
	// State is "caught up", "catching up" (behind, and committing),
	// "stalled" (behind, and committing nothing) or "unknown".
	State             string `json:"state,omitempty"`
	ConflictsLastHour int64  `json:"conflicts_last_hour"`
	// Applier is the state the region's applier records in the target;
	// null when it records none (an older pgjet-apply).
	Applier *applierReport `json:"applier,omitempty"`
	// ApplierState sums it up: running, lagging (running, but behind or
	// applying nothing), stopped, or down (its record says running, but
	// its heartbeat stopped).
	ApplierState string `json:"applier_state,omitempty"`

	appliedAgo *float64 // seconds since the target's last commit of a position
}

// gatherStatus asks every domain and target, then lists the problems. Only
// a failed connection to NATS is an error; a domain or a database that
// does not answer is reported in its row and as a problem.
func gatherStatus(ctx context.Context, f statusFlags, targets []dbRegion, log zerolog.Logger) (*statusReport, error) {
	auth, err := f.auth.Options()
	if err != nil {
		return nil, err
	}
	nc, err := stream.Connect(f.nats, "pgjet status", auth, log, nats.Timeout(f.timeout), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Error().Err(err).Msg("nats") }))
	if err != nil {
		if stream.IsPermanent(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (is nats-server running there?)", err)
	}
	defer nc.Close()

	domains := f.domains
	if len(domains) == 0 {
		domains = []string{""}
	}
	rep := &statusReport{At: time.Now().UTC(), NATS: stream.RedactURL(f.nats)}
	var found []domainFound
	askDomains(ctx, nc, f, domains, rep, &found)
	// A region is judged against its source's own stream: a mirror's home
	// domain is asked too when --domains left it out, or a cut-off region
	// would be compared with nothing but its own stale copy.
	asked := map[string]bool{}
	for _, d := range rep.Domains {
		asked[d.Domain] = true
	}
	var homes []string
	for _, df := range found {
		for _, s := range df.streams {
			if m := s.Mirror; m != nil && !asked[m.Upstream] {
				asked[m.Upstream] = true
				homes = append(homes, m.Upstream)
			}
		}
	}
	askDomains(ctx, nc, f, homes, rep, &found)
	if err := checkSourceName(ctx, nc, f, rep, found); err != nil {
		return nil, err
	}

	bySource := map[string]*sourceReport{}
	source := func(name string) *sourceReport {
		if s, ok := bySource[name]; ok {
			return s
		}
		s := &sourceReport{Source: name, Streams: []streamReport{}}
		bySource[name] = s
		return s
	}
	if f.name != "" {
		source(f.name)
	}
	for _, df := range found {
		for _, s := range df.streams {
			src := source(strings.TrimPrefix(s.Stream, statusStreamPrefix))
			src.Streams = append(src.Streams, s)
		}
		for _, d := range df.deadLetters {
			src := source(d.Source)
			src.DeadLetters = append(src.DeadLetters, d)
		}
	}
	for _, s := range bySource {
		markMirrorGaps(s.Streams)
	}

	var wg sync.WaitGroup
	if len(targets) > 0 {
		var names []string
		if f.name != "" {
			names = []string{f.name}
		}
		results := make([]map[string]targetReport, len(targets))
		for i, t := range targets {
			wg.Go(func() {
				tctx, cancel := context.WithTimeout(ctx, f.timeout)
				defer cancel()
				results[i] = targetStatus(tctx, t, names)
			})
		}
		wg.Wait()
		for i, t := range targets {
			for name, tr := range results[i] {
				if name == "" {
					rep.DBErrors = append(rep.DBErrors, tr)
					continue
				}
				s := source(name)
				tr.Region = t.region
				s.Targets = append(s.Targets, tr)
			}
		}
	}
	if f.sourceDB != "" {
		cctx, cancel := context.WithTimeout(ctx, f.timeout)
		source(f.name).Capture = captureStatus(cctx, f.sourceDB, f.slot)
		cancel()
	}
	for _, s := range bySource {
		home := homeStream(s.Streams)
		for i := range s.Targets {
			tr := &s.Targets[i]
			if home != nil && tr.Error == "" {
				tctx, cancel := context.WithTimeout(ctx, f.timeout)
				tr.WaitingSeconds = oldestUnapplied(tctx, nc, home, tr.StreamSeq, rep.At)
				cancel()
			}
			fillTargetLag(tr, s, rep, f.stall)
			fillApplierState(tr, f.stall)
		}
	}

	for _, s := range bySource {
		slices.SortFunc(s.Streams, func(a, b streamReport) int {
			return cmp.Or(cmp.Compare(roleOrder(a.Role), roleOrder(b.Role)), cmp.Compare(a.Domain, b.Domain))
		})
		slices.SortFunc(s.Targets, func(a, b targetReport) int { return cmp.Compare(a.Region, b.Region) })
		slices.SortFunc(s.DeadLetters, func(a, b deadLetterReport) int { return cmp.Compare(a.Region, b.Region) })
		rep.Sources = append(rep.Sources, *s)
	}
	slices.SortFunc(rep.Sources, func(a, b sourceReport) int { return cmp.Compare(a.Source, b.Source) })
	if rep.Sources == nil {
		rep.Sources = []sourceReport{}
	}
	rep.Problems = problems(rep, f.stall)
	rep.Healthy = len(rep.Problems) == 0
	return rep, nil
}

// domainFound is what one domain answered.
type domainFound struct {
	streams     []streamReport
	deadLetters []deadLetterReport
}

// askDomains asks each domain at once, appending its row to rep.Domains
// and what it holds to found.
func askDomains(ctx context.Context, nc *nats.Conn, f statusFlags, domains []string, rep *statusReport, found *[]domainFound) {
	rows := make([]domainReport, len(domains))
	out := make([]domainFound, len(domains))
	var wg sync.WaitGroup
	for i, d := range domains {
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			rows[i].Domain = d
			name, df, err := domainStatus(dctx, nc, d, f.name, f.stall)
			if name != "" {
				rows[i].Domain = name
			}
			if err != nil {
				rows[i].Error = err.Error()
			}
			out[i] = df
		})
	}
	wg.Wait()
	rep.Domains = append(rep.Domains, rows...)
	*found = append(*found, out...)
}

func roleOrder(role string) int {
	if role == "home" {
		return 0
	}
	return 1
}

// domainStatus reports the pgjet change streams and dead-letter streams of
// one domain ("" = the connected server's) and returns the domain's name
// as its JetStream reports it.
func domainStatus(ctx context.Context, nc *nats.Conn, domain, source string, stall time.Duration) (string, domainFound, error) {
	var df domainFound
	js, err := stream.NewJetStream(nc, domain)
	if err != nil {
		return "", df, fmt.Errorf("open JetStream: %w", err)
	}
	ai, err := js.AccountInfo(ctx)
	if err != nil {
		return "", df, domainError(domain, err)
	}
	var infos []*jetstream.StreamInfo
	if source != "" {
		st, err := js.Stream(ctx, stream.StreamName(source))
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return ai.Domain, df, fmt.Errorf("look up stream %s: %w", stream.StreamName(source), err)
		default:
			infos = append(infos, st.CachedInfo())
		}
	} else {
		l := js.ListStreams(ctx)
		for info := range l.Info() {
			if statusChangeStream(info.Config) {
				infos = append(infos, info)
			}
		}
		if err := l.Err(); err != nil {
			return ai.Domain, df, fmt.Errorf("list streams: %w", err)
		}
	}
	for _, info := range infos {
		sr, err := streamStatus(ctx, js, ai.Domain, info, stall)
		if err != nil {
			return ai.Domain, df, err
		}
		sr.asked = domain
		df.streams = append(df.streams, sr)
	}
	df.deadLetters, err = deadLetterStatus(ctx, js, ai.Domain, source)
	return ai.Domain, df, err
}

// statusChangeStream tells a source's change stream (or its mirror) from
// the other PGJET_* streams: snapshots and dead letters.
func statusChangeStream(c jetstream.StreamConfig) bool {
	if !strings.HasPrefix(c.Name, statusStreamPrefix) {
		return false
	}
	if m := c.Mirror; m != nil {
		return !strings.HasPrefix(m.Name, stream.SnapshotStreamName(""))
	}
	for _, s := range c.Subjects {
		if !strings.HasPrefix(s, "pgjet.") {
			return false
		}
	}
	return true
}

// domainError turns a failed JetStream request into what an operator can
// act on.
func domainError(domain string, err error) error {
	where := "the connected server's JetStream"
	if domain != "" {
		where = "JetStream domain " + domain
	}
	notEnabled := errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
	switch {
	case notEnabled && domain != "":
		// Nobody answers for the domain: nats.go reports a request to a
		// domain no server of the connected ones serves as JetStream not
		// enabled, which is also what a cut-off region looks like.
		return fmt.Errorf("%s is unreachable (region cut off, leafnode down, JetStream off there, or a wrong domain name)", where)
	case notEnabled:
		return fmt.Errorf("%s: JetStream is not enabled", where)
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%s is unreachable (region cut off, leafnode down, or a wrong domain name): %w", where, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// streamStatus reports one stream and its appliers' consumers.
func streamStatus(ctx context.Context, js jetstream.JetStream, domain string, info *jetstream.StreamInfo, stall time.Duration) (streamReport, error) {
	st := info.State
	sr := streamReport{
		Domain:    domain,
		Stream:    info.Config.Name,
		Role:      "home",
		Messages:  st.Msgs,
		Bytes:     st.Bytes,
		FirstSeq:  st.FirstSeq,
		LastSeq:   st.LastSeq,
		Consumers: []consumerReport{},
	}
	if !st.LastTime.IsZero() && st.Msgs > 0 {
		t := st.LastTime.UTC()
		sr.LastTime = &t
	}
	if m := info.Config.Mirror; m != nil {
		sr.Role = "mirror"
		mr := &mirrorReport{Upstream: stream.MirrorDomain(m)}
		if mi := info.Mirror; mi != nil {
			mr.Lag = mi.Lag
			if mi.Active >= 0 {
				s := mi.Active.Seconds()
				mr.LastContactSeconds = &s
			}
			if mi.Error != nil {
				mr.Error = mi.Error.Error()
			}
		}
		sr.Mirror = mr
	}
	if st.NumDeleted > 0 {
		sr.Gap = fmt.Sprintf("%d messages missing between sequences %d and %d", st.NumDeleted, st.FirstSeq, st.LastSeq)
	}

	s, err := js.Stream(ctx, info.Config.Name)
	if err != nil {
		return sr, fmt.Errorf("open stream %s: %w", info.Config.Name, err)
	}
	source := strings.TrimPrefix(info.Config.Name, statusStreamPrefix)
	if m, err := s.GetLastMsgForSubject(ctx, stream.TxnSubject(source)); err == nil {
		if envs, err := stream.DecodeMessage(m.Data); err == nil {
			env := envs[len(envs)-1]
			sr.lastTxn = env.CommitLSN
			if env.Last() && env.EndLSN > 0 {
				sr.lastTxn = env.EndLSN
			}
			sr.LastTxnLSN = sr.lastTxn.String()
		}
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return sr, fmt.Errorf("read newest transaction of %s: %w", info.Config.Name, err)
	}

	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if !strings.HasPrefix(ci.Name, statusConsumerPrefix) {
			continue
		}
		cr := consumerReport{
			Name:       ci.Name,
			Region:     strings.TrimPrefix(ci.Name, statusConsumerPrefix),
			AckFloor:   ci.AckFloor.Stream,
			Delivered:  ci.Delivered.Stream,
			Pending:    ci.NumPending,
			AckPending: ci.NumAckPending,
		}
		if st.LastSeq > cr.AckFloor {
			cr.Lag = st.LastSeq - cr.AckFloor
		}
		if st.Msgs > 0 && cr.AckFloor+1 < st.FirstSeq {
			cr.Gap = fmt.Sprintf("sequences %d-%d were removed before this applier acknowledged them", cr.AckFloor+1, st.FirstSeq-1)
		}
		consumerState(&cr, ci, stall)
		sr.Consumers = append(sr.Consumers, cr)
	}
	if err := l.Err(); err != nil {
		return sr, fmt.Errorf("list consumers of %s: %w", info.Config.Name, err)
	}
	slices.SortFunc(sr.Consumers, func(a, b consumerReport) int { return cmp.Compare(a.Name, b.Name) })
	return sr, nil
}

// markMirrorGaps flags mirrors that can no longer copy everything: the
// home stream no longer holds the message after the mirror's last one, so
// the mirror will skip to what is left.
func markMirrorGaps(streams []streamReport) {
	var home *streamReport
	for i := range streams {
		if streams[i].Role == "home" {
			home = &streams[i]
		}
	}
	if home == nil || home.Messages == 0 {
		return
	}
	for i := range streams {
		m := &streams[i]
		if m.Role != "mirror" || m.Gap != "" {
			continue
		}
		if m.LastSeq+1 < home.FirstSeq {
			m.Gap = fmt.Sprintf("home stream starts at %d: sequences %d-%d expired before this mirror copied them",
				home.FirstSeq, m.LastSeq+1, home.FirstSeq-1)
		}
	}
}

// targetStatus reads a target's applied positions and recent conflicts,
// per source (all sources in pgjet.applied when names is empty). A
// failure is returned under the source "".
func targetStatus(ctx context.Context, t dbRegion, names []string) map[string]targetReport {
	fail := func(err error) map[string]targetReport {
		return map[string]targetReport{"": {Region: t.region, Error: err.Error()}}
	}
	conn, err := pgx.Connect(ctx, t.url)
	if err != nil {
		return fail(pgerr.ClassifyConnect(t.url, err))
	}
	defer conn.Close(context.WithoutCancel(ctx))

	out := map[string]targetReport{}
	for _, n := range names {
		out[n] = targetReport{Region: t.region, Error: "no applied position for source " + n + " yet"}
	}
	positions, err := applied.Read(ctx, conn, names...)
	if err != nil {
		if errors.Is(err, applied.ErrNoTable) {
			return fail(fmt.Errorf("no pgjet.applied in %s: pgjet-apply has not run against it", redact.Postgres(t.url)))
		}
		return fail(err)
	}
	for _, p := range positions {
		appliedAgo := p.Clock.Sub(p.AppliedAt).Seconds()
		tr := targetReport{Region: t.region, CommitLSN: p.CommitLSN.String(), EndLSN: p.EndLSN.String(), SourceLSN: p.SourceLSN.String(), StreamSeq: p.StreamSeq,
			CommitTime: utc(p.CommitTime), AppliedAt: utc(&p.AppliedAt), appliedAgo: &appliedAgo}
		if p.CommitTime != nil {
			l := max(p.Clock.Sub(*p.CommitTime).Seconds(), 0)
			tr.LagSeconds = &l
		}
		out[p.Source] = tr
	}

	rows, err := conn.Query(ctx, `SELECT source, count(*) FROM pgjet.conflicts WHERE at > now() - interval '1 hour' GROUP BY source`)
	if err != nil {
		return fail(fmt.Errorf("count pgjet.conflicts: %w", err))
	}
	for rows.Next() {
		var src string
		var n int64
		if err := rows.Scan(&src, &n); err != nil {
			return fail(fmt.Errorf("count pgjet.conflicts: %w", err))
		}
		if tr, ok := out[src]; ok {
			tr.ConflictsLastHour = n
			out[src] = tr
		}
	}
	if err := rows.Err(); err != nil {
		return fail(fmt.Errorf("count pgjet.conflicts: %w", err))
	}
	if err := readApplierStates(ctx, conn, names, t.region, out); err != nil {
		return fail(err)
	}
	return out
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// print writes the report as tables for people.
func (r *statusReport) print(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	now := r.At
	for _, d := range r.Domains {
		if d.Error != "" {
			fmt.Fprintf(w, "domain %s: %s\n", orDash(d.Domain), d.Error)
		}
	}
	for _, t := range r.DBErrors {
		fmt.Fprintf(w, "database of region %s: %s\n", t.Region, t.Error)
	}
	if len(r.Sources) == 0 {
		fmt.Fprintf(w, "no pgjet streams (PGJET_*) in the domains asked\n")
	}
	for i, s := range r.Sources {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "source %s\n", s.Source)
		if len(s.Streams) == 0 {
			fmt.Fprintf(w, "  no stream %s in the domains asked\n", stream.StreamName(s.Source))
		} else {
			fmt.Fprintf(w, "  DOMAIN\tROLE\tLAST SEQ\tLAST MESSAGE\tLAST TXN LSN\tMIRROR LAG\tLAST CONTACT\tMIRROR ERROR\tGAP\n")
			for _, st := range s.Streams {
				lag, contact, merr := "-", "-", "-"
				if m := st.Mirror; m != nil {
					lag = fmt.Sprint(m.Lag)
					contact = "never"
					if m.LastContactSeconds != nil {
						contact = fmt.Sprintf("%.1fs ago", *m.LastContactSeconds)
					}
					if m.Error != "" {
						merr = m.Error
					}
				}
				fmt.Fprintf(w, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(st.Domain), st.Role, st.LastSeq,
					ago(now, st.LastTime), orDash(st.LastTxnLSN), lag, contact, merr, orDash(st.Gap))
			}
			fmt.Fprintf(w, "\n  DOMAIN\tCONSUMER\tACK FLOOR\tPENDING\tACK PENDING\tLAG (MSGS)\tSTATE\tLAST ACTIVE\tGAP\n")
			n := 0
			for _, st := range s.Streams {
				for _, c := range st.Consumers {
					fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", orDash(st.Domain), c.Name, c.AckFloor, c.Pending, c.AckPending, c.Lag,
						orDash(c.State), agoSeconds(c.LastActiveSeconds), orDash(c.Gap))
					n++
				}
			}
			if n == 0 {
				fmt.Fprintf(w, "  (no pgjet_apply_* consumers)\n")
			}
		}
		if len(s.Targets) > 0 {
			fmt.Fprintf(w, "\n  REGION\tCOMMIT LSN\tSTREAM SEQ\tCOMMIT TIME\tAPPLIED\tLAG\tBEHIND\tCONFLICTS/H\n")
			for _, t := range s.Targets {
				if t.Error != "" {
					fmt.Fprintf(w, "  %s\terror: %s\n", t.Region, t.Error)
					continue
				}
				lag := "-"
				if t.LagSeconds != nil {
					lag = fmt.Sprintf("%.1fs", *t.LagSeconds)
				}
				if t.State != "" {
					lag += " (" + t.State + ")"
				}
				behind := "-"
				if t.BehindBytes != nil {
					behind = humanBytes(int64(*t.BehindBytes))
				}
				commit := "-"
				if t.CommitTime != nil {
					commit = t.CommitTime.Format(time.RFC3339Nano)
				}
				fmt.Fprintf(w, "  %s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\n", t.Region, t.CommitLSN, t.StreamSeq, commit,
					ago(now, t.AppliedAt), lag, behind, t.ConflictsLastHour)
			}
		}
		printAppliers(w, s)
		if len(s.DeadLetters) > 0 {
			fmt.Fprintf(w, "\n  REGION\tDEAD-LETTER STREAM\tDOMAIN\tMESSAGES\tNEWEST\n")
			for _, d := range s.DeadLetters {
				fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%s\n", d.Region, d.Stream, orDash(d.Domain), d.Messages, ago(now, d.LastTime))
			}
		}
		if c := s.Capture; c != nil {
			fmt.Fprintf(w, "\n  capture slot %s: %s\n", c.Slot, c.describe())
		}
	}
	if len(r.Problems) == 0 {
		fmt.Fprintf(w, "\nhealthy: every domain and database answered, capture publishes, every mirror and applier moves, no dead letters\n")
	} else {
		noun := "problems"
		if len(r.Problems) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(w, "\n%d %s:\n", len(r.Problems), noun)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(now time.Time, t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fs ago", max(now.Sub(*t).Seconds(), 0))
}
