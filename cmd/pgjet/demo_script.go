package main

// The demo's script: what it shows a newcomer, in order. Load flows to
// every region; then one region's link to the hub is cut (the others go
// on applying, the cut one keeps answering reads, with stale data); the
// link heals and the region catches up by itself; a schema change
// reaches every region; and at the end every table of every replica is
// compared with the primary's.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/console"
	"github.com/pgjet/pgjet/cmd/internal/status"
	"github.com/pgjet/pgjet/stream"
)

const (
	// demoLoadFirst is how long the load flows to every region before the
	// cut.
	demoLoadFirst = 10 * time.Second
	// demoCatchUpTimeout bounds the wait for the cut region to catch up
	// after the heal (a mirror retries its origin with a backoff: 10-20 s
	// after a cut of 15 s).
	demoCatchUpTimeout = 2 * time.Minute
	// demoSchemaTimeout bounds the wait for the schema change to reach
	// every region.
	demoSchemaTimeout = time.Minute
	// demoLoadAfter is how long the load goes on after the schema change,
	// so that rows written in the new shape replicate too.
	demoLoadAfter = 5 * time.Second
	// demoSchemaChange is the schema change the script makes.
	demoSchemaChange = "ALTER TABLE demo_events ADD COLUMN note text DEFAULT 'written after the schema change'"
)

// demoSteps names the script's steps, for the table's header.
var demoSteps = []string{"load", "partition", "heal and catch-up", "schema change", "verification"}

// step moves the script to step i (0-based) of demoSteps.
func (d *demo) step(i int) {
	d.stepNo.Store(int32(i))
}

// stepHeader is the table's first line.
func (d *demo) stepHeader(elapsed time.Duration) string {
	i := int(d.stepNo.Load())
	h := fmt.Sprintf("pgjet demo  %s  step %d of %d: %s", clock(elapsed), i+1, len(demoSteps), demoSteps[i])
	if d.consoleURL != "" {
		h += "   console: " + d.consoleURL
	}
	return h
}

// script runs the story while the load runs; it returns when the last
// step before the verification is done, or ctx ends.
func (d *demo) script(ctx context.Context, started time.Time) error {
	since := func() time.Duration { return time.Since(started) }
	d.step(0)
	d.scr.tell(since(), "load: pgbench and demo_events writes on the primary, flowing through the hub to %s", joinRegions(d.f.regions))
	if err := sleepCtx(ctx, demoLoadFirst); err != nil {
		return err
	}
	// The cut starts from regions that keep up with the load: what the
	// cut region applies then is only what its mirror held when the link
	// dropped, not a backlog of its build.
	lsn, err := d.primaryLSN(ctx)
	if err != nil {
		return err
	}
	for i, r := range d.f.regions {
		if err := d.waitApplied(ctx, i, lsn, demoCatchUpTimeout); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.scr.tell(since(), "%s does not keep up with the load: %v", r, err)
		}
	}

	if cut := d.cutRegion; cut != "" {
		d.step(1)
		i := d.regionIndex(cut)
		before := d.txnsApplied()
		d.top.Proxies[cut].Cut()
		d.cutAt = time.Now()
		d.scr.tell(since(), "partition: cut %s's link to the hub for %s; the others keep applying, %s's replica keeps answering reads, with stale data", cut, d.f.cut, cut)
		if err := sleepCtx(ctx, d.f.cut); err != nil {
			return err
		}
		after := d.txnsApplied()
		d.scr.tell(since(), "during the cut: %s", appliedDuring(d.f.regions, before, after))

		d.step(2)
		healLSN, err := d.primaryLSN(ctx)
		if err != nil {
			return err
		}
		if err := d.top.Proxies[cut].Heal(); err != nil {
			return fmt.Errorf("heal %s's link: %w", cut, err)
		}
		healed := time.Now()
		d.scr.tell(since(), "heal: %s's link is back; its mirror resumes where it stopped (after its retry backoff) and its applier catches up", cut)
		missed := d.appliers[i].stats.Txns.Load()
		if err := d.waitApplied(ctx, i, healLSN, demoCatchUpTimeout); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.scr.tell(since(), "%s did not catch up: %v", cut, err)
		} else {
			d.scr.tell(since(), "%s caught up %s after the heal, applying %d transactions (those it missed, and those committed meanwhile); nothing was lost or applied twice (the verification proves it)",
				cut, time.Since(healed).Round(100*time.Millisecond), d.appliers[i].stats.Txns.Load()-missed)
		}
	}

	d.step(3)
	if err := d.primary.Exec(ctx, demoDatabase, demoSchemaChange); err != nil {
		return fmt.Errorf("schema change: %w", err)
	}
	changed := time.Now()
	d.scr.tell(since(), "schema change on the primary: %s", demoSchemaChange)
	if err := d.waitColumn(ctx, "demo_events", "note", demoSchemaTimeout); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.scr.tell(since(), "the schema change did not reach every region: %v", err)
	} else {
		d.scr.tell(since(), "the schema change reached %s in %s, in commit order with the rows around it", joinRegions(d.f.regions), time.Since(changed).Round(100*time.Millisecond))
	}
	return sleepCtx(ctx, demoLoadAfter)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func joinRegions(regions []string) string {
	switch len(regions) {
	case 1:
		return regions[0]
	case 2:
		return regions[0] + " and " + regions[1]
	}
	out := ""
	for i, r := range regions {
		switch {
		case i == len(regions)-1:
			out += " and " + r
		case i > 0:
			out += ", " + r
		default:
			out = r
		}
	}
	return out
}

