package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// errReplayDone ends a session that reached the replay's stopping point.
var errReplayDone = errors.New("replay reached its end")

// ReplayOptions say what Replay rebuilds.
type ReplayOptions struct {
	// Config is the applier's configuration (DB, NATS, Name, Domain...);
	// Region names the replay's consumer (default "replay").
	Config Config
	// UntilLSN stops before the first transaction committed after it: one
	// whose commit LSN equals it is replayed (see pastPoint).
	UntilLSN stream.LSN
	// UntilTime stops before the first transaction committed after it:
	// one committed at exactly that time is replayed.
	UntilTime time.Time
	// Force replays into a target that holds tables already.
	Force bool
}

// Replay rebuilds a database from the newest snapshot before the target
// point plus the changes after it, up to the point (or to the stream's
// end as it was when the replay started), then stops. A target that a
// replay of the same source left (pgjet.applied holds its position) goes
// on from there, so a database can be rolled forward in steps.
func Replay(ctx context.Context, o ReplayOptions, log zerolog.Logger) error {
	cfg := o.Config
	if cfg.Region == "" {
		cfg.Region = "replay"
	}
	cfg.UntilLSN, cfg.UntilTime, cfg.StopAtEnd = o.UntilLSN, o.UntilTime, true
	cfg.SkipSnapshot = true // the snapshot is chosen here, by the point
	// The applier names its own component and source: it is given base,
	// so that its lines do not carry these keys twice.
	base := log
	log = log.With().Str("component", "replay").Str("source", cfg.Name).Logger()

	conn, err := pgx.Connect(ctx, cfg.DB)
	if err != nil {
		return pgerr.ClassifyConnect(cfg.DB, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// What follows reads pgjet's tables before the restore migrates them.
	if err := checkSchemaVersion(ctx, conn, cfg.DB); err != nil {
		return err
	}
	pos, positioned, err := applied.ReadSource(ctx, conn, cfg.Name)
	if err != nil {
		return fmt.Errorf("inspect target: %w", err)
	}
	if positioned {
		if err := notPastPoint(pos, o, cfg); err != nil {
			return err
		}
	}
	// An interrupted replay left a restore to finish: its tables are its
	// own, and it goes on as it began (creating the schema, or loading
	// rows only), whatever --force says now.
	var rs *restoreState
	if !positioned {
		if rs, err = readRestore(ctx, conn, cfg.Name); err != nil {
			return err
		}
		if rs != nil && rs.done {
			rs = nil
		}
	}
	if !positioned && rs == nil {
		n, err := userTables(ctx, conn)
		if err != nil {
			return err
		}
		if n > 0 && !o.Force {
			return pgerr.Fatalf(nil, "the target %s holds %d tables and no position of source %s: replay builds an empty database; point --db at an empty one, or pass --force to empty its tables and load the snapshot's rows into them (the schema must match)",
				redact.Postgres(cfg.DB), n, cfg.Name)
		}
	}

	nc, err := stream.Connect(cfg.NATS, "pgjet replay "+cfg.Name, cfg.NATSOptions, log)
	if err != nil {
		if stream.IsPermanent(err) {
			return pgerr.Fatalf(nil, "%s", err.Error())
		}
		return pgerr.Fatalf(err, "NATS at %s cannot be reached; check --nats", stream.RedactURL(cfg.NATS))
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, cfg.Domain)
	if err != nil {
		return err
	}
	changes, err := js.Stream(ctx, stream.StreamName(cfg.Name))
	if err != nil {
		return pgerr.Fatalf(err, "stream %s not found in this domain: check --name and --domain", stream.StreamName(cfg.Name))
	}

	if !positioned {
		st, err := js.Stream(ctx, stream.SnapshotStreamName(cfg.Name))
		if err != nil {
			return pgerr.Fatalf(err, "stream %s not found in this domain: the source has no snapshots to replay from (pgjet-capture --no-snapshot?); take one with pgjet snapshot",
				stream.SnapshotStreamName(cfg.Name))
		}
		snaps, err := stream.ListSnapshots(ctx, st, cfg.Name)
		if err != nil {
			return err
		}
		var cut *timeCut
		if !o.UntilTime.IsZero() {
			lsn, past, err := stream.SeekTime(ctx, changes, cfg.Name, o.UntilTime)
			if err != nil {
				return natsError{err}
			}
			cut = &timeCut{lsn: lsn, past: past}
		}
		fits := func(si stream.SnapshotInfo) bool { return before(si.Manifest, o, cut) }
		ro := RestoreOptions{DB: cfg.DB, Source: cfg.Name, SnapshotStream: st, ChangeStream: changes, UnderOrigin: true,
			Log: log, ProgressInterval: cfg.ProgressInterval, SchemaExists: o.Force, NoOwners: cfg.NoOwners}
		if rs != nil {
			i := slices.IndexFunc(snaps, func(si stream.SnapshotInfo) bool { return si.ID == rs.snapshot })
			switch {
			case i >= 0 && snaps[i].Complete && fits(snaps[i]):
				ro.Snapshot, ro.FromSeq, ro.SchemaExists = rs.snapshot, rs.seq, rs.rowsOnly
				log.Info().Str("snapshot", rs.snapshot).Uint64("snapshot_seq", rs.seq).Bool("rows_only", rs.rowsOnly).Msg("resuming interrupted replay")
			case !rs.rowsOnly || !o.Force:
				// The restore made the tables, and may not have given
				// them their keys yet: loading rows only would never.
				return pgerr.Fatalf(nil, "an interrupted replay left %s half restored from snapshot %s, which is gone or after the requested point; drop the target's tables and schema pgjet (or use another database) and replay again",
					redact.Postgres(cfg.DB), rs.snapshot)
			}
		}
		if ro.Snapshot == "" {
			i := newestComplete(snaps, fits)
			if i < 0 {
				return pgerr.Fatalf(nil, "no complete snapshot of source %s was taken before the requested point (%d snapshots kept); choose a later point, or keep more snapshots (pgjet-capture --snapshot-keep)",
					cfg.Name, len(snaps))
			}
			man := snaps[i].Manifest
			log.Info().Str("snapshot", man.ID).Str("lsn", man.LSN.String()).Time("taken", man.Started).Msg("replaying from snapshot")
			ro.Snapshot = man.ID
		}
		if err := Restore(ctx, ro); err != nil {
			return err
		}
	}

	a := New(cfg, base)
	err = a.Run(ctx)
	// The replay's consumer is of no use once it stopped.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if derr := changes.DeleteConsumer(dctx, ConsumerName(cfg.Region)); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
		log.Debug().Err(derr).Msg("delete replay consumer")
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	st := a.Stats()
	log.Info().Str("lsn", stream.LSN(st.AppliedLSN.Load()).String()).Uint64("stream_seq", st.StreamSeq.Load()).
		Msg("replay complete")
	return nil
}

// notPastPoint refuses a target whose applied position is past the
// replay's point: a replay only rolls a database forward, so it would
// stop at once and leave the database past the point. A position a
// restore left has no commit time; its LSN still tells.
func notPastPoint(pos applied.Position, o ReplayOptions, cfg Config) error {
	if o.UntilLSN == 0 && o.UntilTime.IsZero() {
		return nil
	}
	lsn, at := pos.CommitLSN, pos.CommitTime
	if o.UntilLSN > 0 && lsn > o.UntilLSN || at != nil && !o.UntilTime.IsZero() && at.After(o.UntilTime) {
		when := ""
		if at != nil {
			when = " (committed " + at.UTC().Format(time.RFC3339Nano) + ")"
		}
		return pgerr.Fatalf(nil, "the target %s holds source %s up to the transaction at LSN %s%s, past the requested point: a replay only rolls a database forward (--force does not take it back); replay into an empty database to reach an earlier point",
			redact.Postgres(cfg.DB), cfg.Name, lsn, when)
	}
	return nil
}

// timeCut is where the source's commit times pass --until-time in the
// change stream (see stream.SeekTime): the commit LSN of the first
// transaction after it (past), or the end of what the stream holds.
type timeCut struct {
	lsn  stream.LSN
	past bool
}

// before reports whether a snapshot holds only transactions before the
// replay's point, so the point can be reached from it. Tables copied again
// after an interrupted snapshot resumed hold transactions up to their own,
// later point, by LSN and by time alike.
//
// A time point is judged by the source's commit times (cut), not by the
// snapshot's own times, which are the capture host's clock: a snapshot
// fits when each of its points lies at or before the first transaction
// past the time. Only a snapshot newer than all the change stream holds
// is judged by its own times.
func before(m stream.SnapshotManifest, o ReplayOptions, cut *timeCut) bool {
	if o.UntilLSN > 0 && !copiedBy(m, o.UntilLSN) {
		return false
	}
	if o.UntilTime.IsZero() {
		return true
	}
	switch {
	case cut != nil && cut.past:
		return copiedBy(m, cut.lsn)
	case cut != nil && copiedBy(m, cut.lsn):
		return true
	}
	// Started, and each table's Taken, are read after their point:
	// every transaction in the rows committed before them.
	if m.Started.After(o.UntilTime) {
		return false
	}
	for _, t := range m.Tables {
		taken := t.Taken
		if taken.IsZero() && t.LSN > m.LSN {
			// A snapshot of an older pgjet: the table was copied
			// again before the snapshot ended.
			if taken = m.Finished; taken.IsZero() {
				return false
			}
		}
		if taken.After(o.UntilTime) {
			return false
		}
	}
	return true
}

// copiedBy reports whether the snapshot's point, and that of every table
// copied again later, is at or before lsn: it holds only transactions
// committed before lsn.
func copiedBy(m stream.SnapshotManifest, lsn stream.LSN) bool {
	if m.LSN > lsn {
		return false
	}
	for _, t := range m.Tables {
		if t.LSN > lsn {
			return false
		}
	}
	return true
}

// pastPoint reports whether the transaction of env lies past the replay's
// point. The point is inclusive, as PostgreSQL's recovery_target_lsn and
// recovery_target_time are with recovery_target_inclusive on: a
// transaction whose commit LSN (the LSN of its commit record, the
// commit_lsn pgjet tail and pgjet.applied show) or commit time equals it
// is replayed.
func (c *Config) pastPoint(env *stream.Envelope) bool {
	if c.UntilLSN > 0 && env.CommitLSN > c.UntilLSN {
		return true
	}
	return !c.UntilTime.IsZero() && env.CommitTime.After(c.UntilTime)
}
