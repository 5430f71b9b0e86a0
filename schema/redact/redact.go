// Package redact hides passwords and tokens in connection strings before
// they reach logs, error messages or status output: Postgres URLs and
// keyword/value strings, and NATS server URLs and lists.
//
// Strings get printed exactly when something is wrong with them, so the
// redactor must not depend on a parser accepting them: a password with an
// unescaped '%', '/', '#' or '@' makes url.Parse fail or split the URL in
// the wrong place. It therefore works on the raw text and, where the text
// is ambiguous, hides too much rather than too little: in a URL everything
// from the first ':' after "scheme://" to the last '@' before the next URL
// is taken as the password.
//
// The forms follow libpq and nats.go:
// https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING
// and https://docs.nats.io/using-nats/developer/connecting.
package redact

import (
	"slices"
	"strings"
)

// Mask is what replaces each hidden secret.
const Mask = "xxxxx"

// Postgres returns conn, a Postgres connection string as a user gave it,
// with every password hidden: a URL (postgres://user:password@host/db,
// ?password=...), a keyword/value string (password='...', password = ...),
// or either mangled. A string that does not start with a scheme has
// user:password@ hidden too, as in user:password@host/db.
func Postgres(conn string) string { return mask(conn, postgresSpans(conn)) }

func postgresSpans(conn string) []span {
	spans := append(urlSpans(conn), keywordSpans(conn, true)...)
	if schemeLen(conn) == 0 {
		spans = append(spans, userinfoSpan(conn, 0)...)
	}
	return spans
}

// NATS returns s, a NATS server URL or a comma-separated list of them,
// with every password and token hidden. A server without a scheme
// (user:password@host:4222) is read as nats.go reads it: as nats://.
func NATS(s string) string { return mask(s, natsSpans(s)) }

// Text returns text, such as an error message, with the passwords of the
// connection strings it quotes hidden.
func Text(text string) string {
	spans := append(urlSpans(text), keywordSpans(text, false)...)
	for i := 0; i < len(text); {
		for i < len(text) && isSpace(text[i]) {
			i++
		}
		j := i
		for j < len(text) && !isSpace(text[j]) {
			j++
		}
		if w := text[i:j]; !strings.Contains(w, "://") {
			spans = append(spans, userinfoSpan(w, i)...)
		}
		i = j
	}
	return mask(text, spans)
}

// Within returns text with every secret that Postgres(conn) hides hidden
// wherever it appears in text: for messages of a driver that quote pieces
// of conn. Pieces shorter than 3 bytes are left, as they would garble the
// message and tell little.
func Within(text, conn string) string {
	for _, sp := range postgresSpans(conn) {
		if secret := conn[sp.from:sp.to]; len(secret) >= 3 {
			text = strings.ReplaceAll(text, secret, Mask)
		}
	}
	return Text(text)
}

// span is a byte range [from, to) of a secret.
type span struct{ from, to int }

func natsSpans(s string) []span {
	// nats.go splits the list at commas and trims each server.
	type server struct{ a, b int } // the part after "scheme://", or all of a server without one
	var servers []server
	for from := 0; from <= len(s); {
		end := strings.IndexByte(s[from:], ',')
		if end < 0 {
			end = len(s)
		} else {
			end += from
		}
		a, b := from, end
		for a < b && isSpace(s[a]) {
			a++
		}
		for b > a && isSpace(s[b-1]) {
			b--
		}
		n := schemeLen(s[a:b])
		if n > 0 {
			a += n + len("://")
		}
		// A comma in a password or token (nats://u:pass,word@host) leaves
		// its first part looking like a host or port, and its last like a
		// server without a scheme: read the two as one server. This hides
		// too much of a list that mixes servers with and without a scheme
		// and user info (h1:4222,u:pw@h2:4222), which is rare.
		if last := len(servers) - 1; n == 0 && strings.Contains(s[a:b], "@") &&
			last >= 0 && !strings.Contains(s[servers[last].a:servers[last].b], "@") {
			servers[last].b = b
		} else {
			servers = append(servers, server{a, b})
		}
		from = end + 1
	}
	var out []span
	for _, sv := range servers {
		out = append(out, regionSpans(s, sv.a, sv.b, true)...)
	}
	// A list joined by spaces or semicolons is one server to nats.go,
	// and a malformed one: read as text, each of its URLs has its secret.
	out = append(out, urlSpans(s)...)
	return append(out, keywordSpans(s, false)...)
}

