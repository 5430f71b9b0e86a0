package capture

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// SnapshotStats are a snapshot's live counters, for metrics and progress.
type SnapshotStats struct {
	Running    atomic.Bool
	Rows       atomic.Int64
	Bytes      atomic.Int64
	EstRows    atomic.Int64
	TablesDone atomic.Int64
	Tables     atomic.Int64
	Completed  atomic.Int64 // snapshots completed since start
}

// snapTask is one range of one table to copy.
type snapTask struct {
	t      *snapTable
	rng    int
	where  string // a ctid range, or "" for the whole table
	ranges int
}

type snapTable struct {
	stream.SnapshotTable
	idx       int
	left      atomic.Int32 // ranges still copying
	rows      atomic.Int64
	bytes     atomic.Int64
	oid       uint32
	relkind   string
	sizeBytes int64
}

// snapshotter takes one snapshot.
type snapshotter struct {
	c      *Capture
	js     jetstream.JetStream
	id     string
	snap   string // exported snapshot name
	chunk  int    // bytes of rows in one data message
	lsn    stream.LSN
	next   uint64    // the change stream's next sequence, read before lsn
	lastID string    // the message id at next-1
	taken  time.Time // read after lsn: the tables' copies hold nothing later
	stats  *SnapshotStats
	// rows is held by a worker from the first to the last message of a
	// row larger than a message, so that nothing comes between them;
	// everything else published while tables are copied takes it shared.
	rows sync.RWMutex
	// only, when set, is the one table ("schema.name") a resync copies,
	// without the schema.
	only string
}

// TakeSnapshot copies the schema and every captured table of the source
// into its snapshot stream, consistent at one point of the WAL, or resumes
// the newest snapshot when it was interrupted (tables already whole are
// kept; the others are copied again at a new point, which appliers honour
// per table). The replication slot of the change stream is not touched:
// the copy uses a temporary slot of its own, so changes keep flowing.
func (c *Capture) TakeSnapshot(ctx context.Context, js jetstream.JetStream) (stream.SnapshotManifest, error) {
	st, err := stream.EnsureSnapshotStream(ctx, js, c.cfg.Name, c.cfg.Stream.Replicas)
	if err != nil {
		return stream.SnapshotManifest{}, wrapNATS(err)
	}
	snaps, err := stream.ListSnapshots(ctx, st, c.cfg.Name)
	if err != nil {
		return stream.SnapshotManifest{}, wrapNATS(err)
	}
	s := c.newSnapshotter(js)
	s.stats.Running.Store(true)
	defer s.stats.Running.Store(false)

	pt, err := s.openPoint(ctx)
	if err != nil {
		return stream.SnapshotManifest{}, err
	}
	defer pt.close(context.WithoutCancel(ctx))
	script, post, tables := pt.script, pt.post, pt.tables
	h := md5.New()
	h.Write(script)
	h.Write(post)
	schemaMD5 := hex.EncodeToString(h.Sum(nil))

	var man stream.SnapshotManifest
	done := map[string]stream.SnapshotTable{}
	resumed := false
	if n := len(snaps); n > 0 && !snaps[n-1].Complete {
		prev, tablesDone, err := readSnapshotMeta(ctx, st, c.cfg.Name, snaps[n-1].ID)
		if err != nil {
			return stream.SnapshotManifest{}, err
		}
		if prev.SchemaMD5 == schemaMD5 {
			man, done, resumed = prev, tablesDone, true
			s.id = prev.ID
			c.log.Info().Str("snapshot", s.id).Int("tables_done", len(done)).Str("lsn", s.lsn.String()).
				Msg("resuming interrupted snapshot: whole tables kept, the others copied again at a new point")
		} else {
			c.log.Info().Str("snapshot", prev.ID).Msg("interrupted snapshot not resumed: the source's schema changed since; taking a new one")
			if err := st.Purge(ctx, jetstream.WithPurgeSubject(stream.SnapshotAllSubjects(c.cfg.Name, prev.ID))); err != nil {
				return stream.SnapshotManifest{}, wrapNATS(fmt.Errorf("purge snapshot %s: %w", prev.ID, err))
			}
		}
	}
	if !resumed {
		s.id = stream.NewSnapshotID(time.Now())
		man = stream.SnapshotManifest{Version: stream.SnapshotVersion, Source: c.cfg.Name, ID: s.id, LSN: s.lsn, StreamNext: s.next, StreamLastID: s.lastID,
			Started: time.Now().UTC(), SchemaMD5: schemaMD5,
			Privileges: true, Roles: pt.roles.roles, Owners: pt.roles.owners, SourceRoles: pt.roles.source,
			OwnerSchemas: pt.roles.schemas}
		for _, t := range tables {
			man.Tables = append(man.Tables, t.SnapshotTable)
		}
		if err := s.publishMeta(ctx, stream.SnapBegin, "begin", man); err != nil {
			return man, err
		}
		if err := s.publishScript(ctx, "pre-data", script); err != nil {
			return man, err
		}
		c.log.Info().Str("snapshot", s.id).Str("lsn", s.lsn.String()).Int("tables", len(tables)).Msg("snapshot started")
	}

	var todo []*snapTable
	var est int64
	for _, t := range tables {
		if _, ok := done[t.Key()]; ok {
			continue
		}
		todo = append(todo, t)
		est += t.EstRows
	}
	s.stats.Rows.Store(0)
	s.stats.Bytes.Store(0)
	s.stats.EstRows.Store(est)
	s.stats.Tables.Store(int64(len(tables)))
	s.stats.TablesDone.Store(int64(len(done)))
	pctx, stopProgress := context.WithCancel(ctx)
	go s.progress(pctx)
	err = s.copyTables(ctx, pt.lead, todo)
	stopProgress()
	if err != nil {
		return man, err
	}

	// The end message holds every table as it is in the snapshot.
	man.Tables = man.Tables[:0]
	man.Rows, man.Bytes = 0, 0
	for _, t := range tables {
		tt := t.SnapshotTable
		if d, ok := done[t.Key()]; ok {
			tt = d
		} else {
			tt.LSN, tt.Taken, tt.Rows, tt.Bytes = s.lsn, s.taken, t.rows.Load(), t.bytes.Load()
		}
		man.Tables = append(man.Tables, tt)
		man.Rows += tt.Rows
		man.Bytes += tt.Bytes
	}
	if err := s.publishScript(ctx, "post-data", post); err != nil {
		return man, err
	}
	man.Finished = time.Now().UTC()
	if err := s.publishMeta(ctx, stream.SnapEnd, "end", man); err != nil {
		return man, err
	}
	s.stats.Completed.Add(1)
	c.log.Info().Str("snapshot", s.id).Str("lsn", man.LSN.String()).Int64("rows", man.Rows).Int64("bytes", man.Bytes).
		Int64("took_ms", man.Finished.Sub(man.Started).Milliseconds()).Msg("snapshot complete")
	if kept, err := c.pruneSnapshots(ctx, st); err != nil {
		c.log.Warn().Err(err).Msg("remove old snapshots")
	} else if c.cfg.StreamRetention == "snapshots" {
		if err := c.trimChanges(ctx, js, kept); err != nil {
			c.log.Warn().Err(err).Msg("trim the change stream to the oldest snapshot")
		}
	}
	return man, nil
}

