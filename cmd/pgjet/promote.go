package main

// pgjet promote makes one region's replica the new primary of its source
// and begins the stream's next generation there (stream/generation.go).
// A planned switchover fences the old primary first and waits until the
// region has applied its last transaction, so nothing is lost.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// promoteFlags are pgjet promote's settings.
type promoteFlags struct {
	db, oldDB, nats, domain, name, region string
	failover                              bool
	// sequenceGap moves sequences this much further in a failover: ids
	// the old primary handed out in transactions the region never
	// received are not reused while they number fewer.
	sequenceGap int64
	wait        time.Duration
	dbf         cli.DBFlags
	natsf       cli.NATSFlags
	// capture shapes the new primary's publication and slot as the
	// pgjet-capture started there will.
	capture capture.Config
}

func runPromote(args []string) int {
	f := promoteFlags{capture: capture.DefaultConfig()}
	fs := pflag.NewFlagSet("pgjet promote", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet promote makes a region's replica the new primary of a source, and the stream\n"+
			"goes on there as the source's next generation (no new snapshot).\n\n"+
			"Planned switchover (--old-db given): the old primary is fenced (default_transaction_read_only\n"+
			"and its client sessions ended), capture publishes its last transactions, the region applies\n"+
			"them, and only then is the region promoted: nothing is lost, and the time writes were refused\n"+
			"is printed. The region's applier stops for good. Start pgjet-capture on the new primary under\n"+
			"the same --name afterwards (with the same table flags given here).\n\n"+
			"Unplanned failover (--failover, the home region unreachable): the region applies everything\n"+
			"its mirror of the stream holds, then its mirror becomes the stream (in the region's own domain,\n"+
			"--nats being the region's server) and the next generation begins there. What may be lost is\n"+
			"printed: the last transaction applied against the newest message the mirror received.\n\n"+
			"Usage:\n  pgjet promote --db NEW_PRIMARY_URL --old-db OLD_PRIMARY_URL --nats HOME_NATS_URL --name SOURCE --region REGION\n"+
			"  pgjet promote --failover --db NEW_PRIMARY_URL --nats REGION_NATS_URL --name SOURCE --region REGION\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&f.db, "db", "", "the promoted region's database URL (superuser: it gets capture's publication, slot and DDL triggers)")
	fs.StringVar(&f.oldDB, "old-db", "", "the old primary's database URL (superuser, to fence it): a planned switchover")
	fs.StringVar(&f.nats, "nats", "", "NATS URL of the stream's home region (switchover), or of the promoted region (--failover)")
	fs.BoolVar(&f.failover, "failover", false, "unplanned failover: the old primary and the stream's home are unreachable")
	fs.Int64Var(&f.sequenceGap, "sequence-gap", 100000, "with --failover, move every sequence this much past the largest value the region knows of")
	fs.StringVar(&f.domain, "domain", "", "JetStream domain of the stream (default: the connected server's)")
	fs.StringVar(&f.name, "name", "", "source name given to pgjet-capture")
	fs.StringVar(&f.region, "region", "", "the promoted region's name, as given to its pgjet-apply --region")
	fs.DurationVar(&f.wait, "wait", 5*time.Minute, "how long to wait for capture to publish the old primary's last transactions and the region to apply them")
	fs.StringSliceVar(&f.capture.Tables, "tables", nil, "as pgjet-capture --tables on the new primary")
	fs.StringVar(&f.capture.Keyless, "keyless", "", "as pgjet-capture --keyless on the new primary")
	fs.StringSliceVar(&f.capture.KeylessTables, "keyless-table", nil, "as pgjet-capture --keyless-table on the new primary")
	fs.StringVar(&f.capture.Partitions, "partitions", f.capture.Partitions, "as pgjet-capture --partitions on the new primary")
	fs.StringVar(&f.capture.Slot, "slot", "", "capture's replication slot, on both primaries (default pgjet_<name>)")
	fs.StringVar(&f.capture.Publication, "publication", "", "capture's publication on the new primary (default the slot's name)")
	fs.BoolVar(&f.capture.DDL, "ddl", f.capture.DDL, "as pgjet-capture --ddl on the new primary")
	cli.CaptureTableFlags(fs, &f.capture)
	f.dbf.Register(fs)
	f.natsf.Register(fs)
	cli.Parse(fs, args)
	var errs []error
	var err error
	if f.db, err = f.dbf.URL(f.db); err != nil {
		errs = append(errs, err)
	}
	if f.db == "" {
		errs = append(errs, errors.New("--db is required (the promoted region's database URL)"))
	}
	switch {
	case f.oldDB == "" && !f.failover:
		errs = append(errs, errors.New("--old-db is required (the old primary, fenced for a planned switchover), or --failover when it is unreachable"))
	case f.oldDB != "" && f.failover:
		errs = append(errs, errors.New("--old-db and --failover exclude each other: a reachable old primary is fenced, and nothing is lost"))
	}
	if f.sequenceGap < 0 {
		errs = append(errs, errors.New("--sequence-gap must not be negative"))
	}
	if rerr := stream.ValidateSource(f.region); rerr != nil {
		errs = append(errs, fmt.Errorf("--region: %w", rerr))
	}
	f.capture.DB, f.capture.NATS, f.capture.Name = f.db, f.nats, f.name
	if f.capture.NATSOptions, err = f.natsf.Options(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, f.capture.Validate())
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "pgjet promote: %v\n", err)
		return 2
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	p, err := newPromoter(ctx, f, os.Stdout)
	if err != nil {
		return fail("pgjet promote", err)
	}
	defer p.close()
	if f.failover {
		err = p.failover(ctx)
	} else {
		err = p.switchover(ctx)
	}
	if err != nil {
		return fail("pgjet promote", err)
	}
	return 0
}