// urlSpans finds the secrets of every scheme://... URL in s. A URL runs
// to the start of the next one. A later "scheme://" starts a URL only
// after a space, a comma or a quote, and only once the URL before it has
// had an '@': one inside a password must not cut the URL short of the
// '@' that ends the password.
func urlSpans(s string) []span {
	type start struct{ scheme, body int } // where the scheme and the part after "://" begin
	var starts []start
	for i := 0; ; {
		k := strings.Index(s[i:], "://")
		if k < 0 {
			break
		}
		k += i
		b := k
		for b > 0 && isSchemeChar(s[b-1]) {
			b--
		}
		for b < k && !isLetter(s[b]) {
			b++
		}
		last := len(starts) - 1
		if b < k && (last < 0 || isURLBoundary(s[b-1]) && strings.Contains(s[starts[last].body:b], "@")) {
			starts = append(starts, start{b, k + 3})
		}
		i = k + 3
	}
	var out []span
	for i, st := range starts {
		end := len(s)
		if i+1 < len(starts) {
			end = starts[i+1].scheme
		}
		scheme := strings.ToLower(s[st.scheme : st.body-3])
		tokens := scheme != "postgres" && scheme != "postgresql"
		out = append(out, regionSpans(s, st.body, end, tokens)...)
	}
	return out
}

// regionSpans finds the secrets in s[a:b], the part of a URL after
// "scheme://": the password of the user info, which ends at the region's
// last '@' (or all of the user info when tokens is set and it holds no
// ':', as a NATS token), and password query parameters. Without user
// info, a port that is no number is taken for a piece of password.
func regionSpans(s string, a, b int, tokens bool) []span {
	var out []span
	r := s[a:b]
	if at := strings.LastIndexByte(r, '@'); at >= 0 {
		if c := strings.IndexByte(r[:at], ':'); c >= 0 {
			out = append(out, span{a + c + 1, a + at})
		} else if tokens {
			out = append(out, span{a, a + at})
		}
	} else {
		// No user info, or a URL list that nats.go cut at a comma in a
		// password, stranding the password's first part here.
		host := r
		if i := strings.IndexAny(host, "/?#"); i >= 0 {
			host = host[:i]
		}
		off := a
		for h := range strings.SplitSeq(host, ",") {
			p := h
			if strings.HasPrefix(p, "[") {
				if j := strings.IndexByte(p, ']'); j >= 0 {
					p = p[j+1:]
				}
			}
			if c := strings.IndexByte(p, ':'); c >= 0 && !allDigits(p[c+1:]) {
				from := off + len(h) - len(p) + c + 1
				out = append(out, span{from, off + len(h)})
			}
			off += len(h) + 1
		}
	}
	// Query parameters, with keys percent-decoded as pgx does.
	for i := 0; i < len(r); i++ {
		if r[i] != '?' && r[i] != '&' {
			continue
		}
		eq := strings.IndexAny(r[i+1:], "=&?")
		if eq < 0 || r[i+1+eq] != '=' {
			continue
		}
		key := strings.ToLower(strings.TrimSpace(percentDecode(r[i+1 : i+1+eq])))
		if !strings.HasSuffix(key, "password") {
			continue
		}
		from := i + 1 + eq + 1
		out = append(out, span{a + from, a + queryValueEnd(r, from)})
	}
	return out
}

// keywordSpans finds the values of password keywords (password,
// sslpassword, any case) as libpq reads them: after optional spaces
// around '=', a value in single quotes with backslash escapes, or up to
// the next unescaped space. A key after '?' or '&' is a URL query
// parameter, whose value runs to the next parameter.
//
// With whole, s is a whole keyword/value string, where every word is a
// key=value: words after the value that are none (a space not quoted, or
// double quotes, which libpq does not know) are taken for the rest of the
// password.
func keywordSpans(s string, whole bool) []span {
	var out []span
	lower := strings.ToLower(s)
	for i := 0; ; {
		k := strings.Index(lower[i:], "password")
		if k < 0 {
			break
		}
		k += i
		i = k + len("password")
		j := i
		for j < len(s) && isSpace(s[j]) {
			j++
		}
		if j == len(s) || s[j] != '=' {
			continue
		}
		j++
		key := k
		for key > 0 && isKeyChar(s[key-1]) {
			key--
		}
		if key > 0 && (s[key-1] == '?' || s[key-1] == '&') {
			out = append(out, span{j, queryValueEnd(s, j)})
			continue
		}
		for j < len(s) && isSpace(s[j]) {
			j++
		}
		end, _ := keywordValueEnd(s, j)
		if whole {
			end = strayWordsEnd(s, end)
		}
		out = append(out, span{j, end})
	}
	return out
}

