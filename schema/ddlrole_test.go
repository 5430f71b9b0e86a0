package schema

import (
	"reflect"
	"testing"
)

func TestStatementRoles(t *testing.T) {
	tests := []struct {
		sql  string
		want []string // role of each statement; "" when the text does not tell
	}{
		{"CREATE TABLE a (x int); CREATE TABLE b (x int)", []string{"first", "first"}},
		{"CREATE TABLE a (x int); SET ROLE app; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; RESET ROLE; CREATE TABLE b (x int)",
			[]string{"first", "first", "app", "app", "login"}},
		{`set local role "App"; create table a (x int); set role none; create table b (x int)`, []string{"first", "App", "App", "login"}},
		{"SET SESSION ROLE TO 'o''k'; CREATE TABLE a (x int); SET role = DEFAULT; CREATE TABLE b (x int)", []string{"first", "o'k", "o'k", "login"}},
		{"SET ROLE Migrator; CREATE TABLE a (x int)", []string{"first", "migrator"}},
		{"SET SESSION AUTHORIZATION app; CREATE TABLE a (x int); SET ROLE other; RESET ROLE; CREATE TABLE b (x int)",
			[]string{"first", "app", "app", "other", "app"}},
		{"SET session_authorization = 'app'; CREATE TABLE a (x int)", []string{"first", "app"}},
		{"RESET SESSION AUTHORIZATION; CREATE TABLE a (x int); RESET ROLE; CREATE TABLE b (x int)", []string{"first", "", "", ""}},
		{"SET SESSION AUTHORIZATION DEFAULT; CREATE TABLE a (x int)", []string{"first", ""}},
		{"SET ROLE E'app'; CREATE TABLE a (x int); RESET ROLE; CREATE TABLE b (x int)", []string{"first", "", "", "login"}},
		{"SET ROLE app, other; CREATE TABLE a (x int)", []string{"first", ""}},
		// Not role switches.
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SET LOCAL search_path = s; RESET ALL; SET rolex = 1; CREATE TABLE a (x int)",
			[]string{"first", "first", "first", "first", "first"}},
	}
	for _, tt := range tests {
		got := StatementRoles(ReplayStatements(tt.sql), "first", "login")
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("StatementRoles(%q) = %q, want %q", tt.sql, got, tt.want)
		}
	}
}
