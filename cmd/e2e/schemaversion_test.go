package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgjet/pgjet/apply"
)

// unversionedLayout is, verbatim, what pgjet-apply ran on every start (and
// a restore before it) when its tables had no version: apply's setupSQL
// and restoreSetupSQL as of commit 696cbf3. Every target an earlier pgjet
// made has these tables; keep this text as it is.
const unversionedLayout = `
CREATE SCHEMA IF NOT EXISTS pgjet;
CREATE TABLE IF NOT EXISTS pgjet.applied (
	source      text PRIMARY KEY,
	commit_lsn  pg_lsn NOT NULL,
	end_lsn     pg_lsn NOT NULL,
	stream_seq  bigint NOT NULL,
	commit_time timestamptz,
	applied_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE pgjet.applied ADD COLUMN IF NOT EXISTS source_lsn pg_lsn;
CREATE TABLE IF NOT EXISTS pgjet.conflicts (
	id          bigserial PRIMARY KEY,
	at          timestamptz NOT NULL DEFAULT now(),
	source      text NOT NULL,
	kind        text NOT NULL,
	table_name  text NOT NULL,
	commit_lsn  pg_lsn NOT NULL,
	key         jsonb,
	local_row   jsonb,
	remote_row  jsonb,
	decision    text NOT NULL
);
ALTER TABLE pgjet.conflicts
	ADD COLUMN IF NOT EXISTS local_origin text,
	ADD COLUMN IF NOT EXISTS local_commit_time timestamptz,
	ADD COLUMN IF NOT EXISTS remote_origin text,
	ADD COLUMN IF NOT EXISTS remote_commit_time timestamptz;
CREATE TABLE IF NOT EXISTS pgjet.restore (
	source      text PRIMARY KEY,
	snapshot    text NOT NULL,
	stream_seq  bigint NOT NULL,
	done        boolean NOT NULL DEFAULT false,
	started_at  timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS pgjet.snapshot_tables (
	source      text NOT NULL,
	schema_name text NOT NULL,
	table_name  text NOT NULL,
	lsn         pg_lsn NOT NULL,
	PRIMARY KEY (source, schema_name, table_name)
);
ALTER TABLE pgjet.restore ADD COLUMN IF NOT EXISTS rows_only boolean NOT NULL DEFAULT false;`