// promoter runs one promotion.
type promoter struct {
	f        promoteFlags
	out      io.Writer
	newConn  *pgx.Conn // the promoted region's database
	oldConn  *pgx.Conn // the old primary's (switchover)
	nc       *nats.Conn
	js       jetstream.JetStream
	st       jetstream.Stream
	gen      int // the generation that begins
	prevTail tailMsg
}

// failover promotes the region with its home unreachable: the region
// applies what its mirror received, and the mirror becomes the stream.
func (p *promoter) failover(ctx context.Context) error {
	name := p.f.name
	if err := p.preconditions(ctx); err != nil {
		return err
	}
	info, err := p.st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream.StreamName(name), err)
	}
	prevDomain := info.Config.Metadata[prevDomainKey] // promoted by an interrupted run
	if info.Config.Mirror != nil {
		if info.Mirror != nil && info.Mirror.Active >= 0 && info.Mirror.Active < 2*time.Second {
			p.printf("warning: the mirror heard from the stream's home %s ago: if the old primary still writes, use a planned switchover (--old-db) instead", info.Mirror.Active.Round(time.Millisecond))
		}
		// First of all the mirror stops following its origin (JetStream's
		// mirror promotion): what it holds is then final, and the region
		// applies all of it. It takes the source's subjects, for the new
		// capture to publish to.
		prevDomain = stream.MirrorDomain(info.Config.Mirror)
		cfg := info.Config
		cfg.Mirror = nil
		cfg.Subjects = []string{"pgjet." + name + ".>"}
		cfg.Description = "pgjet change stream of source " + name
		cfg.Metadata = maps.Clone(cfg.Metadata)
		if cfg.Metadata == nil {
			cfg.Metadata = map[string]string{}
		}
		cfg.Metadata[prevDomainKey] = prevDomain
		if _, err := p.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("promote region %s's mirror %s to a stream: %w", p.f.region, stream.StreamName(name), err)
		}
		p.printf("mirror %s of region %s is now the stream of source %s: it no longer follows domain %s", stream.StreamName(name), p.f.region, name, prevDomain)
		if info, err = p.st.Info(ctx); err != nil {
			return fmt.Errorf("read stream %s: %w", stream.StreamName(name), err)
		}
	}
	last := info.State.LastSeq
	seen, err := newestSeen(ctx, p.st, name)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, p.f.wait)
	defer cancel()
	pos, err := waitApplied(wctx, p.newConn, p.st, name, last)
	if err != nil {
		return fmt.Errorf("region %s has not applied its mirror up to sequence %d: %w; is its pgjet-apply running? run pgjet promote again once it has caught up", p.f.region, last, err)
	}
	p.printf("region %s applied everything its mirror holds: last transaction %s committed %s (stream sequence %d)",
		p.f.region, pos.commit, pos.time.UTC().Format(time.RFC3339Nano), pos.seq)
	p.printf("newest message the mirror received: sequence %d, %s", seen.seq, seen.describe())
	if seen.txn != 0 {
		p.printf("newest transaction the mirror received: %s committed %s%s", seen.txn, seen.txnTime.UTC().Format(time.RFC3339Nano), map[bool]string{true: "", false: " (cut short: never whole in the mirror, not applied)"}[seen.txnWhole])
	}
	p.printf("may be lost: every transaction the old primary committed after %s (LSN %s) that the mirror never received; when the old primary is back, they lie in its WAL after its slot %s's confirmed position",
		pos.time.UTC().Format(time.RFC3339Nano), pos.commit, p.f.capture.Slot)

	g := stream.Generation{Generation: p.gen, Region: p.f.region, PrevSeq: last, PrevLSN: pos.commit, PrevTime: pos.time, PromotedAt: time.Now()}
	if ai, err := p.js.AccountInfo(ctx); err == nil {
		g.Domain = ai.Domain
	}
	g.PrevDomain = prevDomain
	if err := p.stopApplier(ctx, g); err != nil {
		return err
	}
	if err := p.prepareNew(ctx, &g, p.f.sequenceGap); err != nil {
		return err
	}
	// The region's mirror of the snapshots too, when it has one: new
	// regions build themselves from those, and capture takes no new
	// snapshot while the stream holds one.
	if snap, err := p.js.Stream(ctx, stream.SnapshotStreamName(name)); err == nil && snap.CachedInfo().Config.Mirror != nil {
		if _, err := stream.EnsureSnapshotStream(ctx, p.js, name, 0); err != nil {
			return fmt.Errorf("promote region %s's snapshot mirror %s to a stream: %w", p.f.region, stream.SnapshotStreamName(name), err)
		}
		p.printf("snapshot mirror %s of region %s is now the snapshot stream of source %s", stream.SnapshotStreamName(name), p.f.region, name)
	}
	seq, err := p.publishMarker(ctx, &g)
	if err != nil {
		return err
	}
	p.printf("generation %d of source %s begins at stream %s sequence %d: region %s is the primary", g.Generation, name, stream.StreamName(name), seq, p.f.region)
	p.printf("next: start pgjet-capture on the new primary: pgjet-capture --db %s --nats %s --name %s (with the table flags of the old one)",
		redact.Postgres(p.f.db), stream.RedactURL(p.f.nats), name)
	p.printf("      point the application at the new primary; remove region %s's pgjet-apply (it refuses to start again); keep the old primary and its capture stopped", p.f.region)
	return nil
}

