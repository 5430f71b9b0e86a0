package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/schema/pgerr"
)

// slotTTL is how long one read of the slot's state serves scrapes and
// readiness checks: the query runs at most once a second, however often
// Prometheus and the kubelet ask.
const slotTTL = time.Second

// Capture is the Probe of a pgjet-capture: its counters, and the state of
// its replication slot read from the source (pg_replication_slots and
// pg_stat_replication, https://www.postgresql.org/docs/15/view-pg-replication-slots.html)
// on a one-connection pool of its own.
type Capture struct {
	c      *capture.Capture
	cfg    capture.Config
	log    zerolog.Logger
	pool   *pgxpool.Pool
	labels prometheus.Labels
	prog   progress

	mu     sync.Mutex
	slot   slotState
	slotAt time.Time
	err    error
}

var _ Probe = (*Capture)(nil)

// slotState is the source's view of the slot.
type slotState struct {
	active bool
	// retained is the WAL the slot holds back (bytes from its restart_lsn
	// to the current WAL position); nil before the slot has one.
	retained *float64
	wal      float64   // the source's current WAL position
	reply    time.Time // when the slot's client last sent a standby status
}

// NewCapture returns the Probe of c, whose cfg passed Validate. It does no
// I/O: the pool connects at the first scrape or check. Close releases it.
func NewCapture(c *capture.Capture, cfg capture.Config, log zerolog.Logger) (*Capture, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DB)
	if err != nil {
		return nil, pgerr.ClassifyConnect(cfg.DB, err)
	}
	pcfg.MaxConns = 1
	pcfg.MaxConnIdleTime = time.Minute
	pcfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pcfg.ConnConfig.RuntimeParams["application_name"] = "pgjet-capture-metrics"
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, pgerr.ClassifyConnect(cfg.DB, err)
	}
	return &Capture{c: c, cfg: cfg, log: log.With().Str("component", "metrics").Logger(), pool: pool,
		labels: prometheus.Labels{"source": cfg.Name}}, nil
}

// Close closes the slot-query pool.
func (m *Capture) Close() { m.pool.Close() }

