package capture

// Key repairs a region asks for after a failover (see stream/repair.go):
// capture reads the rows of the keys asked, their tables locked in SHARE
// mode, and writes them into the WAL as a transactional logical message in
// the same transaction, so that they reach every region in commit order with every
// other change of those rows.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/stream"
)

// serveRepairs answers repair requests until ctx ends.
func (c *Capture) serveRepairs(ctx context.Context, nc *nats.Conn, pool *pgxpool.Pool) error {
	var mu sync.Mutex // one repair at a time
	sub, err := nc.Subscribe(stream.RepairSubject(c.cfg.Name), func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		var req stream.RepairRequest
		var rep stream.RepairReply
		if err := json.Unmarshal(m.Data, &req); err != nil {
			rep.Error = fmt.Sprintf("the repair request does not decode: %v", err)
		} else {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			lsn, err := c.repair(rctx, pool, &req)
			cancel()
			if err != nil {
				rep.Error = err.Error()
				c.log.Warn().Err(err).Str("region", req.Region).Msg("repair of keys a region applied in a failover")
			} else {
				rep.LSN = lsn
				c.log.Info().Str("region", req.Region).Int("tables", len(req.Tables)).Str("lsn", lsn.String()).
					Msg("rows read again for a region that applied transactions the failover lost")
			}
		}
		b, _ := json.Marshal(rep)
		_ = m.Respond(b)
	})
	if err != nil {
		return wrapNATS(fmt.Errorf("subscribe to repair requests: %w", err))
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

// repair reads the rows of req's keys and writes them into the WAL as a
// PrefixRepair message; it returns the message's LSN.
func (c *Capture) repair(ctx context.Context, pool *pgxpool.Pool, req *stream.RepairRequest) (stream.LSN, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	// FOR SHARE locks only rows that exist: an insert of a key absent
	// here could commit between the read and the message, come before
	// the repair in the WAL and be deleted by it on the region. SHARE mode
	// makes every write of these tables wait until the message commits.
	for _, t := range req.Tables {
		if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{t.Schema, t.Name}.Sanitize()+" IN SHARE MODE"); err != nil {
			return 0, fmt.Errorf("lock %s.%s for the repair: %w", t.Schema, t.Name, err)
		}
	}
	for i := range req.Tables {
		if err := readRepairRows(ctx, tx, &req.Tables[i]); err != nil {
			return 0, err
		}
	}
	content, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	var at string
	if err := tx.QueryRow(ctx, "SELECT pg_logical_emit_message(true, $1, $2)::text", stream.PrefixRepair, string(content)).Scan(&at); err != nil {
		return 0, fmt.Errorf("write the rows into the WAL: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return stream.ParseLSN(at)
}

// readRepairRows fills t's Columns and Rows: its rows of t.Keys, locked
// FOR SHARE until the message holding them commits, so that no change of
// them commits between the read and the message.
func readRepairRows(ctx context.Context, tx pgx.Tx, t *stream.RepairTable) error {
	rel := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, rel)
	if err != nil {
		return fmt.Errorf("read the columns of %s: %w", rel, err)
	}
	types := map[string]string{}
	t.Columns = t.Columns[:0]
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return err
		}
		t.Columns = append(t.Columns, name)
		types[name] = typ
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the columns of %s: %w", rel, err)
	}
	sel := make([]string, len(t.Columns))
	for i, col := range t.Columns {
		sel[i] = pgx.Identifier{col}.Sanitize() + "::text"
	}
	t.Rows = nil
	for _, key := range t.Keys {
		if len(key) != len(t.KeyColumns) {
			return fmt.Errorf("a key of %s has %d values for %d key columns", rel, len(key), len(t.KeyColumns))
		}
		var where []string
		var args []any
		for i, col := range t.KeyColumns {
			typ, ok := types[col]
			if !ok {
				return fmt.Errorf("table %s has no column %q on the primary", rel, col)
			}
			if key[i] == nil {
				where = append(where, pgx.Identifier{col}.Sanitize()+" IS NULL")
				continue
			}
			args = append(args, *key[i])
			if t.FullImage {
				// The type's own output (format's %s), as pgoutput sent it:
				// a cast to text would trim char(n).
				where = append(where, fmt.Sprintf("format('%%s', %s) = $%d", pgx.Identifier{col}.Sanitize(), len(args)))
			} else {
				where = append(where, fmt.Sprintf("%s = $%d::%s", pgx.Identifier{col}.Sanitize(), len(args), typ))
			}
		}
		q := "SELECT " + strings.Join(sel, ", ") + " FROM " + rel + " WHERE " + strings.Join(where, " AND ") + " FOR SHARE"
		rs, err := tx.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
		for rs.Next() {
			vals := make([]*string, len(t.Columns))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rs.Scan(ptrs...); err != nil {
				rs.Close()
				return err
			}
			t.Rows = append(t.Rows, vals)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
	}
	return nil
}