// seenMsg is the newest message of the source in a stream, and its newest
// transaction.
type seenMsg struct {
	seq      uint64
	env      *stream.Envelope
	txn      stream.LSN // commit LSN of the newest transaction, 0: none
	txnTime  time.Time
	txnWhole bool // its last chunk is in the stream
}

func (m seenMsg) describe() string {
	if m.env == nil {
		return "none of the source's"
	}
	kind := map[stream.Kind]string{stream.KindTxn: "a transaction's chunk", stream.KindHeartbeat: "a heartbeat", stream.KindMessage: "a logical message"}[m.env.Kind]
	return fmt.Sprintf("%s at LSN %s, %s", kind, max(m.env.CommitLSN, m.env.EndLSN), m.env.CommitTime.UTC().Format(time.RFC3339Nano))
}

// newestSeen reads the stream back from its end to the source's newest
// message and its newest transaction (within maxPromoteScan messages).
func newestSeen(ctx context.Context, st jetstream.Stream, source string) (seenMsg, error) {
	var s seenMsg
	err := scanBack(ctx, st, source, func(seq uint64, _ *jetstream.RawStreamMsg, envs []*stream.Envelope, last uint64) bool {
		if last-seq >= maxPromoteScan {
			return true
		}
		if s.env == nil {
			s.seq, s.env = seq, envs[len(envs)-1]
		}
		for i := len(envs) - 1; i >= 0; i-- {
			if e := envs[i]; e.Kind == stream.KindTxn {
				s.txn, s.txnTime, s.txnWhole = e.CommitLSN, e.CommitTime, e.Last()
				return true
			}
		}
		return false
	})
	return s, err
}

