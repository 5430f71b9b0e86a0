package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgjet/pgjet/capture/internal/pgoutput"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// reader owns the replication connection: it turns pgoutput messages into
// envelope chunks and reports the acknowledged position back to Postgres.
type reader struct {
	c         *Capture
	pool      *pgxpool.Pool
	repl      *pgconn.PgConn
	pub       *stream.Publisher
	skipBelow stream.LSN
	// session identifies this capture session in the ids of the chunks
	// it publishes (see stream.MsgID).
	session string
	// tailPos is the position the stream held when the session started
	// (tailInfo.pos): positions up to it may be confirmed without a message.
	tailPos stream.LSN
	// unmarked is the end of the last transaction that published nothing,
	// past the stream's last message; 0 when a message covers it.
	// markAsked is the unmarked position a heartbeat was written for.
	unmarked, markAsked stream.LSN
	// txnData is set when the transaction being read changed a table
	// outside pgjet's own schema (or carried a logical message).
	txnData bool
	// maxPayload is the NATS server's max_payload: no message may exceed
	// it. msgMax is the most an envelope may take (room is left for the
	// headers), chunkBytes the size chunks and batches are cut at: the
	// configured one, or less when max_payload is smaller.
	maxPayload, msgMax, chunkBytes int

	rels     map[uint32]*stream.Relation
	types    map[typeKey]string
	nextStat time.Time

	filter *filter
	// dropped marks relations whose changes the table filter drops;
	// masks holds, per relation, the indexes of the columns published
	// when --exclude-columns removes some.
	dropped map[uint32]bool
	masks   map[uint32][]int

	// pending holds complete small transactions (encoded envelopes) not
	// yet published: they leave as one batch message (stream.AppendBatch).
	pending      [][]byte
	pendingBytes int
	pendingEnd   stream.LSN // position to confirm once the batch is acked
	pendingSince time.Time

	// the transaction being read
	inTxn    bool
	skip     bool
	env      stream.Envelope
	inChunk  map[uint32]bool
	size     int
	buf      []byte
	txnCount int
}

type typeKey struct {
	oid uint32
	mod int32
}

// msgReserve is the room a message keeps for its NATS headers (message
// ids, the chain, the source's identity), which count in max_payload.
const msgReserve = 4 << 10

// maxMessage bounds a message whatever max_payload allows (nats-server
// takes up to 64 MB): JetStream's file store refuses a message larger
// than 32 MiB ("message too large"), and pgjet-apply pulls 32 MiB at a
// time. Room is left for the subject, the headers and the ack subject.
const maxMessage = 32<<20 - 64<<10

// setLimits derives the message limits from the server's max_payload.
func (r *reader) setLimits() {
	if r.maxPayload <= 0 {
		r.maxPayload = 1 << 20 // nats-server's default
	}
	r.msgMax = min(max(r.maxPayload-msgReserve, r.maxPayload/2), maxMessage)
	// A batch closes at chunkBytes but may take one transaction more, up
	// to twice as much: both fit in a message.
	r.chunkBytes = max(min(r.c.cfg.ChunkBytes, r.msgMax/2), 1024)
}

// tooLarge is the error for what needs a message of n bytes, more than
// msgMax: a logical decoding message (pg_logical_emit_message, a schema
// change), which cannot be cut as rows are.
func (r *reader) tooLarge(what string, n int) error {
	return pgerr.Fatalf(nil, "%s needs a message of %d bytes, more than the %d a message may take (the NATS server's max_payload, or --max-message-bytes, of %d less room for headers, at most 32 MiB, what JetStream stores); a logical decoding message that large (pg_logical_emit_message or a schema change) cannot be cut: raise max_payload in the nats-server configuration, up to 32 MB, and restart pgjet-capture",
		what, n, r.msgMax, r.maxPayload)
}

