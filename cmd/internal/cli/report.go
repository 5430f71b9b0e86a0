package cli

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/stream"
)

// ConfigResult is the first line of a --check-config report: the
// configuration parsed and validated (a daemon exits 2 before the checks
// when it does not), and where it came from.
func ConfigResult(fs *pflag.FlagSet) stream.CheckResult {
	from := "flags and PGJET_* variables"
	if path, _ := fs.GetString(ConfigFlag); path != "" {
		from = path + ", PGJET_* variables and flags"
	}
	return stream.Pass("configuration", "valid (%s)", from)
}

// Report prints a --check-config report, one line a check, and returns
// the exit status: 0 when every check passed, 1 otherwise.
func Report(w io.Writer, results []stream.CheckResult) int {
	failed, warned := 0, 0
	for _, r := range results {
		mark := "OK  "
		switch {
		case !r.OK:
			mark = "FAIL"
			failed++
		case r.Warn:
			mark = "WARN"
			warned++
		}
		fmt.Fprintf(w, "%s  %-26s %s\n", mark, r.Name, r.Detail)
	}
	if failed > 0 {
		fmt.Fprintf(w, "%d of %d checks failed\n", failed, len(results))
		return 1
	}
	if warned > 0 {
		fmt.Fprintf(w, "all %d checks passed, %d with a warning\n", len(results), warned)
		return 0
	}
	fmt.Fprintf(w, "all %d checks passed\n", len(results))
	return 0
}