// Register adds the capture's collectors to reg.
func (m *Capture) Register(reg prometheus.Registerer) error {
	st, l := m.c.Stats(), m.labels
	return register(reg,
		gauge("pgjet_capture_confirmed_lsn", "Slot position (LSN as a byte number) last reported to Postgres as durable in JetStream.", l,
			func() float64 { return float64(st.Confirmed.Load()) }),
		counter("pgjet_capture_transactions_total", "Source transactions captured.", l,
			func() float64 { return float64(st.Txns.Load()) }),
		counter("pgjet_capture_changes_total", "Row changes captured.", l,
			func() float64 { return float64(st.Changes.Load()) }),
		counter("pgjet_capture_messages_total", "Messages published to JetStream.", l,
			func() float64 { return float64(st.Messages.Load()) }),
		counter("pgjet_capture_bytes_total", "Bytes of message payload published to JetStream.", l,
			func() float64 { return float64(st.Bytes.Load()) }),
		gauge("pgjet_capture_pending_acks", "Messages published and not yet acknowledged by JetStream.", l,
			func() float64 { return float64(m.c.PendingAcks()) }),
		gauge("pgjet_capture_snapshot_running", "1 while a snapshot is being copied, else 0.", l,
			func() float64 { return b2f(m.c.SnapshotStats().Running.Load()) }),
		gauge("pgjet_capture_snapshot_rows", "Rows copied by the snapshot being taken (or the last one).", l,
			func() float64 { return float64(m.c.SnapshotStats().Rows.Load()) }),
		gauge("pgjet_capture_snapshot_bytes", "Bytes of rows copied by the snapshot being taken (or the last one).", l,
			func() float64 { return float64(m.c.SnapshotStats().Bytes.Load()) }),
		gauge("pgjet_capture_snapshot_estimated_rows", "The planner's estimate of the rows the snapshot copies (reltuples).", l,
			func() float64 { return float64(m.c.SnapshotStats().EstRows.Load()) }),
		gauge("pgjet_capture_snapshot_tables_done", "Tables the snapshot has copied whole.", l,
			func() float64 { return float64(m.c.SnapshotStats().TablesDone.Load()) }),
		gauge("pgjet_capture_snapshot_tables", "Tables the snapshot copies.", l,
			func() float64 { return float64(m.c.SnapshotStats().Tables.Load()) }),
		counter("pgjet_capture_snapshots_total", "Snapshots completed since the capture started.", l,
			func() float64 { return float64(m.c.SnapshotStats().Completed.Load()) }),
		newSlotCollector(m),
	)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// slotCollector reports what the source knows of the slot. When the
// source cannot be queried it reports nothing rather than fail the scrape.
type slotCollector struct {
	m                     *Capture
	retained, wal, active *prometheus.Desc
}

func newSlotCollector(m *Capture) slotCollector {
	return slotCollector{m: m,
		retained: prometheus.NewDesc("pgjet_capture_retained_wal_bytes",
			"WAL the replication slot keeps on the source: its current WAL position minus the slot's restart_lsn.", nil, m.labels),
		wal: prometheus.NewDesc("pgjet_capture_wal_lsn",
			"The source's current WAL position (LSN as a byte number); minus pgjet_apply_source_lsn it is a region's lag in bytes.", nil, m.labels),
		active: prometheus.NewDesc("pgjet_capture_slot_active",
			"1 when a client streams from the replication slot, else 0.", nil, m.labels),
	}
}

func (s slotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.retained
	ch <- s.wal
	ch <- s.active
}

func (s slotCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	st, err := s.m.slotState(ctx)
	if err != nil {
		s.m.log.Debug().Err(err).Msg("slot metrics unavailable")
		return
	}
	if st.retained != nil {
		ch <- prometheus.MustNewConstMetric(s.retained, prometheus.GaugeValue, *st.retained)
	}
	ch <- prometheus.MustNewConstMetric(s.wal, prometheus.GaugeValue, st.wal)
	active := 0.0
	if st.active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(s.active, prometheus.GaugeValue, active)
}

const slotSQL = `
SELECT s.active,
	pg_wal_lsn_diff(w.lsn, s.restart_lsn)::float8,
	pg_wal_lsn_diff(w.lsn, '0/0')::float8,
	r.reply_time
FROM pg_replication_slots s
CROSS JOIN (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn) w
LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = $1`

// slotState returns the slot's state, read at most slotTTL ago.
func (m *Capture) slotState(ctx context.Context) (slotState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.slotAt.IsZero() && time.Since(m.slotAt) < slotTTL {
		return m.slot, m.err
	}
	var st slotState
	var reply *time.Time
	err := m.pool.QueryRow(ctx, slotSQL, m.cfg.Slot).Scan(&st.active, &st.retained, &st.wal, &reply)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = fmt.Errorf("replication slot %q does not exist yet", m.cfg.Slot)
	case err != nil:
		err = fmt.Errorf("read state of slot %q: %w", m.cfg.Slot, err)
	case reply != nil:
		st.reply = *reply
	}
	m.slot, m.slotAt, m.err = st, time.Now(), err
	return st, err
}

// Ready reports whether the capture streams from its slot: it has reported
// a position in this process, Postgres received a standby status from the
// slot's client within three status intervals, and, while messages await
// JetStream's acks, they keep moving.
func (m *Capture) Ready(ctx context.Context) error {
	if err := m.c.Outage(); err != nil {
		return err
	}
	stats := m.c.Stats()
	if stats.Confirmed.Load() == 0 {
		return errors.New("not streaming yet: no position reported to Postgres")
	}
	st, err := m.slotState(ctx)
	if err != nil {
		return err
	}
	if !st.active {
		return fmt.Errorf("slot %q has no client: capture is not streaming", m.cfg.Slot)
	}
	window := 3*max(m.cfg.StatusInterval, time.Second) + slotTTL
	if age := time.Since(st.reply); st.reply.IsZero() || age > window {
		return fmt.Errorf("no standby status reached Postgres on slot %q for %s", m.cfg.Slot, age.Round(time.Second))
	}
	pending := m.c.PendingAcks()
	last := m.prog.moved([3]int64{stats.Messages.Load(), int64(stats.Confirmed.Load()), pending}, time.Now())
	if since := time.Since(last); pending > 0 && since > window {
		return fmt.Errorf("%d messages await JetStream acknowledgements, none acknowledged for %s", pending, since.Round(time.Second))
	}
	return nil
}
