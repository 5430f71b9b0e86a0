package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestVersion checks that every binary answers --version with one line
// naming itself and the commit it was built from, and exits 0 without
// touching a server.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bin  string
		args []string
	}{
		{"pgjet-capture", bins.capture, []string{"--version"}},
		{"pgjet-apply", bins.apply, []string{"--version"}},
		{"pgjet", bins.pgjet, []string{"--version"}},
		{"pgjet", bins.pgjet, []string{"tail", "--version"}},
	} {
		t.Run(strings.Join(append([]string{tc.name}, tc.args...), " "), func(t *testing.T) {
			cmd := exec.Command(tc.bin, tc.args...)
			// A PGJET_* variable of a flag that is set elsewhere must not
			// stand in the way of the question.
			cmd.Env = append(cmd.Environ(), "PGJET_VERSION=garbage")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", tc.name, tc.args, err, out)
			}
			line := strings.TrimSpace(string(out))
			if strings.Count(line, "\n") != 0 || !strings.HasPrefix(line, tc.name+" version ") || !strings.Contains(line, " commit ") {
				t.Fatalf("%s %v printed %q, want one line %q", tc.name, tc.args, line, tc.name+" version ... commit ...")
			}
			// What the toolchain stamped (nothing with -buildvcs=false or
			// outside a checkout) is what the line must say.
			want := "commit unknown"
			info, err := exec.Command("go", "version", "-m", tc.bin).Output()
			if err != nil {
				t.Fatalf("go version -m %s: %v", tc.bin, err)
			}
			for _, l := range strings.Split(string(info), "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision=") {
					want = "commit " + strings.TrimPrefix(f[1], "vcs.revision=")
				}
			}
			if !strings.Contains(line, want) {
				t.Errorf("%s %v printed %q, want %q as the build information says", tc.name, tc.args, line, want)
			}
		})
	}
}
