package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/capture"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/cmd/internal/status"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// statusFlags are the flags of `pgjet status`: what to gather, and how to
// print it.
type statusFlags struct {
	gatherFlags
	json bool
}

// gatherFlags say what status.Gather asks: the flags `pgjet status` and
// `pgjet console` share.
type gatherFlags struct {
	status.Options
	dbRegion []string // region=URL
	auth     cli.NATSFlags
}

// register adds the flags to fs; allNames says what an empty --name
// means to the command.
func (f *gatherFlags) register(fs *pflag.FlagSet, allNames string) {
	fs.StringVar(&f.NATS, "nats", "", "NATS URL, e.g. nats://hub:4222")
	fs.StringVar(&f.Name, "name", "", "source name (stream PGJET_<name>); "+allNames)
	fs.StringSliceVar(&f.Domains, "domains", nil, "JetStream domains to ask, comma-separated (default: the connected server's)")
	fs.StringArrayVar(&f.dbRegion, "db-region", nil, "region=postgres://... of a target whose pgjet.applied to read; repeat for several (the variable holds one)")
	fs.StringVar(&f.SourceDB, "source-db", "", "postgres://... of the source: check capture's slot there (needs --name)")
	fs.StringVar(&f.Slot, "slot", "", "capture's slot on the source (default pgjet_<name>, lower-cased, with '-' as '_', as capture names it)")
	fs.DurationVar(&f.Stall, "stall-timeout", 30*time.Second, "how long without progress before a region, applier, mirror or capture counts as stopped (keep it above 3 x the capture's --heartbeat)")
	fs.DurationVar(&f.Timeout, "timeout", 5*time.Second, "how long to wait for each domain and database")
	f.auth.Register(fs)
}

// check validates the parsed flags and fills the options derived from
// them; it prints what is wrong as cmd and returns the exit status (0:
// all is well).
func (f *gatherFlags) check(cmd string) int {
	if f.NATS == "" {
		return cli.BadUsage(cmd, cli.ErrNATSRequired)
	}
	if f.Name != "" {
		if err := cli.CheckName(f.Name); err != nil {
			return cli.BadUsage(cmd, err)
		}
	}
	if f.SourceDB != "" && f.Name == "" {
		fmt.Fprintf(os.Stderr, "%s: --source-db needs --name, the source whose slot to check\n", cmd)
		return 2
	}
	if f.Slot == "" && f.Name != "" {
		f.Slot = capture.DefaultSlot(f.Name)
	}
	if f.Stall <= 0 {
		fmt.Fprintf(os.Stderr, "%s: --stall-timeout must be positive (e.g. 30s)\n", cmd)
		return 2
	}
	targets, err := parseDBRegions(f.dbRegion)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, err)
		return 2
	}
	f.Targets = targets
	if f.Auth, err = f.auth.Options(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func runStatus(args []string) int {
	var f statusFlags
	fs := pflag.NewFlagSet("pgjet status", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet status shows, for a source (or every source), each region's copy of the stream\n"+
			"and how far its applier has come:\n"+
			"  - per JetStream domain: the stream's last sequence and message time; for a mirror, its\n"+
			"    lag behind the origin, its last contact with it and any error (a cut-off region shows\n"+
			"    a growing last contact);\n"+
			"  - per applier consumer (pgjet_apply_<region>): ack floor, pending messages, lag in\n"+
			"    messages (stream last sequence - ack floor), and whether an applier pulls from it;\n"+
			"  - with --db-region: the position in the target's pgjet.applied, the lag in seconds (now -\n"+
			"    commit time of the last applied transaction), the source WAL bytes between it and the\n"+
			"    newest transaction in the stream, and conflicts in the last hour; and the state its\n"+
			"    applier records there (pgjet.applier_state): running, lagging, stopped (with the error\n"+
			"    that stopped it) or down (recorded as running, but its heartbeat stopped: killed);\n"+
			"  - per region: the dead letters its applier set aside (--on-bad-message dead-letter);\n"+
			"  - with --source-db: capture's slot on the source (active, confirmed position).\n"+
			"The lag in seconds keeps growing while the source is idle, because no transaction commits;\n"+
			"\"caught up\" then tells an idle source from a stuck applier, and capture's heartbeats\n"+
			"(--heartbeat) keep the stream's last message time fresh. A region is compared with the\n"+
			"source's own stream (asked in its home domain even when --domains leaves it out).\n\n"+
			"Usage:\n  pgjet status --nats URL [--name SOURCE] [--domains hub,r1,r2] [--db-region r1=postgres://...]...\n"+
			"               [--source-db postgres://...] [--stall-timeout 30s] [--json]\n\n"+
			"Other domains are reached through the connected server (leafnodes join them). The last lines\n"+
			"list every problem found. Exit status: 0 when there is none (healthy), 1 when there is one\n"+
			"(a domain, database or the source unreachable, a mirror in error, cut off or with a gap, an\n"+
			"applier stopped or down, capture stopped, a region applying nothing, dead letters) or NATS\n"+
			"cannot be reached at all, 2 for bad flags or a --name no domain asked has a stream of.\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "default every PGJET_* stream")
	fs.BoolVar(&f.json, "json", false, "print one JSON document instead of tables")
	cli.Parse(fs, args)
	if code := f.check("pgjet status"); code != 0 {
		return code
	}

	log := zerolog.New(cli.ConsoleWriter()).Level(zerolog.ErrorLevel).With().Timestamp().Str("cmd", "pgjet status").Logger()
	ctx, stop := cli.SignalContext()
	defer stop()
	rep, err := status.Gather(ctx, f.Options, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet status: %v\n", err)
		if errors.As(err, new(*status.NoSourceError)) {
			return 2
		}
		return 1
	}
	if f.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet status: write output: %v\n", err)
		return 1
	}
	if !rep.Healthy {
		return 1
	}
	return 0
}

// parseDBRegions reads the --db-region flags.
func parseDBRegions(vals []string) ([]status.TargetDB, error) {
	var out []status.TargetDB
	seen := map[string]bool{}
	for _, v := range vals {
		region, url, ok := strings.Cut(v, "=")
		if !ok || url == "" {
			return nil, fmt.Errorf("--db-region %q: use region=postgres://user@host:5432/db", redact.Postgres(v))
		}
		if err := stream.ValidateRegion(region); err != nil {
			return nil, fmt.Errorf("--db-region: %w", err)
		}
		if seen[region] {
			return nil, fmt.Errorf("--db-region: region %s given twice", region)
		}
		seen[region] = true
		out = append(out, status.TargetDB{Region: region, URL: url})
	}
	return out, nil
}
