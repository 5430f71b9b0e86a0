package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// Values larger than a NATS message, as SQL expressions: a 3.2 MB text,
// a 30 MB bytea (60 MB in its text form, which is what travels) and a
// 5 MB jsonb document. Their bytes differ all along, so a piece lost,
// repeated or out of place changes the replica's digest.
const (
	bigText  = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100000) i)`
	bigBytea = `(SELECT decode(string_agg(md5(i::text), ''), 'hex') FROM generate_series(1, 1900000) i)`
	bigJSONB = `(SELECT jsonb_agg(jsonb_build_object('i', i, 'h', md5(i::text))) FROM generate_series(1, 110000) i)`
)

// newDefaultPayloadCluster is newCluster with a NATS server that has
// nats-server's own default max_payload (1 MB), as a stock `nats-server
// -js` has: the local harness raises it otherwise.
func newDefaultPayloadCluster(t *testing.T, schemaSQL ...string) *cluster {
	t.Helper()
	c := newClusterNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", MaxPayload: server.MAX_PAYLOAD_SIZE}, schemaSQL...)
	nc, err := nats.Connect(c.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got, want := nc.MaxPayload(), int64(1<<20); got != want {
		t.Fatalf("NATS max_payload = %d, want nats-server's default %d", got, want)
	}
	return c
}

// TestPipeline_LargeValues: with nats-server's default max_payload,
// transactions that mix rows holding a 3 MB text, a 30 MB bytea and a
// 5 MB jsonb with small rows, an UPDATE that leaves the large columns
// unchanged (TOAST) beside one that changes them, and a REPLICA IDENTITY
// FULL table whose old rows are large too, replicate under a pgbench load;
// the replica is identical. `pgjet tail` shows the large rows whole.
func TestPipeline_LargeValues(t *testing.T) {
	t.Parallel()
	c := newDefaultPayloadCluster(t)
	pgbench(t, c.src, "-i", "-I", "dtp", "-s", "1", "-q")
	exec1(t, c.src, historyIdentity, `CREATE TABLE docs (id int PRIMARY KEY, body text, img bytea, doc jsonb, note text)`,
		`CREATE TABLE small (id int PRIMARY KEY, v text)`,
		`CREATE TABLE fulldocs (id int, body text)`, `ALTER TABLE fulldocs REPLICA IDENTITY FULL`)
	copySchema(t, c)
	capt := c.capture(t, "--no-snapshot")
	app := c.apply(t, "--skip-snapshot")
	pgbench(t, c.src, "-i", "-I", "g", "-s", "1", "-q") // the rows replicate
	load := pgbenchAsync(t, c.src, "-n", "-c", "2", "-T", "8")

	exec1(t, c.src, `BEGIN`,
		`INSERT INTO small SELECT i, 'before' FROM generate_series(1, 50) i`,
		`INSERT INTO docs VALUES (1, `+bigText+`, `+bigBytea+`, `+bigJSONB+`, 'first')`,
		`INSERT INTO small SELECT i, 'between' FROM generate_series(51, 100) i`,
		`INSERT INTO docs VALUES (2, `+bigText+` || 'two', NULL, `+bigJSONB+`, 'second')`,
		`INSERT INTO fulldocs SELECT i, `+bigText+` || i FROM generate_series(1, 2) i`,
		`INSERT INTO small VALUES (101, 'after')`,
		`COMMIT`)
	exec1(t, c.src, `BEGIN`,
		`UPDATE docs SET note = 'large columns unchanged' WHERE id = 1`,
		`INSERT INTO small VALUES (102, 'between updates')`,
		`UPDATE docs SET body = body || 'changed', note = 'changed' WHERE id = 2`,
		`UPDATE fulldocs SET body = body || 'x' WHERE id = 1`,
		`DELETE FROM fulldocs WHERE id = 2`,
		`INSERT INTO small VALUES (103, 'last')`,
		`COMMIT`)
	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if got := queryString(t, c.dst, "SELECT note FROM docs WHERE id = 1"); got != "large columns unchanged" {
		t.Errorf("docs 1 note = %q on the replica", got)
	}

	// tail puts the values back together: the row holds its text whole.
	// Its standard output alone: reconnect warnings go to standard error.
	var stderr bytes.Buffer
	cmd := exec.Command(bins.pgjet, "tail", "--nats", c.nats.ClientURL(), "--name", "src", "--follow=false")
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("pgjet tail: %v:\n%s", err, tail(stderr.String(), 2000))
	}
	out := string(stdout)
	wantBody := queryString(t, c.src, "SELECT md5(body) FROM docs WHERE id = 1")
	wantLen := queryInt(t, c.src, "SELECT length(img::text) FROM docs WHERE id = 1")
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 512<<20)
	for sc.Scan() {
		var line struct {
			Error   string `json:"error"`
			Changes []struct {
				Op    string                     `json:"op"`
				Table string                     `json:"table"`
				New   map[string]json.RawMessage `json:"new"`
			} `json:"changes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			at := 0
			if se, ok := err.(*json.SyntaxError); ok {
				at = int(se.Offset)
			}
			t.Fatalf("tail printed a line that is not JSON (%v) at byte %d of %d: …%.300s", err, at, len(sc.Text()), sc.Text()[max(at-150, 0):])
		}
		if line.Error != "" {
			t.Errorf("tail could not render a message: %s", line.Error)
		}
		for _, ch := range line.Changes {
			if ch.Op != "insert" || ch.Table != "public.docs" || string(ch.New["id"]) != `"1"` {
				continue
			}
			var body, img string
			_ = json.Unmarshal(ch.New["body"], &body)
			_ = json.Unmarshal(ch.New["img"], &img)
			if got := md5hex(body); got != wantBody {
				t.Errorf("tail shows docs 1 with a body of %d bytes, md5 %s; want md5 %s", len(body), got, wantBody)
			}
			if int64(len(img)) != wantLen {
				t.Errorf("tail shows docs 1 with img of %d bytes, want %d", len(img), wantLen)
			}
			found = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Errorf("tail printed no insert of docs 1:\n%.3000s", out)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestCapture_KillMidLargeValue: capture is killed with SIGKILL while it
// publishes the pieces of a 60 MB value (a 30 MB bytea) and restarted. The
// transaction is sent again whole; the replica holds it once, and whole
// (the keyless table shows a duplicate, the digest a torn value).
func TestCapture_KillMidLargeValue(t *testing.T) {
	t.Parallel()
	c := newDefaultPayloadCluster(t, "CREATE TABLE blobs (n int, data bytea, note text)", "ALTER TABLE blobs REPLICA IDENTITY FULL", "CREATE TABLE marker (id int PRIMARY KEY)")
	args := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s", "--no-snapshot"}
	capt := start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "capture started")
	app := c.apply(t, "--skip-snapshot")

	// The kill follows the third piece of the value by a few
	// milliseconds, long before its last.
	chunks, unsubscribe := watchChunks(t, c.nats.ClientURL())
	exec1(t, c.src, `BEGIN`, `INSERT INTO blobs SELECT i, NULL, 'small' FROM generate_series(1, 100) i`,
		`INSERT INTO blobs VALUES (0, `+bigBytea+`, 'large')`,
		`INSERT INTO blobs SELECT i, '\x00ff', 'small' FROM generate_series(101, 200) i`, `COMMIT`)
	deadline := time.After(90 * time.Second)
	for seen := 0; seen < 3; {
		select {
		case env := <-chunks:
			if env.IsPiece() {
				seen++
			}
		case <-deadline:
			t.Fatalf("capture published no third piece of the large value in 90s:\n%s", tail(capt.Output(), 2048))
		}
	}
	capt.Kill()
	unsubscribe()
	if last := lastEnvelope(t, c.nats.ClientURL()); !last.IsPiece() {
		t.Fatalf("the stream ends with chunk %d (flags %#x), not a piece of the large value: make it larger", last.Chunk, last.Flags)
	}

	capt = start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "capture started")
	c.passMarker(t, 2*time.Minute)
	if got, want := queryInt(t, c.dst, "SELECT count(*) FROM blobs"), int64(201); got != want {
		t.Errorf("replica holds %d rows of the transaction, want %d", got, want)
	}
	if got, want := queryString(t, c.dst, "SELECT md5(data) FROM blobs WHERE n = 0"), queryString(t, c.src, "SELECT md5(data) FROM blobs WHERE n = 0"); got != want {
		t.Errorf("replica's large value has md5 %s, want %s", got, want)
	}
	waitSame(t, 30*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestApply_KillMidLargeValue: apply is killed with SIGKILL while it
// receives the pieces of a 100 MB value and restarted: the replica holds
// the transaction once and whole. Both processes' peak RSS is logged and
// bounded: capture holds the row pgoutput delivered plus the pieces in
// flight, apply the value it puts together.
func TestApply_KillMidLargeValue(t *testing.T) {
	t.Parallel()
	c := newDefaultPayloadCluster(t, "CREATE TABLE blobs (n int, body text)", "ALTER TABLE blobs REPLICA IDENTITY FULL", "CREATE TABLE marker (id int PRIMARY KEY)")
	capt := c.capture(t, "--no-snapshot")
	// 3,125,000 md5s: 100,000,000 bytes.
	exec1(t, c.src, `BEGIN`, `INSERT INTO blobs SELECT i, 'small' FROM generate_series(1, 100) i`,
		`INSERT INTO blobs SELECT 0, string_agg(md5(i::text), '') FROM generate_series(1, 3125000) i`,
		`INSERT INTO blobs SELECT i, 'small' FROM generate_series(101, 200) i`, `COMMIT`)
	c.waitCaptured(t)
	first, last := txnSeqs(t, c.nats.ClientURL())
	t.Logf("the transaction takes stream sequences %d..%d", first, last)

	app := c.apply(t, "--skip-snapshot")
	cons := consumerOf(t, c.nats.ClientURL(), apply.ConsumerName("r1"))
	killedAt := uint64(0)
	for end := time.Now().Add(2 * time.Minute); killedAt == 0; {
		if time.Now().After(end) {
			t.Fatal("apply received no piece of the value in 2 minutes")
		}
		ci, err := cons.Info(context.Background())
		if err == nil && ci.Delivered.Stream > first+2 {
			app.Kill()
			killedAt = ci.Delivered.Stream
		}
		time.Sleep(5 * time.Millisecond)
	}
	applied := queryInt(t, c.dst, "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied")
	t.Logf("apply killed with sequence %d delivered; the target's position is %d", killedAt, applied)
	if applied >= int64(last) {
		t.Fatalf("apply committed the transaction (position %d) before it was killed: make the value larger", applied)
	}
	if n := queryInt(t, c.dst, "SELECT count(*) FROM blobs"); n != 0 {
		t.Fatalf("the target holds %d rows of the transaction before it was committed", n)
	}

	app = c.apply(t, "--skip-snapshot")
	exec1(t, c.src, "INSERT INTO marker VALUES (1)")
	waitSame(t, 3*time.Minute, c.src, c.dst)
	if got, want := queryInt(t, c.dst, "SELECT count(*) FROM blobs"), int64(201); got != want {
		t.Errorf("replica holds %d rows of the transaction, want %d", got, want)
	}
	// Capture holds the row pgoutput delivered (100 MB) and the pieces in
	// flight (--window-bytes, 64 MB); apply the value it puts together
	// and the statement that carries it to the target.
	boundRSS(t, "a 100 MB value", capt, 320<<20, app, 400<<20)
	capt.Stop(t)
	app.Stop(t)
}

// txnSeqs returns the stream sequences of the first and last message of
// the transaction of most chunks in the source's stream.
func txnSeqs(t *testing.T, url string) (first, last uint64) {
	t.Helper()
	ctx := context.Background()
	st, err := natsJS(t, url).Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var most uint32
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil {
			t.Fatalf("stream sequence %d: %v", seq, err)
		}
		env := envs[0]
		if env.Kind != stream.KindTxn || !env.Last() || env.Chunk < most {
			continue
		}
		most, first, last = env.Chunk, seq-uint64(env.Chunk), seq
	}
	if most < 3 {
		t.Fatalf("no transaction of several chunks in the stream")
	}
	return first, last
}

// consumerOf opens a durable consumer of the source's stream by name,
// once it exists.
func consumerOf(t *testing.T, url, name string) jetstream.Consumer {
	t.Helper()
	ctx := context.Background()
	js := natsJS(t, url)
	var cons jetstream.Consumer
	waitFor(t, 30*time.Second, "consumer "+name, func() (bool, string) {
		var err error
		cons, err = js.Consumer(ctx, stream.StreamName("src"), name)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return cons
}

// TestSnapshot_LargeRows: a primary whose tables hold rows larger than a
// NATS message (with nats-server's default max_payload) is snapshotted by
// two workers; a region bootstrapped from the snapshot is identical, and
// so is a database `pgjet replay` builds from the streams.
func TestSnapshot_LargeRows(t *testing.T) {
	t.Parallel()
	c := newDefaultPayloadCluster(t)
	exec1(t, c.src, `CREATE TABLE docs (id int PRIMARY KEY, body text, img bytea, doc jsonb, note text)`,
		`CREATE TABLE small (id int PRIMARY KEY, v text)`, `CREATE TABLE nokey (n int, body text)`, `ALTER TABLE nokey REPLICA IDENTITY FULL`,
		`INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 20000) i`,
		`INSERT INTO docs VALUES (1, `+bigText+`, `+bigBytea+`, `+bigJSONB+`, 'one')`,
		`INSERT INTO docs VALUES (2, `+bigText+` || 'two', NULL, NULL, 'two')`,
		`INSERT INTO docs SELECT i, 'small ' || i, '\x01', '{}', NULL FROM generate_series(3, 500) i`,
		`INSERT INTO nokey SELECT i, `+bigText+` || i FROM generate_series(1, 3) i`,
		`INSERT INTO nokey SELECT i, 'n' FROM generate_series(4, 3000) i`)
	capt := c.capture(t, "--snapshot-workers", "2")
	capt.waitLog(t, "snapshot complete")
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	app.waitLog(t, "snapshot restored; following changes")
	exec1(t, c.src, `UPDATE docs SET note = 'after' WHERE id = 1`, `INSERT INTO docs VALUES (600, `+bigText+`, NULL, NULL, 'new')`)
	waitSame(t, 3*time.Minute, c.src, c.dst)
	app.Stop(t)

	exec1(t, c.dst, "CREATE DATABASE replayed")
	url := c.replica.URL("replayed")
	if code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", url); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, tail(out, 3000))
	}
	waitSame(t, 5*time.Second, c.src, url)
	capt.Stop(t)
}

func md5hex(s string) string {
	return fmt.Sprintf("%x", md5.Sum([]byte(s)))
}

// TestSnapshot_KillMidLargeRow: capture is killed with SIGKILL while it
// publishes the messages of a row larger than a message in the snapshot,
// and restarted: it resumes the snapshot and copies that table again. A
// region restored from it drops the unfinished row and ends identical.
func TestSnapshot_KillMidLargeRow(t *testing.T) {
	t.Parallel()
	c := newDefaultPayloadCluster(t)
	exec1(t, c.src, `CREATE TABLE small (id int PRIMARY KEY, v text)`, `CREATE TABLE docs (id int PRIMARY KEY, img bytea)`,
		`INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 1000) i`,
		`INSERT INTO docs VALUES (1, `+bigBytea+`)`, `INSERT INTO docs SELECT i, '\x01' FROM generate_series(2, 100) i`)
	nc, err := nats.Connect(c.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cut := make(chan struct{}, 1024)
	sub, err := nc.Subscribe("pgjetsnap.src.*.d", func(m *nats.Msg) {
		if m.Header.Get(stream.SnapMoreHeader) != "" {
			select {
			case cut <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s"}
	capt := start(t, "pgjet-capture", bins.capture, args...)
	for n := 0; n < 3; n++ {
		select {
		case <-cut:
		case <-time.After(90 * time.Second):
			t.Fatalf("the snapshot cut no row in 90s:\n%s", tail(capt.Output(), 2048))
		}
	}
	capt.Kill()
	_ = sub.Unsubscribe()
	last := lastMsg(t, c.nats.ClientURL(), stream.SnapshotStreamName("src"))
	if last.Header.Get(stream.SnapMoreHeader) == "" {
		t.Fatalf("the snapshot stream ends with a %s message, not inside the large row: make it larger", last.Header.Get(stream.SnapKindHeader))
	}

	capt = start(t, "pgjet-capture", bins.capture, args...)
	capt.waitLog(t, "snapshot complete")
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	app.waitLog(t, "snapshot restored; following changes")
	if !strings.Contains(app.Output(), "a row the snapshot's capture left unfinished is dropped") {
		t.Errorf("apply did not drop the unfinished row:\n%s", tail(app.Output(), 3000))
	}
	waitSame(t, time.Minute, c.src, c.dst)
	app.Stop(t)
	capt.Stop(t)
}
