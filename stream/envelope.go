// Package stream owns everything pgjet does with NATS JetStream: the
// message envelope that carries source transactions, stream and mirror
// topology, subject names, publishing and consuming.
//
// The envelope is documented in ENVELOPE.md beside this file. It is a
// compact, versioned binary format: JSON would triple the bytes on the hot
// path and lose the distinction between NULL, unchanged-TOAST and text.
//
// See https://docs.nats.io/nats-concepts/jetstream and
// https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
package stream

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Version is the newest envelope version this package reads and writes.
// Decoders refuse messages of a newer version rather than guess at their
// meaning. The encoder writes version 1 for every envelope version 1 can
// express (all but those that carry values in pieces, which version 2
// added): appliers of an older pgjet read every stream whose values all
// fit in a message, and those could never read the others.
const Version = 2

// MaxValueSize is the largest value a change may carry in pieces: the
// text form of a Postgres value, which Postgres keeps under 1 GB.
const MaxValueSize = 1 << 30

// Kind says what an envelope carries.
type Kind uint8

const (
	// KindTxn is one chunk of a committed source transaction.
	KindTxn Kind = 1
	// KindHeartbeat marks a point in the source WAL with the source's
	// clock; appliers use it to measure lag on an idle source.
	KindHeartbeat Kind = 2
	// KindMessage carries one non-transactional logical decoding message
	// (pg_logical_emit_message(false, ...)) as a single OpMessage change.
	KindMessage Kind = 3
)

// Chunk flags.
const (
	// FlagFirst marks the first chunk of a transaction.
	FlagFirst uint8 = 1 << 0
	// FlagLast marks the last chunk of a transaction: EndLSN is set and
	// the transaction may be committed once this chunk is applied.
	FlagLast uint8 = 1 << 1
	// FlagPiece marks a piece chunk (version 2): instead of relations
	// and changes it carries the next bytes (Envelope.Piece) of a value
	// of the change before it that travels in pieces (ValuePieces).
	FlagPiece uint8 = 1 << 2
)

// LSN is a Postgres log sequence number.
type LSN uint64

// String renders the LSN as Postgres does (0/16B3748).
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses the X/X text form of an LSN.
func ParseLSN(s string) (LSN, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	return LSN(uint64(hi)<<32 | uint64(lo)), nil
}

// Envelope is one JetStream message: a chunk of a transaction or a
// heartbeat. Chunks of one transaction are contiguous on the stream.
type Envelope struct {
	Kind   Kind
	Source string // source name given to pgjet-capture
	// Origin is the replication origin the source transaction was written
	// under ("" for local writes).
	Origin string
	Xid    uint32
	// CommitLSN is the LSN of the source commit record; it identifies the
	// transaction. For a heartbeat it is the LSN of the heartbeat message.
	CommitLSN LSN
	// EndLSN is the end of the commit record, set on the last chunk only:
	// the position the slot may confirm once the transaction is durable.
	EndLSN     LSN
	CommitTime time.Time // source commit time (heartbeat: source clock)
	Chunk      uint32    // 0-based chunk number within the transaction
	Flags      uint8
	// Relations describes every relation a change in this chunk refers
	// to, so a consumer needs nothing but this message to apply it.
	Relations []Relation
	Changes   []Change
	// Piece holds the bytes a piece chunk (FlagPiece) carries; such a
	// chunk has no Relations and no Changes.
	Piece []byte
}

// IsPiece reports whether this is a piece chunk.
func (e *Envelope) IsPiece() bool { return e.Flags&FlagPiece != 0 }

// First reports whether this is the first chunk of its transaction.
func (e *Envelope) First() bool { return e.Flags&FlagFirst != 0 }

// Last reports whether this is the last chunk of its transaction.
func (e *Envelope) Last() bool { return e.Flags&FlagLast != 0 }

// Headers capture sets on every message it publishes. They name the
// Postgres cluster the message was decoded from, so that a capture started
// against another cluster (a restore, a migration, a promoted standby) is
// told apart from the one that wrote the stream before it skips anything.
const (
	// HeaderSystem is the source's system identifier (IDENTIFY_SYSTEM,
	// pg_control_system()), in decimal.
	HeaderSystem = "Pgjet-System"
	// HeaderTimeline is the source's timeline when the message was
	// published, in decimal.
	HeaderTimeline = "Pgjet-Timeline"
	// HeaderDatabase is the source's database name and HeaderSlot the
	// slot capture streams from: an applier pointed at a database of the
	// same system, of that name and holding that slot, is pointed at the
	// source itself. (A replica seeded by a base backup shares the system
	// and the name, but not the slot.)
	HeaderDatabase = "Pgjet-Database"
	HeaderSlot     = "Pgjet-Slot"
	// HeaderPrev is the Nats-Msg-Id of the message capture published
	// before this one. A clustered stream can skip sequence numbers
	// (proposals that failed in a leader change) without losing a
	// message; where the sequence jumps, this chain tells such a hole
	// from lost messages.
	HeaderPrev = "Pgjet-Prev"
)

