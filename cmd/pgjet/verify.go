package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/apply/verify"
	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/schema/redact"
)

// verifyFlags are the flags of `pgjet verify`.
type verifyFlags struct {
	source, target string
	tables         []string
	// capture holds --include-tables, --exclude-tables and
	// --exclude-columns, the flags of pgjet-capture.
	capture   capture.Config
	filter    capture.Filter
	chunkRows int64
	waitLSN   bool
	timeout   time.Duration
	name      string
	json      bool
	repair    bool
	force     bool
}

// verifyProgressEvery is how often progress goes to stderr.
const verifyProgressEvery = 2 * time.Second

// verifyConnectTimeout bounds each connection attempt, so an unreachable
// host fails in seconds rather than at the TCP timeout.
const verifyConnectTimeout = 10 * time.Second

func runVerify(args []string) int {
	def := verify.DefaultOptions()
	f := verifyFlags{chunkRows: def.ChunkRows, waitLSN: def.WaitLSN, timeout: def.WaitTimeout}
	fs := pflag.NewFlagSet("pgjet verify", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet verify proves that a replica equals its primary, table by table. For each table\n"+
			"it compares the column lists, then cuts the table into ranges of the source's primary\n"+
			"key (--chunk-rows source rows each) and compares, per range, the row count and an\n"+
			"order-independent digest of the rows' text form on both sides. Tables without a\n"+
			"primary key are compared whole. Each side of a table is read in one REPEATABLE READ\n"+
			"READ ONLY snapshot.\n\n"+
			"With --wait-lsn (the default) it first reads the source's WAL position L and waits\n"+
			"until the target's pgjet.applied shows every source transaction committed before L\n"+
			"applied: until the applied end LSN reaches L, or, on an idle source, until the\n"+
			"source's slot pgjet_<name> has confirmed past L and the applied position has stood\n"+
			"still for 3s. A target without pgjet.applied is compared at once. A range that\n"+
			"differs is compared again up to 3 times (after 1s, 2s, 4s) in fresh snapshots, so a\n"+
			"replica still catching up converges and only a lasting difference is reported.\n\n"+
			"Exit status: 0 when every table is identical, 1 when one differs or a database\n"+
			"cannot be read, 2 for bad flags.\n\n"+
			"Give it the table filters pgjet-capture runs with (--tables, --include-tables,\n"+
			"--exclude-tables, --exclude-columns): a replica holds only what they let through.\n"+
			"The report names the filters in effect, from flags or PGJET_* variables, and the\n"+
			"source tables they left out.\n\n"+
			"With --repair, the target's rows of each range that still differs are rewritten from\n"+
			"the source (missing ones inserted, differing ones updated, extra ones deleted), one\n"+
			"transaction per range, under the replication origin pgjet_<name>.<database oid>.repair,\n"+
			"each row changed recorded in the target's pgjet.conflicts (kind repair); then the\n"+
			"tables are compared again, and the exit status is that comparison's. It may run beside\n"+
			"a running applier: a range's target rows are locked before the source's are read. A\n"+
			"target that pgjet captures too (active-active) is refused unless --force: stop writes in\n"+
			"its region and let the source apply them first.\n\n"+
			"Usage:\n  pgjet verify --source URL --target URL [--tables s.t,...] [--include-tables P,...]\n"+
			"               [--exclude-tables P,...] [--exclude-columns P,...] [--chunk-rows N]\n"+
			"               [--wait-lsn=false] [--timeout D] [--name SOURCE] [--json] [--repair [--force]]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&f.source, "source", "", "primary database URL, e.g. postgres://user:secret@primary:5432/app")
	fs.StringVar(&f.target, "target", "", "replica database URL")
	fs.StringSliceVar(&f.tables, "tables", nil, "compare only these schema.table (default: every user table of the source, pgjet's own excluded)")
	cli.CaptureTableFlags(fs, &f.capture)
	fs.Int64Var(&f.chunkRows, "chunk-rows", f.chunkRows, "source rows per compared key range")
	fs.BoolVar(&f.waitLSN, "wait-lsn", f.waitLSN, "wait until the target has applied what the source committed before comparing")
	fs.DurationVar(&f.timeout, "timeout", f.timeout, "longest wait for the target to catch up (0: no limit)")
	fs.StringVar(&f.name, "name", "", "pgjet source name (pgjet-capture --name) to wait for (default: the target's only one)")
	fs.BoolVar(&f.json, "json", false, "print the report as one JSON object on stdout")
	fs.BoolVar(&f.repair, "repair", false, "rewrite the target's rows of the differing ranges from the source (recorded in pgjet.conflicts, kind repair), then compare again")
	fs.BoolVar(&f.force, "force", false, "with --repair: repair a target that is captured too (active-active), once its region's writes have stopped and reached the source")
	cli.Parse(fs, args)

	srcCfg, dstCfg, err := f.validate()
	if err != nil {
		return cli.BadUsage("pgjet verify", err)
	}
	opts := def
	opts.Tables, opts.ChunkRows, opts.WaitLSN, opts.WaitTimeout, opts.SourceName = f.tables, f.chunkRows, f.waitLSN, f.timeout, f.name
	opts.Filter = f.filter
	opts.Progress = progressPrinter(os.Stderr)
	var filters []string
	for _, name := range []string{"tables", "include-tables", "exclude-tables", "exclude-columns"} {
		if g := cli.Given(fs, name); g != "" {
			filters = append(filters, g)
		}
	}

	ctx, stop := cli.SignalContext()
	defer stop()
	rep, err := compare(ctx, srcCfg, dstCfg, opts, f.repair, f.force)
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		}
		msg := oneLine(err.Error())
		if f.json {
			writeJSON(os.Stdout, map[string]any{"ok": false, "error": msg})
		}
		fmt.Fprintf(os.Stderr, "pgjet verify: %s\n", msg)
		return 1
	}
	rep.Source, rep.Target = redact.Postgres(f.source), redact.Postgres(f.target)
	rep.Filters = filters
	if f.json {
		if err := writeJSON(os.Stdout, rep); err != nil {
			fmt.Fprintf(os.Stderr, "pgjet verify: write report: %v\n", err)
			return 1
		}
	} else {
		printVerifyReport(os.Stdout, rep)
	}
	if !rep.OK {
		return 1
	}
	return 0
}

