package apply

// The applier's own state in its target, pgjet.applier_state: whether it
// runs, its heartbeat, and the error that stopped it. `pgjet status` reads
// it to tell a stopped applier (and why it stopped) from a slow one, and a
// killed one (running, with a heartbeat that stopped) from both.

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/redact"
)

// stateSQL creates the table the appliers of a target record their state
// in, one row per source (as pgjet.applied). Its rows are never published:
// capture leaves schema pgjet out.
const stateSQL = `
CREATE TABLE IF NOT EXISTS pgjet.applier_state (
	source             text PRIMARY KEY,
	region             text NOT NULL,
	state              text NOT NULL, -- running or stopped
	pid                integer,
	host               text,
	started_at         timestamptz NOT NULL,
	heartbeat_at       timestamptz NOT NULL,
	heartbeat_interval interval NOT NULL,
	stopped_at         timestamptz,
	last_error         text,
	last_error_at      timestamptz
);`

// OwnTables are the tables pgjet-apply makes in schema pgjet of a target
// (migrations, ddlDoneSQL), each with a source column:
// what pgjet drop region removes.
var OwnTables = []string{"applied", "applier_state", "conflicts", "ddl_done", "generations", "restore", "skip", "snapshot_tables"}

// Applier states recorded in pgjet.applier_state.
const (
	StateRunning = "running"
	StateStopped = "stopped"
)

// DefaultStateInterval is how often a running applier records its
// heartbeat (Config.StateInterval).
const DefaultStateInterval = 5 * time.Second

// maxErrorLine bounds the error line kept in the target.
const maxErrorLine = 2000

// ErrorLine is err as one line for pgjet.applier_state: line breaks
// folded, secrets of connection strings (db's, and any in the text)
// hidden, and long messages cut.
func ErrorLine(err error, db string) string {
	if err == nil {
		return ""
	}
	return schema.Truncate(redact.Text(redact.Within(err.Error(), db)), maxErrorLine)
}

// stateRecorder keeps an Applier's row of pgjet.applier_state: running
// with a fresh heartbeat while Run runs, stopped with the error that ended
// it when Run returns. It writes over a connection of its own, so a long
// target transaction or a restore does not hold the heartbeat back. Every
// write is best effort: a target that cannot be written is the applier's
// own problem, reported there.
//
// Nothing is written before a session has checked the target and made
// pgjet's tables (ready): a target refused as the applier's own source
// stays as it is.
type stateRecorder struct {
	a    *Applier
	host string
	pid  int

	ready   atomic.Bool
	mu      sync.Mutex
	lastErr string // the error being retried, "" when none
	kick    chan struct{}
	done    chan error // Run's result
	ended   chan struct{}
}

// startState starts recording a's state; nil for a replay, which is no
// long-running applier to watch.
func (a *Applier) startState(ctx context.Context) *stateRecorder {
	if a.cfg.StopAtEnd || a.cfg.StateInterval <= 0 {
		return nil
	}
	host, _ := os.Hostname()
	r := &stateRecorder{a: a, host: host, pid: os.Getpid(), kick: make(chan struct{}, 1), done: make(chan error, 1), ended: make(chan struct{})}
	go r.run(context.WithoutCancel(ctx))
	return r
}

// setUp records that a session checked the target and made pgjet's
// tables: the row can be written from now on.
func (r *stateRecorder) setUp() {
	if r == nil {
		return
	}
	r.ready.Store(true)
	r.poke()
}

// retrying records err as the error the applier retries after.
func (r *stateRecorder) retrying(err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.lastErr = ErrorLine(err, r.a.cfg.DB)
	r.mu.Unlock()
	r.poke()
}

// started records that a session started applying: nothing is wrong.
func (r *stateRecorder) started() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.lastErr = ""
	r.mu.Unlock()
	r.poke()
}

func (r *stateRecorder) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// stop records the end of Run, with err (nil: a clean stop), and waits
// for it to be written, at most a few seconds.
func (r *stateRecorder) stop(err error) {
	if r == nil {
		return
	}
	r.done <- err
	select {
	case <-r.ended:
	case <-time.After(stateWriteTimeout + time.Second):
	}
}

// stateWriteTimeout bounds each write of the state.
const stateWriteTimeout = 5 * time.Second

