package main

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDemo_WrapLines(t *testing.T) {
	got := wrapLines([]string{"short", strings.Repeat("x", 45), "0:25  heal: the link is back"}, 21)
	want := []string{"short", strings.Repeat("x", 20), "       " + strings.Repeat("x", 13), "       " + strings.Repeat("x", 12),
		"0:25  heal: the link", "       is back"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("wrapLines = %q, want %q", got, want)
	}
}

// TestDemo_ScreenPlain checks that a pipe gets no escape sequences, the
// story as it happens, and the table only every plainEvery.
func TestDemo_ScreenPlain(t *testing.T) {
	var b strings.Builder
	s := &screen{out: &b}
	t0 := time.Now()
	rows := []regionRow{{region: "r1", link: "flowing", applied: "0/10", lag: "0.1s", behind: "0 B", txns: "5", read: "1 rows"}}
	s.draw(t0, "header", rows)
	s.tell(3*time.Second, "partition: cut r2")
	s.draw(t0.Add(time.Second), "header", rows)
	s.draw(t0.Add(plainEvery), "header", rows)
	out := b.String()
	if strings.Contains(out, "\x1b") || strings.Contains(out, "header") {
		t.Errorf("plain output has escapes or the tty header:\n%s", out)
	}
	if got := strings.Count(out, "  r1     flowing "); got != 2 {
		t.Errorf("table printed %d times in %s, want 2:\n%s", got, plainEvery+time.Second, out)
	}
	if !strings.Contains(out, " 0:03  partition: cut r2\n") {
		t.Errorf("story line missing:\n%s", out)
	}
}

// TestDemo_ScreenTTY checks that a terminal's redraw goes back exactly
// over what it drew: no line it writes is wider than the terminal (80
// columns when it does not say), so none wraps behind its count.
func TestDemo_ScreenTTY(t *testing.T) {
	var b strings.Builder
	s := &screen{out: &b, tty: true}
	rows := []regionRow{{region: "r1", link: "cut", applied: "0/10", lag: "0.1s", behind: "0 B", txns: "5", read: "1 rows"}}
	s.tell(0, "%s", strings.Repeat("long ", 40)) // 200 columns
	s.draw(time.Now(), "header", rows)
	first := b.String()
	for _, l := range strings.Split(strings.TrimSuffix(first, "\n"), "\n") {
		if w := utf8.RuneCountInString(strings.TrimPrefix(l, "\x1b[2K")); w >= 80 {
			t.Errorf("line of %d columns would wrap on an 80-column terminal: %q", w, l)
		}
	}
	b.Reset()
	s.draw(time.Now(), "header", rows)
	if want := "\x1b[" + strconv.Itoa(strings.Count(first, "\n")) + "A"; !strings.HasPrefix(b.String(), want) {
		t.Errorf("redraw starts %q, want %q: back over every line drawn", b.String()[:8], want)
	}
}
