package e2e

import (
	"context"
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
