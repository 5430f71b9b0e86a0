package cli

import "testing"

func TestSuggest(t *testing.T) {
	cmds := []string{"demo", "tail", "status", "bench", "verify", "snapshot", "replay", "roles", "resync", "skip", "drop"}
	flags := []string{"db", "nats", "nats-user", "name", "region", "heartbeat", "log-format", "log-level", "chunk-rows", "streams"}
	for _, tc := range []struct {
		name       string
		candidates []string
		want       string
	}{
		{"stauts", cmds, "status"},
		{"replya", cmds, "replay"},
		{"verfy", cmds, "verify"},
		{"snapshots", cmds, "snapshot"},
		{"rsync", cmds, "resync"},
		{"bogus", cmds, ""},
		{"x", cmds, ""},
		{"heartbeet", flags, "heartbeat"},
		{"regoin", flags, "region"},
		{"log-formt", flags, "log-format"},
		{"chunk-row", flags, "chunk-rows"},
		{"sreams", flags, "streams"},
		{"nat", flags, "nats"},
		{"dbb", flags, "db"},
		{"zzzzzzzzzz", flags, ""},
		{"", flags, ""},
	} {
		if got := Suggest(tc.name, tc.candidates); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "ab", 2}, {"status", "status", 0},
		{"stauts", "status", 1}, {"kitten", "sitting", 3}, {"ab", "ba", 1}, {"ca", "abc", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
