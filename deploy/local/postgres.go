package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// DefaultPGBinDir is where Debian and Ubuntu install the PostgreSQL 15 server
// binaries; it is searched before $PATH so that pg_dump and psql match the
// server's major version.
const DefaultPGBinDir = "/usr/lib/postgresql/15/bin"

// Field names used in this package's log events.
const (
	fieldComponent = "component"
	fieldCluster   = "cluster"
	fieldPort      = "port"
	fieldDir       = "dir"
	fieldServer    = "server"
	fieldDomain    = "domain"
)

// startTimeout bounds how long StartPostgres and Restart wait for a cluster
// to accept connections when the caller's context has no earlier deadline;
// crash recovery after Kill can take a few seconds on a slow disk.
const startTimeout = 60 * time.Second

// stopTimeout bounds a fast shutdown before Stop escalates to SIGKILL.
const stopTimeout = 30 * time.Second

// PostgresOptions configures a throwaway cluster. The zero value is usable:
// logical WAL, no fsync, a free port and a new directory under /tmp.
type PostgresOptions struct {
	// Name identifies the cluster in directory names and log events.
	// Default "pg".
	Name string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one. The port is kept
	// across Restart so that URLs handed out earlier stay valid.
	Port int
	// WALLevel is wal_level; default "logical". Tests set "replica" to check
	// that capture refuses such a primary with a clear error.
	WALLevel string
	// Fsync keeps fsync and full_page_writes on, for benchmarks that must pay
	// real durability costs. Off by default because test clusters do not
	// outlive the machine. synchronous_commit stays on either way: without
	// fsync it costs only a write(2), and it is what makes a commit survive
	// Kill (a process crash keeps the OS page cache, not unwritten WAL
	// buffers), so crash tests see no acknowledged transaction vanish. Set
	// Settings["synchronous_commit"] = "off" to trade that away.
	Fsync bool
	// Settings are extra postgresql.conf settings, written after the defaults
	// so they override them.
	Settings map[string]string
	// BaseDir is the directory under which the cluster directory is created.
	// "" creates a new directory under /tmp (mode 0711, so the postgres OS
	// user can traverse it when running as root) and removes it on Stop. A
	// given BaseDir must be traversable by the user running postgres and short
	// enough for a Unix socket path (about 100 bytes).
	BaseDir string
	// BinDir holds initdb and postgres; "" searches DefaultPGBinDir, then $PATH.
	BinDir string
	// TLS, when set, turns ssl on with TLS.ServerCert and TLS.ServerKey
	// (see GenerateTLS) and accepts TCP connections only over TLS
	// (hostssl); URL then asks for verify-full against TLS.CA.
	TLS *TLSFiles
	// BackupOf, when set, makes the data directory a pg_basebackup of that
	// running cluster instead of a new initdb: the same system identifier,
	// timeline and data as of the backup, as a restored backup has (its
	// replication slots are not copied).
	BackupOf *Postgres
	// Standby, with BackupOf, starts the copy as a standby that streams
	// nothing (standby.signal, no primary_conninfo): it stays at the
	// backup's point until promoted (SELECT pg_promote()), which starts a
	// new timeline there, as a failover to a lagging replica does.
	Standby bool
}

// Postgres is a PostgreSQL cluster run as a child process of this one.
// Its methods are safe for concurrent use.
type Postgres struct {
	opts        PostgresOptions
	log         zerolog.Logger
	postgresBin string
	runAs       *syscall.Credential // nil: run as the current user
	baseDir     string              // removed on Stop when ownBase
	ownBase     bool
	dir         string // cluster directory: data/, sock/, postgres.log

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the postmaster has exited
	removed bool
}

// MissingToolError reports that an external program pgjet needs is not
// installed; its message says what to install.
type MissingToolError struct {
	// Tool is the program name, e.g. "initdb".
	Tool string
	// Searched lists the places looked at.
	Searched []string
}

