package apply

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// Applier replays one source's stream into one target database.
type Applier struct {
	cfg   Config
	log   zerolog.Logger
	stats Stats
	// originWarned is set once the lack of replication origins was
	// reported: sessions reconnect, the warning is given once.
	originWarned atomic.Bool
	outage       *stream.Outage
	// state records the applier's state in the target while Run runs
	// (nil otherwise).
	state *stateRecorder
	// isolate, when set, is the commit LSN of a transaction that failed
	// on the target in a group: sessions apply one source transaction
	// per target transaction until past it (see txnFailed). Used by the
	// goroutine running Run only.
	isolate stream.LSN
}

// Stats are an Applier's live counters; safe for concurrent reads.
type Stats struct {
	Txns      atomic.Int64
	Changes   atomic.Int64
	Commits   atomic.Int64
	Conflicts atomic.Int64
	// DeadLetters counts messages set aside by --on-bad-message
	// dead-letter and stored in the dead-letter stream.
	DeadLetters atomic.Int64
	// DeadLetterTxns counts the source's transactions known to be set
	// aside with them: one per transaction set aside whole, each of a
	// batch message's.
	DeadLetterTxns atomic.Int64
	// Prepared is the number of change statements the session holds
	// prepared on the target (bounded by Config.StatementCache).
	Prepared   atomic.Int64
	AppliedLSN atomic.Uint64
	// SourceLSN is the source WAL position the target has caught up to:
	// the end of the newest applied transaction, or a newer heartbeat
	// when nothing was pending. Source WAL position minus it is the lag
	// in bytes.
	SourceLSN atomic.Uint64
	StreamSeq atomic.Uint64
	// SourceTime is the source time (UnixNano) of the newest applied
	// transaction or heartbeat: now minus it is the lag.
	SourceTime atomic.Int64
}

// Lag is how far the target trails the source in time.
func (s *Stats) Lag() time.Duration {
	t := s.SourceTime.Load()
	if t == 0 {
		return 0
	}
	return max(time.Since(time.Unix(0, t)), 0)
}

// New returns an Applier for cfg, which must have passed Validate. It does
// no I/O.
func New(cfg Config, log zerolog.Logger) *Applier {
	return &Applier{cfg: cfg, log: log.With().Str("component", "apply").Str("source", cfg.Name).Str("region", cfg.Region).Logger(),
		outage: stream.NewOutage(stream.StreamName(cfg.Name), cfg.OutageLimit)}
}

// Outage returns why the stream has been unreachable for longer than
// Config.OutageLimit, or nil.
func (a *Applier) Outage() error { return a.outage.Err() }

// streamFailed records a failure to reach the stream, and reports the
// outage once it has lasted Config.OutageLimit.
func (a *Applier) streamFailed(err error) {
	if rep := a.outage.Fail(err, time.Now()); rep != nil {
		a.log.Error().Msg(rep.Error())
	}
}

// streamAnswered ends an outage of the stream.
func (a *Applier) streamAnswered() {
	if d := a.outage.OK(time.Now()); d > 0 {
		a.log.Info().Str("stream", stream.StreamName(a.cfg.Name)).Int64("down_ms", d.Milliseconds()).Msg("stream reachable again: apply resumed")
	}
}

// Stats returns the Applier's live counters.
func (a *Applier) Stats() *Stats { return &a.stats }