// newSnapshotter returns a snapshotter publishing through js.
func (c *Capture) newSnapshotter(js jetstream.JetStream) *snapshotter {
	// Rows travel in messages as large as NATS takes, up to 1 MiB: fewer,
	// larger COPY batches on both sides (four times --chunk-bytes at most).
	chunk := min(c.cfg.ChunkBytes*4, 1<<20)
	// Room is left for the headers: 16 KiB, or half of a smaller
	// max_payload.
	if mp := c.maxPayload(js.Conn()); mp > 0 {
		chunk = min(chunk, max(mp-16<<10, mp/2))
	}
	return &snapshotter{c: c, js: js, stats: &c.snapStats, chunk: max(chunk, 1024)}
}

// openPoint sets up the snapshot's point (open), again at a new point
// while a schema change or TRUNCATE overtakes it, snapshotAttempts times
// at most.
func (s *snapshotter) openPoint(ctx context.Context) (*snapPoint, error) {
	for attempt := 1; ; attempt++ {
		pt, err := s.open(ctx)
		var rw *rewrittenError
		if !errors.As(err, &rw) {
			return pt, err
		}
		if attempt == snapshotAttempts {
			return nil, fmt.Errorf("%d snapshot points in a row were overtaken by a schema change or TRUNCATE (the last: %w); take the snapshot again when they pause", attempt, err)
		}
		s.c.log.Info().Str("reason", rw.Error()).Int("attempt", attempt).Msg("taking the snapshot again at a new point")
		// A short, growing pause lets a burst of schema changes pass.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
}

// readSnapshotMeta reads the begin manifest and the whole tables of an
// interrupted snapshot.
func readSnapshotMeta(ctx context.Context, st jetstream.Stream, source, id string) (stream.SnapshotManifest, map[string]stream.SnapshotTable, error) {
	var man stream.SnapshotManifest
	done := map[string]stream.SnapshotTable{}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{stream.SnapshotOutlineSubject(source, id)}})
	if err != nil {
		return man, nil, wrapNATS(fmt.Errorf("read snapshot %s: %w", id, err))
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return man, nil, wrapNATS(fmt.Errorf("read snapshot %s: %w", id, err))
	}
	for n := info.NumPending; n > 0; n-- {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			return man, nil, wrapNATS(fmt.Errorf("read snapshot %s: %w", id, err))
		}
		switch m.Headers().Get(stream.SnapKindHeader) {
		case stream.SnapBegin:
			if err := json.Unmarshal(m.Data(), &man); err != nil {
				return man, nil, fmt.Errorf("snapshot %s: bad begin message: %w", id, err)
			}
		case stream.SnapTableEnd:
			var t stream.SnapshotTable
			if err := json.Unmarshal(m.Data(), &t); err != nil {
				return man, nil, fmt.Errorf("snapshot %s: bad table-end message: %w", id, err)
			}
			done[t.Key()] = t
		}
	}
	return man, done, nil
}

// pruneSnapshots removes the oldest snapshots beyond SnapshotKeep, and
// any interrupted one older than the newest complete one. It returns the
// snapshots kept, oldest first.
func (c *Capture) pruneSnapshots(ctx context.Context, st jetstream.Stream) ([]stream.SnapshotInfo, error) {
	snaps, err := stream.ListSnapshots(ctx, st, c.cfg.Name)
	if err != nil || c.cfg.SnapshotKeep <= 0 {
		return snaps, err
	}
	var kept []stream.SnapshotInfo
	complete := 0
	for i := len(snaps) - 1; i >= 0; i-- {
		si := snaps[i]
		if si.Complete && complete < c.cfg.SnapshotKeep || !si.Complete && i == len(snaps)-1 { // kept, or being taken
			if si.Complete {
				complete++
			}
			kept = append(kept, si)
			continue
		}
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(stream.SnapshotAllSubjects(c.cfg.Name, snaps[i].ID))); err != nil {
			return nil, fmt.Errorf("purge snapshot %s: %w", snaps[i].ID, err)
		}
		c.log.Info().Str("snapshot", snaps[i].ID).Msg("old snapshot removed")
	}
	slices.Reverse(kept)
	return kept, nil
}

