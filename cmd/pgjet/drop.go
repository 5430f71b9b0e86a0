package main

// pgjet drop tears pgjet down: a source's slot, publication, DDL capture
// and (asked) streams, or a region's consumer, replication origin and
// bookkeeping in its target. Every step looks before it removes, so a run
// that stopped half-way is finished by the next, and a run with nothing
// left to remove says so and exits 0.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

func runDrop(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "source":
			return runDropSource(args[1:])
		case "region":
			return runDropRegion(args[1:])
		case "-h", "--help", "help":
			dropUsage()
			return 0
		}
		hint := "pgjet drop source or pgjet drop region"
		if s := cli.Suggest(args[0], []string{"source", "region"}); s != "" {
			hint = "did you mean " + s + "?"
		}
		fmt.Fprintf(os.Stderr, "pgjet drop: unknown part %q: %s\n", args[0], hint)
		return 2
	}
	dropUsage()
	return 2
}

func dropUsage() {
	fmt.Fprint(os.Stderr, "pgjet drop removes what pgjet made, naming each thing it removes; a second run finds\n"+
		"nothing left and exits 0.\n\n"+
		"Usage:\n"+
		"  pgjet drop source --db SOURCE_URL --name SOURCE [--nats URL --streams]\n"+
		"      capture's slot, publication, DDL event triggers and function, schema pgjet (when\n"+
		"      empty); with --streams the change and snapshot streams\n"+
		"  pgjet drop region --db TARGET_URL --name SOURCE --region REGION --nats URL [--streams]\n"+
		"      the region's consumer, its replication origin and the source's rows and tables in\n"+
		"      schema pgjet of the target; with --streams its dead-letter stream and mirrors\n\n"+
		"Run 'pgjet drop source --help' or 'pgjet drop region --help' for the flags.\n")
}

// dropFlags are what both drops take, and pgjet skip.
type dropFlags struct {
	db, nats, name, domain string
	streams                bool
	timeout                time.Duration
	dbf                    cli.DBFlags
	natsf                  cli.NATSFlags
}

func (f *dropFlags) register(fs *pflag.FlagSet, db string) {
	fs.StringVar(&f.db, "db", "", db)
	fs.StringVar(&f.name, "name", "", "source name given to pgjet-capture")
	fs.StringVar(&f.domain, "domain", "", "JetStream domain of the streams (default: the connected server's)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "how long the whole command may take")
	f.dbf.Register(fs)
	f.natsf.Register(fs)
}

// registerStreams adds --streams.
func (f *dropFlags) registerStreams(fs *pflag.FlagSet) {
	fs.BoolVar(&f.streams, "streams", false, "remove the streams too (their messages are lost: no region can catch up or replay from them)")
}

// validate checks the flags both drops take; needNATS says --nats is
// required.
func (f *dropFlags) validate(needNATS bool) error {
	var errs []error
	var err error
	if f.db, err = f.dbf.URL(f.db); err != nil {
		errs = append(errs, err)
	}
	if f.db == "" {
		errs = append(errs, errors.New("--db is required (the database URL, e.g. postgres://user@host:5432/db)"))
	}
	errs = append(errs, cli.CheckName(f.name))
	if needNATS {
		errs = append(errs, natsRequired(f.nats))
	}
	return errors.Join(errs...)
}

// connect opens the database and, when --nats is given, JetStream.
func (f *dropFlags) connect(ctx context.Context, client string) (*pgx.Conn, jetstream.JetStream, func(), error) {
	conn, err := pgx.Connect(ctx, f.db)
	if err != nil {
		return nil, nil, nil, pgerr.ClassifyConnect(f.db, err)
	}
	// What drop removes is no schema change to replicate.
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config($1, 'off', false)", schema.DDLOffSetting); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, nil, nil, fmt.Errorf("turn DDL capture off for this session: %w", err)
	}
	closeAll := func() { conn.Close(context.WithoutCancel(ctx)) }
	if f.nats == "" {
		return conn, nil, closeAll, nil
	}
	opts, err := f.natsf.Options()
	if err == nil {
		var nc *nats.Conn
		nc, err = stream.Connect(f.nats, client, opts, zerolog.Nop(), nats.NoReconnect())
		if err == nil {
			closeConn := closeAll
			closeAll = func() { nc.Close(); closeConn() }
			var js jetstream.JetStream
			if js, err = stream.NewJetStream(nc, f.domain); err == nil {
				// Asked before anything is removed: a JetStream that does
				// not answer stops the drop while everything is whole.
				var ai *jetstream.AccountInfo
				if ai, err = js.AccountInfo(ctx); err == nil {
					f.domain = ai.Domain
					return conn, js, closeAll, nil
				}
			}
		}
	}
	closeAll()
	return nil, nil, nil, fmt.Errorf("NATS at %s: %w", stream.RedactURL(f.nats), err)
}

