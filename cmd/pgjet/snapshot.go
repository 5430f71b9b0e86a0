package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// runSnapshot takes a snapshot of a source on demand, beside its running
// pgjet-capture.
func runSnapshot(args []string) int {
	var f copyFlags
	fs := pflag.NewFlagSet("pgjet snapshot", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet snapshot copies the schema and every captured table of a source into its snapshot\n"+
			"stream (PGJET_SNAP_<name>), consistent at one WAL position, while pgjet-capture keeps\n"+
			"streaming. Appliers of empty databases and pgjet replay build from the newest snapshot.\n"+
			"Give it the filters pgjet-capture runs with. An interrupted snapshot is resumed by the\n"+
			"next run.\n\n"+
			"Usage:\n  pgjet snapshot --db URL --nats URL --name SOURCE [flags]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "the tables", "the snapshot's")
	fs.DurationVar(&f.cfg.ProgressInterval, "progress-interval", f.cfg.ProgressInterval, "how often progress is logged")
	ctx, stop := cli.SignalContext()
	defer stop()
	c, js, done, code := f.start(fs, args, nil)
	if c == nil {
		return code
	}
	defer done()
	man, err := c.TakeSnapshot(ctx, js)
	if err != nil {
		return fail("pgjet snapshot", err)
	}
	fmt.Printf("snapshot %s of source %s: LSN %s, %d tables, %d rows, %d bytes, %s\n", man.ID, f.cfg.Name, man.LSN,
		len(man.Tables), man.Rows, man.Bytes, man.Finished.Sub(man.Started).Round(time.Millisecond))
	return 0
}

// copyFlags are the flags of the commands that copy a source's tables
// beside its running pgjet-capture (pgjet snapshot, pgjet resync).
type copyFlags struct {
	cfg   capture.Config
	logf  cli.LogFlags
	dbf   cli.DBFlags
	natsf cli.NATSFlags
}

// register adds the flags; what names what the role reads, whose the
// temporary slot.
func (f *copyFlags) register(fs *pflag.FlagSet, what, whose string) {
	f.cfg = capture.DefaultConfig()
	fs.StringVar(&f.cfg.DB, "db", "", "source database URL (role with REPLICATION and SELECT on "+what+")")
	fs.StringVar(&f.cfg.NATS, "nats", "", "NATS URL of the source's home region")
	fs.StringVar(&f.cfg.Name, "name", "", "source name given to pgjet-capture")
	fs.StringVar(&f.cfg.Publication, "publication", "", "publication (default: the slot's name)")
	fs.StringVar(&f.cfg.Slot, "slot", "", "replication slot of the capture (default pgjet_<name>, lower-cased, with '-' as '_'); "+whose+" temporary slot is named after it")
	cli.CaptureTableFlags(fs, &f.cfg)
	cli.SnapshotFlags(fs, &f.cfg)
	fs.IntVar(&f.cfg.ChunkBytes, "chunk-bytes", f.cfg.ChunkBytes, "most bytes of rows in one message")
	f.dbf.Register(fs)
	f.natsf.Register(fs)
	f.logf.Register(fs)
}

// start parses args (bad: the command's own flags' error, checked with
// the others) and connects to NATS. A nil Capture comes with the exit
// status; otherwise done closes the connection.
func (f *copyFlags) start(fs *pflag.FlagSet, args []string, bad func() error) (c *capture.Capture, js jetstream.JetStream, done func(), code int) {
	cli.Parse(fs, args)
	log, lerr := f.logf.Logger(fs.Name())
	var err error
	f.cfg.DB, err = f.dbf.URL(f.cfg.DB)
	if err == nil {
		f.cfg.NATSOptions, err = f.natsf.Options()
	}
	err = errors.Join(err, f.cfg.Validate(), lerr)
	if bad != nil {
		err = errors.Join(err, bad())
	}
	if err != nil {
		return nil, nil, nil, cli.BadUsage(fs.Name(), err)
	}
	nc, err := stream.Connect(f.cfg.NATS, fs.Name()+" "+f.cfg.Name, f.cfg.NATSOptions, log)
	if err != nil {
		return nil, nil, nil, fail(fs.Name(), err)
	}
	if js, err = stream.NewJetStream(nc, ""); err != nil {
		nc.Close()
		return nil, nil, nil, fail(fs.Name(), err)
	}
	return capture.New(f.cfg, log), js, nc.Close, 0
}

// runReplay rebuilds a database from a source's snapshots and changes.
func runReplay(args []string) int {
	cfg := apply.DefaultConfig()
	var logf cli.LogFlags
	var dbf cli.DBFlags
	var natsf cli.NATSFlags
	var untilLSN, untilTime string
	var force bool
	fs := pflag.NewFlagSet("pgjet replay", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet replay rebuilds a database from a source's stream: the newest snapshot taken\n"+
			"before the point, then the changes up to it. Without --until-* it replays to the end\n"+
			"the stream had when it started. It needs no connection to the source. It refuses a\n"+
			"target with tables unless a replay of the same source left it (then it rolls it\n"+
			"forward) or --force is given.\n\n"+
			"Usage:\n  pgjet replay --nats URL --name SOURCE --db URL [--until-lsn LSN | --until-time RFC3339]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&cfg.DB, "db", "", "database to rebuild (empty), e.g. postgres://user:secret@host:5432/restore")
	fs.StringVar(&cfg.NATS, "nats", "", "NATS URL of a region holding the source's streams (or their mirrors)")
	fs.StringVar(&cfg.Name, "name", "", "source name given to pgjet-capture")
	fs.StringVar(&cfg.Domain, "domain", "", "JetStream domain of the streams (default: the connected server's)")
	fs.StringVar(&untilLSN, "until-lsn", "", "replay the transactions whose commit LSN (as pgjet tail shows it) is at most this source LSN, e.g. 0/3A2B1C0; inclusive")
	fs.StringVar(&untilTime, "until-time", "", "replay the transactions committed at or before this time (RFC 3339); inclusive")
	fs.BoolVar(&force, "force", false, "replay into a target that holds the tables already: the snapshot's tables are emptied and loaded (needs session_replication_role = replica), others left as they are")
	fs.BoolVar(&cfg.NoOwners, "no-owners", false, "restore without the source's owners and privileges and replay schema changes as the connecting role (every object then belongs to it)")
	fs.DurationVar(&cfg.ProgressInterval, "progress-interval", cfg.ProgressInterval, "how often progress is logged")
	dbf.Register(fs)
	natsf.Register(fs)
	logf.Register(fs)
	cli.Parse(fs, args)
	log, err := logf.Logger("pgjet replay")
	o := apply.ReplayOptions{Force: force}
	errs := []error{err}
	if cfg.DB, err = dbf.URL(cfg.DB); err != nil {
		errs = append(errs, err)
	}
	if cfg.NATSOptions, err = natsf.Options(); err != nil {
		errs = append(errs, err)
	}
	if untilLSN != "" && untilTime != "" {
		errs = append(errs, errors.New("give --until-lsn or --until-time, not both"))
	}
	if untilLSN != "" {
		if o.UntilLSN, err = stream.ParseLSN(untilLSN); err != nil {
			errs = append(errs, fmt.Errorf("--until-lsn %q: want an LSN like 0/3A2B1C0", untilLSN))
		}
	}
	if untilTime != "" {
		if o.UntilTime, err = time.Parse(time.RFC3339Nano, untilTime); err != nil {
			errs = append(errs, fmt.Errorf("--until-time %q: want RFC 3339, like 2026-11-26T10:00:00Z", untilTime))
		}
	}
	cfg.Region = "replay"
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return cli.BadUsage("pgjet replay", err)
	}
	o.Config = cfg
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := apply.Replay(ctx, o, log); err != nil {
		return fail("pgjet replay", err)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "pgjet replay: interrupted; run it again to go on")
		return 1
	}
	return 0
}

