// Package apply replays a source's change stream into a region's Postgres:
// each source transaction atomically and in commit order, with the applied
// position stored in the same target transaction as the rows, so nothing is
// lost and nothing applied twice across crashes.
//
// Rows are found by the source's replica identity (primary key, identity
// index, or the full old row). Statements are pipelined and consecutive
// small source transactions grouped into one target transaction; JetStream
// is acknowledged only after the target commit.
//
// See https://docs.nats.io/nats-concepts/jetstream/consumers and
// https://www.postgresql.org/docs/15/logical-replication-conflicts.html
package apply

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/pgjet/pgjet/stream"
)

// Config configures an Applier.
type Config struct {
	// DB is the target database URL.
	DB string
	// NATS is the URL of the region's NATS server.
	NATS string
	// NATSOptions authenticate and secure the NATS connection.
	NATSOptions stream.ConnectOptions
	// Name is the source name to apply.
	Name string
	// Region names this applier's region; it names the durable consumer.
	Region string
	// Domain is the JetStream domain to consume in ("" = the domain of
	// the server NATS points at).
	Domain string
	// UpstreamDomain, when set, is the source stream's home domain: the
	// applier keeps a mirror of it in Domain and consumes the mirror, so
	// the region reads locally and keeps its copy while cut off.
	UpstreamDomain string
	// MirrorMaxAge and MirrorMaxBytes bound the mirror kept with
	// UpstreamDomain (0: no bound of that kind). The origin's limits do
	// not reach a mirror; keep these at least as large as the capture's
	// --stream-max-age and --stream-max-bytes, or a region that falls
	// behind loses changes it still needs.
	MirrorMaxAge   time.Duration
	MirrorMaxBytes int64
	// GroupTxns bounds how many source transactions share one target
	// transaction.
	GroupTxns int
	// GroupBytes bounds the bytes of changes in one target transaction
	// (a larger source transaction still applies whole, alone).
	GroupBytes int
	// GroupDelay bounds how long a target transaction stays open waiting
	// for more source transactions.
	GroupDelay time.Duration
	// PipelineStatements is the most statements sent in one round trip.
	PipelineStatements int
	// StatementCache is the most change statements kept prepared on the
	// target; the least recently used are deallocated to make room.
	StatementCache int
	// SessionReplicationRole sets session_replication_role = replica on
	// the target (triggers and foreign keys do not fire for replicated
	// rows, as in native logical replication). Needs superuser.
	SessionReplicationRole bool
	// SynchronousCommit is the target session's synchronous_commit. "off"
	// is safe: the applied position commits with the rows, so a target
	// crash that loses its last commits also loses their position, and
	// those transactions are consumed again from the stream.
	SynchronousCommit string
	// ProgressInterval is how often progress is logged; 0 disables.
	ProgressInterval time.Duration
	// RetryMax caps the backoff between reconnection attempts.
	RetryMax time.Duration
	// OutageLimit is how long the stream may stay unreachable before the
	// applier says so in one line and /readyz fails.
	OutageLimit time.Duration
	// ShutdownTimeout bounds a shutdown: the batch in flight and the final
	// commit get this long to finish after the context ends. A target
	// that stopped answering is then given up on (what it did not confirm
	// is applied again on restart), so the process still exits.
	ShutdownTimeout time.Duration
	// ConflictPolicy is how a change that collides with the target's rows
	// is resolved: source-wins (default), last-writer-wins, keep-local or
	// error. See Policy.
	ConflictPolicy string
	// ConflictTables overrides ConflictPolicy per table: "schema.table" (a
	// name without a schema is in public) → policy.
	ConflictTables map[string]string
	// LocalName is the source name this target database is captured under
	// (its own pgjet-capture --name) when it also takes writes
	// (active-active). last-writer-wins breaks ties between equal commit
	// times by source name and needs it to name the target's local writes.
	LocalName string
	// FollowSequences names the sequences ("schema.name" patterns as
	// path.Match takes them; a name without a schema is in public) that
	// follow the source's values when LocalName is set. A writing region
	// owns its sequences: another region's values are not applied to them
	// unless named here (disjoint series would otherwise cross). Without
	// LocalName every sequence follows the source.
	FollowSequences []string
	// SkipSnapshot follows changes only, even on an empty target: for a
	// target seeded by other means.
	SkipSnapshot bool
	// NoOwners gives up the source's owners and privileges: snapshots are
	// restored without owners, GRANTs and default privileges, and schema
	// changes replay as the apply role instead of the role that made them,
	// so every object on the target belongs to the apply role (as pgjet
	// did before it kept them). For targets where the source's roles do
	// not exist and need not: a SECURITY DEFINER function then runs as the
	// apply role, so never with untrusted roles on the source.
	NoOwners bool

	// UntilLSN, UntilTime and StopAtEnd make the applier stop (Run
	// returns nil) before the first transaction past a point, or at the
	// end the stream had when it started: pgjet replay.
	UntilLSN  stream.LSN
	UntilTime time.Time
	StopAtEnd bool

	// OnBadMessage is what a message that cannot be decoded, or that
	// belongs to another source, does: OnBadMessageStop (the default)
	// stops the applier naming it; OnBadMessageDeadLetter republishes it
	// with its origin in headers to DeadLetterSubject, kept by the stream
	// DeadLetterStream, and goes on past it.
	OnBadMessage string

	// StateInterval is how often a running applier renews its heartbeat
	// in the target's pgjet.applier_state (0: it records no state). pgjet
	// status calls an applier down when its row says running and the
	// heartbeat is older than its stall timeout and 3 intervals.
	StateInterval time.Duration
}

