package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// restoreState is a restore recorded in the target.
type restoreState struct {
	snapshot string
	seq      uint64
	done     bool
	rowsOnly bool
}

// maybeRestore builds an empty target from the newest snapshot in the
// snapshot stream before the applier follows the change stream, or
// finishes a restore that was interrupted. It returns whether it restored;
// the session's connection is closed then. A target that holds tables
// already is used as it is.
func (s *session) maybeRestore(ctx context.Context, js jetstream.JetStream, changes jetstream.Stream) (bool, error) {
	a := s.a
	rs, err := readRestore(ctx, s.conn, a.cfg.Name)
	if err != nil {
		return false, err
	}
	if rs != nil && rs.done {
		return false, nil
	}
	if rs == nil {
		if s.pos.seq > 0 || s.pos.commit > 0 || a.cfg.SkipSnapshot {
			return false, nil
		}
		n, err := userTables(ctx, s.conn)
		if err != nil {
			return false, err
		}
		if n > 0 {
			a.log.Info().Int("tables", n).Msg("target holds tables: used as they are, no snapshot restored (changes follow from the stream's start)")
			return false, nil
		}
	}
	st, err := snapshotStream(ctx, js, a.cfg)
	if err != nil {
		return false, err
	}
	if st == nil {
		a.log.Warn().Msg("no snapshot stream for this source (pgjet-capture --no-snapshot?): following changes only; tables must exist on the target")
		return false, nil
	}
	var id string
	var from uint64
	if rs != nil {
		id, from = rs.snapshot, rs.seq
		snaps, err := stream.ListSnapshots(ctx, st, a.cfg.Name)
		if err != nil {
			return false, natsError{err}
		}
		if !slices.ContainsFunc(snaps, func(si stream.SnapshotInfo) bool { return si.ID == id }) {
			return false, snapshotGone(id, a.cfg.Name)
		}
		a.log.Info().Str("snapshot", id).Uint64("snapshot_seq", from).Msg("resuming interrupted restore")
	} else {
		var waitLogged, upstreamRead time.Time
		var want string
		for {
			if a.cfg.UpstreamDomain != "" && time.Since(upstreamRead) > 5*time.Second {
				upstreamRead = time.Now()
				want = newestUpstreamSnapshot(ctx, js, a.cfg)
			}
			snaps, err := stream.ListSnapshots(ctx, st, a.cfg.Name)
			if err != nil {
				return false, natsError{err}
			}
			// A mirror made or cut off a moment ago may not hold the
			// newest snapshot yet: restoring an older one would be right
			// but would replay all the changes since, which can take
			// hours. The newest one is restored as it arrives instead.
			if want != "" {
				if slices.ContainsFunc(snaps, func(si stream.SnapshotInfo) bool { return si.ID == want }) {
					id = want
					break
				}
				if time.Since(waitLogged) > 30*time.Second {
					waitLogged = time.Now()
					a.log.Info().Str("snapshot", want).Str("upstream_domain", a.cfg.UpstreamDomain).Msg("waiting for this region's mirror to receive the source's newest snapshot")
				}
				select {
				case <-ctx.Done():
					return false, ctx.Err()
				case <-time.After(time.Second):
				}
				continue
			}
			if i := newestComplete(snaps, func(stream.SnapshotInfo) bool { return true }); i >= 0 {
				id = snaps[i].ID
				break
			}
			if len(snaps) > 0 {
				// The first snapshot is being taken: restore it as it
				// comes, so the copy and the load overlap. Should it be
				// interrupted, the capture resumes it and tables copied
				// again start over here too.
				id = snaps[len(snaps)-1].ID
				a.log.Info().Str("snapshot", id).Msg("restoring the snapshot while it is being taken")
				break
			}
			// pgjet-capture makes the snapshot stream before it takes
			// its first snapshot: one is on its way.
			if time.Since(waitLogged) > 30*time.Second {
				waitLogged = time.Now()
				a.log.Info().Msg("waiting for the source's first snapshot (pgjet-apply --skip-snapshot follows changes without it)")
			}
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	underOrigin := s.cx.origin != 0
	if underOrigin {
		// The restore writes under the origin this session holds, and one
		// session holds it at a time: this one ends, and the applier starts
		// a new one after the restore.
		if err := s.conn.Close(ctx); err != nil {
			return false, fmt.Errorf("release the replication origin of source %s: %w", a.cfg.Name, err)
		}
	}
	if err := Restore(ctx, RestoreOptions{DB: a.cfg.DB, Source: a.cfg.Name, SnapshotStream: st, Snapshot: id,
		ChangeStream: changes, FromSeq: from, UnderOrigin: underOrigin, NoOwners: a.cfg.NoOwners, Log: a.log, SchemaExists: rs != nil && rs.rowsOnly}); err != nil {
		return false, err
	}
	return true, nil
}

// snapshotGone is the error of a restore whose snapshot was removed.
func snapshotGone(id, source string) error {
	return pgerr.Fatalf(nil, "the snapshot %s this target was being restored from is gone from stream %s (removed by --snapshot-keep, or replaced after the source's schema changed); empty the target (drop its tables and schema pgjet) and start pgjet-apply again to restore the newest one",
		id, stream.SnapshotStreamName(source))
}

func readRestore(ctx context.Context, conn *pgx.Conn, source string) (*restoreState, error) {
	var rs restoreState
	var seq int64
	// rows_only through to_jsonb: a restore table of an older pgjet lacks it.
	err := conn.QueryRow(ctx, "SELECT snapshot, stream_seq, done, coalesce((to_jsonb(r)->>'rows_only')::boolean, false) FROM pgjet.restore r WHERE source = $1", source).
		Scan(&rs.snapshot, &seq, &rs.done, &rs.rowsOnly)
	if errors.Is(err, pgx.ErrNoRows) || pgerr.PgCode(err) == pgerr.CodeUndefinedTable { // Restore creates the table
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pgjet.restore: %w", err)
	}
	rs.seq = uint64(seq)
	return &rs, nil
}

// userTables counts the tables of a database outside pgjet's schema and
// the system's.
func userTables(ctx context.Context, conn *pgx.Conn) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgjet')
		AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count the target's tables: %w", err)
	}
	return n, nil
}

