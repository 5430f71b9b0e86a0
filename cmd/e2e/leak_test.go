package e2e

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sessionGoroutines counts the live goroutines an apply session started.
func sessionGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "created by github.com/pgjet/pgjet/apply.(*Applier).session")
}

// TestApplier_SessionErrorsLeakNothing runs an applier in process against
// a target that refuses every row with a retryable error while a backlog
// of chunks waits: each session fails, and the goroutines it started must
// end with it, not pile up, one per retry, for the life of the process.
func TestApplier_SessionErrorsLeakNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	exec1(t, c.dst, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN RAISE EXCEPTION 'test: the target refuses rows for now' USING ERRCODE = '40001'; END$$`,
		"CREATE TRIGGER refuse BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION refuse()",
		"ALTER TABLE t ENABLE ALWAYS TRIGGER refuse")
	c.capture(t, "--chunk-bytes", "1024")
	// A few hundred chunks: far more than the session buffers.
	exec1(t, c.src, "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g")
	ctx := context.Background()
	st, err := natsJS(t, c.nats.ClientURL()).Stream(ctx, stream.StreamName("src"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the transaction's chunks in the stream", func() (bool, string) {
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= 200, fmt.Sprintf("%d messages", info.State.Msgs)
	})

	cfg := apply.DefaultConfig()
	cfg.DB, cfg.NATS, cfg.Name, cfg.Region = c.dst, c.nats.ClientURL(), "src", "r1"
	cfg.RetryMax = 100 * time.Millisecond
	cfg.ProgressInterval = 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- apply.New(cfg, zerolog.New(&logs)).Run(actx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("applier: %v", err)
		}
	})

	const sessions = 6
	waitFor(t, 60*time.Second, fmt.Sprintf("%d failed sessions", sessions), func() (bool, string) {
		n := strings.Count(logs.String(), "apply interrupted, retrying")
		return n >= sessions, fmt.Sprintf("%d failed sessions; log tail: %s", n, tail(logs.String(), 1000))
	})
	if !strings.Contains(logs.String(), "40001") {
		t.Fatalf("sessions failed for another reason than the refused rows:\n%s", tail(logs.String(), 2000))
	}
	// At most the current session's own.
	waitFor(t, 10*time.Second, "failed sessions' goroutines to end", func() (bool, string) {
		n := sessionGoroutines()
		return n <= 1, fmt.Sprintf("%d goroutines started by sessions are alive after %d failed sessions", n, sessions)
	})

	exec1(t, c.dst, "DROP TRIGGER refuse ON t")
	waitSame(t, 60*time.Second, c.src, c.dst)
}