// Policies for a bad message (Config.OnBadMessage).
const (
	OnBadMessageStop       = "stop"
	OnBadMessageDeadLetter = "dead-letter"
)

// DefaultConfig returns a Config with every tunable set to its default.
func DefaultConfig() Config {
	return Config{
		GroupTxns:              1000,
		GroupBytes:             16 << 20,
		GroupDelay:             200 * time.Millisecond,
		PipelineStatements:     1000,
		StatementCache:         512,
		MirrorMaxAge:           7 * 24 * time.Hour, // capture's default --stream-max-age
		SessionReplicationRole: true,
		SynchronousCommit:      "off",
		ProgressInterval:       10 * time.Second,
		RetryMax:               30 * time.Second,
		OutageLimit:            stream.DefaultOutageLimit,
		ShutdownTimeout:        15 * time.Second,
		ConflictPolicy:         PolicySourceWins.String(),
		OnBadMessage:           OnBadMessageStop,
		StateInterval:          DefaultStateInterval,
	}
}

// Validate checks cfg.
func (c *Config) Validate() error {
	var errs []error
	if c.DB == "" {
		errs = append(errs, errors.New("--db is required (the target database URL, e.g. postgres://pgjet_apply@replica:5432/app)"))
	}
	if c.NATS == "" {
		errs = append(errs, errors.New("--nats is required (the NATS URL, e.g. nats://localhost:4222)"))
	} else if err := stream.ValidateURL("--nats", c.NATS); err != nil {
		errs = append(errs, err)
	}
	if err := c.NATSOptions.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Name == "" {
		errs = append(errs, errors.New("--name is required (the source's name, as given to pgjet-capture)"))
	} else if err := stream.ValidateSource(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("--name: %w", err))
	}
	if c.Region == "" {
		errs = append(errs, errors.New("--region is required (this region's name, e.g. eu)"))
	} else if err := stream.ValidateRegion(c.Region); err != nil {
		errs = append(errs, fmt.Errorf("--region: %w", err))
	}
	switch c.SynchronousCommit {
	case "on", "off", "local", "remote_write", "remote_apply":
	default:
		errs = append(errs, fmt.Errorf("--synchronous-commit %q: use on, off, local, remote_write or remote_apply", c.SynchronousCommit))
	}
	if c.OnBadMessage != OnBadMessageStop && c.OnBadMessage != OnBadMessageDeadLetter {
		errs = append(errs, fmt.Errorf("--on-bad-message %q: use %s or %s", c.OnBadMessage, OnBadMessageStop, OnBadMessageDeadLetter))
	}
	if c.MirrorMaxAge < 0 || c.MirrorMaxBytes < 0 {
		errs = append(errs, errors.New("--mirror-max-age and --mirror-max-bytes must not be negative (0 is no bound)"))
	}
	if c.StateInterval < 0 {
		errs = append(errs, fmt.Errorf("--state-interval %s: must not be negative (0 records no state)", c.StateInterval))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: must be positive (e.g. 15s)", c.ShutdownTimeout))
	}
	if c.GroupTxns < 1 || c.GroupBytes < 1 || c.PipelineStatements < 1 || c.StatementCache < 1 {
		errs = append(errs, errors.New("group, pipeline and statement cache limits must be positive"))
	}
	if _, err := ParsePolicy(c.ConflictPolicy); err != nil {
		errs = append(errs, fmt.Errorf("--conflict: %w", err))
	}
	for table, policy := range c.ConflictTables {
		if _, err := ParsePolicy(policy); err != nil {
			errs = append(errs, fmt.Errorf("--conflict-table %s: %w", table, err))
		}
	}
	if c.LocalName != "" {
		if err := stream.ValidateSource(c.LocalName); err != nil {
			errs = append(errs, fmt.Errorf("--local-name: %w", err))
		} else if c.LocalName == c.Name {
			errs = append(errs, fmt.Errorf("--local-name %q is the source applied here (--name): name this database's own capture", c.LocalName))
		}
	}
	for _, p := range c.FollowSequences {
		if _, err := path.Match(qualify(p), ""); err != nil || strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("--follow-sequences %q: want schema.sequence, with * and ? as wildcards", p))
		}
	}
	if len(c.FollowSequences) > 0 && c.LocalName == "" {
		errs = append(errs, errors.New("--follow-sequences needs --local-name: without it this database writes nothing of its own and every sequence follows the source"))
	}
	if c.uses(PolicyLastWriterWins) && c.LocalName == "" {
		errs = append(errs, errors.New("last-writer-wins needs --local-name, the name this database's own pgjet-capture publishes under: equal commit times are decided by source name, the same way in every region"))
	}
	return errors.Join(errs...)
}

// ConsumerName is the durable consumer of region for a source's stream.
func ConsumerName(region string) string { return "pgjet_apply_" + region }

// qualify puts a name without a schema in public.
func qualify(name string) string {
	if !strings.Contains(name, ".") {
		return "public." + name
	}
	return name
}

// followsSequence reports whether the target's sequence schema.name takes
// the source's values: always on a read replica, and on a writing region
// (LocalName) only when FollowSequences names it.
func (c *Config) followsSequence(schemaName, name string) bool {
	if c.LocalName == "" {
		return true
	}
	for _, p := range c.FollowSequences {
		if ok, _ := path.Match(qualify(p), schemaName+"."+name); ok {
			return true
		}
	}
	return false
}