// Error implements error.
func (e *MissingToolError) Error() string {
	return fmt.Sprintf("%s not found in %s: install postgresql-15 (apt-get install postgresql-15)",
		e.Tool, strings.Join(e.Searched, ", "))
}

// findPGTool returns the path of a PostgreSQL program, preferring binDir (or
// DefaultPGBinDir) over $PATH so client and server versions match.
func findPGTool(binDir, name string) (string, error) {
	if binDir == "" {
		binDir = DefaultPGBinDir
	}
	p := filepath.Join(binDir, name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", &MissingToolError{Tool: name, Searched: []string{binDir, "$PATH"}}
}

// postgresCredential returns the credential to run server programs with:
// the postgres OS user when running as root, because Postgres refuses root.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres OS user to run the server as (install postgresql-15 or useradd postgres): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid %q of user postgres: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid %q of user postgres: %w", u.Gid, err)
	}
	// Empty Groups drops root's supplementary groups in the child.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// cleanEnv is the environment for spawned Postgres programs, without PG*
// variables: a PGHOST or PGOPTIONS of the caller must not redirect or alter
// the connections made to throwaway clusters.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// StartPostgres creates a new cluster with initdb, starts it and returns once
// a connection succeeds. On error nothing is left running and the directory
// is removed. The cluster runs until Stop; callers must call Stop.
func StartPostgres(ctx context.Context, opts PostgresOptions, log zerolog.Logger) (*Postgres, error) {
	if err := serversAllowed("Postgres"); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "pg"
	}
	if opts.WALLevel == "" {
		opts.WALLevel = "logical"
	}
	tool := "initdb"
	if opts.BackupOf != nil {
		tool = "pg_basebackup"
	}
	initdb, err := findPGTool(opts.BinDir, tool)
	if err != nil {
		return nil, err
	}
	postgresBin, err := findPGTool(opts.BinDir, "postgres")
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		opts:        opts,
		postgresBin: postgresBin,
		runAs:       cred,
	}
	if err := p.makeDirs(); err != nil {
		return nil, err
	}
	p.log = log.With().Str(fieldComponent, "local").Str(fieldCluster, opts.Name).Str(fieldDir, p.dir).Logger()
	ok := false
	defer func() {
		if !ok {
			p.removeDirs()
		}
	}()
	if opts.BackupOf != nil {
		err = p.basebackup(ctx, initdb, opts.BackupOf)
		if err == nil && opts.Standby {
			err = p.copyPrivate(os.DevNull, filepath.Join(p.DataDir(), "standby.signal"))
		}
	} else {
		err = p.initdb(ctx, initdb)
	}
	if err != nil {
		return nil, err
	}
	if err := p.writeConfig(); err != nil {
		return nil, err
	}
	autoPort := opts.Port == 0
	for attempt := 1; ; attempt++ {
		if autoPort {
			if p.opts.Port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		err = p.start(ctx)
		if err == nil {
			break
		}
		// FreePort cannot reserve the port; if someone else bound it in the
		// meantime, try another one rather than fail the test.
		if !autoPort || attempt == 3 || !portInUse(p.opts.Port) {
			return nil, err
		}
		p.log.Warn().Int(fieldPort, p.opts.Port).Msg("port taken before postgres bound it; retrying with another")
	}
	ok = true
	p.log = p.log.With().Int(fieldPort, p.opts.Port).Logger()
	p.log.Info().Str("log", p.LogPath()).Msg("postgres started")
	return p, nil
}

