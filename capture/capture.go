package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// HeartbeatPrefix is the logical message prefix of pgjet heartbeats.
const HeartbeatPrefix = "pgjet.heartbeat"

// Capture streams one source database into its JetStream stream.
type Capture struct {
	cfg Config
	log zerolog.Logger

	stats     Stats
	snapStats SnapshotStats
	// slotReady is closed once the change stream's slot exists: snapshots
	// are taken after it, so no change falls between the two.
	slotReady chan struct{}
	slotOnce  sync.Once
	outage    *stream.Outage
	// made is what capture created on the source since it last streamed:
	// removed when it stops for good before streaming (undoStart).
	made made
	// pubs are the publications the session streams from: capture's, and
	// its publication of inserts only when there is one. Set by preflight.
	pubs []string
}

// Stats are counters a Capture keeps while it runs; safe for concurrent reads.
type Stats struct {
	Txns      atomic.Int64
	Changes   atomic.Int64
	Messages  atomic.Int64
	Bytes     atomic.Int64
	Confirmed atomic.Uint64 // slot position reported to Postgres
}

// New returns a Capture for cfg, which must have passed Validate. It does
// no I/O.
func New(cfg Config, log zerolog.Logger) *Capture {
	return &Capture{cfg: cfg, log: log.With().Str("component", "capture").Str("source", cfg.Name).Logger(), slotReady: make(chan struct{}),
		outage: stream.NewOutage(stream.StreamName(cfg.Name), cfg.OutageLimit)}
}

// Outage returns why the stream has been unreachable for longer than
// Config.OutageLimit, or nil.
func (c *Capture) Outage() error { return c.outage.Err() }

// Stats returns the Capture's live counters.
func (c *Capture) Stats() *Stats { return &c.stats }

// SnapshotStats returns the live counters of the snapshot being taken.
func (c *Capture) SnapshotStats() *SnapshotStats { return &c.snapStats }

// Run captures until ctx ends, reconnecting with backoff after errors that
// waiting can cure. It returns nil after a clean shutdown on ctx's end
// (in-flight messages acknowledged and the slot position flushed), or the
// FatalError that stopped it.
func (c *Capture) Run(ctx context.Context) error {
	if c.cfg.ProgressInterval > 0 {
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		go c.progress(pctx)
	}
	if cfg := c.cfg; cfg.SnapshotEvery > 0 && cfg.SnapshotKeep > 0 && cfg.Stream.MaxAge > 0 &&
		cfg.SnapshotEvery*time.Duration(cfg.SnapshotKeep) > cfg.Stream.MaxAge {
		c.log.Warn().Float64("snapshot_every_s", cfg.SnapshotEvery.Seconds()).Int("snapshot_keep", cfg.SnapshotKeep).Float64("stream_max_age_s", cfg.Stream.MaxAge.Seconds()).
			Msg("the change stream keeps less than the oldest kept snapshot needs: replay from it will stop at the gap; raise --stream-max-age or lower --snapshot-every x --snapshot-keep")
	}
	// A snapshot that cannot be taken (pg_dump missing, say) stops the
	// capture: the user asked for it, and appliers of empty databases wait
	// for it.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	snapErr := make(chan error, 1)
	if c.cfg.Snapshot || c.cfg.SnapshotEvery > 0 {
		go func() {
			if err := c.snapshots(runCtx); err != nil {
				snapErr <- err
				cancelRun()
			}
		}()
	}
	backoff := 500 * time.Millisecond
	for {
		started := time.Now()
		err := c.session(runCtx)
		if ctx.Err() != nil {
			return nil
		}
		if runCtx.Err() != nil {
			return <-snapErr
		}
		if err == nil {
			continue
		}
		if pgerr.IsFatal(err) || !pgerr.IsRetryable(err) && !isNATSRetryable(err) {
			c.undoStart(ctx)
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		if isNATSRetryable(err) {
			c.streamFailed(err)
		}
		c.log.Warn().Err(err).Int64("retry_in_ms", backoff.Milliseconds()).Msg("capture interrupted, retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-runCtx.Done():
			return <-snapErr
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, c.cfg.RetryMax)
	}
}

// snapshots takes the initial snapshot when the snapshot stream holds
// none (or finishes an interrupted one), then one every SnapshotEvery.
// Errors that waiting can cure are retried; a fatal one is returned.
func (c *Capture) snapshots(ctx context.Context) error {
	select {
	case <-c.slotReady:
	case <-ctx.Done():
		return nil
	}
	nc, err := stream.Connect(c.cfg.NATS, "pgjet-capture snapshot "+c.cfg.Name, c.cfg.NATSOptions, c.log)
	if err != nil {
		if stream.IsPermanent(err) {
			return pgerr.Fatalf(nil, "%s", err.Error())
		}
		// The session reports NATS trouble; retry with it.
		for err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
			nc, err = stream.Connect(c.cfg.NATS, "pgjet-capture snapshot "+c.cfg.Name, c.cfg.NATSOptions, c.log)
		}
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		return pgerr.Fatalf(err, "JetStream: %v", err)
	}
	take := func() error {
		backoff := time.Second
		for {
			_, err := c.TakeSnapshot(ctx, js)
			if err == nil || ctx.Err() != nil {
				return nil
			}
			if pgerr.IsFatal(err) {
				return err
			}
			c.log.Warn().Err(err).Int64("retry_in_ms", backoff.Milliseconds()).Msg("snapshot interrupted, resuming")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, c.cfg.RetryMax)
		}
	}
	if c.cfg.Snapshot {
		need, err := c.needSnapshot(ctx, js)
		for err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("look up snapshots")
			time.Sleep(2 * time.Second)
			need, err = c.needSnapshot(ctx, js)
		}
		if need {
			if err := take(); err != nil {
				return err
			}
		}
	}
	if c.cfg.SnapshotEvery <= 0 {
		return nil
	}
	t := time.NewTicker(c.cfg.SnapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := take(); err != nil {
			return err
		}
	}
}