// snapshotStream finds the source's snapshot stream in this region (its
// mirror when the applier reads a mirror), or nil when there is none.
func snapshotStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	if cfg.UpstreamDomain != "" {
		st, err := stream.EnsureSnapshotMirror(ctx, js, cfg.Name, cfg.UpstreamDomain)
		if err != nil {
			return nil, mirrorError(err)
		}
		return st, nil
	}
	st, err := js.Stream(ctx, stream.SnapshotStreamName(cfg.Name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, natsError{fmt.Errorf("look up stream %s: %w", stream.SnapshotStreamName(cfg.Name), err)}
	}
	return st, nil
}

// newestUpstreamSnapshot returns the id of the newest complete snapshot
// in the snapshot stream of cfg's upstream domain, or "" when that stream
// cannot be read (the link is cut): the mirror's newest is restored then.
func newestUpstreamSnapshot(ctx context.Context, js jetstream.JetStream, cfg Config) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st := upstreamSnapshotStream(ctx, js, cfg)
	if st == nil {
		return ""
	}
	snaps, err := stream.ListSnapshots(ctx, st, cfg.Name)
	if err != nil {
		return ""
	}
	if i := newestComplete(snaps, func(stream.SnapshotInfo) bool { return true }); i >= 0 {
		return snaps[i].ID
	}
	return ""
}

// newestComplete returns the index of the newest complete snapshot that ok
// accepts, or -1.
func newestComplete(snaps []stream.SnapshotInfo, ok func(stream.SnapshotInfo) bool) int {
	for i := len(snaps) - 1; i >= 0; i-- {
		if snaps[i].Complete && ok(snaps[i]) {
			return i
		}
	}
	return -1
}

// RestoreOptions say what Restore loads where.
type RestoreOptions struct {
	DB             string
	Source         string
	SnapshotStream jetstream.Stream
	Snapshot       string
	// ChangeStream is where the applier goes on: the restore records the
	// position in it that follows the snapshot.
	ChangeStream jetstream.Stream
	// FromSeq resumes after this snapshot stream sequence.
	FromSeq uint64
	// UnderOrigin writes the rows under the replication origin the
	// applier of Source writes under in this database (OriginName).
	// Restored rows are then the source's, stamped with the time
	// the snapshot was taken, as the rows an applier writes are:
	// last-writer-wins, keep-local and error do not take them for local
	// writes, and a capture of the target does not publish them again.
	UnderOrigin bool
	// SchemaExists loads rows only: the target has the tables already
	// (pgjet replay --force), with their keys, indexes, foreign keys and
	// triggers. The snapshot's tables are emptied together when the
	// restore begins; the target's other tables are left as they are.
	// The restore records it, and a resumed restore must say the same.
	SchemaExists bool
	// NoOwners restores the schema without the source's owners and
	// privileges: every object then belongs to the restoring role (see
	// Config.NoOwners).
	NoOwners bool
	Log      zerolog.Logger
	// ProgressInterval is how often progress is logged (default 10s).
	ProgressInterval time.Duration
}

