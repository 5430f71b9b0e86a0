// Package status gathers what `pgjet status` reports: for a source (or
// every source), each JetStream domain's copy of its stream and the
// consumers of its appliers, each region's position in its target
// (pgjet.applied, read through package applied) and the state its applier
// records there, the regions' dead letters, and capture's slot on the
// source; then it judges the pipeline's health, one line per problem.
// Gather returns the Report; the caller prints it as JSON (its struct
// tags) or as tables (WriteText).
package status

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// Options say what Gather asks, and how long it waits.
type Options struct {
	// NATS is the NATS URL; Auth its credentials and TLS.
	NATS string
	Auth stream.ConnectOptions
	// Name is the source to report on; empty: every PGJET_* stream.
	Name string
	// Domains are the JetStream domains asked; empty: the connected
	// server's.
	Domains []string
	// Targets are the regions' databases whose pgjet.applied to read.
	Targets []TargetDB
	// SourceDB, when set, is the source database, where capture's slot
	// Slot is checked (needs Name).
	SourceDB string
	Slot     string
	// Timeout bounds the wait for each domain and database.
	Timeout time.Duration
	// Stall is how long a region, applier, mirror or capture may go
	// without progress before status counts it as stopped.
	Stall time.Duration
}

// TargetDB is a region's database (--db-region).
type TargetDB struct{ Region, URL string }

// statusStreamPrefix is what every pgjet stream name starts with.
var statusStreamPrefix = stream.StreamName("")

// statusConsumerPrefix is what every applier's durable consumer name
// starts with.
var statusConsumerPrefix = apply.ConsumerName("")

// Report is what `pgjet status` prints; --json prints it as is.
type Report struct {
	At   time.Time `json:"at"`
	NATS string    `json:"nats"`
	// Healthy is true when Problems is empty: the exit status is then 0.
	Healthy bool `json:"healthy"`
	// Problems are one line each: what is wrong, where, and what to do.
	Problems []string `json:"problems"`
	// Domains lists every domain asked, with the error that kept it from
	// answering.
	Domains []Domain `json:"domains"`
	// DBErrors lists the --db-region targets that could not be read.
	DBErrors []Target `json:"db_errors,omitempty"`
	Sources  []Source `json:"sources"`
}

// Domain is a JetStream domain asked, and whether it answered.
type Domain struct {
	// Domain is the JetStream domain ("" when the server has none).
	Domain string `json:"domain"`
	Error  string `json:"error,omitempty"`
}

// Source is what was found of one source: its streams, its regions'
// targets and dead letters, and its capture.
type Source struct {
	Source string `json:"source"`
	// Streams are the home stream and its mirrors, one per domain.
	Streams []Stream `json:"streams"`
	// Targets are the --db-region targets' applied positions.
	Targets []Target `json:"targets,omitempty"`
	// DeadLetters are the regions' dead-letter streams that hold messages.
	DeadLetters []DeadLetter `json:"dead_letters,omitempty"`
	// Capture is the source's slot, with --source-db.
	Capture *Capture `json:"capture,omitempty"`
	// Snapshots are the snapshots in the home domain's snapshot stream,
	// newest first; SnapshotError says why they could not be read.
	Snapshots     []Snapshot `json:"snapshots,omitempty"`
	SnapshotError string     `json:"snapshot_error,omitempty"`
}

// Stream is one domain's copy of a source's change stream.
type Stream struct {
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
	LastTxnLSN string  `json:"last_txn_lsn,omitempty"`
	Mirror     *Mirror `json:"mirror,omitempty"`
	// Gap says which messages this copy lost, if any.
	Gap       string     `json:"gap,omitempty"`
	Consumers []Consumer `json:"consumers"`

	lastTxn stream.LSN
	asked   string // the domain as asked: "" for the connected server's
}

