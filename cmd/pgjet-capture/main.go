// Command pgjet-capture streams a Postgres database's committed
// transactions from a logical replication slot into NATS JetStream.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/cmd/internal/metrics"
	"github.com/pgjet/pgjet/stream"
)

func main() {
	cfg := capture.DefaultConfig()
	var logf cli.LogFlags
	var natsf cli.NATSFlags
	var dbf cli.DBFlags
	var metricsAddr string
	var checkConfig bool
	fs := pflag.NewFlagSet("pgjet-capture", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet-capture streams a Postgres database into NATS JetStream.\n\nUsage:\n  pgjet-capture --db URL --nats URL --name SOURCE [flags]\n\nFlags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&cfg.DB, "db", "", "source database URL (role with REPLICATION), e.g. postgres://pgjet_capture:secret@db:5432/app")
	fs.StringVar(&cfg.NATS, "nats", "", "NATS URL of the source's home region, e.g. nats://localhost:4222")
	fs.StringVar(&cfg.Name, "name", "", "source name: the stream is PGJET_<name>")
	fs.StringSliceVar(&cfg.Tables, "tables", nil, "publish only these tables (schema.table,...); default all tables")
	fs.BoolVar(&cfg.DDL, "ddl", cfg.DDL, "capture schema changes with event triggers on the source (installed when the role is a superuser)")
	fs.BoolVar(&cfg.Sequences, "sequences", cfg.Sequences, "publish sequence values at heartbeats")
	fs.StringVar(&cfg.Keyless, "keyless", "", "what to do with published tables that have no primary key nor replica identity, whose UPDATE and DELETE Postgres would refuse: identity-full (set REPLICA IDENTITY FULL), exclude (leave them out of the publication) or inserts-only (publish their inserts only); unset, capture refuses to start and names them")
	fs.StringSliceVar(&cfg.KeylessTables, "keyless-table", nil, "--keyless per table: schema.table=CHOICE,... (glob patterns, first match wins), e.g. 'public.log=inserts-only,audit.*=exclude'")
	fs.StringVar(&cfg.Partitions, "partitions", cfg.Partitions, "publish partition changes as the partition (leaf) or as the partitioned table (root)")
	fs.StringVar(&cfg.Slot, "slot", "", "replication slot (default pgjet_<name>, lower-cased, with '-' as '_')")
	fs.StringVar(&cfg.Publication, "publication", "", "publication (default: the slot's name)")
	fs.IntVar(&cfg.ChunkBytes, "chunk-bytes", cfg.ChunkBytes, "target size of one message; larger transactions are split")
	fs.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", 0, "largest message to publish (default: the NATS server's max_payload); set the smallest max_payload of the regions' servers when it is below the hub's")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "most messages awaiting JetStream acks")
	fs.Int64Var(&cfg.WindowBytes, "window-bytes", cfg.WindowBytes, "most bytes awaiting JetStream acks")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "heartbeat interval (0 disables)")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", cfg.StatusInterval, "how often the confirmed position is reported to Postgres")
	fs.DurationVar(&cfg.OutageLimit, "nats-outage-limit", cfg.OutageLimit, "how long the stream may stay unreachable (a NATS cluster without a leader for it) before this says so in one line and /readyz fails; it keeps retrying")
	fs.DurationVar(&cfg.Stream.MaxAge, "stream-max-age", cfg.Stream.MaxAge, "stream retention when capture creates it: must outlast the longest region outage")
	fs.Int64Var(&cfg.Stream.MaxBytes, "stream-max-bytes", 0, "stream size limit when capture creates it (0 = unlimited)")
	fs.IntVar(&cfg.Stream.Replicas, "stream-replicas", 0, "stream replicas in a NATS cluster (default: the existing streams' number, 1 for new ones)")
	cli.CaptureTableFlags(fs, &cfg)
	cli.SnapshotFlags(fs, &cfg)
	noSnapshot := fs.Bool("no-snapshot", false, "take no initial snapshot: stream changes only (for replicas seeded by other means)")
	fs.DurationVar(&cfg.SnapshotEvery, "snapshot-every", 0, "take a new snapshot at this interval, e.g. 24h (0 = only the initial one)")
	fs.StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, e.g. :9187 (default off)")
	fs.BoolVar(&checkConfig, "check-config", false, "check the configuration, Postgres and NATS, print a report and exit (0 when all pass)")
	dbf.Register(fs)
	natsf.Register(fs)
	logf.Register(fs)
	cli.ParseWithConfig(fs, os.Args[1:])
	cfg.Snapshot = !*noSnapshot

	log, lerr := logf.Logger("pgjet-capture")
	var err error
	cfg.DB, err = dbf.URL(cfg.DB)
	if err == nil {
		cfg.NATSOptions, err = natsf.Options()
	}
	if err = errors.Join(err, cfg.Validate(), lerr); err != nil {
		cli.Usage("pgjet-capture", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if checkConfig {
		os.Exit(cli.Report(os.Stdout, append([]stream.CheckResult{cli.ConfigResult(fs)}, capture.Check(ctx, cfg)...)))
	}
	c := capture.New(cfg, log)
	g, gctx := errgroup.WithContext(ctx)
	if metricsAddr != "" {
		m, err := metrics.NewCapture(c, cfg, log)
		if err != nil {
			logf.Exit("pgjet-capture", log, err)
		}
		defer m.Close()
		g.Go(func() error { return metrics.Serve(gctx, metricsAddr, m, log) })
	}
	// The metrics server ends with the capture, whatever ended it.
	g.Go(func() error { defer stop(); return c.Run(gctx) })
	logf.Exit("pgjet-capture", log, g.Wait())
}