// MsgID is the Nats-Msg-Id of a chunk published by capture session
// session. The session is part of it because a transaction re-sent after a
// capture restart may be cut into chunks differently (another
// --chunk-bytes or filter, a relation described anew): were chunk k of
// the new cutting a duplicate of chunk k of the old one, JetStream would
// drop the first chunks of the re-sent transaction and keep the rest after
// the old ones, one transaction spliced from two. With the session in the
// id the re-sent transaction is stored whole from its first chunk, and
// consumers discard the partial one before it.
func MsgID(source string, commit LSN, chunk uint32, session string) string {
	return fmt.Sprintf("%s:%016X:%d:%s", source, uint64(commit), chunk, session)
}

// ParseMsgID reads back what MsgID wrote: the source, commit LSN and
// chunk of a transaction's message. ok is false for an id of another form
// (a batch's or a stranger's, or none).
func ParseMsgID(id string) (source string, commit LSN, chunk uint32, ok bool) {
	// Three parts in streams written before ids named the session.
	parts := strings.Split(id, ":")
	if len(parts) != 3 && len(parts) != 4 || len(parts[1]) != 16 {
		return "", 0, 0, false
	}
	c, err1 := strconv.ParseUint(parts[1], 16, 64)
	n, err2 := strconv.ParseUint(parts[2], 10, 32)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return parts[0], LSN(c), uint32(n), true
}

// Replica identity settings, as pgoutput sends them (relreplident).
const (
	IdentityDefault = 'd'
	IdentityNothing = 'n'
	IdentityFull    = 'f'
	IdentityIndex   = 'i'
)

// Relation is a source table as of this change.
type Relation struct {
	ID       uint32 // source relation OID; scoped to this message
	Schema   string
	Name     string
	Identity uint8 // replica identity: IdentityDefault etc.
	Columns  []Column
}

// Column is a column of a Relation.
type Column struct {
	Name    string
	Key     bool   // part of the replica identity key
	TypeOID uint32 // source type OID (stable for built-in types only)
	TypeMod int32
	Type    string // format_type(oid, typmod) on the source, e.g. "numeric(10,2)"
}

// Op is the kind of a change.
type Op uint8

const (
	OpInsert   Op = 'I'
	OpUpdate   Op = 'U'
	OpDelete   Op = 'D'
	OpTruncate Op = 'T'
	// OpMessage is a logical decoding message: pgjet's own (DDL,
	// sequences) or an application's, passed through for other consumers.
	OpMessage Op = 'M'
)

// Prefixes of the logical messages pgjet itself writes into the source WAL.
const (
	// PrefixHeartbeat marks heartbeats (non-transactional).
	PrefixHeartbeat = "pgjet.heartbeat"
	// PrefixDDL carries a schema change captured by pgjet's event trigger
	// (transactional, in commit order with the rows around it).
	PrefixDDL = "pgjet.ddl"
	// PrefixSequences carries the source's sequence values.
	PrefixSequences = "pgjet.sequences"
	// PrefixResync marks where a resync's copy of a table takes over
	// (transactional; content a JSON ResyncMarker): pgjet resync writes
	// it before the copy's point.
	PrefixResync = "pgjet.resync"
	// PrefixUnsynced names a table that joined capture's publication
	// holding rows no replica got (transactional; content a JSON
	// UnsyncedTable): capture names the pgjet resync that copies them, and
	// does not publish it.
	PrefixUnsynced = "pgjet.unsynced"
)

// UnsyncedTable is the content of a PrefixUnsynced message.
type UnsyncedTable struct {
	Publication string `json:"publication"`
	Schema      string `json:"schema"`
	Table       string `json:"table"`
}

// Truncate options, as pgoutput sends them.
const (
	TruncateCascade         uint8 = 1
	TruncateRestartIdentity uint8 = 2
)

// Change is one row change (or one TRUNCATE) of a transaction.
type Change struct {
	Op       Op
	Relation uint32 // Relation.ID; unused for OpTruncate
	// Old is the old key (identity default/index, only when the key
	// changed) or the whole old row (identity FULL) of an update or delete.
	// Nil when pgoutput sent none.
	Old []Value
	// New is the new row of an insert or update.
	New []Value
	// Truncated lists the relations of a TRUNCATE, TruncateOpts its options.
	Truncated    []uint32
	TruncateOpts uint8
	// Prefix and Content are those of an OpMessage; Transactional is
	// false only in a KindMessage envelope.
	Prefix        string
	Content       []byte
	Transactional bool
}

// Value kinds, as pgoutput's TupleData sends them.
const (
	ValueNull      = 'n'
	ValueUnchanged = 'u' // unchanged TOASTed value: never overwrite it
	ValueText      = 't' // Data holds Postgres' text output of the value
	// ValuePieces is a value too large for one message (version 2): its
	// text output, Size bytes, follows in the piece chunks after the
	// chunk that carries the change. Data is nil.
	ValuePieces = 'p'
)

// Value is one column value.
type Value struct {
	Kind uint8
	Data []byte
	// Size is the length of a ValuePieces value's text output; 0 for the
	// other kinds.
	Size int
}

// InPieces reports whether a value of the change travels in pieces.
func (c *Change) InPieces() bool {
	for _, vs := range [2][]Value{c.Old, c.New} {
		for i := range vs {
			if vs[i].Kind == ValuePieces {
				return true
			}
		}
	}
	return false
}