// trimChanges removes the changes that no kept snapshot needs: those
// published before the oldest complete snapshot's point was taken (for a
// snapshot of an older pgjet, those committed before its point, or before
// the earliest point of its tables, but for the last transaction before
// it).
func (c *Capture) trimChanges(ctx context.Context, js jetstream.JetStream, snaps []stream.SnapshotInfo) error {
	i := slices.IndexFunc(snaps, func(si stream.SnapshotInfo) bool { return si.Complete })
	if i < 0 {
		return nil
	}
	oldest := snaps[i].Manifest
	lsn := oldest.LSN
	for _, t := range oldest.Tables {
		if t.LSN != 0 && t.LSN < lsn {
			lsn = t.LSN
		}
	}
	changes, err := js.Stream(ctx, stream.StreamName(c.cfg.Name))
	if err != nil {
		return err
	}
	info, err := changes.Info(ctx)
	if err != nil {
		return err
	}
	seq, known, err := stream.SnapshotStart(ctx, changes, oldest)
	if err != nil {
		return err
	}
	if known {
		// Where restores of the snapshot start; a stream never starts in
		// the middle of a transaction.
		if seq <= info.State.LastSeq {
			if seq, err = stream.TxnStart(ctx, changes, seq); err != nil {
				return err
			}
		}
	} else {
		if seq, err = stream.SeekLSN(ctx, changes, lsn); err != nil {
			return err
		}
		if seq <= info.State.FirstSeq {
			return nil
		}
		// The transaction before the snapshot's point stays, whole: a
		// restore of a snapshot of an older pgjet reads it to tell a
		// stream trimmed to the snapshot from one that lost changes
		// after it.
		if seq, err = stream.TxnStart(ctx, changes, seq-1); err != nil {
			return err
		}
	}
	if seq <= info.State.FirstSeq || seq > info.State.LastSeq+1 {
		// Nothing to trim, or a stream created again since the snapshot,
		// whose sequences say nothing of it.
		return nil
	}
	if err := changes.Purge(ctx, jetstream.WithPurgeSequence(seq)); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			return err
		}
		return fmt.Errorf("purge %s below sequence %d (the capture role needs $JS.API.STREAM.PURGE.%s, see deploy/nats/permissions-hub.conf): %w",
			stream.StreamName(c.cfg.Name), seq, stream.StreamName(c.cfg.Name), err)
	}
	c.log.Info().Str("snapshot", oldest.ID).Str("lsn", lsn.String()).Uint64("first_seq", seq).
		Msg("change stream trimmed to the oldest snapshot kept")
	return nil
}

// codeLockNotAvailable is lock_not_available, the error of LOCK ... NOWAIT.
const codeLockNotAvailable = "55P03"

// snapshotAttempts bounds how often a snapshot starts again at a new
// point because a table was rewritten before the snapshot locked it.
const snapshotAttempts = 10

// snapPoint is a snapshot's point in the WAL, as the copy holds it: the
// temporary slot that exported it, the schema dumped in it, the captured
// tables, and the lead transaction that has them locked.
type snapPoint struct {
	repl         *pgconn.PgConn
	lead         *pgx.Conn
	script, post []byte
	tables       []*snapTable
	roles        snapRoles
}

// snapRoles are the roles a snapshot's schema names, and the source's
// roles (see stream.SnapshotManifest).
type snapRoles struct {
	roles, owners, source []string
	schemas               []stream.SchemaOwner
}