func (d *demo) regionIndex(region string) int {
	for i, r := range d.f.regions {
		if r == region {
			return i
		}
	}
	return -1
}

// txnsApplied is each applier's count of transactions applied.
func (d *demo) txnsApplied() []int64 {
	out := make([]int64, len(d.appliers))
	for i, a := range d.appliers {
		out[i] = a.stats.Txns.Load()
	}
	return out
}

// appliedDuring says how many transactions each region applied between
// two counts.
func appliedDuring(regions []string, before, after []int64) string {
	s := ""
	for i, r := range regions {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s applied %d transactions", r, after[i]-before[i])
	}
	return s
}

// primaryLSN is the primary's current WAL position.
func (d *demo) primaryLSN(ctx context.Context) (stream.LSN, error) {
	conn, err := pgx.Connect(ctx, d.primary.URL(demoDatabase))
	if err != nil {
		return 0, fmt.Errorf("connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var text string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		return 0, fmt.Errorf("read the primary's WAL position: %w", err)
	}
	return stream.ParseLSN(text)
}

// waitApplied waits until region i's applier has caught up to the
// primary's position lsn (heartbeats included).
func (d *demo) waitApplied(ctx context.Context, i int, lsn stream.LSN, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for stream.LSN(d.appliers[i].stats.SourceLSN.Load()) < lsn {
		if time.Now().After(deadline) {
			return fmt.Errorf("still behind %s after %s", lsn, timeout)
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// waitColumn waits until every replica's table has column. It reads
// over connections of its own: the table's reads run meanwhile.
func (d *demo) waitColumn(ctx context.Context, table, column string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i, r := range d.f.regions {
		conn, err := pgx.Connect(ctx, d.replicas[i].URL(demoDatabase))
		if err != nil {
			return fmt.Errorf("connect to replica %s: %w", r, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		for {
			var n int
			err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = $2", table, column).Scan(&n)
			if err == nil && n > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s has no column %s.%s after %s (%v)", r, table, column, timeout, err)
			}
			if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// startConsole starts the console of the demo's source: served on addr
// (another free port when that one is taken; "" serves nothing), and
// sampling either way, since the table's link column is its verdict.
func (d *demo) startConsole(ctx context.Context, addr string) {
	o := status.Options{
		NATS: d.top.Hub.ClientURL(), Name: demoSource, Domains: append([]string{""}, d.f.regions...),
		SourceDB: d.primary.URL(demoDatabase), Slot: capture.DefaultSlot(demoSource),
		Timeout: 2 * time.Second, Stall: 15 * time.Second,
	}
	for i, r := range d.f.regions {
		o.Targets = append(o.Targets, status.TargetDB{Region: r, URL: d.replicas[i].URL(demoDatabase)})
	}
	cfg := console.DefaultConfig()
	// The story lasts a minute or two: the charts show three.
	cfg.Status, cfg.Interval, cfg.Window = o, time.Second, 3*time.Minute
	d.con = console.New(cfg, d.log)
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.stopConsole = cancel
	if addr == "" {
		go func() { _ = d.con.Run(cctx) }()
		return
	}
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		d.printf("  console: %s is taken; using another port\n", addr)
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		d.printf("  console: not served (--console %s: %v)\n", addr, err)
		go func() { _ = d.con.Run(cctx) }()
		return
	}
	d.consoleURL = consoleURL(ln.Addr())
	go func() { _ = d.con.Serve(cctx, ln) }()
	d.printf("  console     %s  (open it in a browser to watch the story)\n", d.consoleURL)
}
