package local

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/rs/zerolog"
)

// NoServersEnv names the variable make unit sets: while it is set, every
// start of a Postgres cluster or a nats-server fails, so a test that needs
// a server cannot slip into the fast run unnoticed.
const NoServersEnv = "PGJET_TEST_NO_SERVERS"

// serversAllowed is nil unless NoServersEnv is set.
func serversAllowed(what string) error {
	if os.Getenv(NoServersEnv) == "" {
		return nil
	}
	return fmt.Errorf("this test starts %s but %s is set (make unit runs only tests that need no server): name the test in UNIT_SKIP in the Makefile", what, NoServersEnv)
}

// TestLogger returns a logger writing through t.Log at Info level, so output
// shows only for failing or verbose tests. nats-server's own logs are at
// Debug and therefore dropped.
func TestLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// NewTestPostgres starts a cluster for the test and stops it (removing its
// directory) in t.Cleanup. A failure to start, including a missing
// PostgreSQL installation, fails the test with the reason. When the test has
// failed, the tail of the server log is printed before it is removed.
func NewTestPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	p, err := StartPostgres(context.Background(), opts, TestLogger(t))
	if err != nil {
		t.Fatalf("start postgres %q: %v", opts.Name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres %s log %s (tail):\n%s", p.Name(), p.LogPath(), p.LogTail(4096))
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop postgres %s: %v", p.Name(), err)
		}
	})
	return p
}

// NewTestNATS starts an embedded nats-server for the test and closes it
// (removing a store directory it created) in t.Cleanup.
func NewTestNATS(t testing.TB, opts NATSOptions) *NATS {
	t.Helper()
	n, err := StartNATS(opts, TestLogger(t))
	if err != nil {
		t.Fatalf("start nats-server %q: %v", opts.Name, err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close nats-server %s: %v", n.opts.Name, err)
		}
	})
	return n
}

// NewTestTopology starts a hub and regions for the test and shuts them down
// in t.Cleanup.
func NewTestTopology(t testing.TB, opts TopologyOptions) *Topology {
	t.Helper()
	top, err := StartTopology(opts, TestLogger(t))
	if err != nil {
		t.Fatalf("start NATS topology: %v", err)
	}
	t.Cleanup(top.Shutdown)
	return top
}