// readRoles reads, in the snapshot's transaction, the roles its schema
// names and the source's roles pgjet roles would copy.
func readRoles(ctx context.Context, conn *pgx.Conn) (snapRoles, error) {
	var r snapRoles
	rows, err := conn.Query(ctx, schema.SnapshotRolesSQL)
	if err != nil {
		return r, fmt.Errorf("list the roles the snapshot's schema names: %w", err)
	}
	for rows.Next() {
		var name string
		var owns bool
		if err := rows.Scan(&name, &owns); err != nil {
			rows.Close()
			return r, fmt.Errorf("list the roles the snapshot's schema names: %w", err)
		}
		r.roles = append(r.roles, name)
		if owns {
			r.owners = append(r.owners, name)
		}
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("list the roles the snapshot's schema names: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT coalesce(array_agg(rolname::text ORDER BY rolname), '{}') FROM pg_roles WHERE "+schema.CopiedRolesWhere).Scan(&r.source); err != nil {
		return r, fmt.Errorf("list the source's roles: %w", err)
	}
	rows, err = conn.Query(ctx, schema.SnapshotOwnerSchemasSQL)
	if err != nil {
		return r, fmt.Errorf("list the schemas the snapshot's owners own objects in: %w", err)
	}
	for rows.Next() {
		var so stream.SchemaOwner
		if err := rows.Scan(&so.Schema, &so.Owner, &so.Create); err != nil {
			rows.Close()
			return r, fmt.Errorf("list the schemas the snapshot's owners own objects in: %w", err)
		}
		r.schemas = append(r.schemas, so)
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("list the schemas the snapshot's owners own objects in: %w", err)
	}
	return r, nil
}

func (p *snapPoint) close(ctx context.Context) {
	if p.lead != nil {
		p.lead.Close(ctx)
	}
	p.repl.Close(ctx)
}

// streamNext is the next sequence of the source's change stream (1 when
// the stream does not exist yet) and the message id of its last message,
// which tells that stream from one made again later.
func (s *snapshotter) streamNext(ctx context.Context) (uint64, string, error) {
	st, err := s.js.Stream(ctx, stream.StreamName(s.c.cfg.Name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, "", nil
	}
	if err != nil {
		return 0, "", wrapNATS(fmt.Errorf("look up the change stream: %w", err))
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, "", wrapNATS(fmt.Errorf("read the change stream's state: %w", err))
	}
	last := info.State.LastSeq
	if last == 0 {
		return 1, "", nil
	}
	m, err := st.GetMsg(ctx, last)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return last + 1, "", nil // purged: restores search by LSN
	}
	if err != nil {
		return 0, "", wrapNATS(fmt.Errorf("read the change stream's last message: %w", err))
	}
	return last + 1, m.Header.Get(jetstream.MsgIDHeader), nil
}

// rewrittenError says that a table was rewritten (or renamed, or
// dropped) after the snapshot's point and before the snapshot locked it:
// its rows are not visible at that point any more.
type rewrittenError struct {
	what string
	lsn  stream.LSN
}

func (e *rewrittenError) Error() string {
	return fmt.Sprintf("%s after the snapshot's point %s and before the snapshot locked it", e.what, e.lsn)
}

// open sets up a snapshot's point: a temporary slot exports it, pg_dump
// copies the schema in it, and a lead transaction in it lists the captured
// tables and locks them all before any row is copied.
//
// A table-rewriting ALTER TABLE (or TRUNCATE) committed after the point
// makes the table look empty in it, so no such change may commit before
// the table's copy: the locks (ACCESS SHARE, as pg_dump takes, held until
// the copy ends) make later ones wait. One committed between the point and
// the locks is found by comparing each table's file node in the snapshot
// with the current one, and returned as a *rewrittenError: the snapshot
// must be taken again at a new point.
func (s *snapshotter) open(ctx context.Context) (*snapPoint, error) {
	c := s.c
	repl, err := connectReplication(ctx, c.cfg.DB, "pgjet-capture snapshot")
	if err != nil {
		return nil, pgerr.ClassifyConnect(c.cfg.DB, err)
	}
	pt := &snapPoint{repl: repl}
	ok := false
	defer func() {
		if !ok {
			pt.close(context.WithoutCancel(ctx))
		}
	}()
	// Read before the point is taken: a transaction that commits after
	// the point is published later, at this sequence or after it.
	if s.next, s.lastID, err = s.streamNext(ctx); err != nil {
		return nil, err
	}
	slot := c.cfg.Slot + "_snap_" + randomHex(4)
	// A temporary slot exports a snapshot that holds exactly the
	// transactions committed before its consistent point; it lives as long
	// as this connection stays idle, and is dropped with it.
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		if pgerr.PgCode(err) == "53400" {
			return nil, pgerr.Fatalf(err, "no replication slot is free for the snapshot on %s; raise max_replication_slots (a snapshot needs one temporary slot) or pass --no-snapshot", c.where())
		}
		return nil, fmt.Errorf("create temporary slot for the snapshot: %w", err)
	}
	s.snap = res.SnapshotName
	if s.lsn, err = stream.ParseLSN(res.ConsistentPoint); err != nil {
		return nil, err
	}
	s.taken = time.Now().UTC()

	// The schema comes in pg_dump's two sections, as pg_restore applies
	// them: tables and types before the rows, indexes, constraints and
	// triggers after (faster loads, and foreign keys that hold only once
	// every table is full). pg_dump reads the catalog as of the snapshot;
	// a rewrite it might have missed is found below.
	if s.only == "" {
		if pt.script, err = c.dumpSchema(ctx, s.snap, "pre-data"); err != nil {
			return nil, err
		}
		if pt.post, err = c.dumpSchema(ctx, s.snap, "post-data"); err != nil {
			return nil, err
		}
	}
	if pt.lead, err = s.connect(ctx); err != nil {
		return nil, err
	}
	if pt.tables, err = s.tables(ctx, pt.lead); err != nil {
		return nil, err
	}
	if pt.roles, err = readRoles(ctx, pt.lead); err != nil {
		return nil, err
	}
	if err := s.lock(ctx, pt.lead, pt.tables, false); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeUndefinedTable {
			return nil, &rewrittenError{what: fmt.Sprintf("a captured table was renamed or dropped (%v)", err), lsn: s.lsn}
		}
		return nil, err
	}
	oids := make([]uint32, len(pt.tables))
	for i, t := range pt.tables {
		oids[i] = t.oid
	}
	// pg_class read in SQL is the snapshot's; pg_relation_filenode reads
	// the catalog as it is now. Partitions of a published root are
	// copied through it and checked too.
	var changed string
	err = pt.lead.QueryRow(ctx, `WITH RECURSIVE rel(oid) AS (
			SELECT unnest($1::oid[])
			UNION SELECT i.inhrelid FROM pg_inherits i JOIN rel ON i.inhparent = rel.oid)
		SELECT format('%I.%I', n.nspname, c.relname) FROM rel
		JOIN pg_class c ON c.oid = rel.oid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'm') AND (pg_relation_filenode(c.oid) IS DISTINCT FROM c.relfilenode
			OR NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'relation' AND l.relation = c.oid
				AND l.pid = pg_backend_pid() AND l.granted))
		LIMIT 1`, oids).Scan(&changed)
	switch {
	case err == nil:
		return nil, &rewrittenError{what: "table " + changed + " was rewritten or renamed (ALTER TABLE, TRUNCATE, VACUUM FULL or CLUSTER)", lsn: s.lsn}
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("compare the snapshot's tables with the current ones: %w", err)
	}
	if changed, err = s.columnsChanged(ctx, pt.lead, oids); err != nil {
		return nil, err
	}
	if changed != "" {
		return nil, &rewrittenError{what: "the columns of table " + changed + " changed (ADD, DROP, RENAME or ALTER COLUMN)", lsn: s.lsn}
	}
	ok = true
	return pt, nil
}

