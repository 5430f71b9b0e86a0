// Package cli holds what the pgjet mains share: flags with PGJET_*
// environment equivalents, the logger, and the exit path.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// EnvName is the environment variable that sets flag name: --nats-url
// is PGJET_NATS_URL.
func EnvName(flag string) string {
	return "PGJET_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Parse parses args into fs, then fills every flag not given on the
// command line from its PGJET_* variable. Flags win over the environment.
// It prints usage and exits 0 on --help, prints the version and exits 0
// on --version, and exits 2 on a bad flag.
func Parse(fs *pflag.FlagSet, args []string) {
	parse(fs, args, false)
}

// ParseWithConfig is Parse for the daemons: it adds --config FILE (or
// PGJET_CONFIG), a YAML file whose keys are flag names, read before the
// environment and the command line: file < PGJET_* < flag. An unknown
// key or a value of the wrong type exits 2 naming the key and the file.
func ParseWithConfig(fs *pflag.FlagSet, args []string) {
	fs.String(ConfigFlag, "", "YAML file whose keys are these flags' names; the environment and flags override it")
	parse(fs, args, true)
}

func parse(fs *pflag.FlagSet, args []string, withConfig bool) {
	version := fs.Bool(VersionFlag, false, "print the version and exit")
	fs.VisitAll(func(f *pflag.Flag) {
		if !noEnv(f.Name) {
			f.Usage += " [" + EnvName(f.Name) + "]"
		}
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		Usage(fs.Name(), flagError(fs, err))
	}
	if fs.NArg() > 0 {
		Usage(fs.Name(), fmt.Errorf("unexpected argument %q: flags start with -- (see --help)", fs.Arg(0)))
	}
	if *version {
		// "pgjet tail --version" is pgjet's version.
		PrintVersion(strings.Fields(fs.Name())[0])
	}
	var bad []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || noEnv(f.Name) {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				bad = append(bad, fmt.Sprintf("%s=%q: %v", EnvName(f.Name), v, err))
			}
			_ = fs.SetAnnotation(f.Name, fromEnv, []string{EnvName(f.Name)})
		}
	})
	if len(bad) > 0 {
		Usage(fs.Name(), errors.New(strings.Join(bad, "\n")))
	}
	if !withConfig {
		return
	}
	if path, _ := fs.GetString(ConfigFlag); path != "" {
		if err := loadConfig(fs, path); err != nil {
			Usage(fs.Name(), err)
		}
	}
}

// noEnv says flag name has no PGJET_* variable: --help and --version ask
// a question rather than configure the command.
func noEnv(name string) bool { return name == "help" || name == VersionFlag }

// fromEnv annotates a flag Parse set from its PGJET_* variable.
const fromEnv = "pgjet-from-env"

// Given describes how flag name of fs got its value, for a report that
// must not hide a setting: "--name v" from the command line, "--name v
// (from PGJET_NAME)" from the environment, "" when it was not set.
func Given(fs *pflag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil || !f.Changed {
		return ""
	}
	v := f.Value.String()
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		v = strings.Join(sv.GetSlice(), ",")
	}
	s := "--" + name + " " + v
	if env := f.Annotations[fromEnv]; len(env) > 0 {
		s += " (from " + env[0] + ")"
	}
	return s
}

// LogFlags are the logging flags every daemon takes.
type LogFlags struct {
	Level  string
	Format string
	// console is the format Logger chose: lines for a person.
	console bool
}

// Register adds --log-level and --log-format to fs.
func (l *LogFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.StringVar(&l.Format, "log-format", "", "log format: console (plain text lines; the default when stderr is a terminal) or json (one JSON event a line; the default otherwise)")
}

// Logger builds the process logger. Its error is a usage error.
func (l *LogFlags) Logger(component string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(l.Level)
	if err != nil || lvl == zerolog.NoLevel {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: use trace, debug, info, warn or error", l.Level)
	}
	var w io.Writer = os.Stderr
	switch l.Format {
	case "":
		l.console = StderrIsTerminal()
	case "json":
	case "console":
		l.console = true
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: use console or json", l.Format)
	}
	if l.console {
		w = ConsoleWriter()
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("cmd", component).Logger(), nil
}

// StderrIsTerminal says whether a person is likely to read stderr as it
// is written.
func StderrIsTerminal() bool {
	fd := os.Stderr.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}

// ConsoleWriter writes log events to stderr as text lines for a person:
// coloured at a terminal, plain in a file or a pipe.
func ConsoleWriter() zerolog.ConsoleWriter {
	return zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly, NoColor: !StderrIsTerminal()}
}

// SignalContext is canceled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Exit ends the process: 0 for a nil error, otherwise exit status 1 and
// one line naming the cause, printed once. In console format it is the
// line "name: cause" (a log line too would say it twice). In JSON it is a
// log event, and, when stderr is no terminal (a log collector, a script),
// also that plain line, for whoever reads the process's last words.
func (l *LogFlags) Exit(name string, log zerolog.Logger, err error) {
	if err == nil {
		os.Exit(0)
	}
	msg := err.Error()
	if !pgerr.IsFatal(err) {
		msg = strings.TrimSpace(msg)
	}
	if !l.console {
		log.Error().Msg(msg)
	}
	if l.console || !StderrIsTerminal() {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, msg)
	}
	os.Exit(1)
}

// Usage ends the process for a configuration error: one line per problem,
// each naming the command and the flag, and exit status 2.
func Usage(name string, err error) {
	os.Exit(BadUsage(name, err))
}

// BadUsage prints a configuration error as Usage does and returns the exit
// status 2, for a subcommand that returns its status.
func BadUsage(name string, err error) int {
	for _, l := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, l)
	}
	return 2
}

// ErrNATSRequired is the error of a command run without its --nats.
var ErrNATSRequired = errors.New("--nats is required (the NATS URL, e.g. nats://localhost:4222)")

// CheckName checks --name, the source's name as given to pgjet-capture:
// given, and a valid name.
func CheckName(name string) error {
	if name == "" {
		return errors.New("--name is required (the source's name, as given to pgjet-capture)")
	}
	if err := stream.ValidateSource(name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	return nil
}

// CheckRegion checks --region, a region's name as given to pgjet-apply:
// given, and a valid name.
func CheckRegion(region string) error {
	if region == "" {
		return errors.New("--region is required (the region's name, as given to pgjet-apply --region)")
	}
	if err := stream.ValidateRegion(region); err != nil {
		return fmt.Errorf("--region: %w", err)
	}
	return nil
}
