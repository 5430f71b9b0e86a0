package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// TestCapture_KillMidTransactionNewChunking: capture is killed with
// SIGKILL after publishing some chunks of a large transaction, and
// restarted with another --chunk-bytes within JetStream's dedup window.
// The re-sent transaction is cut differently; none of its chunks may be
// taken for one of the first session's (they would splice the two
// cuttings into one transaction: rows lost or applied twice). The keyless
// table shows either.
func TestCapture_KillMidTransactionNewChunking(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, first, second string }{
		{"larger", "4096", "65536"},
		{"smaller", "65536", "4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, "CREATE TABLE nokey (n int, pad text)", "ALTER TABLE nokey REPLICA IDENTITY FULL",
				"CREATE TABLE marker (id int PRIMARY KEY)")
			args := []string{"--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--heartbeat", "1s", "--no-snapshot"}
			capt := start(t, "pgjet-capture", bins.capture, append(args, "--chunk-bytes", tc.first)...)
			capt.waitLog(t, "capture started")
			app := c.apply(t, "--skip-snapshot")

			// The kill follows the third chunk of the large transaction by a
			// few milliseconds, long before its last.
			chunks, unsubscribe := watchChunks(t, c.nats.ClientURL())
			exec1(t, c.src, "INSERT INTO nokey SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i")
			deadline := time.After(60 * time.Second)
		wait:
			for {
				select {
				case env := <-chunks:
					if env.Chunk >= 3 && !env.Last() {
						capt.Kill()
						break wait
					}
				case <-deadline:
					t.Fatalf("capture published no third chunk of the large transaction in 60s:\n%s", tail(capt.Output(), 2048))
				}
			}
			unsubscribe()
			if last := lastEnvelope(t, c.nats.ClientURL()); last.Kind != stream.KindTxn || last.Last() {
				t.Fatalf("the stream ends with %+v, not inside the large transaction: make it larger", last)
			}

			capt = start(t, "pgjet-capture", bins.capture, append(args, "--chunk-bytes", tc.second)...)
			capt.waitLog(t, "capture started")
			c.passMarker(t, 90*time.Second)
			if got, want := queryInt(t, c.dst, "SELECT count(*) FROM nokey"), int64(20000); got != want {
				t.Errorf("replica holds %d rows of the large transaction, want %d", got, want)
			}
			if n := queryInt(t, c.dst, "SELECT count(*) FROM (SELECT n FROM nokey GROUP BY n HAVING count(*) > 1) d"); n != 0 {
				t.Errorf("replica holds %d rows twice", n)
			}
			waitSame(t, 30*time.Second, c.src, c.dst)
			capt.Stop(t)
			app.Stop(t)
		})
	}
}

// passMarker writes a row into table marker on the source and waits for
// it on the replica: what the source committed before is applied.
func (c *cluster) passMarker(t *testing.T, timeout time.Duration) {
	t.Helper()
	exec1(t, c.src, "INSERT INTO marker VALUES (1)")
	waitFor(t, timeout, "the marker on the replica", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM marker")
		return n == 1, fmt.Sprintf("%d marker rows", n)
	})
}

// watchChunks subscribes to the source's transaction subject: every
// message capture publishes there, stored or not, sends its (last)
// envelope to the channel, until unsubscribe is called.
func watchChunks(t *testing.T, url string) (envs <-chan *stream.Envelope, unsubscribe func()) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan *stream.Envelope, 1024)
	sub, err := nc.Subscribe(stream.TxnSubject("src"), func(m *nats.Msg) {
		envs, err := stream.DecodeMessage(m.Data)
		if err != nil {
			return
		}
		select {
		case ch <- envs[len(envs)-1]:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return ch, func() { _ = sub.Unsubscribe() }
}

// lastEnvelope is the last envelope of the source's change stream.
func lastEnvelope(t *testing.T, url string) *stream.Envelope {
	t.Helper()
	envs, err := stream.DecodeMessage(lastMsg(t, url, stream.StreamName("src")).Data)
	if err != nil {
		t.Fatal(err)
	}
	return envs[len(envs)-1]
}

// lastMsg is the last message of a stream.
func lastMsg(t *testing.T, url, name string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	st, err := natsJS(t, url).Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
