package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pgjet/pgjet/deploy/local"
)

// cliRun runs one of the binaries (bin is "pgjet-capture", "pgjet-apply" or
// "pgjet") to its end and returns its exit status and non-empty output
// lines, stdout and stderr together.
func cliRun(t *testing.T, bin string, args ...string) (int, []string) {
	t.Helper()
	path := map[string]string{"pgjet-capture": bins.capture, "pgjet-apply": bins.apply, "pgjet": bins.pgjet}[bin]
	p := start(t, bin+" "+strings.Join(args, " "), path, args...)
	code := p.Wait(t, 60*time.Second)
	return code, outputLines(p.Output())
}

// TestCLI_UnknownFlag: a mistyped flag is one line that names the flag
// meant, exit 2, in every binary and subcommand.
func TestCLI_UnknownFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{"pgjet-capture", []string{"--db", "postgres://h/db", "--heartbeet", "1s"}, "pgjet-capture: unknown flag --heartbeet: did you mean --heartbeat?"},
		{"pgjet-apply", []string{"--regoin", "r1"}, "pgjet-apply: unknown flag --regoin: did you mean --region?"},
		{"pgjet-apply", []string{"--log-formt=console"}, "pgjet-apply: unknown flag --log-formt: did you mean --log-format?"},
		{"pgjet", []string{"status", "--db-regoin", "r1=postgres://h/db"}, "pgjet status: unknown flag --db-regoin: did you mean --db-region?"},
		{"pgjet", []string{"verify", "--chunk-row", "3"}, "pgjet verify: unknown flag --chunk-row: did you mean --chunk-rows?"},
		{"pgjet", []string{"drop", "source", "--sreams"}, "pgjet drop source: unknown flag --sreams: did you mean --streams?"},
		{"pgjet", []string{"tail", "--zzzzzzzzzz"}, "pgjet tail: unknown flag --zzzzzzzzzz"},
	} {
		t.Run(tc.bin+" "+tc.args[len(tc.args)-1], func(t *testing.T) {
			code, lines := cliRun(t, tc.bin, tc.args...)
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Errorf("exit %d, output %q; want exit 2 and one line starting %q", code, lines, tc.want)
			}
		})
	}
}

// TestCLI_UnknownCommand: a mistyped pgjet subcommand names the one meant.
func TestCLI_UnknownCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stauts", "--nats", "nats://h:4222"}, `pgjet: unknown command "stauts": did you mean status?`},
		{[]string{"replya"}, `pgjet: unknown command "replya": did you mean replay?`},
		{[]string{"drop", "regoin"}, `pgjet drop: unknown part "regoin": did you mean region?`},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			code, lines := cliRun(t, "pgjet", tc.args...)
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Errorf("exit %d, output %q; want exit 2 and one line starting %q", code, lines, tc.want)
			}
		})
	}
}

// TestCLI_RequiredFlag: a missing required flag is one line,
// "<command>: --flag is required (what it is)", exit 2, everywhere; several
// missing are one such line each.
func TestCLI_RequiredFlag(t *testing.T) {
	t.Parallel()
	const db, nats = "postgres://h/db", "nats://127.0.0.1:4222"
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{"pgjet-capture", []string{"--nats", nats, "--name", "src"}, "pgjet-capture: --db is required ("},
		{"pgjet-capture", []string{"--db", db, "--nats", nats}, "pgjet-capture: --name is required ("},
		{"pgjet-apply", []string{"--nats", nats, "--name", "src", "--region", "r1"}, "pgjet-apply: --db is required ("},
		{"pgjet-apply", []string{"--db", db, "--nats", nats, "--name", "src"}, "pgjet-apply: --region is required ("},
		{"pgjet", []string{"tail", "--nats", nats}, "pgjet tail: --name is required ("},
		{"pgjet", []string{"status"}, "pgjet status: --nats is required ("},
		{"pgjet", []string{"verify", "--target", db}, "pgjet verify: --source is required ("},
		{"pgjet", []string{"roles", "--source", db}, "pgjet roles: --target is required ("},
		{"pgjet", []string{"snapshot", "--nats", nats, "--name", "src"}, "pgjet snapshot: --db is required ("},
		{"pgjet", []string{"replay", "--db", db, "--name", "src"}, "pgjet replay: --nats is required ("},
		{"pgjet", []string{"resync", "--db", db, "--nats", nats, "--name", "src"}, "pgjet resync: --table is required ("},
		{"pgjet", []string{"skip", "--db", db, "--nats", nats, "--name", "src", "--region", "r1"}, "pgjet skip: --lsn is required ("},
		{"pgjet", []string{"skip", "--db", db, "--nats", nats, "--name", "src", "--lsn", "0/1"}, "pgjet skip: --region is required ("},
		{"pgjet", []string{"drop", "source", "--name", "src"}, "pgjet drop source: --db is required ("},
		{"pgjet", []string{"drop", "region", "--db", db, "--nats", nats, "--name", "src"}, "pgjet drop region: --region is required ("},
	} {
		t.Run(tc.want, func(t *testing.T) {
			code, lines := cliRun(t, tc.bin, tc.args...)
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Errorf("exit %d, output %q; want exit 2 and one line starting %q", code, lines, tc.want)
			}
		})
	}
	t.Run("several", func(t *testing.T) {
		code, lines := cliRun(t, "pgjet-apply")
		if code != 2 || len(lines) != 4 {
			t.Fatalf("exit %d, output %q; want exit 2 and a line for each of --db, --nats, --name, --region", code, lines)
		}
		for i, flag := range []string{"--db", "--nats", "--name", "--region"} {
			if want := "pgjet-apply: " + flag + " is required ("; !strings.HasPrefix(lines[i], want) {
				t.Errorf("line %d = %q, want it to start %q", i+1, lines[i], want)
			}
		}
	})
}