// columnsShape is each table's columns, as one digest a table.
const columnsShape = `SELECT c.oid, format('%I.%I', n.nspname, c.relname),
	md5(string_agg(format('%s %s %s %s %s', a.attnum, a.attname, a.atttypid, a.atttypmod, a.attisdropped), ',' ORDER BY a.attnum))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.oid = ANY($1::oid[]) GROUP BY c.oid, n.nspname, c.relname`

// columnsChanged names a table whose columns differ between the snapshot
// (lead's transaction) and the catalog as it is now, or returns "". A
// column renamed or dropped after the point rewrites no file, yet the
// copy, planned by the current catalog, would fail on it or read the
// wrong columns. The locks are held, so no later change can commit: a new
// connection reads the catalog as it stays for the whole copy.
func (s *snapshotter) columnsChanged(ctx context.Context, lead *pgx.Conn, oids []uint32) (string, error) {
	shape := func(conn *pgx.Conn) (map[uint32]string, map[uint32]string, error) {
		rows, err := conn.Query(ctx, columnsShape, oids)
		if err != nil {
			return nil, nil, fmt.Errorf("read the captured tables' columns: %w", err)
		}
		defer rows.Close()
		digests, names := map[uint32]string{}, map[uint32]string{}
		for rows.Next() {
			var oid uint32
			var name, digest string
			if err := rows.Scan(&oid, &name, &digest); err != nil {
				return nil, nil, fmt.Errorf("read the captured tables' columns: %w", err)
			}
			digests[oid], names[oid] = digest, name
		}
		return digests, names, rows.Err()
	}
	then, names, err := shape(lead)
	if err != nil {
		return "", err
	}
	now, err := s.dial(ctx)
	if err != nil {
		return "", err
	}
	defer now.Close(context.WithoutCancel(ctx))
	current, _, err := shape(now)
	if err != nil {
		return "", err
	}
	for oid, d := range then {
		if current[oid] != d {
			return names[oid], nil
		}
	}
	return "", nil
}

// lock takes ACCESS SHARE locks on every table in conn's transaction.
// With nowait it fails with lock_not_available (55P03) instead of queueing
// behind a schema change that itself waits for the lead's locks.
func (s *snapshotter) lock(ctx context.Context, conn *pgx.Conn, tables []*snapTable, nowait bool) error {
	if len(tables) == 0 {
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = qualified(t.Schema, t.Name)
	}
	sql := "LOCK TABLE " + strings.Join(names, ", ") + " IN ACCESS SHARE MODE"
	if nowait {
		sql += " NOWAIT"
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return pgerr.Fatalf(err, "the snapshot may not lock the captured tables on %s (%v); GRANT SELECT ON them TO the capture role, or exclude them", s.c.where(), err)
		}
		return fmt.Errorf("lock the snapshot's tables: %w", err)
	}
	return nil
}

// dumpSchema runs pg_dump for one section of the schema in the exported snapshot and drops
// what belongs to pgjet on the source (its schema and event triggers).
func (c *Capture) dumpSchema(ctx context.Context, snap, section string) ([]byte, error) {
	bin := c.cfg.PgDump
	if bin == "" {
		bin = "pg_dump"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, pgerr.Fatalf(nil, "%s not found: the snapshot copies the schema with pg_dump; install the PostgreSQL client (version %s or newer), set --pg-dump, or pass --no-snapshot", bin, "15")
	}
	dsn, password := splitPassword(c.cfg.DB)
	env, service, err := dumpEnv(password, c.cfg.DB)
	if err != nil {
		return nil, err
	}
	if service != nil {
		defer service.Close()
	}
	// Owners and privileges are kept (no --no-owner, --no-privileges): a
	// region built from the snapshot gives each role the rights it has
	// on the source, and no more. The roles they name are listed in the
	// manifest (snapRoles).
	cmd := exec.CommandContext(ctx, path, "--section="+section, "--snapshot="+snap,
		"--no-publications", "--no-subscriptions", "--exclude-schema=pgjet", "--dbname="+dsn)
	cmd.Env = env
	if service != nil {
		cmd.ExtraFiles = []*os.File{service} // fd 3, PGSERVICEFILE
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(errOut.String())
		if strings.Contains(msg, "server version mismatch") {
			return nil, pgerr.Fatalf(nil, "pg_dump at %s is older than the source server: install the PostgreSQL client of the server's version or newer, set --pg-dump, or pass --no-snapshot (%s)", path, msg)
		}
		return nil, fmt.Errorf("pg_dump --schema-only of %s: %v: %s", c.where(), err, redact.Within(msg, c.cfg.DB))
	}
	return filterDump(out.Bytes()), nil
}