func (r *reader) run(ctx context.Context) error {
	r.setLimits()
	r.nextStat = time.Now().Add(r.c.cfg.StatusInterval)
	// What is read is published before the session's final flush.
	defer func() { _ = r.flushPending(context.WithoutCancel(ctx)) }()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if !time.Now().Before(r.nextStat) {
			if err := r.sendStatus(ctx, false); err != nil {
				return err
			}
			r.mark(ctx)
		}
		// A read deadline, not a context: a context costs pgconn a watcher
		// goroutine per message, and this loop sees several per transaction.
		// Shutdown is noticed within one status interval.
		deadline := r.nextStat
		if len(r.pending) > 0 {
			linger := r.pendingSince.Add(batchLinger)
			if !time.Now().Before(linger) {
				if err := r.flushPending(ctx); err != nil {
					return err
				}
				continue
			}
			deadline = minTime(deadline, linger)
		}
		if err := r.repl.Conn().SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("set read deadline on slot %q: %w", r.c.cfg.Slot, err)
		}
		msg, err := r.repl.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if pgconn.Timeout(err) || errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("receive from slot %q: %w", r.c.cfg.Slot, err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.copyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream of slot %q: %w", r.c.cfg.Slot, pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return fmt.Errorf("replication stream of slot %q ended by the server", r.c.cfg.Slot)
		}
	}
}

// sendStatus reports the acknowledged position as written, flushed and
// applied. It is never zero: the publisher starts at the slot's confirmed
// position, and pglogrepl would otherwise copy the write position over it.
func (r *reader) sendStatus(ctx context.Context, reply bool) error {
	acked := r.pub.Acked()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, r.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(acked),
		WALFlushPosition: pglogrepl.LSN(acked),
		WALApplyPosition: pglogrepl.LSN(acked),
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status to slot %q: %w", r.c.cfg.Slot, err)
	}
	if prev := r.c.stats.Confirmed.Swap(uint64(acked)); prev != uint64(acked) {
		r.c.log.Debug().Str("lsn", acked.String()).Msg("slot position confirmed")
	}
	r.nextStat = time.Now().Add(r.c.cfg.StatusInterval)
	return nil
}

func (r *reader) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		if ka.ReplyRequested {
			return r.sendStatus(ctx, false)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlog data: %w", err)
		}
		if pgoutput.IsRow(xld.WALData) {
			// Not pglogrepl.Parse, which copies every value: a row may
			// hold values up to 1 GB (see inPieces).
			row, err := pgoutput.ParseRow(xld.WALData)
			if err != nil {
				return fmt.Errorf("decode pgoutput message at %s: %w", stream.LSN(xld.WALStart), err)
			}
			return r.row(ctx, row)
		}
		m, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			return fmt.Errorf("decode pgoutput message at %s: %w", stream.LSN(xld.WALStart), err)
		}
		return r.message(ctx, stream.LSN(xld.WALStart), m)
	}
	return nil
}

func (r *reader) message(ctx context.Context, at stream.LSN, m pglogrepl.Message) error {
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		r.inTxn = true
		r.txnData = false
		r.skip = stream.LSN(m.FinalLSN) < r.skipBelow
		r.env = stream.Envelope{
			Kind: stream.KindTxn, Source: r.c.cfg.Name, Xid: m.Xid,
			CommitLSN: stream.LSN(m.FinalLSN), CommitTime: m.CommitTime, Flags: stream.FlagFirst,
		}
		r.resetChunk()
	case *pglogrepl.OriginMessage:
		r.env.Origin = m.Name
		r.size += len(m.Name) // the chunk is empty: it follows Begin
		if skipOrigin(m.Name) {
			// Written by a pgjet applier: it came from another region's
			// stream and must not go back out (active-active loops).
			r.skip = true
		}
	case *pglogrepl.RelationMessage:
		return r.relation(ctx, m)
	case *pglogrepl.TypeMessage:
		// Type names are resolved from the catalog with typmods; nothing to do.
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			r.touch(id)
		}
		ids := m.RelationIDs
		if len(r.dropped) > 0 {
			ids = nil
			for _, id := range m.RelationIDs {
				if !r.dropped[id] {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				return nil
			}
		}
		return r.change(ctx, stream.Change{Op: stream.OpTruncate, Truncated: ids, TruncateOpts: m.Option})
	case *pglogrepl.CommitMessage:
		return r.commit(ctx, m)
	case *pglogrepl.LogicalDecodingMessage:
		return r.logicalMessage(ctx, m)
	}
	return nil
}

// row handles an insert, update or delete. Its values alias the message
// received, which the next receive reuses: change copies what it keeps.
func (r *reader) row(ctx context.Context, row *pgoutput.Row) error {
	r.touch(row.Relation)
	if r.dropped[row.Relation] {
		return nil
	}
	return r.change(ctx, stream.Change{Op: stream.Op(row.Op), Relation: row.Relation,
		Old: r.values(row.Relation, row.Old), New: r.values(row.Relation, row.New)})
}