// TestApply_UpgradesUnversionedTarget: a target whose pgjet tables an
// earlier, unversioned pgjet made (with a conflict it recorded) is
// upgraded in place by the first start of this pgjet-apply: the version
// is recorded, and what the tables held stays. Then a target the earlier
// pgjet last ran on, holding a restore and a position, is upgraded too:
// the applier resumes from its position, restores nothing again, and
// applies nothing twice (a keyless table would show a duplicate).
func TestApply_UpgradesUnversionedTarget(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	exec1(t, c.src, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `CREATE TABLE h (n int, v text)`, `ALTER TABLE h REPLICA IDENTITY FULL`,
		`INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i`, `INSERT INTO h SELECT i, 'h' FROM generate_series(1, 100) i`)
	exec1(t, c.dst, unversionedLayout,
		`INSERT INTO pgjet.conflicts (source, kind, table_name, commit_lsn, key, decision, remote_origin)
			VALUES ('src', 'update_missing', 'public.t', '0/16B3748', '{"id": 7}', 'skipped', 'src')`)
	conflict := `SELECT count(*) FROM pgjet.conflicts WHERE id = 1 AND kind = 'update_missing' AND key = '{"id": 7}' AND remote_origin = 'src'`
	version := `SELECT coalesce(max(version), 0) FROM pgjet.schema_version`
	want := int64(apply.SchemaVersion())

	c.capture(t)
	app := c.apply(t)
	app.waitLog(t, "snapshot restored; following changes")
	waitSame(t, 60*time.Second, c.src, c.dst)
	if got := queryInt(t, c.dst, version); got != want {
		t.Errorf("schema version after the first start = %d, want %d", got, want)
	}
	if n := queryInt(t, c.dst, conflict); n != 1 {
		t.Errorf("the conflict the earlier pgjet recorded is gone after the upgrade (%d rows match)", n)
	}
	app.Stop(t)

	// The earlier pgjet ran last: its tables, no version.
	exec1(t, c.dst, `DROP TABLE pgjet.schema_version`)
	restore := `SELECT snapshot || ' ' || stream_seq || ' ' || started_at || ' ' || done FROM pgjet.restore WHERE source = 'src'`
	restored := queryString(t, c.dst, restore)
	seq := queryInt(t, c.dst, `SELECT stream_seq FROM pgjet.applied WHERE source = 'src'`)
	exec1(t, c.src, `INSERT INTO t SELECT i, 'w' FROM generate_series(101, 200) i`, `UPDATE t SET v = 'u' WHERE id <= 50`,
		`INSERT INTO h SELECT i, 'g' FROM generate_series(101, 200) i`)

	c.apply(t)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if got := queryInt(t, c.dst, version); got != want {
		t.Errorf("schema version after upgrading a target with a position = %d, want %d", got, want)
	}
	if got := queryString(t, c.dst, restore); got != restored {
		t.Errorf("pgjet.restore went from %q to %q: the upgraded target was restored again", restored, got)
	}
	if got := queryInt(t, c.dst, `SELECT stream_seq FROM pgjet.applied WHERE source = 'src'`); got <= seq {
		t.Errorf("applied stream seq %d, want past %d", got, seq)
	}
	if n := queryInt(t, c.dst, conflict); n != 1 {
		t.Errorf("the conflict the earlier pgjet recorded is gone after the second upgrade (%d rows match)", n)
	}
}

// TestApply_RefusesNewerSchemaVersion: a target whose pgjet tables a newer
// pgjet migrated past what this one knows is left alone: pgjet-apply and
// pgjet replay exit 1 with one line naming both versions and the fix, and
// --check-config fails on it.
func TestApply_RefusesNewerSchemaVersion(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	newer := apply.SchemaVersion() + 1
	exec1(t, c.dst, `CREATE SCHEMA pgjet`,
		`CREATE TABLE pgjet.schema_version (version integer PRIMARY KEY, what text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		fmt.Sprintf(`INSERT INTO pgjet.schema_version (version, what) VALUES (%d, 'a layout from the future')`, newer))
	wantLine := fmt.Sprintf("are at schema version %d, newer than version %d that this pgjet knows", newer, apply.SchemaVersion())

	p := start(t, "pgjet-apply", bins.apply, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	if code := p.Wait(t, 60*time.Second); code != 1 {
		t.Fatalf("pgjet-apply exited %d on a newer schema version, want 1:\n%s", code, p.Output())
	}
	checkOneLine(t, "pgjet-apply", p.Output(), wantLine)

	code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.dst)
	if code != 1 {
		t.Fatalf("pgjet replay exited %d on a newer schema version, want 1:\n%s", code, out)
	}
	checkOneLine(t, "pgjet replay", out, wantLine)

	checkConfig(t, bins.apply, 1, []string{wantLine}, "--db", c.dst, "--nats", c.nats.ClientURL(), "--name", "src", "--region", "r1")
	if n := queryInt(t, c.dst, `SELECT count(*) FROM pg_class WHERE relnamespace = 'pgjet'::regnamespace AND relname <> 'schema_version' AND relkind = 'r'`); n != 0 {
		t.Errorf("pgjet made %d tables in a schema of a newer version", n)
	}
}

// checkOneLine checks that out holds exactly one plain (not JSON log)
// line, saying want and how to fix it.
func checkOneLine(t *testing.T, name, out, want string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], want) || !strings.Contains(lines[0], "upgrade pgjet-apply") {
		t.Errorf("%s printed %q, want one line saying %q and to upgrade pgjet-apply", name, lines, want)
	}
}
