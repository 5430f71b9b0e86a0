package capture

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// sourceID is what capture records of its source cluster in every message
// (stream.HeaderSystem, stream.HeaderTimeline).
type sourceID struct {
	system   string // system identifier, decimal
	timeline int32
	database string
	walEnd   stream.LSN // flush position when asked; 0 when read from the stream
}

// newStreamRemedy is the way out of a stream that cannot continue from
// this source: the slot cannot go back, so regions start again from a
// snapshot.
func newStreamRemedy(name string) string {
	return fmt.Sprintf("start a new stream: delete streams %s and %s (nats stream rm) or give capture a new --name, let it take a new snapshot, and rebuild every region from it",
		stream.StreamName(name), stream.SnapshotStreamName(name))
}

// checkSource compares the source capture is about to read with the one
// that wrote the stream's last message. Transactions below the stream's
// tail are skipped as already published: that is right only when the
// source is the same cluster, on the same history, at least as far along.
// Any other source (another cluster, a restored backup, a standby promoted
// before it received the tail) gets a FatalError naming the remedy, never a
// silent skip.
func (c *Capture) checkSource(ctx context.Context, repl *pgconn.PgConn, src sourceID, tail tailInfo) error {
	if tail.pos == 0 {
		return nil // the stream holds nothing of this source
	}
	name := stream.StreamName(c.cfg.Name)
	if tail.id.system != "" && tail.id.system != src.system {
		return pgerr.Fatalf(nil, "stream %s holds changes of Postgres system %s, but %s is system %s (another cluster: a new initdb, a dump loaded elsewhere, a migration); its transactions below %s would be skipped: %s",
			name, tail.id.system, c.where(), src.system, tail.pos, newStreamRemedy(c.cfg.Name))
	}
	if src.walEnd < tail.pos {
		return pgerr.Fatalf(nil, "stream %s holds changes up to LSN %s, but the WAL of %s ends at %s (a restored backup, or a promoted standby that had not received them): the stream's last transactions are not in this source: %s",
			name, tail.pos, c.where(), src.walEnd, newStreamRemedy(c.cfg.Name))
	}
	if tail.id.timeline == 0 || tail.id.timeline == src.timeline {
		return nil
	}
	// Another timeline: a promotion or a point-in-time recovery. The
	// stream still fits if its tail is at or before the point where the
	// source's history left the stream's timeline.
	end, err := timelineEnd(ctx, repl, src.timeline, tail.id.timeline)
	if err != nil {
		return fmt.Errorf("read timeline history of %s: %w", c.where(), err)
	}
	if end < 0 || tail.pos > stream.LSN(end) {
		switchedAt := "never"
		if end >= 0 {
			switchedAt = "at " + stream.LSN(end).String()
		}
		return pgerr.Fatalf(nil, "stream %s holds changes of timeline %d up to LSN %s, but %s is on timeline %d, which left timeline %d %s (a failover or point-in-time recovery lost them): %s",
			name, tail.id.timeline, tail.pos, c.where(), src.timeline, tail.id.timeline, switchedAt, newStreamRemedy(c.cfg.Name))
	}
	return nil
}

// timelineEnd returns where the history of timeline current switched away
// from timeline old, or -1 when old is not in its history (the source is on
// an older or unrelated timeline).
func timelineEnd(ctx context.Context, repl *pgconn.PgConn, current, old int32) (int64, error) {
	if current < old || current == 1 {
		return -1, nil
	}
	h, err := pglogrepl.TimelineHistory(ctx, repl, current)
	if err != nil {
		return 0, err
	}
	return switchPoint(h.Content, old)
}

// switchPoint reads a timeline history file (lines of "parentTLI <tab>
// switchpoint <tab> reason", oldest first) and returns where timeline old
// ended, or -1 when it is not in the history.
func switchPoint(history []byte, old int32) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(history))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		tli, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil || int32(tli) != old {
			continue
		}
		lsn, err := stream.ParseLSN(f[1])
		if err != nil {
			return 0, fmt.Errorf("timeline history line %q: %w", sc.Text(), err)
		}
		return int64(lsn), nil
	}
	return -1, sc.Err()
}

// identify reads the source's system identifier, timeline and WAL end
// through the replication connection.
func identify(ctx context.Context, repl *pgconn.PgConn) (sourceID, error) {
	sys, err := pglogrepl.IdentifySystem(ctx, repl)
	if err != nil {
		return sourceID{}, fmt.Errorf("identify system: %w", err)
	}
	return sourceID{system: sys.SystemID, timeline: sys.Timeline, database: sys.DBName, walEnd: stream.LSN(sys.XLogPos)}, nil
}
