package capture

// A resync re-copies one captured table into every region while changes
// keep flowing, as pglogical's alter_subscription_resynchronize_table
// does: a copy of that table alone, taken as a snapshot's tables are (a
// temporary slot's exported snapshot, at a point L), published to the
// snapshot stream under a resync id (stream.ResyncIDPrefix), and a marker
// in the change stream committed before L. An applier that reaches the
// marker waits for the copy, replaces the table's rows with it, and skips
// the table's changes committed before L (pgjet.snapshot_tables), as it
// does for a table a resumed snapshot copied again; the changes after L
// follow. Restores and replays never build from a resync.
//
// The order: the begin message first (so that a later resync of the table
// can find and give up one that died before its end), then the marker,
// then the point and the copy, then the end message with the point.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// Resync copies table ("schema.name", captured) alone into the snapshot
// stream as a resync and marks its place in the change stream (see the
// note at the top of the file). Unfinished resyncs of the same table, whose
// pgjet resync died, are given up first. It needs capture to run: the
// marker reaches the appliers through the change stream. It returns the
// resync's manifest, which names the point.
func (c *Capture) Resync(ctx context.Context, js jetstream.JetStream, table string) (stream.SnapshotManifest, error) {
	st, err := stream.EnsureSnapshotStream(ctx, js, c.cfg.Name, c.cfg.Stream.Replicas)
	if err != nil {
		return stream.SnapshotManifest{}, wrapNATS(err)
	}
	s := c.newSnapshotter(js)
	s.only = table
	// The table must be captured: checked before anything is published.
	conn, err := s.dial(ctx)
	if err != nil {
		return stream.SnapshotManifest{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tables, err := s.tables(ctx, conn)
	if err != nil {
		return stream.SnapshotManifest{}, err
	}
	if len(tables) == 0 {
		return stream.SnapshotManifest{}, pgerr.Fatalf(nil, "table %s is not captured by source %s on %s (not in publication %s, or left out by the table filters): give a captured table as schema.name, with the filters pgjet-capture runs with",
			table, c.cfg.Name, c.where(), c.cfg.Publication)
	}
	if err := s.abandonResyncs(ctx, st, tables[0]); err != nil {
		return stream.SnapshotManifest{}, err
	}

	s.id = stream.NewResyncID(time.Now())
	man := stream.SnapshotManifest{Version: stream.SnapshotVersion, Source: c.cfg.Name, ID: s.id, Started: time.Now().UTC(),
		Resync: true, Tables: []stream.SnapshotTable{tables[0].SnapshotTable}}
	beginSeq, err := s.publishMetaSeq(ctx, stream.SnapBegin, "begin", man)
	if err != nil {
		return man, err
	}
	ok := false
	defer func() {
		if !ok {
			// Appliers waiting at the marker go on without the copy.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := s.publishMeta(actx, stream.SnapAbort, "abort", man); err != nil {
				c.log.Warn().Err(err).Str("resync", s.id).Msg("could not mark the resync given up: appliers wait at its marker until a next pgjet resync of the table gives it up")
			}
		}
	}()
	mark, err := json.Marshal(stream.ResyncMarker{ID: s.id, Schema: tables[0].Schema, Table: tables[0].Name, BeginSeq: beginSeq})
	if err != nil {
		return man, err
	}
	var at string
	if err := conn.QueryRow(ctx, "SELECT pg_logical_emit_message(true, $1, $2)::text", stream.PrefixResync, string(mark)).Scan(&at); err != nil {
		return man, fmt.Errorf("write the resync's marker into the WAL of %s: %w", c.where(), err)
	}

	pt, err := s.openPoint(ctx)
	if err != nil {
		return man, err
	}
	defer pt.close(context.WithoutCancel(ctx))
	if len(pt.tables) != 1 {
		return man, fmt.Errorf("table %s is no longer captured by source %s", table, c.cfg.Name)
	}
	c.log.Info().Str("resync", s.id).Str("table", table).Str("marker_lsn", at).Str("lsn", s.lsn.String()).Msg("resync started")
	s.stats.Rows.Store(0)
	s.stats.Bytes.Store(0)
	s.stats.EstRows.Store(pt.tables[0].EstRows)
	if err := s.copyTables(ctx, pt.lead, pt.tables); err != nil {
		return man, err
	}
	t := pt.tables[0]
	tt := t.SnapshotTable
	tt.LSN, tt.Taken, tt.Rows, tt.Bytes = s.lsn, s.taken, t.rows.Load(), t.bytes.Load()
	man.LSN, man.Tables, man.Rows, man.Bytes = s.lsn, []stream.SnapshotTable{tt}, tt.Rows, tt.Bytes
	man.Finished = time.Now().UTC()
	if err := s.publishMeta(ctx, stream.SnapEnd, "end", man); err != nil {
		return man, err
	}
	ok = true
	c.log.Info().Str("resync", s.id).Str("table", table).Str("lsn", s.lsn.String()).Int64("rows", tt.Rows).Msg("resync copied")
	if err := c.pruneResyncs(ctx, js, st); err != nil {
		c.log.Warn().Err(err).Msg("remove old resyncs")
	}
	return man, nil
}

// abandonResyncs gives up the unfinished resyncs of table t: their pgjet
// resync died (a running one would not be replaced by another), and
// appliers would wait at their markers for ever.
func (s *snapshotter) abandonResyncs(ctx context.Context, st jetstream.Stream, t *snapTable) error {
	rs, err := stream.ListResyncs(ctx, st, s.c.cfg.Name)
	if err != nil {
		return wrapNATS(err)
	}
	for _, r := range rs {
		if r.Complete || r.Aborted {
			continue
		}
		man, _, err := readSnapshotMeta(ctx, st, s.c.cfg.Name, r.ID)
		if err != nil {
			return err
		}
		if len(man.Tables) != 1 || man.Tables[0].Key() != t.Key() {
			continue
		}
		s.id = r.ID
		if err := s.publishMeta(ctx, stream.SnapAbort, "abort", man); err != nil {
			return err
		}
		s.c.log.Info().Str("resync", r.ID).Str("table", t.Key()).Msg("unfinished resync of the table given up")
	}
	return nil
}

// pruneResyncs removes the resyncs, finished or given up, whose markers
// the change stream no longer holds: no applier can meet them any more.
func (c *Capture) pruneResyncs(ctx context.Context, js jetstream.JetStream, st jetstream.Stream) error {
	rs, err := stream.ListResyncs(ctx, st, c.cfg.Name)
	if err != nil {
		return err
	}
	// The change stream's first transaction: markers before it are gone.
	var first stream.LSN
	var firstTime time.Time
	if changes, err := js.Stream(ctx, stream.StreamName(c.cfg.Name)); err == nil {
		info, err := changes.Info(ctx)
		if err != nil {
			return err
		}
		if m, err := changes.GetMsg(ctx, info.State.FirstSeq); err == nil {
			if envs, err := stream.DecodeMessage(m.Data); err == nil {
				first, firstTime = envs[0].CommitLSN, envs[0].CommitTime
			}
		}
	}
	if first == 0 {
		return nil
	}
	for _, r := range rs {
		// A resync given up has no point: its start (the capture host's
		// clock, before its marker) tells instead.
		gone := r.Complete && r.Manifest.LSN < first || r.Aborted && !r.Manifest.Started.IsZero() && r.Manifest.Started.Before(firstTime)
		if !gone {
			continue
		}
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(stream.SnapshotAllSubjects(c.cfg.Name, r.ID))); err != nil {
			return fmt.Errorf("purge resync %s: %w", r.ID, err)
		}
		c.log.Info().Str("resync", r.ID).Msg("old resync removed")
	}
	return nil
}
