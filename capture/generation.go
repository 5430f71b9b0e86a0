package capture

// Generations of a source (see stream/generation.go). pgjet promote
// prepares the new primary as a capture would (Prepare) and begins the new
// generation with a marker naming its system and slot; capture started
// there then finds the marker at the stream's tail and goes on after it.
// The old primary's capture finds a marker naming another system and
// stops (checkGeneration).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// Primary is a database prepared to be a source's primary: what its
// capture streams from.
type Primary struct {
	System   string // system identifier, decimal
	Timeline int32
	Database string
	Slot     string
	// Start is where the slot begins: every transaction committed after
	// it is decoded from it.
	Start stream.LSN
	// Created is false when the slot was there already (a promote run
	// again), and Start is then its confirmed position.
	Created bool
}

// Prepare makes the database of cfg ready to be captured, as a capture's
// start would, without streaming: the DDL capture triggers, the
// publication and the slot (made when missing). It returns where the slot
// begins. cfg must have passed Validate. Transactions committed on the
// database after Prepare returns are decoded by the capture started later
// from its slot.
func Prepare(ctx context.Context, cfg Config, log zerolog.Logger) (Primary, error) {
	c := New(cfg, log)
	pool, err := c.connectPool(ctx)
	if err != nil {
		return Primary{}, err
	}
	defer pool.Close()
	if err := c.preflight(ctx, pool); err != nil {
		return Primary{}, err
	}
	repl, err := connectReplication(ctx, cfg.DB, "pgjet promote")
	if err != nil {
		return Primary{}, pgerr.ClassifyConnect(cfg.DB, err)
	}
	defer repl.Close(context.WithoutCancel(ctx))
	src, err := identify(ctx, repl)
	if err != nil {
		return Primary{}, err
	}
	p := Primary{System: src.system, Timeline: src.timeline, Database: src.database, Slot: cfg.Slot}
	var plugin, db string
	var confirmed *string
	err = pool.QueryRow(ctx, `SELECT plugin, database, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&plugin, &db, &confirmed)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res, err := pglogrepl.CreateReplicationSlot(ctx, repl, cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			return Primary{}, fmt.Errorf("create replication slot %q: %w", cfg.Slot, err)
		}
		if p.Start, err = stream.ParseLSN(res.ConsistentPoint); err != nil {
			return Primary{}, err
		}
		p.Created = true
		return p, nil
	case err != nil:
		return Primary{}, fmt.Errorf("look up slot %q: %w", cfg.Slot, err)
	case plugin != "pgoutput" || db != src.database || confirmed == nil:
		return Primary{}, pgerr.Fatalf(nil, "slot %q on %s is not a usable pgoutput slot of database %s (plugin %s, database %s): drop it or choose another --slot",
			cfg.Slot, c.where(), src.database, plugin, db)
	}
	if p.Start, err = stream.ParseLSN(*confirmed); err != nil {
		return Primary{}, err
	}
	return p, nil
}

// checkGeneration stops a capture whose database is no longer the source's
// primary: the stream's newest generation marker names another system (or
// another slot of this one). Its writes since the promotion point are not
// in the stream, and must not be: the new primary's are.
func (c *Capture) checkGeneration(ctx context.Context, st jetstream.Stream, src sourceID) error {
	g, seq, err := stream.LastGeneration(ctx, st, c.cfg.Name)
	if err != nil {
		return wrapNATS(err)
	}
	if g == nil || g.System == src.system && g.Database == src.database && g.Slot == c.cfg.Slot {
		return nil
	}
	return pgerr.Fatalf(nil, "%s is no longer the primary of source %s: stream %s moved to generation %d at sequence %d, region %s's database (system %s) promoted %s after stream sequence %d (LSN %s); its transactions committed since are not in the stream: stop this capture, start pgjet-capture on the new primary instead, and make this database a replica of it (an empty database that pgjet-apply builds from a snapshot)",
		c.where(), c.cfg.Name, stream.StreamName(c.cfg.Name), g.Generation, seq, g.Region, g.System, g.PromotedAt.UTC().Format(time.RFC3339), g.PrevSeq, g.PrevLSN)
}

// retiredError stops a capture whose stream a failover retired: its
// database was the primary before another region was promoted.
func (c *Capture) retiredError(err error) error {
	return pgerr.Fatalf(nil, "%s is no longer the primary of source %s: %v; its transactions committed since the promotion are not in any stream: stop this capture, start pgjet-capture on the new primary instead, and make this database a replica of it (an empty database that pgjet-apply builds from a snapshot)",
		c.where(), c.cfg.Name, err)
}

// retireOldHome retires the stream of the old home after a failover moved
// the source's stream (stream.RetireOldHome), trying every outageProbe
// until it is done or ctx ends: the old home's server may come back at any
// time, and until its stream is retired it answers this capture's
// publishes with errors.
func (c *Capture) retireOldHome(ctx context.Context, nc *nats.Conn, st jetstream.Stream) {
	g, _, err := stream.LastGeneration(ctx, st, c.cfg.Name)
	if err != nil || g == nil || g.PrevDomain == "" {
		return
	}
	t := time.NewTicker(outageProbe)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, outageProbe)
		done, err := stream.RetireOldHome(rctx, nc, c.cfg.Name, g)
		cancel()
		if err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Str("domain", g.PrevDomain).Msg("retire the stream of the source's old home: it answers this capture's publishes with errors until it is retired; give this capture's NATS user STREAM.UPDATE there, or retire it by hand")
		}
		if done {
			if err == nil {
				c.log.Debug().Str("domain", g.PrevDomain).Msg("the old home's stream takes none of the source's subjects")
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkSlotAfterFailover names a failover inside the home region when
// capture's slot is missing on a source on another timeline than the
// stream's last message: a physical standby promoted by Patroni, repmgr or
// pg_auto_failover. Postgres 15 keeps no logical slots on standbys, so the
// slot stayed on the old primary, and a new one would start past whatever
// the old primary committed after its confirmed position. Other missing
// slots are ensureSlot's to report.
func (c *Capture) checkSlotAfterFailover(ctx context.Context, q queryRower, src sourceID, tail tailInfo) error {
	if tail.pos == 0 || tail.id.timeline == 0 || tail.id.timeline == src.timeline {
		return nil
	}
	var exists bool
	if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", c.cfg.Slot).Scan(&exists); err != nil {
		return fmt.Errorf("look up slot %q: %w", c.cfg.Slot, err)
	}
	if exists {
		return nil
	}
	return pgerr.Fatalf(nil, "slot %q is missing on %s, which was promoted from timeline %d to timeline %d (a physical standby promoted by a failover inside the home region): Postgres 15 keeps no logical slots on standbys, so the slot stayed on the old primary, and what it committed after the slot's position (the stream holds changes up to LSN %s) is in no stream; a new slot would start past it: %s; so that the next such failover keeps the slot, make it a permanent logical slot of the failover manager on every standby (Patroni: slots: {%s: {type: logical, database: %s, plugin: pgoutput}}), or fail over with pgjet promote",
		c.cfg.Slot, c.where(), tail.id.timeline, src.timeline, tail.pos, newStreamRemedy(c.cfg.Name), c.cfg.Slot, src.database)
}