// values converts a tuple of relation rel, leaving out excluded columns.
func (r *reader) values(rel uint32, cols []pgoutput.Column) []stream.Value {
	if cols == nil {
		return nil
	}
	if keep, ok := r.masks[rel]; ok {
		vs := make([]stream.Value, len(keep))
		for i, k := range keep {
			if k < len(cols) {
				vs[i] = stream.Value{Kind: cols[k].Kind, Data: cols[k].Data}
			}
		}
		return vs
	}
	vs := make([]stream.Value, len(cols))
	for i, c := range cols {
		vs[i] = stream.Value{Kind: c.Kind, Data: c.Data}
	}
	return vs
}

// own copies the values of ch, which alias the message received, into
// one allocation of its own.
func own(ch *stream.Change) {
	n := 0
	for _, vs := range [2][]stream.Value{ch.Old, ch.New} {
		for _, v := range vs {
			n += len(v.Data)
		}
	}
	if n == 0 {
		return
	}
	buf := make([]byte, 0, n)
	for _, vs := range [2][]stream.Value{ch.Old, ch.New} {
		for i := range vs {
			if d := vs[i].Data; d != nil {
				buf = append(buf, d...)
				vs[i].Data = buf[len(buf)-len(d) : len(buf) : len(buf)]
			}
		}
	}
}

// logicalMessage handles a pg_logical_emit_message record. Transactional
// messages travel inside their transaction (pgjet.ddl ones subject to
// --ddl and the table filter); non-transactional ones are heartbeats or
// are published alone for other consumers of the stream.
func (r *reader) logicalMessage(ctx context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	at := stream.LSN(m.LSN)
	if !m.Transactional {
		if m.Prefix == HeartbeatPrefix {
			return r.heartbeat(ctx, at)
		}
		return r.nonTxnMessage(ctx, at, m)
	}
	if !r.inTxn {
		return fmt.Errorf("pgoutput sent a transactional message at %s outside a transaction", at)
	}
	if m.Prefix == stream.PrefixUnsynced {
		r.unsynced(at, m.Content)
		return nil
	}
	r.txnData = true
	if m.Prefix == stream.PrefixDDL {
		if !r.c.cfg.DDL {
			return nil
		}
		d, err := schema.ParseDDL(m.Content)
		if err != nil {
			// Published as it is: the applier stops on it with the
			// position, where an operator can look at it.
			r.c.log.Warn().Err(err).Str("lsn", at.String()).Msg("undecodable schema change message")
		} else if !r.filter.ddl(d) {
			r.c.log.Debug().Str("lsn", at.String()).Str("tag", d.Tag).Msg("schema change of filtered tables dropped")
			return nil
		}
	}
	return r.change(ctx, stream.Change{Op: stream.OpMessage, Transactional: true, Prefix: m.Prefix, Content: bytes.Clone(m.Content)})
}

// unsynced names the pgjet resync that copies the rows of a table that
// joined capture's publication holding rows (see schema.DDLPublishFunction).
// The message is for this capture only when it names its publication: a
// slot decodes every source's messages.
func (r *reader) unsynced(at stream.LSN, content []byte) {
	var u stream.UnsyncedTable
	if err := json.Unmarshal(content, &u); err != nil {
		r.c.log.Warn().Err(err).Str("lsn", at.String()).Msg("undecodable message of a table that joined the publication with rows: passed over")
		return
	}
	if u.Publication != r.c.cfg.Publication || !r.filter.table(u.Schema, u.Table) {
		return
	}
	table := u.Schema + "." + u.Table
	r.c.log.Warn().Str("table", table).Str("lsn", at.String()).Str("command", "pgjet resync --name "+r.c.cfg.Name+" --table "+table).
		Msg("table joined the publication holding rows that no replica got (it was left out, then given a key or attached as a partition of a published table): copy them to every region with pgjet resync")
}

// MessageSubject carries the non-transactional logical messages of a
// source.
func MessageSubject(source string) string { return "pgjet." + source + ".msg" }