// dropLog prints what a drop removes and keeps.
type dropLog struct {
	w       io.Writer
	removed int
}

func (d *dropLog) remove(format string, args ...any) {
	d.removed++
	fmt.Fprintf(d.w, "removed "+format+"\n", args...)
}

func (d *dropLog) keep(format string, args ...any) {
	fmt.Fprintf(d.w, "kept "+format+"\n", args...)
}

func runDropSource(args []string) int {
	var f dropFlags
	var slot, publication string
	var force bool
	fs := pflag.NewFlagSet("pgjet drop source", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet drop source removes what pgjet-capture made on a source database: its replication\n"+
			"slot (releasing the WAL it holds), its publication, the DDL capture event triggers and\n"+
			"their function (unless slots of other pgjet sources on the database remain), and schema\n"+
			"pgjet when nothing else is left in it; with --streams also the source's change and\n"+
			"snapshot streams. Stop pgjet-capture first: a slot a client streams from is refused\n"+
			"unless --force. Event triggers can be dropped by a superuser only.\n\n"+
			"Usage:\n  pgjet drop source --db URL --name SOURCE [--nats URL --streams] [--force]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "source database URL (a superuser, to drop the event triggers)")
	f.registerStreams(fs)
	fs.StringVar(&f.nats, "nats", "", "NATS URL of the source's home region (with --streams)")
	fs.StringVar(&slot, "slot", "", "capture's replication slot (default pgjet_<name>, lower-cased, with '-' as '_')")
	fs.StringVar(&publication, "publication", "", "capture's publication (default the slot's name)")
	fs.BoolVar(&force, "force", false, "drop the slot even while a client (pgjet-capture) streams from it, ending that connection")
	cli.Parse(fs, args)
	err := f.validate(f.streams)
	if err == nil && f.nats != "" && !f.streams {
		err = errors.New("--nats is only used with --streams: add --streams to remove the streams too, or leave --nats out")
	}
	if err != nil {
		return cli.BadUsage("pgjet drop source", err)
	}
	if slot == "" {
		slot = capture.DefaultSlot(f.name)
	}
	if publication == "" {
		publication = slot
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, js, closeAll, err := f.connect(ctx, "pgjet drop source "+f.name)
	if err != nil {
		return fail("pgjet drop source", err)
	}
	defer closeAll()
	log := &dropLog{w: os.Stdout}
	d := sourceDrop{conn: conn, js: js, f: f, slot: slot, publication: publication, force: force, log: log}
	if err := d.run(ctx); err != nil {
		return fail("pgjet drop source", err)
	}
	if log.removed == 0 {
		fmt.Printf("nothing left to remove of source %s on %s\n", f.name, redact.Postgres(f.db))
	}
	return 0
}

// sourceDrop removes a source's objects.
type sourceDrop struct {
	conn              *pgx.Conn
	js                jetstream.JetStream // nil without --streams
	f                 dropFlags
	slot, publication string
	force             bool
	log               *dropLog
}

func (d *sourceDrop) run(ctx context.Context) error {
	// A wrong domain is found before anything is removed.
	for _, name := range d.streamNames() {
		if err := d.checkStream(ctx, name); err != nil {
			return err
		}
	}
	if err := d.dropSlot(ctx); err != nil {
		return err
	}
	for _, pub := range []string{d.publication, capture.InsertsPublication(d.publication)} {
		var exists bool
		if err := d.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", pub).Scan(&exists); err != nil {
			return fmt.Errorf("look up publication %s: %w", pub, err)
		}
		if exists {
			if _, err := d.conn.Exec(ctx, "DROP PUBLICATION "+pgx.Identifier{pub}.Sanitize()); err != nil {
				return dropError(err, "publication "+pub)
			}
			d.log.remove("publication %s", pub)
		}
	}
	if err := d.dropDDLCapture(ctx); err != nil {
		return err
	}
	if err := dropOwnSchema(ctx, d.conn, d.log, "pgjet drop region removes what pgjet-apply keeps there"); err != nil {
		return err
	}
	for _, name := range d.streamNames() {
		if err := d.dropStream(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// streamNames are the streams to remove: none without --streams.
func (d *sourceDrop) streamNames() []string {
	if d.js == nil {
		return nil
	}
	return []string{stream.StreamName(d.f.name), stream.SnapshotStreamName(d.f.name)}
}

// checkStream refuses a stream that is a region's mirror: --nats or
// --domain points at a region, not at the source's home domain.
func (d *sourceDrop) checkStream(ctx context.Context, name string) error {
	st, err := lookStream(ctx, d.js, name)
	if st == nil {
		return err
	}
	if m := st.CachedInfo().Config.Mirror; m != nil {
		return fmt.Errorf("stream %s in domain %s is a mirror of domain %s: give --nats (or --domain) of the source's home domain, where capture publishes",
			name, orDash(d.f.domain), stream.MirrorDomain(m))
	}
	return nil
}

// dropSlot drops capture's slot; one a client streams from only with
// --force, which ends the client's connection first.
func (d *sourceDrop) dropSlot(ctx context.Context) error {
	where := redact.Postgres(d.f.db)
	// A walsender outlives its client by a moment: a capture that just
	// stopped may still show as streaming.
	settled := time.Now().Add(dropSettle)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active, here bool
		var pid *int32
		var db *string
		err := d.conn.QueryRow(ctx, "SELECT active, active_pid, database, database = current_database() FROM pg_replication_slots WHERE slot_name = $1", d.slot).
			Scan(&active, &pid, &db, &here)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return fmt.Errorf("look up slot %s: %w", d.slot, err)
		case !here:
			return fmt.Errorf("slot %s on %s belongs to database %s, not this one: point --db at that database", d.slot, where, orDashPtr(db))
		case active && !d.force && time.Now().Before(settled):
		case active && !d.force:
			return fmt.Errorf("slot %s on %s is active: walsender pid %d streams from it (pgjet-capture still runs); stop pgjet-capture first, or pass --force to end that connection and drop the slot",
				d.slot, where, derefPID(pid))
		case active:
			if _, err := d.conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				return fmt.Errorf("end the connection of walsender pid %d streaming from slot %s: %w", derefPID(pid), d.slot, err)
			}
		default:
			_, err = d.conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", d.slot)
			if err == nil {
				d.log.remove("slot %s (the WAL it held is released)", d.slot)
				return nil
			}
			if pgerr.PgCode(err) != pgerr.CodeObjectInUse && pgerr.PgCode(err) != codeUndefinedObject {
				return dropError(err, "slot "+d.slot)
			}
		}
		// A terminated walsender takes a moment to release the slot, and
		// a capture that reconnects may take it again meanwhile.
		if time.Now().After(deadline) {
			return fmt.Errorf("slot %s on %s stays in use: a client keeps streaming from it; stop pgjet-capture and run pgjet drop source again", d.slot, where)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dropDDLCapture drops the event triggers and their function, unless
// slots of other pgjet sources on the database still use them.
func (d *sourceDrop) dropDDLCapture(ctx context.Context) error {
	var triggers, fns []string
	err := d.conn.QueryRow(ctx, `SELECT coalesce(array_agg(evtname::text ORDER BY evtname), '{}') FROM pg_event_trigger WHERE evtname = ANY($1)`, schema.DDLTriggers).Scan(&triggers)
	for _, f := range schema.DDLFunctions {
		var fn bool
		if err == nil {
			err = d.conn.QueryRow(ctx, "SELECT to_regprocedure($1) IS NOT NULL", f.Name).Scan(&fn)
		}
		if fn {
			fns = append(fns, f.Name)
		}
	}
	if err != nil {
		return fmt.Errorf("look up DDL capture: %w", err)
	}
	if len(triggers) == 0 && len(fns) == 0 {
		return nil
	}
	var others *string
	if err := d.conn.QueryRow(ctx, `SELECT string_agg(slot_name::text, ', ' ORDER BY slot_name) FROM pg_replication_slots
		WHERE database = current_database() AND plugin = 'pgoutput' AND NOT temporary AND slot_name LIKE 'pgjet\_%' AND slot_name <> $1`, d.slot).Scan(&others); err != nil {
		return fmt.Errorf("look up other sources' slots: %w", err)
	}
	if others != nil {
		d.log.keep("DDL capture (event triggers %s, functions %s): slots %s of other pgjet sources on this database use it",
			strings.Join(schema.DDLTriggers, ", "), strings.Join(fns, ", "), *others)
		return nil
	}
	for _, tr := range triggers {
		if _, err := d.conn.Exec(ctx, "DROP EVENT TRIGGER "+pgx.Identifier{tr}.Sanitize()); err != nil {
			return dropError(err, "event trigger "+tr)
		}
		d.log.remove("event trigger %s", tr)
	}
	for _, fn := range fns {
		if _, err := d.conn.Exec(ctx, "DROP FUNCTION "+fn); err != nil {
			return dropError(err, "function "+fn)
		}
		d.log.remove("function %s", fn)
	}
	return nil
}

// dropStream deletes one of the source's streams in the home domain.
func (d *sourceDrop) dropStream(ctx context.Context, name string) error {
	st, err := lookStream(ctx, d.js, name)
	if st == nil {
		return err
	}
	info := st.CachedInfo()
	if err := deleteStream(ctx, d.js, name); err != nil {
		return err
	}
	d.log.remove("stream %s (domain %s, %s)", name, orDash(d.f.domain), messages(info.State.Msgs))
	return nil
}

func runDropRegion(args []string) int {
	var f dropFlags
	var region string
	fs := pflag.NewFlagSet("pgjet drop region", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet drop region removes a region's applier of a source: its durable consumer\n"+
			"(pgjet_apply_<region>), its replication origin on the target, and the source's rows in the\n"+
			"target's schema pgjet (position, state, conflicts, restores), with pgjet's tables and the\n"+
			"schema once no other source's rows are left; with --streams also the region's dead-letter\n"+
			"stream and the mirrors of the source's streams in this domain (when no other region reads\n"+
			"them). The replicated tables stay as they are. Stop pgjet-apply first: a running applier\n"+
			"is refused.\n\n"+
			"Usage:\n  pgjet drop region --db URL --name SOURCE --region REGION --nats URL [--domain D] [--streams]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "the region's target database URL")
	f.registerStreams(fs)
	fs.StringVar(&f.nats, "nats", "", "NATS URL of the region, e.g. nats://localhost:4222")
	fs.StringVar(&region, "region", "", "the region's name, as given to pgjet-apply --region")
	cli.Parse(fs, args)
	if err := errors.Join(f.validate(true), cli.CheckRegion(region)); err != nil {
		return cli.BadUsage("pgjet drop region", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, js, closeAll, err := f.connect(ctx, "pgjet drop region "+f.name+" "+region)
	if err != nil {
		return fail("pgjet drop region", err)
	}
	defer closeAll()
	log := &dropLog{w: os.Stdout}
	d := regionDrop{conn: conn, js: js, f: f, region: region, log: log}
	if err := d.run(ctx); err != nil {
		return fail("pgjet drop region", err)
	}
	if log.removed == 0 {
		fmt.Printf("nothing left to remove of source %s in region %s\n", f.name, region)
	}
	return 0
}

// regionDrop removes a region's applier of a source.
type regionDrop struct {
	conn   *pgx.Conn
	js     jetstream.JetStream
	f      dropFlags
	region string
	log    *dropLog
}

func (d *regionDrop) run(ctx context.Context) error {
	// Every check comes before the first removal: a refused drop leaves
	// everything as it was.
	recorded, err := d.checkApplier(ctx)
	if err != nil {
		return err
	}
	changes, err := d.js.Stream(ctx, stream.StreamName(d.f.name))
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		changes = nil
	case err != nil:
		return fmt.Errorf("look up stream %s: %w", stream.StreamName(d.f.name), err)
	}
	consumer := apply.ConsumerName(d.region)
	var ci *jetstream.ConsumerInfo
	if changes != nil {
		c, err := changes.Consumer(ctx, consumer)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			return fmt.Errorf("look up consumer %s: %w", consumer, err)
		default:
			ci = c.CachedInfo()
			// Without the applier's own record, a pull request waiting
			// tells that one runs. With it, the record decides: the
			// requests of an applier that stopped stay until they expire.
			if !recorded && ci.NumWaiting > 0 {
				return fmt.Errorf("consumer %s of %s has an applier pulling from it (%d pull requests waiting): stop pgjet-apply --name %s --region %s first",
					consumer, stream.StreamName(d.f.name), ci.NumWaiting, d.f.name, d.region)
			}
		}
	}

	if err := d.dropOrigins(ctx); err != nil {
		return err
	}
	if ci != nil {
		if err := changes.DeleteConsumer(ctx, consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s: %w", consumer, err)
		}
		d.log.remove("consumer %s of stream %s (domain %s; it had acknowledged up to stream sequence %d)", consumer, stream.StreamName(d.f.name), orDash(d.f.domain), ci.AckFloor.Stream)
	}
	if err := d.dropRows(ctx); err != nil {
		return err
	}
	if !d.f.streams {
		return nil
	}
	name := apply.DeadLetterStream(d.f.name, d.region)
	st, err := lookStream(ctx, d.js, name)
	if err != nil {
		return err
	}
	if st != nil {
		if err := deleteStream(ctx, d.js, name); err != nil {
			return err
		}
		d.log.remove("dead-letter stream %s (domain %s, %s)", name, orDash(d.f.domain), messages(st.CachedInfo().State.Msgs))
	}
	for _, name := range []string{stream.StreamName(d.f.name), stream.SnapshotStreamName(d.f.name)} {
		if err := d.dropMirror(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// checkApplier refuses while the target's applier of the source records
// that it runs, or when it runs as another region; recorded says whether
// the target holds the applier's record.
func (d *regionDrop) checkApplier(ctx context.Context) (recorded bool, err error) {
	r, err := readApplierState(ctx, d.conn, d.f.name)
	switch {
	case err != nil || r == nil:
		return false, err
	case r.region != d.region:
		return true, fmt.Errorf("the applier of source %s into %s is region %s's (pgjet.applier_state), not %s's: check --region", d.f.name, redact.Postgres(d.f.db), r.region, d.region)
	case r.runs():
		return true, fmt.Errorf("the applier of source %s in region %s runs (pid %d on %s, heartbeat %.1fs ago): stop pgjet-apply --name %s --region %s first",
			d.f.name, d.region, derefPID(r.pid), orDashPtr(r.host), r.age, d.f.name, d.region)
	}
	return true, nil
}

// applierRow is a target's record of its applier of a source
// (pgjet.applier_state).
type applierRow struct {
	region, state string
	pid           *int32
	host          *string
	// age is how long ago the heartbeat was, interval how often it beats.
	age, interval float64
	// lastError is the error that stopped it, or the one it retries.
	lastError *string
}

// runs reports whether the record says the applier runs, with a fresh
// heartbeat.
func (r *applierRow) runs() bool { return r.state == apply.StateRunning && r.age <= 3*r.interval }

// readApplierState reads the target's record of its applier of source;
// nil when there is none.
func readApplierState(ctx context.Context, conn *pgx.Conn, source string) (*applierRow, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('pgjet.applier_state') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up pgjet.applier_state: %w", err)
	}
	if !exists {
		return nil, nil
	}
	var r applierRow
	err := conn.QueryRow(ctx, `SELECT region, state, pid, host, extract(epoch FROM clock_timestamp() - heartbeat_at)::float8, extract(epoch FROM heartbeat_interval)::float8, last_error
		FROM pgjet.applier_state WHERE source = $1`, source).Scan(&r.region, &r.state, &r.pid, &r.host, &r.age, &r.interval, &r.lastError)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read pgjet.applier_state: %w", err)
	}
	return &r, nil
}

// dropOrigins drops the applier's replication origin on the target, and
// the one pgjet verify --repair wrote under. The origin an earlier pgjet
// shared between the cluster's databases (apply.LegacyOriginName) is
// kept: rows of other databases may name it, and a new origin could take
// its roident and pass for their writer.
func (d *regionDrop) dropOrigins(ctx context.Context) error {
	origin, repair, err := apply.TargetOrigins(ctx, d.conn, d.f.name)
	if err != nil {
		return err
	}
	legacy := apply.LegacyOriginName(d.f.name)
	var legacyExists bool
	if err := d.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)", legacy).Scan(&legacyExists); err != nil {
		return fmt.Errorf("look up replication origin %s: %w", legacy, err)
	}
	if legacyExists {
		d.log.keep("replication origin %s: an earlier pgjet wrote source %s under it in every database of this cluster, and their rows name it; drop it with SELECT pg_replication_origin_drop('%s') once no database here replicates %s",
			legacy, d.f.name, legacy, d.f.name)
	}
	for _, origin := range []string{origin, repair} {
		if err := d.dropOrigin(ctx, origin); err != nil {
			return err
		}
	}
	return nil
}

// dropOrigin drops replication origin origin on the target.
func (d *regionDrop) dropOrigin(ctx context.Context, origin string) error {
	var exists bool
	if err := d.conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)", origin).Scan(&exists); err != nil {
		return fmt.Errorf("look up replication origin %s: %w", origin, err)
	}
	if !exists {
		return nil
	}
	// The session of an applier that just stopped may hold the origin a
	// moment longer.
	settled := time.Now().Add(dropSettle)
	for {
		_, err := d.conn.Exec(ctx, "SELECT pg_replication_origin_drop($1)", origin)
		if err == nil {
			break
		}
		if pgerr.PgCode(err) != pgerr.CodeObjectInUse {
			return dropError(err, "replication origin "+origin)
		}
		if time.Now().After(settled) {
			return fmt.Errorf("replication origin %s on %s is in use: pgjet-apply (or pgjet verify --repair) of source %s still writes there; stop it first", origin, redact.Postgres(d.f.db), d.f.name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.log.remove("replication origin %s (the position it recorded on the target)", origin)
	return nil
}

// dropRows deletes the source's rows from pgjet-apply's tables, then the
// tables and schema pgjet when no other source's rows are left, in one
// transaction.
func (d *regionDrop) dropRows(ctx context.Context) error {
	tx, err := d.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var tables, left []string
	for _, name := range apply.OwnTables {
		qn := "pgjet." + name
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", qn).Scan(&exists); err != nil {
			return fmt.Errorf("look up %s: %w", qn, err)
		}
		if !exists {
			continue
		}
		tables = append(tables, qn)
		tag, err := tx.Exec(ctx, "DELETE FROM "+qn+" WHERE source = $1", d.f.name)
		if err != nil {
			return dropError(err, "the rows of source "+d.f.name+" in "+qn)
		}
		if n := tag.RowsAffected(); n == 1 {
			d.log.remove("the row of source %s in %s", d.f.name, qn)
		} else if n > 1 {
			d.log.remove("%d rows of source %s from %s", n, d.f.name, qn)
		}
		var others *string
		if err := tx.QueryRow(ctx, "SELECT string_agg(DISTINCT source, ', ') FROM "+qn).Scan(&others); err != nil {
			return fmt.Errorf("read %s: %w", qn, err)
		}
		if others != nil {
			left = append(left, fmt.Sprintf("%s (sources %s)", qn, *others))
		}
	}
	if len(left) > 0 {
		d.log.keep("pgjet's tables in schema pgjet: rows of other sources are left in %s", strings.Join(left, "; "))
	} else if len(tables) > 0 {
		// The version of the layout goes with the last of the tables.
		var versioned bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass('pgjet.schema_version') IS NOT NULL").Scan(&versioned); err != nil {
			return fmt.Errorf("look up pgjet.schema_version: %w", err)
		}
		if versioned {
			tables = append(tables, "pgjet.schema_version")
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+strings.Join(tables, ", ")); err != nil {
			return dropError(err, "tables "+strings.Join(tables, ", "))
		}
		d.log.remove("tables %s", strings.Join(tables, ", "))
		if err := dropOwnSchema(ctx, tx, d.log, "pgjet drop source removes pgjet-capture's"); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// dropMirror deletes the region's mirror of a source's stream, unless no
// mirror (the source's own stream) or other regions' appliers read it.
func (d *regionDrop) dropMirror(ctx context.Context, name string) error {
	st, err := lookStream(ctx, d.js, name)
	if st == nil {
		return err
	}
	info := st.CachedInfo()
	if info.Config.Mirror == nil {
		return nil // the source's own stream: pgjet drop source --streams removes it
	}
	var readers []string
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		readers = append(readers, ci.Name)
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("list consumers of %s: %w", name, err)
	}
	if len(readers) > 0 {
		d.log.keep("mirror %s (domain %s): consumers %s still read it", name, orDash(d.f.domain), strings.Join(readers, ", "))
		return nil
	}
	if err := deleteStream(ctx, d.js, name); err != nil {
		return err
	}
	d.log.remove("mirror %s (domain %s, of domain %s)", name, orDash(d.f.domain), stream.MirrorDomain(info.Config.Mirror))
	return nil
}

// lookStream returns stream name; nil, and no error, when there is none.
func lookStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", name, err)
	}
	return st, nil
}

// deleteStream deletes stream name; one gone meanwhile is no error.
func deleteStream(ctx context.Context, js jetstream.JetStream, name string) error {
	if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete stream %s: %w", name, err)
	}
	return nil
}

// execQuerier is a connection or a transaction.
type execQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// dropOwnSchema drops schema pgjet when nothing is left in it, or says
// what keeps it (other names what removes that).
func dropOwnSchema(ctx context.Context, q execQuerier, log *dropLog, other string) error {
	var exists bool
	var objects *string
	err := q.QueryRow(ctx, `SELECT n.oid IS NOT NULL, (SELECT string_agg(o, ', ' ORDER BY o) FROM (
			SELECT format('%s %I.%I', CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' ELSE 'table' END, n.nspname, c.relname) o FROM pg_class c
				WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
				AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
			UNION ALL SELECT format('function %s', p.oid::regprocedure) FROM pg_proc p WHERE p.pronamespace = n.oid) x)
		FROM (SELECT (SELECT oid FROM pg_namespace WHERE nspname = $1) AS oid) s
		LEFT JOIN pg_namespace n ON n.oid = s.oid`, schema.Own).Scan(&exists, &objects)
	if err != nil {
		return fmt.Errorf("look up schema %s: %w", schema.Own, err)
	}
	if !exists {
		return nil
	}
	if objects != nil {
		log.keep("schema %s: it holds %s (%s)", schema.Own, *objects, other)
		return nil
	}
	if _, err := q.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema.Own}.Sanitize()); err != nil {
		return dropError(err, "schema "+schema.Own)
	}
	log.remove("schema %s", schema.Own)
	return nil
}

// dropSettle is how long a slot or replication origin may stay in use
// after its client ended before drop refuses: Postgres ends the backend of
// a closed connection a moment after the client.
const dropSettle = 3 * time.Second

// messages renders a count of messages.
func messages(n uint64) string {
	if n == 1 {
		return "1 message"
	}
	return fmt.Sprintf("%d messages", n)
}

// codeUndefinedObject is what dropping a slot that vanished meanwhile
// reports.
const codeUndefinedObject = "42704"

// dropError names what could not be dropped, and for a missing privilege
// who may.
func dropError(err error, what string) error {
	if pgerr.PgCode(err) == pgerr.CodeInsufficientPriv {
		return fmt.Errorf("may not drop %s (%v): run pgjet drop as its owner or a superuser (event triggers: a superuser)", what, err)
	}
	return fmt.Errorf("drop %s: %w", what, err)
}

func derefPID(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orDashPtr(s *string) string {
	if s == nil {
		return "-"
	}
	return orDash(*s)
}
