package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots of a source live in a stream of their own, beside the change
// stream and mirrored like it, so a region can build a database from NATS
// alone. A snapshot is the sequence of messages on one subject,
// pgjetsnap.<source>.<id>, each tagged by the SnapKindHeader header:
//
//	begin      JSON SnapshotManifest: id, source, tables
//	schema     a part of a schema script (pg_dump --section=pre-data after
//	           begin, --section=post-data before end); parts of a section
//	           concatenate in order
//	table      JSON SnapshotTable: a table's copy starts; it holds the rows
//	           of the table at LSN (a table copied again after an
//	           interrupted snapshot starts over from this message)
//	data       rows of the table named by the table headers, in COPY text
//	           format, whole rows only but for a row larger than a message:
//	           its messages carry SnapMoreHeader but the last, and nothing
//	           comes between them
//	table-end  JSON SnapshotTable with Rows and Bytes: the table is whole
//	end        JSON SnapshotManifest with totals: the snapshot is complete
//
// Documented in stream/SNAPSHOT.md.
const (
	SnapKindHeader   = "Pgjet-Snap"
	SnapSchemaHeader = "Pgjet-Schema"
	SnapTableHeader  = "Pgjet-Table"
	SnapRangeHeader  = "Pgjet-Range"
	// SnapSectionHeader of a schema part: pre-data (before the rows) or
	// post-data (after them: indexes, constraints, triggers).
	SnapSectionHeader = "Pgjet-Section"
	// SnapMoreHeader ("1") marks a data message whose last row goes on in
	// the next data message: a row larger than a message is cut.
	SnapMoreHeader = "Pgjet-More"

	SnapBegin    = "begin"
	SnapSchema   = "schema"
	SnapTable    = "table"
	SnapData     = "data"
	SnapTableEnd = "table-end"
	SnapEnd      = "end"
	// SnapAbort ends a resync that will not complete (its pgjet resync
	// failed, or a later one for the same table gave it up).
	SnapAbort = "abort"
)

// ResyncIDPrefix begins the id of a resync: a copy of one captured table
// alone (pgjet resync), kept in the snapshot stream with the snapshot
// layout (no schema scripts, one table) but no snapshot of the source:
// restores and replays never build from it. The change stream holds a
// ResyncMarker (PrefixResync) committed before the copy's point, where an
// applier loads the copy.
const ResyncIDPrefix = "resync-"

// NewResyncID names a resync started at t.
func NewResyncID(t time.Time) string { return ResyncIDPrefix + NewSnapshotID(t) }

// IsResyncID reports whether id names a resync.
func IsResyncID(id string) bool { return strings.HasPrefix(id, ResyncIDPrefix) }

// ResyncMarker is the content of a PrefixResync logical message: the
// resync whose copy of the table takes over at this point of the change
// stream.
type ResyncMarker struct {
	ID     string `json:"id"`
	Schema string `json:"schema"`
	Table  string `json:"table"`
	// BeginSeq is the snapshot stream's sequence of the resync's begin
	// message, published before the marker was written (mirrors keep the
	// sequences): an applier at the marker tells by it a copy not yet in
	// its region from one removed before it got there (ResyncGone).
	// Markers of an older pgjet have none.
	BeginSeq uint64 `json:"begin_seq,omitempty"`
}

// ResyncGone reports whether the begin message of the resync of marker
// mk has left st, the snapshot stream an applier reads (or its region's
// mirror of it), for good: removed by the stream's limits or a purge, or
// the stream was made anew. A resync whose begin is gone never completes
// there. It is false for a marker without BeginSeq.
//
// The begin was published to the source's snapshot stream before the
// marker was written, so that stream holds messages up to BeginSeq or
// past it unless it was made anew. A mirror holding fewer may still be
// catching up: the mirror's upstream stream, which up returns (nil when
// out of reach), tells, and without it the mirror is waited for.
func ResyncGone(ctx context.Context, st jetstream.Stream, up func(context.Context) jetstream.Stream, source string, mk ResyncMarker) (bool, error) {
	if mk.BeginSeq == 0 {
		return false, nil
	}
	info, err := st.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("read stream %s: %w", SnapshotStreamName(source), err)
	}
	if info.State.LastSeq >= mk.BeginSeq {
		return resyncBeginGone(ctx, st, source, mk)
	}
	if info.Config.Mirror == nil {
		return true, nil // made anew
	}
	// The mirror copies what its upstream holds, and nothing else. An
	// upstream out of reach tells nothing: the mirror is waited for.
	ups := up(ctx)
	if ups == nil {
		return false, nil
	}
	upInfo, err := ups.Info(ctx)
	if err != nil {
		return false, nil
	}
	if upInfo.State.LastSeq < mk.BeginSeq {
		return true, nil // made anew
	}
	gone, err := resyncBeginGone(ctx, ups, source, mk)
	return gone && err == nil, nil
}

