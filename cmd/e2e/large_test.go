package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// peakRSS returns the peak resident set (VmHWM) of a process, in bytes.
func peakRSS(t *testing.T, p *proc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read status of %s: %v", p.name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", p.cmd.Process.Pid)
	return 0
}

// boundRSS logs the peak RSS of capture and apply after what went
// through them and fails the test when one exceeds its bound.
func boundRSS(t *testing.T, what string, capt *proc, capMax int64, app *proc, appMax int64) {
	t.Helper()
	capRSS, appRSS := peakRSS(t, capt), peakRSS(t, app)
	t.Logf("peak RSS for %s: capture %d MiB, apply %d MiB", what, capRSS>>20, appRSS>>20)
	if capRSS > capMax {
		t.Errorf("capture peak RSS %d MiB for %s, over %d MiB: memory is not bounded", capRSS>>20, what, capMax>>20)
	}
	if appRSS > appMax {
		t.Errorf("apply peak RSS %d MiB for %s, over %d MiB: memory is not bounded", appRSS>>20, what, appMax>>20)
	}
}

// TestPipeline_LargeTransaction sends one 200 MB transaction through; the
// capture's memory stays bounded (it never holds the transaction) and the
// replica shows either none or all of its rows, never a part.
func TestPipeline_LargeTransaction(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE big (id int PRIMARY KEY, payload text)", "CREATE TABLE small (id int PRIMARY KEY)")
	capt := c.capture(t, "--window-bytes", strconv.Itoa(16<<20))
	app := c.apply(t)
	const rows = 200_000 // 1 KiB each: 200 MiB of row data
	exec1(t, c.src, "INSERT INTO small VALUES (1)")

	// Watch the replica for a partial transaction while it applies.
	var partial sync.Map
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			n := queryInt(t, c.dst, "SELECT count(*) FROM big")
			if n != 0 && n != rows {
				partial.Store(n, true)
			}
		}
	}()
	exec1(t, c.src, fmt.Sprintf("INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, %d) g", rows),
		"INSERT INTO small VALUES (2)")
	waitSame(t, 5*time.Minute, c.src, c.dst)
	close(stop)
	<-watched
	partial.Range(func(k, _ any) bool {
		t.Errorf("replica showed %v rows of big: a partial transaction was visible", k)
		return true
	})
	boundRSS(t, "a 200 MiB transaction", capt, 128<<20, app, 192<<20)
	capt.Stop(t)
	app.Stop(t)
}
