package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/cmd/internal/console"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// The demo's fixed names: one source, its home domain, one database.
const (
	demoSource   = "demo"
	demoHub      = "hub"
	demoDatabase = "demo"
	demoScale    = 1 // pgbench scale: 100 000 accounts
)

// verifyTimeout bounds the wait for every replica to match the primary once
// the workload has stopped.
const verifyTimeout = 2 * time.Minute

// componentStopTimeout bounds the wait for capture or an applier to flush
// and stop at shutdown.
const componentStopTimeout = 30 * time.Second

// demoExtraSchema adds a table without a primary key next to pgbench's, so
// the demo also replicates rows identified by their whole old row.
const demoExtraSchema = `
CREATE TABLE demo_events (n int NOT NULL, kind text NOT NULL, payload text, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX demo_events_n ON demo_events (n);
ALTER TABLE demo_events REPLICA IDENTITY FULL;`

type demoFlags struct {
	duration time.Duration
	regions  []string
	rate     int
	logLevel string
	cut      time.Duration
	console  string
}

func runDemo(args []string) int {
	f := demoFlags{regions: []string{"r1", "r2"}, rate: 50, logLevel: "warn", cut: 15 * time.Second, console: "127.0.0.1:8080"}
	fs := pflag.NewFlagSet("pgjet demo", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet demo runs a whole multi-region pipeline on this machine: a primary Postgres\n"+
			"captured into a NATS hub, and per region a NATS leafnode with a mirror and a replica\n"+
			"fed by an applier, and serves the console (pgjet console) of it. It runs pgbench and\n"+
			"other writes on the primary and tells a story in one table (redrawn in place on a\n"+
			"terminal): the load flows to every region; the last region's link to the hub is cut\n"+
			"for --cut (the others keep applying, its replica keeps serving reads, stale); the link\n"+
			"heals and the region catches up by itself; a schema change reaches every region. When\n"+
			"the workload ends it checks that every replica's tables equal the primary's (exit 0\n"+
			"only if they all do).\n\n"+
			"Usage:\n  pgjet demo [--duration D] [--regions r1,r2] [--rate N] [--cut 15s] [--console ADDR]\n\n"+
			"Needs PostgreSQL 15 (server and client tools, including pgbench).\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.DurationVar(&f.duration, "duration", 0, "run the workload at least this long, and to the script's end (about a minute), then verify and exit (default: until Ctrl-C)")
	fs.StringSliceVar(&f.regions, "regions", f.regions, "regions, each with its own NATS leafnode, mirror, applier and replica")
	fs.IntVar(&f.rate, "rate", f.rate, "pgbench transactions per second on the primary (0: as fast as possible)")
	fs.StringVar(&f.logLevel, "log-level", f.logLevel, "log level of the components (stderr): trace, debug, info, warn, error")
	fs.DurationVar(&f.cut, "cut", f.cut, "how long the last region's link to the hub is cut (0: no partition)")
	fs.StringVar(&f.console, "console", f.console, "address to serve the console on (\"\": none; another port when taken)")
	cli.Parse(fs, args)

	if err := f.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "pgjet demo: %v\n", err)
		return 2
	}
	lvl, err := zerolog.ParseLevel(f.logLevel)
	if err != nil || lvl == zerolog.NoLevel {
		fmt.Fprintf(os.Stderr, "pgjet demo: --log-level %q: use trace, debug, info, warn or error\n", f.logLevel)
		return 2
	}
	pgbench, err := findPgbench()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet demo: %v\n", err)
		return 1
	}
	log := zerolog.New(cli.ConsoleWriter()).Level(lvl).With().Timestamp().Str("cmd", "pgjet demo").Logger()
	d := &demo{f: f, log: log, pgbench: pgbench, out: os.Stdout, fail: make(chan error, len(f.regions)+1)}
	d.scr = &screen{out: os.Stdout, tty: isTerminal(os.Stdout)}
	return d.run()
}