// nonTxnMessage publishes a non-transactional logical message as a
// KindMessage envelope, confirmed like a heartbeat.
func (r *reader) nonTxnMessage(ctx context.Context, at stream.LSN, m *pglogrepl.LogicalDecodingMessage) error {
	if r.inTxn {
		return fmt.Errorf("pgoutput sent a non-transactional message at %s inside transaction %d", at, r.env.Xid)
	}
	if err := r.flushPending(ctx); err != nil { // commit order
		return err
	}
	if at <= r.tailPos { // in the stream already (a logical message is the tail, or before it)
		return r.pub.Confirm(ctx, at)
	}
	env := stream.Envelope{Kind: stream.KindMessage, Source: r.c.cfg.Name, CommitLSN: at, EndLSN: at, CommitTime: time.Now(),
		Flags:   stream.FlagFirst | stream.FlagLast,
		Changes: []stream.Change{{Op: stream.OpMessage, Prefix: m.Prefix, Content: m.Content}}}
	data := stream.Encode(&env)
	if len(data) > r.msgMax {
		return r.tooLarge(fmt.Sprintf("logical message %q at LSN %s", m.Prefix, at), len(data))
	}
	id := r.c.cfg.Name + ":msg:" + fmt.Sprintf("%016X", uint64(at))
	return r.publish(ctx, MessageSubject(r.c.cfg.Name), data, id, at)
}

func (r *reader) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &stream.Relation{ID: m.RelationID, Schema: m.Namespace, Name: m.RelationName, Identity: m.ReplicaIdentity}
	rel.Columns = make([]stream.Column, len(m.Columns))
	for i, col := range m.Columns {
		name, err := r.typeName(ctx, col.DataType, col.TypeModifier)
		if err != nil {
			return err
		}
		rel.Columns[i] = stream.Column{Name: col.Name, Key: col.Flags&1 != 0, TypeOID: col.DataType, TypeMod: col.TypeModifier, Type: name}
	}
	if r.filter.table(rel.Schema, rel.Name) {
		delete(r.dropped, m.RelationID)
	} else {
		r.dropped[m.RelationID] = true
	}
	var keep []int
	if !r.dropped[m.RelationID] {
		var err error
		if keep, err = r.filter.columnMask(rel); err != nil {
			return err
		}
	}
	if keep != nil {
		cols := make([]stream.Column, len(keep))
		for i, k := range keep {
			cols[i] = rel.Columns[k]
		}
		rel.Columns = cols
		r.masks[m.RelationID] = keep
	} else {
		delete(r.masks, m.RelationID)
	}
	r.rels[m.RelationID] = rel
	// A relation that changed mid-chunk must be described anew.
	delete(r.inChunk, m.RelationID)
	return nil
}

func (r *reader) typeName(ctx context.Context, oid uint32, mod int32) (string, error) {
	if r.types == nil {
		r.types = map[typeKey]string{}
	}
	k := typeKey{oid, mod}
	if n, ok := r.types[k]; ok {
		return n, nil
	}
	var n string
	if err := r.pool.QueryRow(ctx, "SELECT format_type($1, $2)", oid, mod).Scan(&n); err != nil {
		return "", fmt.Errorf("look up type %d: %w", oid, err)
	}
	r.types[k] = n
	return n, nil
}

func (r *reader) resetChunk() {
	r.env.Relations = r.env.Relations[:0]
	r.env.Changes = r.env.Changes[:0]
	clear(r.inChunk)
	if r.inChunk == nil {
		r.inChunk = map[uint32]bool{}
	}
	// Every chunk's header carries the source and origin names: a chunk
	// planned without them can outgrow the message.
	r.size = 64 + len(r.env.Source) + len(r.env.Origin)
}

func (r *reader) include(id uint32) error {
	if r.inChunk[id] {
		return nil
	}
	rel, ok := r.rels[id]
	if !ok {
		return fmt.Errorf("change to relation %d without its relation message in txn %d", id, r.env.Xid)
	}
	// A relation message mid-chunk replaces an earlier description: close
	// the chunk first so each chunk has one description per relation.
	for _, have := range r.env.Relations {
		if have.ID == id {
			return errRelationChanged
		}
	}
	r.env.Relations = append(r.env.Relations, *rel)
	r.inChunk[id] = true
	r.size += 32 + len(rel.Schema) + len(rel.Name)
	for _, c := range rel.Columns {
		r.size += 16 + len(c.Name) + len(c.Type)
	}
	return nil
}

