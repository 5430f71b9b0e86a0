package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// The benchmark's fixed names.
const (
	benchDatabase = "bench"
	benchSource   = "bench" // capture's slot and publication are pgjet_bench
	benchRegion   = "bench"
	benchNative   = "bench_native" // publication, subscription and slot of the native run
	benchClients  = 4
	benchThreads  = 2
)

// benchTables are the tables whose digests must match after both drains.
var benchTables = []string{
	"public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers",
	"public.pgbench_history", "public.bench_marker",
}

// benchSettings keep checkpoints from dominating the drains; all three
// clusters run with them (and with fsync on).
var benchSettings = map[string]string{
	"max_wal_size":       "4GB",
	"checkpoint_timeout": "30min",
}

// Drain orders.
const (
	orderPgjetFirst  = "pgjet-first"
	orderNativeFirst = "native-first"
)

type benchFlags struct {
	scale        int
	txns         int
	order        string
	json         bool
	logLevel     string
	cpuProfile   string
	drainTimeout time.Duration
	snapshot     bool
}

func runBench(args []string) int {
	f := benchFlags{scale: 10, txns: 100000, order: orderPgjetFirst, logLevel: "warn", drainTimeout: time.Hour}
	fs := pflag.NewFlagSet("pgjet bench", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet bench drains the same pgbench backlog through Postgres' native logical\n"+
			"replication (publication/subscription) and through pgjet (capture -> JetStream ->\n"+
			"apply), one after the other on this machine, and prints both times and their ratio.\n\n"+
			"It starts three throwaway Postgres 15 clusters with fsync on (primary, native\n"+
			"subscriber, pgjet target) and an embedded NATS server with JetStream, loads\n"+
			"pgbench -i on the primary, copies it to both targets, creates both slots, writes\n"+
			"the backlog with pgbench -N, then times each drain until the last transaction is\n"+
			"visible on its target. Exit 0 when both drains completed and both targets equal\n"+
			"the primary; the ratio is reported, not asserted.\n\n"+
			"Usage:\n  pgjet bench [--scale N] [--txns N] [--order pgjet-first|native-first] [--json]\n\n"+
			"Needs PostgreSQL 15 (server and client tools, including pgbench).\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.IntVar(&f.scale, "scale", f.scale, "pgbench scale of the initial data (100 000 accounts per unit)")
	fs.IntVar(&f.txns, "txns", f.txns, fmt.Sprintf("pgbench -N transactions in the backlog, split over %d clients", benchClients))
	fs.StringVar(&f.order, "order", f.order, "which drain runs first: pgjet-first (the second run's warmer cache favours native) or native-first")
	fs.BoolVar(&f.json, "json", false, "also print the result as one JSON object on stdout (progress then goes to stderr)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (capture, apply, embedded NATS) during the pgjet drain to this file")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", f.drainTimeout, "give up on a drain that takes longer than this")
	fs.BoolVar(&f.snapshot, "snapshot", true, "also race a pgjet snapshot + restore of the initial data against pg_dump | psql")
	fs.StringVar(&f.logLevel, "log-level", f.logLevel, "log level of the components (stderr): trace, debug, info, warn, error")
	cli.Parse(fs, args)

	if err := f.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "pgjet bench: %v\n", err)
		return 2
	}
	lvl, err := zerolog.ParseLevel(f.logLevel)
	if err != nil || lvl == zerolog.NoLevel {
		fmt.Fprintf(os.Stderr, "pgjet bench: --log-level %q: use trace, debug, info, warn or error\n", f.logLevel)
		return 2
	}
	tools, err := findBenchTools()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet bench: %v\n", err)
		return 1
	}
	log := zerolog.New(cli.ConsoleWriter()).
		Level(lvl).With().Timestamp().Str("cmd", "pgjet bench").Logger()
	var out io.Writer = os.Stdout
	if f.json {
		out = os.Stderr // stdout carries only the JSON object
	}
	b := &bench{f: f, log: log, tools: tools, out: out, fail: make(chan error, 2)}
	return b.run()
}

