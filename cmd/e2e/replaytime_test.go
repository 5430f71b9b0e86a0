package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestReplay_UntilTimeResumedSnapshot: a snapshot is interrupted after
// its first table and resumed after the replay's point, so its second
// table holds a row written after the point although the snapshot started
// before it. pgjet replay --until-time, like --until-lsn, must not build
// from that snapshot: it takes the older one and the changes after it.
func TestReplay_UntilTimeResumedSnapshot(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, v text)`,
		`INSERT INTO a SELECT i, 'a' FROM generate_series(1, 100) i`,
		`INSERT INTO b SELECT i, repeat('b', 200) FROM generate_series(1, 40000) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.src, `UPDATE a SET v = 'before the point' WHERE id <= 10`)

	// A snapshot killed while it copies b, a whole already. Small
	// messages make b's copy last.
	js := natsJS(t, c.nats.ClientURL())
	snapArgs := []string{"snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src",
		"--chunk-bytes", "1024", "--snapshot-workers", "1"}
	snap := start(t, "pgjet snapshot", bins.pgjet, snapArgs...)
	killed := make(chan struct{})
	sub, err := js.Conn().Subscribe(stream.SnapshotAllSubjects("src", "*"), func(m *nats.Msg) {
		if m.Header.Get(stream.SnapKindHeader) == stream.SnapData && m.Header.Get(stream.SnapTableHeader) == "b" {
			select {
			case <-killed:
			default:
				snap.Kill()
				close(killed)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-killed:
	case <-time.After(60 * time.Second):
		t.Fatalf("pgjet snapshot copied no rows of b in 60s:\n%s", tail(snap.Output(), 2000))
	}
	_ = sub.Unsubscribe()

	time.Sleep(1100 * time.Millisecond)
	midLSN := queryString(t, c.src, "SELECT pg_current_wal_lsn()::text")
	midTime := time.Now().UTC()
	ctx := context.Background()
	mid, err := local.Digest(ctx, c.src)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	exec1(t, c.src, `INSERT INTO b VALUES (0, 'after the point')`, `UPDATE a SET v = 'after the point' WHERE id > 90`)

	// Resumed: a kept at the first point, b copied again with the row.
	if code, out := runPgjet(t, snapArgs...); code != 0 || !strings.Contains(out, "resuming interrupted snapshot") {
		t.Fatalf("pgjet snapshot (resume) exited %d:\n%s", code, tail(out, 2000))
	}
	snaps, _ := snapshotList(t, c.nats.ClientURL())
	if len(snaps) != 2 || !snaps[1].Complete {
		t.Fatalf("snapshots: %+v, want the capture's and the resumed one, complete", snaps)
	}
	man := snaps[1].Manifest
	for _, tb := range man.Tables {
		if tb.Name == "b" && tb.LSN <= man.LSN {
			t.Fatalf("b was copied whole before the kill (LSN %s, snapshot %s); make b larger", tb.LSN, man.LSN)
		}
	}
	if !man.Started.Before(midTime) {
		t.Fatalf("the resumed snapshot started at %s, not before the point %s", man.Started, midTime)
	}
	// The stream holds the changes past the point: a heartbeat after it.
	waitFor(t, 30*time.Second, "a heartbeat after the point in the stream", func() (bool, string) {
		env, seq, err := streamEnd(t, js, true)
		if err != nil {
			return false, err.Error()
		}
		return env.CommitTime.After(midTime.Add(time.Second)), fmt.Sprintf("seq %d at %s", seq, env.CommitTime)
	})

	for _, until := range [][]string{{"--until-time", midTime.Format(time.RFC3339Nano)}, {"--until-lsn", midLSN}} {
		db := "replay" + strings.TrimPrefix(until[0], "--until-")
		exec1(t, c.dst, "CREATE DATABASE "+db)
		url := c.replica.URL(db)
		code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", url, until[0], until[1])
		if code != 0 {
			t.Fatalf("replay %s exited %d:\n%s", until[0], code, tail(out, 3000))
		}
		got, err := local.Digest(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if d := local.DiffDigests(mid, got); len(d) > 0 {
			t.Errorf("replay %s differs from the primary at that point: %v", until[0], d)
		}
		if strings.Contains(out, man.ID) {
			t.Errorf("replay %s built from snapshot %s, resumed after the point", until[0], man.ID)
		}
	}
	capt.Stop(t)
}

// TestReplay_UntilTimeCaptureClockBehind: a snapshot's times (when it
// started, when each table was taken) are read from the capture host's
// clock, --until-time names a source commit time. With a capture host
// whose clock runs an hour behind the source's, a snapshot taken after
// the point looks taken before it. Replay must choose by the source's
// commit times: the snapshot holds a transaction committed after the
// point, so the older snapshot and the changes after it are used.
func TestReplay_UntilTimeCaptureClockBehind(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	exec1(t, c.src, `INSERT INTO t SELECT i, 'first' FROM generate_series(1, 10) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	exec1(t, c.src, `INSERT INTO t VALUES (11, 'before the point')`)
	ctx := context.Background()
	mid, err := local.Digest(ctx, c.src)
	if err != nil {
		t.Fatal(err)
	}
	// Pauses (not a guess at any state) put a clear gap between the point
	// and the commits on either side of it.
	time.Sleep(1100 * time.Millisecond)
	midTime := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)
	exec1(t, c.src, `INSERT INTO t VALUES (12, 'after the point')`)
	if code, out := runPgjet(t, "snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(out, 2000))
	}
	c.waitCaptured(t)

	// The second snapshot as a capture host an hour behind would have
	// written it: its end message again, with every time an hour earlier.
	snaps, _ := snapshotList(t, c.nats.ClientURL())
	if len(snaps) != 2 || !snaps[1].Complete {
		t.Fatalf("snapshots: %+v, want two complete", snaps)
	}
	man := snaps[1].Manifest
	man.Started, man.Finished = man.Started.Add(-time.Hour), man.Finished.Add(-time.Hour)
	for i := range man.Tables {
		man.Tables[i].Taken = man.Tables[i].Taken.Add(-time.Hour)
	}
	data, err := json.Marshal(man)
	if err != nil {
		t.Fatal(err)
	}
	js := natsJS(t, c.nats.ClientURL())
	m := nats.NewMsg(stream.SnapshotOutlineSubject("src", man.ID))
	m.Header.Set(stream.SnapKindHeader, stream.SnapEnd)
	m.Data = data
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if snaps, _ = snapshotList(t, c.nats.ClientURL()); !snaps[1].Manifest.Started.Before(midTime) {
		t.Fatalf("the second snapshot does not look taken before the point: %+v", snaps[1].Manifest)
	}

	url, out := c.replayInto(t, "replayed", "--until-time", midTime.Format(time.RFC3339Nano))
	got, err := local.Digest(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if d := local.DiffDigests(mid, got); len(d) > 0 {
		t.Errorf("replay --until-time differs from the primary at that point: %v", d)
	}
	if strings.Contains(out, man.ID) {
		t.Errorf("replay built from snapshot %s, which holds a transaction after the point", man.ID)
	}
	capt.Stop(t)
}