// validate checks the flags and parses the connection URLs.
func (f *verifyFlags) validate() (src, dst *pgx.ConnConfig, err error) {
	if err := sourceTargetRequired(f.source, f.target); err != nil {
		return nil, nil, err
	}
	if f.chunkRows < 1 {
		return nil, nil, fmt.Errorf("--chunk-rows must be at least 1, not %d", f.chunkRows)
	}
	if f.timeout < 0 {
		return nil, nil, errors.New("--timeout must not be negative")
	}
	if f.force && !f.repair {
		return nil, nil, errors.New("--force goes with --repair")
	}
	qualified := make([]string, len(f.tables))
	for i, t := range f.tables {
		id, err := schema.ParseTable(t)
		if err != nil {
			return nil, nil, fmt.Errorf("--tables: %v", err)
		}
		qualified[i] = id[0] + "." + id[1]
	}
	// Capture's own filter: verify sees the source as its replicas do.
	if f.filter, err = capture.NewFilter(qualified, f.capture.IncludeTables, f.capture.ExcludeTables, f.capture.ExcludeColumns); err != nil {
		return nil, nil, err
	}
	parse := func(flag, url string) (*pgx.ConnConfig, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			// Not shown: a URL that does not parse may not be redactable.
			return nil, fmt.Errorf("--%s: cannot parse the connection URL: use postgres://user:password@host:port/dbname", flag)
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = verifyConnectTimeout
		}
		return cfg, nil
	}
	if src, err = parse("source", f.source); err != nil {
		return nil, nil, err
	}
	if dst, err = parse("target", f.target); err != nil {
		return nil, nil, err
	}
	return src, dst, nil
}

// compare connects to both databases and compares them; with repair, it
// repairs what differs and compares again (a captured target only with
// force, see writingTarget).
func compare(ctx context.Context, srcCfg, dstCfg *pgx.ConnConfig, opts verify.Options, repair, force bool) (*verify.Report, error) {
	src, err := pgx.ConnectConfig(ctx, srcCfg)
	if err != nil {
		return nil, fmt.Errorf("source: %w", pgerr.ClassifyConnect(srcCfg.ConnString(), err))
	}
	defer src.Close(context.WithoutCancel(ctx))
	dst, err := pgx.ConnectConfig(ctx, dstCfg)
	if err != nil {
		return nil, fmt.Errorf("target: %w", pgerr.ClassifyConnect(dstCfg.ConnString(), err))
	}
	defer dst.Close(context.WithoutCancel(ctx))
	if repair && !force {
		if err := writingTarget(ctx, dst); err != nil {
			return nil, err
		}
	}
	rep, err := verify.Compare(ctx, src, dst, opts)
	if err != nil || !repair || rep.OK {
		return rep, err
	}
	name, err := repairSource(ctx, dst, opts.SourceName, rep)
	if err != nil {
		return nil, err
	}
	r, err := apply.PrepareRepair(ctx, dst, dstCfg.ConnString(), name)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if opts.Progress != nil {
		opts.Progress(verify.Progress{Repair: true})
	}
	done, err := verify.Repair(ctx, src, dst, rep, opts, verify.RepairOptions{Stamp: r.Stamp, Record: r.Record, Retries: 5})
	if err != nil {
		return nil, err
	}
	done.Warnings = r.Warnings
	// Compared again, after the applier caught up with the source anew:
	// what the repair wrote and what the stream brought since.
	after, err := verify.Compare(ctx, src, dst, opts)
	if err != nil {
		return nil, err
	}
	after.Repair = done
	return after, nil
}

// repairSource is the pgjet source whose rows a repair writes: --name, or
// the one verify waited for, or the target's only one.
func repairSource(ctx context.Context, dst *pgx.Conn, name string, rep *verify.Report) (string, error) {
	if name != "" {
		return name, nil
	}
	if rep.Wait != nil && rep.Wait.Source != "" {
		return rep.Wait.Source, nil
	}
	sources, err := applied.Read(ctx, dst)
	if err == nil && len(sources) == 1 {
		return sources[0].Source, nil
	}
	return "", pgerr.Fatalf(nil, "--repair writes under the replication origin of the pgjet source that feeds the target, and cannot tell which it is: pass --name SOURCE")
}