// Run applies until ctx ends, reconnecting with backoff after errors that
// waiting can cure. It returns nil after a clean shutdown (complete
// transactions received so far committed and acknowledged), or the error
// that stopped it.
func (a *Applier) Run(ctx context.Context) (err error) {
	a.state = a.startState(ctx)
	// Recorded after the final flush, whatever ended Run: a fatal error
	// leaves its line in the target for pgjet status.
	defer func() { a.state.stop(err) }()
	if a.cfg.ProgressInterval > 0 {
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		go a.progress(pctx)
	}
	backoff := 500 * time.Millisecond
	isolations := 0
	for {
		started := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) || errors.Is(err, errReplayDone) {
			return nil
		}
		if ctx.Err() != nil && errors.Is(err, errShutdownTimeout) {
			// Nothing is lost: the position commits with the rows, so what
			// the target did not confirm is applied again on restart.
			a.log.Warn().Err(err).Float64("shutdown_timeout_s", a.cfg.ShutdownTimeout.Seconds()).
				Msg("apply stopped without a final commit: the target did not answer within --shutdown-timeout; unconfirmed transactions are applied again on restart")
			return nil
		}
		if err == nil {
			continue
		}
		if !retryable(err) {
			var tf *txnFailed
			if errors.As(err, &tf) && tf.lsn != a.isolate && isolations < maxIsolations {
				isolations++
				a.isolate = tf.lsn
				a.log.Warn().Err(err).Str("lsn", tf.lsn.String()).
					Msg("a transaction failed on the target: applying the transactions before it one at a time, so that the position stored stops right before it")
				continue
			}
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		if errors.Is(err, errNATS) {
			a.streamFailed(err)
		}
		a.state.retrying(err)
		a.log.Warn().Err(err).Int64("retry_in_ms", backoff.Milliseconds()).Msg("apply interrupted, retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, a.cfg.RetryMax)
	}
}

// maxIsolations bounds the sessions one Run starts again to stop right
// before a transaction that fails (see txnFailed).
const maxIsolations = 3

var errNATS = errors.New("nats")

// errShutdownTimeout ends the statements of a session whose shutdown
// outlasted Config.ShutdownTimeout.
var errShutdownTimeout = errors.New("the target did not answer within the shutdown timeout")

type natsError struct{ err error }

func (e natsError) Error() string   { return e.err.Error() }
func (e natsError) Unwrap() []error { return []error{e.err, errNATS} }

func retryable(err error) bool {
	if pgerr.IsFatal(err) {
		return false
	}
	return errors.Is(err, errNATS) || pgerr.IsRetryable(err)
}

// position is where the target stands in the source's stream.
type position struct {
	commit, end stream.LSN
	caughtUp    stream.LSN // source position reached (heartbeats included)
	seq         uint64
	time        time.Time
}

// session is one connection lifetime of an Applier.
type session struct {
	a       *Applier
	conn    *pgx.Conn
	pg      *pgconn.PgConn
	js      jetstream.JetStream
	pos     position // committed on the target
	plans   map[string]*plan
	tables  map[string]*target
	stmtN   int
	stmts   *stmtCache // the change statements prepared
	posStmt string

	lastSeq uint64
	// delivered is the consumer's delivery count of the last message seen:
	// a jump in it means deliveries were lost on the way (see handle).
	delivered uint64
	// lost is set when delivery numbers jumped since the last new message.
	lost   bool
	endSeq uint64 // StopAtEnd: the stream's last sequence at the start
	// snapSkip holds tables whose snapshot rows are newer than the
	// position: their changes before the LSN are in the rows already.
	snapSkip map[string]stream.LSN

	// open target transaction
	open      bool
	batch     *pgconn.Batch
	batchInfo []stmtInfo
	batchLen  int
	batchSize int
	groupTxns int
	groupSize int
	groupAt   time.Time
	groupPos  position
	groupMsg  jetstream.Msg // newest message whose ack covers the group
	multi     bool          // the group is one multi-chunk transaction
	// ddl is set when a source transaction of the group changed the
	// schema: the group commits after it, so later transactions see the
	// change committed (e.g. enum values added by ALTER TYPE).
	ddl      bool
	inflight *inflight // batch sent, results not yet read
	// lastDDL is the schema change replayed last (see continuedDDL).
	lastDDL *replayedDDL

	// the source transaction being read (multi-chunk)
	cur      bool
	skipping bool // cur is a transaction applied before
	curLSN   stream.LSN
	curNext  uint32
	curFirst uint64 // stream sequence of cur's first chunk
	// drop is the transaction being dead-lettered whole (see deadLetter);
	// cur is set meanwhile, so that no group commits in its middle.
	drop *dropped
	// skip is the transaction an operator asked to skip (pgjet skip),
	// nil when none; dlqReady is set once the dead-letter stream its
	// messages go to is known to exist.
	skip     *skipRequest
	dlqReady bool
	// snaps is the region's snapshot stream, once a resync needed it.
	snaps jetstream.Stream
	// src is the stream consumed (the source's, or the region's mirror):
	// dead-lettering a transaction reads its earlier chunks back from it.
	src jetstream.Stream
	// prevRels are the relations the previous chunk of cur described.
	prevRels []stream.Relation
	// held is the change of cur whose values travel in pieces, being put
	// back together from the piece chunks (see piece).
	held    *stream.Pieced
	lsnText []byte
	args    [][]byte

	// open runs (see batch.go)
	runs        map[*target]*run
	runOrder    []*run
	pendingRows int
	keyBuf      []byte
	// reorder is set when the session runs with session_replication_role
	// = replica: foreign keys do not fire, so runs of different tables
	// may be applied out of their interleaved order within a group.
	reorder bool

	// cx describes the session's replication origin and commit
	// timestamps to conflict statements; originStmt, prepared when the
	// session has an origin, stamps each target transaction with the
	// source's commit LSN and time.
	cx         *conflictEnv
	originStmt string
	// groupMax is the most source transactions in one target
	// transaction: 1 under last-writer-wins, so that every row version
	// carries its own source commit time.
	groupMax int
	// groupMaxNormal is groupMax outside an isolation (Applier.isolate).
	groupMaxNormal int
	// mayStop is set when a statement of the open group may decide that
	// a conflict stops the applier: the group's COMMIT waits for its
	// results. stopped holds that conflict once decided.
	mayStop bool
	stopped *stop
}

type stmtInfo struct {
	seq   uint64
	lsn   stream.LSN
	table string
	op    stream.Op
	logs  bool // the statement records conflicts in pgjet.conflicts
	// returns marks a policy statement: it returns the number of
	// conflicts and those that stop the applier (see policyStatement).
	returns bool
	// rows and lastLSN describe a run statement (several source rows).
	rows    int
	lastLSN stream.LSN
}

func (a *Applier) session(ctx context.Context) error {
	conn, err := connectTarget(ctx, a.cfg.DB)
	if err != nil {
		return pgerr.ClassifyConnect(a.cfg.DB, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := refusePromoted(ctx, conn, a.cfg.DB, a.cfg.Name); err != nil {
		return err
	}
	s := &session{a: a, conn: conn, pg: conn.PgConn(), plans: map[string]*plan{}, tables: map[string]*target{}, runs: map[*target]*run{},
		stmts: newStmtCache(a.cfg.StatementCache)}
	a.stats.Prepared.Store(0)
	// Pointed at the source, the target must stay as it is: the slot of
	// the default name is checked before anything is written, a slot
	// named in the stream's headers once the stream is read.
	if err := notSource(ctx, s.conn, nil, a.cfg.Name); err != nil {
		return err
	}
	if err := s.setup(ctx); err != nil {
		return err
	}
	a.state.setUp()

	nc, err := stream.Connect(a.cfg.NATS, "pgjet-apply "+a.cfg.Name+" "+a.cfg.Region, a.cfg.NATSOptions, a.log)
	if stream.IsPermanent(err) {
		return pgerr.Fatalf(nil, "%s", err.Error())
	}
	if err != nil {
		return natsError{err}
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, a.cfg.Domain)
	if err != nil {
		return natsError{err}
	}
	s.js = js
	changes, err := s.changeStream(ctx, js)
	if err != nil {
		return err
	}
	if err := notSource(ctx, s.conn, changes, a.cfg.Name); err != nil {
		return err
	}
	if a.cfg.OnBadMessage == OnBadMessageDeadLetter {
		if err := EnsureDeadLetters(ctx, js, a.cfg.Name, a.cfg.Region); err != nil {
			return natsError{err}
		}
	}
	s.src = changes
	restored, err := s.maybeRestore(ctx, js, changes)
	if err != nil {
		return err
	}
	if restored {
		return nil // a new session follows the changes from the restored position
	}
	if err := s.loadSnapshotTables(ctx); err != nil {
		return err
	}
	if err := s.loadSkip(ctx); err != nil {
		return err
	}
	if a.cfg.StopAtEnd {
		info, err := changes.Info(ctx)
		if err != nil {
			return natsError{fmt.Errorf("read stream %s: %w", stream.StreamName(a.cfg.Name), err)}
		}
		// The last message that still exists: a deleted one is never
		// delivered, and waiting for it would never end.
		s.endSeq = info.State.LastSeq
		for ; s.endSeq > s.pos.seq && s.endSeq >= info.State.FirstSeq; s.endSeq-- {
			_, err := changes.GetMsg(ctx, s.endSeq)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return natsError{fmt.Errorf("read stream %s sequence %d: %w", stream.StreamName(a.cfg.Name), s.endSeq, err)}
			}
		}
		if s.endSeq <= s.pos.seq {
			a.log.Info().Uint64("stream_seq", s.pos.seq).Msg("nothing to replay: the target is at the stream's end")
			return errReplayDone
		}
	}
	cons, err := s.consumer(ctx, changes)
	if err != nil {
		return err
	}
	stopRepairs, err := s.startRepairs(ctx, nc)
	if err != nil {
		return err
	}
	defer stopRepairs()
	// Bounded memory: the client buffers at most this many bytes.
	it, err := cons.Messages(jetstream.PullMaxBytes(32 << 20))
	if err != nil {
		return natsError{fmt.Errorf("consume %s: %w", stream.StreamName(a.cfg.Name), err)}
	}
	defer it.Stop()

	// Statements run under work, which outlives ctx by ShutdownTimeout: on
	// a shutdown the batch in flight and the final commit may finish, but
	// a target that stopped answering (packets dropped, no reset) cannot
	// hold the process for ever.
	work, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	stopWork := context.AfterFunc(ctx, func() {
		time.AfterFunc(a.cfg.ShutdownTimeout, func() { cancelWork(errShutdownTimeout) })
	})
	defer stopWork()

	msgs := make(chan jetstream.Msg, 64)
	fetchErr := make(chan error, 1)
	// The fetcher ends with the session, not only with ctx: after an error
	// nobody reads msgs, and a fetcher blocked on it would live (holding
	// the session) for as long as the process, one more per retry.
	fetchCtx, stopFetch := context.WithCancel(ctx)
	fetched := make(chan struct{})
	defer func() {
		stopFetch()
		it.Stop() // unblocks Next
		<-fetched
	}()
	go func() {
		defer close(fetched)
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					fetchErr <- err
				}
				return
			}
			select {
			case msgs <- m:
			case <-fetchCtx.Done():
				return
			}
		}
	}()
	a.log.Info().Str("lsn", s.pos.commit.String()).Uint64("stream_seq", s.pos.seq).
		Str("stream", stream.StreamName(a.cfg.Name)).Str("consumer", ConsumerName(a.cfg.Region)).
		Str("conflict", a.cfg.policies()).Bool("origin", s.cx.origin != 0).Msg("apply started")
	a.state.started()
	a.streamAnswered()

	err = s.loop(ctx, work, msgs, fetchErr)
	// Shutdown: commit what is complete, roll back a partial transaction.
	fctx, cancel := context.WithTimeoutCause(work, a.cfg.ShutdownTimeout, errShutdownTimeout)
	defer cancel()
	if s.open {
		if err == nil && !s.cur {
			if cerr := s.commit(fctx); cerr != nil {
				err = cerr
			}
		} else {
			s.rollback(fctx)
		}
	}
	if werr := s.wait(fctx); werr != nil && err == nil {
		err = werr
	}
	if s.stopped != nil {
		// The group was rolled back (the COMMIT of a group that may stop
		// waits for its statements): the conflict is recorded on its own.
		s.rollback(fctx)
		s.recordStop(fctx)
	}
	if err == nil {
		a.log.Info().Str("lsn", s.pos.commit.String()).Uint64("stream_seq", s.pos.seq).Msg("apply stopped, position flushed")
	}
	return err
}