// needSnapshot reports whether the snapshot stream lacks a complete
// snapshot or holds an interrupted one.
func (c *Capture) needSnapshot(ctx context.Context, js jetstream.JetStream) (bool, error) {
	// The session made the stream before the slot was ready.
	st, err := js.Stream(ctx, stream.SnapshotStreamName(c.cfg.Name))
	if err != nil {
		return false, err
	}
	snaps, err := stream.ListSnapshots(ctx, st, c.cfg.Name)
	if err != nil {
		return false, err
	}
	return len(snaps) == 0 || !snaps[len(snaps)-1].Complete, nil
}

func isNATSRetryable(err error) bool {
	return errors.Is(err, errNATS)
}

var errNATS = errors.New("nats")

type natsError struct{ err error }

func (e natsError) Error() string   { return e.err.Error() }
func (e natsError) Unwrap() []error { return []error{e.err, errNATS} }
func wrapNATS(err error) error      { return natsError{err} }
func (c *Capture) where() string    { return redact.Postgres(c.cfg.DB) }
func quoteLiteral(s string) string  { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
func quoteIdent(s string) string    { return pgx.Identifier{s}.Sanitize() }
func qualified(schemaName, name string) string {
	return pgx.Identifier{schemaName, name}.Sanitize()
}

// maxPayload is the largest message capture may publish: the NATS
// server's max_payload, or --max-message-bytes when smaller.
func (c *Capture) maxPayload(nc *nats.Conn) int {
	mp := int(nc.MaxPayload())
	if c.cfg.MaxMessageBytes > 0 && (mp <= 0 || c.cfg.MaxMessageBytes < mp) {
		mp = c.cfg.MaxMessageBytes
	}
	return mp
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// session runs one connection lifetime: checks, slot, stream, replication.
func (c *Capture) session(ctx context.Context) error {
	pool, err := c.connectPool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := c.preflight(ctx, pool); err != nil {
		return err
	}

	nc, err := stream.Connect(c.cfg.NATS, "pgjet-capture "+c.cfg.Name, c.cfg.NATSOptions, c.log)
	if stream.IsPermanent(err) {
		return pgerr.Fatalf(nil, "%s", err.Error())
	}
	if err != nil {
		return wrapNATS(err)
	}
	defer nc.Close()
	// Acks are awaited in order by the Publisher, with its own timeout.
	js, err := stream.NewJetStream(nc, "", jetstream.WithPublishAsyncMaxPending(c.cfg.Window+16))
	if err != nil {
		return wrapNATS(err)
	}
	if c.cfg.Snapshot {
		// Before the change stream: an applier that finds a snapshot
		// stream waits for its snapshot rather than start without one.
		if _, err := stream.EnsureSnapshotStream(ctx, js, c.cfg.Name, c.cfg.Stream.Replicas); err != nil && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !stream.JetStreamMissing(js, err) {
			if errors.Is(err, stream.ErrStreamRetired) {
				return c.retiredError(err)
			}
			return wrapNATS(err)
		}
	}
	st, err := stream.EnsureStream(ctx, js, c.cfg.Name, c.cfg.Stream)
	if stream.JetStreamMissing(js, err) {
		return pgerr.Fatalf(err, "%s (%s)", stream.ErrNoJetStream, stream.ConnectedURL(nc))
	}
	if errors.Is(err, stream.ErrStreamRetired) {
		return c.retiredError(err)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return pgerr.Fatalf(err, "JetStream is not enabled on %s: start nats-server with -js (or jetstream {} in its config)", stream.ConnectedURL(nc))
		}
		return wrapNATS(err)
	}
	tail, err := streamTail(ctx, st, c.cfg.Name)
	if err != nil {
		if pgerr.IsFatal(err) {
			return err
		}
		return wrapNATS(err)
	}
	if tail.foreign > 0 {
		c.log.Warn().Int("messages", tail.foreign).Str("stream", stream.StreamName(c.cfg.Name)).
			Msg("the stream ends with messages that are not pgjet's (published into its subjects by another client): capture goes on after them; appliers stop on them unless run with --on-bad-message dead-letter")
	}

	repl, err := connectReplication(ctx, c.cfg.DB, "pgjet-capture")
	if err != nil {
		return pgerr.ClassifyConnect(c.cfg.DB, err)
	}
	defer repl.Close(context.WithoutCancel(ctx))

	src, err := identify(ctx, repl)
	if err != nil {
		return err
	}
	if err := c.checkGeneration(ctx, st, src); err != nil {
		return err
	}
	if err := c.checkSource(ctx, repl, src, tail); err != nil {
		return err
	}
	if err := c.checkSlotAfterFailover(ctx, pool, src, tail); err != nil {
		return err
	}
	start, err := c.ensureSlot(ctx, pool, repl, tail)
	if err != nil {
		return err
	}
	c.slotOnce.Do(func() { close(c.slotReady) })

	session := randomHex(4)
	pub := stream.NewPublisher(js, stream.PublisherOptions{
		Window: c.cfg.Window, WindowBytes: c.cfg.WindowBytes, LastMsgID: tail.lastID, PrevMsgID: tail.prevID, LastSeq: tail.lastSeq, Start: start,
		Header: nats.Header{stream.HeaderSystem: {src.system}, stream.HeaderTimeline: {strconv.Itoa(int(src.timeline))},
			stream.HeaderDatabase: {src.database}, stream.HeaderSlot: {c.cfg.Slot}},
		BySequence: st.CachedInfo().Config.Replicas > 1,
	})
	c.observe(pub)
	defer c.observe(nil)
	c.log.Info().Str("slot", c.cfg.Slot).Str("publication", c.cfg.Publication).
		Str("lsn", start.String()).Str("stream", stream.StreamName(c.cfg.Name)).
		Str("resume_after", tail.skipBelow.String()).Str("session", session).Msg("capture started")
	c.made.streaming()
	c.streamAnswered()

	err = pglogrepl.StartReplication(ctx, repl, c.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(publicationNames(c.pubs)), "messages 'true'"},
	})
	if err != nil {
		if pgerr.PgCode(err) == pgerr.CodeObjectInUse {
			return fmt.Errorf("slot %q is in use by another process (another pgjet-capture?): %w", c.cfg.Slot, err)
		}
		return fmt.Errorf("start replication on slot %q: %w", c.cfg.Slot, err)
	}

	// The publisher's ack loop outlives the read loop so that, on
	// shutdown, in-flight messages are acknowledged and the final
	// position flushed before the connection closes.
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pubCtx) }()

	g, gctx := errgroup.WithContext(ctx)
	r := &reader{c: c, pool: pool, repl: repl, pub: pub, skipBelow: tail.skipBelow, session: session, tailPos: tail.pos, rels: map[uint32]*stream.Relation{}, maxPayload: c.maxPayload(nc),
		filter: newFilter(&c.cfg), dropped: map[uint32]bool{}, masks: map[uint32][]int{}}
	g.Go(func() error { return r.run(gctx) })
	g.Go(func() error { c.probe(gctx, st); return nil })
	g.Go(func() error { c.retireOldHome(gctx, nc, st); return nil })
	g.Go(func() error { return c.serveRepairs(gctx, nc, pool) })
	if c.cfg.HeartbeatInterval > 0 {
		g.Go(func() error { return c.heartbeats(gctx, pool) })
	}
	g.Go(func() error {
		select {
		case err := <-pubDone:
			if err == nil || errors.Is(err, context.Canceled) {
				return nil
			}
			return wrapNATS(err)
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()

	// Final flush: wait for acks, then report the position.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if derr := pub.Drain(flushCtx); derr != nil && err == nil && ctx.Err() == nil {
		err = wrapNATS(derr)
	}
	acked := pub.Acked()
	if serr := r.sendStatus(flushCtx, false); serr == nil {
		c.log.Info().Str("lsn", acked.String()).Msg("confirmed position flushed")
	}
	stopPub()
	return err
}

// streamFailed records a failure to reach the stream, and reports the
// outage once it has lasted Config.OutageLimit.
func (c *Capture) streamFailed(err error) {
	if rep := c.outage.Fail(err, time.Now()); rep != nil {
		c.log.Error().Msg(rep.Error())
	}
}

// streamAnswered ends an outage of the stream.
func (c *Capture) streamAnswered() {
	if d := c.outage.OK(time.Now()); d > 0 {
		c.log.Info().Str("stream", stream.StreamName(c.cfg.Name)).Int64("down_ms", d.Milliseconds()).Msg("stream reachable again: capture resumed")
	}
}

// outageProbe is how often a capture session checks that its stream
// answers.
const outageProbe = 5 * time.Second

// probe checks every outageProbe, until ctx ends, that the stream has a
// leader (stream.Probe), recording whether it answered. Without it a capture with nothing to
// publish (an idle source, --heartbeat 0) never notices a stream that
// lost its leader, and a publishing one only at its ack timeout.
func (c *Capture) probe(ctx context.Context, st jetstream.Stream) {
	t := time.NewTicker(outageProbe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, outageProbe)
		err := stream.Probe(pctx, st, c.cfg.Name)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.streamFailed(err)
		default:
			c.streamAnswered()
		}
	}
}

