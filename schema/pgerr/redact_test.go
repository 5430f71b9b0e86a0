package pgerr

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/schema/redact"
)

// FuzzRedact embeds a random password in every form a Postgres connection
// string takes, written as libpq wants it and written raw (malformed), and
// checks that neither redact.Postgres, nor the error ClassifyConnect
// makes of pgx's parse error, nor redact.WithoutPassword (pg_dump's
// command line) of a string pgx reads shows it. `make test` runs the seeds and testdata/fuzz.
func FuzzRedact(f *testing.F) {
	for _, pw := range []string{
		"secret", "a b c", `it's\`, `\'q\'`, "se%cret", "sec/ret", "sec#ret", "1234#secret", "sec@ret",
		"s?ec@ret", "sec:ret", "pw' host=h", "p,q://r", "1234,postgres://u", ",postgres://v", "a&b=c", "pass word=q",
	} {
		f.Add(pw)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if !fuzzablePassword(pw) {
			return
		}
		for _, form := range postgresForms(pw) {
			checkHidden(t, form, "Redact", redact.Postgres(form.conn))
			cfg, err := pgx.ParseConfig(form.conn)
			if err == nil && (cfg.Password == pw || strings.Contains(form.conn, "sslpassword")) {
				// What pg_dump's command line gets of a string pgx reads.
				checkHidden(t, form, "WithoutPassword", redact.WithoutPassword(form.conn))
			}
			if v, ok := redact.Param(form.conn, "password"); err == nil && ok && v != cfg.Password {
				// Param reads a parameter as pgx does (pg_dump's service
				// file gets the sslpassword it reads).
				t.Fatalf("redact.Param(%q, password) = %q, pgx reads %q", form.conn, v, cfg.Password)
			}
			if err != nil {
				err = ClassifyConnect(form.conn, err)
				var fe *FatalError
				if !errors.As(err, &fe) {
					t.Fatalf("ClassifyConnect of a parse error = %v, want a FatalError", err)
				}
				// The message's own words may hold the password by chance.
				form.ideal = strings.Replace(fe.Msg, redact.Postgres(form.conn), form.ideal, 1)
				checkHidden(t, form, "ClassifyConnect", err.Error())
			}
		}
	})
}

// fuzzablePassword reports whether pw can show a leak: long enough not
// to turn up by chance, without control characters, and without 'x', so
// that it cannot be made of the mask and what stands around it.
func fuzzablePassword(pw string) bool {
	if len(pw) < 4 || strings.TrimSpace(pw) == "" || strings.ContainsRune(pw, 'x') {
		return false
	}
	for i := 0; i < len(pw); i++ {
		if pw[i] < 0x20 || pw[i] == 0x7f {
			return false
		}
	}
	return true
}

// pwForm is a connection string holding a password as written.
type pwForm struct {
	conn    string
	ideal   string // conn with the password as written replaced by the mask
	pw      string // the password
	written string // the password as it stands in conn (escaped or not)
}

func postgresForms(pw string) []pwForm {
	userinfo := strings.TrimPrefix(url.UserPassword("u", pw).String(), "u:")
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)
	unquoted := strings.NewReplacer(`\`, `\\`, ` `, `\ `, `'`, `\'`).Replace(pw)
	templates := []struct {
		written string
		conn    func(string) string
	}{
		{pw, func(w string) string { return "postgres://u:" + w + "@h:5432/d?sslmode=disable" }},
		{userinfo, func(w string) string { return "postgresql://u:" + w + "@h:5432/d" }},
		{url.QueryEscape(pw), func(w string) string {
			return "postgres://u@h:5432/d?sslmode=disable&password=" + w + "&application_name=a"
		}},
		{pw, func(w string) string { return "postgres://u@h:5432/d?password=" + w }},
		{pw, func(w string) string { return "postgres://u@h:5432/d?sslpassword=" + w + "&sslmode=require" }},
		{url.QueryEscape(pw), func(w string) string { return "postgres://u@h:5432/d?sslpassword=" + w }},
		{quoted, func(w string) string { return "host=h sslpassword='" + w + "' dbname=d" }},
		{pw, func(w string) string { return "u:" + w + "@h:5432/d" }},
		{pw, func(w string) string { return "host=h user=u password=" + w + " dbname=d" }},
		{quoted, func(w string) string { return "host=h user=u password='" + w + "' dbname=d" }},
		{quoted, func(w string) string { return "host=h password = '" + w + "'" }},
		{unquoted, func(w string) string { return "password=" + w + " host=h" }},
		{pw, func(w string) string { return "host=h password='" + w }},
	}
	var forms []pwForm
	for _, tm := range templates {
		forms = append(forms, pwForm{tm.conn(tm.written), tm.conn(redact.Mask), pw, tm.written})
	}
	// The URLs quoted in the text of an error.
	for _, tm := range templates[:2] {
		text := func(w string) string { return "connect to `" + tm.conn(w) + "`: dial tcp: connection refused" }
		forms = append(forms, pwForm{text(tm.written), text(redact.Mask), pw, tm.written})
	}
	return forms
}

// checkHidden fails t when out, what fn made of form, shows the password
// as it is or as written, unless the form shows it anyway around the mask.
func checkHidden(t *testing.T, form pwForm, fn, out string) {
	t.Helper()
	for _, secret := range []string{form.pw, form.written} {
		if !strings.Contains(form.ideal, secret) && strings.Contains(out, secret) {
			t.Fatalf("%s shows the password %q of %q:\n%s", fn, secret, form.conn, out)
		}
	}
}
