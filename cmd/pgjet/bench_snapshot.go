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
// (a snapshot into JetStream, restored as it is taken), times both and
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
	st, err := stream.EnsureSnapshotStream(ctx, js, benchSource, 1)
	if err != nil {
		return err
	}
	// As pgjet-apply does for a new region, the restore follows the
	// snapshot while it is being taken.
	t0 = time.Now()
	type snapDone struct {
		man stream.SnapshotManifest
		err error
	}
	snapCh := make(chan snapDone, 1)
	go func() {
		man, err := capture.New(cfg, b.log).TakeSnapshot(ctx, js)
		b.res.SnapshotSeconds = time.Since(t0).Seconds()
		snapCh <- snapDone{man, err}
	}()
	var id string
	for id == "" {
		select {
		case d := <-snapCh:
			if d.err != nil {
				return fmt.Errorf("snapshot: %w", d.err)
			}
			id = d.man.ID
			snapCh <- d
		case <-time.After(20 * time.Millisecond):
			snaps, err := stream.ListSnapshots(ctx, st, benchSource)
			if err != nil {
				return err
			}
			if len(snaps) > 0 {
				id = snaps[len(snaps)-1].ID
			}
		}
	}
	if err := apply.Restore(ctx, apply.RestoreOptions{DB: b.target.URL(benchSnapPgjet), Source: benchSource, SnapshotStream: st,
		Snapshot: id, Log: b.log, ProgressInterval: time.Hour}); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	b.res.RestoreSeconds = time.Since(t0).Seconds()
	d := <-snapCh
	if d.err != nil {
		return fmt.Errorf("snapshot: %w", d.err)
	}
	b.res.SnapshotRows, b.res.SnapshotBytes = d.man.Rows, d.man.Bytes
	b.step("  snapshot: %s (%d rows, %s of rows); restore, overlapping it: done at %s", benchSeconds(b.res.SnapshotSeconds),
		d.man.Rows, benchMB(d.man.Bytes), benchSeconds(b.res.RestoreSeconds))
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
	total := max(r.SnapshotSeconds, r.RestoreSeconds) // the restore overlaps the snapshot
	r.SnapshotRatio = r.DumpSeconds / total
	mb := float64(r.SnapshotBytes) / 1e6
	b.printf("\ninitial copy of %d rows (%s in COPY text form):\n", r.SnapshotRows, benchMB(r.SnapshotBytes))
	b.printf("pg_dump | psql:             %s (%.0f rows/s, %.1f MB/s)\n", benchSeconds(r.DumpSeconds),
		float64(r.SnapshotRows)/r.DumpSeconds, mb/r.DumpSeconds)
	b.printf("pgjet snapshot + restore:   %s (%.0f rows/s, %.1f MB/s; the snapshot alone %s, %.0f rows/s, %.1f MB/s)\n",
		benchSeconds(total), float64(r.SnapshotRows)/total, mb/total,
		benchSeconds(r.SnapshotSeconds), float64(r.SnapshotRows)/r.SnapshotSeconds, mb/r.SnapshotSeconds)
	b.printf("ratio pg_dump|psql / pgjet: %.2f (≥ 1.0 means pgjet copies faster)\n", r.SnapshotRatio)
}
