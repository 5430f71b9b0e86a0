package apply

// Generations of a source (see stream/generation.go). An applier that
// meets a generation marker commits what it applied of the old generation,
// records the new one in pgjet.generations in the same target transaction
// as its position, and compares commit LSNs with the new generation's
// start from then on. A database promoted to a generation's primary
// (pgjet promote) holds a row saying so: no applier of that source writes
// into it again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// generationsSQL creates the table of the generations a target followed or
// became the primary of (migration 4).
const generationsSQL = `
CREATE TABLE IF NOT EXISTS pgjet.generations (
	source       text NOT NULL,
	generation   integer NOT NULL,
	-- the marker's content (stream.Generation)
	marker       jsonb NOT NULL,
	-- the marker's stream sequence; NULL on a promoted database until
	-- pgjet promote has published it
	stream_seq   bigint,
	-- this database is the generation's primary: no applier of the source
	-- writes into it
	primary_here boolean NOT NULL DEFAULT false,
	recorded_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, generation)
);
-- keys a failover lost that wait for the new primary's rows (apply/lost.go)
CREATE INDEX IF NOT EXISTS conflicts_repair_pending ON pgjet.conflicts (source)
	WHERE kind = 'lost_in_failover' AND decision = 'repair_pending';`

// ApplicationName is the application_name of an applier's sessions on its
// target (unless --db names one): pgjet promote ends them by it.
const ApplicationName = "pgjet-apply"

