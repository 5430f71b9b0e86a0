package schema

import (
	"reflect"
	"strings"
	"testing"
)

func roleSet(current string, roles []*Role, members ...Membership) *Roles {
	rs := &Roles{Roles: map[string]*Role{}, Members: members, Current: current}
	for _, r := range roles {
		rs.Roles[r.Name] = r
	}
	return rs
}

func pw(s string) *string { return &s }

// TestPlanRoles: the statements that make a target's roles match the
// source's, and what is left alone.
func TestPlanRoles(t *testing.T) {
	src := roleSet("postgres", []*Role{
		{Name: "postgres", System: true, Super: true, Inherit: true, Login: true, ConnLimit: -1},
		{Name: "pg_read_all_data", System: true, Inherit: true, ConnLimit: -1},
		{Name: "app", Inherit: true, Login: true, ConnLimit: 5, ValidUntil: "2100-01-01 00:00:00+00", Password: pw("SCRAM-SHA-256$4096:x")},
		{Name: "reader", ConnLimit: -1},
		{Name: `Odd "name"`, Inherit: true, CreateDB: true, BypassRLS: true, ConnLimit: -1},
		{Name: "admin", Super: true, Inherit: true, ConnLimit: -1},
		{Name: "pgjet_capture", Inherit: true, Login: true, Replication: true, ConnLimit: -1},
		{Name: "boss", Inherit: true, ConnLimit: -1},
	},
		Membership{Role: "reader", Member: "app"},
		Membership{Role: "pg_read_all_data", Member: "reader", Admin: true},
		Membership{Role: "app", Member: `Odd "name"`},
		Membership{Role: "app", Member: "admin"},
		Membership{Role: "reader", Member: "boss", Admin: true},
	)
	dst := roleSet("postgres", []*Role{
		{Name: "postgres", System: true, Super: true, Inherit: true, Login: true, ConnLimit: -1},
		{Name: "pg_read_all_data", System: true, Inherit: true, ConnLimit: -1},
		{Name: "reader", Inherit: true, Login: true, ConnLimit: 1},
		{Name: "boss", Super: true, Inherit: true, ConnLimit: -1},
		{Name: "local_only", Inherit: true, ConnLimit: -1},
		{Name: "pgjet_apply", Inherit: true, Login: true, ConnLimit: -1, Password: pw("md5abc")},
	},
		Membership{Role: "local_only", Member: "reader"},
		Membership{Role: "app", Member: "pgjet_apply"},
		Membership{Role: "pg_read_all_data", Member: "reader"},
	)
	p := PlanRoles(src, dst, RolesOptions{Exclude: []string{"pgjet_*"}})
	var got []string
	for _, st := range p.Statements {
		got = append(got, st.SQL)
		if st.Show != st.SQL {
			t.Errorf("without passwords, Show %q differs from SQL %q", st.Show, st.SQL)
		}
	}
	want := []string{
		`CREATE ROLE "Odd ""name""" WITH CREATEDB BYPASSRLS`,
		`CREATE ROLE "app" WITH LOGIN CONNECTION LIMIT 5 VALID UNTIL '2100-01-01 00:00:00+00'`,
		`ALTER ROLE "reader" WITH NOINHERIT NOLOGIN CONNECTION LIMIT -1`,
		`GRANT "app" TO "Odd ""name"""`,
		`GRANT "pg_read_all_data" TO "reader" WITH ADMIN OPTION`,
		`GRANT "reader" TO "app"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("statements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.Created != 2 || p.Altered != 1 || p.Granted != 3 || p.Revoked != 0 {
		t.Errorf("counts %d/%d/%d/%d, want 2/1/3/0", p.Created, p.Altered, p.Granted, p.Revoked)
	}
	skipped := strings.Join(p.Skipped, "\n")
	for _, w := range []string{`superuser "admin"`, `"boss" is a superuser on the target`, `excluded "pgjet_capture"`} {
		if !strings.Contains(skipped, w) {
			t.Errorf("skipped does not say %q:\n%s", w, skipped)
		}
	}

	// Applied, the same plan is empty; a membership the source dropped
	// is revoked; passwords are copied and hidden in Show.
	after := roleSet("postgres", []*Role{src.Roles["postgres"], src.Roles["pg_read_all_data"],
		{Name: "app", Inherit: true, Login: true, ConnLimit: 5, ValidUntil: "2100-01-01 00:00:00+00"},
		{Name: "reader", ConnLimit: -1},
		{Name: `Odd "name"`, Inherit: true, CreateDB: true, BypassRLS: true, ConnLimit: -1},
		dst.Roles["boss"], dst.Roles["local_only"],
	},
		Membership{Role: "reader", Member: "app"},
		Membership{Role: "pg_read_all_data", Member: "reader", Admin: true},
		Membership{Role: "app", Member: `Odd "name"`},
		Membership{Role: "local_only", Member: "reader"},
	)
	if p := PlanRoles(src, after, RolesOptions{Exclude: []string{"pgjet_*"}}); len(p.Statements) != 0 {
		t.Errorf("second plan: %+v, want none", p.Statements)
	}
	src.Members = src.Members[1:] // REVOKE reader FROM app
	src.Members[0].Admin = false  // REVOKE ADMIN OPTION
	src.Roles["reader"].Password = nil
	p = PlanRoles(src, after, RolesOptions{Passwords: true, Exclude: []string{"pgjet_*"}})
	got = got[:0]
	var shown []string
	for _, st := range p.Statements {
		got = append(got, st.SQL)
		shown = append(shown, st.Show)
	}
	want = []string{
		`ALTER ROLE "app" WITH PASSWORD 'SCRAM-SHA-256$4096:x'`,
		`REVOKE ADMIN OPTION FOR "pg_read_all_data" FROM "reader"`,
		`REVOKE "reader" FROM "app"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("statements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(strings.Join(shown, "\n"), "SCRAM") || shown[0] != `ALTER ROLE "app" WITH PASSWORD '…'` {
		t.Errorf("Show reveals the password or is wrong: %q", shown)
	}
}