func (f *demoFlags) validate() error {
	if f.duration < 0 {
		return errors.New("--duration must not be negative")
	}
	if f.rate < 0 {
		return errors.New("--rate must not be negative")
	}
	if f.cut < 0 {
		return errors.New("--cut must not be negative")
	}
	if len(f.regions) == 0 {
		return errors.New("--regions: give at least one region")
	}
	seen := map[string]bool{demoHub: true}
	for _, r := range f.regions {
		if err := stream.ValidateRegion(r); err != nil {
			return fmt.Errorf("--regions: %w", err)
		}
		if seen[r] {
			return fmt.Errorf("--regions: %q is used twice or is the hub's name", r)
		}
		seen[r] = true
	}
	return nil
}

// findPgbench looks for pgbench on $PATH, then beside the Postgres 15
// server binaries.
func findPgbench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	p := filepath.Join(local.DefaultPGBinDir, "pgbench")
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", fmt.Errorf("pgbench not found on $PATH or in %s: install postgresql-client-15 (apt-get install postgresql-client-15)", local.DefaultPGBinDir)
}

// demo is one run of `pgjet demo`.
type demo struct {
	f       demoFlags
	log     zerolog.Logger
	pgbench string
	out     io.Writer

	primary  *local.Postgres
	replicas []*local.Postgres // in the order of f.regions
	top      *local.Topology

	capture  *component
	appliers []*component // in the order of f.regions
	// fail receives the error of a component that stopped by itself.
	fail chan error

	scr   *screen
	reads []*pgx.Conn // one per replica: what a client of the region reads
	// con samples the status the console shows, and the table's link
	// column; consoleURL is where it serves the page ("" nowhere).
	con         *console.Console
	consoleURL  string
	stopConsole context.CancelFunc
	// cutRegion is the region the script cuts off ("" none), at cutAt.
	cutRegion string
	cutAt     time.Time
	stepNo    atomic.Int32 // index in demoSteps
}

// component is capture or an applier running in this process.
type component struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	stats  *apply.Stats // appliers only
}

func (d *demo) printf(format string, args ...any) {
	fmt.Fprintf(d.out, format, args...)
}

func (d *demo) run() int {
	ctx, stop := cli.SignalContext()
	defer stop()
	defer d.shutdown()

	if err := d.setup(ctx); err != nil {
		if ctx.Err() != nil {
			d.printf("interrupted during setup\n")
			return 1
		}
		fmt.Fprintf(os.Stderr, "pgjet demo: %v\n", err)
		return 1
	}
	if err := d.workload(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "pgjet demo: %v\n", err)
		return 1
	}
	// A second Ctrl-C cuts the verification short.
	vctx, vstop := cli.SignalContext()
	defer vstop()
	if !d.verify(vctx) {
		return 1
	}
	return 0
}

