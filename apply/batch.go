package apply

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/stream"
)

// A run is a sequence of consecutive changes of one table with the same
// operation and shape and distinct keys: it is applied by one statement
// over a VALUES list instead of one statement per row, which is what
// lets apply outrun a row-at-a-time replication worker. Conflicts are
// detected and recorded per row inside that statement, exactly as the
// single-row statements do.
//
// Runs are only formed for tables whose rows are identified by a key
// backed by the target's only unique index: then rows of a run cannot
// collide with one another in any order, and the result equals applying
// them one by one. Only source-wins tables form runs: the other policies
// decide per row on the locked local version (see policyStatement).
type run struct {
	p     *plan
	op    stream.Op
	shape string
	rows  []*stream.Change
	lsns  [][]byte
	tss   [][]byte // source commit times
	keys  map[string]struct{}
	first stmtInfo
	last  stream.LSN
	width int // parameters per row
}

// maxRunRows bounds a run: large enough to amortise a statement, small
// enough to keep planning cheap.
const maxRunRows = 512

// batchable reports whether ch can join a run, and the key that must be
// unique within it.
func (p *plan) batchable(ch *stream.Change, key []byte) ([]byte, bool) {
	if p.fullMatch || len(p.t.uniques) > 1 || p.policy != PolicySourceWins {
		return nil, false
	}
	switch ch.Op {
	case stream.OpInsert:
		if len(p.t.uniques) == 0 {
			return nil, true // nothing can collide: a plain multi-row insert
		}
		if !p.upsert {
			return nil, false
		}
		return p.keyOf(ch.New, key)
	case stream.OpUpdate:
		if ch.Old != nil || !p.upsert {
			return nil, false // a key change depends on order
		}
		set := 0
		for i, v := range ch.New {
			if v.Kind != stream.ValueUnchanged && !p.always[i] {
				set++
			}
		}
		if set == 0 {
			return nil, false
		}
		return p.keyOf(ch.New, key)
	case stream.OpDelete:
		if !p.upsert {
			return nil, false
		}
		return p.keyOf(ch.Old, key)
	}
	return nil, false
}

// keyOf appends the key values of a tuple to key; a key that is NULL or
// unchanged TOAST cannot join a run.
func (p *plan) keyOf(vals []stream.Value, key []byte) ([]byte, bool) {
	for _, k := range p.keys {
		v := vals[k]
		if v.Kind != stream.ValueText {
			return nil, false
		}
		key = binary.AppendUvarint(key, uint64(len(v.Data)))
		key = append(key, v.Data...)
	}
	return key, true
}

// add queues a row change: into a run when it can join one, otherwise as
// a single-row statement after the table's open run.
func (s *session) add(ctx context.Context, p *plan, ch *stream.Change, lsn, ts []byte, info stmtInfo) error {
	var ok bool
	s.keyBuf, ok = p.batchable(ch, s.keyBuf[:0])
	r := s.runs[p.t]
	if !ok {
		var err error
		if s.reorder {
			err = s.emitRun(ctx, r)
		} else {
			err = s.emitRuns(ctx)
		}
		if err != nil {
			return err
		}
		return s.single(ctx, p, ch, lsn, ts, info)
	}
	shape := shape(ch.Op, ch)
	if r != nil && (r.p != p || r.op != ch.Op || r.shape != shape || len(r.rows) >= r.maxRows()) {
		if err := s.emitRun(ctx, r); err != nil {
			return err
		}
		r = nil
	}
	if r != nil && len(s.keyBuf) > 0 {
		if _, dup := r.keys[string(s.keyBuf)]; dup {
			if err := s.emitRun(ctx, r); err != nil {
				return err
			}
			r = nil
		}
	}
	if r == nil {
		if !s.reorder {
			// Without session_replication_role = replica, foreign keys
			// fire: keep the source's order across tables.
			if err := s.emitRuns(ctx); err != nil {
				return err
			}
		}
		r = &run{p: p, op: ch.Op, shape: shape, keys: map[string]struct{}{}, first: info, width: p.runWidth(ch)}
		s.runs[p.t] = r
		s.runOrder = append(s.runOrder, r)
	}
	r.rows = append(r.rows, ch)
	r.lsns = append(r.lsns, lsn)
	r.tss = append(r.tss, ts)
	r.last = info.lsn
	if len(s.keyBuf) > 0 {
		r.keys[string(s.keyBuf)] = struct{}{}
	}
	s.pendingRows++
	return nil
}

func (r *run) maxRows() int { return min(maxRunRows, 60000/max(r.width, 1)) }

// emitRuns queues every open run, in the order they were opened.
func (s *session) emitRuns(ctx context.Context) error {
	for len(s.runOrder) > 0 {
		if err := s.emitRun(ctx, s.runOrder[0]); err != nil { // removes it from runOrder
			return err
		}
	}
	return nil
}

