package capture

import (
	"strings"
	"testing"

	"github.com/pgjet/pgjet/schema"
)

func TestConfig_KeylessChoice(t *testing.T) {
	cfg := Config{Keyless: KeylessIdentityFull, KeylessTables: []string{"public.log_*=inserts-only", "audit.*=exclude", "public.log_keep=exclude"}}
	if err := cfg.validateKeyless(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ table, want string }{
		{"public.log_2024", KeylessInsertsOnly},
		{"public.log_keep", KeylessInsertsOnly}, // the first match wins
		{"audit.trail", KeylessExclude},
		{"public.other", KeylessIdentityFull},
	} {
		s, n, _ := strings.Cut(tc.table, ".")
		if got := cfg.keylessChoice(s, n); got != tc.want {
			t.Errorf("keylessChoice(%s) = %q, want %q", tc.table, got, tc.want)
		}
	}
	if got := (&Config{}).keylessChoice("public", "t"); got != "" {
		t.Errorf("keylessChoice without flags = %q, want none", got)
	}
}

func TestConfig_KeylessInvalid(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Keyless: "full"}, `--keyless "full": use identity-full, exclude, inserts-only`},
		{Config{KeylessTables: []string{"public.t"}}, `--keyless-table "public.t": use schema.table=CHOICE`},
		{Config{KeylessTables: []string{"public.t=drop"}}, `--keyless-table "public.t=drop": use schema.table=CHOICE`},
		{Config{KeylessTables: []string{"t=exclude"}}, `--keyless-table: "t" must be schema.table`},
		{Config{KeylessTables: []string{"public.[=exclude"}}, `is not a valid pattern`},
	} {
		err := tc.cfg.validateKeyless()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validateKeyless(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestKeylessComment(t *testing.T) {
	for _, tc := range []struct {
		keyless   string
		newTables bool
		want      string
	}{
		{"", false, `{"pgjet":{"source":"src"}}`},
		{KeylessIdentityFull, false, `{"pgjet":{"keyless":"identity-full","source":"src"}}`},
		{KeylessExclude, true, `{"pgjet":{"inserts":"p:inserts","keyless":"exclude","new_tables":true,"source":"src"}}`},
	} {
		if got := schema.KeylessComment(tc.keyless, tc.newTables, "p:inserts", "src"); got != tc.want {
			t.Errorf("KeylessComment(%q, %v) = %s, want %s", tc.keyless, tc.newTables, got, tc.want)
		}
	}
}