// resyncBeginGone reports whether st, holding messages up to mk.BeginSeq
// or past it, lacks mk's begin message there.
func resyncBeginGone(ctx context.Context, st jetstream.Stream, source string, mk ResyncMarker) (bool, error) {
	m, err := st.GetMsg(ctx, mk.BeginSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read stream %s at seq %d: %w", SnapshotStreamName(source), mk.BeginSeq, err)
	}
	return m.Subject != SnapshotOutlineSubject(source, mk.ID), nil
}

// ResyncTable returns the table ("schema.name") resync r of st re-copies,
// from its end message, or else its begin message.
func ResyncTable(ctx context.Context, st jetstream.Stream, source string, r SnapshotInfo) (string, error) {
	if len(r.Manifest.Tables) == 1 {
		return r.Manifest.Tables[0].Key(), nil
	}
	m, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(SnapshotOutlineSubject(source, r.ID)))
	if err != nil {
		return "", fmt.Errorf("read resync %s: %w", r.ID, err)
	}
	var man SnapshotManifest
	if err := json.Unmarshal(m.Data, &man); err != nil || len(man.Tables) != 1 {
		return "", fmt.Errorf("resync %s: its first message (seq %d) names no table", r.ID, m.Sequence)
	}
	return man.Tables[0].Key(), nil
}

// SnapshotVersion is the version of the snapshot format.
const SnapshotVersion = 1

// SnapshotStreamName is the stream holding a source's snapshots.
func SnapshotStreamName(source string) string { return "PGJET_SNAP_" + source }

// SnapshotSubject is the subject prefix of one snapshot: its rows go on
// <prefix>.d, everything else on <prefix>.m, so the outline of a snapshot
// is read without its rows. Snapshot subjects are outside pgjet.<source>.>
// so the change stream never holds them.
func SnapshotSubject(source, id string) string { return "pgjetsnap." + source + "." + id }

// SnapshotOutlineSubject carries every message of a snapshot but its rows.
func SnapshotOutlineSubject(source, id string) string { return SnapshotSubject(source, id) + ".m" }

// SnapshotRowsSubject carries a snapshot's rows.
func SnapshotRowsSubject(source, id string) string { return SnapshotSubject(source, id) + ".d" }

// SnapshotAllSubjects matches every message of a snapshot.
func SnapshotAllSubjects(source, id string) string { return SnapshotSubject(source, id) + ".>" }

// SnapshotManifest describes a snapshot; the begin message carries it with
// the tables planned, the end message with the totals.
type SnapshotManifest struct {
	Version int    `json:"version"`
	Source  string `json:"source"`
	ID      string `json:"id"`
	// LSN is the position the snapshot was taken at: transactions that
	// committed before it are in it. Tables copied again after an
	// interruption carry a later LSN of their own (SnapshotTable.LSN).
	LSN LSN `json:"lsn"`
	// StreamNext is the change stream's next sequence when the point was
	// taken: every transaction committed after the point lies at or after
	// it. A restore starts there, and passes over what the snapshot holds
	// by commit LSN. A search of the stream by LSN instead depends on the
	// stream being in commit order, and landed inside a transaction when
	// a capture behind the source was publishing one from before the point
	// as the restore looked. Snapshots of an older pgjet have none.
	StreamNext uint64 `json:"stream_next,omitempty"`
	// StreamLastID is the Nats-Msg-Id of the message before StreamNext:
	// StreamNext holds only while the stream is the one the snapshot saw
	// (see SnapshotStart).
	StreamLastID string    `json:"stream_last_id,omitempty"`
	Started      time.Time `json:"started"`
	// Finished, Rows and Bytes are set in the end message.
	Finished time.Time       `json:"finished,omitzero"`
	Rows     int64           `json:"rows,omitempty"`
	Bytes    int64           `json:"bytes,omitempty"`
	Tables   []SnapshotTable `json:"tables,omitempty"`
	// SchemaMD5 identifies the schema script: an interrupted snapshot is
	// resumed only while the source's schema is unchanged.
	SchemaMD5 string `json:"schema_md5,omitempty"`
	// Privileges is set when the schema scripts keep the source's owners
	// and privileges (ALTER ... OWNER TO, GRANT, REVOKE, ALTER DEFAULT
	// PRIVILEGES); snapshots of an older pgjet have none.
	Privileges bool `json:"privileges,omitempty"`
	// Roles are the roles the schema scripts name: owners, grantees and
	// grantors, roles of default privileges and of policies. A restore
	// checks that the target has them all before it loads anything.
	Roles []string `json:"roles,omitempty"`
	// Owners are the Roles that own objects: the restoring role must be
	// able to become each of them (ALTER ... OWNER TO).
	Owners []string `json:"owners,omitempty"`
	// SourceRoles are the roles of the source's cluster that pgjet roles
	// copies (neither superusers nor Postgres' own), when the snapshot
	// was taken: pgjet-apply --check-config names those a target lacks.
	SourceRoles []string `json:"source_roles,omitempty"`
	// OwnerSchemas are the schemas where Owners own objects they do not
	// own the schema of: a restoring role that is no superuser may give
	// them those objects only while they may create in the schema.
	OwnerSchemas []SchemaOwner `json:"owner_schemas,omitempty"`
	// Resync is set for a resync (ResyncIDPrefix): one table, no schema.
	Resync bool `json:"resync,omitempty"`
}