// connectTarget opens the applier's session on the target, named
// ApplicationName unless the URL names it.
func connectTarget(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(db)
	if err != nil {
		return nil, err
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = ApplicationName
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// PrimaryHere is a generation of a source whose primary a database became.
type PrimaryHere struct {
	Generation int
	Region     string
	RecordedAt time.Time
	// Published is false while pgjet promote has not published the
	// generation's marker (it stopped before): running it again resumes.
	Published bool
	// Marker is the marker as recorded.
	Marker stream.Generation
}

// Promoted returns the generation of source whose primary the database of
// conn is, nil when it is none (or was made a replica again since). It
// changes nothing.
func Promoted(ctx context.Context, conn *pgx.Conn, source string) (*PrimaryHere, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('pgjet.generations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up pgjet.generations: %w", err)
	}
	if !exists {
		return nil, nil
	}
	var p PrimaryHere
	var primary bool
	var marker []byte
	err := conn.QueryRow(ctx, `SELECT generation, primary_here, coalesce(marker->>'region', ''), recorded_at, stream_seq IS NOT NULL, marker FROM pgjet.generations
		WHERE source = $1 ORDER BY generation DESC LIMIT 1`, source).Scan(&p.Generation, &primary, &p.Region, &p.RecordedAt, &p.Published, &marker)
	if err == nil {
		err = json.Unmarshal(marker, &p.Marker)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read pgjet.generations: %w", err)
	case !primary:
		return nil, nil
	}
	return &p, nil
}

// refusePromoted returns a FatalError when the target was promoted to a
// primary of the source: applying the stream there would write the new
// generation's transactions onto the database that made them.
func refusePromoted(ctx context.Context, conn *pgx.Conn, db, source string) error {
	p, err := Promoted(ctx, conn, source)
	if err != nil || p == nil {
		return err
	}
	return promotedError(db, source, p.Generation, p.Region, p.RecordedAt)
}

func promotedError(db, source string, gen int, region string, at time.Time) error {
	return pgerr.Fatalf(nil, "%s was promoted to the primary of source %s (generation %d, region %s, %s): pgjet-apply must not write into it any more; remove this applier (run pgjet-capture --name %s there instead)",
		redact.Postgres(db), source, gen, region, at.UTC().Format(time.RFC3339), source)
}

// RecordPrimary records, in the database of conn, that it is the primary
// of generation g of source (pgjet.generations, primary_here), after
// bringing pgjet's tables to this pgjet's version. Recording it again
// replaces the marker (pgjet promote records it before the new primary's
// slot exists, then with it). seq is the marker's stream sequence, 0 while
// it is unpublished.
func RecordPrimary(ctx context.Context, conn *pgx.Conn, db, source string, g stream.Generation, seq uint64) error {
	if err := migrate(ctx, conn, db); err != nil {
		return err
	}
	marker, err := json.Marshal(g)
	if err != nil {
		return err
	}
	var s *int64
	if seq > 0 {
		v := int64(seq)
		s = &v
	}
	_, err = conn.Exec(ctx, `INSERT INTO pgjet.generations (source, generation, marker, stream_seq, primary_here) VALUES ($1, $2, $3, $4, true)
		ON CONFLICT (source, generation) DO UPDATE SET marker = EXCLUDED.marker, stream_seq = EXCLUDED.stream_seq, primary_here = true`,
		source, g.Generation, marker, s)
	if err != nil {
		return fmt.Errorf("record %s as primary of generation %d: %w", redact.Postgres(db), g.Generation, err)
	}
	return nil
}

// generation handles the generation marker env (message m, stream sequence
// seq): the old generation's transactions before it are committed, and the
// new generation's start becomes the position, recorded with the marker.
func (s *session) generation(ctx context.Context, m jetstream.Msg, seq uint64, env *stream.Envelope, g stream.Generation) error {
	a := s.a
	if s.cur {
		// The old generation's last transaction was cut short in the
		// stream (its capture died while publishing it) and never
		// completed there: the new primary does not have it either.
		a.log.Warn().Str("lsn", s.curLSN.String()).Uint64("stream_seq", seq).Int("generation", g.Generation).
			Msg("the previous generation ends inside a transaction cut short; it never reached the stream whole and is not applied")
		if !s.skipping {
			s.rollback(ctx)
		}
		s.cur, s.skipping = false, false
	}
	if err := s.commit(ctx); err != nil {
		return err
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	var system, db string
	var hasSlot bool
	if err := s.conn.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database(),
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database())`, g.Slot).Scan(&system, &db, &hasSlot); err != nil {
		return fmt.Errorf("identify the target database: %w", err)
	}
	if system == g.System && db == g.Database && hasSlot {
		return promotedError(a.cfg.DB, a.cfg.Name, g.Generation, g.Region, g.PromotedAt)
	}
	marker, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if err := s.begin(ctx); err != nil {
		return err
	}
	name := []byte(a.cfg.Name)
	s.queue(`INSERT INTO pgjet.generations (source, generation, marker, stream_seq) VALUES ($1, $2::integer, $3::jsonb, $4::bigint)
		ON CONFLICT (source, generation) DO UPDATE SET marker = EXCLUDED.marker, stream_seq = EXCLUDED.stream_seq, primary_here = false, recorded_at = now()`,
		seq, g.Start, name, []byte(strconv.Itoa(g.Generation)), marker, []byte(strconv.FormatUint(seq, 10)))
	// LSN-keyed state of the old generation would be compared with the
	// new one's LSNs: tables a resumed snapshot copied later, a skip
	// request not met.
	s.queue("DELETE FROM pgjet.snapshot_tables WHERE source = $1", seq, g.Start, name)
	if s.skip != nil {
		a.log.Warn().Str("lsn", s.skip.lsn.String()).Int("generation", g.Generation).
			Msg("skip request removed without skipping: the source's generation changed before the transaction came")
		s.skip = nil
	}
	s.queue("DELETE FROM pgjet.skip WHERE source = $1", seq, g.Start, name)
	s.snapSkip = nil
	s.groupPos = position{commit: g.Start, end: g.Start, caughtUp: g.Start, seq: seq, time: env.CommitTime}
	s.groupMsg = m
	// Committed alone, right after: nothing of the new generation shares
	// a target transaction with the old one.
	s.ddl = true
	a.log.Info().Int("generation", g.Generation).Str("system", g.System).Str("region", g.Region).Str("lsn", g.Start.String()).
		Uint64("stream_seq", seq).Uint64("prev_seq", g.PrevSeq).Str("prev_lsn", g.PrevLSN.String()).Msg("the source's new generation begins: following its new primary")
	return nil
}

// queue adds one statement of pgjet's own to the open group.
func (s *session) queue(sql string, seq uint64, lsn stream.LSN, params ...[]byte) {
	s.batch.ExecParams(sql, params, nil, nil, nil)
	s.batchInfo = append(s.batchInfo, stmtInfo{seq: seq, lsn: lsn, table: "pgjet.generations"})
	s.batchLen++
}

// repoint makes the region's mirror follow the source's new home after a
// failover: the mirror in this domain (old) copies the stream of a domain
// the source has left, and upstream (--upstream-domain) holds the stream
// of a newer generation, which began at stream sequence g.PrevSeq + 1.
// The stream there holds the old generation too, up to g.PrevSeq, with the
// same sequences (a promoted mirror keeps its origin's), so a target at or
// before g.PrevSeq goes on from where it is, and the mirror is made
// again. A target past g.PrevSeq applied transactions the new primary
// never got: their keys are recorded for repair and the target's position
// goes back to g.PrevSeq first (recordLost).
func (s *session) repoint(ctx context.Context, js jetstream.JetStream, old jetstream.Stream, upstream string) (bool, error) {
	a := s.a
	name := stream.StreamName(a.cfg.Name)
	ujs, err := stream.NewJetStream(js.Conn(), upstream)
	if err != nil {
		return false, natsError{err}
	}
	up, err := ujs.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return false, nil // no stream of a new home there: the conflict stands
	case err != nil:
		// The new home does not answer (yet): its link may be coming up.
		return false, natsError{fmt.Errorf("look up stream %s in domain %s, where --upstream-domain says the source lives: %w", name, upstream, err)}
	case up.CachedInfo().Config.Mirror != nil:
		return false, nil
	}
	g, _, err := stream.LastGeneration(ctx, up, a.cfg.Name)
	if err != nil {
		return false, natsError{err}
	}
	if g == nil {
		return false, nil
	}
	mine, _, err := stream.LastGeneration(ctx, old, a.cfg.Name)
	if err != nil {
		return false, natsError{err}
	}
	if mine != nil && mine.Generation >= g.Generation {
		return false, nil
	}
	if s.pos.seq > g.PrevSeq {
		// Ahead of the promoted region: the keys its lost transactions
		// touched are rewritten from the new primary.
		if err := s.recordLost(ctx, old, g); err != nil {
			return false, err
		}
	}
	oldInfo := old.CachedInfo()
	if err := js.DeleteStream(ctx, name); err != nil {
		return false, natsError{fmt.Errorf("delete mirror %s of the source's old home: %w", name, err)}
	}
	a.log.Warn().Str("stream", name).Str("old_upstream", stream.MirrorDomain(oldInfo.Config.Mirror)).Str("upstream", upstream).
		Int("generation", g.Generation).Str("region", g.Region).Uint64("prev_seq", g.PrevSeq).Uint64("stream_seq", s.pos.seq).
		Uint64("old_mirror_last_seq", oldInfo.State.LastSeq).
		Msg("the source failed over: this region's mirror now follows its new home; what the old mirror held past the promotion point never reached the new primary and was not applied here")
	return true, nil
}