// connectReplication opens a replication connection named app in
// pg_stat_replication, unless the URL names it.
func connectReplication(ctx context.Context, db, app string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(replicationURL(db))
	if err != nil {
		return nil, err
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = app
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

func replicationURL(db string) string {
	if strings.Contains(db, "://") {
		if strings.Contains(db, "?") {
			return db + "&replication=database"
		}
		return db + "?replication=database"
	}
	return db + " replication=database"
}

func (c *Capture) connectPool(ctx context.Context) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(c.cfg.DB)
	if err != nil {
		return nil, pgerr.ClassifyConnect(c.cfg.DB, err)
	}
	pcfg.MaxConns = 3
	pcfg.ConnConfig.RuntimeParams["application_name"] = "pgjet-capture"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, pgerr.ClassifyConnect(c.cfg.DB, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, pgerr.ClassifyConnect(c.cfg.DB, err)
	}
	return pool, nil
}

// preflight checks what the user must fix before replication can work,
// creates the publication when missing (ensurePublication), and records
// the publications to stream from in c.pubs.
func (c *Capture) preflight(ctx context.Context, pool *pgxpool.Pool) error {
	if err := checkWALLevel(ctx, pool, c.where()); err != nil {
		return err
	}
	role, err := checkReplication(ctx, pool, c.where())
	if err != nil {
		return err
	}
	if err := c.guardOwnSchema(ctx, pool); err != nil {
		return err
	}
	// Event triggers come before the publication so that no schema change
	// made after capture started is missed.
	if err := c.ensureDDLCapture(ctx, pool); err != nil {
		return err
	}
	pubs, err := c.ensurePublication(ctx, pool, role)
	if err != nil {
		return err
	}
	c.pubs = pubs
	return nil
}

// publicationNames renders pubs for pgoutput's publication_names: a list
// of identifiers (InsertsPublication's name needs its quotes).
func publicationNames(pubs []string) string {
	q := make([]string, len(pubs))
	for i, p := range pubs {
		q[i] = quoteIdent(p)
	}
	return strings.Join(q, ",")
}

// queryRower is what the checks need of a pool or a connection.
type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// checkWALLevel returns a FatalError unless the source decodes logically.
func checkWALLevel(ctx context.Context, q queryRower, where string) error {
	var walLevel string
	if err := q.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return pgerr.Fatalf(nil, "wal_level is %s on %s; set wal_level = logical in postgresql.conf and restart Postgres", walLevel, where)
	}
	return nil
}

