package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// Databases of the snapshot race, on the pgjet target's cluster.
const (
	benchSnapDump  = "snap_dump"
	benchSnapPgjet = "snap_pgjet"
)

// snapshotRace copies the primary's initial data into two empty databases
// of the target cluster, once with pg_dump | psql and once through pgjet
// (a snapshot into JetStream, then a restore from it), times both and
// checks both against the primary.
func (b *bench) snapshotRace(ctx context.Context) error {
	for _, db := range []string{benchSnapDump, benchSnapPgjet} {
		if err := b.target.CreateDatabase(ctx, db); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	primaryURL := b.primary.URL(benchDatabase)
	if err := b.checkpoint(ctx); err != nil {
		return err
	}
	b.step("snapshot race 1/2: pg_dump | psql of the primary into an empty database...")
	t0 := time.Now()
	if err := b.tools.dumpRestore(ctx, primaryURL, b.target.URL(benchSnapDump)); err != nil {
		return err
	}
	b.res.DumpSeconds = time.Since(t0).Seconds()
	b.step("  pg_dump | psql: %s", benchSeconds(b.res.DumpSeconds))

	if err := b.checkpoint(ctx); err != nil {
		return err
	}
	b.step("snapshot race 2/2: pgjet snapshot into JetStream, then restore into an empty database...")
	nc, err := stream.Connect(b.nats.ClientURL(), "pgjet bench snapshot", stream.ConnectOptions{}, b.log)
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		return err
	}
	cfg := b.captureConfig()
	cfg.ProgressInterval = 0
	t0 = time.Now()
	man, err := capture.New(cfg, b.log).TakeSnapshot(ctx, js)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	b.res.SnapshotSeconds = time.Since(t0).Seconds()
	b.res.SnapshotRows, b.res.SnapshotBytes = man.Rows, man.Bytes
	b.step("  snapshot: %s (%d rows, %s of rows)", benchSeconds(b.res.SnapshotSeconds), man.Rows, benchMB(man.Bytes))
	st, err := js.Stream(ctx, stream.SnapshotStreamName(benchSource))
	if err != nil {
		return err
	}
	t1 := time.Now()
	if err := apply.Restore(ctx, apply.RestoreOptions{DB: b.target.URL(benchSnapPgjet), Source: benchSource, SnapshotStream: st,
		Snapshot: man.ID, Log: b.log, ProgressInterval: time.Hour}); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	b.res.RestoreSeconds = time.Since(t1).Seconds()
	b.step("  restore:  %s", benchSeconds(b.res.RestoreSeconds))
	// The stream is for the race only: the drains start from an empty one.
	if err := js.DeleteStream(ctx, stream.SnapshotStreamName(benchSource)); err != nil {
		return err
	}

	prim, err := local.Digest(ctx, primaryURL, benchTables...)
	if err != nil {
		return err
	}
	for _, db := range []string{benchSnapDump, benchSnapPgjet} {
		got, err := local.Digest(ctx, b.target.URL(db), benchTables...)
		if err != nil {
			return err
		}
		diff := local.DiffDigests(prim, got)
		if db == benchSnapPgjet {
			b.res.SnapshotMatch = len(diff) == 0
		}
		if len(diff) > 0 {
			b.step("verify %-17s MISMATCH with the primary: %s", db+":", strings.Join(diff, "; "))
		} else {
			b.step("verify %-17s equal to the primary", db+":")
		}
		if err := b.target.Exec(ctx, "postgres", "DROP DATABASE "+db); err != nil {
			return fmt.Errorf("drop database %s: %w", db, err)
		}
	}
	return nil
}

// reportSnapshot prints the snapshot race's result.
func (b *bench) reportSnapshot() {
	r := &b.res
	if r.DumpSeconds == 0 || r.SnapshotSeconds == 0 {
		return
	}
	total := r.SnapshotSeconds + r.RestoreSeconds
	r.SnapshotRatio = r.DumpSeconds / total
	mb := float64(r.SnapshotBytes) / 1e6
	b.printf("\ninitial copy of %d rows (%s in COPY text form):\n", r.SnapshotRows, benchMB(r.SnapshotBytes))
	b.printf("pg_dump | psql:             %s (%.0f rows/s, %.1f MB/s)\n", benchSeconds(r.DumpSeconds),
		float64(r.SnapshotRows)/r.DumpSeconds, mb/r.DumpSeconds)
	b.printf("pgjet snapshot + restore:   %s = %s + %s (%.0f rows/s, %.1f MB/s; snapshot alone %.0f rows/s, %.1f MB/s)\n",
		benchSeconds(total), benchSeconds(r.SnapshotSeconds), benchSeconds(r.RestoreSeconds),
		float64(r.SnapshotRows)/total, mb/total, float64(r.SnapshotRows)/r.SnapshotSeconds, mb/r.SnapshotSeconds)
	b.printf("ratio pg_dump|psql / pgjet: %.2f (≥ 1.0 means pgjet copies faster)\n", r.SnapshotRatio)
}
