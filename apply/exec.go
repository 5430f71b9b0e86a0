package apply

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// begin opens a target transaction when none is open. BEGIN travels in
// the first pipelined batch: no round trip of its own.
func (s *session) begin(ctx context.Context) error {
	if s.open {
		return nil
	}
	s.open = true
	s.mayStop, s.stopped = false, nil
	s.groupAt = time.Now()
	s.groupTxns, s.groupSize = 0, 0
	s.groupPos = s.pos
	s.groupMsg = nil
	s.batch = &pgconn.Batch{}
	s.batch.ExecParams("BEGIN", nil, nil, nil, nil)
	s.batchInfo = append(s.batchInfo[:0], stmtInfo{})
	s.batchLen = 1
	return nil
}

// changes queues the statements of one envelope's changes.
func (s *session) changes(ctx context.Context, env *stream.Envelope, seq uint64) error {
	a := s.a
	plans := make([]*plan, len(env.Relations))
	byID := make(map[uint32]int, len(env.Relations))
	for i := range env.Relations {
		byID[env.Relations[i].ID] = i
	}
	s.lsnText = append(s.lsnText[:0], env.CommitLSN.String()...)
	lsn := append([]byte(nil), s.lsnText...)
	ts := []byte(env.CommitTime.UTC().Format(timeFormat))
	for ci := range env.Changes {
		ch := &env.Changes[ci]
		if ci == len(env.Changes)-1 && ch.InPieces() {
			// Its values follow in the next chunks (Decode checked that
			// it is the chunk's last change and not the transaction's).
			s.held = stream.NewPieced(env)
			return nil
		}
		if ch.Op == stream.OpTruncate {
			if err := s.truncate(ctx, env, ch, byID, seq); err != nil {
				return err
			}
			continue
		}
		if ch.Op == stream.OpMessage {
			// Messages may change the schema: what is queued goes first.
			if err := s.flush(ctx); err != nil {
				return err
			}
			if err := s.wait(ctx); err != nil {
				return err
			}
			if err := s.message(ctx, env, ch, seq); err != nil {
				return err
			}
			continue
		}
		ri := byID[ch.Relation]
		if s.snapSkip != nil && s.skipForSnapshot(&env.Relations[ri], env.CommitLSN) {
			continue
		}
		p := plans[ri]
		if p == nil {
			var err error
			if p, err = s.plan(ctx, &env.Relations[ri], env, seq); err != nil {
				return err
			}
			plans[ri] = p
		}
		if ch.Op == stream.OpUpdate || ch.Op == stream.OpDelete {
			if p.rel.Identity == stream.IdentityNothing || (len(p.keys) == 0 && !p.fullMatch) {
				return pgerr.Fatalf(nil, "%s of %s.%s at LSN %s (stream seq %d) has no replica identity to find the row by; give the source table a primary key or REPLICA IDENTITY FULL",
					opName(ch.Op), p.rel.Schema, p.rel.Name, env.CommitLSN, seq)
			}
		}
		info := stmtInfo{seq: seq, lsn: env.CommitLSN, table: p.rel.Schema + "." + p.rel.Name, op: ch.Op}
		if err := s.add(ctx, p, ch, lsn, ts, info); err != nil {
			return err
		}
		a.stats.Changes.Add(1)
		if s.batchLen+s.pendingRows/maxRunRows >= a.cfg.PipelineStatements || s.batchSize >= 8<<20 {
			if err := s.flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// codeUniqueViolation is the SQLSTATE of a duplicate key.
const codeUniqueViolation = "23505"

// timeFormat renders source commit times for timestamptz parameters.
const timeFormat = "2006-01-02 15:04:05.999999Z07:00"

// single queues a change as a single-row statement.
func (s *session) single(ctx context.Context, p *plan, ch *stream.Change, lsn, ts []byte, info stmtInfo) error {
	name, err := s.prepared(ctx, stmtKey{p, p.stmtShape(ch)}, info, opName(ch.Op)+" of "+p.t.qname,
		func() (string, []uint32) { return p.statement(s.a.cfg.Name, ch) })
	if err != nil {
		return err
	}
	args := p.args(ch, lsn, ts, nil)
	s.batch.ExecPrepared(name, args, nil, nil)
	if p.policy != PolicySourceWins && (ch.Op != stream.OpInsert || p.insertLogs(ch)) {
		info.returns = true
		s.mayStop = s.mayStop || p.stops(ch)
	} else {
		info.logs = ch.Op != stream.OpInsert || p.upsert
	}
	s.batchInfo = append(s.batchInfo, info)
	s.batchLen++
	for _, v := range args {
		s.batchSize += len(v)
	}
	return nil
}

func (s *session) truncate(ctx context.Context, env *stream.Envelope, ch *stream.Change, byID map[uint32]int, seq uint64) error {
	if err := s.emitRuns(ctx); err != nil { // a barrier: rows before it go first
		return err
	}
	var truncated, checked []*plan // checked: tables whose policy looks for rows written here
	kept, newer := false, false    // newer: a table's snapshot copy is newer than the TRUNCATE
	for _, id := range ch.Truncated {
		var r *stream.Relation
		if ri, ok := byID[id]; ok {
			r = &env.Relations[ri]
		} else if r = s.prevRelation(env, id); r == nil {
			return pgerr.Fatalf(nil, "truncate at LSN %s (stream seq %d) names relation %d the message does not describe; the stream is damaged", env.CommitLSN, seq, id)
		}
		if s.snapSkip != nil && s.skipForSnapshot(r, env.CommitLSN) {
			// The table's snapshot rows were copied after the TRUNCATE.
			kept, newer = true, true
			continue
		}
		p, err := s.plan(ctx, r, env, seq)
		if err != nil {
			return err
		}
		if s.cx.detects() && (p.policy == PolicyKeepLocal || p.policy == PolicyError) {
			checked = append(checked, p)
		}
		truncated = append(truncated, p)
	}
	if len(checked) > 0 {
		keep, err := s.truncateConflicts(ctx, env, seq, checked)
		if err != nil {
			return err
		}
		if len(keep) > 0 {
			// Rows written here stay: the table loses only the source's
			// rows, by DELETE, and keeps its identity where it is (the
			// kept rows may hold values a restarted one would hand out).
			kept = true
			all := truncated
			truncated = nil
			for _, p := range all {
				if !keep[p] {
					truncated = append(truncated, p)
					continue
				}
				s.batch.ExecParams("DELETE FROM "+p.t.qname+" t WHERE NOT "+s.cx.writtenElsewhere("t.xmin"), nil, nil, nil, nil)
				s.batchInfo = append(s.batchInfo, stmtInfo{seq: seq, lsn: env.CommitLSN, table: p.t.qname, op: stream.OpTruncate})
				s.batchLen++
			}
		}
	}
	var names []string
	for _, p := range truncated {
		names = append(names, p.t.qname)
	}
	if len(names) == 0 {
		return nil
	}
	if newer {
		// A table copied after the TRUNCATE may reference the others
		// (it was truncated with them), and a TRUNCATE of a table that
		// another one not truncated with it references fails whatever
		// the rows. Its copy already holds what the source had after the
		// TRUNCATE, so the others are emptied by DELETE, which the
		// replica role keeps foreign keys out of. Only until the
		// snapshot's tables have caught up.
		for i, p := range truncated {
			s.batch.ExecParams("DELETE FROM "+p.t.qname, nil, nil, nil, nil)
			s.batchInfo = append(s.batchInfo, stmtInfo{seq: seq, lsn: env.CommitLSN, table: names[i], op: stream.OpTruncate})
			s.batchLen++
		}
		return nil
	}
	sql := "TRUNCATE " + strings.Join(names, ", ")
	if ch.TruncateOpts&stream.TruncateRestartIdentity != 0 {
		sql += " RESTART IDENTITY"
	}
	// pgoutput names every table a CASCADE reached; with a table kept,
	// CASCADE would reach it again on the target. Without it, a foreign
	// key from a kept table stops the applier instead of losing its rows.
	if ch.TruncateOpts&stream.TruncateCascade != 0 && !kept {
		sql += " CASCADE"
	}
	s.batch.ExecParams(sql, nil, nil, nil, nil)
	s.batchInfo = append(s.batchInfo, stmtInfo{seq: seq, lsn: env.CommitLSN, table: strings.Join(names, ", "), op: stream.OpTruncate})
	s.batchLen++
	return nil
}

// prevRelation finds relation id among those the previous chunk of env's
// transaction described. Earlier captures could close a chunk in the middle
// of a TRUNCATE's relations (one of them had changed) and describe only
// the later ones in the next chunk: the earlier ones are in the chunk
// before, as they still are.
func (s *session) prevRelation(env *stream.Envelope, id uint32) *stream.Relation {
	if env.First() {
		return nil
	}
	for i := range s.prevRels {
		if s.prevRels[i].ID == id {
			return &s.prevRels[i]
		}
	}
	return nil
}

// plan finds or builds the plan of a relation as env describes it.
func (s *session) plan(ctx context.Context, r *stream.Relation, env *stream.Envelope, seq uint64) (*plan, error) {
	key := relationKey(r)
	if p, ok := s.plans[key]; ok {
		return p, nil
	}
	tkey := r.Schema + "." + r.Name
	t, ok := s.tables[tkey]
	if !ok {
		// Catalog reads must not run inside the pipelined transaction's
		// pending batch: send what is queued first, and let it finish.
		if err := s.flush(ctx); err != nil {
			return nil, err
		}
		if err := s.wait(ctx); err != nil {
			return nil, err
		}
		var err error
		if t, err = loadTarget(ctx, s.conn, r.Schema, r.Name); err != nil {
			return nil, err
		}
		if t == nil {
			return nil, pgerr.Fatalf(nil, "table %s is missing on the target (source %s, LSN %s, stream seq %d); create it there (e.g. pg_dump --schema-only -t %s SOURCE_URL | psql TARGET_URL) and restart pgjet-apply",
				pgx.Identifier{r.Schema, r.Name}.Sanitize(), s.a.cfg.Name, env.CommitLSN, seq, pgx.Identifier{r.Schema, r.Name}.Sanitize())
		}
		s.tables[tkey] = t
	}
	p, err := newPlan(t, r)
	if err != nil {
		return nil, err
	}
	p.policy = s.a.cfg.policyFor(r.Schema, r.Name)
	p.cx = s.cx
	s.plans[key] = p
	return p, nil
}

// flush sends the queued statements in one round trip, without waiting
// for their results: Postgres executes them while the next batch is built.
// wait collects the results; anything else using the connection waits
// first.
func (s *session) flush(ctx context.Context) error {
	if s.batch != nil {
		if err := s.emitRuns(ctx); err != nil {
			return err
		}
	}
	return s.sendQueued(ctx)
}

// sendQueued sends the statements queued so far, open runs aside.
func (s *session) sendQueued(ctx context.Context) error {
	if s.batch == nil || s.batchLen == 0 {
		return nil
	}
	b, info := s.batch, append([]stmtInfo(nil), s.batchInfo...)
	s.batch = &pgconn.Batch{}
	s.batchLen, s.batchSize = 0, 0
	s.batchInfo = s.batchInfo[:0]
	return s.send(ctx, b, info, nil)
}

// inflight is a batch sent and not yet waited for.
type inflight struct {
	done   chan batchResult
	info   []stmtInfo
	commit *committed // set when the batch ends a target transaction
}

type batchResult struct {
	results []*pgconn.Result
	err     error
}

// committed is what becomes true once a group's COMMIT succeeded.
type committed struct {
	pos  position
	txns int
	msg  jetstream.Msg
}

func (s *session) send(ctx context.Context, b *pgconn.Batch, info []stmtInfo, c *committed) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	done := make(chan batchResult, 1)
	// Not canceled with the session: a shutdown lets the batch finish.
	bctx := context.WithoutCancel(ctx)
	go func() {
		results, err := s.pg.ExecBatch(bctx, b).ReadAll()
		done <- batchResult{results, err}
	}()
	s.inflight = &inflight{done: done, info: info, commit: c}
	return nil
}

// wait collects the results of the batch in flight, if any; after a
// COMMIT it acknowledges JetStream (AckAll: the group's newest message
// covers all of it) and publishes the position in the stats. It blocks
// until the target answers or ctx ends; then it closes the connection,
// which ends the batch (the target rolls back its open transaction, and
// the position stored with it), and returns an error naming ctx's cause.
func (s *session) wait(ctx context.Context) error {
	f := s.inflight
	if f == nil {
		return nil
	}
	s.inflight = nil
	var res batchResult
	select {
	case res = <-f.done:
	case <-ctx.Done():
		_ = s.pg.Conn().Close()
		<-f.done // the batch's reader ends with the connection
		return fmt.Errorf("wait for the target: %w", context.Cause(ctx))
	}
	st := &s.a.stats
	for i, r := range res.results {
		if r.Err != nil {
			var in stmtInfo
			if i < len(f.info) {
				in = f.info[i]
			}
			return s.stmtError(r.Err, in)
		}
		if i < len(f.info) && f.info[i].logs {
			// The statement's outer INSERT writes conflict records only.
			st.Conflicts.Add(r.CommandTag.RowsAffected())
		}
		if i < len(f.info) && f.info[i].returns && len(r.Rows) == 1 && len(r.Rows[0]) == 2 {
			n, _ := strconv.ParseInt(string(r.Rows[0][0]), 10, 64)
			st.Conflicts.Add(n)
			if stops := r.Rows[0][1]; stops != nil {
				return s.stopError(stops, f.info[i])
			}
		}
	}
	if res.err != nil {
		var pe *pgconn.PgError
		if errors.As(res.err, &pe) && len(res.results) < len(f.info) {
			// The statement after the last result failed.
			return s.stmtError(res.err, f.info[len(res.results)])
		}
		return fmt.Errorf("apply batch: %w", res.err)
	}
	c := f.commit
	if c == nil {
		return nil
	}
	p := c.pos
	st.Txns.Add(int64(c.txns))
	st.Commits.Add(1)
	st.AppliedLSN.Store(uint64(p.commit))
	if uint64(p.caughtUp) > st.SourceLSN.Load() {
		st.SourceLSN.Store(uint64(p.caughtUp))
	}
	st.StreamSeq.Store(p.seq)
	if !p.time.IsZero() {
		if prev := st.SourceTime.Load(); p.time.UnixNano() > prev {
			st.SourceTime.Store(p.time.UnixNano())
		}
	}
	if c.msg != nil {
		if err := c.msg.Ack(); err != nil {
			// The target holds the position: a lost ack only means the
			// messages come again and are skipped.
			s.a.log.Debug().Err(err).Msg("ack after commit")
		}
	}
	if s.a.log.Debug().Enabled() {
		s.a.log.Debug().Str("lsn", p.commit.String()).Uint64("stream_seq", p.seq).Int("txns", c.txns).Msg("group committed")
	}
	return nil
}

// stmtError says which change failed, where, and how to proceed.
func (s *session) stmtError(err error, in stmtInfo) error {
	if in.rows > 1 {
		in.table = fmt.Sprintf("%d rows of %s (through LSN %s)", in.rows, in.table, in.lastLSN)
	}
	if pgerr.IsRetryable(err) {
		return fmt.Errorf("apply %s of %s at LSN %s (stream seq %d): %w", opName(in.op), in.table, in.lsn, in.seq, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case pgerr.CodeUndefinedTable, pgerr.CodeUndefinedColumn:
			return pgerr.Fatalf(err, "%s of %s at LSN %s (stream seq %d): the target's schema differs from the source; make the table match and restart pgjet-apply",
				opName(in.op), in.table, in.lsn, in.seq)
		case codeUniqueViolation:
			// A unique_violation conflict the statement could not see
			// coming (source-wins, or an index pgjet does not check).
			return pgerr.Fatalf(err, "unique_violation: %s of %s at LSN %s (stream seq %d) collides on unique index %s with a row that exists only on the target (%s); pgjet does not delete a row of another key to make room: change or delete the local row and restart pgjet-apply, or choose --conflict-table %s=keep-local to skip such changes",
				opName(in.op), in.table, in.lsn, in.seq, pe.ConstraintName, pe.Detail, in.table)
		}
	}
	if last := max(in.lsn, in.lastLSN); last != 0 && (in.rows <= 1 || in.lsn == in.lastLSN) {
		// One transaction's statement: it can be skipped by its LSN.
		return &txnFailed{lsn: last, err: pgerr.Fatalf(err, "%s of %s at LSN %s (stream seq %d) failed on the target; fix the target row or schema and restart pgjet-apply (nothing after this point was applied), or pass over this one transaction with pgjet skip --name %s --region %s --lsn %s (it is kept in the dead-letter stream and recorded in pgjet.conflicts)",
			opName(in.op), in.table, in.lsn, in.seq, s.a.cfg.Name, s.a.cfg.Region, in.lsn)}
	}
	fatal := pgerr.Fatalf(err, "%s of %s at LSN %s (stream seq %d) failed on the target; fix the target row or schema and restart pgjet-apply (nothing after this point was applied)",
		opName(in.op), in.table, in.lsn, in.seq)
	if in.lastLSN != 0 {
		return &txnFailed{lsn: in.lastLSN, err: fatal}
	}
	return fatal
}

// txnFailed is a statement of the source's transactions up to commit LSN
// lsn that failed on the target for good: Run applies the transactions
// before it one at a time, once, so that the position stored stops right
// before the one that fails (the transaction pgjet skip can pass over),
// not before the group it shared with others.
type txnFailed struct {
	lsn stream.LSN
	err error
}

func (e *txnFailed) Error() string { return e.err.Error() }
func (e *txnFailed) Unwrap() error { return e.err }

// commit records the group's position and commits; only then is JetStream
// acknowledged (AckAll: the newest message covers the whole group).
func (s *session) commit(ctx context.Context) error {
	if !s.open {
		return nil
	}
	if err := s.emitRuns(ctx); err != nil { // the group's rows go before its position and COMMIT
		return err
	}
	if s.mayStop {
		// A statement may have decided to stop: read its result before
		// anything commits.
		if err := s.flush(ctx); err != nil {
			return err
		}
		if err := s.wait(ctx); err != nil {
			return err
		}
	}
	p := s.groupPos
	if iso := s.a.isolate; iso != 0 && p.commit >= iso {
		// Past the transaction that failed: groups again.
		s.a.isolate = 0
		s.groupMax = s.groupMaxNormal
	}
	var ts []byte
	if !p.time.IsZero() {
		ts = []byte(p.time.UTC().Format(timeFormat))
	}
	if s.originStmt != "" {
		// The commit carries the source's commit LSN and time, and the
		// session's origin: the commit timestamp of the rows is then the
		// source's (what last-writer-wins compares), and a capture of this
		// database knows them for pgjet's. The session keeps the time until
		// the next call, so every target transaction sets it.
		s.batch.ExecPrepared(s.originStmt, [][]byte{[]byte(p.commit.String()), ts}, nil, nil)
		s.batchInfo = append(s.batchInfo, stmtInfo{seq: p.seq, lsn: p.commit, table: "(replication origin)"})
		s.batchLen++
	}
	// A group that moved no position (its messages were all applied
	// before) writes none. Several groups can end inside one batch message
	// with the same stream sequence: the commit LSN tells them apart.
	if p.seq != s.pos.seq || p.commit != s.pos.commit || p.caughtUp != s.pos.caughtUp {
		s.batch.ExecPrepared(s.posStmt, [][]byte{[]byte(s.a.cfg.Name), []byte(p.commit.String()), []byte(p.end.String()),
			[]byte(strconv.FormatUint(p.seq, 10)), ts, []byte(p.caughtUp.String())}, nil, nil)
		s.batchInfo = append(s.batchInfo, stmtInfo{seq: p.seq, lsn: p.commit, table: "pgjet.applied"})
		s.batchLen++
	}
	s.batch.ExecParams("COMMIT", nil, nil, nil, nil)
	s.batchInfo = append(s.batchInfo, stmtInfo{seq: p.seq, lsn: p.commit, table: "(commit)"})
	s.batchLen++
	b, info := s.batch, append([]stmtInfo(nil), s.batchInfo...)
	s.batch, s.batchLen, s.batchSize = nil, 0, 0
	s.batchInfo = s.batchInfo[:0]
	c := &committed{pos: p, txns: s.groupTxns, msg: s.groupMsg}
	s.open, s.multi, s.ddl, s.mayStop = false, false, false, false
	s.groupMsg = nil
	// The position moves now, not when the COMMIT is confirmed: the next
	// group starts from it. Should the COMMIT fail, the session ends and
	// restarts from the position stored in the target.
	s.pos = p
	return s.send(ctx, b, info, c)
}

// piece adds the piece chunk env carries to the change being put back
// together. Once the change is whole it is applied like any other, and
// sent to the target at once: the session holds one such change at a
// time, never the next one's values with it.
func (s *session) piece(ctx context.Context, env *stream.Envelope, seq uint64) error {
	if s.held == nil {
		return pgerr.Fatalf(nil, "stream %s sequence %d holds a piece of a value of transaction %s, but no change before it is in pieces; the stream is damaged: rebuild this target from a snapshot",
			stream.StreamName(s.a.cfg.Name), seq, env.CommitLSN)
	}
	whole, err := s.held.Add(env)
	if err != nil {
		return pgerr.Fatalf(err, "stream %s sequence %d: the pieces of a value of transaction %s do not fit together (%v); the stream is damaged: rebuild this target from a snapshot",
			stream.StreamName(s.a.cfg.Name), seq, env.CommitLSN, err)
	}
	if !whole {
		return nil
	}
	held := s.held
	s.held = nil
	if err := s.changes(ctx, &held.Env, seq); err != nil {
		return err
	}
	if err := s.flush(ctx); err != nil {
		return err
	}
	return s.wait(ctx)
}

// rollback abandons the open target transaction.
func (s *session) rollback(ctx context.Context) {
	s.held = nil
	if !s.open {
		return
	}
	s.open, s.multi, s.ddl, s.mayStop = false, false, false, false
	s.batch, s.batchLen, s.batchSize = nil, 0, 0
	s.batchInfo = s.batchInfo[:0]
	clear(s.runs)
	s.runOrder, s.pendingRows = s.runOrder[:0], 0
	s.groupMsg = nil
	if err := s.wait(ctx); err != nil {
		s.a.log.Debug().Err(err).Msg("batch before rollback")
	}
	if _, err := s.pg.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
		s.a.log.Debug().Err(err).Msg("rollback")
	}
}

// skipForSnapshot reports whether a change of rel committed at lsn is in a
// table's snapshot rows already (a table copied again, later, when an
// interrupted snapshot resumed).
func (s *session) skipForSnapshot(rel *stream.Relation, lsn stream.LSN) bool {
	at, ok := s.snapSkip[rel.Schema+"."+rel.Name]
	return ok && lsn < at
}
