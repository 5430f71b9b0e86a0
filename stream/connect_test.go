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

func TestValidateURL(t *testing.T) {
	for _, tc := range []struct {
		urls string
		ok   bool
	}{
		{"nats://h:4222", true},
		{"h:4222", true},
		{"tls://h:4222,nats://g:4222", true},
		{"ws://h:8080", true},
		{"WSS://h:443", true},
		{"http://h:4222", false},
		{"nats://h:4222, https://g:4222", false},
		{"nats://u:secret@h:4222,http://u:secret@g:8222", false},
	} {
		err := ValidateURL("--nats", tc.urls)
		if got := err == nil; got != tc.ok {
			t.Errorf("ValidateURL(%q) = %v, want ok %v", tc.urls, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ValidateURL(%q) error shows the password: %v", tc.urls, err)
		}
	}
}