// splitPassword returns the connection string dsn without its passwords,
// for pg_dump's command line, which every local user can read (ps), and
// the password pgx uses for dsn, for pg_dump's environment.
func splitPassword(dsn string) (string, string) {
	var pw string
	if cfg, err := pgx.ParseConfig(dsn); err == nil {
		pw = cfg.Password
	}
	return redact.WithoutPassword(dsn), pw
}

// dumpService names the entry of the service file that hands pg_dump the
// client key's pass phrase.
const dumpService = "pgjet_dump"

// dumpEnv is pg_dump's environment: the secrets of the connection string
// db (password, the password pgx uses for it) go there, never on the
// command line, where every local user can read them (ps). libpq reads
// the client key's pass phrase (sslpassword) from no environment variable,
// only from the connection string or a service file: it goes in a service
// file that is the read end of a pipe, handed to pg_dump as fd 3, so it is
// never written to disk, and nothing is left behind whenever capture or
// pg_dump dies. pg_dump connects once, so reading it once is enough.
func dumpEnv(password, db string) (env []string, service *os.File, err error) {
	env = os.Environ()
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	sslpw, ok := redact.Param(db, "sslpassword")
	if !ok {
		// pgx, not libpq, reads it from the environment too.
		sslpw = os.Getenv("PGSSLPASSWORD")
	}
	if sslpw == "" {
		return env, nil, nil
	}
	if _, named := redact.Param(db, "service"); named || os.Getenv("PGSERVICE") != "" {
		return nil, nil, pgerr.Fatalf(nil, "--db names a service and holds an sslpassword: pg_dump cannot be given both; put the sslpassword in the service's entry of pg_service.conf instead, or pass --no-snapshot")
	}
	// libpq reads service file lines of up to 1023 bytes, without their
	// trailing spaces.
	if strings.ContainsAny(sslpw, "\r\n") || strings.TrimRight(sslpw, " \t\v\f") != sslpw || len(sslpw) > 1000 {
		return nil, nil, pgerr.Fatalf(nil, "the sslpassword of --db is longer than 1000 bytes, ends in spaces or holds a line break, which pg_dump cannot be given; change the client key's pass phrase, or pass --no-snapshot")
	}
	content := "[" + dumpService + "]\nsslpassword=" + sslpw + "\n"
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("create a pipe for pg_dump's service file: %w", err)
	}
	// Far below a pipe's buffer: the write does not wait for a reader.
	_, err = w.WriteString(content)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("write pg_dump's service file: %w", err)
	}
	return append(env, "PGSERVICEFILE=/dev/fd/3", "PGSERVICE="+dumpService), r, nil
}

// filterDump removes from a plain pg_dump script what a replica must not
// get: pgjet's event triggers (their function lives in the excluded pgjet
// schema; entries start at their "-- Name: ...; Type: ..." comment), and
// psql meta-commands.
func filterDump(script []byte) []byte {
	lines := bytes.SplitAfter(script, []byte("\n"))
	var out bytes.Buffer
	skip, wrote := false, false
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte("-- Name: ")) || bytes.HasPrefix(l, []byte("-- Data for Name: ")) {
			skip = bytes.Contains(l, []byte("; Type: EVENT TRIGGER;"))
			if skip && wrote && i > 0 && bytes.Equal(lines[i-1], []byte("--\n")) {
				// The entry's opening "--" line was written already.
				out.Truncate(out.Len() - 3)
			}
		}
		wrote = !skip
		// pg_dump 15.14 and later fence the script with psql's
		// \restrict and \unrestrict, which a server does not know.
		if bytes.HasPrefix(l, []byte("\\restrict ")) || bytes.HasPrefix(l, []byte("\\unrestrict ")) {
			continue
		}
		if !skip {
			out.Write(l)
		}
	}
	return out.Bytes()
}

// connect opens a connection that sees the exported snapshot.
func (s *snapshotter) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("begin snapshot transaction: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(s.snap)); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("import snapshot %s: %w", s.snap, err)
	}
	return conn, nil
}

// dial opens a plain connection to the source, named as the snapshot's.
func (s *snapshotter) dial(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.c.cfg.DB)
	if err != nil {
		return nil, pgerr.ClassifyConnect(s.c.cfg.DB, err)
	}
	cfg.RuntimeParams["application_name"] = "pgjet-capture snapshot"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, pgerr.ClassifyConnect(s.c.cfg.DB, err)
	}
	return conn, nil
}

// tables lists the captured tables with their copied columns, as the
// publication and the filters define them.
func (s *snapshotter) tables(ctx context.Context, conn *pgx.Conn) ([]*snapTable, error) {
	f := newFilter(&s.c.cfg)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", s.c.cfg.Publication).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up publication: %w", err)
	}
	if !exists {
		return nil, pgerr.Fatalf(nil, "publication %q does not exist on %s: start pgjet-capture --name %s first (it creates it), or name it with --publication",
			s.c.cfg.Publication, s.c.where(), s.c.cfg.Name)
	}
	// Tables published inserts only (--keyless inserts-only) have rows too.
	rows, err := conn.Query(ctx, `SELECT DISTINCT ON (c.oid) c.oid, p.schemaname, p.tablename, c.relkind::text,
			greatest(c.reltuples, 0)::bigint, pg_relation_size(c.oid),
			array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
				AND a.attgenerated = '' AND (p.attnames IS NULL OR a.attname = ANY (p.attnames)) ORDER BY a.attnum)
		FROM pg_publication_tables p
		JOIN pg_namespace n ON n.nspname = p.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
		WHERE p.pubname = ANY($1) ORDER BY 1, 2`, []string{s.c.cfg.Publication, InsertsPublication(s.c.cfg.Publication)})
	if err != nil {
		return nil, fmt.Errorf("list published tables: %w", err)
	}
	defer rows.Close()
	var out []*snapTable
	for rows.Next() {
		t := &snapTable{}
		var cols []string
		if err := rows.Scan(&t.oid, &t.Schema, &t.Name, &t.relkind, &t.EstRows, &t.sizeBytes, &cols); err != nil {
			return nil, fmt.Errorf("list published tables: %w", err)
		}
		if !f.table(t.Schema, t.Name) || s.only != "" && t.Key() != s.only {
			continue
		}
		for _, col := range cols {
			if f.column(t.Schema, t.Name, col) {
				t.Columns = append(t.Columns, col)
			}
		}
		t.idx = len(out)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list published tables: %w", err)
	}
	return out, nil
}

