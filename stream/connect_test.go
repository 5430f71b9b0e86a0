package stream

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestConnect_MalformedURL checks that a NATS URL that does not parse
// stops with one line that names the fix and quotes no piece of the
// password, which url.Parse's own error does.
func TestConnect_MalformedURL(t *testing.T) {
	for _, tc := range []struct{ url, piece string }{
		{"nats://u:sec/ret@127.0.0.1:1", "sec"},
		{"nats://u:se%cret@127.0.0.1:1", "%cr"},
		{"nats://127.0.0.1:1,nats://u:sec/ret@127.0.0.1:2", "sec"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := Connect(tc.url, "test", ConnectOptions{}, zerolog.Nop())
			if err == nil {
				t.Fatal("Connect succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, tc.piece) || strings.Contains(msg, "\n") {
				t.Errorf("error quotes %q or is not one line: %s", tc.piece, msg)
			}
			if !IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false: retrying cannot mend a URL", err)
			}
			if !strings.Contains(msg, "percent-encode") {
				t.Errorf("error does not name the fix: %s", msg)
			}
		})
	}
}
