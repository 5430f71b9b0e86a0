package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
)

// newPayloadCluster is newCluster with a NATS server whose max_payload is
// maxPayload: small values exercise the limits of pieces quickly.
func newPayloadCluster(t *testing.T, maxPayload int32, schemaSQL ...string) *cluster {
	t.Helper()
	return newClusterNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", MaxPayload: maxPayload}, schemaSQL...)
}

// TestCapture_RowsAtMessageLimitWithLongOrigin: rows whose size lies
// right at the limit of one message (just below it, and just above it so
// that a value goes in pieces beside one that fills the chunk), written
// under a long replication origin name: every one is published, none
// makes capture stop for a message larger than max_payload. The origin
// and source names travel in every chunk's header, so the size capture
// plans a chunk by must count them.
func TestCapture_RowsAtMessageLimitWithLongOrigin(t *testing.T) {
	t.Parallel()
	c := newPayloadCluster(t, 64<<10, "CREATE TABLE one (n int, body text)", "CREATE TABLE two (n int, a text, b text)",
		"ALTER TABLE one REPLICA IDENTITY FULL", "ALTER TABLE two REPLICA IDENTITY FULL")
	capt := c.capture(t, "--no-snapshot")
	app := c.apply(t, "--skip-snapshot")
	origin := strings.Repeat("o", 200)
	sqls := []string{
		"SELECT pg_replication_origin_create('" + origin + "')",
		"SELECT pg_replication_origin_session_setup('" + origin + "')",
	}
	// msgMax is 60 KiB; one message holds a row of about that much less
	// the envelope's header: sweep the sizes around it.
	for n, size := 0, 60900; size <= 61440; n, size = n+1, size+8 {
		sqls = append(sqls,
			fmt.Sprintf("INSERT INTO one VALUES (%d, repeat('x', %d))", n, size),
			fmt.Sprintf("INSERT INTO two VALUES (%d, repeat('a', %d), repeat('b', 100000))", n, size))
	}
	exec1(t, c.src, sqls...)
	waitSame(t, 2*time.Minute, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestSnapshot_SmallMaxPayload: with a NATS server whose max_payload is
// 16 KiB, a snapshot (rows larger than a message among small ones) and
// the changes after it, one with a value in pieces, reach the replica.
func TestSnapshot_SmallMaxPayload(t *testing.T) {
	t.Parallel()
	c := newPayloadCluster(t, 16<<10)
	exec1(t, c.src, "CREATE TABLE docs (id int PRIMARY KEY, body text)",
		"INSERT INTO docs SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 2000) i",
		"INSERT INTO docs VALUES (0, repeat(md5('x'), 2000))")
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	app := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	app.waitLog(t, "snapshot restored; following changes")
	exec1(t, c.src, "INSERT INTO docs VALUES (-1, repeat(md5('y'), 3000))")
	waitSame(t, time.Minute, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestPipeline_MaxPayloadAbove32MB: with a NATS server whose max_payload
// is 40 MB (nats-server takes up to 64 MB), a row of 34 MB replicates.
// JetStream's file store refuses a message larger than 32 MiB ("message
// too large") and the applier pulls at most 32 MiB at a time, so capture
// must not make a message that large because max_payload allows it.
func TestPipeline_MaxPayloadAbove32MB(t *testing.T) {
	t.Parallel()
	c := newPayloadCluster(t, 40<<20, "CREATE TABLE docs (id int PRIMARY KEY, body text)", "CREATE TABLE marker (id int PRIMARY KEY)")
	capt := c.capture(t, "--no-snapshot")
	app := c.apply(t, "--skip-snapshot")
	// 1,070,000 md5s: 34,240,000 bytes.
	exec1(t, c.src, "INSERT INTO docs SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 1070000) i")
	c.passMarker(t, 90*time.Second)
	waitSame(t, 30*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestRegions_SmallerRegionMaxPayload: a region whose nats-server has a
// smaller max_payload (64 KiB) than the hub's (256 KiB). A leafnode drops
// its link to the hub on a message larger than its own max_payload, so
// capture, told the regions' smallest max_payload (--max-message-bytes),
// cuts messages to what every region takes: the region's replica ends
// identical, rows with values in pieces included.
func TestRegions_SmallerRegionMaxPayload(t *testing.T) {
	t.Parallel()
	hub := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub", LeafListenPort: -1, MaxPayload: 256 << 10})
	region := local.NewTestNATS(t, local.NATSOptions{Name: "r1", Domain: "r1", LeafRemotes: []string{hub.LeafURL()}, MaxPayload: 64 << 10})
	src := local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"}).URL("postgres")
	dst := local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-r1"}).URL("postgres")
	for _, url := range []string{src, dst} {
		exec1(t, url, "CREATE TABLE docs (id int PRIMARY KEY, body text)")
	}
	capt := start(t, "pgjet-capture", bins.capture, "--db", src, "--nats", hub.ClientURL(), "--name", "src",
		"--heartbeat", "1s", "--no-snapshot", "--max-message-bytes", "65536")
	capt.waitLog(t, "capture started")
	app := start(t, "pgjet-apply r1", bins.apply, "--db", dst, "--nats", region.ClientURL(), "--name", "src", "--region", "r1",
		"--upstream-domain", "hub", "--skip-snapshot")
	app.waitLog(t, "apply started")
	exec1(t, src, "INSERT INTO docs SELECT i, repeat(md5(i::text), 10) FROM generate_series(1, 100) i",
		"INSERT INTO docs VALUES (0, repeat(md5('x'), 6000))", // 192 KB
		"INSERT INTO docs SELECT i, repeat(md5(i::text), 10) FROM generate_series(101, 200) i")
	waitSame(t, 90*time.Second, src, dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestCapture_PiecesOutlastSenderTimeout: publishing the pieces of a
// value takes longer than the source's wal_sender_timeout (1s here, 60s
// by default; a 1 GB value takes about that long). Capture reads nothing
// from the slot meanwhile, so it must still tell Postgres it is alive:
// otherwise the walsender ends the session, the transaction is read
// again, and again, and never reaches the replica.
func TestCapture_PiecesOutlastSenderTimeout(t *testing.T) {
	t.Parallel()
	c := newPayloadCluster(t, 12<<10, "CREATE TABLE docs (id int PRIMARY KEY, body text)", "CREATE TABLE marker (id int PRIMARY KEY)")
	exec1(t, c.src, "ALTER SYSTEM SET wal_sender_timeout = '1s'", "SELECT pg_reload_conf()")
	// One message in flight: each piece waits for its ack, and a value
	// of 8 MB takes about 1000 of them.
	capt := c.capture(t, "--no-snapshot", "--window", "1", "--status-interval", "200ms")
	app := c.apply(t, "--skip-snapshot")
	exec1(t, c.src, "BEGIN",
		"INSERT INTO docs SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 250000) i",
		"INSERT INTO docs SELECT 2, string_agg(md5((-i)::text), '') FROM generate_series(1, 250000) i",
		"INSERT INTO docs SELECT 3, string_agg(md5((i*7)::text), '') FROM generate_series(1, 250000) i",
		"COMMIT")
	c.passMarker(t, 2*time.Minute)
	waitSame(t, 30*time.Second, c.src, c.dst)
	if n := strings.Count(capt.Output(), "capture interrupted, retrying"); n > 0 {
		t.Errorf("capture restarted %d times:\n%s", n, tail(capt.Output(), 3000))
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestSequences_MoreThanAMessage: the source's sequence values travel in
// a logical message at heartbeats; a source with more sequences than one
// message holds (1500 under a 64 KiB max_payload; about 15000 under the
// default 1 MB, a schema per tenant) must not stop capture, and the
// replica's sequences follow.
func TestSequences_MoreThanAMessage(t *testing.T) {
	t.Parallel()
	c := newPayloadCluster(t, 64<<10, `DO $$ BEGIN FOR i IN 1..1500 LOOP
		EXECUTE format('CREATE SEQUENCE tenant_sequence_number_%s', i);
		PERFORM nextval(format('tenant_sequence_number_%s', i)); END LOOP; END $$`)
	capt := c.capture(t, "--no-snapshot")
	app := c.apply(t, "--skip-snapshot")
	exec1(t, c.src, "SELECT setval('tenant_sequence_number_1500', 4242)")
	waitFor(t, time.Minute, "the last sequence's value on the replica", func() (bool, string) {
		checkDaemons(t)
		got := queryInt(t, c.dst, "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = 'tenant_sequence_number_1500'")
		return got == 4242, fmt.Sprintf("last_value %d", got)
	})
	capt.Stop(t)
	app.Stop(t)
}