// scanBack calls fn with each message of source in st, from the stream's
// last sequence (last) back, until fn returns true. Strangers' messages are
// passed over.
func scanBack(ctx context.Context, st jetstream.Stream, source string, fn func(seq uint64, m *jetstream.RawStreamMsg, envs []*stream.Envelope, last uint64) bool) error {
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream info: %w", err)
	}
	last := info.State.LastSeq
	for seq := last; seq >= max(info.State.FirstSeq, 1) && seq > 0; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read stream %s sequence %d: %w", info.Config.Name, seq, err)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil || envs[len(envs)-1].Source != source {
			continue // a stranger's message
		}
		if fn(seq, m, envs, last) {
			return nil
		}
	}
	return nil
}

func newPromoter(ctx context.Context, f promoteFlags, out io.Writer) (*promoter, error) {
	p := &promoter{f: f, out: out}
	var err error
	if p.newConn, err = pgx.Connect(ctx, f.db); err != nil {
		return nil, pgerr.ClassifyConnect(f.db, err)
	}
	conns := []*pgx.Conn{p.newConn}
	if f.oldDB != "" {
		if p.oldConn, err = pgx.Connect(ctx, f.oldDB); err != nil {
			p.close()
			return nil, pgerr.ClassifyConnect(f.oldDB, err)
		}
		conns = append(conns, p.oldConn)
	}
	// What promote changes on either database is no schema change to
	// replicate.
	for _, c := range conns {
		if _, err := c.Exec(ctx, "SELECT pg_catalog.set_config($1, 'off', false)", schema.DDLOffSetting); err != nil {
			p.close()
			return nil, fmt.Errorf("turn DDL capture off for this session: %w", err)
		}
	}
	if p.nc, err = stream.Connect(f.nats, "pgjet promote "+f.name, f.capture.NATSOptions, zerolog.Nop(), nats.NoReconnect()); err != nil {
		p.close()
		return nil, fmt.Errorf("NATS at %s: %w", stream.RedactURL(f.nats), err)
	}
	if p.js, err = stream.NewJetStream(p.nc, f.domain); err == nil {
		p.st, err = p.js.Stream(ctx, stream.StreamName(f.name))
	}
	if err != nil {
		p.close()
		return nil, fmt.Errorf("stream %s at %s: %w", stream.StreamName(f.name), stream.RedactURL(f.nats), err)
	}
	return p, nil
}

func (p *promoter) close() {
	ctx := context.Background()
	if p.newConn != nil {
		p.newConn.Close(ctx)
	}
	if p.oldConn != nil {
		p.oldConn.Close(ctx)
	}
	if p.nc != nil {
		p.nc.Close()
	}
}

func (p *promoter) printf(format string, args ...any) { fmt.Fprintf(p.out, format+"\n", args...) }