func (s *session) setup(ctx context.Context) error {
	a := s.a
	// The origin first: pgjet's own tables and what a schema change event
	// trigger makes of them are then not published by a capture of this
	// database either.
	if err := s.setupOrigin(ctx); err != nil {
		return err
	}
	s.groupMax = a.cfg.GroupTxns
	if a.cfg.uses(PolicyLastWriterWins) {
		s.groupMax = 1
	}
	if err := migrate(ctx, s.conn, a.cfg.DB); err != nil {
		if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
			return pgerr.Fatalf(err, "the apply role may not create schema pgjet on %s; GRANT CREATE ON DATABASE to it (deploy/postgres/roles.sql)", redact.Postgres(a.cfg.DB))
		}
		return err
	}
	if a.cfg.SessionReplicationRole {
		if _, err := s.conn.Exec(ctx, "SET session_replication_role = replica"); err == nil {
			s.reorder = true
		} else {
			a.log.Warn().Err(err).Msg("cannot set session_replication_role = replica (needs superuser, or GRANT SET ON PARAMETER session_replication_role): triggers and foreign keys fire for replicated rows")
		}
	}
	if err := s.settings(ctx); err != nil {
		return err
	}
	if err := s.readPosition(ctx); err != nil {
		return err
	}
	s.groupMaxNormal = s.groupMax
	if iso := a.isolate; iso != 0 && s.pos.commit < iso {
		s.groupMax = 1
	}
	s.posStmt = "pgjet_pos"
	return s.prepareOwn(ctx)
}