// SchemaOwner is a role that owns objects in a schema it does not own.
type SchemaOwner struct {
	Schema string `json:"schema"`
	Owner  string `json:"owner"`
	// Create tells whether Owner may create in Schema on the source.
	Create bool `json:"create"`
}

// SnapshotTable is one table of a snapshot.
type SnapshotTable struct {
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Columns []string `json:"columns"`
	LSN     LSN      `json:"lsn,omitempty"`
	// Taken is read after the table's point (LSN): every transaction in
	// its rows committed before it, as Started says of the snapshot's.
	Taken time.Time `json:"taken,omitzero"`
	// EstRows is the planner's estimate when the copy starts.
	EstRows int64 `json:"est_rows,omitempty"`
	Rows    int64 `json:"rows,omitempty"`
	Bytes   int64 `json:"bytes,omitempty"`
}

// Key names the table as schema.name, quoted where needed.
func (t SnapshotTable) Key() string { return t.Schema + "." + t.Name }

// SnapshotInfo is what a listing knows of a snapshot from its end (or
// last) message.
type SnapshotInfo struct {
	ID       string
	Complete bool
	// Aborted is set for a resync given up (SnapAbort): it never
	// completes.
	Aborted  bool
	Manifest SnapshotManifest // the end message's, when Complete (Aborted: the begin's)
	Msgs     uint64           // messages on the meta subject
}

// SnapshotStreamConfig is the stream for a source's snapshots.
func SnapshotStreamConfig(source string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        SnapshotStreamName(source),
		Description: "pgjet snapshots of source " + source,
		Subjects:    []string{"pgjetsnap." + source + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    -1,
		Replicas:    replicas,
		Duplicates:  2 * time.Minute,
	}
}

// EnsureSnapshotStream creates the source's snapshot stream when missing,
// or updates it as EnsureStream does.
func EnsureSnapshotStream(ctx context.Context, js jetstream.JetStream, source string, replicas int) (jetstream.Stream, error) {
	return ensureStream(ctx, js, SnapshotStreamConfig(source, replicas))
}

// EnsureSnapshotMirror mirrors the source's snapshot stream from
// upstreamDomain into the domain js talks to, like EnsureMirror does for
// the change stream, but without limits: a snapshot is kept until a newer
// one replaces it, whatever its age.
func EnsureSnapshotMirror(ctx context.Context, js jetstream.JetStream, source, upstreamDomain string) (jetstream.Stream, error) {
	return ensureMirror(ctx, js, SnapshotStreamName(source), "pgjet snapshot mirror of source "+source+" from domain "+upstreamDomain, upstreamDomain, nil)
}

// ListSnapshots returns the snapshots in st, oldest first; resyncs (see
// ResyncIDPrefix) are no snapshots of the source and are left out.
func ListSnapshots(ctx context.Context, st jetstream.Stream, source string) ([]SnapshotInfo, error) {
	return listSnapshots(ctx, st, source, false)
}

// ListResyncs returns the resyncs in st (see ResyncIDPrefix), oldest
// first.
func ListResyncs(ctx context.Context, st jetstream.Stream, source string) ([]SnapshotInfo, error) {
	return listSnapshots(ctx, st, source, true)
}