// setup starts the clusters, NATS, capture and appliers.
func (d *demo) setup(ctx context.Context) error {
	d.printf("starting Postgres (primary; replicas %s) and NATS (hub %q; leafnodes %s)...\n",
		strings.Join(d.f.regions, ", "), demoHub, strings.Join(d.f.regions, ", "))
	clusters := make([]*local.Postgres, 1+len(d.f.regions))
	var top *local.Topology
	g, gctx := errgroup.WithContext(ctx)
	for i := range clusters {
		name := "primary"
		if i > 0 {
			name = "replica-" + d.f.regions[i-1]
		}
		g.Go(func() error {
			p, err := local.StartPostgres(gctx, local.PostgresOptions{Name: name}, d.log)
			if err != nil {
				return fmt.Errorf("start postgres %s: %w", name, err)
			}
			clusters[i] = p
			return p.CreateDatabase(gctx, demoDatabase)
		})
	}
	g.Go(func() error {
		// Each region's leafnode link runs through a proxy the script can
		// cut and heal.
		t, err := local.StartTopology(local.TopologyOptions{Hub: demoHub, Regions: d.f.regions, Proxied: d.f.cut > 0}, d.log)
		if err != nil {
			return err
		}
		top = t
		return nil
	})
	err := g.Wait()
	// Whatever started is shut down by d.shutdown, even on error.
	d.primary, d.replicas, d.top = clusters[0], clusters[1:], top
	if err != nil {
		return err
	}
	primaryURL := d.primary.URL(demoDatabase)
	d.printf("  primary     %s\n", primaryURL)
	for i, r := range d.f.regions {
		d.printf("  replica %-3s %s\n", r, d.replicas[i].URL(demoDatabase))
	}
	d.printf("  nats %-6s %s\n", demoHub, d.top.Hub.ClientURL())
	for _, r := range d.f.regions {
		d.printf("  nats %-6s %s (leafnode, domain %s)\n", r, d.top.Regions[r].ClientURL(), r)
	}

	d.printf("loading pgbench's data (scale %d: %d accounts) and demo_events (no primary key, replica identity full) on the primary;\n"+
		"the replicas start empty: each region builds itself from capture's snapshot, mirrored into its own NATS domain...\n", demoScale, demoScale*100000)
	if err := d.runPgbench(ctx, "-i", "-s", strconv.Itoa(demoScale), primaryURL); err != nil {
		return fmt.Errorf("load pgbench data: %w", err)
	}
	if err := d.primary.Exec(ctx, demoDatabase, demoExtraSchema); err != nil {
		return fmt.Errorf("create demo_events: %w", err)
	}

	ccfg := capture.DefaultConfig()
	ccfg.DB, ccfg.NATS, ccfg.Name = primaryURL, d.top.Hub.ClientURL(), demoSource
	ccfg.HeartbeatInterval = time.Second
	// pgbench_history has no primary key: without a choice capture would
	// not publish it (its updates would fail on the primary).
	ccfg.Keyless = capture.KeylessIdentityFull
	if err := ccfg.Validate(); err != nil {
		return fmt.Errorf("capture config: %w", err)
	}
	d.printf("starting capture (source %q, slot %s) and one applier per region...\n", demoSource, ccfg.Slot)
	c := capture.New(ccfg, d.log)
	d.capture = d.start("capture", c.Run, nil)
	if err := d.waitSlot(ctx, ccfg.Slot); err != nil {
		return err
	}
	for i, r := range d.f.regions {
		acfg := apply.DefaultConfig()
		acfg.DB, acfg.NATS, acfg.Name = d.replicas[i].URL(demoDatabase), d.top.Regions[r].ClientURL(), demoSource
		acfg.Region, acfg.UpstreamDomain = r, demoHub
		if err := acfg.Validate(); err != nil {
			return fmt.Errorf("applier config of region %s: %w", r, err)
		}
		a := apply.New(acfg, d.log)
		d.appliers = append(d.appliers, d.start("apply "+r, a.Run, a.Stats()))
	}
	for i := range d.f.regions {
		conn, err := pgx.Connect(ctx, d.replicas[i].URL(demoDatabase))
		if err != nil {
			return fmt.Errorf("connect to replica %s: %w", d.f.regions[i], err)
		}
		d.reads = append(d.reads, conn)
	}
	if d.f.cut > 0 {
		d.cutRegion = d.f.regions[len(d.f.regions)-1]
	}
	d.startConsole(ctx, d.f.console)
	return nil
}

// start runs a component until its context ends; if it stops by itself,
// its error goes to d.fail.
func (d *demo) start(name string, run func(context.Context) error, stats *apply.Stats) *component {
	ctx, cancel := context.WithCancel(context.Background())
	c := &component{name: name, cancel: cancel, done: make(chan struct{}), stats: stats}
	go func() {
		defer close(c.done)
		c.err = run(ctx)
		if ctx.Err() == nil {
			err := c.err
			if err == nil {
				err = errors.New("returned without being asked to stop")
			}
			d.fail <- fmt.Errorf("%s stopped: %w", name, err)
		}
	}()
	return c
}

// stop cancels c and waits for it to flush and return.
func (c *component) stop(log zerolog.Logger) {
	if c == nil {
		return
	}
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(componentStopTimeout):
		log.Warn().Str("component", c.name).Msg("did not stop in time; going on with the shutdown")
	}
}

