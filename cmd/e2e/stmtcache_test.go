package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestApply_StatementCacheBounded: rows of a table with many nullable
// columns, NULL in random places, do not make the applier prepare a
// statement per NULL pattern, nor do many tables make it prepare one per
// table without bound: the statements it holds prepared on the target
// stay within --statement-cache (the least recently used are
// deallocated, and prepared again when needed), and the replica equals
// the source.
func TestApply_StatementCacheBounded(t *testing.T) {
	t.Parallel()
	var cols, nulls []string
	for i := range 12 {
		cols = append(cols, fmt.Sprintf("c%d int", i))
		nulls = append(nulls, fmt.Sprintf("CASE WHEN random() < 0.5 THEN g END"))
	}
	ddl := []string{"CREATE TABLE t (id int PRIMARY KEY, " + strings.Join(cols, ", ") + ")"}
	const tables = 24
	var inserts []string
	for i := range tables {
		ddl = append(ddl, fmt.Sprintf("CREATE TABLE u%d (id int PRIMARY KEY)", i))
		inserts = append(inserts, fmt.Sprintf("INSERT INTO u%d VALUES (%d)", i, i))
	}
	c := newCluster(t, ddl...)
	c.capture(t)
	addr := metricsAddr(t)
	const limit = 16
	c.apply(t, "--statement-cache", fmt.Sprint(limit), "--metrics-addr", addr)
	var set []string
	for i := range 12 {
		set = append(set, fmt.Sprintf("c%d = CASE WHEN random() < 0.5 THEN id END", i))
	}
	// Each row its own transaction: a shape is prepared as it first comes.
	exec1(t, c.src, "INSERT INTO t SELECT g, "+strings.Join(nulls, ", ")+" FROM generate_series(1, 300) g",
		fmt.Sprintf(`DO $$BEGIN FOR i IN 1..300 LOOP UPDATE t SET %s WHERE id = i; COMMIT; END LOOP; END$$`, strings.Join(set, ", ")))
	// Each table's statement, twice: the second round prepares again
	// what the cache evicted.
	exec1(t, c.src, inserts...)
	exec1(t, c.src, strings.ReplaceAll(strings.Join(inserts, ";"), ")", "+100)"))
	waitSame(t, 90*time.Second, c.src, c.dst)
	if got := scrape(t, addr)["pgjet_apply_prepared_statements"]; got > limit || got < 1 {
		t.Errorf("pgjet_apply_prepared_statements = %v, want 1 to %d", got, limit)
	}
}
