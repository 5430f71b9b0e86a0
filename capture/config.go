// Package capture reads a logical replication slot (pgoutput) of one source
// database and publishes each committed transaction, in commit order and in
// bounded chunks, to the source's JetStream stream.
//
// The slot's confirmed flush position advances only to transactions whose
// every message JetStream acknowledged, so a crash anywhere loses nothing:
// Postgres re-sends from the confirmed position and JetStream's message-id
// dedup plus the capture's own stream-tail check drop what is already there.
//
// See https://www.postgresql.org/docs/15/protocol-logical-replication.html
package capture

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgjet/pgjet/stream"
)

// Config configures a Capture.
type Config struct {
	// DB is the source database URL; the role needs REPLICATION (or
	// superuser) and SELECT on published tables.
	DB string
	// NATS is the URL of the NATS server of the source's home region.
	NATS string
	// NATSOptions authenticate and secure the NATS connection.
	NATSOptions stream.ConnectOptions
	// Name is the source name: it names the stream (PGJET_<name>) and
	// subjects (pgjet.<name>.>).
	Name string
	// Tables restricts the publication to these schema.table names; empty
	// publishes all tables.
	Tables []string
	// Keyless is what capture does with the tables its publication would
	// publish UPDATE and DELETE of while they have no replica identity (no
	// primary key under REPLICA IDENTITY DEFAULT, or NOTHING), which
	// Postgres then refuses: "" stops capture before it makes or changes
	// its publication, naming them; KeylessIdentityFull sets REPLICA
	// IDENTITY FULL on them; KeylessExclude leaves them out of the
	// publication; KeylessInsertsOnly publishes their inserts only. It
	// goes for tables made later without a key too (see keyless.go).
	Keyless string
	// KeylessTables sets Keyless per table: "pattern=choice", with a
	// schema.table glob pattern (path.Match); the first that matches wins
	// over Keyless. It goes for the tables there when capture starts.
	KeylessTables []string
	// Partitions says how changes to partitions are published: "leaf"
	// (as changes of the partition itself, mirroring the primary) or
	// "root" (as changes of the partitioned table, for replicas
	// partitioned differently or not at all). It applies when capture
	// creates the publication.
	Partitions string
	// Slot is the logical replication slot; default pgjet_<name>.
	Slot string
	// Publication is the publication; default pgjet_<name>.
	Publication string
	// ChunkBytes is the target size of one message; transactions larger
	// than this are split. Capture uses at most half the NATS server's
	// max_payload (a batch may reach twice this size).
	ChunkBytes int
	// MaxMessageBytes, when not 0, bounds every message below the NATS
	// server's max_payload: set it to the smallest max_payload of the
	// regions' servers, whose leafnodes drop their link to the hub on a
	// larger message. Rows larger than a message travel in pieces.
	MaxMessageBytes int
	// Window is the most messages in flight awaiting JetStream acks.
	Window int
	// WindowBytes is the most bytes in flight awaiting JetStream acks.
	WindowBytes int64
	// StatusInterval is how often the confirmed position is reported to
	// Postgres.
	StatusInterval time.Duration
	// HeartbeatInterval is how often a heartbeat is written into the WAL;
	// 0 disables heartbeats.
	HeartbeatInterval time.Duration
	// Stream shapes the stream when capture creates it.
	Stream stream.StreamOptions
	// ProgressInterval is how often progress is logged; 0 disables.
	ProgressInterval time.Duration
	// RetryMax caps the backoff between reconnection attempts.
	RetryMax time.Duration
	// OutageLimit is how long the stream may stay unreachable before
	// capture says so in one line and /readyz fails.
	OutageLimit time.Duration

	// DDL installs pgjet's event triggers on the source (superuser only;
	// otherwise a warning) and publishes the schema changes they capture.
	// When false, captured schema changes are dropped.
	DDL bool
	// Sequences publishes the source's sequence values at heartbeats when
	// they changed (and every SequenceEvery heartbeats regardless), so
	// replicas never hand out ids their rows already use.
	Sequences bool
	// IncludeTables, when set, captures only tables matching one of these
	// schema.table glob patterns (path.Match: public.orders_*).
	IncludeTables []string
	// ExcludeTables drops the changes and schema changes of tables
	// matching one of these patterns; it wins over IncludeTables.
	ExcludeTables []string
	// Snapshot takes an initial snapshot of the schema and the captured
	// tables into the snapshot stream when the stream holds none, and
	// resumes one that was interrupted (--no-snapshot turns it off).
	Snapshot bool
	// SnapshotEvery takes a new snapshot at this interval; 0 never.
	SnapshotEvery time.Duration
	// SnapshotKeep is how many complete snapshots are kept; older ones are
	// removed when a new one completes. 0 keeps all.
	SnapshotKeep int
	// SnapshotWorkers is how many connections copy tables at once.
	SnapshotWorkers int
	// SnapshotRangeBytes splits tables larger than this into block ranges
	// copied in parallel.
	SnapshotRangeBytes int64
	// PgDump is the pg_dump program that copies the schema.
	PgDump string
	// StreamRetention is what bounds the change stream: "age" (its
	// MaxAge) or "snapshots" (no age limit; after each snapshot, changes
	// older than the oldest snapshot kept are removed, so a replay from
	// any kept snapshot always finds the changes after it).
	StreamRetention string
	// ExcludeColumns removes columns matching these schema.table.column
	// patterns from every relation and row published (e.g. *.*.ssn). A
	// replica-identity key column cannot be excluded.
	ExcludeColumns []string
}