var errRelationChanged = errors.New("relation changed within chunk")

func (r *reader) change(ctx context.Context, ch stream.Change) error {
	if !r.inTxn {
		return fmt.Errorf("pgoutput sent a change outside a transaction")
	}
	if r.skip {
		return nil
	}
	csize := 8 + tupleSize(ch.Old) + tupleSize(ch.New) + 4*len(ch.Truncated) + len(ch.Prefix) + len(ch.Content)
	if len(r.env.Changes) > 0 && r.size+csize > r.chunkBytes {
		// Close the chunk before it would outgrow the target size: only a
		// single change larger than chunkBytes makes a larger message.
		if err := r.flush(ctx, false); err != nil {
			return err
		}
	}
	ids := ch.Truncated
	switch ch.Op {
	case stream.OpTruncate:
	case stream.OpMessage:
		ids = nil
	default:
		ids = []uint32{ch.Relation}
	}
	for i := 0; i < len(ids); i++ {
		err := r.include(ids[i])
		if errors.Is(err, errRelationChanged) {
			// The change goes to a new chunk, which must describe every
			// relation it names (a TRUNCATE names several), not only
			// those after the one that changed.
			if err := r.flush(ctx, false); err != nil {
				return err
			}
			i = -1
			continue
		}
		if err != nil {
			return err
		}
	}
	r.c.stats.Changes.Add(1)
	if r.size+csize > r.msgMax && (ch.Op == stream.OpInsert || ch.Op == stream.OpUpdate || ch.Op == stream.OpDelete) {
		return r.inPieces(ctx, ch)
	}
	own(&ch)
	r.env.Changes = append(r.env.Changes, ch)
	r.size += csize
	if r.size >= r.chunkBytes {
		return r.flush(ctx, false)
	}
	return nil
}

// inPieces publishes a row change too large for one message. Its chunk
// is closed with the change last, the values that do not fit in it as
// values in pieces (stream.ValuePieces), and their bytes follow in piece
// chunks, the next chunks of the transaction (see stream.Pieced).
//
// pgoutput delivers a row whole, in one CopyData message: capture holds
// that row (its values alias the message, they are not copied) and the
// pieces in flight, at most --window-bytes of them, and nothing more.
// Every piece is published before the next message is received; the
// standby status goes out meanwhile.
func (r *reader) inPieces(ctx context.Context, ch stream.Change) error {
	// Values that fit stay in the change, in column order; each value
	// left out takes a kind byte and its size in the change.
	budget := r.msgMax - r.size - 64 - 6*(len(ch.Old)+len(ch.New))
	var pieces [][]byte
	for _, vs := range [2][]stream.Value{ch.Old, ch.New} {
		for i := range vs {
			v := &vs[i]
			if v.Kind != stream.ValueText || len(v.Data) == 0 || len(v.Data) <= budget {
				budget -= len(v.Data)
				continue
			}
			pieces = append(pieces, v.Data)
			*v = stream.Value{Kind: stream.ValuePieces, Size: len(v.Data)}
		}
	}
	r.env.Changes = append(r.env.Changes, ch)
	if err := r.flush(ctx, false); err != nil {
		return err
	}
	pe := stream.Envelope{Kind: stream.KindTxn, Source: r.env.Source, Origin: r.env.Origin, Xid: r.env.Xid,
		CommitLSN: r.env.CommitLSN, CommitTime: r.env.CommitTime, Flags: stream.FlagPiece}
	size := r.msgMax - 64 - len(pe.Source) - len(pe.Origin)
	for _, data := range pieces {
		for len(data) > 0 {
			if !time.Now().Before(r.nextStat) {
				// Nothing is read from the slot while the pieces go out:
				// without a status the walsender ends the session after
				// wal_sender_timeout, and the transaction is read again.
				if err := r.sendStatus(ctx, false); err != nil {
					return err
				}
			}
			pe.Chunk, pe.Piece = r.env.Chunk, data[:min(len(data), size)]
			data = data[len(pe.Piece):]
			// A buffer per piece: the publisher holds it until JetStream
			// acknowledges it.
			buf := stream.AppendEnvelope(make([]byte, 0, len(pe.Piece)+128+len(pe.Source)+len(pe.Origin)), &pe)
			if err := r.publish(ctx, stream.TxnSubject(r.c.cfg.Name), buf, stream.MsgID(r.c.cfg.Name, pe.CommitLSN, pe.Chunk, r.session), 0); err != nil {
				return err
			}
			r.env.Chunk++
		}
	}
	if r.c.log.Debug().Enabled() {
		r.c.log.Debug().Str("lsn", r.env.CommitLSN.String()).Uint32("xid", r.env.Xid).Int("values", len(pieces)).
			Uint32("next_chunk", r.env.Chunk).Msg("row published in pieces")
	}
	return nil
}

