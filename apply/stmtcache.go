package apply

import (
	"container/list"
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
)

// stmtCache holds the names of the change statements a session prepared
// on the target, least recently used last, so that their number stays
// within a bound: each one costs the target backend memory for its plan,
// and tables, operations, unchanged-TOAST patterns and run sizes multiply
// into more shapes than a session should keep. Statements used by the
// batch being built are not evicted (the batch still refers to them):
// when they are all that is held, the batch is sent first.
type stmtCache struct {
	max   int
	lru   *list.List // of *cachedStmt, most recently used first
	byKey map[stmtKey]*list.Element
}

// stmtKey names a statement: a plan and the shape of the change (and,
// for runs, its row count).
type stmtKey struct {
	p     *plan
	shape string
}

type cachedStmt struct {
	key  stmtKey
	name string
	used *pgconn.Batch // the batch that last queued it
}

func newStmtCache(max int) *stmtCache {
	return &stmtCache{max: max, lru: list.New(), byKey: map[stmtKey]*list.Element{}}
}

// use returns the statement of k, if prepared, and marks it used by
// batch.
func (c *stmtCache) use(k stmtKey, batch *pgconn.Batch) (string, bool) {
	e, ok := c.byKey[k]
	if !ok {
		return "", false
	}
	c.lru.MoveToFront(e)
	st := e.Value.(*cachedStmt)
	st.used = batch
	return st.name, true
}

// add records statement name, prepared for k and used by batch.
func (c *stmtCache) add(k stmtKey, name string, batch *pgconn.Batch) {
	c.byKey[k] = c.lru.PushFront(&cachedStmt{key: k, name: name, used: batch})
}

// evict removes the least recently used statements until one more fits,
// sparing those batch uses, and returns their names to deallocate.
func (c *stmtCache) evict(batch *pgconn.Batch) []string {
	var names []string
	for c.lru.Len() >= c.max {
		e := c.lru.Back()
		st := e.Value.(*cachedStmt)
		if batch != nil && st.used == batch {
			break // and so is every statement used more recently
		}
		c.lru.Remove(e)
		delete(c.byKey, st.key)
		names = append(names, st.name)
	}
	return names
}

// Len is the number of statements held.
func (c *stmtCache) Len() int { return c.lru.Len() }

// prepared returns the prepared statement of k for the batch being built,
// preparing build's SQL when it is not: the least recently used statements
// are deallocated first to keep within Config.StatementCache. what names
// the statement in errors.
func (s *session) prepared(ctx context.Context, k stmtKey, info stmtInfo, what string, build func() (string, []uint32)) (string, error) {
	if name, ok := s.stmts.use(k, s.batch); ok {
		return name, nil
	}
	if err := s.wait(ctx); err != nil { // preparing needs the connection
		return "", err
	}
	names := s.stmts.evict(s.batch)
	if s.stmts.Len() >= s.stmts.max {
		// Every statement held is queued in the batch being built: send
		// it, and they may go.
		if err := s.sendQueued(ctx); err != nil {
			return "", err
		}
		if err := s.wait(ctx); err != nil {
			return "", err
		}
		names = append(names, s.stmts.evict(s.batch)...)
	}
	for _, name := range names {
		if err := s.pg.Deallocate(ctx, name); err != nil {
			return "", s.stmtError(fmt.Errorf("deallocate statement %s: %w", name, err), info)
		}
	}
	sql, oids := build()
	s.stmtN++
	name := "pgjet_" + strconv.Itoa(s.stmtN)
	if _, err := s.pg.Prepare(ctx, name, sql, oids); err != nil {
		return "", s.stmtError(fmt.Errorf("prepare %s: %w", what, err), info)
	}
	s.stmts.add(k, name, s.batch)
	s.a.stats.Prepared.Store(int64(s.stmts.Len()))
	return name, nil
}
