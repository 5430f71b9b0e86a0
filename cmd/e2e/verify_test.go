package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runPgjetVerify runs `pgjet verify` to completion and returns its exit
// code, stdout and stderr.
func runPgjetVerify(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runPgjetVerifyEnv(t, nil, args...)
}

// runPgjetVerifyEnv is runPgjetVerify with these environment variables
// (NAME=value) added.
func runPgjetVerifyEnv(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.pgjet, append([]string{"verify"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("pgjet verify %v did not finish within 2m; stdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run pgjet verify: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// verifyReport is the part of `pgjet verify --json` the tests read.
type verifyReport struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Wait  *struct {
		Skipped    string `json:"skipped"`
		Idle       bool   `json:"idle"`
		AppliedLSN string `json:"applied_lsn"`
		SourceLSN  string `json:"source_lsn"`
	} `json:"wait"`
	Tables []struct {
		Table      string   `json:"table"`
		Key        []string `json:"key"`
		Missing    string   `json:"missing"`
		Rows       int64    `json:"rows"`
		TargetRows int64    `json:"target_rows"`
		Chunks     int      `json:"chunks"`
		Converged  int      `json:"converged"`
		OK         bool     `json:"ok"`
		Columns    []struct {
			Column     string `json:"column"`
			SourceType string `json:"source_type"`
			TargetType string `json:"target_type"`
		} `json:"column_diffs"`
		Ranges []struct {
			After      []string `json:"after"`
			Through    []string `json:"through"`
			Range      string   `json:"range"`
			SourceRows int64    `json:"source_rows"`
			TargetRows int64    `json:"target_rows"`
		} `json:"differing_ranges"`
	} `json:"tables"`
}

func parseVerifyJSON(t *testing.T, out string) verifyReport {
	t.Helper()
	var r verifyReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("verify --json output is not a report: %v\n%s", err, out)
	}
	return r
}

// outputLines splits output into its non-empty lines.
func outputLines(s string) []string {
	var ls []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// wantLines fails unless every line of want appears, whole, in out.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range outputLines(out) {
		have[l] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("output lacks the line %q; output:\n%s", w, out)
		}
	}
}

const verifySchema = `
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12,2), at timestamptz, data jsonb, blob bytea, f float8);
CREATE TABLE gone (id bigint PRIMARY KEY, v text);
CREATE TABLE pairs (region text, n int, v text, PRIMARY KEY (region, n));
CREATE TABLE nokey (a int, b text);
CREATE TABLE cols (id int PRIMARY KEY, a text, extra int);
CREATE TABLE dropped (id int PRIMARY KEY);
CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (500);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (500) TO (1000);
CREATE SCHEMA other;
CREATE TABLE other."Mixed Case" ("Key" text PRIMARY KEY, v float8);`

// verifyLoad fills the verify schema's tables with the same rows, in
// ascending key order when asc, descending otherwise, so the two sides'
// physical row orders differ.
func verifyLoad(t *testing.T, url string, asc bool) {
	t.Helper()
	dir := "ASC"
	if !asc {
		dir = "DESC"
	}
	exec1(t, url,
		`INSERT INTO items SELECT g, 'item '||g, g*1.5, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
			jsonb_build_object('g', g, 'odd', g % 2 = 1), decode(md5(g::text), 'hex'), g / 7.0
		 FROM generate_series(1, 10000) g ORDER BY g `+dir,
		`INSERT INTO gone SELECT g, repeat('v', g % 50) FROM generate_series(1, 3000) g ORDER BY g `+dir,
		`INSERT INTO pairs SELECT r, g, r||g FROM unnest(ARRAY['eu', 'us']) r, generate_series(1, 1500) g ORDER BY r `+dir+`, g `+dir,
		`INSERT INTO nokey SELECT g % 3, CASE WHEN g % 4 = 0 THEN NULL ELSE 'b'||(g % 3) END FROM generate_series(1, 20) g ORDER BY g `+dir,
		`INSERT INTO cols SELECT g, 'a'||g, g FROM generate_series(1, 100) g ORDER BY g `+dir,
		`INSERT INTO dropped SELECT g FROM generate_series(1, 10) g ORDER BY g `+dir,
		`INSERT INTO parted SELECT g, 'p'||g FROM generate_series(0, 999) g ORDER BY g `+dir,
		`INSERT INTO other."Mixed Case" SELECT 'k'||g, g / 3.0 FROM generate_series(1, 50) g ORDER BY g `+dir,
	)
}