// tupleSize bounds the encoded size of a tuple from above: a kind byte
// and a length of up to 5 bytes per value.
func tupleSize(vs []stream.Value) int {
	n := 2
	for _, v := range vs {
		n += 6 + len(v.Data)
	}
	return n
}

func (r *reader) commit(ctx context.Context, m *pglogrepl.CommitMessage) error {
	if !r.inTxn {
		return fmt.Errorf("pgoutput sent a commit outside a transaction")
	}
	r.inTxn = false
	end := stream.LSN(m.TransactionEndLSN)
	if r.skip {
		return r.confirm(ctx, end)
	}
	r.c.stats.Txns.Add(1)
	if r.env.Chunk == 0 && len(r.env.Changes) == 0 {
		// Nothing published (no published table changed): only the
		// position moves, once everything before it is acknowledged.
		return r.confirm(ctx, end)
	}
	r.env.EndLSN = end
	if r.env.Chunk > 0 {
		return r.flush(ctx, true)
	}
	// A transaction in one chunk waits, briefly, to share a message.
	r.env.Flags |= stream.FlagLast
	data := stream.AppendEnvelope(make([]byte, 0, r.size+256), &r.env)
	if len(r.pending) == 0 {
		r.pendingSince = time.Now()
	}
	r.pending = append(r.pending, data)
	r.pendingBytes += len(data)
	r.pendingEnd = end
	r.env.Flags = 0
	r.resetChunk()
	if r.pendingBytes >= r.chunkBytes || len(r.pending) >= maxBatchTxns {
		return r.flushPending(ctx)
	}
	return nil
}

// batchLinger is the longest a complete transaction waits for others to
// share its message; maxBatchTxns bounds a batch.
const (
	batchLinger  = 2 * time.Millisecond
	maxBatchTxns = 1024
)

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// confirm moves the position for a transaction that published nothing.
// The slot confirms only positions the stream holds a message at or past,
// so that on start a slot ahead of the stream's last message proves lost
// messages (ensureSlot). Past the stream's tail such a position waits for
// the next message that confirms a position, or for the heartbeat mark
// writes, and never overtakes a pending batch.
//
// A transaction that only wrote pgjet's own tables (an applier recording
// its position, for another region's heartbeat too) gets no heartbeat: in
// active-active each region's heartbeat would make the other's applier
// write, and heartbeats would bounce between the regions forever. The
// next message covers it.
func (r *reader) confirm(ctx context.Context, end stream.LSN) error {
	if end <= r.tailPos && len(r.pending) == 0 {
		return r.pub.Confirm(ctx, end)
	}
	if r.txnData {
		r.unmarked = end
	}
	return nil
}

// touch notes a change to relation id in the transaction being read.
func (r *reader) touch(id uint32) {
	if rel, ok := r.rels[id]; !r.txnData && (!ok || rel.Schema != ownSchema) {
		r.txnData = true
	}
}

// ownSchema holds pgjet's bookkeeping tables on a target (pgjet.applied).
const ownSchema = "pgjet"

// mark writes a heartbeat into the source's WAL when transactions that
// published nothing are past the stream's last message: the heartbeat
// comes back through the slot, is published, and its acknowledgement
// moves the slot past them (with --heartbeat 0 too, and no further).
func (r *reader) mark(ctx context.Context) {
	if r.unmarked == 0 || r.unmarked == r.markAsked {
		return
	}
	r.markAsked = r.unmarked
	if _, err := r.pool.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2)", HeartbeatPrefix, r.c.cfg.Name); err != nil && ctx.Err() == nil {
		// Not fatal: the slot only waits for the next message.
		r.c.log.Warn().Err(err).Str("lsn", r.unmarked.String()).Msg("write a heartbeat to confirm the slot past transactions that published nothing")
	}
}