const (
	// stateRunningSQL makes the row say running, for this process.
	stateRunningSQL = `INSERT INTO pgjet.applier_state (source, region, state, pid, host, started_at, heartbeat_at, heartbeat_interval, stopped_at, last_error, last_error_at)
		VALUES ($1, $2, 'running', $3, $4, now(), now(), make_interval(secs => $5::float8), NULL, nullif($6, ''), CASE WHEN $6 = '' THEN NULL ELSE now() END)
		ON CONFLICT (source) DO UPDATE SET region = EXCLUDED.region, state = EXCLUDED.state, pid = EXCLUDED.pid, host = EXCLUDED.host,
			started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at, heartbeat_interval = EXCLUDED.heartbeat_interval,
			stopped_at = NULL, last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at`
	// stateBeatSQL renews the heartbeat of this process's row; no row
	// changes when another process took it over (or it was removed).
	stateBeatSQL = `UPDATE pgjet.applier_state SET heartbeat_at = now(), last_error = nullif($2, ''),
			last_error_at = CASE WHEN $2 = '' THEN NULL WHEN last_error IS DISTINCT FROM $2 THEN now() ELSE last_error_at END
		WHERE source = $1 AND state = 'running' AND pid = $3 AND host = $4`
	// stateStoppedSQL records the end; the row is made when missing.
	stateStoppedSQL = `INSERT INTO pgjet.applier_state (source, region, state, pid, host, started_at, heartbeat_at, heartbeat_interval, stopped_at, last_error, last_error_at)
		VALUES ($1, $2, 'stopped', $3, $4, now(), now(), make_interval(secs => $5::float8), now(), nullif($6, ''), CASE WHEN $6 = '' THEN NULL ELSE now() END)
		ON CONFLICT (source) DO UPDATE SET region = EXCLUDED.region, state = EXCLUDED.state, pid = EXCLUDED.pid, host = EXCLUDED.host,
			heartbeat_at = EXCLUDED.heartbeat_at, stopped_at = EXCLUDED.stopped_at,
			last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at`
	// stateStoppedEarlySQL records an end before the target was checked:
	// only a row an earlier run left is corrected (it may say running).
	stateStoppedEarlySQL = `UPDATE pgjet.applier_state SET state = 'stopped', pid = $3, host = $4, heartbeat_at = now(), stopped_at = now(),
			last_error = nullif($5, ''), last_error_at = CASE WHEN $5 = '' THEN NULL ELSE now() END
		WHERE source = $1 AND region = $2`
)

func (r *stateRecorder) run(ctx context.Context) {
	defer close(r.ended)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			conn.Close(cctx)
			cancel()
		}
	}()
	// write runs sql and returns the rows it changed (-1 on an error),
	// connecting first when needed; a broken connection is dropped, to be
	// made again next time.
	write := func(sql string, args ...any) int64 {
		wctx, cancel := context.WithTimeout(ctx, stateWriteTimeout)
		defer cancel()
		if conn == nil {
			cfg, err := pgx.ParseConfig(r.a.cfg.DB)
			if err != nil {
				return -1
			}
			cfg.RuntimeParams["application_name"] = "pgjet-apply state"
			cfg.RuntimeParams["synchronous_commit"] = "off"
			if conn, err = pgx.ConnectConfig(wctx, cfg); err != nil {
				conn = nil
				return -1
			}
		}
		tag, err := conn.Exec(wctx, sql, args...)
		if err != nil {
			r.a.log.Debug().Err(err).Msg("record applier state")
			if conn.IsClosed() || wctx.Err() != nil {
				conn.Close(context.Background())
				conn = nil
			}
			return -1
		}
		return tag.RowsAffected()
	}
	cfg := r.a.cfg
	recorded := false // the row says running, for this process
	beat := func() {
		if !r.ready.Load() {
			return
		}
		r.mu.Lock()
		lastErr := r.lastErr
		r.mu.Unlock()
		if recorded && write(stateBeatSQL, cfg.Name, lastErr, r.pid, r.host) == 1 {
			return
		}
		recorded = write(stateRunningSQL, cfg.Name, cfg.Region, r.pid, r.host, cfg.StateInterval.Seconds(), lastErr) == 1
	}
	t := time.NewTicker(cfg.StateInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			beat()
		case <-r.kick:
			beat()
		case err := <-r.done:
			line := ErrorLine(err, cfg.DB)
			if r.ready.Load() {
				write(stateStoppedSQL, cfg.Name, cfg.Region, r.pid, r.host, cfg.StateInterval.Seconds(), line)
			} else {
				write(stateStoppedEarlySQL, cfg.Name, cfg.Region, r.pid, r.host, line)
			}
			return
		}
	}
}
