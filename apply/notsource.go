package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// notSource refuses a target that is the source of the stream itself: an
// applier pointed at the primary would write the stream's whole history a
// second time onto it. The source is told by its slot: the one capture
// named in the stream's headers, in a database of the same system and
// name, or, for streams without those headers, the default slot
// pgjet_<name> in this database. With st nil, only the default slot is
// looked for.
func notSource(ctx context.Context, conn *pgx.Conn, st jetstream.Stream, name string) error {
	var h nats.Header
	if st != nil {
		var err error
		if h, err = lastHeaders(ctx, st); err != nil {
			return natsError{err}
		}
	}
	slot := "pgjet_" + name
	if s := h.Get(stream.HeaderSlot); s != "" {
		slot = s
	}
	var system, db string
	var hasSlot bool
	err := conn.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database(),
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database())`, slot).Scan(&system, &db, &hasSlot)
	if err != nil {
		return fmt.Errorf("identify the target database: %w", err)
	}
	if !hasSlot {
		return nil
	}
	if h.Get(stream.HeaderSlot) != "" && (h.Get(stream.HeaderSystem) != system || h.Get(stream.HeaderDatabase) != db) {
		return nil // a slot of that name, but another system's or database's stream
	}
	return pgerr.Fatalf(nil, "the target database %s holds slot %s, which pgjet-capture --name %s streams from: it is the source itself, and applying stream %s there would write every change onto the primary a second time; point --db at the replica's database",
		db, slot, name, stream.StreamName(name))
}

// lastHeaders returns the headers of the stream's last message that still
// exists (nil when the stream is empty).
func lastHeaders(ctx context.Context, st jetstream.Stream) (nats.Header, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream info: %w", err)
	}
	for seq := info.State.LastSeq; seq >= max(info.State.FirstSeq, 1) && seq > 0 && info.State.LastSeq-seq < 100; seq-- {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read stream %s sequence %d: %w", info.Config.Name, seq, err)
		}
		return m.Header, nil
	}
	return nil, nil
}