// switchover promotes the region with the old primary fenced: nothing is
// lost.
func (p *promoter) switchover(ctx context.Context) error {
	name := p.f.name
	if err := p.preconditions(ctx); err != nil {
		return err
	}

	// 1. The fence: no transaction commits on the old primary from here.
	fenced := time.Now()
	ended, err := fence(ctx, p.oldConn)
	if err != nil {
		return err
	}
	p.printf("fenced the old primary %s: default_transaction_read_only = on, %d client sessions ended", redact.Postgres(p.f.oldDB), ended)

	// 2. Everything it committed is in the stream once capture confirms a
	// heartbeat written after the fence.
	var mark string
	if err := p.oldConn.QueryRow(ctx, "SELECT pg_logical_emit_message(false, $1, $2)::text", capture.HeartbeatPrefix, name).Scan(&mark); err != nil {
		return fmt.Errorf("write a heartbeat into the old primary's WAL: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, p.f.wait)
	defer cancel()
	if err := waitSlot(wctx, p.oldConn, p.f.capture.Slot, mark); err != nil {
		return fmt.Errorf("capture has not published the old primary's last transactions: %w; is pgjet-capture --name %s running? the old primary stays fenced: run pgjet promote again, or lift the fence (ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf())", err, name)
	}
	info, err := p.st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream.StreamName(name), err)
	}
	last := info.State.LastSeq
	p.printf("capture published the old primary's WAL up to %s: stream %s sequence %d", mark, stream.StreamName(name), last)

	// 3. The region applies all of it.
	pos, err := waitApplied(wctx, p.newConn, p.st, name, last)
	if err != nil {
		return fmt.Errorf("region %s has not applied the stream up to sequence %d: %w; is its pgjet-apply running? the old primary stays fenced: run pgjet promote again once it has caught up", p.f.region, last, err)
	}
	p.printf("region %s applied everything: last transaction %s (%s), stream sequence %d", p.f.region, pos.commit, pos.time.UTC().Format(time.RFC3339Nano), pos.seq)

	// 4. The region's applier stops for good before the new primary's
	// slot exists: nothing it writes from here would be decoded.
	g := stream.Generation{Generation: p.gen, Region: p.f.region, Planned: true, PrevSeq: last, PrevLSN: pos.commit, PrevTime: pos.time, PromotedAt: time.Now()}
	if err := p.stopApplier(ctx, g); err != nil {
		return err
	}
	if err := p.prepareNew(ctx, &g, 0); err != nil {
		return err
	}

	// 5. The marker begins the generation.
	seq, err := p.publishMarker(ctx, &g)
	if err != nil {
		return err
	}
	refused := time.Since(fenced)
	p.printf("generation %d of source %s begins at stream %s sequence %d: region %s is the primary", g.Generation, name, stream.StreamName(name), seq, p.f.region)
	p.printf("writes refused for %s (from the fence to the generation marker); nothing was lost", refused.Round(time.Millisecond))
	p.printf("next: start pgjet-capture on the new primary: pgjet-capture --db %s --nats %s --name %s (with the table flags of the old one)",
		redact.Postgres(p.f.db), stream.RedactURL(p.f.nats), name)
	p.printf("      point the application at the new primary; remove region %s's pgjet-apply (it refuses to start again); the old primary's capture stops by itself", p.f.region)
	return nil
}

// prepareNew makes the promoted database ready for its capture (see
// capture.Prepare), records its slot in g, and moves its sequences past
// every id in use (gap further).
func (p *promoter) prepareNew(ctx context.Context, g *stream.Generation, gap int64) error {
	prim, err := capture.Prepare(ctx, p.f.capture, zerolog.Nop())
	if err != nil {
		return fmt.Errorf("prepare the new primary for capture: %w", err)
	}
	g.System, g.Timeline, g.Database, g.Slot, g.Start = prim.System, prim.Timeline, prim.Database, prim.Slot, prim.Start
	moved, err := advanceSequences(ctx, p.newConn, p.oldConn, gap)
	if err != nil {
		return err
	}
	p.printf("new primary: system %s, database %s, slot %s from LSN %s; %d sequences moved past every value in use (and %d further)", g.System, g.Database, g.Slot, g.Start, moved, gap)
	return nil
}