func (f *benchFlags) validate() error {
	if f.scale < 1 {
		return errors.New("--scale must be at least 1")
	}
	if f.txns < benchClients {
		return fmt.Errorf("--txns must be at least %d (one per pgbench client)", benchClients)
	}
	if f.order != orderPgjetFirst && f.order != orderNativeFirst {
		return fmt.Errorf("--order %q: use %s or %s", f.order, orderPgjetFirst, orderNativeFirst)
	}
	if f.drainTimeout <= 0 {
		return errors.New("--drain-timeout must be positive")
	}
	return nil
}

// bench is one run of `pgjet bench`.
type bench struct {
	f     benchFlags
	log   zerolog.Logger
	tools benchTools
	out   io.Writer

	primary, native, target *local.Postgres
	nats                    *local.NATS
	subCreated              bool // the subscription exists on the native subscriber

	capture, applier *benchComponent
	// fail receives the error of a component that stopped by itself.
	fail chan error

	// backlogStart and backlogEnd are the primary's WAL positions before
	// the backlog and after the marker.
	backlogStart, backlogEnd stream.LSN

	started time.Time
	res     benchResult
}

// benchResult is what the run measured; its JSON form is printed with --json.
type benchResult struct {
	Scale            int     `json:"scale"`
	Txns             int64   `json:"txns"`
	WALBytes         int64   `json:"wal_bytes"`
	Order            string  `json:"order"`
	NativeSeconds    float64 `json:"native_seconds"`
	PgjetSeconds     float64 `json:"pgjet_seconds"`
	NativeTxnsPerSec float64 `json:"native_txns_per_sec"`
	PgjetTxnsPerSec  float64 `json:"pgjet_txns_per_sec"`
	Ratio            float64 `json:"ratio_native_over_pgjet"`
	NativeMatch      bool    `json:"native_digest_match"`
	PgjetMatch       bool    `json:"pgjet_digest_match"`
	// The snapshot race (initial data, before the backlog).
	SnapshotRows    int64   `json:"snapshot_rows,omitempty"`
	SnapshotBytes   int64   `json:"snapshot_bytes,omitempty"`
	DumpSeconds     float64 `json:"dump_restore_seconds,omitempty"`
	SnapshotSeconds float64 `json:"snapshot_seconds,omitempty"`
	RestoreSeconds  float64 `json:"restore_seconds,omitempty"`
	SnapshotRatio   float64 `json:"ratio_dump_over_pgjet,omitempty"`
	SnapshotMatch   bool    `json:"snapshot_digest_match,omitempty"`
	Fsync           bool    `json:"fsync"`
	CPUs            int     `json:"cpus"`
}

func (b *bench) printf(format string, args ...any) {
	fmt.Fprintf(b.out, format, args...)
}

// step prints a progress line prefixed with the time since the start.
func (b *bench) step(format string, args ...any) {
	b.printf("[%6s] %s\n", time.Since(b.started).Truncate(100*time.Millisecond), fmt.Sprintf(format, args...))
}

func (b *bench) run() int {
	b.started = time.Now()
	ctx, stop := cli.SignalContext()
	defer stop()
	defer b.shutdown()

	if err := b.measure(ctx); err != nil {
		if ctx.Err() != nil {
			b.step("interrupted; cleaning up")
			return 1
		}
		fmt.Fprintf(os.Stderr, "pgjet bench: %v\n", err)
		return 1
	}
	b.report()
	if b.f.snapshot && !b.res.SnapshotMatch {
		fmt.Fprintf(os.Stderr, "pgjet bench: the database restored from the snapshot does not equal the primary (see the verify lines above)\n")
		return 1
	}
	if !b.res.NativeMatch || !b.res.PgjetMatch {
		fmt.Fprintf(os.Stderr, "pgjet bench: a target does not equal the primary (see the verify lines above)\n")
		return 1
	}
	return 0
}