// listSnapshots lists the snapshots of st, or its resyncs.
func listSnapshots(ctx context.Context, st jetstream.Stream, source string, resyncs bool) ([]SnapshotInfo, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(SnapshotOutlineSubject(source, "*")))
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", SnapshotStreamName(source), err)
	}
	type found struct {
		SnapshotInfo
		first uint64
	}
	var out []found
	prefix := SnapshotSubject(source, "")
	for subj, n := range info.State.Subjects {
		id := strings.TrimSuffix(strings.TrimPrefix(subj, prefix), ".m")
		if IsResyncID(id) != resyncs {
			continue
		}
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return nil, fmt.Errorf("read snapshot %s: %w", id, err)
		}
		si := found{SnapshotInfo: SnapshotInfo{ID: id, Msgs: n}, first: m.Sequence}
		switch m.Header.Get(SnapKindHeader) {
		case SnapEnd:
			if err := json.Unmarshal(m.Data, &si.Manifest); err != nil {
				return nil, fmt.Errorf("snapshot %s: end message (seq %d) is not a manifest: %w", id, m.Sequence, err)
			}
			si.Complete = true
		case SnapAbort:
			// Carries the manifest of its begin message.
			_ = json.Unmarshal(m.Data, &si.Manifest)
			si.Aborted = true
		}
		out = append(out, si)
	}
	// Ids are UTC timestamps: their order is the order taken.
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	res := make([]SnapshotInfo, len(out))
	for i := range out {
		res[i] = out[i].SnapshotInfo
	}
	return res, nil
}

// NewSnapshotID names a snapshot taken at t; ids sort in time order.
func NewSnapshotID(t time.Time) string {
	t = t.UTC()
	// No dots: the id is a subject token.
	return t.Format("20060102T150405") + fmt.Sprintf("%09dZ", t.Nanosecond())
}

// SnapshotMsg builds one snapshot message of snapshot id on subject (its
// outline or rows subject). Its message id makes a re-publication after a
// crash a duplicate JetStream drops.
func SnapshotMsg(subject, id, kind, msgID string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(SnapKindHeader, kind)
	m.Header.Set(jetstream.MsgIDHeader, id+":"+msgID)
	m.Data = data
	return m
}

// SnapshotStart returns where a restore of snapshot man starts in st, its
// change stream or a region's mirror of it (mirrors keep the sequences):
// man.StreamNext, with known true, when st is the stream the snapshot saw.
// It is that stream when it still holds the message before StreamNext
// under the id the snapshot recorded, or when the first message it holds
// at or after StreamNext names that id as the one before it (HeaderPrev):
// a stream deleted and made again numbers from 1, and its sequences say
// nothing of the snapshot. known is false when it cannot tell (a stream
// made again, a mirror not yet as far, a manifest of an older pgjet): the
// caller then searches by LSN (SeekLSN).
func SnapshotStart(ctx context.Context, st jetstream.Stream, man SnapshotManifest) (seq uint64, known bool, err error) {
	next := man.StreamNext
	switch {
	case next == 0:
		return 0, false, nil
	case next == 1:
		return 1, true, nil // the stream was empty: nothing lies before
	case man.StreamLastID == "":
		return 0, false, nil
	}
	m, err := st.GetMsg(ctx, next-1)
	if err == nil {
		return next, m.Header.Get(jetstream.MsgIDHeader) == man.StreamLastID, nil
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, fmt.Errorf("read stream message %d: %w", next-1, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("read stream info: %w", err)
	}
	// Trimmed to it, or a hole: the next message it holds says.
	for q := max(next, info.State.FirstSeq); q <= info.State.LastSeq; q++ {
		m, err := st.GetMsg(ctx, q)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("read stream message %d: %w", q, err)
		}
		return next, q == next && m.Header.Get(HeaderPrev) == man.StreamLastID, nil
	}
	return 0, false, nil
}

// SeekLSN returns the sequence of the first message of st (a change stream)
// that holds a transaction committed at or after lsn, or the stream's end
// when none does. It serves snapshots without SnapshotManifest.StreamNext
// (of an older pgjet). It takes the messages to be in commit order; it is
// a binary search for the last message whose first envelope commits before lsn: a batch of
// small transactions may hold later ones too. When that message holds
// nothing at or after lsn (the last chunk of a transaction of several
// chunks is a message of its own) the next one is the start, so the
// position lands on a transaction's first chunk, never in the middle of a
// transaction whose earlier chunks lie before it.
func SeekLSN(ctx context.Context, st jetstream.Stream, lsn LSN) (uint64, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream info: %w", err)
	}
	lo, hi := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return info.State.LastSeq + 1, nil
	}
	// Find the last seq in [lo, hi] whose first commit LSN is below lsn.
	ans, found := lo, false
	for lo <= hi {
		mid := lo + (hi-lo)/2
		envs, err := readEnvelopes(ctx, st, mid)
		if err != nil {
			return 0, err
		}
		if len(envs) > 0 && envs[0].CommitLSN < lsn {
			ans, found = mid, true
			lo = mid + 1
		} else {
			if mid == 0 {
				break
			}
			hi = mid - 1
		}
	}
	if !found {
		return ans, nil
	}
	envs, err := readEnvelopes(ctx, st, ans)
	if err != nil {
		return 0, err
	}
	if len(envs) > 0 && envs[len(envs)-1].CommitLSN < lsn {
		return ans + 1, nil
	}
	return ans, nil
}

