package main

// The demo's screen: one table of the regions, and below it the story so
// far (what the script did, and when). On a terminal the table is
// redrawn in place every second; elsewhere (a pipe, a log) the story
// lines are printed as they happen and the region lines every few
// seconds, so a log of a minute stays short.

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/cmd/internal/status"
	"github.com/pgjet/pgjet/stream"
)

// plainEvery is how often the region lines are printed when stdout is
// no terminal.
const plainEvery = 5 * time.Second

// demoRowFormat lays out a line of the table: region, link, applied
// LSN, lag, bytes behind, transactions applied, and what a read of the
// replica's demo_events sees.
const demoRowFormat = "  %-6s %-11s %-11s %7s %10s %7s  %s"

// screen draws the demo's table.
type screen struct {
	out   io.Writer
	tty   bool
	mu    sync.Mutex
	story []string // what happened, one line each
	drawn int      // lines drawn last time (tty)
	shown int      // story lines printed so far (plain)
	last  time.Time
}

// isTerminal tells whether f is a terminal.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tell adds a line to the story.
func (s *screen) tell(elapsed time.Duration, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.story = append(s.story, fmt.Sprintf("%5s  ", clock(elapsed))+fmt.Sprintf(format, args...))
	if !s.tty {
		s.flushStory()
	}
}

func (s *screen) flushStory() {
	for ; s.shown < len(s.story); s.shown++ {
		fmt.Fprintln(s.out, s.story[s.shown])
	}
}

// clock renders an elapsed time as m:ss.
func clock(d time.Duration) string {
	d = d.Truncate(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// regionRow is one region's line of the table.
type regionRow struct {
	region, link, applied, lag, behind, txns, read string
}

// draw shows the table: redrawn in place on a terminal, printed every
// plainEvery otherwise.
func (s *screen) draw(now time.Time, header string, rows []regionRow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := []string{header,
		fmt.Sprintf(demoRowFormat, "REGION", "LINK", "APPLIED LSN", "LAG", "BEHIND", "TXNS", "READ ON THE REPLICA")}
	for _, r := range rows {
		lines = append(lines, fmt.Sprintf(demoRowFormat, r.region, r.link, r.applied, r.lag, r.behind, r.txns, r.read))
	}
	if !s.tty {
		if now.Sub(s.last) < plainEvery {
			return
		}
		s.last = now
		for _, l := range lines[2:] {
			fmt.Fprintln(s.out, l)
		}
		return
	}
	lines = append(lines, "")
	lines = append(lines, s.story...)
	// A line longer than the terminal would wrap onto two, and the next
	// redraw would start one line too low: lines are wrapped here, and
	// counted as drawn.
	lines = wrapLines(lines, s.width())
	var b strings.Builder
	if s.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", s.drawn) // back to the table's first line
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K" + l + "\n")
	}
	s.drawn = len(lines)
	io.WriteString(s.out, b.String())
}

// width is the terminal's width in columns (80 when it does not say).
func (s *screen) width() int {
	f, ok := s.out.(*os.File)
	if !ok {
		return 80
	}
	var ws struct{ row, col, x, y uint16 }
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws))); errno != 0 || ws.col == 0 {
		return 80
	}
	return int(ws.col)
}

// wrapLines breaks every line longer than width-1 runes (the last column
// is left free, where some terminals wrap early) into several, the
// following ones indented under the story's text.
func wrapLines(lines []string, width int) []string {
	n := max(width-1, 20)
	var out []string
	for _, l := range lines {
		r := []rune(l)
		for len(r) > n {
			// Break at the last space of the line when there is one
			// in its second half, else mid-word.
			cut := n
			for i := n; i > n/2; i-- {
				if r[i] == ' ' {
					cut = i
					break
				}
			}
			out = append(out, string(r[:cut]))
			r = append([]rune("       "), []rune(strings.TrimLeft(string(r[cut:]), " "))...)
		}
		out = append(out, string(r))
	}
	return out
}

// done ends the table: what follows is printed below it.
func (s *screen) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drawn = 0
	if !s.tty {
		s.flushStory()
	}
}

// replicaRead reads the newest demo_events row of a replica: what a
// client of that region sees. A read cut short by its deadline closes
// the connection: it is opened again (from url) for the next.
func replicaRead(ctx context.Context, conn **pgx.Conn, url string) string {
	if *conn == nil || (*conn).IsClosed() {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return "cannot connect: " + strings.SplitN(err.Error(), "\n", 2)[0]
		}
		*conn = c
	}
	var rows int64
	var age *float64
	err := (*conn).QueryRow(ctx, "SELECT count(*), extract(epoch FROM clock_timestamp() - max(at))::float8 FROM demo_events").Scan(&rows, &age)
	switch {
	case err != nil:
		return "read failed: " + strings.SplitN(err.Error(), "\n", 2)[0]
	case age == nil:
		return fmt.Sprintf("%d rows", rows)
	}
	return fmt.Sprintf("%d rows, newest %.1fs old", rows, max(*age, 0))
}

// lagCells renders an applier's lag behind the primary's WAL position cur.
func lagCells(applied, cur stream.LSN, lag time.Duration, haveTime bool) (string, string) {
	bytes, secs := "-", "-"
	if applied > 0 && cur > 0 {
		bytes = status.HumanBytes(max(int64(cur)-int64(applied), 0))
	}
	if haveTime {
		secs = fmt.Sprintf("%.1fs", lag.Seconds())
	}
	return bytes, secs
}
