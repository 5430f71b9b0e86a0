package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConsole_RegionDatabaseDown stops a region's Postgres while the
// console watches it with --db-region: the console cannot read the
// replica, so it must not call the region's link flowing (its meaning:
// "the replica has applied everything"), and its row must say that the
// database does not answer. (status.Gather files a database it cannot
// read under Report.DBErrors, under no source; the console must still
// find it, or it judges the region as one without --db-region.)
func TestConsole_RegionDatabaseDown(t *testing.T) {
	t.Parallel()
	s := newRegions(t, "r1")
	dataDir := queryString(t, s.dst["r1"], "SHOW data_directory")

	p := start(t, "pgjet console", bins.pgjet, "console", "--nats", s.top.Hub.ClientURL(), "--name", "src",
		"--listen", "127.0.0.1:0", "--interval", "1s", "--db-region", "r1="+s.dst["r1"])
	re := regexp.MustCompile(`serving source src on (http://\S+)`)
	var url string
	waitFor(t, 20*time.Second, "pgjet console to listen", func() (bool, string) {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			url = m[1]
			return true, ""
		}
		return false, p.Output()
	})
	get := func(path string) (int, string) {
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	link := regexp.MustCompile(`data-region="r1" data-link="([^"]*)"`)
	waitFor(t, 60*time.Second, "the page to show r1 flowing while its database answers", func() (bool, string) {
		_, frag := get("fragment")
		m := link.FindStringSubmatch(frag)
		return m != nil && m[1] == "flowing", tail(frag, 300)
	})

	// The region's Postgres goes down (the applier keeps running and
	// retrying; its mirror keeps receiving from the hub).
	// (pg_ctl refuses to run as root: signal the postmaster, a fast
	// shutdown, as pg_ctl stop -m fast does.)
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatalf("stop r1's postmaster (pid %d): %v", pid, err)
	}
	waitFor(t, 30*time.Second, "/api/status to report r1's database as unreachable", func() (bool, string) {
		code, body := get("api/status")
		return code == http.StatusOK && strings.Contains(body, `"db_errors"`) && strings.Contains(body, `"region": "r1"`), body
	})
	// The report of the down database is in; the page renders from it.
	_, frag := get("fragment")
	m := link.FindStringSubmatch(frag)
	if m == nil {
		t.Fatalf("page has no row for r1:\n%s", frag)
	}
	if m[1] == "flowing" || !strings.Contains(frag, "database unreachable") {
		i := strings.Index(frag, `data-region="r1"`)
		t.Fatalf("r1's Postgres is down, yet the page shows its link %q (database-unreachable row: %v); r1's row:\n%s",
			m[1], strings.Contains(frag, "database unreachable"), frag[i:min(len(frag), i+900)])
	}
}
