package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSnapshot_RestoreOnStreamMadeAgain: a snapshot records the change
// stream's next sequence (stream_next), and a restore starts there. The
// change stream can be deleted and made again while the snapshot stream
// keeps its snapshots (an admin removes it, or its store is lost: capture
// makes it again on its next start and goes on from its slot, from
// sequence 1). The sequences of the new stream say nothing of the
// snapshot, but a region built from it started at the old stream's
// stream_next, and passed over, silently, every change the new stream
// holds below it. A search by commit LSN (what restores did before)
// finds them.
func TestSnapshot_RestoreOnStreamMadeAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t) // the region gets its table from the snapshot
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	capt := c.capture(t, "--no-snapshot", "--heartbeat", "0")
	js := natsJS(t, c.nats.ClientURL())
	waitSeq := func(seq uint64) {
		waitFor(t, 30*time.Second, fmt.Sprintf("stream sequence %d", seq), func() (bool, string) {
			checkDaemons(t)
			n := streamLastSeq(t, js, "src")
			return n >= seq, fmt.Sprintf("last sequence %d", n)
		})
	}
	for i := 1; i <= 5; i++ { // one message each
		before := streamLastSeq(t, js, "src")
		exec1(t, c.src, fmt.Sprintf("INSERT INTO t VALUES (%d, 'before the snapshot')", i))
		waitSeq(before + 1)
	}
	if code, out := runPgjet(t, "snapshot", "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src"); code != 0 {
		t.Fatalf("pgjet snapshot exited %d:\n%s", code, tail(out, 2000))
	}
	capt.Stop(t)

	// The change stream is made again, empty; capture goes on into it.
	emptyStream(t, js)
	capt = c.capture(t, "--no-snapshot", "--heartbeat", "0")
	exec1(t, c.src, "INSERT INTO t VALUES (6, 'in the stream made again')")
	waitSeq(1)

	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 30*time.Second, c.src, c.dst)
	app.Stop(t)
	capt.Stop(t)
}

// TestSecrets_SSLPasswordFileOutlivesKilledCapture: the client key's pass
// phrase reaches pg_dump in a service file that capture removes when
// pg_dump ends. A capture killed while pg_dump runs (the OOM killer, kill
// -9, a container stopped) never removes it: pg_dump runs on, and the pass
// phrase stays on disk, in the temporary directory, for good. Handed over
// through a pipe (PGSERVICEFILE=/dev/fd/N, which libpq reads as well) it
// would never be written anywhere.
func TestSecrets_SSLPasswordFileOutlivesKilledCapture(t *testing.T) {
	t.Parallel()
	const phrase = "client key pass phrase 8"
	c, dir := encryptedKeyCluster(t, phrase)
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	// pg_dump, as a wrapper that notes its service file, and whose
	// capture is killed as it starts.
	seen := filepath.Join(dir, "pg_dump.seen")
	wrapper := filepath.Join(dir, "pg_dump")
	script := fmt.Sprintf("#!/bin/sh\necho \"servicefile: $PGSERVICEFILE\" >> %[1]s\nkill -9 $PPID\npg_dump \"$@\" >/dev/null 2>&1\necho \"pg_dump ended\" >> %[1]s\n", seen)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--pg-dump", wrapper)
	p.Wait(t, 120*time.Second)
	var file string
	waitFor(t, 60*time.Second, "pg_dump to end", func() (bool, string) {
		b, _ := os.ReadFile(seen)
		out := string(b)
		for _, line := range strings.Split(out, "\n") {
			if f, ok := strings.CutPrefix(line, "servicefile: "); ok && file == "" {
				file = f
			}
		}
		return strings.Contains(out, "pg_dump ended"), out
	})
	if file == "" {
		t.Fatal("pg_dump ran without a service file")
	}
	if strings.HasPrefix(file, "/dev/fd/") {
		return // a pipe: nothing was written to disk
	}
	if b, err := os.ReadFile(file); err == nil {
		os.RemoveAll(filepath.Dir(file))
		t.Errorf("the service file %s outlived capture and pg_dump, with the pass phrase in it (%v):\n%s",
			file, strings.Contains(string(b), phrase), b)
	}
}
