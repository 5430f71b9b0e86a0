package apply

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"

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
	switch op {
	case stream.OpInsert:
		return p.allColumns()
	case stream.OpUpdate:
		return sentColumns(ch.New)
	case stream.OpDelete:
		return p.keys
	}
	return nil
}

func (p *plan) runArgs(ch *stream.Change, lsn, ts []byte, dst [][]byte) [][]byte {
	vals := ch.New
	if ch.Op == stream.OpDelete {
		vals = ch.Old
	}
	for _, i := range p.runColumns(ch.Op, ch) {
		dst = append(dst, argValue(vals[i]))
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
	cols := p.runColumns(op, ch)
	var sb sqlBuilder
	var rows []string
	for r := 0; r < n; r++ {
		ps := pick(cols, p.params(&sb, cols))
		ps = append(ps, sb.param(0)+"::pg_lsn", sb.param(timestamptzOID))
		rows = append(rows, "("+commas(ps)+")")
	}
	// v is the VALUES list: source column i is v.p<i>, beside the commit
	// LSN and time of its row.
	v, m, x, bare := p.runRefs("v."), p.runRefs("m."), p.runRefs("x."), p.runRefs("")
	var w with
	w.add("v("+commas(append(pick(cols, bare), "pgjet_lsn", "pgjet_ts"))+")", "VALUES "+commas(rows))
	keyJoin := p.match("t", p.keys, v)
	keyMatch := equal(p.keys, x, m) // the row x a write returned is the row m of v
	rec := newConflictSQL(source, &p.rel, "m.pgjet_lsn", "m.pgjet_ts")
	ins := p.insertInto(cols) + " SELECT " + commas(pick(cols, bare))
	var sql string
	switch op {
	case stream.OpInsert:
		if !p.upsert {
			sql = w.then(ins + " FROM v")
			break
		}
		w.add("pgjet_old", "SELECT to_jsonb(t) AS j, t.xmin AS pgjet_x, v.* FROM "+p.t.qname+" t JOIN v ON "+keyJoin)
		w.add("pgjet_ins", ins+" FROM v ON CONFLICT ("+commas(p.colNames(p.keys))+") "+p.upsertAction()+" RETURNING 1")
		name, lts, join := p.env(source).writer("m.pgjet_x")
		sql = w.then(insertConflicts("", rec.record("insert_exists", p.jsonOf(p.keys, m), "m.j", p.jsonOf(cols, m), "'apply_remote'", name, lts, "FROM pgjet_old m"+join)))

	case stream.OpUpdate:
		w.add("pgjet_upd", "UPDATE "+p.t.qname+" t SET "+p.assign(p.settable(cols), v)+" FROM v WHERE "+keyJoin+" RETURNING "+commas(pick(p.keys, v)))
		w.add("pgjet_missing", "SELECT * FROM v m WHERE NOT EXISTS (SELECT 1 FROM pgjet_upd x WHERE "+keyMatch+")")
		decision := "'skip'"
		if len(cols) == len(p.rel.Columns) {
			// The source wins: a missing row is inserted whole.
			var ret []string
			for _, k := range p.keys {
				ret = append(ret, p.col(k)+" AS "+bare[k])
			}
			w.add("pgjet_ins", ins+" FROM pgjet_missing ON CONFLICT DO NOTHING RETURNING "+commas(ret))
			decision = "CASE WHEN EXISTS (SELECT 1 FROM pgjet_ins x WHERE " + keyMatch + ") THEN 'apply_remote' ELSE 'skip' END"
		}
		sql = w.then(insertConflicts("", rec.record("update_missing", p.jsonOf(p.keys, m), "NULL", p.jsonOf(cols, m), decision, "NULL", "NULL", "FROM pgjet_missing m")))

	case stream.OpDelete:
		w.add("pgjet_del", "DELETE FROM "+p.t.qname+" t USING v WHERE "+keyJoin+" RETURNING "+commas(pick(p.keys, v)))
		sql = w.then(insertConflicts("", rec.record("delete_missing", p.jsonOf(p.keys, m), "NULL", "NULL", "'skip'", "NULL", "NULL",
			"FROM v m WHERE NOT EXISTS (SELECT 1 FROM pgjet_del x WHERE "+keyMatch+")")))
	}
	p.runs[key] = runSQL{sql: sql, oids: sb.oids}
	return sql, sb.oids
}

// runRefs names the source columns in a run's VALUES list v, over the
// alias a ("a." or "" for none): column i is p<i>.
func (p *plan) runRefs(a string) []string {
	out := make([]string, len(p.rel.Columns))
	for i := range out {
		out[i] = a + "p" + strconv.Itoa(i)
	}
	return out
}