// waitSlot waits until capture has created its replication slot: from then
// on every commit on the primary reaches the stream.
func (d *demo) waitSlot(ctx context.Context, slot string) error {
	conn, err := pgx.Connect(ctx, d.primary.URL(demoDatabase))
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(time.Minute)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", slot).Scan(&ok); err != nil {
			return fmt.Errorf("look up slot %s: %w", slot, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture has not created slot %s within a minute (run with --log-level info to see why)", slot)
		}
		select {
		case err := <-d.fail:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// workload runs pgbench and demo_events writes on the primary while the
// script tells its story, until the script is done and --duration has
// passed (or, without --duration, until the user interrupts), redrawing
// the table every second. It returns an error when a component or the
// workload itself fails.
func (d *demo) workload(ctx context.Context) error {
	primaryURL := d.primary.URL(demoDatabase)
	mon, err := pgx.Connect(ctx, primaryURL)
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	defer mon.Close(context.WithoutCancel(ctx))

	started := time.Now()
	statusCtx, stopStatus := context.WithCancel(ctx)
	var statusWG sync.WaitGroup
	statusWG.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-statusCtx.Done():
				return
			case <-t.C:
				d.status(statusCtx, mon, time.Since(started))
			}
		}
	})
	defer func() {
		stopStatus()
		statusWG.Wait()
		d.status(context.WithoutCancel(ctx), mon, time.Since(started))
		d.scr.done()
	}()

	// Workers end when the story is told (and --duration passed), on
	// interruption, or when a component fails.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	failed := make(chan error, 1)
	go func() {
		select {
		case err := <-d.fail:
			failed <- err
			wcancel()
		case <-wctx.Done():
		}
	}()
	componentErr := func() error {
		select {
		case err := <-failed:
			return err
		default:
			return nil
		}
	}

	how := "until Ctrl-C"
	if d.f.duration > 0 {
		how = "for at least " + d.f.duration.String()
	}
	rate := "unthrottled"
	// pgbench runs until the workload ends; the demo stops it then.
	args := []string{"-n", "-c", "2", "-T", strconv.Itoa(10 * 365 * 24 * 3600)}
	if d.f.rate > 0 {
		args = append(args, "-R", strconv.Itoa(d.f.rate))
		rate = strconv.Itoa(d.f.rate) + " tps"
	}
	d.printf("running pgbench (TPC-B-like, 2 clients, %s) and demo_events inserts/updates/deletes %s...\n\n", rate, how)

	var g errgroup.Group
	g.Go(func() error {
		_, err := d.pgbenchCmd(wctx, append(args, primaryURL)...)
		if err != nil && wctx.Err() == nil {
			return fmt.Errorf("pgbench workload: %w", err)
		}
		return nil
	})
	g.Go(func() error { return d.writeEvents(wctx, primaryURL) })
	g.Go(func() error {
		defer wcancel()
		if err := d.script(wctx, started); err != nil {
			if wctx.Err() != nil {
				return nil
			}
			return err
		}
		if d.f.duration <= 0 {
			d.scr.tell(time.Since(started), "the story is told; the load goes on until Ctrl-C, then every table is verified")
			<-wctx.Done()
			return nil
		}
		_ = sleepCtx(wctx, d.f.duration-time.Since(started))
		return nil
	})
	werr := g.Wait()
	if cerr := componentErr(); cerr != nil {
		return cerr
	}
	if werr != nil {
		return werr
	}
	d.scr.tell(time.Since(started), "load stopped; verifying every table of every replica")
	d.step(len(demoSteps) - 1)
	return nil
}

