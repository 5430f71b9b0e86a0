package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// markerPoll is how often a drain looks for the marker row on its target;
// it bounds the timing error of a drain.
const markerPoll = 50 * time.Millisecond

// drainProgress is how often a drain prints its progress.
const drainProgress = 2 * time.Second

// benchStopTimeout bounds the wait for capture or the applier to stop.
const benchStopTimeout = 30 * time.Second

// drainNative enables the subscription and times it until the marker is on
// the native subscriber, then disables it again so that it sits idle
// during the other drain.
func (b *bench) drainNative(ctx context.Context) error {
	b.step("draining through native logical replication (ALTER SUBSCRIPTION %s ENABLE)...", benchNative)
	t0 := time.Now()
	if err := b.native.Exec(ctx, benchDatabase, "ALTER SUBSCRIPTION "+benchNative+" ENABLE"); err != nil {
		return fmt.Errorf("enable the native subscription: %w", err)
	}
	d, err := b.waitDrain(ctx, drainWatch{
		name:   "native",
		target: b.native.URL(benchDatabase),
		slot:   benchNative,
		check:  b.nativeErrors,
	}, t0)
	if err != nil {
		return fmt.Errorf("native drain: %w", err)
	}
	b.res.NativeSeconds = d.Seconds()
	b.step("native logical replication drained %d transactions in %s", b.res.Txns, benchSeconds(d.Seconds()))
	if err := b.native.Exec(ctx, benchDatabase, "ALTER SUBSCRIPTION "+benchNative+" DISABLE"); err != nil {
		return fmt.Errorf("disable the native subscription: %w", err)
	}
	return nil
}

// nativeErrors reports an apply error of the subscription: the apply
// worker would retry it forever, so the drain would never end.
func (b *bench) nativeErrors(ctx context.Context, target *pgx.Conn) error {
	var n int64
	err := target.QueryRow(ctx, "SELECT coalesce(sum(apply_error_count), 0)::bigint FROM pg_stat_subscription_stats WHERE subname = $1",
		benchNative).Scan(&n)
	if err != nil || n == 0 {
		return nil
	}
	return fmt.Errorf("the subscription's apply worker failed %d times; subscriber log %s:\n%s", n, b.native.LogPath(), b.native.LogTail(2048))
}

// drainPgjet starts capture and one applier in this process and times them
// until the marker is on the pgjet target, then stops them.
func (b *bench) drainPgjet(ctx context.Context) error {
	ccfg := b.captureConfig()
	if err := ccfg.Validate(); err != nil {
		return fmt.Errorf("capture config: %w", err)
	}
	acfg := apply.DefaultConfig()
	acfg.DB, acfg.NATS, acfg.Name, acfg.Region = b.target.URL(benchDatabase), b.nats.ClientURL(), benchSource, benchRegion
	if err := acfg.Validate(); err != nil {
		return fmt.Errorf("apply config: %w", err)
	}
	if b.f.cpuProfile != "" {
		f, err := os.Create(b.f.cpuProfile)
		if err != nil {
			return fmt.Errorf("create the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	b.step("draining through pgjet (capture -> JetStream -> 1 applier, in this process)...")
	c := capture.New(ccfg, b.log)
	a := apply.New(acfg, b.log)
	t0 := time.Now()
	b.capture = b.start("capture", c.Run)
	b.applier = b.start("apply", a.Run)
	d, err := b.waitDrain(ctx, drainWatch{
		name:   "pgjet",
		target: b.target.URL(benchDatabase),
		slot:   ccfg.Slot,
		extra: func() string {
			return fmt.Sprintf("  captured %d txns in %d msgs, applied %d in %d target commits",
				c.Stats().Txns.Load(), c.Stats().Messages.Load(), a.Stats().Txns.Load(), a.Stats().Commits.Load())
		},
	}, t0)
	if err != nil {
		return fmt.Errorf("pgjet drain: %w", err)
	}
	b.res.PgjetSeconds = d.Seconds()
	b.step("pgjet drained %d transactions in %s (%d messages, %d target commits)", b.res.Txns, benchSeconds(d.Seconds()),
		c.Stats().Messages.Load(), a.Stats().Commits.Load())
	if b.f.cpuProfile != "" {
		pprof.StopCPUProfile()
		b.step("CPU profile of the pgjet drain written to %s (go tool pprof -top %s)", b.f.cpuProfile, b.f.cpuProfile)
	}
	b.stopPgjet()
	return nil
}

// drainWatch says how to watch one drain.
type drainWatch struct {
	name   string
	target string // URL of the target database
	slot   string // the drain's slot on the primary
	// extra adds to a progress line; may be nil.
	extra func() string
	// check reports a failure seen on the target; may be nil.
	check func(context.Context, *pgx.Conn) error
}

// waitDrain polls the target for the marker row every markerPoll and
// returns the time from t0 until it was there. Every drainProgress it
// prints progress: transactions on the target (pgbench_history rows, one
// per pgbench -N transaction) and the slot's confirmed position within
// the backlog's WAL.
func (b *bench) waitDrain(ctx context.Context, w drainWatch, t0 time.Time) (time.Duration, error) {
	poll, err := benchConnect(ctx, w.target)
	if err != nil {
		return 0, err
	}
	defer poll.Close(context.WithoutCancel(ctx))

	// Progress queries run beside the polling so that they never delay
	// the moment the marker is seen.
	pctx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	progressErr := make(chan error, 1)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if err := b.progress(pctx, w, t0); err != nil && pctx.Err() == nil {
			progressErr <- err
		}
	}()
	defer func() { stopProgress(); <-progressDone }()

	deadline := t0.Add(b.f.drainTimeout)
	t := time.NewTicker(markerPoll)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var done bool
		err := poll.QueryRow(qctx, "SELECT EXISTS (SELECT 1 FROM bench_marker WHERE id = 1)").Scan(&done)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("look for the marker on the %s target: %w", w.name, err)
		}
		if done {
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the marker is not on the %s target after %s (--drain-timeout)", w.name, b.f.drainTimeout)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-b.fail:
			return 0, err
		case err := <-progressErr:
			return 0, err
		case <-t.C:
		}
	}
}

