package capture

// A start of capture that fails for good before it streams removes what
// it made on the source: a publication, DDL capture and a slot left
// behind by a capture that never ran would hold WAL, break UPDATEs of
// tables without a replica identity, and fire event triggers for nothing.

import (
	"context"
	"sync"
	"time"

	"github.com/pgjet/pgjet/schema"
)

// made is what capture created on the source since it last streamed.
type made struct {
	mu  sync.Mutex
	set madeSet
}

type madeSet struct {
	slot        bool
	publication bool
	inserts     bool // InsertsPublication
	ddl         bool // the event triggers and their function
	schema      bool // schema pgjet, made for the function
}

// add records what f marks as made.
func (m *made) add(f func(s *madeSet)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.set)
}

// streaming forgets what was made: capture streams, so it is in use.
func (m *made) streaming() { m.add(func(s *madeSet) { *s = madeSet{} }) }

// undoStart drops what capture made since it last streamed, after an
// error that stops it; each removal is logged, and a failed one only
// warned about.
func (c *Capture) undoStart(ctx context.Context) {
	c.made.mu.Lock()
	m := c.made.set
	c.made.mu.Unlock()
	if m == (madeSet{}) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	pool, err := c.connectPool(ctx)
	if err != nil {
		c.log.Warn().Err(err).Msg("cannot remove what this failed start made on the source: drop it with pgjet drop source")
		return
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		c.log.Warn().Err(err).Msg("cannot remove what this failed start made on the source: drop it with pgjet drop source")
		return
	}
	defer conn.Release()
	// Removing it is no schema change to replicate.
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config($1, 'off', false)", schema.DDLOffSetting); err != nil {
		c.log.Warn().Err(err).Msg("cannot remove what this failed start made on the source: drop it with pgjet drop source")
		return
	}
	step := func(what, sql string, args ...any) {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			c.log.Warn().Err(err).Str("object", what).Msg("cannot remove what this failed start made on the source: drop it with pgjet drop source")
			return
		}
		c.log.Info().Str("object", what).Msg("removed what this failed start made on the source")
	}
	if m.slot {
		step("slot "+c.cfg.Slot, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", c.cfg.Slot)
	}
	if m.publication {
		step("publication "+c.cfg.Publication, "DROP PUBLICATION IF EXISTS "+quoteIdent(c.cfg.Publication))
	}
	if m.inserts {
		step("publication "+InsertsPublication(c.cfg.Publication), "DROP PUBLICATION IF EXISTS "+quoteIdent(InsertsPublication(c.cfg.Publication)))
	}
	if m.ddl {
		for _, t := range schema.DDLTriggers {
			step("event trigger "+t, "DROP EVENT TRIGGER IF EXISTS "+quoteIdent(t))
		}
		for _, f := range schema.DDLFunctions {
			step("function "+f.Name, "DROP FUNCTION IF EXISTS "+f.Name)
		}
	}
	if m.schema {
		// RESTRICT: anything another program put there meanwhile stays.
		step("schema "+schema.Own, "DROP SCHEMA IF EXISTS "+quoteIdent(schema.Own))
	}
}