// SequenceEvery is how many heartbeats may pass before sequence values are
// published again even when none changed.
const SequenceEvery = 10

// DefaultConfig returns a Config with every tunable set to its default.
func DefaultConfig() Config {
	return Config{
		Partitions:         "leaf",
		ChunkBytes:         256 << 10,
		Window:             4096,
		WindowBytes:        64 << 20,
		StatusInterval:     time.Second,
		HeartbeatInterval:  10 * time.Second,
		Stream:             stream.StreamOptions{MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute},
		ProgressInterval:   10 * time.Second,
		RetryMax:           30 * time.Second,
		OutageLimit:        stream.DefaultOutageLimit,
		DDL:                true,
		Sequences:          true,
		Snapshot:           true,
		SnapshotKeep:       2,
		SnapshotWorkers:    4,
		SnapshotRangeBytes: 256 << 20,
		PgDump:             "pg_dump",
		StreamRetention:    "age",
	}
}

// Validate checks cfg and fills the names derived from Name.
func (c *Config) Validate() error {
	var errs []error
	if c.DB == "" {
		errs = append(errs, errors.New("--db is required (the source database URL, e.g. postgres://pgjet_capture@db:5432/app)"))
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
		errs = append(errs, errors.New("--name is required (the source's name: its stream is PGJET_<name>)"))
	} else if err := stream.ValidateSource(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("--name: %w", err))
	}
	if c.Slot == "" {
		c.Slot = DefaultSlot(c.Name)
	}
	if c.Publication == "" {
		c.Publication = c.Slot
	}
	errs = append(errs, c.validateFilter())
	errs = append(errs, c.validateKeyless())
	if c.Partitions != "leaf" && c.Partitions != "root" {
		errs = append(errs, fmt.Errorf("--partitions %q: use leaf or root", c.Partitions))
	}
	if c.ChunkBytes < 1024 {
		errs = append(errs, errors.New("chunk bytes must be at least 1024"))
	}
	if c.MaxMessageBytes != 0 && c.MaxMessageBytes < 4096 {
		errs = append(errs, errors.New("--max-message-bytes must be 0 (the NATS server's max_payload) or at least 4096"))
	}
	if c.Window < 1 || c.WindowBytes < int64(c.ChunkBytes) {
		errs = append(errs, errors.New("window must allow at least one chunk"))
	}
	switch c.StreamRetention {
	case "age":
	case "snapshots":
		c.Stream.MaxAge = 0
	default:
		errs = append(errs, fmt.Errorf("--stream-retention %q: use age or snapshots", c.StreamRetention))
	}
	if c.SnapshotWorkers < 1 {
		errs = append(errs, errors.New("--snapshot-workers must be at least 1"))
	}
	if c.SnapshotEvery < 0 || c.SnapshotKeep < 0 {
		errs = append(errs, errors.New("--snapshot-every and --snapshot-keep must not be negative"))
	}
	if c.StatusInterval <= 0 {
		errs = append(errs, errors.New("status interval must be positive"))
	}
	return errors.Join(errs...)
}

// DefaultSlot is the replication slot, and publication, of source when
// --slot does not name one.
func DefaultSlot(source string) string {
	return "pgjet_" + strings.ToLower(strings.ReplaceAll(source, "-", "_"))
}
