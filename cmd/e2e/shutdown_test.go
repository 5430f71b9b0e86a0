package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestApply_ShutdownBlackholedTarget: when the target stops answering
// (packets dropped, no reset) with a batch in flight, SIGTERM still ends
// pgjet-apply within its --shutdown-timeout, saying the target did not
// answer; a restart over a working link applies what the cut-off batch
// held.
func TestApply_ShutdownBlackholedTarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	px, err := local.StartProxy(0, "127.0.0.1:"+strconv.Itoa(c.replica.Port()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	proxied := *c
	proxied.dst = strings.Replace(c.dst, fmt.Sprintf(":%d/", c.replica.Port()), fmt.Sprintf(":%d/", px.Port()), 1)
	c.capture(t)
	app := proxied.apply(t, "--shutdown-timeout", "2s")
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
	waitSame(t, 60*time.Second, c.src, c.dst)

	js := natsJS(t, c.nats.ClientURL())
	st, err := js.Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 { return streamLastSeq(t, js, "src") }
	before := lastSeq()
	px.Blackhole()
	exec1(t, c.src, "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g")
	var last uint64
	waitFor(t, 30*time.Second, "the transaction in the stream", func() (bool, string) {
		last = lastSeq()
		return last > before, fmt.Sprintf("stream ends at %d", last)
	})
	waitFor(t, 30*time.Second, "apply to receive the transaction the target cannot take", func() (bool, string) {
		cons, err := st.Consumer(ctx, apply.ConsumerName("r1"))
		if err != nil {
			return false, err.Error()
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return ci.Delivered.Stream >= last, fmt.Sprintf("delivered through %d, want %d", ci.Delivered.Stream, last)
	})

	app.expectExit = true
	stopped := time.Now()
	_ = app.cmd.Process.Signal(syscall.SIGTERM)
	// 2s of --shutdown-timeout, and slack for a loaded machine.
	if code := app.Wait(t, 12*time.Second); code != 0 {
		t.Errorf("pgjet-apply exited %d after SIGTERM, want 0", code)
	}
	t.Logf("exited %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	if out := app.Output(); !strings.Contains(out, "did not answer") {
		t.Errorf("pgjet-apply did not say the target stopped answering:\n%s", tail(out, 2000))
	}

	if err := px.Heal(); err != nil {
		t.Fatal(err)
	}
	proxied.apply(t)
	waitSame(t, 60*time.Second, c.src, c.dst)
}
