package main

import (
	"strings"
	"testing"
)

func TestStatus_ParseDBRegions(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    string // region=url,... or the error's start
		wantErr bool
	}{
		{"none", nil, "", false},
		{"two", []string{"r1=postgres://a/db?x=1", "r2=postgres://b/db"}, "r1=postgres://a/db?x=1,r2=postgres://b/db", false},
		{"no url", []string{"r1="}, "--db-region", true},
		{"no equals", []string{"postgres://a/db"}, "--db-region", true},
		{"bad region", []string{"r 1=postgres://a"}, "--db-region: region", true},
		{"twice", []string{"r1=postgres://a", "r1=postgres://b"}, "--db-region: region r1 given twice", true},
		{"password redacted", []string{"postgres://u:secret@h/db"}, "--db-region", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDBRegions(tt.in)
			if tt.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "secret") {
					t.Fatalf("error = %v, want one starting %q without the password", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, d := range got {
				parts = append(parts, d.Region+"="+d.URL)
			}
			if got := strings.Join(parts, ","); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