// makeDirs creates the base and cluster directories and hands the cluster
// directory to the user that runs postgres.
func (p *Postgres) makeDirs() error {
	p.baseDir = p.opts.BaseDir
	if p.baseDir == "" {
		// Not t.TempDir or $TMPDIR: when root, their parents are often not
		// traversable by the postgres user.
		d, err := os.MkdirTemp("/tmp", "pgjet-*")
		if err != nil {
			return fmt.Errorf("create base directory: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			os.RemoveAll(d)
			return fmt.Errorf("chmod base directory %s: %w", d, err)
		}
		p.baseDir, p.ownBase = d, true
	}
	d, err := os.MkdirTemp(p.baseDir, safeName(p.opts.Name)+"-*")
	if err != nil {
		p.removeDirs()
		return fmt.Errorf("create cluster directory: %w", err)
	}
	p.dir = d
	for _, sub := range []string{p.socketDir()} {
		if err := os.Mkdir(sub, 0o700); err != nil {
			p.removeDirs()
			return fmt.Errorf("create %s: %w", sub, err)
		}
	}
	if p.runAs != nil {
		for _, path := range []string{p.dir, p.socketDir()} {
			if err := os.Chown(path, int(p.runAs.Uid), int(p.runAs.Gid)); err != nil {
				p.removeDirs()
				return fmt.Errorf("chown %s to postgres: %w", path, err)
			}
		}
	}
	return nil
}

// safeName keeps names usable as a single path element.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

func (p *Postgres) removeDirs() {
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
	if p.ownBase {
		os.RemoveAll(p.baseDir)
	}
}

func (p *Postgres) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = p.dir // postgres cannot stat a root-only working directory
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.runAs}
	return cmd
}

// initdb creates the data directory. C.UTF-8 gives UTF-8 character semantics
// with byte-order collation; images without that locale fall back to C.
func (p *Postgres) initdb(ctx context.Context, initdb string) error {
	var firstErr error
	for _, locale := range []string{"C.UTF-8", "C"} {
		cmd := p.command(ctx, initdb, "-D", p.DataDir(), "-U", "postgres", "--auth=trust",
			"-E", "UTF8", "--locale="+locale, "--no-sync", "--no-instructions")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = fmt.Errorf("initdb %s with locale %s: %w\n%s", p.DataDir(), locale, err, strings.TrimSpace(string(out)))
		if firstErr == nil {
			firstErr = err
		}
		p.log.Warn().Err(err).Msg("initdb failed; retrying with another locale")
		os.RemoveAll(p.DataDir())
	}
	return firstErr
}

// basebackup copies the data directory of the running cluster src.
func (p *Postgres) basebackup(ctx context.Context, bin string, src *Postgres) error {
	cmd := p.command(ctx, bin, "-D", p.DataDir(), "-h", "127.0.0.1", "-p", strconv.Itoa(src.Port()), "-U", "postgres",
		"-X", "stream", "-c", "fast", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup of %s into %s: %w\n%s", src.Name(), p.DataDir(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeConfig appends pgjet's settings to postgresql.conf and replaces
// pg_hba.conf. Writing into existing files keeps them owned by postgres.
func (p *Postgres) writeConfig() error {
	durability := "off"
	if p.opts.Fsync {
		durability = "on"
	}
	settings := []string{
		"listen_addresses", "127.0.0.1",
		"unix_socket_directories", p.socketDir(),
		"wal_level", p.opts.WALLevel,
		"max_replication_slots", "20",
		"max_wal_senders", "20",
		"max_connections", "200",
		"fsync", durability,
		// Always on; see PostgresOptions.Fsync.
		"synchronous_commit", "on",
		"full_page_writes", durability,
		// Last-writer-wins conflict handling reads commit timestamps.
		"track_commit_timestamp", "on",
		"shared_buffers", "128MB",
		// postgres' stderr goes to postgres.log in the cluster directory.
		"logging_collector", "off",
		"log_destination", "stderr",
		"log_line_prefix", "%m [%p] %q%u@%d ",
	}
	keys := make([]string, 0, len(p.opts.Settings))
	for k := range p.opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		settings = append(settings, k, p.opts.Settings[k])
	}
	if p.opts.TLS != nil {
		// Postgres reads the key only when it is private to the user it
		// runs as, so both files are copied into the data directory.
		for _, f := range [][2]string{{p.opts.TLS.ServerCert, "server.crt"}, {p.opts.TLS.ServerKey, "server.key"}} {
			if err := p.copyPrivate(f[0], filepath.Join(p.DataDir(), f[1])); err != nil {
				return err
			}
		}
		settings = append(settings, "ssl", "on", "ssl_cert_file", "server.crt", "ssl_key_file", "server.key")
	}
	var b strings.Builder
	b.WriteString("\n# Added by pgjet deploy/local.\n")
	for i := 0; i < len(settings); i += 2 {
		fmt.Fprintf(&b, "%s = '%s'\n", settings[i], strings.ReplaceAll(settings[i+1], "'", "''"))
	}
	conf := filepath.Join(p.DataDir(), "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", conf, err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", conf, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", conf, err)
	}
	// Replication connections match only the "replication" keyword, not
	// "all", so they need their own lines.
	hba := `# Written by pgjet deploy/local: trust everything local.
local   all           all                  trust
host    all           all   127.0.0.1/32   trust
host    all           all   ::1/128        trust
local   replication   all                  trust
host    replication   all   127.0.0.1/32   trust
host    replication   all   ::1/128        trust
`
	if p.opts.TLS != nil {
		hba = strings.ReplaceAll(hba, "\nhost ", "\nhostssl ")
	}
	hbaPath := filepath.Join(p.DataDir(), "pg_hba.conf")
	if err := os.WriteFile(hbaPath, []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", hbaPath, err)
	}
	return nil
}

