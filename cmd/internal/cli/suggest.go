package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// Suggest returns the candidate that name most likely misspells, or ""
// when none is near enough to be what was meant. Nearness is the edit
// distance with adjacent transpositions counted as one edit ("stauts" is
// one edit from "status"); the first of equally near candidates wins.
func Suggest(name string, candidates []string) string {
	// A typo of a short name is a small part of it: allow an edit per four
	// letters, and never as many edits as the name has letters.
	limit := 1 + len(name)/4
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestD && d < len(name) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b: the
// insertions, deletions, substitutions and adjacent transpositions that
// turn a into b.
func editDistance(a, b string) int {
	// Three rows of the dynamic programming table: i-2, i-1 and i.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// flagError rewrites a parse error of fs for a person: an unknown flag
// names the flag most likely meant.
func flagError(fs *pflag.FlagSet, err error) error {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) {
		return fmt.Errorf("%w (see --help)", err)
	}
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			names = append(names, f.Name)
		}
	})
	given, dashes := ne.GetSpecifiedName(), "--"
	if short := ne.GetSpecifiedShortnames(); short != "" {
		// -nats: a long flag with one dash, as Go's flag package takes them.
		given, _, _ = strings.Cut(short, "=")
		dashes = "-"
	}
	msg := "unknown flag " + dashes + given
	if s := Suggest(given, names); s != "" {
		msg += ": did you mean --" + s + "?"
	}
	return errors.New(msg + " (see --help)")
}