// Mirror is how a region's copy of the stream follows its origin.
type Mirror struct {
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

// Consumer is the durable consumer of a region's applier.
type Consumer struct {
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

// Target is a region's position in its database, and its applier.
type Target struct {
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
	Applier *Applier `json:"applier,omitempty"`
	// ApplierState sums it up: running, lagging (running, but behind or
	// applying nothing), stopped, or down (its record says running, but
	// its heartbeat stopped).
	ApplierState string `json:"applier_state,omitempty"`
	// Restore is the snapshot the target was built from; null when it
	// was not built from one.
	Restore *Restore `json:"restore,omitempty"`
	// Conflicts counts the conflicts of the last 15 minutes per minute,
	// by kind and decision.
	Conflicts []ConflictCount `json:"conflicts,omitempty"`

	appliedAgo *float64 // seconds since the target's last commit of a position
}

// Gather asks every domain and target, then lists the problems. Only
// a failed connection to NATS is an error; a domain or a database that
// does not answer is reported in its row and as a problem.
func Gather(ctx context.Context, o Options, log zerolog.Logger) (*Report, error) {
	targets := o.Targets
	nc, err := stream.Connect(o.NATS, "pgjet status", o.Auth, log, nats.Timeout(o.Timeout), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Error().Err(err).Msg("nats") }))
	if err != nil {
		if stream.IsPermanent(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (is nats-server running there?)", err)
	}
	defer nc.Close()

	domains := o.Domains
	if len(domains) == 0 {
		domains = []string{""}
	}
	rep := &Report{At: time.Now().UTC(), NATS: stream.RedactURL(o.NATS)}
	var found []domainFound
	askDomains(ctx, nc, o, domains, rep, &found)
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
	askDomains(ctx, nc, o, homes, rep, &found)
	if err := checkSourceName(ctx, nc, o, rep, found); err != nil {
		return nil, err
	}

	bySource := map[string]*Source{}
	source := func(name string) *Source {
		if s, ok := bySource[name]; ok {
			return s
		}
		s := &Source{Source: name, Streams: []Stream{}}
		bySource[name] = s
		return s
	}
	if o.Name != "" {
		source(o.Name)
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
		if o.Name != "" {
			names = []string{o.Name}
		}
		results := make([]map[string]Target, len(targets))
		for i, t := range targets {
			wg.Go(func() {
				tctx, cancel := context.WithTimeout(ctx, o.Timeout)
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
				tr.Region = t.Region
				s.Targets = append(s.Targets, tr)
			}
		}
	}
	if o.SourceDB != "" {
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		source(o.Name).Capture = captureStatus(cctx, o.SourceDB, o.Slot)
		cancel()
	}
	for _, s := range bySource {
		home := homeStream(s.Streams)
		for i := range s.Targets {
			tr := &s.Targets[i]
			if home != nil && tr.Error == "" {
				tctx, cancel := context.WithTimeout(ctx, o.Timeout)
				tr.WaitingSeconds = oldestUnapplied(tctx, nc, home, tr.StreamSeq, rep.At)
				cancel()
			}
			fillTargetLag(tr, s, rep, o.Stall)
			fillApplierState(tr, o.Stall)
		}
		if home != nil {
			sctx, cancel := context.WithTimeout(ctx, o.Timeout)
			if s.Snapshots, err = snapshotStatus(sctx, nc, home, s.Source); err != nil {
				s.SnapshotError = err.Error()
			}
			cancel()
			markRestored(s)
		}
	}

	for _, s := range bySource {
		slices.SortFunc(s.Streams, func(a, b Stream) int {
			return cmp.Or(cmp.Compare(roleOrder(a.Role), roleOrder(b.Role)), cmp.Compare(a.Domain, b.Domain))
		})
		slices.SortFunc(s.Targets, func(a, b Target) int { return cmp.Compare(a.Region, b.Region) })
		slices.SortFunc(s.DeadLetters, func(a, b DeadLetter) int { return cmp.Compare(a.Region, b.Region) })
		rep.Sources = append(rep.Sources, *s)
	}
	slices.SortFunc(rep.Sources, func(a, b Source) int { return cmp.Compare(a.Source, b.Source) })
	if rep.Sources == nil {
		rep.Sources = []Source{}
	}
	rep.Problems = problems(rep, o.Stall)
	rep.Healthy = len(rep.Problems) == 0
	return rep, nil
}

// domainFound is what one domain answered.
type domainFound struct {
	streams     []Stream
	deadLetters []DeadLetter
}

// askDomains asks each domain at once, appending its row to rep.Domains
// and what it holds to found.
func askDomains(ctx context.Context, nc *nats.Conn, o Options, domains []string, rep *Report, found *[]domainFound) {
	rows := make([]Domain, len(domains))
	out := make([]domainFound, len(domains))
	var wg sync.WaitGroup
	for i, d := range domains {
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			rows[i].Domain = d
			name, df, err := domainStatus(dctx, nc, d, o.Name, o.Stall)
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
func streamStatus(ctx context.Context, js jetstream.JetStream, domain string, info *jetstream.StreamInfo, stall time.Duration) (Stream, error) {
	st := info.State
	sr := Stream{
		Domain:    domain,
		Stream:    info.Config.Name,
		Role:      "home",
		Messages:  st.Msgs,
		Bytes:     st.Bytes,
		FirstSeq:  st.FirstSeq,
		LastSeq:   st.LastSeq,
		Consumers: []Consumer{},
	}
	if !st.LastTime.IsZero() && st.Msgs > 0 {
		t := st.LastTime.UTC()
		sr.LastTime = &t
	}
	if m := info.Config.Mirror; m != nil {
		sr.Role = "mirror"
		mr := &Mirror{Upstream: stream.MirrorDomain(m)}
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
		cr := Consumer{
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
	slices.SortFunc(sr.Consumers, func(a, b Consumer) int { return cmp.Compare(a.Name, b.Name) })
	return sr, nil
}

// markMirrorGaps flags mirrors that can no longer copy everything: the
// home stream no longer holds the message after the mirror's last one, so
// the mirror will skip to what is left.
func markMirrorGaps(streams []Stream) {
	var home *Stream
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
func targetStatus(ctx context.Context, t TargetDB, names []string) map[string]Target {
	fail := func(err error) map[string]Target {
		return map[string]Target{"": {Region: t.Region, Error: err.Error()}}
	}
	conn, err := pgx.Connect(ctx, t.URL)
	if err != nil {
		return fail(pgerr.ClassifyConnect(t.URL, err))
	}
	defer conn.Close(context.WithoutCancel(ctx))

	out := map[string]Target{}
	for _, n := range names {
		out[n] = Target{Region: t.Region, Error: "no applied position for source " + n + " yet"}
	}
	positions, err := applied.Read(ctx, conn, names...)
	if err != nil {
		if errors.Is(err, applied.ErrNoTable) {
			return fail(fmt.Errorf("no pgjet.applied in %s: pgjet-apply has not run against it", redact.Postgres(t.URL)))
		}
		return fail(err)
	}
	for _, p := range positions {
		appliedAgo := p.Clock.Sub(p.AppliedAt).Seconds()
		tr := Target{Region: t.Region, CommitLSN: p.CommitLSN.String(), EndLSN: p.EndLSN.String(), SourceLSN: p.SourceLSN.String(), StreamSeq: p.StreamSeq,
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
	if err := readApplierStates(ctx, conn, names, t.Region, out); err != nil {
		return fail(err)
	}
	if err := readTargetDetail(ctx, conn, names, out); err != nil {
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

// WriteText writes the report as tables for people.
func (r *Report) WriteText(out io.Writer) error {
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
					behind = HumanBytes(int64(*t.BehindBytes))
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

// HumanBytes renders a byte count with a binary unit, as the report
// does (1.5 MiB).
func HumanBytes(n int64) string {
	if n < 0 {
		n = 0
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
