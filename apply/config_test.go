package apply

import (
	"strings"
	"testing"
)

func TestConfig_FollowsSequence(t *testing.T) {
	for _, tc := range []struct {
		local  string
		follow []string
		schema string
		name   string
		want   bool
	}{
		{"", nil, "public", "order_id", true}, // a read replica follows every sequence
		{"a", nil, "public", "order_id", false},
		{"a", []string{"ticket"}, "public", "ticket", true},
		{"a", []string{"ticket"}, "app", "ticket", false},
		{"a", []string{"app.*"}, "app", "ticket", true},
		{"a", []string{"app.*"}, "public", "ticket", false},
	} {
		c := Config{LocalName: tc.local, FollowSequences: tc.follow}
		if got := c.followsSequence(tc.schema, tc.name); got != tc.want {
			t.Errorf("local %q follow %v: followsSequence(%s.%s) = %v, want %v", tc.local, tc.follow, tc.schema, tc.name, got, tc.want)
		}
	}
}

func TestConfig_ValidateFollowSequences(t *testing.T) {
	for _, tc := range []struct {
		local  string
		follow []string
		err    string
	}{
		{"a", []string{"public.ticket", "app.*"}, ""},
		{"", []string{"public.ticket"}, "--follow-sequences needs --local-name"},
		{"a", []string{"public.[x"}, `--follow-sequences "public.[x"`},
	} {
		c := DefaultConfig()
		c.DB, c.NATS, c.Name, c.Region = "postgres://x", "nats://x", "src", "r1"
		c.LocalName, c.FollowSequences = tc.local, tc.follow
		err := c.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("local %q follow %v: %v", tc.local, tc.follow, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("local %q follow %v: error %v, want one containing %q", tc.local, tc.follow, err, tc.err)
		}
	}
}
