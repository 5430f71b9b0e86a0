// Command pgjet-apply replays a source's JetStream change stream into a
// region's Postgres database.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/cmd/internal/metrics"
	"github.com/pgjet/pgjet/stream"
)

func main() {
	cfg := apply.DefaultConfig()
	var logf cli.LogFlags
	var natsf cli.NATSFlags
	var dbf cli.DBFlags
	var metricsAddr string
	var checkConfig bool
	var stall time.Duration
	fs := pflag.NewFlagSet("pgjet-apply", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet-apply replays a source's change stream into a region's Postgres.\n\nUsage:\n  pgjet-apply --db URL --nats URL --name SOURCE --region REGION [flags]\n\nFlags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&cfg.DB, "db", "", "target database URL, e.g. postgres://pgjet_apply:secret@replica:5432/app")
	fs.StringVar(&cfg.NATS, "nats", "", "NATS URL of this region, e.g. nats://localhost:4222")
	fs.StringVar(&cfg.Name, "name", "", "source name given to pgjet-capture")
	fs.StringVar(&cfg.Region, "region", "", "this region's name (names the durable consumer)")
	fs.StringVar(&cfg.Domain, "domain", "", "JetStream domain to consume in (default: the connected server's)")
	fs.StringVar(&cfg.UpstreamDomain, "upstream-domain", "", "the stream's home domain: keep a local mirror of it and consume that")
	fs.DurationVar(&cfg.MirrorMaxAge, "mirror-max-age", cfg.MirrorMaxAge, "with --upstream-domain: how long the mirror keeps changes (0 = no bound); keep it at least the capture's --stream-max-age")
	fs.Int64Var(&cfg.MirrorMaxBytes, "mirror-max-bytes", 0, "with --upstream-domain: the mirror's size limit in bytes (0 = unlimited); keep it at least the capture's --stream-max-bytes")
	fs.IntVar(&cfg.GroupTxns, "group-txns", cfg.GroupTxns, "most source transactions in one target transaction")
	fs.IntVar(&cfg.GroupBytes, "group-bytes", cfg.GroupBytes, "most bytes of changes in one target transaction")
	fs.DurationVar(&cfg.GroupDelay, "group-delay", cfg.GroupDelay, "longest a target transaction waits for more source transactions")
	fs.IntVar(&cfg.PipelineStatements, "pipeline", cfg.PipelineStatements, "most statements sent in one round trip")
	fs.IntVar(&cfg.StatementCache, "statement-cache", cfg.StatementCache, "most change statements kept prepared on the target (the least recently used are deallocated)")
	fs.StringVar(&cfg.SynchronousCommit, "synchronous-commit", cfg.SynchronousCommit, "synchronous_commit of the apply session (off is safe: the position commits with the rows)")
	fs.BoolVar(&cfg.SessionReplicationRole, "replica-role", cfg.SessionReplicationRole, "apply with session_replication_role = replica (triggers and FKs off; needs superuser)")
	fs.DurationVar(&cfg.OutageLimit, "nats-outage-limit", cfg.OutageLimit, "how long the stream may stay unreachable (a NATS cluster without a leader for it) before this says so in one line and /readyz fails; it keeps retrying")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "after SIGTERM, how long the last batch and commit may take before a target that does not answer is given up on (its unconfirmed work is applied again on restart)")
	fs.DurationVar(&cfg.StateInterval, "state-interval", cfg.StateInterval, "how often to record this applier's heartbeat in the target's pgjet.applier_state, which pgjet status reads (0 = record no state)")
	fs.StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, e.g. :9187 (default off)")
	fs.DurationVar(&stall, "stall-timeout", metrics.DefaultStallTimeout, "/readyz fails after this long without a transaction or heartbeat (keep above 3x the capture's --heartbeat)")
	fs.StringVar(&cfg.ConflictPolicy, "conflict", cfg.ConflictPolicy, "conflict policy: source-wins, last-writer-wins, keep-local or error")
	conflictTables := fs.String("conflict-table", "", "per-table conflict policies, e.g. 'public.accounts=error,public.prefs=keep-local'")
	fs.StringVar(&cfg.LocalName, "local-name", "", "the source name this database's own pgjet-capture publishes under (active-active); last-writer-wins needs it")
	fs.StringSliceVar(&cfg.FollowSequences, "follow-sequences", nil, "with --local-name, sequences (schema.name patterns, repeatable or comma-separated) that take the source's values; the others stay this region's own")
	fs.BoolVar(&cfg.SkipSnapshot, "skip-snapshot", false, "follow changes only, even on an empty target (for a target seeded by other means)")
	fs.BoolVar(&cfg.NoOwners, "no-owners", false, "give up the source's owners and privileges: restore snapshots without owners, GRANTs and default privileges, and replay schema changes as the apply role instead of their author, so every object belongs to the apply role (only where the source's roles cannot exist; SECURITY DEFINER functions then run as the apply role)")
	fs.StringVar(&cfg.OnBadMessage, "on-bad-message", cfg.OnBadMessage, "what a message that cannot be decoded, or belongs to another source, does: stop (exit 1 naming it) or dead-letter (republish it to pgjetdlq.<name>.<region>, kept in stream PGJET_DLQ_<name>_<region> of this applier's domain, and go on)")
	fs.BoolVar(&checkConfig, "check-config", false, "check the configuration, Postgres and NATS, print a report and exit (0 when all pass)")
	dbf.Register(fs)
	natsf.Register(fs)
	logf.Register(fs)
	cli.ParseWithConfig(fs, os.Args[1:])
	if *conflictTables != "" {
		m, err := apply.ParseConflictTables(*conflictTables)
		if err != nil {
			cli.Usage("pgjet-apply", fmt.Errorf("--conflict-table: %w", err))
		}
		cfg.ConflictTables = m
	}

	log, lerr := logf.Logger("pgjet-apply")
	var err error
	cfg.DB, err = dbf.URL(cfg.DB)
	if err == nil {
		cfg.NATSOptions, err = natsf.Options()
	}
	if err = errors.Join(err, cfg.Validate(), lerr); err != nil {
		cli.Usage("pgjet-apply", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if checkConfig {
		os.Exit(cli.Report(os.Stdout, append([]stream.CheckResult{cli.ConfigResult(fs)}, apply.Check(ctx, cfg)...)))
	}
	a := apply.New(cfg, log)
	g, gctx := errgroup.WithContext(ctx)
	if metricsAddr != "" {
		g.Go(func() error { return metrics.Serve(gctx, metricsAddr, metrics.NewApply(a, cfg, stall), log) })
	}
	// The metrics server ends with the applier, whatever ended it.
	g.Go(func() error { defer stop(); return a.Run(gctx) })
	logf.Exit("pgjet-apply", log, g.Wait())
}