// fail prints one line for err and returns the exit status 1.
func fail(cmd string, err error) int {
	msg := err.Error()
	if !pgerr.IsFatal(err) {
		msg = redact.Text(msg)
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", cmd, msg)
	return 1
}

// runResync re-copies one table of a source into every region, beside its
// running pgjet-capture.
func runResync(args []string) int {
	var f copyFlags
	var table string
	fs := pflag.NewFlagSet("pgjet resync", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet resync re-copies one captured table into every region while changes keep flowing,\n"+
			"as pglogical's alter_subscription_resynchronize_table does. It writes a marker into the\n"+
			"source's WAL, which pgjet-capture publishes in the change stream, then copies the table\n"+
			"alone, at a point after the marker, into the snapshot stream (PGJET_SNAP_<name>, as a\n"+
			"resync: restores and replays never build from it). Each region's applier, at the marker,\n"+
			"waits for the copy, replaces the table's rows with it, and passes over the table's\n"+
			"changes committed before the copy's point. pgjet-capture must run. Give it the filters\n"+
			"pgjet-capture runs with. A source that applies other sources too (active-active) is\n"+
			"refused unless --force: stop writes to the table in every region first.\n\n"+
			"Usage:\n  pgjet resync --db URL --nats URL --name SOURCE --table SCHEMA.TABLE [flags]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "the table", "the copy's")
	fs.StringVar(&table, "table", "", "the captured table to re-copy, as schema.table")
	var force bool
	fs.BoolVar(&force, "force", false, "re-copy a table of a source that applies other sources too (active-active), once writes to it have stopped in every region and reached the source")
	var id pgx.Identifier
	ctx, stop := cli.SignalContext()
	defer stop()
	c, js, done, code := f.start(fs, args, func() (err error) {
		if table == "" {
			return errors.New("--table is required (the table to re-copy, as schema.table)")
		}
		id, err = schema.ParseTable(table)
		return err
	})
	if c == nil {
		return code
	}
	defer done()
	name := id[0] + "." + id[1]
	if !force {
		if err := writtenElsewhere(ctx, f.cfg.DB); err != nil {
			return fail("pgjet resync", err)
		}
	}
	man, err := c.Resync(ctx, js, name)
	if err != nil {
		return fail("pgjet resync", err)
	}
	fmt.Printf("resync %s of %s (source %s): copied at LSN %s, %d rows, %d bytes, %s; each region's applier replaces the table's rows with it when it reaches the resync's marker\n",
		man.ID, name, f.cfg.Name, man.LSN, man.Rows, man.Bytes, man.Finished.Sub(man.Started).Round(time.Millisecond))
	return 0
}

// writtenElsewhere refuses a resync of a source whose database applies
// other pgjet sources: in active-active the regions write its tables too,
// and each region's applier replaces the table's rows with a copy of what
// had reached the source by the copy's point, so a region's writes still
// on their way there would be lost in that region (its capture publishes
// them once; the source applies them, the region no longer has them) and
// the regions would stay apart. With writes to the table stopped in every
// region and applied everywhere, --force re-copies.
func writtenElsewhere(ctx context.Context, db string) error {
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return fmt.Errorf("source: %w", pgerr.ClassifyConnect(db, err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	sources, err := apply.AppliedSources(ctx, conn)
	if err != nil || len(sources) == 0 {
		return err
	}
	return pgerr.Fatalf(nil, "refused: the source database applies pgjet sources %s too (active-active: other regions write its tables), and each region's applier replaces the table's rows with a copy of what had reached the source by the copy's point, so a region's writes still on their way would be lost there and the regions would stay apart; stop writes to the table in every region and let every applier catch up, then run again with --force, keeping the writes stopped until each region's applier has logged the re-copy",
		strings.Join(sources, ", "))
}