// Restore loads a snapshot into the target: the pre-data schema, every
// table's rows, then the post-data schema (indexes, constraints,
// triggers), and records in pgjet.applied the point of the change stream
// the snapshot stands for. Progress is committed as it goes (the schema,
// then rows in batches, each with the snapshot sequence reached), so an
// interrupted restore resumes where it stopped.
func Restore(ctx context.Context, o RestoreOptions) error {
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 10 * time.Second
	}
	conn, err := pgx.Connect(ctx, o.DB)
	if err != nil {
		return pgerr.ClassifyConnect(o.DB, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		switch {
		case pgerr.PgCode(err) != pgerr.CodeInsufficientPriv:
			return fmt.Errorf("set session_replication_role: %w", err)
		case o.SchemaExists:
			// Rows go into tables in name order, whose foreign keys and
			// triggers are in place: a child's rows before its parent's.
			return pgerr.Fatalf(err, "loading the snapshot's rows into the existing tables of %s (replay --force) needs session_replication_role = replica, so that their foreign keys and triggers do not fire on the restored rows, and the role may not set it; run as a superuser, or GRANT SET ON PARAMETER session_replication_role TO the role",
				redact.Postgres(o.DB))
		default:
			// Foreign keys and triggers come with the post-data section,
			// after the rows: replica role only spares triggers made by
			// hand in between.
			o.Log.Debug().Err(err).Msg("restoring without session_replication_role = replica")
		}
	}
	if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	// As in the applier's session: a batch of rows or an index build
	// that outlasts the target's statement_timeout would fail on every
	// retry.
	if _, err := conn.Exec(ctx, "SET statement_timeout = 0"); err != nil {
		return fmt.Errorf("set statement_timeout: %w", err)
	}
	if o.UnderOrigin {
		origin, _, err := TargetOrigins(ctx, conn, o.Source)
		if err != nil {
			return err
		}
		if _, err := takeOrigin(ctx, conn, origin); pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			// The applier that follows says what this means, once.
			o.Log.Debug().Err(err).Str("origin", origin).Msg("restoring without a replication origin")
			o.UnderOrigin = false
		} else if err != nil {
			return fmt.Errorf("set up replication origin %q: %w", origin, err)
		}
	}
	if err := migrate(ctx, conn, o.DB); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return pgerr.Fatalf(err, "the role may not create schema pgjet on %s; GRANT CREATE ON DATABASE to it (deploy/postgres/roles.sql)", redact.Postgres(o.DB))
		}
		return err
	}
	if o.FromSeq == 0 {
		if _, err := conn.Exec(ctx, `INSERT INTO pgjet.restore (source, snapshot, stream_seq, rows_only) VALUES ($1, $2, 0, $3)
			ON CONFLICT (source) DO UPDATE SET snapshot = EXCLUDED.snapshot, stream_seq = 0, done = false, started_at = now(), finished_at = NULL,
				rows_only = EXCLUDED.rows_only`,
			o.Source, o.Snapshot, o.SchemaExists); err != nil {
			return fmt.Errorf("record restore: %w", err)
		}
	}
	subject := stream.SnapshotSubject(o.Source, o.Snapshot)
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject + ".>"}}
	if o.FromSeq > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = o.FromSeq + 1
	}
	cons, err := o.SnapshotStream.OrderedConsumer(ctx, cc)
	if err != nil {
		return natsError{fmt.Errorf("read snapshot %s: %w", o.Snapshot, err)}
	}
	r := &restorer{o: o, conn: conn, tables: map[string]stream.SnapshotTable{}, started: time.Now(), lastLog: time.Now()}
	defer func() {
		if r.cut != nil { // before the connection closes
			r.cut.w.CloseWithError(errCutAbandoned)
			<-r.cut.done
		}
	}()
	if o.FromSeq > 0 {
		// The table messages before the resume point name the columns.
		if err := r.loadTables(ctx); err != nil {
			return err
		}
		if err := r.checkRoles(ctx); err != nil {
			return err
		}
		if err := r.stamp(ctx); err != nil {
			return err
		}
	}
	o.Log.Info().Str("snapshot", o.Snapshot).Msg("restoring snapshot")
	// A pull iterator keeps messages coming while rows are written (one
	// Next round trip per message would set the pace otherwise).
	it, err := cons.Messages(jetstream.PullMaxBytes(64 << 20))
	if err != nil {
		return natsError{fmt.Errorf("read snapshot %s: %w", o.Snapshot, err)}
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextMaxWait(30 * time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				// A snapshot still being taken (or still being mirrored)
				// is waited for; one that was removed cannot be finished.
				snaps, lerr := stream.ListSnapshots(ctx, o.SnapshotStream, o.Source)
				if lerr != nil {
					return natsError{lerr}
				}
				if !slices.ContainsFunc(snaps, func(si stream.SnapshotInfo) bool { return si.ID == o.Snapshot }) {
					return snapshotGone(o.Snapshot, o.Source)
				}
				o.Log.Info().Str("snapshot", o.Snapshot).Msg("waiting for more of the snapshot (capture still copying, or the mirror catching up)")
				continue
			}
			return natsError{fmt.Errorf("read snapshot %s: %w", o.Snapshot, err)}
		}
		md, err := m.Metadata()
		if err != nil {
			return natsError{err}
		}
		done, err := r.handle(ctx, m, md)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// restorer is one restore's state.
type restorer struct {
	o       RestoreOptions
	conn    *pgx.Conn
	tables  map[string]stream.SnapshotTable
	man     stream.SnapshotManifest
	script  bytes.Buffer
	section string
	// the open transaction of rows
	open    bool
	txBytes int
	seq     uint64 // newest snapshot sequence handled
	// cut is the COPY of a row larger than a message, open until its
	// last message (see stream.SnapMoreHeader).
	cut *cutCopy

	rows, bytes, msgs int64
	started, lastLog  time.Time
}

func (r *restorer) loadTables(ctx context.Context) error {
	cons, err := r.o.SnapshotStream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{stream.SnapshotOutlineSubject(r.o.Source, r.o.Snapshot)}})
	if err != nil {
		return natsError{err}
	}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return natsError{fmt.Errorf("read snapshot %s: %w", r.o.Snapshot, err)}
		}
		md, err := m.Metadata()
		if err != nil {
			return natsError{err}
		}
		if md.Sequence.Stream > r.o.FromSeq {
			return nil
		}
		switch m.Headers().Get(stream.SnapKindHeader) {
		case stream.SnapBegin:
			if err := json.Unmarshal(m.Data(), &r.man); err != nil {
				return r.bad(md.Sequence.Stream, err)
			}
		case stream.SnapTable:
			var t stream.SnapshotTable
			if err := json.Unmarshal(m.Data(), &t); err != nil {
				return r.bad(md.Sequence.Stream, err)
			}
			r.tables[t.Key()] = t
		}
	}
}