// measure does everything but cleaning up: setup, backlog, both drains and
// the verification. It fills b.res.
func (b *bench) measure(ctx context.Context) error {
	b.res = benchResult{Scale: b.f.scale, Order: b.f.order, Fsync: true, CPUs: runtime.NumCPU()}
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.load(ctx); err != nil {
		return err
	}
	if err := b.createSlots(ctx); err != nil {
		return err
	}
	if err := b.backlog(ctx); err != nil {
		return err
	}
	drains := []func(context.Context) error{b.drainPgjet, b.drainNative}
	if b.f.order == orderNativeFirst {
		drains[0], drains[1] = drains[1], drains[0]
	}
	for _, drain := range drains {
		if err := b.checkpoint(ctx); err != nil {
			return err
		}
		if err := drain(ctx); err != nil {
			return err
		}
	}
	if err := b.verify(ctx); err != nil {
		return err
	}
	// After the drains, so that its checkpoint and copies do not change
	// the WAL the drains read.
	if b.f.snapshot {
		return b.snapshotRace(ctx)
	}
	return nil
}

// setup starts the three clusters and NATS.
func (b *bench) setup(ctx context.Context) error {
	b.step("starting 3 Postgres clusters (primary, native subscriber, pgjet target; fsync on) and NATS (JetStream, file store)...")
	clusters := make([]*local.Postgres, 3)
	names := []string{"primary", "native", "pgjet"}
	g, gctx := errgroup.WithContext(ctx)
	for i, name := range names {
		g.Go(func() error {
			p, err := local.StartPostgres(gctx, local.PostgresOptions{Name: "bench-" + name, Fsync: true, Settings: benchSettings}, b.log)
			if err != nil {
				return fmt.Errorf("start postgres %s: %w", name, err)
			}
			clusters[i] = p
			if err := p.CreateDatabase(gctx, benchDatabase); err != nil {
				return fmt.Errorf("create database on %s: %w", name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		n, err := local.StartNATS(local.NATSOptions{Name: "bench"}, b.log)
		if err != nil {
			return fmt.Errorf("start nats: %w", err)
		}
		b.nats = n
		return nil
	})
	err := g.Wait()
	// Whatever started is stopped by shutdown, even on error.
	b.primary, b.native, b.target = clusters[0], clusters[1], clusters[2]
	if err != nil {
		return err
	}
	b.step("  primary           %s", b.primary.URL(benchDatabase))
	b.step("  native subscriber %s", b.native.URL(benchDatabase))
	b.step("  pgjet target      %s", b.target.URL(benchDatabase))
	b.step("  nats              %s", b.nats.ClientURL())
	return nil
}

// load creates pgbench's data and bench_marker on the primary and copies
// schema and data to both targets.
func (b *bench) load(ctx context.Context) error {
	primaryURL := b.primary.URL(benchDatabase)
	b.step("pgbench -i -s %d on the primary (%d accounts)...", b.f.scale, b.f.scale*100000)
	if _, err := b.tools.pgbench(ctx, b.log, "-i", "-s", strconv.Itoa(b.f.scale), primaryURL); err != nil {
		return fmt.Errorf("load pgbench data: %w", err)
	}
	if err := b.primary.Exec(ctx, benchDatabase, "CREATE TABLE bench_marker (id int PRIMARY KEY)"); err != nil {
		return fmt.Errorf("create bench_marker: %w", err)
	}
	b.step("copying schema and data to the native subscriber and the pgjet target (pg_dump | psql)...")
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range []*local.Postgres{b.native, b.target} {
		g.Go(func() error {
			if err := b.tools.dumpRestore(gctx, primaryURL, p.URL(benchDatabase)); err != nil {
				return fmt.Errorf("copy the primary to %s: %w", p.Name(), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// createSlots creates both publications and both slots before the
// backlog is written, so each drain starts from the same position.
func (b *bench) createSlots(ctx context.Context) error {
	ccfg := b.captureConfig()
	b.step("creating publication and subscription %s (disabled, slot created) and publication and slot %s...", benchNative, ccfg.Slot)
	if err := b.primary.Exec(ctx, benchDatabase, "CREATE PUBLICATION "+benchNative+" FOR ALL TABLES"); err != nil {
		return fmt.Errorf("create native publication: %w", err)
	}
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=postgres", b.primary.Port(), benchDatabase)
	sql := fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (copy_data = false, enabled = false)",
		benchNative, conninfo, benchNative)
	if err := b.native.Exec(ctx, benchDatabase, sql); err != nil {
		return fmt.Errorf("create native subscription: %w", err)
	}
	b.subCreated = true
	// Two statements: a slot cannot be created in a transaction that wrote.
	if err := b.primary.Exec(ctx, benchDatabase, "CREATE PUBLICATION "+ccfg.Publication+" FOR ALL TABLES"); err != nil {
		return fmt.Errorf("create pgjet publication: %w", err)
	}
	if err := b.primary.Exec(ctx, benchDatabase, "SELECT pg_create_logical_replication_slot('"+ccfg.Slot+"', 'pgoutput')"); err != nil {
		return fmt.Errorf("create pgjet slot: %w", err)
	}
	// The stream exists before the drain so that the applier, started with
	// capture, finds it at once instead of retrying with backoff.
	nc, err := stream.Connect(b.nats.ClientURL(), "pgjet bench", stream.ConnectOptions{}, b.log)
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	if _, err := stream.EnsureStream(ctx, js, benchSource, ccfg.Stream); err != nil {
		return err
	}
	return nil
}

// captureConfig is the configuration of the pgjet run's capture.
func (b *bench) captureConfig() capture.Config {
	cfg := capture.DefaultConfig()
	cfg.DB, cfg.Name = b.primary.URL(benchDatabase), benchSource
	if b.nats != nil {
		cfg.NATS = b.nats.ClientURL()
	}
	cfg.HeartbeatInterval = time.Second
	_ = cfg.Validate() // fills Slot and Publication; checked again before use
	return cfg
}

// backlog writes the pgbench -N transactions and the marker.
func (b *bench) backlog(ctx context.Context) error {
	primaryURL := b.primary.URL(benchDatabase)
	conn, err := benchConnect(ctx, primaryURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var before string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&before); err != nil {
		return fmt.Errorf("read the primary's WAL position: %w", err)
	}
	if b.backlogStart, err = stream.ParseLSN(before); err != nil {
		return fmt.Errorf("read the primary's WAL position: %w", err)
	}
	per := b.f.txns / benchClients
	b.step("writing the backlog: pgbench -N -n -c %d -j %d -t %d (%d transactions)...", benchClients, benchThreads, per, per*benchClients)
	t0 := time.Now()
	out, err := b.tools.pgbench(ctx, b.log, "-N", "-n", "-c", strconv.Itoa(benchClients), "-j", strconv.Itoa(benchThreads),
		"-t", strconv.Itoa(per), primaryURL)
	if err != nil {
		return fmt.Errorf("write the backlog: %w", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO bench_marker VALUES (1)"); err != nil {
		return fmt.Errorf("insert the marker: %w", err)
	}
	var after string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint, (SELECT count(*) FROM pgbench_history)",
		before).Scan(&after, &b.res.WALBytes, &b.res.Txns); err != nil {
		return fmt.Errorf("measure the backlog: %w", err)
	}
	if b.backlogEnd, err = stream.ParseLSN(after); err != nil {
		return fmt.Errorf("measure the backlog: %w", err)
	}
	b.step("backlog written in %.1f s (%s): %d transactions, %s of WAL", time.Since(t0).Seconds(), pgbenchTPS(out),
		b.res.Txns, benchMB(b.res.WALBytes))
	return nil
}

// checkpoint runs CHECKPOINT on all clusters so that neither drain pays
// for dirty buffers the previous step left behind.
func (b *bench) checkpoint(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range []*local.Postgres{b.primary, b.native, b.target} {
		g.Go(func() error { return p.Exec(gctx, benchDatabase, "CHECKPOINT") })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// verify compares both targets' digests with the primary's.
func (b *bench) verify(ctx context.Context) error {
	b.step("verifying: digests of %s...", strings.Join(benchTables, ", "))
	var prim, nat, pj []local.TableDigest
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range []struct {
		p   *local.Postgres
		out *[]local.TableDigest
	}{{b.primary, &prim}, {b.native, &nat}, {b.target, &pj}} {
		g.Go(func() error {
			r, err := local.Digest(gctx, d.p.URL(benchDatabase), benchTables...)
			if err != nil {
				return fmt.Errorf("digest %s: %w", d.p.Name(), err)
			}
			*d.out = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var rows []string
	for _, d := range prim {
		rows = append(rows, fmt.Sprintf("%s %d", strings.TrimPrefix(d.Table, "public."), d.Rows))
	}
	check := func(name string, got []local.TableDigest) bool {
		if diff := local.DiffDigests(prim, got); len(diff) > 0 {
			b.step("verify %-17s MISMATCH with the primary: %s", name+":", strings.Join(diff, "; "))
			return false
		}
		b.step("verify %-17s equal to the primary (%s rows)", name+":", strings.Join(rows, ", "))
		return true
	}
	b.res.NativeMatch = check("native subscriber", nat)
	b.res.PgjetMatch = check("pgjet target", pj)
	return nil
}

// report prints the result block and, with --json, the JSON object.
func (b *bench) report() {
	r := &b.res
	if r.NativeSeconds > 0 {
		r.NativeTxnsPerSec = float64(r.Txns) / r.NativeSeconds
	}
	if r.PgjetSeconds > 0 {
		r.PgjetTxnsPerSec = float64(r.Txns) / r.PgjetSeconds
		r.Ratio = r.NativeSeconds / r.PgjetSeconds
	}
	b.printf("\nbacklog: %d txns, %s WAL (scale %d, order %s, fsync on, %d CPUs)\n", r.Txns, benchMB(r.WALBytes), r.Scale, r.Order, r.CPUs)
	b.printf("native logical replication: %s (%.0f txn/s)\n", benchSeconds(r.NativeSeconds), r.NativeTxnsPerSec)
	b.printf("pgjet:                      %s (%.0f txn/s)\n", benchSeconds(r.PgjetSeconds), r.PgjetTxnsPerSec)
	b.printf("ratio native/pgjet: %.2f (≥ 1.0 means pgjet drains faster)\n", r.Ratio)
	b.reportSnapshot()
	if b.f.json {
		enc, _ := json.Marshal(r)
		fmt.Fprintf(os.Stdout, "%s\n", enc)
	}
}

// shutdown stops everything: pgjet's components, the subscription (so
// the subscriber does not keep retrying a vanished publisher), NATS and
// the clusters, whose directories are removed. It runs on success,
// failure and interruption.
func (b *bench) shutdown() {
	b.stopPgjet()
	if b.subCreated && b.native != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// With slot_name = NONE, DROP SUBSCRIPTION does not contact the
		// publisher; the slot dies with the primary's cluster.
		for _, sql := range []string{
			"ALTER SUBSCRIPTION " + benchNative + " DISABLE",
			"ALTER SUBSCRIPTION " + benchNative + " SET (slot_name = NONE)",
			"DROP SUBSCRIPTION " + benchNative,
		} {
			if err := b.native.Exec(ctx, benchDatabase, sql); err != nil {
				b.log.Warn().Err(err).Msg("drop the native subscription")
				break
			}
		}
		cancel()
	}
	if b.nats != nil {
		if err := b.nats.Close(); err != nil {
			b.log.Warn().Err(err).Msg("close nats")
		}
	}
	var wg sync.WaitGroup
	for _, p := range []*local.Postgres{b.primary, b.native, b.target} {
		if p == nil {
			continue
		}
		wg.Go(func() {
			if err := p.Stop(); err != nil {
				b.log.Warn().Err(err).Str("cluster", p.Name()).Msg("stop postgres")
			}
		})
	}
	wg.Wait()
	b.step("stopped; temporary clusters and NATS store removed")
}

// stopPgjet stops the applier, then capture; both are idempotent.
func (b *bench) stopPgjet() {
	b.applier.stop(b.log)
	b.capture.stop(b.log)
}

// benchMB renders bytes in decimal megabytes, as in "187 MB".
func benchMB(n int64) string {
	if mb := float64(n) / 1e6; mb < 10 {
		return fmt.Sprintf("%.1f MB", mb)
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}

// benchSeconds renders a duration in seconds, with more digits when short.
func benchSeconds(s float64) string {
	if s < 10 {
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

// pgbenchTPS picks pgbench's reported throughput from its output.
func pgbenchTPS(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "tps = ") {
			if f := strings.Fields(l); len(f) >= 3 {
				return "pgbench " + f[2] + " tps"
			}
		}
	}
	return "pgbench"
}
