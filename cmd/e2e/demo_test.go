package e2e

import (
	"regexp"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	p := start(t, "pgjet demo", bins.pgjet, "demo", "--duration", "20s")
	if code := p.Wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("pgjet demo exited %d, want 0:\n%s", code, tail(p.Output(), 8192))
	}
	out := p.Output()
	tables := []string{"demo_events", "pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"}
	for _, region := range []string{"r1", "r2"} {
		status := regexp.MustCompile(`(?m)^\s*\S+\s+` + region + `\s+applied [0-9A-F]+/[0-9A-F]+\s+lag\s+\d`)
		if !status.MatchString(out) {
			t.Errorf("no per-second status line with a lag for region %s", region)
		}
		for _, table := range tables {
			match := regexp.MustCompile(`(?m)^\s+` + region + `\s+public\.` + table + `\s+[1-9]\d* rows\s+match$`)
			if !match.MatchString(out) {
				t.Errorf("no match line for %s in region %s", table, region)
			}
		}
	}
	if !regexp.MustCompile(`(?m)^\s+r1\s+public\.pgbench_accounts\s+100000 rows\s+match$`).MatchString(out) {
		t.Errorf("pgbench_accounts should hold 100000 rows in r1")
	}
	if !regexp.MustCompile(`(?m)^all 5 tables match on every replica`).MatchString(out) {
		t.Errorf("no final all-match line")
	}
	if t.Failed() {
		t.Logf("output:\n%s", tail(out, 8192))
	}
}
