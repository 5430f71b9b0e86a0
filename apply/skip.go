package apply

// Skipping one transaction, as ALTER SUBSCRIPTION ... SKIP (lsn = L) does
// for native subscriptions: `pgjet skip` records the commit LSN of the
// transaction an applier stopped on in pgjet.skip, and the applier, when
// it meets the transaction of exactly that commit LSN, passes over it.
// Nothing vanishes unrecorded: its messages go to the region's dead-letter
// stream, and one row to pgjet.conflicts (kind skipped, decision skip), in
// the target transaction that moves the position past it and removes the
// request. The applier is the only writer of its position, so a skip can
// race with nothing; a request whose transaction the applier passed
// without meeting it (applied before the request came) is removed with a
// warning, never applied to another transaction.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// skipSQL creates the table of skip requests (migration 3): at most one
// per source, the transaction its applier stopped on.
const skipSQL = `
CREATE TABLE IF NOT EXISTS pgjet.skip (
	source       text PRIMARY KEY,
	commit_lsn   pg_lsn NOT NULL,
	requested_at timestamptz NOT NULL DEFAULT now(),
	requested_by text NOT NULL DEFAULT current_user
);`

// Conflict kinds and decisions of what an operator did, recorded in
// pgjet.conflicts beside the applier's own.
const (
	// KindSkipped is a transaction passed over at `pgjet skip`'s request;
	// its decision is DecisionSkip.
	KindSkipped  = "skipped"
	DecisionSkip = "skip"
)

// errSkipped is why a skipped transaction's messages are dead letters.
var errSkipped = errors.New("skipped at the operator's request (pgjet skip): not applied")

// RequestSkip records on the target of conn that the applier of source
// must skip the transaction of commit LSN lsn, replacing any request of
// another LSN, which it returns (0 when none). It brings pgjet's tables
// to this pgjet's version first (db names the target in errors). It is
// idempotent; the caller checks that lsn is the transaction to skip.
func RequestSkip(ctx context.Context, conn *pgx.Conn, db, source string, lsn stream.LSN) (replaced stream.LSN, err error) {
	if err := migrate(ctx, conn, db); err != nil {
		return 0, err
	}
	var prev *string
	err = conn.QueryRow(ctx, `WITH old AS (SELECT commit_lsn FROM pgjet.skip WHERE source = $1 FOR UPDATE)
		INSERT INTO pgjet.skip AS s (source, commit_lsn) VALUES ($1, $2::pg_lsn)
		ON CONFLICT (source) DO UPDATE SET commit_lsn = EXCLUDED.commit_lsn, requested_at = now(), requested_by = current_user
		RETURNING (SELECT commit_lsn::text FROM old)`, source, lsn.String()).Scan(&prev)
	if err != nil {
		return 0, fmt.Errorf("record the skip in pgjet.skip: %w", err)
	}
	if prev != nil {
		if replaced, err = stream.ParseLSN(*prev); err != nil {
			return 0, err
		}
		if replaced == lsn {
			replaced = 0
		}
	}
	return replaced, nil
}