// settings sets the session's own settings: at setup, and again after a
// replayed schema change reset them all (see cleanSession).
func (s *session) settings(ctx context.Context) error {
	// The simple and unnamed protocol: after a schema change, no
	// prepared statement is trusted (see cleanSession).
	if _, err := s.pg.ExecParams(ctx, "SELECT pg_catalog.set_config('synchronous_commit', $1, false)",
		[][]byte{[]byte(s.a.cfg.SynchronousCommit)}, nil, nil, nil).Close(); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	if s.reorder {
		if _, err := s.pg.Exec(ctx, "SET session_replication_role = replica").ReadAll(); err != nil {
			return fmt.Errorf("set session_replication_role: %w", err)
		}
	}
	// A statement_timeout of the target's database or role would cancel a
	// replicated statement that takes longer on every retry, for ever:
	// the source committed it, so it runs to its end, as under pg_restore.
	if _, err := s.pg.Exec(ctx, "SET statement_timeout = 0").ReadAll(); err != nil {
		return fmt.Errorf("set statement_timeout: %w", err)
	}
	return nil
}

// prepareOwn prepares the statements every group uses: the position
// update and, with a replication origin, its transaction setup.
func (s *session) prepareOwn(ctx context.Context) error {
	if _, err := s.pg.Prepare(ctx, s.posStmt, posSQL, nil); err != nil {
		return fmt.Errorf("prepare position update: %w", err)
	}
	if s.originStmt != "" {
		if _, err := s.pg.Prepare(ctx, s.originStmt, originSQL, nil); err != nil {
			return fmt.Errorf("prepare replication origin setup: %w", err)
		}
	}
	return nil
}

// posSQL records the applied position (prepared as session.posStmt).
const posSQL = `INSERT INTO pgjet.applied (source, commit_lsn, end_lsn, stream_seq, commit_time, applied_at, source_lsn)
		VALUES ($1, $2::pg_lsn, $3::pg_lsn, $4::bigint, $5::timestamptz, now(), $6::pg_lsn)
		ON CONFLICT (source) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, end_lsn = EXCLUDED.end_lsn,
			stream_seq = EXCLUDED.stream_seq, commit_time = EXCLUDED.commit_time, applied_at = EXCLUDED.applied_at,
			source_lsn = EXCLUDED.source_lsn`

// originSQL stamps a target transaction with its source's commit LSN and
// time (prepared as session.originStmt).
const originSQL = "SELECT pg_replication_origin_xact_setup($1::pg_lsn, coalesce($2::timestamptz, clock_timestamp()))"

// changeStream finds the source's change stream in this region: the
// stream itself, or with UpstreamDomain the local mirror, made if missing.
func (s *session) changeStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	a := s.a
	name := stream.StreamName(a.cfg.Name)
	var st jetstream.Stream
	var err error
	if a.cfg.UpstreamDomain != "" {
		lim := stream.MirrorLimits{MaxAge: a.cfg.MirrorMaxAge, MaxBytes: a.cfg.MirrorMaxBytes}
		st, err = stream.EnsureMirror(ctx, js, a.cfg.Name, a.cfg.UpstreamDomain, lim)
		if conflict := (*stream.MirrorConflictError)(nil); errors.As(err, &conflict) {
			// A mirror of the source's old home after a failover.
			if old, lerr := js.Stream(ctx, name); lerr == nil && old.CachedInfo().Config.Mirror != nil {
				if moved, rerr := s.repoint(ctx, js, old, a.cfg.UpstreamDomain); rerr != nil {
					return nil, rerr
				} else if moved {
					st, err = stream.EnsureMirror(ctx, js, a.cfg.Name, a.cfg.UpstreamDomain, lim)
				}
			}
		}
		if err != nil {
			return nil, mirrorError(err)
		}
		// A mirror made before, or with other flags, takes these limits.
		// Least-privilege users may not update it: then it keeps its own,
		// and the warning says how to change them.
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		changed, err := stream.UpdateMirrorLimits(uctx, js, st, lim)
		cancel()
		switch {
		case err != nil:
			a.log.Warn().Err(err).Msg("mirror keeps its limits: update them as a NATS admin (nats stream edit), or run pgjet-apply once as one")
		case changed:
			a.log.Info().Str("stream", name).Float64("max_age_s", lim.MaxAge.Seconds()).Int64("max_bytes", lim.MaxBytes).Msg("mirror limits updated")
		}
	} else {
		st, err = js.Stream(ctx, name)
		if stream.JetStreamMissing(js, err) {
			return nil, pgerr.Fatalf(err, "%s (%s)", stream.ErrNoJetStream, stream.RedactURL(a.cfg.NATS))
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, natsError{fmt.Errorf("stream %s not found in this domain (has pgjet-capture --name %s started? is --upstream-domain needed?)", name, a.cfg.Name)}
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, pgerr.Fatalf(err, "JetStream is not enabled on %s: start nats-server with -js", stream.RedactURL(a.cfg.NATS))
		}
		if err != nil {
			return nil, natsError{fmt.Errorf("look up stream %s: %w", name, err)}
		}
	}
	return st, nil
}