// copyTables copies tables with Workers connections, large tables split
// into block ranges copied in parallel. The lead connection, which holds
// the locks, is the first worker; each other worker locks every table too
// before it copies, without waiting: a schema change already queued behind
// the lead's locks would make it wait for the lead, and the lead for it.
// Such a worker leaves the copy to the others.
func (s *snapshotter) copyTables(ctx context.Context, lead *pgx.Conn, tables []*snapTable) error {
	tasks := make(chan snapTask)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(tasks)
		for _, t := range tables {
			t.LSN, t.Taken = s.lsn, s.taken
			ranges := 1
			if t.relkind == "r" && s.c.cfg.SnapshotRangeBytes > 0 && t.sizeBytes > s.c.cfg.SnapshotRangeBytes {
				ranges = int((t.sizeBytes + s.c.cfg.SnapshotRangeBytes - 1) / s.c.cfg.SnapshotRangeBytes)
			}
			t.left.Store(int32(ranges))
			// The table message comes before any of its rows: an applier
			// empties the table there (a table copied again after an
			// interruption drops the rows of the first attempt).
			if err := s.publishMeta(gctx, stream.SnapTable, "table:"+t.Key()+":"+s.lsn.String(), t.SnapshotTable); err != nil {
				return err
			}
			blocks := (t.sizeBytes + 8191) / 8192
			per := (blocks + int64(ranges) - 1) / int64(ranges)
			for r := 0; r < ranges; r++ {
				task := snapTask{t: t, rng: r, ranges: ranges}
				if ranges > 1 {
					lo, hi := int64(r)*per, int64(r+1)*per
					task.where = fmt.Sprintf(" WHERE ctid >= '(%d,0)'::tid", lo)
					if r < ranges-1 {
						task.where += fmt.Sprintf(" AND ctid < '(%d,0)'::tid", hi)
					}
				}
				select {
				case tasks <- task:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	for w := 0; w < max(s.c.cfg.SnapshotWorkers, 1); w++ {
		g.Go(func() error {
			conn := lead
			if w > 0 {
				var err error
				if conn, err = s.connect(gctx); err != nil {
					return err
				}
				defer conn.Close(context.WithoutCancel(gctx))
				if err := s.lock(gctx, conn, tables, true); err != nil {
					if pgerr.PgCode(err) == codeLockNotAvailable {
						s.c.log.Info().Str("snapshot", s.id).Int("worker", w).
							Msg("snapshot worker left out: a schema change waits for the snapshot's locks")
						return nil
					}
					return err
				}
			}
			for task := range tasks {
				if err := s.copyRange(gctx, conn, task); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// copyRange copies one range of a table into data messages of whole rows.
func (s *snapshotter) copyRange(ctx context.Context, conn *pgx.Conn, task snapTask) error {
	t := task.t
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = quoteIdent(c)
	}
	sql := "COPY (SELECT " + strings.Join(cols, ", ") + " FROM " + qualified(t.Schema, t.Name) + task.where + ") TO STDOUT"
	if len(cols) == 0 {
		sql = "COPY (SELECT FROM " + qualified(t.Schema, t.Name) + task.where + ") TO STDOUT"
	}
	w := &chunkWriter{s: s, ctx: ctx, task: task, limit: s.chunk}
	defer w.release()
	if _, err := conn.PgConn().CopyTo(ctx, w, sql); err != nil {
		if w.err != nil {
			return w.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return pgerr.Fatalf(err, "the snapshot may not read %s on %s; GRANT SELECT ON %s TO the capture role, or exclude the table",
				qualified(t.Schema, t.Name), s.c.where(), qualified(t.Schema, t.Name))
		}
		return fmt.Errorf("copy %s: %w", qualified(t.Schema, t.Name), err)
	}
	if err := w.flush(true); err != nil {
		return err
	}
	if t.left.Add(-1) == 0 {
		tt := t.SnapshotTable
		tt.Rows, tt.Bytes = t.rows.Load(), t.bytes.Load()
		if err := s.publishMeta(ctx, stream.SnapTableEnd, "table-end:"+t.Key()+":"+s.lsn.String(), tt); err != nil {
			return err
		}
		s.stats.TablesDone.Add(1)
		s.c.log.Debug().Str("snapshot", s.id).Str("table", t.Key()).Int64("rows", tt.Rows).Msg("table copied")
	}
	return nil
}

// chunkWriter cuts a COPY stream into data messages at row ends. A row
// larger than a message is cut where the message is full: its first
// messages carry stream.SnapMoreHeader, and the writer holds the
// snapshot's rows lock until its last one is published, so that no other
// message comes between them.
//
// COPY sends a row whole in one CopyData message, which pgconn holds
// while Write cuts it: the writer adds at most a message of its own.
type chunkWriter struct {
	s      *snapshotter
	ctx    context.Context
	task   snapTask
	limit  int
	buf    []byte
	n      int
	err    error
	locked bool // holds s.rows exclusively: a row is cut
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), w.limit-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) >= w.limit {
			if err := w.flush(false); err != nil {
				w.err = err
				return 0, err
			}
		}
	}
	return n, nil
}

// flush publishes the whole rows buffered (all of them when final: COPY
// text rows end with a newline, and newlines inside values are escaped),
// or, when the buffer is full with a part of one row, that part.
func (w *chunkWriter) flush(final bool) error {
	cut, more := len(w.buf), false
	if !final {
		cut = bytes.LastIndexByte(w.buf, '\n') + 1
		if cut == 0 && len(w.buf) >= w.limit {
			cut, more = len(w.buf), true
		}
	}
	if cut == 0 {
		return nil
	}
	data := w.buf[:cut]
	t := w.task.t
	m := stream.SnapshotMsg(stream.SnapshotRowsSubject(w.s.c.cfg.Name, w.s.id), w.s.id, stream.SnapData,
		fmt.Sprintf("data:%s:%s:%d:%d", t.Key(), w.s.lsn, w.task.rng, w.n), data)
	m.Header.Set(stream.SnapSchemaHeader, t.Schema)
	m.Header.Set(stream.SnapTableHeader, t.Name)
	m.Header.Set(stream.SnapRangeHeader, strconv.Itoa(w.task.rng))
	if more {
		m.Header.Set(stream.SnapMoreHeader, "1")
	}
	switch {
	case more && !w.locked:
		w.s.rows.Lock()
		w.locked = true
	case !w.locked:
		w.s.rows.RLock()
		defer w.s.rows.RUnlock()
	}
	if err := w.s.publish(w.ctx, m); err != nil {
		return err
	}
	if !more {
		w.release() // the row's last message
	}
	rows := int64(bytes.Count(data, []byte{'\n'}))
	t.rows.Add(rows)
	t.bytes.Add(int64(len(data)))
	w.s.stats.Rows.Add(rows)
	w.s.stats.Bytes.Add(int64(len(data)))
	w.n++
	w.buf = append(w.buf[:0], w.buf[cut:]...)
	return nil
}

// release lets the other workers publish again.
func (w *chunkWriter) release() {
	if w.locked {
		w.locked = false
		w.s.rows.Unlock()
	}
}

func (s *snapshotter) meta(kind, msgID string, data []byte) *nats.Msg {
	return stream.SnapshotMsg(stream.SnapshotOutlineSubject(s.c.cfg.Name, s.id), s.id, kind, msgID, data)
}

// publishScript publishes a schema script in parts of at most ChunkBytes.
func (s *snapshotter) publishScript(ctx context.Context, section string, script []byte) error {
	for i := 0; len(script) > 0; i++ {
		part := script[:min(len(script), s.c.cfg.ChunkBytes, s.chunk)]
		script = script[len(part):]
		m := s.meta(stream.SnapSchema, "schema:"+section+":"+s.lsn.String()+":"+strconv.Itoa(i), part)
		m.Header.Set(stream.SnapSectionHeader, section)
		if err := s.publish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (s *snapshotter) publishMeta(ctx context.Context, kind, msgID string, v any) error {
	_, err := s.publishMetaSeq(ctx, kind, msgID, v)
	return err
}

// publishMetaSeq is publishMeta, returning the message's stream sequence.
func (s *snapshotter) publishMetaSeq(ctx context.Context, kind, msgID string, v any) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	s.rows.RLock() // not between the messages of a row
	defer s.rows.RUnlock()
	return s.publishSeq(ctx, s.meta(kind, msgID, data))
}

func (s *snapshotter) publish(ctx context.Context, m *nats.Msg) error {
	_, err := s.publishSeq(ctx, m)
	return err
}

// publishSeq is publish, returning the message's stream sequence (the
// first one's, for a message published again that JetStream took for a
// duplicate).
func (s *snapshotter) publishSeq(ctx context.Context, m *nats.Msg) (uint64, error) {
	for attempt := 0; ; attempt++ {
		ack, err := s.js.PublishMsg(ctx, m)
		if err == nil {
			return ack.Sequence, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if attempt >= 5 || !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, context.DeadlineExceeded) {
			return 0, wrapNATS(fmt.Errorf("publish snapshot %s: %w", s.id, err))
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// progress logs the copy's rows, bytes and expected end.
func (s *snapshotter) progress(ctx context.Context) {
	every := s.c.cfg.ProgressInterval
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rows, b, est := s.stats.Rows.Load(), s.stats.Bytes.Load(), s.stats.EstRows.Load()
		ev := s.c.log.Info().Str("snapshot", s.id).Int64("rows", rows).Int64("bytes", b).
			Int64("tables_done", s.stats.TablesDone.Load()).Int64("tables", s.stats.Tables.Load()).
			Float64("rows_per_sec", float64(rows)/time.Since(start).Seconds())
		if est > rows && rows > 0 {
			eta := time.Duration(float64(time.Since(start)) * float64(est-rows) / float64(rows))
			ev = ev.Int64("est_rows", est).Int64("eta_s", int64(eta.Seconds()))
		}
		ev.Msg("snapshot progress")
	}
}