// strayWordsEnd returns where the words from s[from] on that are no
// key=value (nor key = value) end: at the start of the next key, or at
// the end of s.
func strayWordsEnd(s string, from int) int {
	end := from
	for {
		w := end
		for w < len(s) && isSpace(s[w]) {
			w++
		}
		if w == len(s) {
			return end
		}
		k := w
		for k < len(s) && isKeyChar(s[k]) {
			k++
		}
		e := k
		for e < len(s) && isSpace(s[e]) {
			e++
		}
		if k > w && e < len(s) && s[e] == '=' {
			return end // the next key
		}
		next, _ := keywordValueEnd(s, w)
		if next == w {
			next++
		}
		end = next
	}
}

// keywordValueEnd returns where the keyword/value value that starts at
// s[from] ends, as libpq reads it: after the closing quote of a value in
// single quotes, else at the next space; a backslash escapes the byte
// after it. ok is false for a quoted value that is not closed.
func keywordValueEnd(s string, from int) (end int, ok bool) {
	quoted := from < len(s) && s[from] == '\''
	end = from
	if quoted {
		end++
	}
	for ; end < len(s); end++ {
		switch {
		case s[end] == '\\':
			end++
		case quoted && s[end] == '\'':
			return end + 1, true
		case !quoted && isSpace(s[end]):
			return end, true
		}
	}
	return len(s), !quoted
}

// secretKeys are the parameters of a Postgres connection string that hold
// a secret: the password, and the pass phrase of the client key.
var secretKeys = []string{"password", "sslpassword"}

// Param returns the value of parameter key of the Postgres connection
// string conn, a URL or keyword/value string, as pgx reads it, and
// whether conn sets it.
func Param(conn, key string) (string, bool) {
	// As pgx and libpq: the last occurrence of a parameter wins.
	val, found := "", false
	if !strings.HasPrefix(conn, "postgres://") && !strings.HasPrefix(conn, "postgresql://") {
		for s := conn; ; {
			s = strings.TrimLeft(s, " \t\n\r\v\f")
			if s == "" {
				return val, found
			}
			eq := strings.IndexByte(s, '=')
			if eq < 0 {
				return "", false
			}
			v := eq + 1
			for v < len(s) && isSpace(s[v]) {
				v++
			}
			end, ok := keywordValueEnd(s, v)
			if !ok {
				return "", false
			}
			if strings.TrimSpace(s[:eq]) == key {
				val, found = unquoteKeywordValue(s[v:end]), true
			}
			s = s[end:]
		}
	}
	// pgx's user info ends at an '@' before any '/': a '?' in it (a raw
	// one in the password) does not start the query.
	_, rest, _ := strings.Cut(conn, "://")
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		rest = rest[i+1:]
	}
	_, query, ok := strings.Cut(rest, "?")
	if !ok {
		return "", false
	}
	// As libpq: one '=' a pair, both halves percent-decoded ('+' is a
	// plus) without their outer spaces.
	for _, pair := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if percentDecode(strings.Trim(k, " ")) == key {
			val, found = percentDecode(strings.Trim(v, " ")), true
		}
	}
	return val, found
}