// mirrorError classifies an error of making a mirror: a stream in its way
// is a configuration error no retry cures (one line, exit 1); anything
// else is NATS trouble, retried.
func mirrorError(err error) error {
	var conflict *stream.MirrorConflictError
	if errors.As(err, &conflict) {
		return pgerr.Fatalf(err, "%s", conflict.Msg)
	}
	return natsError{err}
}

// readPosition loads the applied position stored in the target.
func (s *session) readPosition(ctx context.Context) error {
	a := s.a
	p, ok, err := applied.ReadSource(ctx, s.conn, a.cfg.Name)
	switch {
	case err != nil:
		return fmt.Errorf("read applied position: %w", err)
	case ok:
		s.pos.commit, s.pos.end, s.pos.caughtUp = p.CommitLSN, p.EndLSN, p.SourceLSN
		s.pos.seq = p.StreamSeq
		if p.CommitTime != nil {
			s.pos.time = *p.CommitTime
		}
	}
	s.lastSeq = s.pos.seq
	a.stats.AppliedLSN.Store(uint64(s.pos.commit))
	a.stats.SourceLSN.Store(uint64(s.pos.caughtUp))
	a.stats.StreamSeq.Store(s.pos.seq)
	return nil
}

// loadSnapshotTables reads the tables a resumed snapshot copied later than
// the applied position: their changes before that point are skipped.
func (s *session) loadSnapshotTables(ctx context.Context) error {
	s.snapSkip = nil
	rows, err := s.conn.Query(ctx, "SELECT schema_name, table_name, lsn::text FROM pgjet.snapshot_tables WHERE source = $1 AND lsn > $2::pg_lsn",
		s.a.cfg.Name, s.pos.commit.String())
	if err != nil {
		if pgerr.PgCode(err) == pgerr.CodeUndefinedTable { // no restore ever ran here
			return nil
		}
		return fmt.Errorf("read pgjet.snapshot_tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sch, name, lsn string
		if err := rows.Scan(&sch, &name, &lsn); err != nil {
			return fmt.Errorf("read pgjet.snapshot_tables: %w", err)
		}
		l, err := stream.ParseLSN(lsn)
		if err != nil {
			return err
		}
		if s.snapSkip == nil {
			s.snapSkip = map[string]stream.LSN{}
		}
		s.snapSkip[sch+"."+name] = l
	}
	return rows.Err()
}

// consumer (re)creates the region's durable consumer to start right after
// the position committed in the target: the target, not the consumer's
// ack state, is the truth about what was applied.
func (s *session) consumer(ctx context.Context, st jetstream.Stream) (jetstream.Consumer, error) {
	a := s.a
	cname := ConsumerName(a.cfg.Region)
	if err := st.DeleteConsumer(ctx, cname); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, natsError{fmt.Errorf("reset consumer %s: %w", cname, err)}
	}
	cc := jetstream.ConsumerConfig{
		Durable:       cname,
		Description:   "pgjet-apply of source " + a.cfg.Name + " into region " + a.cfg.Region,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       5 * time.Minute,
		MaxAckPending: 1 << 20,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if s.pos.seq > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = s.pos.seq + 1
	}
	c, err := st.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		return nil, natsError{fmt.Errorf("create consumer %s: %w", cname, err)}
	}
	return c, nil
}

// groupGrace is how long a young group waits for more transactions when
// none is at hand.
const groupGrace = 5 * time.Millisecond