// SeekTime finds where the source's commit times pass t in the change
// stream st of source: the commit LSN of the first transaction committed
// after t, with past true; or, when none is, the end LSN of the stream's
// last message, with past false: every transaction committed before that
// LSN is in the stream, none after t. Commit times are the source's
// (heartbeats, stamped by capture's clock, play no part) and are taken to
// grow with commit order: a binary search reads O(log n) messages.
func SeekTime(ctx context.Context, st jetstream.Stream, source string, t time.Time) (lsn LSN, past bool, err error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("read stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return 0, false, nil
	}
	// next reads the first transaction message at or after seq: 0 when
	// there is none.
	subject := TxnSubject(source)
	next := func(seq uint64) (uint64, []*Envelope, error) {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil, nil
		}
		if err != nil {
			return 0, nil, fmt.Errorf("read stream message %d: %w", seq, err)
		}
		envs, _ := DecodeMessage(m.Data) // one that does not decode holds no time
		return m.Sequence, envs, nil
	}
	// The first transaction message whose newest transaction is past t.
	var found []*Envelope
	lo, hi := info.State.FirstSeq, info.State.LastSeq
	for lo <= hi {
		mid := lo + (hi-lo)/2
		seq, envs, err := next(mid)
		if err != nil {
			return 0, false, err
		}
		switch {
		case seq == 0:
			hi = mid - 1 // no transaction from mid on
		case len(envs) > 0 && envs[len(envs)-1].CommitTime.After(t):
			found, hi = envs, mid-1
		default:
			lo = seq + 1 // nothing between mid and seq is a transaction
		}
		if mid == 0 {
			break
		}
	}
	for _, e := range found {
		if e.CommitTime.After(t) {
			return e.CommitLSN, true, nil
		}
	}
	envs, err := readEnvelopes(ctx, st, info.State.LastSeq)
	if err != nil {
		return 0, false, err
	}
	for _, e := range envs {
		lsn = max(lsn, e.EndLSN)
	}
	return lsn, false, nil
}

// readEnvelopes decodes the message at seq of a change stream: nil when
// it is gone or is not pgjet's.
func readEnvelopes(ctx context.Context, st jetstream.Stream, seq uint64) ([]*Envelope, error) {
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stream message %d: %w", seq, err)
	}
	envs, err := DecodeMessage(m.Data)
	if err != nil {
		return nil, nil
	}
	return envs, nil
}

// TxnStart returns the sequence of the message where the transaction the
// message at seq belongs to begins: seq itself unless it holds a later
// chunk of a transaction of several chunks, whose first chunk it finds.
// Chunks of one transaction are consecutive messages, so that is one read
// back, or a few where the stream skipped sequence numbers or the capture
// sent the transaction again. When the first chunk is gone it returns seq.
func TxnStart(ctx context.Context, st jetstream.Stream, seq uint64) (uint64, error) {
	envs, err := readEnvelopes(ctx, st, seq)
	if err != nil || len(envs) == 0 || envs[0].Kind != KindTxn || envs[0].First() {
		return seq, err
	}
	txn := envs[0].CommitLSN
	// of reports whether envs hold a chunk of txn, and its number.
	of := func(envs []*Envelope) (uint32, bool) {
		if len(envs) == 1 && envs[0].Kind == KindTxn && envs[0].CommitLSN == txn {
			return envs[0].Chunk, true
		}
		return 0, false
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream info: %w", err)
	}
	first := info.State.FirstSeq
	at, chunk := seq, envs[0].Chunk
	for chunk > 0 && at > first {
		at -= min(uint64(chunk), at-first)
		envs, err := readEnvelopes(ctx, st, at)
		if err != nil {
			return 0, err
		}
		c, ok := of(envs)
		switch {
		case ok && c == 0:
			return at, nil
		case ok:
			chunk = c
		case envs == nil:
			chunk = 1 // a sequence skipped: one more back
		default:
			// Another transaction: the first chunk lies after it.
			for s := at + 1; s < seq; s++ {
				envs, err := readEnvelopes(ctx, st, s)
				if err != nil {
					return 0, err
				}
				if c, ok := of(envs); ok && c == 0 {
					return s, nil
				}
			}
			return seq, nil
		}
	}
	return seq, nil
}
