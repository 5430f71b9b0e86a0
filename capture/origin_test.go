package capture

import "testing"

func TestSkipOrigin(t *testing.T) {
	for _, tc := range []struct {
		origin string
		skip   bool
	}{
		{"", false},
		{"pgjet_a", true},
		{"pgjet_eu-west", true},
		{"pg_16384", false}, // a native subscription: its rows are published
		{"pgjetx", false},
	} {
		if got := skipOrigin(tc.origin); got != tc.skip {
			t.Errorf("skipOrigin(%q) = %v, want %v", tc.origin, got, tc.skip)
		}
	}
}