// emitRun queues a run in the pipeline as a few statements whose row
// counts are powers of two: each size is prepared once and its plan
// reused, where a statement per exact count would be planned anew each
// time (planning a large VALUES list costs more than executing it).
func (s *session) emitRun(ctx context.Context, r *run) error {
	if r == nil {
		return nil
	}
	delete(s.runs, r.p.t)
	s.pendingRows -= len(r.rows)
	for i, o := range s.runOrder {
		if o == r {
			s.runOrder = append(s.runOrder[:i], s.runOrder[i+1:]...)
			break
		}
	}
	p := r.p
	rows, lsns, tss := r.rows, r.lsns, r.tss
	r.rows, r.lsns, r.tss = nil, nil, nil
	for len(rows) > 0 {
		n := 1
		for n*2 <= len(rows) {
			n *= 2
		}
		name, err := s.prepared(ctx, stmtKey{p, runKey(r.op, rows[0], n)}, r.first,
			fmt.Sprintf("%s of %d rows of %s", opName(r.op), n, p.t.qname),
			func() (string, []uint32) { return p.runStatement(s.a.cfg.Name, r.op, rows[0], n) })
		if err != nil {
			return err
		}
		args := make([][]byte, 0, n*r.width)
		for i, ch := range rows[:n] {
			args = p.runArgs(ch, lsns[i], tss[i], args)
		}
		s.batch.ExecPrepared(name, args, nil, nil)
		info := r.first
		info.rows = n
		info.lastLSN = r.last
		info.logs = r.op != stream.OpInsert || p.upsert
		s.batchInfo = append(s.batchInfo, info)
		s.batchLen++
		for _, v := range args {
			s.batchSize += len(v)
		}
		rows, lsns, tss = rows[n:], lsns[n:], tss[n:]
	}
	return nil
}

// runWidth is the number of parameters one row of ch's shape takes.
func (p *plan) runWidth(ch *stream.Change) int {
	switch ch.Op {
	case stream.OpInsert:
		return len(p.rel.Columns) + 2
	case stream.OpUpdate:
		n := 2
		for _, v := range ch.New {
			if v.Kind != stream.ValueUnchanged {
				n++
			}
		}
		return n
	default:
		return len(p.keys) + 2
	}
}

// runColumns lists, for a run of ch's shape, the source columns that
// travel as parameters (in order), then the commit LSN and time.
func (p *plan) runColumns(op stream.Op, ch *stream.Change) []int {
	var cols []int
	switch op {
	case stream.OpInsert:
		for i := range p.rel.Columns {
			cols = append(cols, i)
		}
	case stream.OpUpdate:
		for i, v := range ch.New {
			if v.Kind != stream.ValueUnchanged {
				cols = append(cols, i)
			}
		}
	case stream.OpDelete:
		cols = append(cols, p.keys...)
	}
	return cols
}

func (p *plan) runArgs(ch *stream.Change, lsn, ts []byte, dst [][]byte) [][]byte {
	vals := ch.New
	if ch.Op == stream.OpDelete {
		vals = ch.Old
	}
	for _, i := range p.runColumns(ch.Op, ch) {
		v := vals[i]
		switch {
		case v.Kind == stream.ValueNull:
			dst = append(dst, nil)
		case v.Data == nil:
			dst = append(dst, []byte{})
		default:
			dst = append(dst, v.Data)
		}
	}
	return append(dst, lsn, ts)
}

type runSQL struct {
	sql  string
	oids []uint32
}

// runKey is the cache key of a run of n rows of ch's shape.
func runKey(op stream.Op, ch *stream.Change, n int) string {
	return shape(op, ch) + "#" + strconv.Itoa(n)
}