// copyPrivate copies src to dst, mode 0600, owned by the user postgres
// runs as.
func (p *Postgres) copyPrivate(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if p.runAs != nil {
		if err := os.Chown(dst, int(p.runAs.Uid), int(p.runAs.Gid)); err != nil {
			return fmt.Errorf("chown %s to postgres: %w", dst, err)
		}
	}
	return nil
}

// start runs the postmaster as a child and waits until it accepts
// connections. The caller holds no lock; start is called before the Postgres
// is shared, or with p.mu held by Restart.
func (p *Postgres) start(ctx context.Context) error {
	logf, err := os.OpenFile(p.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	// Not CommandContext: the server must outlive the context of the call
	// that started it.
	cmd := exec.Command(p.postgresBin, "-D", p.DataDir(), "-p", strconv.Itoa(p.opts.Port))
	cmd.Dir = p.dir
	cmd.Env = cleanEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: p.runAs,
		// Own process group, so Kill reaches the backends too.
		Setpgid: true,
		// A test binary killed by its timeout must not leave clusters behind.
		Pdeathsig: syscall.SIGKILL,
	}
	err = cmd.Start()
	logf.Close() // the child holds its own descriptor
	if err != nil {
		return fmt.Errorf("start postgres on port %d: %w", p.opts.Port, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, p.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("postgres on port %d exited during startup (%v); log %s:\n%s",
				p.opts.Port, cmd.ProcessState, p.LogPath(), p.LogTail(2048))
		case <-ctx.Done():
			p.killProcess()
			return fmt.Errorf("wait for postgres on port %d to accept connections: %w (last: %v); log %s:\n%s",
				p.opts.Port, ctx.Err(), err, p.LogPath(), p.LogTail(2048))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// running reports whether the postmaster is alive. p.mu must be held.
func (p *Postgres) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stopProcess shuts the server down with SIGINT (fast shutdown: roll back
// sessions, checkpoint, exit) and escalates to SIGKILL after stopTimeout.
func (p *Postgres) stopProcess() {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.log.Warn().Float64("timeout_s", stopTimeout.Seconds()).Msg("fast shutdown timed out; killing postgres")
		p.killProcess()
	}
}

// killProcess sends SIGKILL to the postmaster's whole process group and
// waits for it to exit. Backends are killed too: a restarted postmaster
// refuses to start while an orphaned backend still holds the old shared
// memory segment.
func (p *Postgres) killProcess() {
	if !p.running() {
		return
	}
	pid := p.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	// Orphaned backends are reaped by init; wait for them so a restart finds
	// the shared memory free. Zombies never disappear where PID 1 does not
	// reap, hence the bound.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL returns a connection URL for database db as user postgres over TCP,
// e.g. postgres://postgres@127.0.0.1:5432/app?sslmode=disable. With
// PostgresOptions.TLS it verifies the server against the CA instead.
func (p *Postgres) URL(db string) string {
	q := url.Values{"sslmode": {"disable"}}
	if p.opts.TLS != nil {
		q = url.Values{"sslmode": {"verify-full"}, "sslrootcert": {p.opts.TLS.CA}}
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     fmt.Sprintf("127.0.0.1:%d", p.opts.Port),
		Path:     "/" + db,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// Port returns the TCP port, which stays the same across Restart.
func (p *Postgres) Port() int { return p.opts.Port }

// Name returns the cluster name from the options.
func (p *Postgres) Name() string { return p.opts.Name }

// Options returns the options the cluster runs with, Port resolved.
func (p *Postgres) Options() PostgresOptions { return p.opts }

// Dir returns the cluster directory holding data/, sock/ and postgres.log.
func (p *Postgres) Dir() string { return p.dir }

// DataDir returns the data directory (PGDATA).
func (p *Postgres) DataDir() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) socketDir() string { return filepath.Join(p.dir, "sock") }

// LogPath returns the server log file, so a failing test can show it.
// The file is removed by Stop.
func (p *Postgres) LogPath() string { return filepath.Join(p.dir, "postgres.log") }

// LogTail returns up to the last n bytes of the server log, or a note saying
// why it cannot be read.
func (p *Postgres) LogTail(n int64) string {
	f, err := os.Open(p.LogPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// PID returns the postmaster's process id, or 0 when it is not running.
func (p *Postgres) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the postmaster is alive.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running()
}

// Exec runs sql, which may hold several statements, in database db over a
// short-lived connection. It is meant for setup, not for load.
func (p *Postgres) Exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, p.URL(db))
	if err != nil {
		return fmt.Errorf("connect to %s database %q: %w", p.opts.Name, db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("exec on %s database %q: %w", p.opts.Name, db, err)
	}
	return nil
}

// CreateDatabase creates database name, owned by postgres.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	return p.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Stop shuts the server down fast (as pg_ctl stop -m fast does), waits for
// it to exit and removes the cluster directory. It is idempotent and also
// cleans up after Kill.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return nil
	}
	p.stopProcess()
	p.removed = true
	var err error
	if rmErr := os.RemoveAll(p.dir); rmErr != nil {
		err = fmt.Errorf("remove cluster directory: %w", rmErr)
	}
	if p.ownBase {
		if rmErr := os.RemoveAll(p.baseDir); rmErr != nil && err == nil {
			err = fmt.Errorf("remove base directory: %w", rmErr)
		}
	}
	p.log.Info().Msg("postgres stopped")
	return err
}

// Kill sends SIGKILL to the postmaster and its backends, as a machine crash
// would, and waits for them to exit. The directory is kept, so Restart runs
// crash recovery. Killing a stopped cluster is a no-op.
func (p *Postgres) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return fmt.Errorf("kill postgres %s: already stopped and removed", p.opts.Name)
	}
	p.killProcess()
	p.log.Info().Msg("postgres killed")
	return nil
}

// Restart starts the server again on the same directory and port, after a
// fast shutdown if it is running. It returns once a connection succeeds.
func (p *Postgres) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return fmt.Errorf("restart postgres %s: already stopped and removed", p.opts.Name)
	}
	p.stopProcess()
	err := p.start(ctx)
	// After a kill, the last backends may still hold the shared memory
	// for a moment (orphans, reaped by init when it gets to them).
	for try := 0; err != nil && strings.Contains(err.Error(), "pre-existing shared memory block") && try < 20; try++ {
		time.Sleep(250 * time.Millisecond)
		err = p.start(ctx)
	}
	if err != nil {
		return fmt.Errorf("restart postgres %s: %w", p.opts.Name, err)
	}
	p.log.Info().Msg("postgres restarted")
	return nil
}
