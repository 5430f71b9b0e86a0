package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestBench runs a tiny `pgjet bench`: both drains must complete, both
// targets must equal the primary (exit 0), and the ratio must be printed.
// The figures themselves are not checked: at this size they are noise.
func TestBench(t *testing.T) {
	t.Parallel()
	p := start(t, "pgjet bench", bins.pgjet, "bench", "--scale", "1", "--txns", "2000")
	if code := p.Wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("pgjet bench exited %d, want 0:\n%s", code, tail(p.Output(), 8192))
	}
	out := p.Output()
	for _, want := range []string{
		"backlog: 2000 txns",
		"native logical replication: ",
		"pgjet:                      ",
		"ratio native/pgjet: ",
		"verify native subscriber: equal to the primary",
		"verify pgjet target:     equal to the primary",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, tail(out, 8192))
		}
	}
}

// TestBench_Flags checks the cheap paths: --help exits 0 and a bad flag
// value exits 2 with a message naming the flag, before anything starts.
func TestBench_Flags(t *testing.T) {
	t.Parallel()
	t.Run("help", func(t *testing.T) {
		p := start(t, "pgjet bench --help", bins.pgjet, "bench", "--help")
		if code := p.Wait(t, 30*time.Second); code != 0 {
			t.Fatalf("exit %d, want 0:\n%s", code, p.Output())
		}
		if out := p.Output(); !strings.Contains(out, "--txns") || !strings.Contains(out, "PGJET_SCALE") {
			t.Errorf("usage lacks the flags and their variables:\n%s", out)
		}
	})
	t.Run("bad order", func(t *testing.T) {
		p := start(t, "pgjet bench --order", bins.pgjet, "bench", "--order", "sideways")
		if code := p.Wait(t, 30*time.Second); code != 2 {
			t.Fatalf("exit %d, want 2:\n%s", code, p.Output())
		}
		if out := p.Output(); !strings.Contains(out, "--order") {
			t.Errorf("error does not name --order:\n%s", out)
		}
	})
}
