package cli

import (
	"runtime/debug"
	"testing"
)

func TestVersionLine(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build info", nil, false, "pgjet-apply version devel commit unknown go unknown"},
		{"released", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: vcs("vcs.revision", "696cbf3abc", "vcs.time", "2025-06-01T10:00:00Z", "vcs.modified", "false")},
			true, "pgjet-apply version v1.2.3 commit 696cbf3abc (2025-06-01T10:00:00Z) go1.26.8"},
		{"checkout with changes", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
			Settings: vcs("vcs.revision", "696cbf3abc", "vcs.time", "2025-06-01T10:00:00Z", "vcs.modified", "true")},
			true, "pgjet-apply version devel commit 696cbf3abc (2025-06-01T10:00:00Z, modified) go1.26.8"},
		{"no vcs stamp", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: ""}},
			true, "pgjet-apply version devel commit unknown go1.26.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine("pgjet-apply", tc.bi, tc.ok); got != tc.want {
				t.Errorf("versionLine = %q, want %q", got, tc.want)
			}
		})
	}
}
