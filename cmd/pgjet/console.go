package main

import (
	"os"
	"time"

	"github.com/rs/zerolog"
)

// consoleWriter writes human-readable log lines to stderr, in colour only
// when stderr is a terminal.
func consoleWriter() zerolog.ConsoleWriter {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	return zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly, NoColor: !tty}
}