// preconditions checks, changing nothing, that the region can be
// promoted: it follows the stream, and is not its primary already.
func (p *promoter) preconditions(ctx context.Context) error {
	name := p.f.name
	here, err := apply.Promoted(ctx, p.newConn, name)
	if err != nil {
		return err
	}
	if here != nil && here.Published {
		return fmt.Errorf("%s is the primary of source %s already (generation %d, region %s, since %s)",
			redact.Postgres(p.f.db), name, here.Generation, here.Region, here.RecordedAt.UTC().Format(time.RFC3339))
	}
	if _, err := readPosition(ctx, p.newConn, name); err != nil {
		return err
	}
	g, _, err := stream.LastGeneration(ctx, p.st, name)
	if err != nil {
		return err
	}
	p.gen = 2
	if g != nil {
		p.gen = g.Generation + 1
	}
	if p.oldConn == nil {
		return nil
	}
	// The old primary must be the stream's: fencing another database
	// would wait for ever.
	if p.prevTail, err = lastOwnMessage(ctx, p.st, name, 0, false); err != nil {
		return err
	}
	var system string
	if err := p.oldConn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&system); err != nil {
		return fmt.Errorf("identify the old primary: %w", err)
	}
	if want := p.prevTail.header.Get(stream.HeaderSystem); want != "" && want != system {
		return fmt.Errorf("--old-db %s is Postgres system %s, but stream %s's last messages come from system %s: give the source's current primary",
			redact.Postgres(p.f.oldDB), system, stream.StreamName(name), want)
	}
	return nil
}

