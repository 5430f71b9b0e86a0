package stream

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/pgjet/pgjet/schema/redact"
)

// FuzzRedactURL embeds a random password (or token) in every form a NATS
// server list takes, escaped and raw (malformed), with and without a
// scheme, and checks that neither RedactURL nor the error Connect makes of
// a URL that does not parse shows it. `make test` runs the seeds and
// testdata/fuzz.
func FuzzRedactURL(f *testing.F) {
	for _, pw := range []string{
		"secret", "a b c", "se%cret", "sec/ret", "sec#ret", "1234#secret", "sec@ret", "sec:ret",
		"ab,cd", "12,nats://u", "ab://cd", "//bcd", "s?ec@ret",
	} {
		f.Add(pw)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 4 || strings.TrimSpace(pw) == "" || strings.ContainsRune(pw, 'x') {
			return // too short to tell a leak from chance, or could be made of the mask
		}
		for i := 0; i < len(pw); i++ {
			if pw[i] < 0x20 || pw[i] == 0x7f {
				return
			}
		}
		userinfo := strings.TrimPrefix(url.UserPassword("u", pw).String(), "u:")
		for _, form := range []struct {
			written string
			urls    func(string) string
			token   bool // pw stands where nats.go reads a token (or a user name, after which ':' starts a password)
		}{
			{pw, func(w string) string { return "nats://u:" + w + "@h:4222" }, false},
			{pw, func(w string) string { return "nats://u:" + w + "@a:4222,nats://u:" + w + "@b:4222" }, false},
			{pw, func(w string) string { return "nats://a:4222, u:" + w + "@b:4222" }, false},
			{pw, func(w string) string { return "u:" + w + "@h:4222" }, false},
			{pw, func(w string) string { return "nats://" + w + "@h:4222" }, true},
			{pw, func(w string) string { return w + "@h:4222" }, true},
			{userinfo, func(w string) string { return "tls://u:" + w + "@h:4222" }, false},
		} {
			if form.token && strings.Contains(pw, ":") {
				continue // a user name and a password, which the other forms check
			}
			if form.written == pw && strings.Contains(pw, ",") {
				// nats.go splits the list at every comma, so a raw one
				// makes the password part of two servers; the redactor
				// reads the simple cases (TestRedactURL) as one.
				continue
			}
			urls, ideal := form.urls(form.written), form.urls(redact.Mask)
			if u, err := url.Parse(urls); err == nil && u.Scheme != "" && strings.HasPrefix(strings.ToLower(pw), u.Scheme+"://") {
				continue // nats.go reads the start of this "token" as the URL's scheme
			}
			check := func(fn, out, ideal string) {
				t.Helper()
				for _, secret := range []string{pw, form.written} {
					if !strings.Contains(ideal, secret) && strings.Contains(out, secret) {
						t.Fatalf("%s shows the password %q of %q:\n%s", fn, secret, urls, out)
					}
				}
			}
			check("RedactURL", RedactURL(urls), ideal)
			// What nats.Connect does first: parse each server of the list.
			for _, s := range strings.Split(urls, ",") {
				s = strings.TrimSpace(s)
				if !strings.Contains(s, "://") {
					s = "nats://" + s
				}
				if _, err := url.Parse(s); err != nil {
					err = classifyConnect(RedactURL(urls), ConnectOptions{}, err)
					if !errors.As(err, new(*URLError)) {
						t.Fatalf("a URL that does not parse gives %T, want *URLError: %v", err, err)
					}
					// The message's own words may hold the password by chance.
					check("Connect", err.Error(), strings.Replace(err.Error(), RedactURL(urls), ideal, 1))
				}
			}
		}
	})
}

// TestRedactURL_ListWithOtherSeparators: nats.go splits a server list at
// commas only, so a list written with spaces or semicolons is one
// malformed URL, which the error prints: no token of it may show.
func TestRedactURL_ListWithOtherSeparators(t *testing.T) {
	t.Parallel()
	for _, urls := range []string{
		"nats://Tok3nOne@h1:4222 nats://Tok3nTwo@h2:4222",
		"nats://Tok3nOne@h1:4222;nats://Tok3nTwo@h2:4222",
		"nats://Tok3nOne@h1:4222; nats://Tok3nTwo@h2:4222",
	} {
		if got := RedactURL(urls); strings.Contains(got, "Tok3nOne") || strings.Contains(got, "Tok3nTwo") {
			t.Errorf("RedactURL(%q) = %q shows a token", urls, got)
		}
	}
}