// loop applies messages until stop ends or an error; statements run under
// work.
func (s *session) loop(stop, ctx context.Context, msgs <-chan jetstream.Msg, fetchErr <-chan error) error {
	probe := time.NewTicker(outageProbe)
	defer probe.Stop()
	for {
		var m jetstream.Msg
		var ok bool
		select {
		case m, ok = <-msgs:
		default:
			// Nothing waiting: commit the open group now rather than hold
			// rows back. Under load groups fill up instead. A young group
			// gets a few milliseconds' grace: a backlog's next fetch is
			// usually on its way, and each commit costs a round trip.
			if s.open && (!s.cur || s.drop != nil) {
				if grace := groupGrace - time.Since(s.groupAt); grace > 0 {
					select {
					case m, ok = <-msgs:
						goto got
					case <-time.After(grace):
					}
				}
				if err := s.commit(ctx); err != nil {
					return err
				}
			}
			if !s.open {
				// Idle: confirm the commit in flight now, so its ack and
				// position do not wait for the next message.
				if err := s.wait(ctx); err != nil {
					return err
				}
			}
			var timeout <-chan time.Time
			if s.open {
				timeout = time.After(s.a.cfg.GroupDelay)
			}
			select {
			case m, ok = <-msgs:
			case <-timeout:
				continue
			case <-probe.C:
				// Idle: a stream that lost its leader delivers nothing and
				// reports no error, which looks like a quiet source.
				s.probe(ctx)
				continue
			case err := <-fetchErr:
				return natsError{fmt.Errorf("consume %s: %w", stream.StreamName(s.a.cfg.Name), err)}
			case <-stop.Done():
				return nil
			}
		}
	got:
		if !ok {
			select {
			case err := <-fetchErr:
				return natsError{fmt.Errorf("consume %s: %w", stream.StreamName(s.a.cfg.Name), err)}
			default:
				return nil
			}
		}
		if err := s.handle(ctx, m); err != nil {
			return err
		}
		if s.endSeq > 0 && s.lastSeq >= s.endSeq {
			if s.cur && s.drop == nil {
				// The stream ends inside a transaction (capture died while
				// publishing it): the replica stops at the one before.
				s.a.log.Warn().Uint64("stream_seq", s.lastSeq).Str("lsn", s.curLSN.String()).
					Msg("the stream ends inside a transaction cut short; it is left out and the replay ends at the transaction before it")
				s.rollback(ctx)
				s.cur, s.skipping = false, false
			}
			if s.drop != nil {
				s.endDrop()
			}
			s.a.log.Info().Uint64("stream_seq", s.lastSeq).Msg("replay reached the stream's end as it was at the start")
			return s.stopHere(ctx, 0)
		}
		// A dead-lettered transaction leaves s.cur set until the next one
		// begins; the complete transactions grouped before it need not wait.
		if s.open && (!s.cur || s.drop != nil) && (s.groupTxns >= s.groupMax || s.groupSize >= s.a.cfg.GroupBytes ||
			time.Since(s.groupAt) >= s.a.cfg.GroupDelay || s.multi || s.ddl) {
			if err := s.commit(ctx); err != nil {
				return err
			}
		}
	}
}

// outageProbe is how often an idle applier checks that its stream answers.
const outageProbe = 5 * time.Second

// probe checks that the stream has a leader (stream.Probe), recording
// whether it answered.
func (s *session) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, outageProbe)
	defer cancel()
	if err := stream.Probe(pctx, s.src, s.a.cfg.Name); err != nil {
		if ctx.Err() == nil {
			s.a.streamFailed(err)
		}
		return
	}
	s.a.streamAnswered()
}

// chained reports whether message m follows, in capture's chain
// (stream.HeaderPrev), the source's last message at or before the
// session's last sequence: the sequences between then hold no message of
// the source. The messages the session passed last may be strangers'
// (set aside by --on-bad-message dead-letter), which capture's chain runs
// past, so the search goes back over them to the source's own message.
// Messages written before the chain existed never count as chained.
func (s *session) chained(ctx context.Context, m jetstream.Msg) (bool, error) {
	prev := m.Headers().Get(stream.HeaderPrev)
	if prev == "" {
		return false, nil
	}
	for seq := s.lastSeq; seq > 0 && s.lastSeq-seq < maxChainBack; seq-- {
		last, err := s.src.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, natsError{fmt.Errorf("read stream %s sequence %d back: %w", stream.StreamName(s.a.cfg.Name), seq, err)}
		}
		if last.Header.Get(jetstream.MsgIDHeader) == prev {
			return true, nil
		}
		// The source's own message, and not the one m names: one of the
		// source's messages after it is missing.
		if envs, err := stream.DecodeMessage(last.Data); err == nil && envs[len(envs)-1].Source == s.a.cfg.Name {
			return false, nil
		}
	}
	return false, nil
}

// maxChainBack bounds how far back chained looks for the source's last
// message: more strangers' messages than that in a row are no stray.
const maxChainBack = 100