// fence makes the old primary refuse writes: default_transaction_read_only
// for every session from now on, and the client sessions there now ended
// (pgjet-capture's excepted). It returns how many it ended.
func fence(ctx context.Context, conn *pgx.Conn) (int, error) {
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET default_transaction_read_only = on"); err != nil {
		return 0, fmt.Errorf("fence the old primary (ALTER SYSTEM needs a superuser): %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return 0, fmt.Errorf("reload the old primary's configuration: %w", err)
	}
	// This session keeps writing (the heartbeat).
	if _, err := conn.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
		return 0, err
	}
	// Sessions that read the new setting start read-only; the reload
	// reaches the postmaster a moment after pg_reload_conf returns, and a
	// session started before it would not. Only a new session tells
	// (pg_file_settings reads the file, not what the postmaster applied).
	if err := waitReadOnly(ctx, conn.Config()); err != nil {
		return 0, err
	}
	// With a timeout pg_terminate_backend waits until the session is
	// gone: one still ending could commit after the fence. Its result is
	// not the test of that: a session that ended by itself meanwhile (a
	// client that gave up on the read-only error) returns false. What
	// counts is whether any of them is still there afterwards.
	var pids []int32
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
		AND application_name NOT LIKE 'pgjet-capture%'`)
	if err == nil {
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
	}
	if err == nil {
		_, err = conn.Exec(ctx, "SELECT pg_terminate_backend(pid, 10000) FROM unnest($1::int[]) pid", pids)
	}
	var alive int
	if err == nil {
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids).Scan(&alive)
	}
	if err != nil {
		return 0, fmt.Errorf("end the old primary's client sessions: %w", err)
	}
	n := len(pids)
	if alive > 0 {
		return 0, fmt.Errorf("%d client sessions of the old primary did not end within 10s of pg_terminate_backend; the old primary stays fenced: run pgjet promote again", alive)
	}
	// A prepared transaction outlives its session and commits when told
	// (COMMIT PREPARED is no write the read-only default stops): the new
	// primary could never get it.
	var prepared int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()").Scan(&prepared); err != nil {
		return 0, fmt.Errorf("read the old primary's prepared transactions: %w", err)
	}
	if prepared > 0 {
		return 0, fmt.Errorf("the old primary holds %d prepared transactions (pg_prepared_xacts): finish them with COMMIT PREPARED or ROLLBACK PREPARED, then run pgjet promote again; the old primary stays fenced", prepared)
	}
	return n, nil
}

// waitReadOnly waits until a new session of the database cfg connects to
// starts read-only.
func waitReadOnly(ctx context.Context, cfg *pgx.ConnConfig) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		on, err := showReadOnly(ctx, cfg)
		if err == nil && on == "on" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("new sessions of the old primary do not start read-only after pg_reload_conf (default_transaction_read_only = %s, %v): is it set per database or role (ALTER DATABASE/ROLE ... SET)? the old primary stays fenced: reset that, then run pgjet promote again", on, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func showReadOnly(ctx context.Context, cfg *pgx.ConnConfig) (string, error) {
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var on string
	err = c.QueryRow(ctx, "SHOW default_transaction_read_only").Scan(&on)
	return on, err
}

// waitSlot waits until slot confirms lsn.
func waitSlot(ctx context.Context, conn *pgx.Conn, slot, lsn string) error {
	for {
		var past bool
		var confirmed *string
		err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $2::pg_lsn, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot, lsn).Scan(&past, &confirmed)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("slot %s is missing on the old primary", slot)
		}
		if err != nil {
			return err
		}
		if past {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slot %s confirms %s, not yet %s", slot, orNothing(confirmed), lsn)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func orNothing(s *string) string {
	if s == nil {
		return "nothing"
	}
	return *s
}

// appliedPos is a target's position in pgjet.applied.
type appliedPos struct {
	commit stream.LSN
	seq    uint64
	time   time.Time
}

// readPosition reads the target's position of source.
func readPosition(ctx context.Context, conn *pgx.Conn, source string) (appliedPos, error) {
	var commit string
	var seq int64
	var t *time.Time
	err := conn.QueryRow(ctx, "SELECT commit_lsn::text, stream_seq, commit_time FROM pgjet.applied WHERE source = $1", source).Scan(&commit, &seq, &t)
	if errors.Is(err, pgx.ErrNoRows) || pgerr.PgCode(err) == pgerr.CodeUndefinedTable {
		return appliedPos{}, fmt.Errorf("the database to promote holds no position of source %s (pgjet.applied): it is no replica of that source", source)
	}
	if err != nil {
		return appliedPos{}, fmt.Errorf("read the applied position: %w", err)
	}
	p := appliedPos{seq: uint64(seq)}
	if t != nil {
		p.time = *t
	}
	p.commit, err = stream.ParseLSN(commit)
	return p, err
}

// waitApplied waits until the target has applied every transaction of
// the stream up to seq: its position is there, or only messages without
// rows (heartbeats) lie between the two. The second holds for a region
// whose applier an interrupted promote stopped already.
func waitApplied(ctx context.Context, conn *pgx.Conn, st jetstream.Stream, source string, seq uint64) (appliedPos, error) {
	for polls := 0; ; polls++ {
		p, err := readPosition(ctx, conn, source)
		if err != nil {
			return p, err
		}
		if p.seq >= seq {
			return p, nil
		}
		if polls%10 == 0 && seq-p.seq <= maxPromoteScan {
			t, err := lastOwnMessage(ctx, st, source, p.seq, true)
			if err != nil {
				return p, err
			}
			if t.txnAfter == 0 {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("it is at sequence %d", p.seq)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopApplier records the region's database as the primary of generation
// g, which every applier of the source refuses from then on, and ends
// the sessions of the one running there.
func (p *promoter) stopApplier(ctx context.Context, g stream.Generation) error {
	if err := apply.RecordPrimary(ctx, p.newConn, p.f.db, p.f.name, g, 0); err != nil {
		return err
	}
	var n int
	if err := p.newConn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1`, apply.ApplicationName).Scan(&n); err != nil {
		return fmt.Errorf("end the sessions of region %s's applier: %w", p.f.region, err)
	}
	p.printf("region %s's database is now the primary of generation %d: its applier stops for good (%d sessions ended)", p.f.region, g.Generation, n)
	return nil
}

