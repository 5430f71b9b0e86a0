package cli

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

// VersionFlag is the flag every pgjet command takes to print its version
// and exit 0. It has no PGJET_* variable and no config file key: it asks
// a question, it configures nothing.
const VersionFlag = "version"

// Version is the one line --version prints for program name: the module
// version, the commit it was built from, that commit's time, whether the
// tree had uncommitted changes, and the Go version, all from the build
// information the Go toolchain stamps into the binary.
func Version(name string) string {
	bi, ok := debug.ReadBuildInfo()
	return versionLine(name, bi, ok)
}

// PrintVersion writes Version(name) to stdout and exits 0.
func PrintVersion(name string) {
	fmt.Println(Version(name))
	os.Exit(0)
}

// versionLine formats build information. A binary built outside a module
// or a checkout (go run of a file, -buildvcs=false) lacks some of it, and
// says "devel" or "unknown" for what it lacks rather than guessing.
func versionLine(name string, bi *debug.BuildInfo, ok bool) string {
	version, goVersion := "devel", "go unknown"
	var rev, at string
	modified := false
	if ok && bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s version %s commit ", name, version)
	if rev == "" {
		b.WriteString("unknown")
	} else {
		b.WriteString(rev)
	}
	var notes []string
	if at != "" {
		notes = append(notes, at)
	}
	if modified {
		notes = append(notes, "modified")
	}
	if len(notes) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(notes, ", "))
	}
	fmt.Fprintf(&b, " %s", goVersion)
	return b.String()
}