// TestCLI_LogLines: a short capture, apply and replay run logs JSON
// (stderr is a pipe here) in which no line repeats a key and durations
// say their unit.
func TestCLI_LogLines(t *testing.T) {
	t.Parallel()
	// The replica starts empty: the applier restores the snapshot.
	c := newCluster(t)
	exec1(t, c.src, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t SELECT i, 'a' FROM generate_series(1, 100) i")
	// At debug level, to see more kinds of lines.
	capt := c.capture(t, "--log-level", "debug")
	capt.waitLog(t, "snapshot complete")
	app := c.apply(t, "--log-level", "debug")
	exec1(t, c.src, "UPDATE t SET v = 'b' WHERE id <= 50", "DELETE FROM t WHERE id > 90",
		"ALTER TABLE t ADD COLUMN w int", "INSERT INTO t VALUES (101, 'c', 1)")
	waitSame(t, 60*time.Second, c.src, c.dst)
	app.Stop(t)
	capt.Stop(t)
	checkLogLines(t, capt.name, capt.Output(), true)
	checkLogLines(t, app.name, app.Output(), true)

	exec1(t, c.dst, "CREATE DATABASE restore")
	code, out := runPgjet(t, "replay", "--nats", c.nats.ClientURL(), "--name", "src", "--db", c.replica.URL("restore"), "--log-level", "debug")
	if code != 0 {
		t.Fatalf("pgjet replay exited %d:\n%s", code, out)
	}
	// Its stdout, in the same output here, is no log.
	checkLogLines(t, "pgjet replay", out, false)
}

// checkLogLines checks the JSON log lines of out: no repeated key, no
// duration without its unit, whole milliseconds in took_ms. With allJSON,
// every line must be JSON.
func checkLogLines(t *testing.T, name, out string, allJSON bool) {
	t.Helper()
	n := 0
	for i, line := range outputLines(out) {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			if allJSON || strings.HasPrefix(line, "{") {
				t.Errorf("%s line %d is not JSON: %q", name, i+1, line)
			}
			continue
		}
		n++
		dups, err := jsonDuplicateKeys(line)
		if err != nil {
			t.Fatal(err)
		}
		if len(dups) > 0 {
			t.Errorf("%s line %d repeats %q: %s", name, i+1, dups, line)
		}
		for _, bare := range []string{"took", "down", "retry_in", "timeout", "eta", "max_age", "shutdown_timeout"} {
			if _, ok := ev[bare]; ok {
				t.Errorf("%s line %d has duration %q without its unit: %s", name, i+1, bare, line)
			}
		}
		if m := ev["message"]; m == "snapshot complete" || m == "snapshot restored; following changes" {
			ms, ok := ev["took_ms"].(float64)
			if !ok || ms != float64(int64(ms)) {
				t.Errorf("%s %s: took_ms = %v, want whole milliseconds: %s", name, m, ev["took_ms"], line)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s logged no JSON line:\n%s", name, out)
	}
}

// jsonDuplicateKeys walks line's tokens and returns the keys repeated in
// one of its objects.
func jsonDuplicateKeys(line string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var stack []*frame
	var dups []string
	// afterValue marks the enclosing object as expecting a key again.
	afterValue := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return dups, nil
		}
		if err != nil {
			return nil, err
		}
		top := (*frame)(nil)
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				if top != nil && top.keys != nil {
					top.wantKey = false
				}
				stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
			case '[':
				if top != nil && top.keys != nil {
					top.wantKey = false
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				afterValue()
			}
			continue
		}
		if top != nil && top.keys != nil && top.wantKey {
			k := tok.(string)
			if top.keys[k] {
				dups = append(dups, k)
			}
			top.keys[k] = true
			top.wantKey = false
			continue
		}
		afterValue()
	}
}