// progress prints a drain's progress every drainProgress until ctx ends,
// and returns the failure w.check reports.
func (b *bench) progress(ctx context.Context, w drainWatch, t0 time.Time) error {
	target, err := benchConnect(ctx, w.target)
	if err != nil {
		return err
	}
	defer target.Close(context.WithoutCancel(ctx))
	primary, err := benchConnect(ctx, b.primary.URL(benchDatabase))
	if err != nil {
		return err
	}
	defer primary.Close(context.WithoutCancel(ctx))

	t := time.NewTicker(drainProgress)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var applied int64
		if err := target.QueryRow(ctx, "SELECT count(*) FROM pgbench_history").Scan(&applied); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.log.Warn().Err(err).Str("target", w.name).Msg("read progress")
			continue
		}
		slot := "-"
		var confirmed *string
		if err := primary.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", w.slot).
			Scan(&confirmed); err == nil && confirmed != nil {
			if lsn, err := stream.ParseLSN(*confirmed); err == nil && b.backlogEnd > b.backlogStart {
				pct := 100 * float64(int64(lsn)-int64(b.backlogStart)) / float64(b.backlogEnd-b.backlogStart)
				slot = fmt.Sprintf("%s (%.0f%%)", lsn, min(max(pct, 0), 100))
			}
		}
		elapsed := time.Since(t0)
		line := fmt.Sprintf("  %-6s %5.1fs  target %d/%d txns (%.0f%%, %.0f txn/s)  slot confirmed %s",
			w.name, elapsed.Seconds(), applied, b.res.Txns, 100*float64(applied)/float64(max(b.res.Txns, 1)),
			float64(applied)/elapsed.Seconds(), slot)
		if w.extra != nil {
			line += w.extra()
		}
		b.step("%s", line)
		if w.check != nil {
			if err := w.check(ctx, target); err != nil {
				return err
			}
		}
	}
}

// benchComponent is capture or the applier running in this process.
type benchComponent struct {
	name    string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	stopped bool
}

// start runs a component until it is stopped; if it stops by itself, its
// error goes to b.fail.
func (b *bench) start(name string, run func(context.Context) error) *benchComponent {
	ctx, cancel := context.WithCancel(context.Background())
	c := &benchComponent{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = run(ctx)
		if ctx.Err() == nil {
			err := c.err
			if err == nil {
				err = errors.New("returned without being asked to stop")
			}
			select {
			case b.fail <- fmt.Errorf("%s stopped: %w", name, err):
			default:
			}
		}
	}()
	return c
}

// stop cancels c and waits for it to flush and return. It is idempotent
// and a no-op on nil.
func (c *benchComponent) stop(log zerolog.Logger) {
	if c == nil || c.stopped {
		return
	}
	c.stopped = true
	c.cancel()
	select {
	case <-c.done:
		if c.err != nil {
			log.Warn().Err(c.err).Str("component", c.name).Msg("stopped with an error")
		}
	case <-time.After(benchStopTimeout):
		log.Warn().Str("component", c.name).Msg("did not stop in time; going on with the shutdown")
	}
}

// benchConnect opens one connection.
func benchConnect(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact.Postgres(url), err)
	}
	return conn, nil
}