// status draws the table: per region its link (the console's verdict),
// applied LSN, lag in time and bytes, transactions applied, and what a
// client reads on its replica.
func (d *demo) status(ctx context.Context, mon *pgx.Conn, elapsed time.Duration) {
	qctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	var cur stream.LSN
	var text string
	if err := mon.QueryRow(qctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		if ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("read the primary's WAL position")
		}
	} else {
		cur, _ = stream.ParseLSN(text)
	}
	rows := make([]regionRow, len(d.f.regions))
	for i, r := range d.f.regions {
		st := d.appliers[i].stats
		applied := stream.LSN(st.SourceLSN.Load())
		behind, lag := lagCells(applied, cur, st.Lag(), st.SourceTime.Load() != 0)
		link := d.con.Link(r)
		if link == "" {
			link = "-"
		}
		rows[i] = regionRow{region: r, link: link, applied: applied.String(), lag: lag, behind: behind,
			txns: strconv.FormatInt(st.Txns.Load(), 10), read: replicaRead(qctx, &d.reads[i], d.replicas[i].URL(demoDatabase))}
	}
	d.scr.draw(time.Now(), d.stepHeader(elapsed), rows)
}

// writeEvents inserts, updates and deletes demo_events rows on the
// primary, ten statements a second, until ctx ends.
func (d *demo) writeEvents(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("demo_events writer: connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var payload any = fmt.Sprintf("event %d: %x", n, rand.Uint64())
		if n%7 == 3 {
			payload = nil
		}
		// The row to change is found through the n index; ctid picks one
		// row when several share n, as rows of a keyless table may.
		pick := rand.IntN(n + 1)
		var err error
		switch {
		case n%50 == 49:
			_, err = conn.Exec(ctx, "UPDATE demo_events SET kind = 'batch', at = now() WHERE n % 10 = $1", rand.IntN(10))
		case n%5 == 4:
			_, err = conn.Exec(ctx, "DELETE FROM demo_events WHERE ctid = (SELECT ctid FROM demo_events WHERE n = $1 LIMIT 1)", pick)
		case n%3 == 2:
			_, err = conn.Exec(ctx, "UPDATE demo_events SET payload = coalesce(payload, '') || '+', kind = 'update', at = now() "+
				"WHERE ctid = (SELECT ctid FROM demo_events WHERE n = $1 LIMIT 1)", pick)
		default:
			_, err = conn.Exec(ctx, "INSERT INTO demo_events (n, kind, payload) VALUES ($1, 'insert', $2)", n, payload)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo_events writer: %w", err)
		}
	}
}

// verify waits until every replica's digest of every table equals the
// primary's, then prints a per-table result. It reports whether all match.
func (d *demo) verify(ctx context.Context) bool {
	d.printf("verifying: waiting up to %s for every replica to match the primary...\n", verifyTimeout)
	primaryURL := d.primary.URL(demoDatabase)
	deadline := time.Now().Add(verifyTimeout)
	start := time.Now()
	var prim []local.TableDigest
	reps := make([][]local.TableDigest, len(d.f.regions))
	for {
		// The primary is digested every round too: a transaction whose
		// commit was in flight when the workload stopped may land late.
		var waiting []string
		var err error
		if prim, err = local.Digest(ctx, primaryURL); err != nil {
			waiting = append(waiting, "primary: "+err.Error())
		}
		for i, r := range d.f.regions {
			if reps[i], err = local.Digest(ctx, d.replicas[i].URL(demoDatabase)); err != nil {
				waiting = append(waiting, r+": "+err.Error())
				continue
			}
			if diff := local.DiffDigests(prim, reps[i]); len(diff) > 0 {
				waiting = append(waiting, fmt.Sprintf("%s (%d of %d tables differ, %d txns applied)",
					r, len(diff), len(prim), d.appliers[i].stats.Txns.Load()))
			}
		}
		if len(waiting) == 0 && len(prim) > 0 {
			break
		}
		if ctx.Err() != nil {
			d.printf("verification interrupted\n")
			break
		}
		if time.Now().After(deadline) {
			d.printf("replicas still differ after %s\n", verifyTimeout)
			break
		}
		select {
		case err := <-d.fail:
			d.printf("verification stopped: %v\n", err)
			deadline = time.Now() // report what we have
			continue
		default:
		}
		d.printf("%6s  waiting for %s\n", time.Since(start).Truncate(time.Second), strings.Join(waiting, "; "))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}

	all := len(prim) > 0
	d.printf("result (rows on the primary; each replica compared by digest):\n")
	for i, r := range d.f.regions {
		lines, ok := verdict(r, prim, reps[i])
		all = all && ok
		for _, l := range lines {
			d.printf("%s\n", l)
		}
	}
	if all {
		d.printf("all %d tables match on every replica (%s)\n", len(prim), strings.Join(d.f.regions, ", "))
	} else {
		d.printf("MISMATCH: not every replica equals the primary\n")
	}
	return all
}

