package apply

// A region ahead of the promoted one in a failover applied transactions
// of the old generation that the new primary never got. The old stream
// (the region's mirror of it) says which rows they touched: each key is
// recorded in pgjet.conflicts (kind lost_in_failover, decision
// repair_pending), the new primary's capture is asked to read those rows
// again (stream/repair.go), and the rows it sends through the stream
// replace the region's (decision repaired).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// Kind and decisions of a key a failover lost.
const (
	KindLostInFailover = "lost_in_failover"
	DecisionPending    = "repair_pending"
	DecisionRepaired   = "repaired"
)

// lostKeys are the keys of one table touched by lost transactions.
type lostKeys struct {
	schema, name string
	cols         []string // key columns, in the relation's order
	keys         map[string]lostKey
	order        []string
}

type lostKey struct {
	vals []*string
	lsn  stream.LSN // the first lost transaction that touched it
}

// recordLost reads the old generation's messages after g.PrevSeq up to the
// target's position from the old mirror, records every key they touched
// as lost in failover, and moves the target's position back to the
// promotion point, in one target transaction: the new generation is then
// followed from its marker, and the keys are repaired from the new
// primary (startRepairs).
func (s *session) recordLost(ctx context.Context, old jetstream.Stream, g *stream.Generation) error {
	a := s.a
	tables := map[string]*lostKeys{}
	var order []string
	txns := 0
	for seq := g.PrevSeq + 1; seq <= s.pos.seq; seq++ {
		m, err := old.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return natsError{fmt.Errorf("read the old generation at sequence %d: %w", seq, err)}
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil || envs[len(envs)-1].Source != a.cfg.Name {
			continue // set aside before (dead letter), or a stranger's
		}
		for _, env := range envs {
			if env.Kind != stream.KindTxn || env.IsPiece() {
				continue
			}
			if env.Last() && env.CommitLSN <= s.pos.commit {
				txns++
			}
			if err := collectLost(env, tables, &order); err != nil {
				return pgerr.Fatalf(err, "this target applied transactions of generation %d that the new primary never got (stream sequences %d to %d): %v; repair the target from the new primary (pgjet verify --repair) and start pgjet-apply again",
					g.Generation-1, g.PrevSeq+1, s.pos.seq, err)
			}
		}
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	n := 0
	for _, k := range order {
		t := tables[k]
		for _, id := range t.order {
			key := t.keys[id]
			obj := map[string]*string{}
			for i, c := range t.cols {
				obj[c] = key.vals[i]
			}
			kj, _ := json.Marshal(obj)
			if _, err := tx.Exec(ctx, `INSERT INTO pgjet.conflicts (source, kind, table_name, commit_lsn, key, decision, remote_origin)
				VALUES ($1, $2, $3, $4::pg_lsn, $5::jsonb, $6, $1)`, a.cfg.Name, KindLostInFailover, t.schema+"."+t.name, key.lsn.String(), kj, DecisionPending); err != nil {
				return fmt.Errorf("record a key lost in the failover: %w", err)
			}
			n++
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE pgjet.applied SET commit_lsn = $2::pg_lsn, end_lsn = $2::pg_lsn, source_lsn = $2::pg_lsn, stream_seq = $3, commit_time = $4
		WHERE source = $1`, a.cfg.Name, g.PrevLSN.String(), int64(g.PrevSeq), g.PrevTime); err != nil {
		return fmt.Errorf("move the position back to the promotion point: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	a.log.Warn().Int("generation", g.Generation).Str("region", g.Region).Uint64("prev_seq", g.PrevSeq).Uint64("stream_seq", s.pos.seq).
		Int("transactions", txns).Int("keys", n).
		Msg("this target applied transactions of the old generation that the new primary never got: their keys are recorded in pgjet.conflicts (lost_in_failover) and will be rewritten from the new primary")
	return s.readPosition(ctx)
}

// collectLost adds the keys env's changes touched to tables.
func collectLost(env *stream.Envelope, tables map[string]*lostKeys, order *[]string) error {
	rels := make(map[uint32]*stream.Relation, len(env.Relations))
	for i := range env.Relations {
		rels[env.Relations[i].ID] = &env.Relations[i]
	}
	for ci := range env.Changes {
		ch := &env.Changes[ci]
		switch ch.Op {
		case stream.OpTruncate:
			return fmt.Errorf("a TRUNCATE at LSN %s is among them, which no key repair undoes", env.CommitLSN)
		case stream.OpMessage:
			if ch.Prefix == stream.PrefixDDL {
				return fmt.Errorf("a schema change at LSN %s is among them, which no key repair undoes", env.CommitLSN)
			}
			continue
		}
		rel := rels[ch.Relation]
		if rel == nil {
			return fmt.Errorf("a change at LSN %s names relation %d, which its message does not describe", env.CommitLSN, ch.Relation)
		}
		name := rel.Schema + "." + rel.Name
		t := tables[name]
		if t == nil {
			t = &lostKeys{schema: rel.Schema, name: rel.Name, keys: map[string]lostKey{}}
			for _, c := range rel.Columns {
				if c.Key {
					t.cols = append(t.cols, c.Name)
				}
			}
			if len(t.cols) == 0 {
				return fmt.Errorf("table %s has no replica identity to find its rows by", name)
			}
			tables[name] = t
			*order = append(*order, name)
		}
		for _, vals := range [][]stream.Value{ch.New, ch.Old} {
			if vals == nil {
				continue
			}
			key, err := keyOf(rel, t.cols, vals)
			if err != nil {
				return fmt.Errorf("%s at LSN %s: %w", name, env.CommitLSN, err)
			}
			id, _ := json.Marshal(key)
			if _, ok := t.keys[string(id)]; !ok {
				t.keys[string(id)] = lostKey{vals: key, lsn: env.CommitLSN}
				t.order = append(t.order, string(id))
			}
		}
	}
	return nil
}

// keyOf returns the values of the key columns cols in tuple vals of rel.
func keyOf(rel *stream.Relation, cols []string, vals []stream.Value) ([]*string, error) {
	key := make([]*string, 0, len(cols))
	for i, c := range rel.Columns {
		if !slices.Contains(cols, c.Name) || i >= len(vals) {
			continue
		}
		switch vals[i].Kind {
		case stream.ValueNull:
			key = append(key, nil)
		case stream.ValueText:
			v := string(vals[i].Data)
			key = append(key, &v)
		default:
			return nil, fmt.Errorf("key column %s travels unchanged or in pieces, so its value is not in the stream", c.Name)
		}
	}
	if len(key) != len(cols) {
		return nil, fmt.Errorf("a row image lacks key columns")
	}
	return key, nil
}

// maxRepairKeys bounds the keys of one repair request, so the rows capture
// sends back fit a message.
const maxRepairKeys = 200

// startRepairs asks the new primary's capture to send the rows of the keys
// this target records as lost in failover and not yet repaired, again
// until it answers (it may not run yet), in a goroutine that ends with the
// returned function. The rows arrive through the stream (applyRepair).
func (s *session) startRepairs(ctx context.Context, nc *nats.Conn) (stop func(), err error) {
	a := s.a
	rows, err := s.conn.Query(ctx, `SELECT table_name, key FROM pgjet.conflicts WHERE source = $1 AND kind = $2 AND decision = $3 ORDER BY id`,
		a.cfg.Name, KindLostInFailover, DecisionPending)
	if err != nil {
		return nil, fmt.Errorf("read the keys lost in failover: %w", err)
	}
	type pending struct {
		table string
		key   map[string]*string
	}
	var all []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.table, &p.key); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the keys lost in failover: %w", err)
	}
	byTable := map[string]*stream.RepairTable{}
	var reqs []stream.RepairRequest
	for _, p := range all {
		t := byTable[p.table]
		if t == nil || len(t.Keys) >= maxRepairKeys {
			sch, name, _ := strings.Cut(p.table, ".")
			var ident string
			if err := s.conn.QueryRow(ctx, "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)", pgx.Identifier{sch, name}.Sanitize()).Scan(&ident); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return nil, fmt.Errorf("read the replica identity of %s: %w", p.table, err)
			}
			reqs = append(reqs, stream.RepairRequest{Region: a.cfg.Region, Tables: []stream.RepairTable{{Schema: sch, Name: name, FullImage: ident == "f"}}})
			t = &reqs[len(reqs)-1].Tables[0]
			for c := range p.key {
				t.KeyColumns = append(t.KeyColumns, c)
			}
			slices.Sort(t.KeyColumns)
			byTable[p.table] = t
		}
		vals := make([]*string, len(t.KeyColumns))
		for i, c := range t.KeyColumns {
			vals[i] = p.key[c]
		}
		t.Keys = append(t.Keys, vals)
	}
	if len(reqs) == 0 {
		return func() {}, nil
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(reqs); {
			data, _ := json.Marshal(reqs[i])
			var rep stream.RepairReply
			qctx, qcancel := context.WithTimeout(rctx, 30*time.Second)
			m, err := nc.RequestWithContext(qctx, stream.RepairSubject(a.cfg.Name), data)
			qcancel()
			if err == nil {
				err = json.Unmarshal(m.Data, &rep)
			}
			if err == nil && rep.Error != "" {
				err = errors.New(rep.Error)
			}
			if err != nil {
				if rctx.Err() != nil {
					return
				}
				a.log.Warn().Err(err).Str("table", reqs[i].Tables[0].Schema+"."+reqs[i].Tables[0].Name).
					Msg("ask the new primary's capture for the rows of keys lost in failover: retrying (is pgjet-capture running on the new primary?)")
				select {
				case <-rctx.Done():
					return
				case <-time.After(5 * time.Second):
				}
				continue
			}
			a.log.Info().Str("table", reqs[i].Tables[0].Schema+"."+reqs[i].Tables[0].Name).Int("keys", len(reqs[i].Tables[0].Keys)).
				Str("lsn", rep.LSN.String()).Msg("the new primary sends the rows of keys lost in failover")
			i++
		}
	}()
	return func() { cancel(); <-done }, nil
}

// applyRepair makes the target's rows of a repair message's keys the
// primary's, in the open target transaction, and marks those keys
// repaired in pgjet.conflicts.
func (s *session) applyRepair(ctx context.Context, env *stream.Envelope, ch *stream.Change, seq uint64) error {
	var req stream.RepairRequest
	if err := json.Unmarshal(ch.Content, &req); err != nil {
		return pgerr.Fatalf(err, "the repair message at LSN %s (stream seq %d) cannot be decoded", env.CommitLSN, seq)
	}
	for _, t := range req.Tables {
		rel := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		fail := func(err error) error {
			if pgerr.IsRetryable(err) {
				return fmt.Errorf("repair %s at LSN %s: %w", rel, env.CommitLSN, err)
			}
			return pgerr.Fatalf(err, "rewriting the rows of %s the new primary sent for keys lost in failover (LSN %s, stream seq %d) failed on the target: make the table's columns match the primary's and start pgjet-apply again", rel, env.CommitLSN, seq)
		}
		rowsByKey := map[string][]*string{}
		for _, row := range t.Rows {
			key := make([]*string, len(t.KeyColumns))
			for i, kc := range t.KeyColumns {
				if j := slices.Index(t.Columns, kc); j >= 0 {
					key[i] = row[j]
				}
			}
			id, _ := json.Marshal(key)
			rowsByKey[string(id)] = row
		}
		for _, key := range t.Keys {
			where := make([]string, len(t.KeyColumns))
			var args []any
			obj := map[string]*string{}
			for i, c := range t.KeyColumns {
				obj[c] = key[i]
				if key[i] == nil {
					where[i] = pgx.Identifier{c}.Sanitize() + " IS NULL"
					continue
				}
				args = append(args, *key[i])
				cmp := "%s = $%d"
				if t.FullImage {
					cmp = "format('%%s', %s) = $%d" // as capture/repair.go
				}
				where[i] = fmt.Sprintf(cmp, pgx.Identifier{c}.Sanitize(), len(args))
			}
			var local []byte
			if err := s.conn.QueryRow(ctx, "WITH d AS (DELETE FROM "+rel+" t WHERE "+strings.Join(where, " AND ")+" RETURNING to_jsonb(t) AS r) SELECT CASE count(*) WHEN 0 THEN NULL WHEN 1 THEN min(r::text)::jsonb ELSE jsonb_agg(r) END FROM d", args...).Scan(&local); err != nil {
				return fail(err)
			}
			id, _ := json.Marshal(key)
			var remote []byte
			if row, ok := rowsByKey[string(id)]; ok {
				cols := make([]string, len(t.Columns))
				params := make([]string, len(t.Columns))
				vals := make([]any, len(t.Columns))
				for i, c := range t.Columns {
					cols[i] = pgx.Identifier{c}.Sanitize()
					params[i] = fmt.Sprintf("$%d", i+1)
					if row[i] != nil {
						vals[i] = *row[i]
					}
				}
				if err := s.conn.QueryRow(ctx, "INSERT INTO "+rel+" AS t ("+strings.Join(cols, ", ")+") OVERRIDING SYSTEM VALUE VALUES ("+strings.Join(params, ", ")+") RETURNING to_jsonb(t)", vals...).Scan(&remote); err != nil {
					return fail(err)
				}
			}
			kj, _ := json.Marshal(obj)
			if _, err := s.conn.Exec(ctx, `UPDATE pgjet.conflicts SET decision = $5, local_row = $6::jsonb, remote_row = $7::jsonb, remote_commit_time = $8
				WHERE source = $1 AND kind = $2 AND decision = $3 AND table_name = $4 AND key = $9::jsonb`,
				s.a.cfg.Name, KindLostInFailover, DecisionPending, t.Schema+"."+t.Name, DecisionRepaired, local, remote, env.CommitTime, kj); err != nil {
				return fail(err)
			}
		}
	}
	return nil
}
