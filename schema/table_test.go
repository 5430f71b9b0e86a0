package schema

import (
	"testing"
)

func TestParseTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" for an error
	}{
		{"public.items", `"public"."items"`},
		{"items", `"public"."items"`},
		{`other.Mixed Case`, `"other"."Mixed Case"`},
		{"a.b.c", ""},
		{".b", ""},
		{"a.", ""},
		{"", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			id, err := ParseTable(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseTable(%q) = %v, want an error", tc.in, id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := id.Sanitize(); got != tc.want {
				t.Errorf("ParseTable(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}
