package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestActiveActive_RepairAndResync: in active-active, a region's own
// writes are data on their way to the other region, not damage. With
// region b's update and delete not yet applied in region a, pgjet verify
// --repair from a into b and pgjet resync of a's table both refuse, in one
// line naming why and what to do, and change nothing: b keeps its newer
// row and its delete, and once a applies them the regions are equal. With
// writes stopped and applied both ways, --force repairs a difference no
// capture carried (a row of b written under a pgjet origin) and re-copies
// the table, and the regions end equal.
func TestActiveActive_RepairAndResync(t *testing.T) {
	t.Parallel()
	lww := []string{"--conflict", "last-writer-wins"}
	a, b, js := newActiveActiveCapture(t, "CREATE TABLE kv (id int PRIMARY KEY, v text)", []string{"--heartbeat", "1s"}, lww...)
	natsURL := js.Conn().ConnectedUrl()
	exec1(t, a.url, "INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 50) g")
	waitSame(t, 60*time.Second, a.url, b.url)

	// Region a's applier of b stops: b's writes stay on their way to a.
	a.apply.Stop(t)
	exec1(t, b.url, "UPDATE kv SET v = 'b newer' WHERE id = 1", "DELETE FROM kv WHERE id = 2")
	code, out, errOut := runPgjetVerify(t, "--source", a.url, "--target", b.url, "--name", "a", "--wait-lsn=false", "--repair")
	if code != 1 || !strings.Contains(errOut, "--repair refused: the target is captured too (slot pgjet_b") || !strings.Contains(errOut, "--force") ||
		strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("pgjet verify --repair into a region that writes exited %d, want 1 and one line naming the refusal:\n%s%s", code, out, errOut)
	}
	if got := queryString(t, b.url, "SELECT v FROM kv WHERE id = 1"); got != "b newer" {
		t.Errorf("kv 1 in region b is %q after the repair, want b's newer write", got)
	}
	if n := queryInt(t, b.url, "SELECT count(*) FROM kv WHERE id = 2"); n != 0 {
		t.Errorf("the repair put back kv 2, which region b deleted")
	}
	resync := []string{"--db", a.url, "--nats", natsURL, "--name", "a", "--table", "public.kv"}
	out, code = pgjetRun(t, "resync", resync...)
	if code != 1 || !strings.Contains(out, "refused: the source database applies pgjet sources b too") || !strings.Contains(out, "--force") ||
		strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("pgjet resync of a source that applies another exited %d, want 1 and one line naming the refusal:\n%s", code, out)
	}

	// b's writes reach a: the regions are equal, with b's writes.
	a.apply = start(t, "pgjet-apply a", bins.apply, append([]string{"--db", a.url, "--nats", natsURL, "--name", "b", "--region", "a", "--local-name", "a"}, lww...)...)
	a.apply.waitLog(t, "apply started")
	waitSame(t, 60*time.Second, a.url, b.url)
	if got := queryString(t, a.url, "SELECT v FROM kv WHERE id = 1"); got != "b newer" {
		t.Errorf("kv 1 in region a is %q, want b's write", got)
	}

	// A difference no capture carries: b's row written under a pgjet
	// origin, as an applier's are. With writes stopped and applied both
	// ways, --force repairs it and re-copies the table.
	exec1(t, b.url, "SELECT pg_replication_origin_create('pgjet_damage')", "SELECT pg_replication_origin_session_setup('pgjet_damage')",
		"UPDATE kv SET v = 'damaged' WHERE id = 3")
	if code, out, errOut := runPgjetVerify(t, "--source", a.url, "--target", b.url, "--name", "a"); code != 1 {
		t.Fatalf("pgjet verify of the damaged region b exited %d, want 1:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runPgjetVerify(t, "--source", a.url, "--target", b.url, "--name", "a", "--repair", "--force")
	t.Logf("pgjet verify --repair --force:\n%s%s", out, errOut)
	if code != 0 || !strings.Contains(out, "repair: public.kv: 0 inserted, 1 updated, 0 deleted") {
		t.Errorf("pgjet verify --repair --force exited %d, want 0 and kv 3 repaired", code)
	}
	out, code = pgjetRun(t, "resync", append(resync, "--force")...)
	if code != 0 {
		t.Fatalf("pgjet resync --force exited %d:\n%s", code, out)
	}
	b.apply.waitLog(t, "table re-copied from its resync: its changes before the copy's point are passed over, those after it follow")
	waitSame(t, 60*time.Second, a.url, b.url)
	for _, dir := range [][2]*aaRegion{{a, b}, {b, a}} {
		if code, out, errOut := runPgjetVerify(t, "--source", dir[0].url, "--target", dir[1].url, "--name", dir[0].name); code != 0 {
			t.Errorf("pgjet verify of region %s against %s exited %d, want 0:\n%s%s", dir[1].name, dir[0].name, code, out, errOut)
		}
	}
}
