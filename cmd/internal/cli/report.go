package cli

import (
	"fmt"
	"io"

	"github.com/pgjet/pgjet/stream"
)

// Report prints a --check-config report, one line a check, and returns
// the exit status: 0 when every check passed, 1 otherwise.
func Report(w io.Writer, results []stream.CheckResult) int {
	failed := 0
	for _, r := range results {
		mark := "OK  "
		if !r.OK {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s  %-26s %s\n", mark, r.Name, r.Detail)
	}
	if failed > 0 {
		fmt.Fprintf(w, "%d of %d checks failed\n", failed, len(results))
		return 1
	}
	fmt.Fprintf(w, "all %d checks passed\n", len(results))
	return 0
}
