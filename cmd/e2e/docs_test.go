package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite docs/flags.md from the binaries' --help")

// flagsDoc is the flag reference generated from the binaries.
var flagsDoc = filepath.Join("..", "..", "docs", "flags.md")

// TestDocs_FlagReference: docs/flags.md is what the binaries' --help
// says, flag for flag, so the reference cannot drift from the code. After
// a flag changes, `go test ./cmd/e2e -run TestDocs_FlagReference
// -update-docs` writes it again.
func TestDocs_FlagReference(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("# Flag reference\n\n")
	b.WriteString("Generated from each binary's `--help` by `go test ./cmd/e2e -run TestDocs_FlagReference -update-docs`;\n")
	b.WriteString("the test fails when this file and the binaries disagree. Every flag is also read from the\n")
	b.WriteString("environment variable shown, and the daemons read the same names as keys of the YAML file given\n")
	b.WriteString("with `--config`; flags win over the environment, which wins over the file.\n")
	cmds := [][]string{{"pgjet-capture"}, {"pgjet-apply"}}
	for _, c := range pgjetCommands(t) {
		if c == "drop" {
			cmds = append(cmds, []string{"pgjet", "drop", "source"}, []string{"pgjet", "drop", "region"})
			continue
		}
		cmds = append(cmds, []string{"pgjet", c})
	}
	for _, c := range cmds {
		help := helpText(t, c)
		fmt.Fprintf(&b, "\n## `%s`\n\n", strings.Join(c, " "))
		if first := strings.TrimSpace(strings.SplitN(help, "\n\n", 2)[0]); first != "" && !strings.HasPrefix(first, "Usage") && !strings.HasPrefix(first, "Flags") {
			b.WriteString(strings.Join(strings.Fields(first), " ") + "\n\n")
		}
		rows := flagRows(t, strings.Join(c, " "), help)
		b.WriteString("| flag | value | default | environment | meaning |\n|---|---|---|---|---|\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| `--%s` | %s | %s | %s | %s |\n", r.name, r.typ, r.def, r.env, strings.ReplaceAll(r.usage, "|", `\|`))
		}
	}
	got := b.String()
	if *updateDocs {
		if err := os.WriteFile(flagsDoc, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(flagsDoc)
	if err != nil {
		t.Fatalf("%v: run go test ./cmd/e2e -run TestDocs_FlagReference -update-docs", err)
	}
	if string(want) != got {
		wl, gl := strings.Split(string(want), "\n"), strings.Split(got, "\n")
		for i := 0; i < len(wl) || i < len(gl); i++ {
			var w, g string
			if i < len(wl) {
				w = wl[i]
			}
			if i < len(gl) {
				g = gl[i]
			}
			if w != g {
				t.Fatalf("docs/flags.md differs from the binaries' --help at line %d:\n  file:   %s\n  binary: %s\nrun go test ./cmd/e2e -run TestDocs_FlagReference -update-docs", i+1, w, g)
			}
		}
	}
}

// pgjetCommands lists the commands `pgjet --help` names.
func pgjetCommands(t *testing.T) []string {
	t.Helper()
	help := helpText(t, []string{"pgjet"})
	_, after, ok := strings.Cut(help, "Commands:\n")
	if !ok {
		t.Fatalf("pgjet --help lists no commands:\n%s", help)
	}
	var cmds []string
	for _, l := range strings.Split(after, "\n") {
		if !strings.HasPrefix(l, "  ") {
			break
		}
		cmds = append(cmds, strings.Fields(l)[0])
	}
	return cmds
}

// helpText runs a binary (with a pgjet command) with --help.
func helpText(t *testing.T, c []string) string {
	t.Helper()
	bin := map[string]string{"pgjet-capture": bins.capture, "pgjet-apply": bins.apply, "pgjet": bins.pgjet}[c[0]]
	var out bytes.Buffer
	cmd := exec.Command(bin, append(c[1:], "--help")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no PGJET_* from the caller
	_ = cmd.Run()                                   // --help exits 0 or 2 by command
	return out.String()
}

type flagRow struct{ name, typ, def, env, usage string }

// pflagLine is one line of pflag's FlagUsages with the [ENV] cli adds.
var pflagLine = regexp.MustCompile(`^\s+(?:-\w, )?--([\w-]+)(?:\[=[^\]]*\])?(?: (\w+))?\s{2,}(.*?)(?: \[(PGJET_\w+)\])?(?: \(default (.*)\))?$`)

// flagRows parses the flag lines of help.
func flagRows(t *testing.T, name, help string) []flagRow {
	t.Helper()
	_, flags, ok := strings.Cut(help, "Flags")
	if !ok {
		t.Fatalf("%s --help has no Flags section:\n%s", name, help)
	}
	var rows []flagRow
	for _, l := range strings.Split(flags, "\n")[1:] {
		if strings.TrimSpace(l) == "" {
			continue
		}
		m := pflagLine.FindStringSubmatch(l)
		if m == nil {
			if len(rows) > 0 && strings.HasPrefix(l, "    ") {
				rows[len(rows)-1].usage += " " + strings.TrimSpace(l)
				continue
			}
			break
		}
		typ := m[2]
		if typ == "" {
			typ = "bool"
		}
		def := "—"
		if m[5] != "" {
			def = "`" + m[5] + "`"
		}
		env := "—"
		if m[4] != "" {
			env = "`" + m[4] + "`"
		}
		rows = append(rows, flagRow{name: m[1], typ: typ, def: def, env: env, usage: m[3]})
	}
	if len(rows) == 0 {
		t.Fatalf("%s --help: no flag line parsed:\n%s", name, flags)
	}
	return rows
}
