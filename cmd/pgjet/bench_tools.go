package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/schema/redact"
)

// benchTools are the Postgres client programs the benchmark runs.
type benchTools struct {
	pgbenchBin, pgDump, psql string
}

// findBenchTools looks for the client programs beside the Postgres 15
// server binaries first, so that they match the server's major version,
// then on $PATH.
func findBenchTools() (benchTools, error) {
	var t benchTools
	var missing []string
	for _, tool := range []struct {
		name string
		path *string
	}{{"pgbench", &t.pgbenchBin}, {"pg_dump", &t.pgDump}, {"psql", &t.psql}} {
		p := filepath.Join(local.DefaultPGBinDir, tool.name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			*tool.path = p
			continue
		}
		if p, err := exec.LookPath(tool.name); err == nil {
			*tool.path = p
			continue
		}
		missing = append(missing, tool.name)
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("%s not found in %s or on $PATH: install postgresql-15 and postgresql-client-15 (apt-get install postgresql-15 postgresql-client-15)",
			strings.Join(missing, ", "), local.DefaultPGBinDir)
	}
	return t, nil
}

// clientCommand prepares a client program: without the caller's PG*
// variables (a PGHOST or PGOPTIONS must not redirect or alter it), in its
// own process group (a Ctrl-C at the terminal is the benchmark's to
// handle) and killed if this process dies.
func clientCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// pgbench runs pgbench to completion and returns its output; the error
// includes the output's tail.
func (t benchTools) pgbench(ctx context.Context, log zerolog.Logger, args ...string) (string, error) {
	cmd := clientCommand(ctx, t.pgbenchBin, args...)
	var out benchTail
	cmd.Stdout, cmd.Stderr = &out, &out
	shown := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, "://") {
			a = "<primary>"
		}
		shown[i] = a
	}
	log.Debug().Strs("args", shown).Msg("run pgbench")
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("pgbench %s: %w\n%s", strings.Join(shown, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// dumpRestore copies schema and data of the database at fromURL into the
// database at toURL: pg_dump --no-owner --no-privileges | psql
// -v ON_ERROR_STOP=1. Errors include the tools' stderr.
func (t benchTools) dumpRestore(ctx context.Context, fromURL, toURL string) error {
	dump := clientCommand(ctx, t.pgDump, "--no-owner", "--no-privileges", "--dbname="+fromURL)
	var dumpErr benchTail
	dump.Stderr = &dumpErr
	restore := clientCommand(ctx, t.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname="+toURL)
	var restoreErr benchTail
	restore.Stdout = io.Discard
	restore.Stderr = &restoreErr
	pipe, err := dump.StdoutPipe()
	if err != nil {
		return fmt.Errorf("pipe pg_dump into psql: %w", err)
	}
	restore.Stdin = pipe
	if err := dump.Start(); err != nil {
		return fmt.Errorf("start pg_dump: %w", err)
	}
	if err := restore.Start(); err != nil {
		dump.Process.Kill()
		dump.Wait()
		return fmt.Errorf("start psql: %w", err)
	}
	// psql holds its own copy of the pipe's read end, so waiting for
	// pg_dump (which closes ours) cannot cut psql's input short.
	dumpWaitErr := dump.Wait()
	restoreWaitErr := restore.Wait()
	// psql failing first makes pg_dump die of SIGPIPE; psql's error is the cause.
	if restoreWaitErr != nil {
		return fmt.Errorf("psql into %s: %w: %s", redact.Postgres(toURL), restoreWaitErr, strings.TrimSpace(restoreErr.String()))
	}
	if dumpWaitErr != nil {
		return fmt.Errorf("pg_dump from %s: %w: %s", redact.Postgres(fromURL), dumpWaitErr, strings.TrimSpace(dumpErr.String()))
	}
	return nil
}

// benchTail keeps the last 16 KiB written to it.
type benchTail struct {
	mu  sync.Mutex
	buf []byte
}

const benchTailMax = 16 << 10

func (b *benchTail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if n := len(b.buf); n > benchTailMax {
		b.buf = append(b.buf[:0], b.buf[n-benchTailMax:]...)
	}
	return len(p), nil
}

func (b *benchTail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
