package main

import (
	"fmt"
	"net"
	"os"
	"slices"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/cmd/internal/console"
	"github.com/pgjet/pgjet/cmd/internal/status"
)

func runConsole(args []string) int {
	var f gatherFlags
	cfg := console.DefaultConfig()
	listen := "127.0.0.1:8080"
	fs := pflag.NewFlagSet("pgjet console", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet console serves a web page that shows a source's pipeline as it runs: the\n"+
			"topology (source, hub, each region's mirror, applier and replica) with the state of each\n"+
			"region's link (flowing, catching up, stalled, cut), each region's lag in seconds and bytes\n"+
			"and its applied messages per second over the last 15 minutes, conflicts per minute by\n"+
			"kind and decision, dead letters, snapshots (and the regions built from each), and the last\n"+
			"error of a stopped applier. It gathers what `pgjet status` does, every --interval, and\n"+
			"needs only read permissions on NATS and the databases. The page updates itself and needs\n"+
			"nothing from the network but the console; GET /api/status serves the newest report as\n"+
			"JSON (what `pgjet status --json` prints), GET /api/history the samples.\n\n"+
			"Usage:\n  pgjet console --nats URL --name SOURCE [--db-region r1=postgres://...]... [--listen :8080]\n\n"+
			"By default it asks the connected server's JetStream domain and one domain per --db-region,\n"+
			"named after the region (as pgjet-apply --region names the region's domain); --domains\n"+
			"replaces that list. It runs until interrupted.\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "required")
	fs.StringVar(&listen, "listen", listen, "address to serve the page on (host:port; :8080 listens on every interface)")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "how often to gather the status, and the page to reload")
	cli.Parse(fs, args)
	if f.Name == "" {
		fmt.Fprintln(os.Stderr, "pgjet console: --name is required: the source to show (its stream is PGJET_<name>)")
		return 2
	}
	if code := f.check("pgjet console"); code != 0 {
		return code
	}
	if cfg.Interval <= 0 {
		fmt.Fprintln(os.Stderr, "pgjet console: --interval must be positive (e.g. 2s)")
		return 2
	}
	if len(f.Domains) == 0 {
		f.Domains = consoleDomains(f.Targets)
	}
	cfg.Status = f.Options

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgjet console: --listen %s: %v; pick another address\n", listen, err)
		return 1
	}
	log := zerolog.New(cli.ConsoleWriter()).Level(zerolog.WarnLevel).With().Timestamp().Str("cmd", "pgjet console").Logger()
	fmt.Fprintf(os.Stderr, "pgjet console: serving source %s on %s\n", f.Name, consoleURL(ln.Addr()))
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := console.New(cfg, log).Serve(ctx, ln); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "pgjet console: %v\n", err)
		return 1
	}
	return 0
}

// consoleDomains are the domains the console asks by default: the
// connected server's, and one per region.
func consoleDomains(targets []status.TargetDB) []string {
	out := []string{""}
	for _, t := range targets {
		if !slices.Contains(out, t.Region) {
			out = append(out, t.Region)
		}
	}
	return out
}

// consoleURL is the address to open in a browser: a wildcard host is
// shown as localhost.
func consoleURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}