// publishMarker publishes the marker of g after the stream's last message,
// and records its sequence on the new primary. Only messages without rows
// (the old capture's heartbeats) may have come since g.PrevSeq: a
// transaction there committed on the old primary past the fence, and the
// new primary lacks it.
func (p *promoter) publishMarker(ctx context.Context, g *stream.Generation) (uint64, error) {
	name := p.f.name
	applied := g.PrevSeq
	for attempt := 0; ; attempt++ {
		info, err := p.st.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("read stream %s: %w", stream.StreamName(name), err)
		}
		last := info.State.LastSeq
		tail, err := lastOwnMessage(ctx, p.st, name, applied, true)
		if err != nil {
			return 0, err
		}
		if tail.txnAfter != 0 {
			return 0, fmt.Errorf("stream %s sequence %d holds a transaction the old primary committed after the fence (a session turned default_transaction_read_only off?); region %s stopped before it: it is not in the new generation. Nothing was published; end that session and run pgjet promote again",
				stream.StreamName(name), tail.txnAfter, p.f.region)
		}
		g.PrevSeq = tail.seq
		env, err := g.Envelope(name)
		if err != nil {
			return 0, err
		}
		msg := &nats.Msg{Subject: stream.GenerationSubject(name), Data: stream.Encode(env), Header: g.Header(tail.id)}
		ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(g.MsgID(name)), jetstream.WithExpectLastSequence(last))
		if err == nil {
			if err := apply.RecordPrimary(ctx, p.newConn, p.f.db, name, *g, ack.Sequence); err != nil {
				return 0, err
			}
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if attempt < 20 && errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			continue // the old capture published a heartbeat meanwhile
		}
		return 0, fmt.Errorf("publish the generation marker to stream %s: %w", stream.StreamName(name), err)
	}
}

// prevDomainKey is the stream metadata key under which a promoted mirror
// keeps the domain it copied from, for a promote run again.
const prevDomainKey = "pgjet_prev_domain"

// maxPromoteScan bounds the messages promote reads to tell whether a
// region lacks only heartbeats.
const maxPromoteScan = 1000

// tailMsg describes the source's last message in a stream.
type tailMsg struct {
	seq    uint64
	id     string // its Nats-Msg-Id, the marker's predecessor in capture's chain
	header nats.Header
	// txnAfter is the sequence of a transaction found after the sequence
	// lastOwnMessage was given (0: none).
	txnAfter uint64
}

// lastOwnMessage reads the stream back from its end to the source's last
// message and, when look is set, looks at every message after seq for a
// transaction. A flag, not seq 0, says "look at none": a region at stream
// sequence 0 has applied nothing, and every transaction is after it.
func lastOwnMessage(ctx context.Context, st jetstream.Stream, source string, after uint64, look bool) (tailMsg, error) {
	var t tailMsg
	err := scanBack(ctx, st, source, func(seq uint64, m *jetstream.RawStreamMsg, envs []*stream.Envelope, _ uint64) bool {
		if t.id == "" {
			t.seq, t.id, t.header = seq, m.Header.Get(jetstream.MsgIDHeader), m.Header
		}
		if !look || seq <= after {
			return true
		}
		for _, e := range envs {
			// A transaction's last chunk: a transaction cut short (its
			// capture died) never completed in the stream.
			if e.Kind == stream.KindTxn && e.Last() {
				t.txnAfter = seq
			}
		}
		return false
	})
	return t, err
}