func (r *restorer) bad(seq uint64, err error) error {
	return pgerr.Fatalf(err, "snapshot %s: message at stream %s sequence %d is damaged; take a new snapshot (pgjet snapshot) and restore again",
		r.o.Snapshot, stream.SnapshotStreamName(r.o.Source), seq)
}

// handle applies one snapshot message; it reports true after the end.
func (r *restorer) handle(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
	seq := md.Sequence.Stream
	kind := m.Headers().Get(stream.SnapKindHeader)
	if r.cut != nil && (kind != stream.SnapData || rowsKey(m) != r.cut.key) {
		// The capture stopped in the middle of the row: its table is
		// copied again from a new table message, which empties it.
		if err := r.abandonCut(ctx); err != nil {
			return false, err
		}
	}
	if r.script.Len() > 0 && (kind != stream.SnapSchema || m.Headers().Get(stream.SnapSectionHeader) != r.section) {
		if err := r.runScript(ctx); err != nil {
			return false, err
		}
	}
	if kind != stream.SnapData && r.open {
		if err := r.commit(ctx); err != nil {
			return false, err
		}
	}
	r.msgs++
	switch kind {
	case stream.SnapBegin:
		if err := json.Unmarshal(m.Data(), &r.man); err != nil {
			return false, r.bad(seq, err)
		}
		if r.man.Version > stream.SnapshotVersion {
			return false, pgerr.Fatalf(nil, "snapshot %s has format version %d; this pgjet-apply reads up to %d: upgrade pgjet-apply", r.o.Snapshot, r.man.Version, stream.SnapshotVersion)
		}
		if err := r.checkRoles(ctx); err != nil {
			return false, err
		}
		if err := r.stamp(ctx); err != nil {
			return false, err
		}
		if r.o.SchemaExists {
			return false, r.emptyTables(ctx, seq)
		}
		return false, r.advance(ctx, seq)
	case stream.SnapSchema:
		if r.o.SchemaExists {
			return false, nil
		}
		r.section = m.Headers().Get(stream.SnapSectionHeader)
		r.script.Write(m.Data())
		r.seq = seq
		return false, nil
	case stream.SnapTable:
		var t stream.SnapshotTable
		if err := json.Unmarshal(m.Data(), &t); err != nil {
			return false, r.bad(seq, err)
		}
		if t.Schema == schema.Own {
			// pgjet's own tables, in a snapshot of an older pgjet: the
			// target keeps its own (this restore's progress is one).
			return false, r.advance(ctx, seq)
		}
		_, again := r.tables[t.Key()]
		r.tables[t.Key()] = t
		// A table copied again after an interrupted snapshot starts over.
		// Existing tables were emptied together when the restore began;
		// one copied again is emptied by DELETE, as TRUNCATE of a table
		// that others reference fails (the replica role keeps its foreign
		// keys from firing).
		empty := "TRUNCATE "
		if r.o.SchemaExists {
			empty = "DELETE FROM "
		}
		if !r.o.SchemaExists || again {
			if _, err := r.conn.Exec(ctx, empty+pgx.Identifier{t.Schema, t.Name}.Sanitize()); err != nil {
				return false, r.tableError(err, t)
			}
		}
		return false, r.advance(ctx, seq)
	case stream.SnapData:
		return false, r.data(ctx, m, md)
	case stream.SnapTableEnd:
		var t stream.SnapshotTable
		if err := json.Unmarshal(m.Data(), &t); err != nil {
			return false, r.bad(seq, err)
		}
		r.o.Log.Debug().Str("table", t.Key()).Int64("rows", t.Rows).Msg("table restored")
		return false, r.advance(ctx, seq)
	case stream.SnapEnd:
		var man stream.SnapshotManifest
		if err := json.Unmarshal(m.Data(), &man); err != nil {
			return false, r.bad(seq, err)
		}
		return true, r.finish(ctx, man, seq)
	default:
		return false, r.bad(seq, fmt.Errorf("unknown kind %q", kind))
	}
}

