package apply

// An applier meeting a resync's marker in the change stream (pgjet resync,
// see capture/resync.go) replaces the table's rows with the resync's copy,
// taken at a point L after the marker, and skips the table's changes
// committed before L, as it does for a table a resumed snapshot copied
// again (pgjet.snapshot_tables): the changes after L follow. The copy is
// loaded in the target transaction that moves the position past the
// marker, so a restart in the middle loads it again from the start.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// resync handles the resync marker ch of source transaction env (stream
// sequence seq).
func (s *session) resync(ctx context.Context, env *stream.Envelope, ch *stream.Change, seq uint64) error {
	a := s.a
	var mk stream.ResyncMarker
	if err := json.Unmarshal(ch.Content, &mk); err != nil || mk.ID == "" || mk.Table == "" {
		a.log.Warn().Str("lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).Msg("resync marker cannot be read: passed over, no table re-copied")
		return nil
	}
	key := mk.Schema + "." + mk.Table
	log := a.log.With().Str("resync", mk.ID).Str("table", key).Logger()
	if a.cfg.StopAtEnd {
		// A replay is exact without the copy, which holds the table at a
		// later point than the replay may stop at.
		log.Info().Msg("replay passes over a resync marker")
		return nil
	}
	if s.snaps == nil {
		st, err := snapshotStream(ctx, s.js, a.cfg)
		if err != nil {
			return err
		}
		if st == nil {
			log.Warn().Msg("no snapshot stream in this region: the table is not re-copied here")
			return nil
		}
		s.snaps = st
	}
	// The transactions before the marker need not wait for the copy.
	if s.groupPos.seq == seq {
		// Only part of this message is applied (see handle).
		s.groupPos.seq, s.groupMsg = seq-1, nil
	}
	if err := s.commit(ctx); err != nil {
		return err
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	man, ok, err := s.awaitResync(ctx, mk, env.CommitLSN, seq, log)
	if err != nil || !ok {
		if err == nil {
			log.Warn().Msg("resync given up (its pgjet resync failed, or a later one replaced it): the table is not re-copied here")
		}
		if berr := s.begin(ctx); err == nil {
			err = berr
		}
		return err
	}
	if err := s.begin(ctx); err != nil {
		return err
	}
	if err := s.flush(ctx); err != nil { // sends BEGIN
		return err
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	t := man.Tables[0]
	ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	fail := func(err error) error {
		if pgerr.IsRetryable(err) {
			return fmt.Errorf("re-copy %s from resync %s: %w", ident, mk.ID, err)
		}
		return pgerr.Fatalf(err, "re-copying %s from resync %s (marker at LSN %s, stream seq %d) failed on the target; make the table match the source's and restart pgjet-apply",
			ident, mk.ID, env.CommitLSN, seq)
	}
	// DELETE, not TRUNCATE: other tables' foreign keys may reference it
	// (the replica role keeps them from firing).
	if _, err := s.pg.Exec(ctx, "DELETE FROM "+ident).ReadAll(); err != nil {
		return fail(err)
	}
	n, err := s.loadResync(ctx, mk.ID, t)
	if err != nil {
		return fail(err)
	}
	if n != t.Rows {
		return pgerr.Fatalf(nil, "resync %s holds %d rows of %s where its end message says %d: the copy is damaged; run pgjet resync --table %s again",
			mk.ID, n, ident, t.Rows, key)
	}
	if _, err := s.pg.ExecParams(ctx, `INSERT INTO pgjet.snapshot_tables (source, schema_name, table_name, lsn) VALUES ($1, $2, $3, $4::pg_lsn)
		ON CONFLICT (source, schema_name, table_name) DO UPDATE SET lsn = EXCLUDED.lsn`,
		[][]byte{[]byte(a.cfg.Name), []byte(t.Schema), []byte(t.Name), []byte(t.LSN.String())}, nil, nil, nil).Close(); err != nil {
		return fail(err)
	}
	if s.snapSkip == nil {
		s.snapSkip = map[string]stream.LSN{}
	}
	s.snapSkip[key] = t.LSN
	// The group commits after this source transaction, with the copy.
	s.ddl = true
	log.Info().Str("lsn", t.LSN.String()).Int64("rows", n).Str("marker_lsn", env.CommitLSN.String()).
		Msg("table re-copied from its resync: its changes before the copy's point are passed over, those after it follow")
	return nil
}

// awaitResync waits until resync mk's copy is complete in the region's
// snapshot stream (pgjet resync copying it, or the mirror catching up),
// and returns its manifest; ok is false for a resync given up, or one
// whose copy left the stream before this applier reached its marker (at
// LSN lsn, stream sequence seq) when a later resync of the table is there
// to re-copy it. Such a copy without a later resync stops the applier:
// it would wait for ever.
func (s *session) awaitResync(ctx context.Context, mk stream.ResyncMarker, lsn stream.LSN, seq uint64, log zerolog.Logger) (stream.SnapshotManifest, bool, error) {
	var logged time.Time
	for {
		rs, err := stream.ListResyncs(ctx, s.snaps, s.a.cfg.Name)
		if err != nil {
			return stream.SnapshotManifest{}, false, natsError{err}
		}
		listed := false
		for _, r := range rs {
			switch {
			case r.ID != mk.ID:
				continue
			case r.Complete && len(r.Manifest.Tables) == 1:
				return r.Manifest, true, nil
			case r.Complete || r.Aborted:
				return stream.SnapshotManifest{}, false, nil
			}
			listed = true
		}
		if !listed {
			up := func(ctx context.Context) jetstream.Stream { return upstreamSnapshotStream(ctx, s.js, s.a.cfg) }
			gone, err := stream.ResyncGone(ctx, s.snaps, up, s.a.cfg.Name, mk)
			if err != nil {
				return stream.SnapshotManifest{}, false, natsError{err}
			}
			if gone {
				return stream.SnapshotManifest{}, false, s.resyncGone(ctx, mk, rs, lsn, seq, log)
			}
		}
		if time.Since(logged) >= resyncWaitLog {
			logged = time.Now()
			log.Info().Msg("waiting for the resync's copy (pgjet resync still copying, or the snapshot mirror catching up); should that pgjet resync have died, run it again for the table: it gives the unfinished one up")
		}
		select {
		case <-ctx.Done():
			return stream.SnapshotManifest{}, false, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// resyncGone decides on a resync marker mk whose copy left the region's
// snapshot stream before the applier reached it (its limits, a purge, a
// mirror made after pgjet resync pruned it, the stream made anew): with a later resync of the
// same table in the stream (rs), whose own marker comes later in the
// change stream and re-copies the table there, the marker is passed over
// (nil); without one, the applier stops with the fix.
func (s *session) resyncGone(ctx context.Context, mk stream.ResyncMarker, rs []stream.SnapshotInfo, lsn stream.LSN, seq uint64, log zerolog.Logger) error {
	key := mk.Schema + "." + mk.Table
	for _, r := range rs {
		if r.ID <= mk.ID || r.Aborted {
			continue
		}
		table, err := stream.ResyncTable(ctx, s.snaps, s.a.cfg.Name, r)
		if err != nil {
			return natsError{err}
		}
		if table == key {
			log.Warn().Str("later_resync", r.ID).Msg("the resync's copy is no longer in the region's snapshot stream; a later resync of the table re-copies it at its own marker: this one is passed over")
			return nil
		}
	}
	return pgerr.Fatalf(nil, "resync %s of %s (marker at LSN %s, stream seq %d): its copy is no longer in this region's snapshot stream %s (removed by the stream's limits or a purge, or the stream was made anew, before this applier reached the marker), so the table cannot be re-copied here from it; run pgjet resync --table %s again, then restart pgjet-apply: it passes over this marker for the new resync's",
		mk.ID, key, lsn, seq, stream.SnapshotStreamName(s.a.cfg.Name), key)
}

// resyncWaitLog is how often the wait for a resync's copy is logged.
const resyncWaitLog = 30 * time.Second

// loadResync streams the rows of resync id, table t, into one COPY in the
// open target transaction and returns how many it loaded. Rows of ranges
// copied in parallel interleave by whole rows, and nothing comes between
// the messages of a row cut in several: their bytes in stream order are
// COPY text.
func (s *session) loadResync(ctx context.Context, id string, t stream.SnapshotTable) (int64, error) {
	cons, err := s.snaps.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{stream.SnapshotRowsSubject(s.a.cfg.Name, id)}})
	if err != nil {
		return 0, natsError{fmt.Errorf("read resync %s: %w", id, err)}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, natsError{fmt.Errorf("read resync %s: %w", id, err)}
	}
	if info.NumPending == 0 {
		return 0, nil
	}
	pr, pw := io.Pipe()
	read := make(chan error, 1)
	go func() {
		var err error
		for n := info.NumPending; n > 0 && err == nil; n-- {
			var m jetstream.Msg
			if m, err = cons.Next(jetstream.FetchMaxWait(30 * time.Second)); err != nil {
				err = natsError{fmt.Errorf("read resync %s: %w", id, err)}
				break
			}
			_, err = pw.Write(m.Data())
		}
		pw.CloseWithError(err)
		read <- err
	}()
	tag, err := s.pg.CopyFrom(ctx, pr, copySQL(t))
	pr.CloseWithError(io.ErrClosedPipe) // ends the reader if COPY stopped early
	if rerr := <-read; rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) {
		return 0, rerr // why COPY stopped
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