// runStatement builds (and caches) the statement of a run of n rows.
func (p *plan) runStatement(source string, op stream.Op, ch *stream.Change, n int) (string, []uint32) {
	key := runKey(op, ch, n)
	if p.runs == nil {
		p.runs = map[string]runSQL{}
	}
	if r, ok := p.runs[key]; ok {
		return r.sql, r.oids
	}
	q := p.t.qname
	cols := p.runColumns(op, ch)
	ident := func(i int) string { return pgx.Identifier{p.rel.Columns[i].Name}.Sanitize() }
	vname := func(i int) string { return "p" + strconv.Itoa(i) } // v's column for source column i

	var oids []uint32
	var rows []string
	for r := 0; r < n; r++ {
		var ps []string
		for _, c := range cols {
			oids = append(oids, p.oids[c])
			ps = append(ps, "$"+strconv.Itoa(len(oids)))
		}
		oids = append(oids, 0)
		ps = append(ps, "$"+strconv.Itoa(len(oids))+"::pg_lsn")
		oids = append(oids, timestamptzOID)
		ps = append(ps, "$"+strconv.Itoa(len(oids)))
		rows = append(rows, "("+strings.Join(ps, ", ")+")")
	}
	var vcols []string
	for _, c := range cols {
		vcols = append(vcols, vname(c))
	}
	vcols = append(vcols, "pgjet_lsn", "pgjet_ts")
	with := "WITH v(" + strings.Join(vcols, ", ") + ") AS (VALUES " + strings.Join(rows, ", ") + ")"

	var keyNames, keyExprs, keyJoin, keyMatch []string
	for _, k := range p.keys {
		keyNames = append(keyNames, p.rel.Columns[k].Name)
		keyExprs = append(keyExprs, "m."+vname(k))
		keyJoin = append(keyJoin, "t."+ident(k)+" = v."+vname(k))
		keyMatch = append(keyMatch, "x."+vname(k)+" = m."+vname(k))
	}
	var rowNames, rowExprs, targetCols, selectCols []string
	for _, c := range cols {
		rowNames = append(rowNames, p.rel.Columns[c].Name)
		rowExprs = append(rowExprs, "m."+vname(c))
		targetCols = append(targetCols, ident(c))
		selectCols = append(selectCols, vname(c))
	}
	cx := p.cx
	if cx == nil {
		cx = &conflictEnv{source: source}
	}
	conflicts := func(kind, local, remote, decision, from string) string {
		lorigin, lts := "NULL", "NULL"
		if local != "NULL" {
			var join string
			lorigin, lts, join = cx.writer("m.pgjet_x")
			from += join
		}
		rec := newConflictSQL(source, &p.rel, "m.pgjet_lsn", "m.pgjet_ts")
		return insertConflicts("", rec.record(kind, jsonObject(keyNames, keyExprs), local, remote, decision, lorigin, lts, from))
	}

	var sql string
	switch op {
	case stream.OpInsert:
		ins := "INSERT INTO " + q + " (" + strings.Join(targetCols, ", ") + ")" + p.overridingClause() +
			" SELECT " + strings.Join(selectCols, ", ") + " FROM v"
		if !p.upsert {
			sql = with + " " + ins
			break
		}
		var keyCols, sets []string
		for _, k := range p.keys {
			keyCols = append(keyCols, ident(k))
		}
		for i := range p.rel.Columns {
			if (!p.rel.Columns[i].Key || p.rel.Identity == stream.IdentityFull) && !p.always[i] {
				sets = append(sets, ident(i)+" = EXCLUDED."+ident(i))
			}
		}
		action := "DO NOTHING"
		if len(sets) > 0 {
			action = "DO UPDATE SET " + strings.Join(sets, ", ")
		}
		sql = with + ", pgjet_old AS (SELECT to_jsonb(t) AS j, t.xmin AS pgjet_x, v.* FROM " + q + " t JOIN v ON " + strings.Join(keyJoin, " AND ") + ")" +
			", pgjet_ins AS (" + ins + " ON CONFLICT (" + strings.Join(keyCols, ", ") + ") " + action + " RETURNING 1) " +
			conflicts("insert_exists", "m.j", jsonObject(rowNames, rowExprs), "'apply_remote'", "FROM pgjet_old m")

	case stream.OpUpdate:
		var sets, keyRet []string
		for _, c := range cols {
			if !p.always[c] {
				sets = append(sets, ident(c)+" = v."+vname(c))
			}
		}
		for _, k := range p.keys {
			keyRet = append(keyRet, "v."+vname(k))
		}
		full := len(cols) == len(p.rel.Columns)
		sql = with + ", pgjet_upd AS (UPDATE " + q + " t SET " + strings.Join(sets, ", ") + " FROM v WHERE " + strings.Join(keyJoin, " AND ") +
			" RETURNING " + strings.Join(keyRet, ", ") + ")" +
			", pgjet_missing AS (SELECT * FROM v m WHERE NOT EXISTS (SELECT 1 FROM pgjet_upd x WHERE " + strings.Join(keyMatch, " AND ") + "))"
		decision := "'skip'"
		if full {
			// The source wins: a missing row is inserted whole.
			var ret []string
			for _, k := range p.keys {
				ret = append(ret, ident(k)+" AS "+vname(k))
			}
			sql += ", pgjet_ins AS (INSERT INTO " + q + " (" + strings.Join(targetCols, ", ") + ")" + p.overridingClause() +
				" SELECT " + strings.Join(selectCols, ", ") + " FROM pgjet_missing ON CONFLICT DO NOTHING RETURNING " + strings.Join(ret, ", ") + ")"
			decision = "CASE WHEN EXISTS (SELECT 1 FROM pgjet_ins x WHERE " + strings.Join(keyMatch, " AND ") + ") THEN 'apply_remote' ELSE 'skip' END"
		}
		sql += " " + conflicts("update_missing", "NULL", jsonObject(rowNames, rowExprs), decision, "FROM pgjet_missing m")

	case stream.OpDelete:
		var keyRet []string
		for _, k := range p.keys {
			keyRet = append(keyRet, "v."+vname(k))
		}
		sql = with + ", pgjet_del AS (DELETE FROM " + q + " t USING v WHERE " + strings.Join(keyJoin, " AND ") +
			" RETURNING " + strings.Join(keyRet, ", ") + ") " +
			conflicts("delete_missing", "NULL", "NULL", "'skip'", "FROM v m WHERE NOT EXISTS (SELECT 1 FROM pgjet_del x WHERE "+strings.Join(keyMatch, " AND ")+")")
	}
	p.runs[key] = runSQL{sql: sql, oids: oids}
	return sql, oids
}