func (s *session) handle(ctx context.Context, m jetstream.Msg) error {
	a := s.a
	md, err := m.Metadata()
	if err != nil {
		return natsError{fmt.Errorf("read message metadata: %w", err)}
	}
	seq := md.Sequence.Stream
	// A jump seen on a redelivery (after AckWait) still counts for the
	// next new message: that one comes after the deliveries lost.
	s.lost = s.lost || s.delivered != 0 && md.Sequence.Consumer > s.delivered+1
	s.delivered = md.Sequence.Consumer
	if seq <= s.lastSeq {
		return nil // redelivered: already seen in this session
	}
	lostDeliveries := s.lost
	s.lost = false
	if s.lastSeq != 0 && seq != s.lastSeq+1 && lostDeliveries {
		// The consumer delivered messages this session never received: a
		// NATS server died or the link dropped with them in flight. The
		// stream still holds them, and the consumer would only send them
		// again after AckWait: consume again from what the target applied.
		return natsError{fmt.Errorf("stream %s: deliveries after sequence %d were lost on the way (NATS connection dropped); consuming again from the applied position",
			stream.StreamName(a.cfg.Name), s.lastSeq)}
	}
	if s.lastSeq != 0 && seq != s.lastSeq+1 {
		whole, err := s.chained(ctx, m)
		if err != nil {
			return err
		}
		if !whole {
			return pgerr.Fatalf(nil, "stream %s jumps from sequence %d to %d: messages this region needs are gone (retention expired or purged); rebuild this target from a newer snapshot",
				stream.StreamName(a.cfg.Name), s.lastSeq, seq)
		}
		a.log.Warn().Uint64("stream_seq", seq).Uint64("after", s.lastSeq).
			Msg("stream sequence skips numbers that hold no message (proposals a NATS cluster dropped in a leader change); the chain of capture's messages is whole")
	}
	s.lastSeq = seq
	envs, bad := s.decode(m, seq)
	if bad != nil {
		if a.cfg.OnBadMessage == OnBadMessageDeadLetter {
			return s.deadLetter(ctx, m, seq, bad)
		}
		return bad
	}
	for _, env := range envs {
		// Groups commit only between messages (see loop), so a batch
		// message is applied whole or not at all, and the stored stream
		// sequence always means "this message and all before it".
		if err := s.handleEnvelope(ctx, m, seq, env); err != nil {
			return err
		}
		if (s.ddl || s.groupTxns >= s.groupMax && s.groupMax == 1) && s.open && !s.cur && env != envs[len(envs)-1] {
			// A schema change must be committed before the transactions
			// after it (an enum value added cannot be used in the same
			// transaction); under last-writer-wins every source transaction
			// commits alone, stamped with its own commit time. Committing
			// inside a batch message records the sequence before it: a
			// restart consumes the message again and skips, by commit LSN,
			// what was applied of it.
			s.groupPos.seq = seq - 1
			s.groupMsg = nil
			if err := s.commit(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// stopHere commits what is applied and ends the session with
// errReplayDone. seq is the message being read, applied only in part (0:
// none): the stored position stays before it.
func (s *session) stopHere(ctx context.Context, seq uint64) error {
	if s.open {
		if seq > 0 && s.groupPos.seq >= seq {
			s.groupPos.seq = seq - 1
			s.groupMsg = nil
		}
		if err := s.commit(ctx); err != nil {
			return err
		}
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	return errReplayDone
}

// decode decodes message m (stream sequence seq). A message that cannot
// be decoded or belongs to another source is a FatalError, checked before
// any of its envelopes is applied so that it can be set aside whole.
func (s *session) decode(m jetstream.Msg, seq uint64) ([]*stream.Envelope, error) {
	name := stream.StreamName(s.a.cfg.Name)
	envs, err := stream.DecodeMessage(m.Data())
	if err != nil {
		return nil, pgerr.Fatalf(err, "message at stream %s sequence %d (subject %s) cannot be decoded; inspect it with `pgjet tail`, then remove it, rebuild this target or run with --on-bad-message dead-letter",
			name, seq, m.Subject())
	}
	for _, env := range envs {
		if env.Source != s.a.cfg.Name {
			return nil, pgerr.Fatalf(nil, "message at stream %s sequence %d belongs to source %q, not %q; the stream is shared by another capture",
				name, seq, env.Source, s.a.cfg.Name)
		}
	}
	return envs, nil
}

// advance moves the group's position to message m (stream sequence seq),
// which changes no rows: a heartbeat, or a message set aside. The next
// commit records it, so a restart resumes after it.
func (s *session) advance(ctx context.Context, m jetstream.Msg, seq uint64) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if s.groupPos.commit == s.pos.commit {
		s.groupPos = s.pos
	}
	s.groupPos.seq = seq
	s.groupMsg = m
	return nil
}

// passOver lets the last message of a transaction applied before go:
// with the open target transaction, or acknowledged now.
func (s *session) passOver(m jetstream.Msg) {
	if s.open {
		s.groupMsg = m
	} else {
		_ = m.Ack()
	}
}

// handleEnvelope applies one envelope of message m (stream sequence seq).
func (s *session) handleEnvelope(ctx context.Context, m jetstream.Msg, seq uint64, env *stream.Envelope) error {
	a := s.a
	if s.drop != nil {
		if env.Kind == stream.KindTxn && !env.First() && env.CommitLSN == s.drop.lsn {
			if s.drop.skip {
				return s.skipMsg(ctx, m, seq, env)
			}
			return s.dropMsg(ctx, m, seq, nil)
		}
		s.endDrop()
	}
	if g, ok, err := stream.GenerationOf(env); ok {
		if err != nil {
			return pgerr.Fatalf(err, "stream %s sequence %d: %v; the source's new generation cannot be followed: upgrade pgjet-apply, or rebuild this target from a snapshot",
				stream.StreamName(a.cfg.Name), seq, err)
		}
		return s.generation(ctx, m, seq, env, g)
	}
	if env.Kind == stream.KindHeartbeat || env.Kind == stream.KindMessage {
		if s.cur {
			return nil
		}
		if a.cfg.UntilLSN > 0 && env.CommitLSN > a.cfg.UntilLSN {
			// The target holds the source as it was at the point, not
			// as it was at this heartbeat: it must not say it caught up
			// to it.
			a.log.Info().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).
				Msg("replay reached its point: stopping before this heartbeat")
			return s.stopHere(ctx, seq)
		}
		if err := s.advance(ctx, m, seq); err != nil {
			return err
		}
		if !a.cfg.UntilTime.IsZero() {
			// A heartbeat's time is when capture read it, by its own
			// clock, not a source commit time: it cannot tell on which
			// side of the point it lies, so it moves no caught-up
			// position. Transactions decide where the replay stops.
			return nil
		}
		if env.Kind == stream.KindHeartbeat {
			a.stats.SourceTime.Store(env.CommitTime.UnixNano())
		}
		// Everything before it is applied: the target has caught up to
		// this point of the source, which the position records (so verify
		// and status can tell an idle source from a stalled applier).
		s.groupPos.caughtUp = max(s.groupPos.caughtUp, env.EndLSN)
		return nil
	}

	if env.First() && a.cfg.pastPoint(env) && !s.cur {
		a.log.Info().Str("lsn", env.CommitLSN.String()).Time("commit_time", env.CommitTime).Uint64("stream_seq", seq).
			Msg("replay reached its point: stopping before this transaction")
		return s.stopHere(ctx, seq)
	}
	if env.First() {
		if s.cur && s.skipping {
			// A transaction applied before restarted: nothing of it was
			// written, and the open target transaction holds others.
			s.cur, s.skipping = false, false
		} else if s.cur {
			// The capture re-sent this transaction from its start after a
			// crash: what was applied of it so far is discarded.
			a.log.Warn().Str("lsn", s.curLSN.String()).Uint64("stream_seq", seq).Msg("transaction restarted from its first chunk")
			s.rollback(ctx)
			s.cur = false
		}
		if env.CommitLSN <= s.pos.commit || (s.open && env.CommitLSN <= s.groupPos.commit) {
			// Applied before (a duplicate after a capture restart).
			if env.Last() {
				s.passOver(m)
				return nil
			}
			s.cur, s.curLSN, s.curNext = true, env.CommitLSN, 1
			s.skipping = true
			return nil
		}
		s.skipping = false
		if s.skip != nil {
			// Exactly the transaction of the requested commit LSN is
			// skipped; one committed after it means it was never there.
			switch {
			case env.CommitLSN == s.skip.lsn:
				return s.startSkip(ctx, m, seq, env)
			case env.CommitLSN > s.skip.lsn:
				if err := s.skipMissed(ctx, env, seq); err != nil {
					return err
				}
			}
		}
		if !env.Last() {
			// A multi-chunk transaction gets a target transaction of its
			// own, so a restart of it never discards other transactions.
			if s.open {
				if err := s.commit(ctx); err != nil {
					return err
				}
			}
			s.multi = true
			s.cur, s.curLSN, s.curNext, s.curFirst = true, env.CommitLSN, 1, seq
		}
	} else {
		if !s.cur && (env.CommitLSN <= s.pos.commit || (s.open && env.CommitLSN <= s.groupPos.commit)) {
			// The rest of a transaction applied before, or in the snapshot
			// the target was built from, whose start the position lies
			// past: a capture behind the source was publishing it when
			// the snapshot's point was taken.
			if env.Last() {
				s.passOver(m)
				return nil
			}
			s.cur, s.curLSN, s.curNext = true, env.CommitLSN, env.Chunk+1
			s.skipping = true
			return nil
		}
		if !s.cur || env.CommitLSN != s.curLSN || env.Chunk != s.curNext {
			return s.orphanChunk(ctx, m, seq, env)
		}
		s.curNext++
		if s.skipping {
			if env.Last() {
				s.cur, s.skipping = false, false
				s.passOver(m)
			}
			return nil
		}
	}

	if err := s.begin(ctx); err != nil {
		return err
	}
	if env.IsPiece() {
		if err := s.piece(ctx, env, seq); err != nil {
			return err
		}
	} else {
		if s.held != nil {
			return pgerr.Fatalf(nil, "stream %s sequence %d holds chunk %d of transaction %s where a piece of a value was due (%d bytes of it missing); the stream is damaged: rebuild this target from a snapshot",
				stream.StreamName(a.cfg.Name), seq, env.Chunk, env.CommitLSN, s.held.Missing())
		}
		if err := s.changes(ctx, env, seq); err != nil {
			return err
		}
		s.prevRels = env.Relations
	}
	s.groupSize += len(m.Data())
	if env.Last() {
		s.cur = false
		s.prevRels = nil
		s.groupTxns++
		s.groupPos = position{commit: env.CommitLSN, end: env.EndLSN, seq: seq, time: env.CommitTime, caughtUp: env.EndLSN}
		s.groupMsg = m
	} else if s.batchLen > 0 {
		// Bounded memory: a large transaction's rows go to the target as
		// they arrive, not when it ends.
		return s.flush(ctx)
	}
	return nil
}

// progress logs what was applied since the last report.
func (a *Applier) progress(ctx context.Context) {
	t := time.NewTicker(a.cfg.ProgressInterval)
	defer t.Stop()
	var txns, changes int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		nt, nc := a.stats.Txns.Load(), a.stats.Changes.Load()
		secs := a.cfg.ProgressInterval.Seconds()
		a.log.Info().Str("lsn", stream.LSN(a.stats.AppliedLSN.Load()).String()).Uint64("stream_seq", a.stats.StreamSeq.Load()).
			Float64("lag_seconds", a.stats.Lag().Seconds()).Float64("txns_per_sec", float64(nt-txns)/secs).
			Float64("changes_per_sec", float64(nc-changes)/secs).Int64("conflicts", a.stats.Conflicts.Load()).Msg("progress")
		txns, changes = nt, nc
	}
}