// writingTarget refuses a repair of a target that pgjet captures too: a
// region of active-active, whose own writes are data on their way to the
// source rather than damage. The repair rewrites rows from the source
// alone, and there are no tombstones to tell a row the region deleted
// from one it lost: a write of the region that has not reached the
// source yet would be overwritten, a row it deleted put back, and, the
// repaired rows not being published, the regions would stay apart. With
// the region's writes stopped and applied at the source, the source's
// rows hold them, as last-writer-wins settled them, and --force repairs.
func writingTarget(ctx context.Context, dst *pgx.Conn) error {
	slots, err := capture.CaptureSlots(ctx, dst)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if len(slots) == 0 {
		return nil
	}
	return pgerr.Fatalf(nil, "--repair refused: the target is captured too (slot %s: active-active, its region writes), and the repair rewrites rows from the source alone, so a write of that region that has not reached the source yet would be overwritten and a row it deleted put back, and the regions would then stay apart; stop writes in that region and let the source's applier of them catch up, then run again with --force",
		strings.Join(slots, ", "))
}

// progressPrinter reports, at most every verifyProgressEvery, how far the
// comparison of the current table has come.
func progressPrinter(w io.Writer) func(verify.Progress) {
	next := time.Now().Add(verifyProgressEvery)
	return func(p verify.Progress) {
		if p.Repair {
			fmt.Fprintf(w, "pgjet verify: repairing the differing ranges from the source\n")
			return
		}
		if p.Recheck > 0 {
			fmt.Fprintf(w, "pgjet verify: recheck %d: comparing %d differing ranges again in %s\n", p.Recheck, p.Ranges, p.Pause)
			return
		}
		if time.Now().Before(next) {
			return
		}
		next = time.Now().Add(verifyProgressEvery)
		fmt.Fprintf(w, "pgjet verify: %s: %d rows in %d chunks compared so far\n", p.Table, p.Rows, p.Chunks)
	}
}

func printVerifyReport(w io.Writer, rep *verify.Report) {
	if r := rep.Repair; r != nil {
		for _, t := range r.Tables {
			fmt.Fprintf(w, "repair: %s\n", t.Summary())
		}
		for _, warn := range r.Warnings {
			fmt.Fprintf(w, "repair: warning: %s\n", warn)
		}
	}
	if wt := rep.Wait; wt != nil {
		switch {
		case wt.Skipped != "":
			fmt.Fprintf(w, "wait: %s\n", wt.Skipped)
		case wt.Idle:
			fmt.Fprintf(w, "wait: source %q idle, target applied up to %s (source WAL at %s) after %.1fs\n", wt.Source, wt.AppliedLSN, wt.SourceLSN, wt.Seconds)
		default:
			fmt.Fprintf(w, "wait: target applied source %q up to %s (source WAL at %s) after %.1fs\n", wt.Source, wt.AppliedLSN, wt.SourceLSN, wt.Seconds)
		}
	}
	differ := 0
	for _, t := range rep.Tables {
		fmt.Fprintln(w, t.Summary())
		if !t.OK {
			differ++
		}
	}
	if len(rep.Filters) > 0 {
		fmt.Fprintf(w, "filters: %s\n", strings.Join(rep.Filters, ", "))
	}
	left := ""
	if n := len(rep.NotCompared); n > 0 {
		names := rep.NotCompared
		more := ""
		if len(names) > maxListedTables {
			names, more = names[:maxListedTables], fmt.Sprintf(" and %d more", n-maxListedTables)
		}
		fmt.Fprintf(w, "not compared: %s: %s%s\n", plural(n, "source table"), strings.Join(names, ", "), more)
		left = fmt.Sprintf(" (%s not compared)", plural(n, "source table"))
	}
	switch {
	case len(rep.Tables) == 0:
		fmt.Fprintf(w, "no tables to compare%s\n", left)
	case differ == 0:
		fmt.Fprintf(w, "all %d tables identical%s\n", len(rep.Tables), left)
	default:
		fmt.Fprintf(w, "%d of %d tables differ\n", differ, len(rep.Tables))
		if wt := rep.Wait; wt != nil && wt.Idle {
			fmt.Fprintf(w, "note: the target's applied position stood still at %s while the source's WAL was at %s; "+
				"if pgjet-apply is stopped or its region is cut off, these may be changes not yet applied\n", wt.AppliedLSN, wt.SourceLSN)
		}
	}
}

// maxListedTables is the most tables a report line names.
const maxListedTables = 10

// plural renders "1 source table" or "2 source tables".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// oneLine folds a multi-line error (pgx lists every address it tried,
// often the same one twice) into one line without repeats.
func oneLine(msg string) string {
	var parts []string
	seen := map[string]bool{}
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || seen[l] {
			continue
		}
		seen[l] = true
		parts = append(parts, l)
	}
	return strings.Join(parts, " ")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
