package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemo runs pgjet demo as a newcomer would (make demo), its stdout a
// pipe: it must tell the whole story in plain lines (the load, r2's link
// cut while r1 keeps applying, the heal and r2's catch-up, a schema
// change), serve its console meanwhile, and end with every table of every
// replica matching.
func TestDemo(t *testing.T) {
	t.Parallel()
	p := start(t, "pgjet demo", bins.pgjet, "demo", "--duration", "20s", "--cut", "10s", "--console", "127.0.0.1:0")

	// The console serves the demo's source while the story runs.
	consoleRe := regexp.MustCompile(`console\s+(http://\S+)`)
	var url string
	waitFor(t, 3*time.Minute, "the demo to print its console's address", func() (bool, string) {
		if m := consoleRe.FindStringSubmatch(p.Output()); m != nil {
			url = m[1]
			return true, ""
		}
		if p.Exited() {
			t.Fatalf("pgjet demo exited before serving its console:\n%s", tail(p.Output(), 8192))
		}
		return false, tail(p.Output(), 300)
	})
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET the demo's console %s: %v", url, err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "pgjet console: source demo") {
		t.Errorf("GET %s: %s, page:\n%s", url, resp.Status, tail(string(page), 2000))
	}

	if code := p.Wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("pgjet demo exited %d, want 0:\n%s", code, tail(p.Output(), 8192))
	}
	out := p.Output()
	if strings.Contains(out, "\x1b[") {
		t.Errorf("stdout is no terminal, yet the demo wrote escape sequences")
	}
	for _, want := range []string{
		`(?m)^\s+r1\s+flowing\s+[0-9A-F]+/[0-9A-F]+\s+\d+\.\ds\s`, // a plain table line with a lag
		`(?m)^\s+r2\s+cut\s+[0-9A-F]+/[0-9A-F]+\s`,                // r2 seen cut
		`partition: cut r2's link to the hub for 10s`,             //
		`r2 caught up [\d.]+s after the heal, applying [1-9]\d* transactions`,
		`the schema change reached r1 and r2`,
		`(?m)^\s+r1\s+public\.pgbench_accounts\s+100000 rows\s+match$`,
		`(?m)^all 5 tables match on every replica`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s", want)
		}
	}
	// r1 went on during the cut; r2 applied at most what its mirror held
	// when the link dropped.
	if m := regexp.MustCompile(`during the cut: r1 applied (\d+) transactions, r2 applied (\d+)`).FindStringSubmatch(out); m == nil {
		t.Errorf("no line of what each region applied during the cut")
	} else if r1, r2 := atoi(t, m[1]), atoi(t, m[2]); r1 < 100 || r2 > r1/4 {
		t.Errorf("during the cut r1 applied %d transactions and r2 %d: want r1 going on (100 or more) and r2 standing nearly still", r1, r2)
	}
	tables := []string{"demo_events", "pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"}
	for _, region := range []string{"r1", "r2"} {
		for _, table := range tables {
			match := regexp.MustCompile(`(?m)^\s+` + region + `\s+public\.` + table + `\s+[1-9]\d* rows\s+match$`)
			if !match.MatchString(out) {
				t.Errorf("no match line for %s in region %s", table, region)
			}
		}
	}
	// Region lines every few seconds, not every second: a couple of
	// minutes of story stay readable in a log.
	if n := len(regexp.MustCompile(`(?m)^\s+r[12]\s+(flowing|catching up|stalled|cut|unknown|-)\s`).FindAllString(out, -1)); n > 80 {
		t.Errorf("the demo printed %d region lines; a pipe should get one per region every few seconds", n)
	}
	if t.Failed() {
		t.Logf("output:\n%s", tail(out, 8192))
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