// SkipPending reports whether the request to skip transaction lsn of
// source still waits on the target of conn, and whether pgjet.conflicts
// holds the record of its skip.
func SkipPending(ctx context.Context, conn *pgx.Conn, source string, lsn stream.LSN) (pending, recorded bool, err error) {
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pgjet.skip WHERE source = $1 AND commit_lsn = $2::pg_lsn),
		EXISTS (SELECT 1 FROM pgjet.conflicts WHERE source = $1 AND commit_lsn = $2::pg_lsn AND kind = $3)`,
		source, lsn.String(), KindSkipped).Scan(&pending, &recorded)
	if err != nil {
		return false, false, fmt.Errorf("read pgjet.skip: %w", err)
	}
	return pending, recorded, nil
}

// skipRequest is a transaction the session is asked to skip.
type skipRequest struct {
	lsn stream.LSN
}

// loadSkip reads the skip request of the session's source. One for a
// transaction at or before the applied position can no longer be met:
// it is removed, with a warning.
func (s *session) loadSkip(ctx context.Context) error {
	s.skip = nil
	var lsn string
	var at time.Time
	var by string
	err := s.conn.QueryRow(ctx, "SELECT commit_lsn::text, requested_at, requested_by FROM pgjet.skip WHERE source = $1", s.a.cfg.Name).Scan(&lsn, &at, &by)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read pgjet.skip: %w", err)
	}
	l, err := stream.ParseLSN(lsn)
	if err != nil {
		return err
	}
	if l <= s.pos.commit {
		if _, err := s.conn.Exec(ctx, "DELETE FROM pgjet.skip WHERE source = $1 AND commit_lsn = $2::pg_lsn", s.a.cfg.Name, lsn); err != nil {
			return fmt.Errorf("remove a skip request already passed: %w", err)
		}
		s.a.log.Warn().Str("lsn", lsn).Str("applied_lsn", s.pos.commit.String()).Time("requested_at", at).Str("requested_by", by).
			Msg("skip request removed without skipping: the target's position is at or past that transaction (it was applied or skipped before)")
		return nil
	}
	s.skip = &skipRequest{lsn: l}
	s.a.log.Info().Str("lsn", lsn).Time("requested_at", at).Str("requested_by", by).
		Msg("skip requested: the transaction of this commit LSN will be passed over, its messages kept in the dead-letter stream")
	return nil
}

// skipMissed handles the first chunk of transaction env (stream sequence
// seq), committed after the one to skip, which the session never met:
// the request can no longer be met, and is removed with the group.
func (s *session) skipMissed(ctx context.Context, env *stream.Envelope, seq uint64) error {
	lsn := s.skip.lsn
	s.skip = nil
	s.a.log.Warn().Str("lsn", lsn.String()).Str("next_lsn", env.CommitLSN.String()).Uint64("stream_seq", seq).
		Msg("skip request removed without skipping: the stream holds no transaction of that commit LSN where it was due")
	if err := s.begin(ctx); err != nil {
		return err
	}
	s.batch.ExecParams("DELETE FROM pgjet.skip WHERE source = $1 AND commit_lsn = $2::pg_lsn",
		[][]byte{[]byte(s.a.cfg.Name), []byte(lsn.String())}, nil, nil, nil)
	s.batchInfo = append(s.batchInfo, stmtInfo{seq: seq, lsn: env.CommitLSN, table: "pgjet.skip"})
	s.batchLen++
	return nil
}

// startSkip begins to skip the transaction whose chunk env message m
// (stream sequence seq) holds: its first, or after a restart in the
// middle of the skip, the next one.
func (s *session) startSkip(ctx context.Context, m jetstream.Msg, seq uint64, env *stream.Envelope) error {
	if !s.dlqReady {
		if err := EnsureDeadLetters(ctx, s.js, s.a.cfg.Name, s.a.cfg.Region); err != nil {
			return natsError{err}
		}
		s.dlqReady = true
	}
	s.drop = &dropped{lsn: env.CommitLSN, copies: true, cause: errSkipped, first: seq, skip: true}
	s.cur, s.skipping = true, false
	return s.skipMsg(ctx, m, seq, env)
}

// skipMsg keeps chunk env of the transaction being skipped, from message
// m (stream sequence seq), in the dead-letter stream, and moves the
// position past it. Its last chunk ends the skip.
func (s *session) skipMsg(ctx context.Context, m jetstream.Msg, seq uint64, env *stream.Envelope) error {
	d := s.drop
	data, err := entryOf(m.Data(), env.CommitLSN)
	if err != nil {
		return err
	}
	why := error(errSkipped)
	if seq != d.first {
		why = d.partOf()
	}
	stored, err := s.publishDead(ctx, m.Subject(), m.Headers(), data, seq, why, false)
	if err != nil {
		return err
	}
	s.noteDropped(d, stored)
	d.last = seq
	d.changes += len(env.Changes)
	for _, r := range env.Relations {
		if name := r.Schema + "." + r.Name; !slices.Contains(d.tables, name) {
			d.tables = append(d.tables, name)
		}
	}
	if err := s.advance(ctx, m, seq); err != nil {
		return err
	}
	if env.Last() {
		s.finishSkip(m, seq, env)
	}
	return nil
}

// skipDoneSQL records a skipped transaction in pgjet.conflicts and
// removes its request, with the position past it.
const skipDoneSQL = `WITH req AS (DELETE FROM pgjet.skip WHERE source = $1 AND commit_lsn = $2::pg_lsn RETURNING requested_at, requested_by)
	INSERT INTO pgjet.conflicts (source, kind, table_name, commit_lsn, remote_row, decision, remote_origin, remote_commit_time)
	SELECT $1, $3, $4, $2::pg_lsn, $5::jsonb || jsonb_build_object('requested_at', r.requested_at, 'requested_by', r.requested_by), $6, $1, $7::timestamptz
	FROM (SELECT 1) x LEFT JOIN req r ON true`

// finishSkip ends the skip at the transaction's last chunk env, of
// message m (stream sequence seq): the group records the skip, removes
// the request and moves the position past the transaction.
func (s *session) finishSkip(m jetstream.Msg, seq uint64, env *stream.Envelope) {
	d := s.drop
	a := s.a
	detail := fmt.Sprintf(`{"first_stream_seq": %d, "last_stream_seq": %d, "messages": %d, "changes": %d, "dead_letter_stream": %s}`,
		d.first, d.last, d.n, d.changes, strconv.Quote(DeadLetterStream(a.cfg.Name, a.cfg.Region)))
	s.batch.ExecParams(skipDoneSQL, [][]byte{[]byte(a.cfg.Name), []byte(env.CommitLSN.String()), []byte(KindSkipped),
		[]byte(strings.Join(d.tables, ", ")), []byte(detail), []byte(DecisionSkip), []byte(env.CommitTime.UTC().Format(timeFormat))}, nil, nil, nil)
	s.batchInfo = append(s.batchInfo, stmtInfo{seq: seq, lsn: env.CommitLSN, table: "pgjet.conflicts"})
	s.batchLen++
	s.groupTxns++
	s.groupPos = position{commit: env.CommitLSN, end: env.EndLSN, seq: seq, time: env.CommitTime, caughtUp: env.EndLSN}
	s.groupMsg = m
	s.drop, s.cur, s.skip = nil, false, nil
	a.stats.Conflicts.Add(1)
	a.log.Warn().Str("lsn", env.CommitLSN.String()).Int("messages", d.n).Int("changes", d.changes).Strs("tables", d.tables).
		Uint64("first_stream_seq", d.first).Uint64("last_stream_seq", d.last).Str("dead_letter_stream", DeadLetterStream(a.cfg.Name, a.cfg.Region)).
		Msg("transaction skipped at the operator's request (pgjet skip): none of its rows applied; its messages are in the dead-letter stream and it is recorded in pgjet.conflicts (kind skipped)")
}

// entryOf is the encoded envelope of transaction lsn in message data: a
// batch's entry of it, or the message itself.
func entryOf(data []byte, lsn stream.LSN) ([]byte, error) {
	entries, err := stream.SplitBatch(data)
	if err != nil {
		return data, nil // no batch
	}
	for _, e := range entries {
		if env, err := stream.Decode(e); err == nil && env.CommitLSN == lsn {
			return e, nil
		}
	}
	return nil, pgerr.Fatalf(nil, "transaction %s is not in the batch message that carried it; the stream is damaged", lsn)
}