// unquoteKeywordValue is a keyword/value value as libpq reads it: without
// its single quotes, each backslash taking the byte after it literally.
func unquoteKeywordValue(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		v = v[1 : len(v)-1]
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// WithoutPassword returns the Postgres connection string conn, a URL or
// keyword/value string, without its secrets: the password in the user
// info, password and sslpassword query parameters and keywords. It is for
// programs that get them another way (PGPASSWORD, a service file), and
// reads conn as pgx does; one that pgx cannot read comes back masked as by
// Postgres.
func WithoutPassword(conn string) string {
	if !strings.HasPrefix(conn, "postgres://") && !strings.HasPrefix(conn, "postgresql://") {
		var kept []string
		for s := conn; ; {
			s = strings.TrimLeft(s, " \t\n\r\v\f")
			if s == "" {
				return strings.Join(kept, " ")
			}
			eq := strings.IndexByte(s, '=')
			if eq < 0 {
				return Postgres(conn)
			}
			v := eq + 1
			for v < len(s) && isSpace(s[v]) {
				v++
			}
			end, ok := keywordValueEnd(s, v)
			if !ok {
				return Postgres(conn)
			}
			if !slices.Contains(secretKeys, strings.TrimSpace(s[:eq])) {
				kept = append(kept, s[:end])
			}
			s = s[end:]
		}
	}
	scheme, rest, _ := strings.Cut(conn, "://")
	var b strings.Builder
	b.WriteString(scheme + "://")
	// pgx's user info ends at an '@' before any '/'.
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		user, _, _ := strings.Cut(rest[:i], ":")
		b.WriteString(user + "@")
		rest = rest[i+1:]
	}
	path, query, ok := strings.Cut(rest, "?")
	b.WriteString(path)
	if ok {
		var kept []string
		for _, pair := range strings.Split(query, "&") {
			key, _, _ := strings.Cut(pair, "=")
			if !slices.Contains(secretKeys, strings.TrimSpace(percentDecode(key))) {
				kept = append(kept, pair)
			}
		}
		if len(kept) > 0 {
			b.WriteString("?" + strings.Join(kept, "&"))
		}
	}
	return b.String()
}

// queryValueEnd returns where the query parameter value that starts at
// s[from] ends: at the next '&' that starts another key=, and not before
// one byte, so that a raw '&' in a password does not end it early. A raw
// '#' or space is still part of the value to pgx.
func queryValueEnd(s string, from int) int {
	for i := from + 1; i < len(s); i++ {
		if s[i] != '&' {
			continue
		}
		k := i + 1
		for k < len(s) && isKeyChar(s[k]) {
			k++
		}
		if k > i+1 && k < len(s) && s[k] == '=' {
			return i
		}
	}
	return len(s)
}

// userinfoSpan returns the span of the password in w, read as
// user:password@host without a scheme; off is w's offset in the string.
func userinfoSpan(w string, off int) []span {
	if at := strings.LastIndexByte(w, '@'); at >= 0 {
		if c := strings.IndexByte(w[:at], ':'); c >= 0 {
			return []span{{off + c + 1, off + at}}
		}
	}
	return nil
}

// mask replaces the spans of s with Mask, merging those that overlap or
// touch.
func mask(s string, spans []span) string {
	spans = slices.DeleteFunc(spans, func(sp span) bool { return sp.to <= sp.from })
	if len(spans) == 0 {
		return s
	}
	slices.SortFunc(spans, func(x, y span) int { return x.from - y.from })
	var b strings.Builder
	last := 0
	for i := 0; i < len(spans); {
		from, to := spans[i].from, spans[i].to
		for i++; i < len(spans) && spans[i].from <= to; i++ {
			to = max(to, spans[i].to)
		}
		b.WriteString(s[last:from])
		b.WriteString(Mask)
		last = to
	}
	b.WriteString(s[last:])
	return b.String()
}

// schemeLen returns the length of the scheme of s when s starts with
// "scheme://", else 0.
func schemeLen(s string) int {
	i := 0
	for i < len(s) && isSchemeChar(s[i]) {
		i++
	}
	if i == 0 || !isLetter(s[0]) || !strings.HasPrefix(s[i:], "://") {
		return 0
	}
	return i
}

func percentDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isSchemeChar(c byte) bool {
	return isLetter(c) || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

func isKeyChar(c byte) bool { return isLetter(c) || c >= '0' && c <= '9' || c == '_' || c == '%' }

// isURLBoundary reports whether a URL may start after c in a list or in
// text.
func isURLBoundary(c byte) bool { return isSpace(c) || strings.IndexByte(",;\"'`(<[=", c) >= 0 }

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