// publish publishes one message; confirm, when not 0, is the position its
// acknowledgement confirms, which covers every transaction before it.
func (r *reader) publish(ctx context.Context, subject string, data []byte, id string, confirm stream.LSN) error {
	if err := r.pub.Publish(ctx, subject, data, id, confirm); err != nil {
		return wrapNATS(err)
	}
	if confirm != 0 {
		r.unmarked = 0
	}
	r.c.stats.Messages.Add(1)
	r.c.stats.Bytes.Add(int64(len(data)))
	return nil
}

// flushPending publishes the pending transactions: one alone as its own
// envelope, several as a batch.
func (r *reader) flushPending(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	var data []byte
	var id string
	first, _ := stream.Decode(r.pending[0])
	if len(r.pending) == 1 {
		data = r.pending[0]
		id = stream.MsgID(r.c.cfg.Name, first.CommitLSN, 0, r.session)
	} else {
		last, _ := stream.Decode(r.pending[len(r.pending)-1])
		data = stream.AppendBatch(make([]byte, 0, r.pendingBytes+8*len(r.pending)+8), r.pending)
		id = stream.BatchMsgID(r.c.cfg.Name, first.CommitLSN, last.CommitLSN)
	}
	if len(data) > r.msgMax {
		// Cannot happen: a batch closes at half a message.
		return pgerr.Fatalf(nil, "a batch of %d transactions from LSN %s takes %d bytes, more than the NATS server's max_payload of %d allows; lower --chunk-bytes and restart pgjet-capture",
			len(r.pending), first.CommitLSN, len(data), r.maxPayload)
	}
	end := r.pendingEnd
	r.pending, r.pendingBytes, r.pendingEnd = r.pending[:0], 0, 0
	return r.publish(ctx, stream.TxnSubject(r.c.cfg.Name), data, id, end)
}

// flush publishes the current chunk; last marks the end of the transaction.
func (r *reader) flush(ctx context.Context, last bool) error {
	if err := r.flushPending(ctx); err != nil { // commit order
		return err
	}
	if last {
		r.env.Flags |= stream.FlagLast
	}
	data := stream.AppendEnvelope(make([]byte, 0, r.size+256), &r.env)
	if len(data) > r.msgMax {
		// Rows larger than a message travel in pieces; a logical
		// decoding message cannot be cut.
		return r.tooLarge(fmt.Sprintf("transaction %d at LSN %s", r.env.Xid, r.env.CommitLSN), len(data))
	}
	confirm := stream.LSN(0)
	if last {
		confirm = r.env.EndLSN
	}
	id := stream.MsgID(r.c.cfg.Name, r.env.CommitLSN, r.env.Chunk, r.session)
	if err := r.publish(ctx, stream.TxnSubject(r.c.cfg.Name), data, id, confirm); err != nil {
		return err
	}
	if r.c.log.Trace().Enabled() {
		r.c.log.Trace().Str("lsn", r.env.CommitLSN.String()).Uint32("xid", r.env.Xid).Uint32("chunk", r.env.Chunk).
			Int("changes", len(r.env.Changes)).Int("bytes", len(data)).Bool("last", last).Msg("chunk published")
	}
	r.env.Chunk++
	r.env.Flags = 0
	r.resetChunk()
	return nil
}

func (r *reader) heartbeat(ctx context.Context, at stream.LSN) error {
	if err := r.flushPending(ctx); err != nil { // commit order
		return err
	}
	if at <= r.tailPos { // in the stream already (a logical message is the tail, or before it)
		return r.pub.Confirm(ctx, at)
	}
	env := stream.Envelope{Kind: stream.KindHeartbeat, Source: r.c.cfg.Name, CommitLSN: at, EndLSN: at, CommitTime: time.Now(), Flags: stream.FlagFirst | stream.FlagLast}
	data := stream.Encode(&env)
	id := r.c.cfg.Name + ":hb:" + fmt.Sprintf("%016X", uint64(at))
	if err := r.pub.Publish(ctx, stream.HeartbeatSubject(r.c.cfg.Name), data, id, at); err != nil {
		return wrapNATS(err)
	}
	r.unmarked = 0 // not counted in Stats: heartbeats carry no data
	return nil
}