// emptyTables empties the snapshot's tables in a target that has them
// (SchemaExists), in one TRUNCATE, so that foreign keys between them do
// not stop it, and records the snapshot sequence reached with it. The
// target's other tables are left as they are, and the log says which.
func (r *restorer) emptyTables(ctx context.Context, seq uint64) error {
	var names, keys []string
	for _, t := range r.man.Tables {
		if t.Schema == schema.Own {
			continue
		}
		names = append(names, pgx.Identifier{t.Schema, t.Name}.Sanitize())
		keys = append(keys, t.Key())
	}
	// A partition is the snapshot's when it or a table it is a partition
	// of is (snapshots copy leaves, or roots under --partitions root).
	rows, err := r.conn.Query(ctx, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
		AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
		AND NOT EXISTS (SELECT 1 FROM pg_partition_ancestors(c.oid) a JOIN pg_class ac ON ac.oid = a.relid
			JOIN pg_namespace an ON an.oid = ac.relnamespace WHERE an.nspname || '.' || ac.relname = ANY($2))
		ORDER BY 1`, schema.Own, keys)
	if err != nil {
		return fmt.Errorf("list the target's tables: %w", err)
	}
	others, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list the target's tables: %w", err)
	}
	if len(others) > 0 {
		r.o.Log.Warn().Strs("tables", others).Str("snapshot", r.o.Snapshot).
			Msg("tables the snapshot does not hold are left as they were (rows and all); drop or empty them if the replayed database must be the source's alone")
	}
	tx, err := r.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if len(names) > 0 {
		if _, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == codeFeatureNotSupported {
				return pgerr.Fatalf(err, "cannot empty the snapshot's tables on %s: a table the snapshot does not hold references one of them (%s); drop that foreign key, or empty that table too, and replay again",
					redact.Postgres(r.o.DB), pe.Detail)
			}
			if pgerr.IsRetryable(err) {
				return fmt.Errorf("empty the snapshot's tables: %w", err)
			}
			return pgerr.Fatalf(err, "cannot empty the snapshot's tables on %s; --force loads the snapshot's rows into tables of the same names and columns: make the target's schema the source's (or replay into an empty database)",
				redact.Postgres(r.o.DB))
		}
	}
	r.seq = seq
	if _, err := tx.Exec(ctx, "UPDATE pgjet.restore SET stream_seq = $2 WHERE source = $1", r.o.Source, int64(r.seq)); err != nil {
		return fmt.Errorf("record restore progress: %w", err)
	}
	return tx.Commit(ctx)
}

// codeFeatureNotSupported is the SQLSTATE of a TRUNCATE of a table that a
// table left out of it references.
const codeFeatureNotSupported = "0A000"

// stamp gives the restore's transactions from here on the snapshot's
// start as their commit time, under the origin: no row in the snapshot is
// newer, and every change after its point is.
func (r *restorer) stamp(ctx context.Context) error {
	if !r.o.UnderOrigin {
		return nil
	}
	var at *time.Time
	if !r.man.Started.IsZero() {
		at = &r.man.Started
	}
	if _, err := r.conn.Exec(ctx, "SELECT pg_replication_origin_xact_setup('0/0', coalesce($1::timestamptz, clock_timestamp()))", at); err != nil {
		return fmt.Errorf("stamp the restore with the snapshot's time: %w", err)
	}
	return nil
}

// advance records the snapshot sequence reached.
func (r *restorer) advance(ctx context.Context, seq uint64) error {
	r.seq = seq
	return r.saveSeq(ctx)
}

// saveSeq records the snapshot sequence reached, in the transaction open
// on the restore's connection if there is one.
func (r *restorer) saveSeq(ctx context.Context) error {
	if _, err := r.conn.Exec(ctx, "UPDATE pgjet.restore SET stream_seq = $2 WHERE source = $1", r.o.Source, int64(r.seq)); err != nil {
		return fmt.Errorf("record restore progress: %w", err)
	}
	return nil
}

// checkRoles stops a restore whose snapshot names roles the target lacks,
// or owners the restoring role may not become, before the schema and any
// row are loaded: a script that stopped on the first of them would name
// only that one.
func (r *restorer) checkRoles(ctx context.Context) error {
	if r.o.SchemaExists || r.o.NoOwners || !r.man.Privileges {
		return nil
	}
	rc, err := CheckRoles(ctx, r.conn, r.man)
	if err != nil {
		return err
	}
	if msg := rc.Problem(); msg != "" {
		return pgerr.Fatalf(nil, "snapshot %s of source %s cannot be restored into %s with the source's owners and privileges: %s; or pass --no-owners to restore without them",
			r.o.Snapshot, r.o.Source, redact.Postgres(r.o.DB), msg)
	}
	return nil
}

// RolesCheck compares the roles a snapshot names with a target's.
type RolesCheck struct {
	// ApplyRole is the role connected to the target.
	ApplyRole string
	// Missing are the snapshot's roles the target lacks.
	Missing []string
	// NotMember are the snapshot's owners ApplyRole may not become.
	NotMember []string
	// SuperOwners are the snapshot's owners ApplyRole may not become that
	// are superusers on the target: membership in them would let the
	// apply role, and any role whose schema change it replays, become a
	// superuser, so they are never offered as a GRANT.
	SuperOwners []string
	// SourceMissing are roles of the source's cluster the target lacks
	// that the snapshot's schema does not name.
	SourceMissing []string
	// NoCreate are the snapshot's owners that may not create in a schema
	// of the target they own objects in on the source: a restoring role
	// that is no superuser may not give them those objects (ALTER ...
	// OWNER TO checks CREATE on the schema). Schemas the snapshot makes
	// are left out: their privileges are restored before their objects.
	NoCreate []stream.SchemaOwner
}

// CheckRoles compares the roles man names with the target conn is
// connected to.
func CheckRoles(ctx context.Context, conn *pgx.Conn, man stream.SnapshotManifest) (RolesCheck, error) {
	var rc RolesCheck
	err := conn.QueryRow(ctx, `SELECT session_user,
			coalesce(array_agg(x.name ORDER BY x.name) FILTER (WHERE r.oid IS NULL AND x.named), '{}'),
			coalesce(array_agg(x.name ORDER BY x.name) FILTER (WHERE x.name = ANY ($2) AND NOT pg_has_role(session_user, r.oid, 'MEMBER') AND NOT r.rolsuper), '{}'),
			coalesce(array_agg(x.name ORDER BY x.name) FILTER (WHERE x.name = ANY ($2) AND NOT pg_has_role(session_user, r.oid, 'MEMBER') AND r.rolsuper), '{}'),
			coalesce(array_agg(x.name ORDER BY x.name) FILTER (WHERE r.oid IS NULL AND NOT x.named), '{}')
		FROM (SELECT name, bool_or(named) AS named FROM (
				SELECT unnest($1::text[]) AS name, true AS named
				UNION ALL SELECT unnest($3::text[]), false) u GROUP BY name) x
		LEFT JOIN pg_roles r ON r.rolname = x.name`, man.Roles, man.Owners, man.SourceRoles).Scan(&rc.ApplyRole, &rc.Missing, &rc.NotMember, &rc.SuperOwners, &rc.SourceMissing)
	if err != nil {
		return rc, fmt.Errorf("compare the snapshot's roles with the target's: %w", err)
	}
	if len(man.OwnerSchemas) == 0 {
		return rc, nil
	}
	schemas, owners, create := make([]string, len(man.OwnerSchemas)), make([]string, len(man.OwnerSchemas)), make([]bool, len(man.OwnerSchemas))
	for i, so := range man.OwnerSchemas {
		schemas[i], owners[i], create[i] = so.Schema, so.Owner, so.Create
	}
	rows, err := conn.Query(ctx, `SELECT x.s, x.o, x.c
		FROM unnest($1::text[], $2::text[], $3::bool[]) AS x(s, o, c)
		JOIN pg_namespace n ON n.nspname = x.s
		JOIN pg_roles r ON r.rolname = x.o
		WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
			AND NOT has_schema_privilege(r.oid, n.oid, 'CREATE')
		ORDER BY 1, 2`, schemas, owners, create)
	if err != nil {
		return rc, fmt.Errorf("compare the snapshot's schema privileges with the target's: %w", err)
	}
	rc.NoCreate, err = pgx.CollectRows(rows, pgx.RowToStructByPos[stream.SchemaOwner])
	if err != nil {
		return rc, fmt.Errorf("compare the snapshot's schema privileges with the target's: %w", err)
	}
	return rc, nil
}

// Problem says what keeps the snapshot from being restored with its
// owners and privileges, and the fix, or returns "".
func (rc RolesCheck) Problem() string {
	var p []string
	if len(rc.Missing) > 0 {
		p = append(p, fmt.Sprintf("roles %s own objects, hold privileges or are named by policies on the source and are missing on the target; create them (pgjet roles --source SOURCE_URL --target TARGET_URL copies the source's roles) and start again",
			quoteNames(rc.Missing)))
	}
	if len(rc.NotMember) > 0 {
		p = append(p, fmt.Sprintf("the apply role %q may not become %s, which own objects on the source; GRANT %s TO %s on the target (or restore as a superuser) and start again",
			rc.ApplyRole, quoteNames(rc.NotMember), quoteNames(rc.NotMember), pgx.Identifier{rc.ApplyRole}.Sanitize()))
	}
	if len(rc.SuperOwners) > 0 {
		p = append(p, fmt.Sprintf("%s, superuser(s) on the target, own objects on the source, and the apply role %q may not become them (never make it a member: it would then be a superuser); restore as a superuser, or on the source make a role that is no superuser own them (ALTER ... OWNER TO) and take a new snapshot",
			quoteNames(rc.SuperOwners), rc.ApplyRole))
	}
	if len(rc.NoCreate) > 0 {
		p = append(p, rc.noCreateProblem())
	}
	return strings.Join(p, "; ")
}

// noCreateProblem names the grants the owners of NoCreate lack.
func (rc RolesCheck) noCreateProblem() string {
	var grants []string
	var revoke bool
	for _, so := range rc.NoCreate {
		grants = append(grants, fmt.Sprintf("GRANT CREATE ON SCHEMA %s TO %s", pgx.Identifier{so.Schema}.Sanitize(), pgx.Identifier{so.Owner}.Sanitize()))
		revoke = revoke || !so.Create
	}
	fix := ""
	if revoke {
		fix = " (and REVOKE it after the restore from those that may not create there on the source)"
	}
	return fmt.Sprintf("roles own objects on the source in schemas they may not create in on the target, and the apply role %q, no superuser, may give them those objects only while they may (ALTER ... OWNER TO needs CREATE on the schema); run %s on the target as the schema's owner%s, or restore as a superuser, and start again",
		rc.ApplyRole, strings.Join(grants, "; "), fix)
}

// quoteNames renders role names as quoted identifiers, comma-separated.
func quoteNames(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// runScript runs a schema section in one transaction with the progress.
func (r *restorer) runScript(ctx context.Context) error {
	script := r.script.String()
	r.script.Reset()
	switch {
	case r.o.NoOwners && r.man.Privileges:
		script = schema.WithoutOwners(script)
	case r.man.Privileges && r.section == "pre-data":
		script = schema.SchemaACLsFirst(script)
	}
	tx, err := r.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// Simple protocol: the script is many statements.
	if _, err := r.conn.PgConn().Exec(ctx, script).ReadAll(); err != nil {
		return pgerr.Fatalf(err, "the %s schema of snapshot %s failed on the target %s (a missing extension or role?); fix the target (or create the schema by hand and run pgjet-apply --skip-snapshot)",
			r.section, r.o.Snapshot, redact.Postgres(r.o.DB))
	}
	// pg_dump's script empties search_path for the session.
	if _, err := r.conn.Exec(ctx, "SELECT set_config('search_path', '\"$user\", public', false)"); err != nil {
		return err
	}
	if err := r.saveSeq(ctx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	r.o.Log.Info().Str("snapshot", r.o.Snapshot).Str("section", r.section).Int("bytes", len(script)).Msg("snapshot schema restored")
	return nil
}

// rowsKey names the table a data message holds rows of.
func rowsKey(m jetstream.Msg) string {
	return m.Headers().Get(stream.SnapSchemaHeader) + "." + m.Headers().Get(stream.SnapTableHeader)
}

// data loads one message of rows with COPY; rows commit in batches.
func (r *restorer) data(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata) error {
	seq := md.Sequence.Stream
	if m.Headers().Get(stream.SnapSchemaHeader) == schema.Own {
		return nil // see the table message
	}
	key := rowsKey(m)
	t, ok := r.tables[key]
	if !ok {
		return r.bad(seq, fmt.Errorf("rows of table %s before its table message", key))
	}
	if !r.open {
		if _, err := r.conn.Exec(ctx, "BEGIN"); err != nil {
			return err
		}
		r.open, r.txBytes = true, 0
	}
	more := m.Headers().Get(stream.SnapMoreHeader) != ""
	var rows int64
	switch {
	case more || r.cut != nil:
		if r.cut == nil {
			if err := r.startCut(ctx, key, copySQL(t)); err != nil {
				return r.tableError(err, t)
			}
		}
		if err := r.cut.write(m.Data()); err != nil {
			if res := r.cut.finish(); res.err != nil {
				err = res.err // why COPY stopped reading
			}
			return r.copyFailed(ctx, err, t)
		}
		if more {
			break
		}
		res := r.cut.finish()
		r.cut = nil
		if res.err != nil {
			return r.copyFailed(ctx, res.err, t)
		}
		if _, err := r.conn.Exec(ctx, "RELEASE SAVEPOINT "+cutSavepoint); err != nil {
			return err
		}
		rows = res.rows
	default:
		tag, err := r.conn.PgConn().CopyFrom(ctx, bytes.NewReader(m.Data()), copySQL(t))
		if err != nil {
			return r.copyFailed(ctx, err, t)
		}
		rows = tag.RowsAffected()
	}
	r.seq = seq
	r.rows += rows
	r.bytes += int64(len(m.Data()))
	r.txBytes += len(m.Data())
	// Never in the middle of a row: the position saved with the rows is
	// where a resumed restore starts reading again.
	if r.cut == nil && (r.txBytes >= 16<<20 || md.NumPending == 0) {
		if err := r.commit(ctx); err != nil {
			return err
		}
	}
	if time.Since(r.lastLog) >= r.o.ProgressInterval {
		r.lastLog = time.Now()
		ev := r.o.Log.Info().Str("snapshot", r.o.Snapshot).Int64("rows", r.rows).Int64("bytes", r.bytes).
			Uint64("messages_left", md.NumPending).Float64("mb_per_sec", float64(r.bytes)/1e6/time.Since(r.started).Seconds())
		if r.msgs > 0 && md.NumPending > 0 {
			eta := time.Duration(float64(time.Since(r.started)) / float64(r.msgs) * float64(md.NumPending))
			ev = ev.Int64("eta_s", int64(eta.Seconds()))
		}
		ev.Msg("restore progress")
	}
	return nil
}

// copySQL is the COPY statement that loads rows of t.
func copySQL(t stream.SnapshotTable) string {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	sql := "COPY " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
	if len(cols) > 0 {
		sql += " (" + strings.Join(cols, ", ") + ")"
	}
	return sql + " FROM STDIN"
}

// copyFailed rolls back the rows not committed and says which table
// failed.
func (r *restorer) copyFailed(ctx context.Context, err error, t stream.SnapshotTable) error {
	r.open, r.cut = false, nil
	_, _ = r.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	return r.tableError(err, t)
}

// cutSavepoint is where the transaction of rows goes back to when a row
// larger than a message is never finished.
const cutSavepoint = "pgjet_cut_row"

// cutCopy is a COPY that stays open over the messages of a row larger
// than a message: they are written to it as they come, so the restore
// holds one message of the row at a time, never the row.
type cutCopy struct {
	key  string
	w    *io.PipeWriter
	done chan cutResult
}

type cutResult struct {
	rows int64
	err  error
}

// errCutAbandoned ends the COPY of a row whose last message never came.
var errCutAbandoned = errors.New("the snapshot's capture stopped in the middle of this row; its table is copied again")

// startCut opens a COPY of table key, under a savepoint.
func (r *restorer) startCut(ctx context.Context, key, sql string) error {
	if _, err := r.conn.Exec(ctx, "SAVEPOINT "+cutSavepoint); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	c := &cutCopy{key: key, w: pw, done: make(chan cutResult, 1)}
	go func() {
		tag, err := r.conn.PgConn().CopyFrom(ctx, pr, sql)
		// A write after a failed COPY must not wait for a reader.
		pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		c.done <- cutResult{tag.RowsAffected(), err}
	}()
	r.cut = c
	return nil
}

// write sends a message's rows to the COPY; it returns once COPY has
// taken them.
func (c *cutCopy) write(p []byte) error {
	_, err := c.w.Write(p)
	return err
}

// finish ends the COPY and returns what it did.
func (c *cutCopy) finish() cutResult {
	c.w.Close()
	return <-c.done
}

// abandonCut drops the rows of the COPY of a row that was never
// finished, and keeps the transaction's others.
func (r *restorer) abandonCut(ctx context.Context) error {
	c := r.cut
	r.cut = nil
	c.w.CloseWithError(errCutAbandoned)
	<-c.done
	if _, err := r.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+cutSavepoint); err != nil {
		return fmt.Errorf("drop the rows of a row cut short: %w", err)
	}
	r.o.Log.Info().Str("snapshot", r.o.Snapshot).Str("table", c.key).Msg("a row the snapshot's capture left unfinished is dropped; its table is copied again")
	return nil
}

func (r *restorer) commit(ctx context.Context) error {
	if err := r.saveSeq(ctx); err != nil {
		return err
	}
	if _, err := r.conn.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit restored rows: %w", err)
	}
	r.open = false
	return nil
}

func (r *restorer) tableError(err error, t stream.SnapshotTable) error {
	if pgerr.IsRetryable(err) {
		return fmt.Errorf("restore %s: %w", t.Key(), err)
	}
	return pgerr.Fatalf(err, "restoring table %s of snapshot %s into %s failed; the target must hold the snapshot's schema (an empty database gets it from the snapshot)",
		pgx.Identifier{t.Schema, t.Name}.Sanitize(), r.o.Snapshot, redact.Postgres(r.o.DB))
}

// finish records where the change stream takes over: transactions that
// committed before the snapshot's point are in it, and tables copied later
// skip their changes up to their own point.
func (r *restorer) finish(ctx context.Context, man stream.SnapshotManifest, seq uint64) error {
	start := uint64(1)
	known := false
	if r.o.ChangeStream != nil {
		var err error
		if start, known, err = stream.SnapshotStart(ctx, r.o.ChangeStream, man); err != nil {
			return natsError{err}
		}
	}
	if known {
		// Every transaction the snapshot lacks lies at or after the
		// sequence the stream had reached when the point was taken; those
		// before it the applier passes over by their commit LSN.
		info, err := r.o.ChangeStream.Info(ctx)
		if err != nil {
			return natsError{err}
		}
		if info.State.FirstSeq > start {
			return pgerr.Fatalf(nil, "snapshot %s (LSN %s) is older than the oldest change the stream %s keeps (it starts at sequence %d, the snapshot needs it from %d): take a new snapshot (pgjet snapshot) and restore again",
				r.o.Snapshot, man.LSN, info.Config.Name, info.State.FirstSeq, start)
		}
	} else if r.o.ChangeStream != nil {
		var err error
		if start, err = stream.SeekLSN(ctx, r.o.ChangeStream, man.LSN); err != nil {
			return natsError{err}
		}
		info, err := r.o.ChangeStream.Info(ctx)
		if err != nil {
			return natsError{err}
		}
		if info.State.FirstSeq > 1 && start == info.State.FirstSeq {
			m, err := r.o.ChangeStream.GetMsg(ctx, start)
			if err == nil {
				// A later transaction, or the rest of one whose first
				// chunks were removed: the changes between are gone.
				if envs, derr := stream.DecodeMessage(m.Data); derr == nil && len(envs) > 0 &&
					(envs[0].CommitLSN > man.LSN || envs[0].Kind == stream.KindTxn && !envs[0].First()) {
					return pgerr.Fatalf(nil, "snapshot %s (LSN %s) is older than the oldest change the stream %s keeps (LSN %s): take a new snapshot (pgjet snapshot) and restore again",
						r.o.Snapshot, man.LSN, info.Config.Name, envs[0].CommitLSN)
				}
			}
		}
	}
	tx, err := r.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	pos := man.LSN - 1
	if man.LSN == 0 {
		pos = 0
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pgjet.applied (source, commit_lsn, end_lsn, stream_seq, applied_at, source_lsn)
		VALUES ($1, $2::pg_lsn, $2::pg_lsn, $3, now(), $2::pg_lsn)
		ON CONFLICT (source) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, end_lsn = EXCLUDED.end_lsn,
			stream_seq = EXCLUDED.stream_seq, commit_time = NULL, applied_at = now(), source_lsn = EXCLUDED.source_lsn`,
		r.o.Source, pos.String(), int64(start-1)); err != nil {
		return fmt.Errorf("record the snapshot's position: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM pgjet.snapshot_tables WHERE source = $1", r.o.Source); err != nil {
		return err
	}
	for _, t := range man.Tables {
		if t.LSN > man.LSN && t.Schema != schema.Own {
			if _, err := tx.Exec(ctx, "INSERT INTO pgjet.snapshot_tables VALUES ($1, $2, $3, $4::pg_lsn)", r.o.Source, t.Schema, t.Name, t.LSN.String()); err != nil {
				return err
			}
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE pgjet.restore SET stream_seq = $2, done = true, finished_at = now() WHERE source = $1", r.o.Source, int64(seq)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	r.o.Log.Info().Str("snapshot", r.o.Snapshot).Str("lsn", man.LSN.String()).Int64("rows", r.rows).Int64("bytes", r.bytes).
		Int64("took_ms", time.Since(r.started).Milliseconds()).Uint64("stream_seq", start).Msg("snapshot restored; following changes")
	return nil
}

// upstreamSnapshotStream returns the snapshot stream of cfg's upstream
// domain, which the region's snapshot mirror copies, or nil when there is
// none or it cannot be read (the link is cut).
func upstreamSnapshotStream(ctx context.Context, js jetstream.JetStream, cfg Config) jetstream.Stream {
	if cfg.UpstreamDomain == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	up, err := stream.NewJetStream(js.Conn(), cfg.UpstreamDomain)
	if err != nil {
		return nil
	}
	st, err := up.Stream(ctx, stream.SnapshotStreamName(cfg.Name))
	if err != nil {
		return nil
	}
	return st
}
