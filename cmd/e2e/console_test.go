package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startConsole runs pgjet console for the set-up's source and every
// region, on a free port, and returns its address.
func startConsole(t *testing.T, s *regionSetup) string {
	t.Helper()
	args := []string{"console", "--nats", s.top.Hub.ClientURL(), "--name", "src", "--listen", "127.0.0.1:0", "--interval", "1s", "--source-db", s.src}
	for _, r := range s.top.Names {
		args = append(args, "--db-region", r+"="+s.dst[r])
	}
	p := start(t, "pgjet console", bins.pgjet, args...)
	re := regexp.MustCompile(`serving source src on (http://\S+)`)
	var url string
	waitFor(t, 20*time.Second, "pgjet console to listen", func() (bool, string) {
		checkDaemons(t)
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			url = m[1]
			return true, ""
		}
		return false, p.Output()
	})
	return url
}

const consoleLoadScript = `\set aid random(1, 100000)
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, 1, now());
`

// regionLinks is the region rows of the console's page as its browser
// renders them: "r1=flowing r2=cut".
const regionLinks = `Array.from(document.querySelectorAll("tr.region")).map(e => e.dataset.region + "=" + e.dataset.link).join(" ")`

// TestConsole_PartitionInBrowser opens the console in headless Chromium,
// keeps the page open as a person would, cuts a region's link and heals
// it: the page, updating itself, must show the region cut while the other
// flows, then flowing again.
func TestConsole_PartitionInBrowser(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := newRegions(t, "r1", "r2")
	url := startConsole(t, s)
	br := startChromium(t)
	pg := br.open(url)
	// A load keeps transactions flowing, so that a cut region falls
	// behind. The tables are empty: the built-in TPC-B script would
	// refuse them, a script of inserts does not.
	script := filepath.Join(t.TempDir(), "insert.sql")
	if err := os.WriteFile(script, []byte(consoleLoadScript), 0o644); err != nil {
		t.Fatal(err)
	}
	pgbenchAsync(t, s.src, "-n", "-c", "1", "-R", "20", "-T", "120", "-f", script)

	shots := os.Getenv("PGJET_CONSOLE_SCREENSHOTS") // docs/: make the README's pictures
	if shots == "" {
		shots = t.TempDir()
	}
	// waitPage polls the page's DOM until its region rows read want.
	waitPage := func(timeout time.Duration, what, want string) {
		t.Helper()
		waitFor(t, timeout, what, func() (bool, string) {
			checkDaemons(t)
			got, err := pg.eval(regionLinks)
			if err != nil {
				return false, err.Error()
			}
			return got == want, fmt.Sprintf("page shows %q", got)
		})
	}
	waitPage(60*time.Second, "the page to show both regions flowing", "r1=flowing r2=flowing")
	// What follows comes from the script's reloads of the open page,
	// not from a new render.
	waitFor(t, 10*time.Second, "the page's script to reload it", func() (bool, string) {
		n, err := pg.eval(`document.body.dataset.updates`)
		return err == nil && n != "" && n != "0", fmt.Sprintf("updates %q, %v", n, err)
	})
	t.Logf("both regions flowing on the page after %s", time.Since(began).Round(time.Millisecond))

	// A conflict recorded in r1's target shows, by kind and decision, in
	// the minute it happened.
	exec1(t, s.dst["r1"], `INSERT INTO pgjet.conflicts (source, kind, table_name, commit_lsn, decision) VALUES ('src', 'update_missing', 'public.pgbench_accounts', '0/1', 'skip')`)
	waitFor(t, 10*time.Second, "the page to show r1's conflict", func() (bool, string) {
		row, err := pg.eval(`Array.from(document.querySelectorAll("#conflicts td")).map(e => e.textContent).join(" ")`)
		return err == nil && strings.HasPrefix(row, "r1 update_missing skip 1 1"), fmt.Sprintf("conflicts %q %v", row, err)
	})

	s.top.Proxies["r2"].Cut()
	cutAt := time.Now()
	waitPage(20*time.Second, "the page to show r2 cut and r1 flowing", "r1=flowing r2=cut")
	t.Logf("page showed the cut %s after it", time.Since(cutAt).Round(time.Millisecond))
	why, err := pg.eval(`document.querySelector('tr.region[data-region="r2"] .why').textContent`)
	if err != nil || !strings.Contains(why, "does not answer") {
		t.Errorf("r2's row says why %q (%v), want its domain not answering", why, err)
	}
	// The cut lasts long enough for r2 to fall behind on the charts.
	waitFor(t, 20*time.Second, "r2's lag to show on the page", func() (bool, string) {
		lag, err := pg.eval(`document.querySelector('tr.region[data-region="r2"]').dataset.lag`)
		var secs float64
		_, serr := fmt.Sscanf(lag, "%fs", &secs)
		return err == nil && serr == nil && secs >= 3, fmt.Sprintf("lag %q %v", lag, err)
	})

	t.Run("api status during the cut", func(t *testing.T) {
		st := getConsoleStatus(t, url)
		if errs := st.domainErrors(); errs["r2"] == "" || errs["r1"] != "" || errs["hub"] != "" {
			t.Errorf("domains %v, want only r2 failing", errs)
		}
		if len(st.Sources) != 1 || st.Sources[0].Source != "src" || len(st.Sources[0].Targets) != 2 {
			t.Fatalf("report of %d sources, want src with two targets:\n%s", len(st.Sources), st.raw)
		}
		for _, tr := range st.Sources[0].Targets {
			if tr.Error != "" || tr.BehindBytes == nil {
				t.Errorf("region %s: error %q, behind %v: its database answers, so its position must show", tr.Region, tr.Error, tr.BehindBytes)
			}
		}
		if !strings.Contains(st.raw, `"healthy": false`) || !strings.Contains(st.raw, `"snapshots"`) {
			t.Errorf("report should be unhealthy and list the snapshots:\n%s", st.raw)
		}
	})
	if err := pg.screenshot(filepath.Join(shots, "console-cut.png")); err != nil {
		t.Errorf("screenshot: %v", err)
	}

	if err := s.top.Proxies["r2"].Heal(); err != nil {
		t.Fatal(err)
	}
	healAt := time.Now()
	// The mirror resumes after its retry backoff (10-20 s), then r2
	// applies what it missed.
	waitPage(60*time.Second, "the page to show r2 flowing again", "r1=flowing r2=flowing")
	t.Logf("page showed r2 flowing again %s after the heal", time.Since(healAt).Round(time.Millisecond))
	timeline, err := pg.eval(`Array.from(document.querySelectorAll("svg.timeline rect title")).map(e => e.textContent).join("|")`)
	if err != nil || !strings.Contains(timeline, "r2: cut") || !strings.Contains(timeline, "r2: flowing") {
		t.Errorf("link timeline %q (%v): want r2's cut and its recovery on it", tail(timeline, 300), err)
	}
	if err := pg.screenshot(filepath.Join(shots, "console-healed.png")); err != nil {
		t.Errorf("screenshot: %v", err)
	}
	t.Logf("done after %s", time.Since(began).Round(time.Millisecond))
}

// getConsoleStatus reads the console's /api/status.
func getConsoleStatus(t *testing.T, url string) statusJSON {
	t.Helper()
	resp, err := http.Get(url + "api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/status: %s (%s):\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	var st statusJSON
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/api/status is no report: %v\n%s", err, body)
	}
	st.raw = string(body)
	return st
}
