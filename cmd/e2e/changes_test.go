package e2e

import (
	"testing"
	"time"
)

// TestChanges_TOAST: updating a small column of rows with large TOASTed
// values sends them as unchanged ('u'); the replica keeps its copy intact,
// and large text and jsonb values round-trip exactly.
func TestChanges_TOAST(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE docs (id int PRIMARY KEY, counter int, body text, meta jsonb, raw bytea)`,
		`CREATE TABLE docs_full (id int, counter int, body text)`, `ALTER TABLE docs_full REPLICA IDENTITY FULL`)
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src,
		// Random text does not compress: it is stored out of line (TOAST).
		`INSERT INTO docs SELECT g, 0, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 4000)),
			(SELECT jsonb_agg(jsonb_build_object('k', md5(random()::text), 'n', i)) FROM generate_series(1, 3000) i),
			decode((SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 2000)), 'hex') FROM generate_series(1, 5) g`,
		`INSERT INTO docs_full SELECT g, 0, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 4000)) FROM generate_series(1, 3) g`,
		`UPDATE docs SET counter = counter + 1`,
		`UPDATE docs SET counter = counter + 1, meta = meta || '{"edited": true}' WHERE id = 2`,
		`UPDATE docs_full SET counter = 5 WHERE id = 1`,
		`DELETE FROM docs_full WHERE id = 2`,
	)
	waitSame(t, 60*time.Second, c.src, c.dst)
	if n := queryInt(t, c.dst, "SELECT min(length(body)) FROM docs"); n != 128000 {
		t.Errorf("body length on the replica = %d, want 128000", n)
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestChanges_IdentityModes covers every replica identity: default (primary
// key), USING INDEX, FULL with duplicates, and NOTHING (inserts only,
// published as such: capture refuses to publish its updates, which
// Postgres would then refuse).
func TestChanges_IdentityModes(t *testing.T) {
	t.Parallel()
	c := newCluster(t,
		`CREATE TABLE by_index (id int NOT NULL, code text NOT NULL, v int)`,
		`CREATE UNIQUE INDEX by_index_code ON by_index (code)`,
		`ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code`,
		`CREATE TABLE full_dups (a int, b text)`, `ALTER TABLE full_dups REPLICA IDENTITY FULL`,
		`CREATE TABLE nothing (a int, b text)`, `ALTER TABLE nothing REPLICA IDENTITY NOTHING`,
	)
	capt := c.capture(t, "--keyless-table", "public.nothing=inserts-only")
	app := c.apply(t)
	exec1(t, c.src,
		`INSERT INTO by_index SELECT g, 'c'||g, g FROM generate_series(1, 50) g`,
		`UPDATE by_index SET v = -v WHERE id % 2 = 0`,
		`UPDATE by_index SET code = 'renamed'||id WHERE id % 5 = 0`,
		`DELETE FROM by_index WHERE id % 7 = 0`,
		`INSERT INTO full_dups SELECT 1, 'same' FROM generate_series(1, 5)`,
		`INSERT INTO full_dups VALUES (2, NULL), (2, NULL)`,
		`UPDATE full_dups SET b = 'one changed' WHERE ctid = (SELECT ctid FROM full_dups WHERE a = 1 LIMIT 1)`,
		`DELETE FROM full_dups WHERE ctid IN (SELECT ctid FROM full_dups WHERE a = 1 AND b = 'same' LIMIT 2)`,
		`UPDATE full_dups SET b = 'was null' WHERE a = 2`,
		`INSERT INTO nothing VALUES (1, 'only inserts')`,
	)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

// TestChanges_Truncate: TRUNCATE of several tables at once, with CASCADE
// and RESTART IDENTITY.
func TestChanges_Truncate(t *testing.T) {
	t.Parallel()
	c := newCluster(t,
		`CREATE TABLE parent (id int PRIMARY KEY)`,
		`CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent(id))`,
		`CREATE TABLE other (id int PRIMARY KEY)`)
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src,
		`INSERT INTO parent SELECT generate_series(1, 10)`,
		`INSERT INTO child (parent_id) SELECT generate_series(1, 10)`,
		`INSERT INTO other SELECT generate_series(1, 10)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	exec1(t, c.src,
		`BEGIN; INSERT INTO other VALUES (11); TRUNCATE parent, other CASCADE; INSERT INTO parent VALUES (100); COMMIT`,
		`TRUNCATE child RESTART IDENTITY`,
		`INSERT INTO child (parent_id) VALUES (100)`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}

const partitionSchema = `
CREATE TABLE events (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');`

// TestChanges_Partitions: by default a change to a partition reaches the
// same partition on the replica; with --partitions root it is applied
// through the root, so a replica partitioned differently still works.
func TestChanges_Partitions(t *testing.T) {
	t.Parallel()
	work := []string{
		`INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 100) g`,
		`UPDATE events SET v = v * 10 WHERE id % 3 = 0`,
		`UPDATE events SET region = 'eu' WHERE id = 1`, // moves the row across partitions
		`DELETE FROM events WHERE id % 10 = 0`,
		`TRUNCATE events_us`,
	}
	t.Run("leaf", func(t *testing.T) {
		c := newCluster(t, partitionSchema)
		capt := c.capture(t)
		app := c.apply(t)
		exec1(t, c.src, work...)
		waitSame(t, 60*time.Second, c.src, c.dst, "public.events", "public.events_eu", "public.events_us")
		capt.Stop(t)
		app.Stop(t)
	})
	t.Run("root", func(t *testing.T) {
		c := newCluster(t, partitionSchema)
		// The replica keeps the data in one unpartitioned table.
		exec1(t, c.dst, `DROP TABLE events`, `CREATE TABLE events (id int, region text, v int, PRIMARY KEY (id, region))`)
		capt := c.capture(t, "--partitions", "root")
		app := c.apply(t)
		exec1(t, c.src, work[:4]...)
		waitSame(t, 60*time.Second, c.src, c.dst, "public.events")
		capt.Stop(t)
		app.Stop(t)
	})
}