// newVerifyCluster returns a primary and a replica holding the same rows,
// the replica with other session defaults (time zone, date style), which
// verify must not mistake for different values.
func newVerifyCluster(t *testing.T) *cluster {
	t.Helper()
	c := newCluster(t, verifySchema)
	exec1(t, c.dst, `ALTER DATABASE postgres SET TimeZone = 'Pacific/Auckland'`, `ALTER DATABASE postgres SET DateStyle = 'German, DMY'`,
		`ALTER DATABASE postgres SET extra_float_digits = -3`)
	verifyLoad(t, c.src, true)
	verifyLoad(t, c.dst, false)
	return c
}

func TestVerify_Identical(t *testing.T) {
	t.Parallel()
	c := newVerifyCluster(t)

	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "1000")
	if code != 0 {
		t.Fatalf("exit %d, want 0 for identical databases; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	wantLines(t, out,
		"wait: the target has no pgjet.applied table: not a pgjet replica, compared without waiting",
		"other.Mixed Case: 50 rows in 1 chunks, ok",
		"public.cols: 100 rows in 1 chunks, ok",
		"public.dropped: 10 rows in 1 chunks, ok",
		"public.gone: 3000 rows in 4 chunks, ok",
		"public.items: 10000 rows in 11 chunks, ok",
		"public.nokey: 20 rows in 1 chunks, ok",
		"public.pairs: 3000 rows in 4 chunks, ok",
		"public.parted: 1000 rows in 2 chunks, ok",
		"all 8 tables identical",
	)
	if strings.Contains(out, "parted_1") {
		t.Errorf("partitions compared besides their root:\n%s", out)
	}

	t.Run("json", func(t *testing.T) {
		code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--json", "--tables", "public.items,pairs")
		if code != 0 {
			t.Fatalf("exit %d, want 0; stdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		r := parseVerifyJSON(t, out)
		if !r.OK || len(r.Tables) != 2 {
			t.Fatalf("report ok=%v with %d tables, want ok with 2:\n%s", r.OK, len(r.Tables), out)
		}
		if got, want := strings.Join(r.Tables[1].Key, ","), "region,n"; got != want {
			t.Errorf("pairs key = %q, want %q", got, want)
		}
		if got, want := r.Tables[0].Chunks, 1; got != want {
			t.Errorf("items chunks at the default chunk size = %d, want %d", got, want)
		}
	})
}

func TestVerify_Differences(t *testing.T) {
	t.Parallel()
	c := newVerifyCluster(t)
	exec1(t, c.dst,
		`UPDATE items SET name = 'tampered' WHERE id = 4500`,
		`DELETE FROM gone WHERE id = 1234`,
		`INSERT INTO gone VALUES (5000, 'extra')`,
		`UPDATE pairs SET v = 'tampered' WHERE region = 'us' AND n = 700`,
		`UPDATE nokey SET b = 'tampered' WHERE ctid = (SELECT ctid FROM nokey WHERE b = 'b1' LIMIT 1)`,
		`ALTER TABLE cols DROP COLUMN extra`,
		`ALTER TABLE cols ALTER COLUMN a TYPE varchar(20)`,
		`DROP TABLE dropped`,
		`DELETE FROM parted WHERE id = 750`,
	)

	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "1000")
	if code != 1 {
		t.Fatalf("exit %d, want 1 for differing databases; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	wantLines(t, out,
		"other.Mixed Case: 50 rows in 1 chunks, ok",
		"public.cols: column a is text on source, character varying(20) on target; column extra missing on target; rows equal (100 in 1 chunks)",
		"public.dropped: missing on target",
		"public.gone: 2 of 4 ranges differ: id in (1000, 2000]: 1000 vs 999 rows; id > 3000: 0 vs 1 rows",
		"public.items: 1 of 11 ranges differ: id in (4000, 5000]: same 1000 rows, different contents",
		"public.nokey: no primary key, compared whole: same 20 rows, different contents",
		"public.pairs: 1 of 4 ranges differ: (region, n) in (('us', 500), ('us', 1500)]: same 1000 rows, different contents",
		"public.parted: 1 of 2 ranges differ: id <= 999: 1000 vs 999 rows",
		"7 of 8 tables differ",
	)
	// A real difference survives every recheck.
	if !strings.Contains(errOut, "recheck 3: comparing") {
		t.Errorf("stderr does not show the third recheck:\n%s", errOut)
	}

	t.Run("json", func(t *testing.T) {
		code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "1000", "--tables", "items", "--json")
		if code != 1 {
			t.Fatalf("exit %d, want 1; stdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		r := parseVerifyJSON(t, out)
		if r.OK || len(r.Tables) != 1 {
			t.Fatalf("report ok=%v with %d tables, want not ok with 1:\n%s", r.OK, len(r.Tables), out)
		}
		items := r.Tables[0]
		if got, want := len(items.Ranges), 1; got != want {
			t.Fatalf("items has %d differing ranges, want %d:\n%s", got, want, out)
		}
		rg := items.Ranges[0]
		if got, want := strings.Join(rg.After, ",")+".."+strings.Join(rg.Through, ","), "4000..5000"; got != want {
			t.Errorf("differing range = %s, want %s", got, want)
		}
		if rg.SourceRows != 1000 || rg.TargetRows != 1000 || items.Rows != 10000 || items.Chunks != 11 {
			t.Errorf("range rows %d/%d, table rows %d, chunks %d; want 1000/1000, 10000, 11", rg.SourceRows, rg.TargetRows, items.Rows, items.Chunks)
		}
	})

	t.Run("missing on source", func(t *testing.T) {
		code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--tables", "public.nothere")
		if code != 1 {
			t.Fatalf("exit %d, want 1; stdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		wantLines(t, out, "public.nothere: missing on source")
	})

	t.Run("collations differ", func(t *testing.T) {
		// The same text keys ordered by different collations: ranges must
		// still select the same keys on both sides.
		exec1(t, c.src, `CREATE TABLE words (w text COLLATE "C" PRIMARY KEY)`,
			`INSERT INTO words SELECT x FROM unnest(ARRAY['a', 'B', 'c', 'D', 'e', 'F', '_g', 'Hh', 'hh', 'i']) x`)
		exec1(t, c.dst, `CREATE TABLE words (w text COLLATE "und-x-icu" PRIMARY KEY)`,
			`INSERT INTO words SELECT x FROM unnest(ARRAY['i', 'hh', 'Hh', '_g', 'F', 'e', 'D', 'c', 'B', 'a']) x`)
		code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--tables", "words", "--chunk-rows", "3")
		if code != 0 {
			t.Fatalf("exit %d, want 0; stdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		wantLines(t, out, "public.words: 10 rows in 4 chunks, ok")
	})
}

func TestVerify_BadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no source", []string{"--target", "postgres://h/db"}, "--source is required"},
		{"zero chunk", []string{"--source", "postgres://h/db", "--target", "postgres://h/db", "--chunk-rows", "0"}, "--chunk-rows must be at least 1"},
		{"bad table", []string{"--source", "postgres://h/db", "--target", "postgres://h/db", "--tables", "a.b.c"}, "--tables"},
		{"bad url", []string{"--source", "postgres://u:secret@h:notaport/db", "--target", "postgres://h/db"}, "--source: cannot parse the connection URL"},
		{"unknown flag", []string{"--nope"}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runPgjetVerify(t, tc.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "secret") {
				t.Errorf("stderr = %q, want it to contain %q and no password", errOut, tc.want)
			}
		})
	}
}

func TestVerify_Unreachable(t *testing.T) {
	t.Parallel()
	code, out, errOut := runPgjetVerify(t, "--source", "postgres://postgres:secret@127.0.0.1:1/postgres", "--target", "postgres://postgres@127.0.0.1:1/postgres")
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	lines := outputLines(errOut)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "pgjet verify: source: ") || strings.Contains(errOut, "secret") {
		t.Errorf("stderr = %q, want one line naming the source, without its password", errOut)
	}
}

// TestVerify_LiveReplica runs verify against a replica fed by capture and
// apply: right after writes (waiting for the applier), on an idle source
// (heartbeats move its WAL past the last applied transaction), with
// capture stopped (the wait times out), and while the applier catches up
// during the rechecks.
func TestVerify_LiveReplica(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	capt := c.capture(t)
	app := c.apply(t)

	exec1(t, c.src, `INSERT INTO items SELECT g, 'v'||g FROM generate_series(1, 5000) g`,
		`UPDATE items SET v = 'u' WHERE id % 10 = 0`)
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "1000", "--json")
	if code != 0 {
		t.Fatalf("right after writes: exit %d, want 0; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	r := parseVerifyJSON(t, out)
	if r.Wait == nil || r.Wait.Skipped != "" || len(r.Tables) != 1 || r.Tables[0].Rows != 5000 {
		t.Fatalf("right after writes: want a wait and public.items with 5000 rows (pgjet's own tables left out):\n%s", out)
	}

	// Idle: heartbeats move the source's WAL past the last transaction;
	// the applier records the heartbeats it passed, so the wait still
	// ends exactly (or by the idle rule, if a heartbeat is not due yet).
	waitFor(t, 60*time.Second, "the target to record a heartbeat past the last transaction", func() (bool, string) {
		checkDaemons(t)
		n := queryInt(t, c.dst, "SELECT count(*) FROM pgjet.applied WHERE source = 'src' AND source_lsn > end_lsn")
		return n == 1, queryString(t, c.dst, "SELECT format('end_lsn %s, source_lsn %s', end_lsn, source_lsn) FROM pgjet.applied WHERE source = 'src'")
	})
	code, out, errOut = runPgjetVerify(t, "--source", c.src, "--target", c.dst)
	if code != 0 {
		t.Fatalf("idle: exit %d, want 0; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out, `wait: source "src" idle`) && !strings.Contains(out, `wait: target applied source "src" up to`) {
		t.Errorf("idle: the wait did not end:\n%s", out)
	}

	// Capture stopped: the slot never confirms the new WAL, the wait times out.
	capt.Stop(t)
	exec1(t, c.src, `DELETE FROM items WHERE id BETWEEN 2001 AND 2010`)
	code, out, errOut = runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--timeout", "4s")
	if code != 1 || !strings.Contains(errOut, "the target has not caught up with the source after 4s") {
		t.Fatalf("capture stopped: exit %d, want 1 with a wait timeout; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, out, errOut = runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--chunk-rows", "1000", "--wait-lsn=false")
	if code != 1 {
		t.Fatalf("--wait-lsn=false: exit %d, want 1; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Ranges are cut by the source's keys: its third range ends at 3010.
	wantLines(t, out, "public.items: 1 of 5 ranges differ: id in (2000, 3010]: 1000 vs 1010 rows")

	// The applier starts only once verify has found the difference: the
	// rechecks see the replica converge.
	app.Stop(t)
	capt = c.capture(t)
	v := start(t, "pgjet verify", bins.pgjet, "verify", "--source", c.src, "--target", c.dst, "--chunk-rows", "1000", "--wait-lsn=false", "--json")
	waitFor(t, 30*time.Second, "verify to find the difference", func() (bool, string) {
		if v.Exited() {
			t.Fatalf("verify exited before rechecking:\n%s", v.Output())
		}
		return strings.Contains(v.Output(), "recheck 1: comparing 1 differing ranges"), "no recheck yet"
	})
	app = c.apply(t)
	if code := v.Wait(t, time.Minute); code != 0 {
		t.Fatalf("catching up: exit %d, want 0 once the applier caught up:\n%s", code, v.Output())
	}
	if !strings.Contains(v.Output(), `"converged": 1`) {
		t.Errorf("catching up: the report does not count the converged range:\n%s", v.Output())
	}
	capt.Stop(t)
	app.Stop(t)
}

// TestVerify_DuringSnapshot runs verify while capture takes its initial
// snapshot: the snapshot's temporary slot (pgjet_src_snap_…) sits beside
// the source's own slot and must not count as a second source. capture's
// pg_dump is a wrapper that waits for the test's word, which holds the
// snapshot open for as long as the test needs.
func TestVerify_DuringSnapshot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE items (id int PRIMARY KEY, v text)")

	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	dump := filepath.Join(dir, "pg_dump")
	script := "#!/bin/sh\nwhile [ ! -e " + release + " ]; do sleep 0.1; done\nexec pg_dump \"$@\"\n"
	if err := os.WriteFile(dump, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// No heartbeats and no writes: the target's pgjet.applied stays empty,
	// so verify can only tell the source by the source's slots.
	capt := c.capture(t, "--pg-dump", dump, "--heartbeat", "0")
	app := c.apply(t)
	waitFor(t, 30*time.Second, "the snapshot's slot", func() (bool, string) {
		n := queryInt(t, c.src, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgjet\_src\_snap\_%'`)
		return n == 1, "no snapshot slot yet"
	})
	// The wait cannot end while the snapshot holds the WAL still
	// unapplied; what matters is which source verify waits for.
	code, out, errOut := runPgjetVerify(t, "--source", c.src, "--target", c.dst, "--timeout", "2s")
	if code != 1 || !strings.Contains(errOut, `the target has not caught up with the source after 2s: it applied up to 0/0 of source "src"`) {
		t.Fatalf("during the snapshot: exit %d, want 1 waiting on source src; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if n := queryInt(t, c.src, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgjet\_src\_snap\_%'`); n != 1 {
		t.Fatalf("the snapshot ended before verify ran (%d snapshot slots): the test proved nothing", n)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	exec1(t, c.src, `INSERT INTO items SELECT g, 'v'||g FROM generate_series(1, 100) g`)
	code, out, errOut = runPgjetVerify(t, "--source", c.src, "--target", c.dst)
	if code != 0 || !strings.Contains(out, "public.items: 100 rows") {
		t.Fatalf("after the snapshot: exit %d, want 0 with 100 rows; stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	capt.Stop(t)
	app.Stop(t)
}