func TestCLI_DuplicateKeysWalk(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string
	}{
		{`{"a":1,"b":"a","c":{"a":2}}`, ""},
		{`{"a":1,"b":2,"a":3}`, "a"},
		{`{"x":[{"a":1,"a":2}],"y":"x"}`, "a"},
		{`{"x":{"a":1},"x":[1,"x"]}`, "x"},
		{`{"s":["a","a"],"t":{"u":{}},"t":1}`, "t"},
	} {
		dups, err := jsonDuplicateKeys(tc.line)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(dups, ","); got != tc.want {
			t.Errorf("%s: duplicates %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestCLI_ConsoleFormat: --log-format console (or PGJET_LOG_FORMAT) writes
// plain text lines, without colour codes when stderr is no terminal.
func TestCLI_ConsoleFormat(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY)")
	p := start(t, "pgjet-capture", bins.capture, "--db", c.src, "--nats", c.nats.ClientURL(), "--name", "src", "--log-format", "console")
	waitFor(t, 60*time.Second, "capture started", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("pgjet-capture exited:\n%s", p.Output())
		}
		return strings.Contains(p.Output(), "capture started"), tail(p.Output(), 300)
	})
	p.Stop(t)
	for _, l := range outputLines(p.Output()) {
		if strings.HasPrefix(l, "{") || strings.Contains(l, "\x1b[") {
			t.Errorf("line is JSON or coloured, want plain text: %q", l)
		}
	}
}

// TestCLI_FatalOneLine: a fatal error is printed once, as one line naming
// the command: with --log-format console, and at a terminal (where console
// is the default), not as a log line and a plain line both.
func TestCLI_FatalOneLine(t *testing.T) {
	t.Parallel()
	nats := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"})
	args := []string{"--db", pg.URL("nosuchdb"), "--nats", nats.ClientURL(), "--name", "src"}
	check := func(t *testing.T, code int, out string) {
		t.Helper()
		var errLines []string
		for _, l := range outputLines(strings.ReplaceAll(out, "\r", "")) {
			if strings.HasPrefix(l, "{") {
				t.Errorf("JSON line in a console log: %q", l)
			}
			if strings.Contains(l, "does not exist") {
				errLines = append(errLines, l)
			}
		}
		if code != 1 || len(errLines) != 1 || !strings.HasPrefix(errLines[0], "pgjet-capture: ") {
			t.Errorf("exit %d, error lines %q; want exit 1 and one line \"pgjet-capture: ...\"; output:\n%s", code, errLines, out)
		}
	}
	t.Run("console", func(t *testing.T) {
		p := start(t, "pgjet-capture", bins.capture, append(args, "--log-format", "console")...)
		code := p.Wait(t, 60*time.Second)
		check(t, code, p.Output())
	})
	t.Run("terminal", func(t *testing.T) {
		code, out := runInTerminal(t, bins.capture, args...)
		check(t, code, out)
	})
}

// runInTerminal runs bin with its stdout and stderr on a new pseudo
// terminal and returns its exit status and what it wrote there.
func runInTerminal(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo terminal: %v", err)
	}
	defer master.Close()
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock the pseudo terminal: %v", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("name the pseudo terminal: %v", e)
	}
	term, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pseudo terminal: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = term, term
	cmd.Env = append(os.Environ(), "PGJET_LOG_LEVEL=info")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	term.Close() // the child holds it; reading ends when the child exits
	var out bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = io.Copy(&out, master) }() // ends with EIO
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s still running after 60s", bin)
	}
	wg.Wait()
	return cmd.ProcessState.ExitCode(), out.String()
}
