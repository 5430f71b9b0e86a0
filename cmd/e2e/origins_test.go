package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

// perDatabaseOrigin is the replication origin pgjet writes source's
// changes under in the database at url: one per database, since origins
// are shared by every database of a cluster.
func perDatabaseOrigin(t *testing.T, url, source string) string {
	t.Helper()
	return fmt.Sprintf("pgjet_%s.%d", source, queryInt(t, url, "SELECT oid::bigint FROM pg_database WHERE datname = current_database()"))
}

// rowOrigins lists the replication origins the rows of table were written
// under, by name.
func rowOrigins(t *testing.T, url, table string) string {
	t.Helper()
	return queryString(t, url, `SELECT coalesce(string_agg(DISTINCT coalesce(r.roname, '(none)'), ','), '') FROM `+table+` x
		LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(x.xmin) o ON true LEFT JOIN pg_replication_origin r ON r.roident = o.roident`)
}

// TestReplay_BesideItsApplier: `pgjet replay` into a scratch database of
// the replica's cluster while that region's applier runs. Replication
// origins are shared by a cluster's databases, so the two must write
// under origins of their own: the replay finishes (it used to wait for
// the applier's origin for ever), the applier goes on, and each
// database's rows carry its own origin.
func TestReplay_BesideItsApplier(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	exec1(t, c.src, `UPDATE t SET v = 'changed' WHERE id <= 10`, `INSERT INTO t VALUES (101, 'new')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	c.waitCaptured(t)

	exec1(t, c.dst, "CREATE DATABASE scratch")
	scratch := c.replica.URL("scratch")
	p := start(t, "pgjet replay", bins.pgjet, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", scratch)
	if code := p.Wait(t, 90*time.Second); code != 0 {
		t.Fatalf("replay beside the applier exited %d:\n%s", code, tail(p.Output(), 3000))
	}
	waitSame(t, 10*time.Second, c.src, scratch)

	// The applier kept its origin and goes on.
	exec1(t, c.src, `UPDATE t SET v = 'after the replay' WHERE id = 1`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if got, want := rowOrigins(t, c.dst, "t"), perDatabaseOrigin(t, c.dst, "src"); got != want {
		t.Errorf("the region's rows were written under %q, want %q", got, want)
	}
	if got, want := rowOrigins(t, scratch, "t"), perDatabaseOrigin(t, scratch, "src"); got != want {
		t.Errorf("the replayed rows were written under %q, want %q", got, want)
	}
	app.Stop(t)
	capt.Stop(t)
}

// TestApply_KeepsLegacyOrigin: a target an earlier pgjet applied to holds
// rows written under the origin pgjet_<source>, which every database of
// its cluster shared. The applier of this version writes under an origin
// of the database's own, and still takes the rows of the old one for its
// source's: under keep-local the source's next changes to them apply (none
// is taken for a local write), from the recorded position, with nothing
// applied twice. The old origin stays, since rows name it.
func TestApply_KeepsLegacyOrigin(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL)`, `INSERT INTO acct SELECT i, 0 FROM generate_series(1, 50) i`)
	capt := c.capture(t)
	capt.waitLog(t, "snapshot complete")
	app := c.apply(t, "--conflict", "keep-local")
	app.waitLog(t, "snapshot restored; following changes")
	exec1(t, c.src, `UPDATE acct SET v = v + 1`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)

	// What an earlier pgjet left: the rows carry the origin pgjet_src.
	// Postgres gives a new origin the lowest free roident, so the one the
	// rows name goes to pgjet_src once the applier's own is dropped.
	before := queryInt(t, c.dst, `SELECT max(roident)::bigint FROM pg_replication_origin WHERE roname LIKE 'pgjet\_src%'`)
	exec1(t, c.dst, `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'pgjet\_src%'`,
		`SELECT pg_replication_origin_create('pgjet_src')`)
	if got := queryInt(t, c.dst, `SELECT roident::bigint FROM pg_replication_origin WHERE roname = 'pgjet_src'`); got != before {
		t.Fatalf("pgjet_src got roident %d, not the rows' %d: the test cannot stand for an earlier pgjet's target", got, before)
	}
	if got := rowOrigins(t, c.dst, "acct"); got != "pgjet_src" {
		t.Fatalf("rows written under %q, want pgjet_src", got)
	}
	applied := queryInt(t, c.dst, `SELECT stream_seq FROM pgjet.applied WHERE source = 'src'`)

	app = c.apply(t, "--conflict", "keep-local")
	exec1(t, c.src, `UPDATE acct SET v = v + 10`, `DELETE FROM acct WHERE id = 50`, `INSERT INTO acct VALUES (100, 1)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
		t.Errorf("%d conflicts recorded: rows of the old origin were taken for local writes (%s)", n,
			queryString(t, c.dst, "SELECT string_agg(DISTINCT kind || '/' || decision || '/' || coalesce(local_origin, '?'), ', ') FROM pgjet.conflicts"))
	}
	if got, want := rowOrigins(t, c.dst, "acct"), perDatabaseOrigin(t, c.dst, "src"); got != want {
		t.Errorf("after the upgrade rows were written under %q, want %q", got, want)
	}
	if got := queryInt(t, c.dst, `SELECT stream_seq FROM pgjet.applied WHERE source = 'src'`); got <= applied {
		t.Errorf("applied position %d did not move past %d", got, applied)
	}
	if n := queryInt(t, c.dst, `SELECT count(*) FROM pg_replication_origin WHERE roname = 'pgjet_src'`); n != 1 {
		t.Errorf("the old origin pgjet_src is gone (%d), though rows of other databases may name it", n)
	}
	app.Stop(t)
	capt.Stop(t)
}

// TestApply_UpstreamDomainOnOneDomain: --upstream-domain given where the
// stream itself lives (one domain, no regions) is a configuration error
// no retry cures: one line, exit 1, instead of retrying for ever.
func TestApply_UpstreamDomainOnOneDomain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	c.capture(t, "--no-snapshot")
	args := []string{"--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1", "--upstream-domain", "hub"}
	checkConfig(t, bins.apply, 1, []string{"FAIL  stream PGJET_src", "is not a mirror", "drop --upstream-domain"}, args...)
	app := start(t, "pgjet-apply", bins.apply, args...)
	expectFatal(t, app, "stream PGJET_src exists in this domain and is not a mirror", "drop --upstream-domain")
}

// TestNATS_HTTPURLRefused: an http:// URL is not a NATS URL (nats.go would
// connect to it as nats://). Each daemon refuses it in one line before it
// makes anything: no publication, slot or stream on the source side, no
// schema, consumer or mirror on the target side.
func TestNATS_HTTPURLRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	httpURL := strings.Replace(c.nats.ClientURL(), "nats://", "http://", 1)
	check := func(p *proc) {
		t.Helper()
		if code := p.Wait(t, 30*time.Second); code == 0 {
			t.Fatalf("%s accepted --nats %s:\n%s", p.name, httpURL, p.Output())
		}
		out := strings.TrimSpace(p.Output())
		if lines := strings.Split(out, "\n"); len(lines) != 1 || !strings.Contains(out, "--nats") || !strings.Contains(out, "nats://") {
			t.Errorf("%s did not say in one line that --nats needs nats://:\n%s", p.name, out)
		}
	}
	check(start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", httpURL, "--name", "src"))
	check(start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", httpURL, "--name", "src", "--region", "r1", "--upstream-domain", "hub"))
	for what, sql := range map[string]string{
		"replication slots": "SELECT count(*) FROM pg_replication_slots",
		"publications":      "SELECT count(*) FROM pg_publication",
		"schema pgjet":      "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgjet'",
	} {
		for _, db := range []string{c.src, c.dst} {
			if n := queryInt(t, db, sql); n != 0 {
				t.Errorf("%d %s left on %s", n, what, db)
			}
		}
	}
	js := natsJS(t, c.nats.ClientURL())
	names := js.StreamNames(context.Background())
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if err := names.Err(); err != nil && err != jetstream.ErrEndOfData {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("streams made through an http:// URL: %v (want none; e.g. %s)", got, stream.StreamName("src"))
	}
}