// verdict compares a region's replica with the primary: a line per table
// either side has, and whether the two are equal (DiffDigests finds no
// difference), so a table only the replica has is a mismatch too.
func verdict(region string, prim, replica []local.TableDigest) ([]string, bool) {
	var lines []string
	for _, c := range local.CompareDigests(prim, replica) {
		p, r := c.A, c.B
		var l string
		switch {
		case c.Equal():
			l = fmt.Sprintf("%8d rows  match", p.Rows)
		case r == nil:
			l = fmt.Sprintf("%8d rows  MISMATCH (missing on the replica)", p.Rows)
		case p == nil:
			l = fmt.Sprintf("%8s rows  MISMATCH (only on the replica, which has %d rows)", "-", r.Rows)
		case r.Rows != p.Rows:
			l = fmt.Sprintf("%8d rows  MISMATCH (replica has %d rows)", p.Rows, r.Rows)
		default:
			l = fmt.Sprintf("%8d rows  MISMATCH (same row count, different contents)", p.Rows)
		}
		lines = append(lines, fmt.Sprintf("  %-6s %-26s %s", region, c.Table, l))
	}
	return lines, len(local.DiffDigests(prim, replica)) == 0
}

// shutdown stops everything in reverse order of the data flow: appliers,
// capture, NATS, Postgres. It removes the clusters' and NATS' directories.
func (d *demo) shutdown() {
	if d.stopConsole != nil {
		d.stopConsole()
	}
	for _, c := range d.reads {
		if c != nil {
			c.Close(context.Background())
		}
	}
	for _, a := range d.appliers {
		a.cancel()
	}
	for _, a := range d.appliers {
		a.stop(d.log)
	}
	d.capture.stop(d.log)
	if d.top != nil {
		d.top.Shutdown()
	}
	var wg sync.WaitGroup
	for _, p := range append([]*local.Postgres{d.primary}, d.replicas...) {
		if p == nil {
			continue
		}
		wg.Go(func() {
			if err := p.Stop(); err != nil {
				d.log.Warn().Err(err).Str("cluster", p.Name()).Msg("stop postgres")
			}
		})
	}
	wg.Wait()
	d.printf("stopped; temporary clusters and NATS stores removed\n")
}

// runPgbench runs pgbench to completion and returns an error that includes
// its output when it fails.
func (d *demo) runPgbench(ctx context.Context, args ...string) error {
	_, err := d.pgbenchCmd(ctx, args...)
	return err
}

// pgbenchCmd runs pgbench, interrupting it when ctx ends, and returns the
// tail of its output.
func (d *demo) pgbenchCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.pgbench, args...)
	cmd.Env = pgFreeEnv()
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Own process group: a Ctrl-C at the terminal is the demo's to handle;
	// the demo stops pgbench itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 5 * time.Second
	d.log.Debug().Strs("args", redactArgs(args)).Msg("run pgbench")
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("pgbench %s: %w\n%s", strings.Join(redactArgs(args), " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// redactArgs drops URLs from pgbench arguments shown to people (the demo's
// URLs carry no password, but pgbench arguments might one day).
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, "://") {
			a = "<primary>"
		}
		out[i] = a
	}
	return out
}

// pgFreeEnv is the environment without PG* variables, so that a PGHOST or
// PGOPTIONS of the caller cannot redirect pgbench away from the demo's
// primary.
func pgFreeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// tailBuffer keeps the last 16 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const tailBufferMax = 16 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if n := b.buf.Len(); n > tailBufferMax {
		b.buf.Next(n - tailBufferMax)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
