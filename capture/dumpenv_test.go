package capture

import (
	"io"
	"strings"
	"testing"

	"github.com/pgjet/pgjet/schema/pgerr"
)

// TestDumpEnv: the client key's pass phrase reaches pg_dump through a
// pipe as a service file, and one libpq cannot read from a service file
// (longer than its line, a line break, trailing spaces) is refused with
// one line rather than a snapshot retried for ever.
func TestDumpEnv(t *testing.T) {
	t.Setenv("PGSERVICE", "")
	env, svc, err := dumpEnv("pw", "postgres://u@h/d?sslpassword=a%23b%3Dc")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(svc)
	svc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := "[pgjet_dump]\nsslpassword=a#b=c\n"; string(b) != want {
		t.Errorf("service file %q, want %q", b, want)
	}
	joined := strings.Join(env, "\n")
	for _, v := range []string{"PGPASSWORD=pw", "PGSERVICEFILE=/dev/fd/3", "PGSERVICE=pgjet_dump"} {
		if !strings.Contains(joined, v) {
			t.Errorf("environment lacks %s", v)
		}
	}
	for _, bad := range []string{strings.Repeat("p", 1001), "ends%20", "line%0Abreak"} {
		_, _, err := dumpEnv("", "postgres://u@h/d?sslpassword="+bad)
		if !pgerr.IsFatal(err) {
			t.Errorf("sslpassword %.20q: %v, want a fatal error", bad, err)
		}
	}
	if _, _, err := dumpEnv("", "host=h service=app sslpassword=x"); !pgerr.IsFatal(err) {
		t.Errorf("a service with an sslpassword: %v, want a fatal error", err)
	}
}