// checkReplication returns the current role, or a FatalError when it may
// not stream from a replication slot.
func checkReplication(ctx context.Context, q queryRower, where string) (string, error) {
	var role string
	var canReplicate bool
	if err := q.QueryRow(ctx, "SELECT current_user, rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user").Scan(&role, &canReplicate); err != nil {
		return "", fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return role, pgerr.Fatalf(nil, "role %q lacks the REPLICATION attribute on %s; run ALTER ROLE %s REPLICATION as a superuser", role, where, quoteIdent(role))
	}
	return role, nil
}

// ensureSlot creates the slot when missing and returns the position
// streaming resumes from (the slot's confirmed flush LSN). It checks the
// slot against the stream's tail: a slot created anew while the stream
// holds changes, or one that confirms more than the stream holds, leaves
// a hole between the two, which is a FatalError.
func (c *Capture) ensureSlot(ctx context.Context, pool *pgxpool.Pool, repl *pgconn.PgConn, tail tailInfo) (stream.LSN, error) {
	var plugin, db string
	var confirmed *string
	err := pool.QueryRow(ctx, `SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, c.cfg.Slot).Scan(&plugin, &db, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		if tail.pos != 0 {
			// A new slot starts at the WAL's end: whatever the source
			// committed since the stream's tail would be lost.
			return 0, pgerr.Fatalf(nil, "slot %q is missing on %s, but stream %s holds its changes up to LSN %s (the slot was dropped, invalidated, or the source failed over): what the source committed since is not in the stream: %s",
				c.cfg.Slot, c.where(), stream.StreamName(c.cfg.Name), tail.pos, newStreamRemedy(c.cfg.Name))
		}
		res, err := pglogrepl.CreateReplicationSlot(ctx, repl, c.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			return 0, fmt.Errorf("create replication slot %q: %w", c.cfg.Slot, err)
		}
		c.made.add(func(s *madeSet) { s.slot = true })
		lsn, err := stream.ParseLSN(res.ConsistentPoint)
		if err != nil {
			return 0, err
		}
		c.log.Info().Str("slot", c.cfg.Slot).Str("lsn", lsn.String()).Msg("replication slot created")
		return lsn, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up slot %q: %w", c.cfg.Slot, err)
	}
	if plugin != "pgoutput" {
		return 0, pgerr.Fatalf(nil, "slot %q uses plugin %s, not pgoutput; drop it or choose another --slot", c.cfg.Slot, plugin)
	}
	var current string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&current); err != nil {
		return 0, err
	}
	if db != current {
		return 0, pgerr.Fatalf(nil, "slot %q belongs to database %s, not %s; choose another --slot", c.cfg.Slot, db, current)
	}
	if confirmed == nil {
		return 0, pgerr.Fatalf(nil, "slot %q has no confirmed position (invalidated?); drop it and restart capture", c.cfg.Slot)
	}
	lsn, err := stream.ParseLSN(*confirmed)
	if err != nil {
		return 0, err
	}
	// The slot confirms only positions of messages JetStream acknowledged
	// (see reader.confirm), so one ahead of the stream's last message
	// means JetStream lost messages after acknowledging them. Messages of
	// older pgjet versions (no source header) did not keep that rule.
	if tail.id.system != "" && lsn > tail.pos {
		return 0, pgerr.Fatalf(nil, "slot %q confirms LSN %s, but stream %s ends at %s: the stream lost acknowledged messages (a nats-server crash without jetstream { sync_interval: always }, or messages deleted); they cannot be read again: %s",
			c.cfg.Slot, lsn, stream.StreamName(c.cfg.Name), tail.pos, newStreamRemedy(c.cfg.Name))
	}
	return lsn, nil
}

type tailInfo struct {
	lastID  string
	lastSeq uint64 // the stream's last sequence
	// prevID is the id of the source's last message in the stream, which
	// the next message names as its predecessor (stream.HeaderPrev).
	prevID    string
	skipBelow stream.LSN // transactions committed below this are in the stream
	// pos is the source position the stream holds everything up to: the
	// end of its last transaction (or its commit LSN when cut short), or
	// the LSN of its last heartbeat or message. 0: nothing of this source.
	pos stream.LSN
	// id is the source that published the last message, from its headers
	// (empty in messages of older pgjet versions).
	id sourceID
	// foreign counts the messages after the last pgjet envelope that are
	// not this source's (published into the stream's subjects by someone
	// else).
	foreign int
}

// maxForeignTail bounds how many foreign messages at the stream's end
// capture looks past for its own last message. More than that is a stream
// of someone else's data, not a stray message.
const maxForeignTail = 100

// streamTail reads the stream's last message of source: what capture published
// before it stopped. Transactions at or before it are not re-published
// even when the dedup window has passed. A few foreign messages after it
// (a stray publish, which appliers stop on or dead-letter) are looked
// past; lastID is still the stream's very last message id, which the next
// publish must expect.
func streamTail(ctx context.Context, st jetstream.Stream, source string) (tailInfo, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return tailInfo{}, fmt.Errorf("read stream info: %w", err)
	}
	if info.State.Msgs == 0 || info.State.LastSeq == 0 {
		return tailInfo{lastSeq: info.State.LastSeq}, nil
	}
	t := tailInfo{lastSeq: info.State.LastSeq}
	for seq := info.State.LastSeq; seq >= max(info.State.FirstSeq, 1); seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			return tailInfo{}, fmt.Errorf("read stream tail (seq %d): %w", seq, err)
		}
		if seq == info.State.LastSeq {
			t.lastID = m.Header.Get(jetstream.MsgIDHeader)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err == nil && envs[len(envs)-1].Source != source {
			err = fmt.Errorf("an envelope of source %q", envs[len(envs)-1].Source)
		}
		if err != nil {
			if t.foreign++; t.foreign > maxForeignTail {
				return tailInfo{}, pgerr.Fatalf(err, "the last %d messages of stream %s (up to seq %d) are not pgjet envelopes; the stream holds foreign data: use another --name", t.foreign, info.Config.Name, info.State.LastSeq)
			}
			continue
		}
		env := envs[len(envs)-1]
		t.prevID = m.Header.Get(jetstream.MsgIDHeader)
		t.id.system = m.Header.Get(stream.HeaderSystem)
		if tl, err := strconv.ParseInt(m.Header.Get(stream.HeaderTimeline), 10, 32); err == nil {
			t.id.timeline = int32(tl)
		}
		t.pos = env.EndLSN
		if t.pos == 0 {
			t.pos = env.CommitLSN
		}
		switch {
		case env.Kind == stream.KindHeartbeat || env.Kind == stream.KindMessage:
			// A logical message's LSN is the END of its record, where the
			// next record (maybe a commit) begins: that one is not in the
			// stream yet.
			t.skipBelow = env.CommitLSN
		case env.Last():
			t.skipBelow = env.CommitLSN + 1
		default:
			// A transaction cut short: re-send it whole; consumers restart it
			// when its first chunk comes again.
			t.skipBelow = env.CommitLSN
		}
		return t, nil
	}
	return t, nil // nothing of pgjet's left in the stream: start afresh
}

// heartbeats writes a non-transactional logical message into the WAL
// periodically: it flows through the slot even when no published table
// changes, so the slot advances (no WAL pile-up) and appliers see lag.
// Sequence values are published at the same pace (see sequences).
func (c *Capture) heartbeats(ctx context.Context, pool *pgxpool.Pool) error {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	var seqs seqState
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := pool.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2)", HeartbeatPrefix, c.cfg.Name); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn().Err(err).Msg("emit heartbeat")
		}
		if c.cfg.Sequences {
			if err := c.sequences(ctx, pool, &seqs); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.log.Warn().Err(err).Msg("publish sequence values")
			}
		}
	}
}

// progress logs what was published since the last report.
func (c *Capture) progress(ctx context.Context) {
	t := time.NewTicker(c.cfg.ProgressInterval)
	defer t.Stop()
	var txns, changes, bytes int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		nt, nc, nb := c.stats.Txns.Load(), c.stats.Changes.Load(), c.stats.Bytes.Load()
		secs := c.cfg.ProgressInterval.Seconds()
		c.log.Info().Str("lsn", stream.LSN(c.stats.Confirmed.Load()).String()).
			Float64("txns_per_sec", float64(nt-txns)/secs).Float64("changes_per_sec", float64(nc-changes)/secs).
			Float64("mb_per_sec", float64(nb-bytes)/secs/1e6).Msg("progress")
		txns, changes, bytes = nt, nc, nb
	}
}
