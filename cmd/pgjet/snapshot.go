package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// runSnapshot takes a snapshot of a source on demand, beside its running
// pgjet-capture.
func runSnapshot(args []string) int {
	cfg := capture.DefaultConfig()
	var logf cli.LogFlags
	var dbf cli.DBFlags
	var natsf cli.NATSFlags
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
	fs.StringVar(&cfg.DB, "db", "", "source database URL (role with REPLICATION and SELECT on the tables)")
	fs.StringVar(&cfg.NATS, "nats", "", "NATS URL of the source's home region")
	fs.StringVar(&cfg.Name, "name", "", "source name given to pgjet-capture")
	fs.StringVar(&cfg.Publication, "publication", "", "publication (default pgjet_<name>)")
	fs.StringVar(&cfg.Slot, "slot", "", "replication slot of the capture (default pgjet_<name>); the snapshot's temporary slot is named after it")
	cli.CaptureTableFlags(fs, &cfg)
	cli.SnapshotFlags(fs, &cfg)
	fs.IntVar(&cfg.ChunkBytes, "chunk-bytes", cfg.ChunkBytes, "most bytes of rows in one message")
	fs.DurationVar(&cfg.ProgressInterval, "progress-interval", cfg.ProgressInterval, "how often progress is logged")
	dbf.Register(fs)
	natsf.Register(fs)
	logf.Register(fs)
	cli.Parse(fs, args)
	log, err := logf.Logger("pgjet snapshot")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet snapshot: %v\n", err)
		return 2
	}
	cfg.DB, err = dbf.URL(cfg.DB)
	if err == nil {
		cfg.NATSOptions, err = natsf.Options()
	}
	if err := errors.Join(err, cfg.Validate()); err != nil {
		fmt.Fprintf(os.Stderr, "pgjet snapshot: %v\n", err)
		return 2
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	nc, err := stream.Connect(cfg.NATS, "pgjet snapshot "+cfg.Name, cfg.NATSOptions, log)
	if err != nil {
		return fail("pgjet snapshot", err)
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		return fail("pgjet snapshot", err)
	}
	man, err := capture.New(cfg, log).TakeSnapshot(ctx, js)
	if err != nil {
		return fail("pgjet snapshot", err)
	}
	fmt.Printf("snapshot %s of source %s: LSN %s, %d tables, %d rows, %d bytes, %s\n", man.ID, cfg.Name, man.LSN,
		len(man.Tables), man.Rows, man.Bytes, man.Finished.Sub(man.Started).Round(time.Millisecond))
	return 0
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
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet replay: %v\n", err)
		return 2
	}
	o := apply.ReplayOptions{Force: force}
	var errs []error
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
		fmt.Fprintf(os.Stderr, "pgjet replay: %v\n", err)
		return 2
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
	if !schema.IsFatal(err) {
		msg = redact.Text(msg)
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", cmd, msg)
	return 1
}
