package stream

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
)

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://u:secret@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://tok3n@h:4222", "nats://xxxxx@h:4222"},
		{"nats://h:4222", "nats://h:4222"},
		{"nats://a:p1@h1:4222,nats://a:p2@h2:4222", "nats://a:xxxxx@h1:4222,nats://a:xxxxx@h2:4222"},
		{"nats://u:p1@a,nats://u:p2@b", "nats://u:xxxxx@a,nats://u:xxxxx@b"},
		{"nats://a:p1@h1:4222, nats://a:p2@h2:4222", "nats://a:xxxxx@h1:4222, nats://a:xxxxx@h2:4222"},
		// nats.go reads a server without a scheme as nats://.
		{"u:secret@h:4222", "u:xxxxx@h:4222"},
		{"tok3n@h:4222", "xxxxx@h:4222"},
		{"h1:4222,nats://u:secret@h2:4222", "h1:4222,nats://u:xxxxx@h2:4222"},
		// A comma in the password: nats.go splits there, the redactor not.
		{"nats://u:1234,:@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://to,ken@h:4222", "nats://xxxxx@h:4222"},
		// url.Parse rejects these; the password must go all the same.
		{"nats://u:se%cret@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://u:sec/ret@h:4222", "nats://u:xxxxx@h:4222"},
		{"tls://u:sec#ret@h:4222", "tls://u:xxxxx@h:4222"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMirrorDomain(t *testing.T) {
	tests := []struct {
		src  jetstream.StreamSource
		want string
	}{
		{jetstream.StreamSource{Domain: "hub"}, "hub"},
		{jetstream.StreamSource{External: &jetstream.ExternalStream{APIPrefix: "$JS.hub.API"}}, "hub"},
		{jetstream.StreamSource{External: &jetstream.ExternalStream{APIPrefix: "$JS.ACC.API"}}, "ACC"},
		{jetstream.StreamSource{External: &jetstream.ExternalStream{APIPrefix: "other.prefix"}}, "other.prefix"},
		{jetstream.StreamSource{}, ""},
	}
	for _, tt := range tests {
		if got := MirrorDomain(&tt.src); got != tt.want {
			t.Errorf("MirrorDomain(%+v) = %q, want %q", tt.src, got, tt.want)
		}
	}
}

func TestValidateSource(t *testing.T) {
	for name, ok := range map[string]bool{"app": true, "eu-1_x": true, "": false, "a.b": false, "a b": false, "a>": false} {
		if got := ValidateSource(name) == nil; got != ok {
			t.Errorf("ValidateSource(%q) ok = %v, want %v", name, got, ok)
		}
	}
}

// TestEnsureStream updates an existing stream when capture's flags change
// and drops sources someone added, and leaves a stream as wanted alone.
func TestEnsureStream(t *testing.T) {
	n := local.NewTestNATS(t, local.NATSOptions{Name: "ensure"})
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	config := func() jetstream.StreamConfig {
		t.Helper()
		st, err := js.Stream(ctx, StreamName("app"))
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config
	}
	if _, err := EnsureStream(ctx, js, "other", StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, "app", StreamOptions{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, "app", StreamOptions{MaxAge: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got, want := config().MaxAge, 2*time.Hour; got != want {
		t.Errorf("max age after EnsureStream = %s, want %s", got, want)
	}
	cfg := config()
	cfg.Sources = []*jetstream.StreamSource{{Name: StreamName("other")}}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, "app", StreamOptions{MaxAge: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := config().Sources; len(got) != 0 {
		t.Errorf("sources after EnsureStream = %v, want none", got)
	}
}
