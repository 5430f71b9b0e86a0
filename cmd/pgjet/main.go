// Command pgjet is the operator tool of pgjet: it runs the demo, tails a
// change stream, copies roles to replicas and benchmarks the pipeline
// against native logical replication.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/pgjet/pgjet/cmd/internal/cli"
)

type command struct {
	name, summary string
	run           func(args []string) int
}

var commands = []command{
	{"demo", "run a whole multi-region pipeline on this machine", runDemo},
	{"tail", "print a source's stream as JSON lines", runTail},
	{"status", "show each region's position, lag and mirror state", runStatus},
	{"console", "serve a live web page of the topology, lag, conflicts and snapshots", runConsole},
	{"bench", "drain a pgbench backlog through native logical replication and through pgjet", runBench},
	{"verify", "prove a replica equals its primary, table by table", runVerify},
	{"snapshot", "copy a source's schema and tables into its snapshot stream now", runSnapshot},
	{"replay", "rebuild a database from the stream, to any point", runReplay},
	{"roles", "copy the source cluster's roles and memberships to a replica's", runRoles},
	{"resync", "re-copy one table into every region while changes keep flowing", runResync},
	{"skip", "pass over one transaction a region's applier stopped on (kept as a dead letter)", runSkip},
	{"promote", "make a region's replica the new primary of a source (switchover)", runPromote},
	{"drop", "remove a source's or a region's pgjet objects (slot, triggers, consumer, streams)", runDrop},
}

func usage() {
	fmt.Fprintf(os.Stderr, "pgjet is the operator tool of the pgjet replication pipeline.\n\nUsage:\n  pgjet <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'pgjet <command> --help' for a command's flags, 'pgjet --version' for the version.\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		os.Exit(0)
	}
	if os.Args[1] == "--version" || os.Args[1] == "version" {
		cli.PrintVersion("pgjet")
	}
	for _, c := range commands {
		if c.name == os.Args[1] {
			os.Exit(c.run(os.Args[2:]))
		}
	}
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	if s := cli.Suggest(os.Args[1], names); s != "" {
		fmt.Fprintf(os.Stderr, "pgjet: unknown command %q: did you mean %s? (see pgjet --help)\n", os.Args[1], s)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "pgjet: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}

// natsRequired is the error of a command that needs --nats, when nats is
// empty.
func natsRequired(nats string) error {
	if nats == "" {
		return cli.ErrNATSRequired
	}
	return nil
}

// sourceTargetRequired is the error of a command comparing or copying
// between two databases, when either URL is missing.
func sourceTargetRequired(source, target string) error {
	var errs []error
	if source == "" {
		errs = append(errs, errors.New("--source is required (the source database URL, e.g. postgres://user@primary:5432/app)"))
	}
	if target == "" {
		errs = append(errs, errors.New("--target is required (the target database URL, e.g. postgres://user@replica:5432/app)"))
	}
	return errors.Join(errs...)
}
