package stream

import "testing"

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://u:secret@h:4222", "nats://u:xxxxx@h:4222"},
		{"nats://tok3n@h:4222", "nats://xxxxx@h:4222"},
		{"nats://h:4222", "nats://h:4222"},
		{"nats://a:p1@h1:4222,nats://a:p2@h2:4222", "nats://a:xxxxx@h1:4222,nats://a:xxxxx@h2:4222"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
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
