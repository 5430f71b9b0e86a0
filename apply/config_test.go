package apply

import "testing"

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
