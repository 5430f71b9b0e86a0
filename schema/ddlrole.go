package schema

import "strings"

// Roles of the statements of a captured query string.
//
// A query string may switch role between its statements ("CREATE TABLE t
// ...; SET ROLE app; CREATE FUNCTION f() ... SECURITY DEFINER"): the event
// trigger sees each schema change run as the role in effect then, but the
// message carries the whole string (see DDLFunctionBody). StatementRoles
// follows the string's own SET ROLE, RESET ROLE and SET SESSION
// AUTHORIZATION statements so that each statement replays as the role it
// ran as. Role switches the text does not show (set_config('role', ...) in
// a query, a function that switches) are caught by capture: it sends a
// continuing message (DDL.Continued) for a schema change of the same
// string run as another role, which the applier checks against these
// roles.

// roleChange is what a statement does to the role the statements after it
// run as.
type roleChange int

const (
	stmtRoleKept     roleChange = iota // no change
	stmtRoleSet                        // SET [SESSION|LOCAL] ROLE name
	stmtRoleReset                      // RESET ROLE, SET ROLE NONE: back to the session user
	stmtSessionSet                     // SET SESSION AUTHORIZATION name: name is the session user and the role
	stmtSessionReset                   // RESET SESSION AUTHORIZATION: back to the role that logged in
	stmtRoleUnknown                    // SET ROLE to a role the text does not name plainly
)

// StatementRoles returns the role each of stmts runs as, following the
// role switches among them: role is the role the string's first schema
// change ran as (DDL.Role), session the session user (DDL.SessionRole).
// An empty role means the text does not tell (after RESET SESSION
// AUTHORIZATION, whose role is the one that logged in, or a role named by
// an escaped string).
func StatementRoles(stmts []Statement, role, session string) []string {
	out := make([]string, len(stmts))
	cur := role
	for i, st := range stmts {
		out[i] = cur
		switch ch, name := roleStatement(st.SQL); ch {
		case stmtRoleSet:
			cur = name
		case stmtRoleReset:
			cur = session
		case stmtSessionSet:
			session, cur = name, name
		case stmtSessionReset:
			session, cur = "", ""
		case stmtRoleUnknown:
			cur = ""
		}
	}
	return out
}

// roleStatement tells whether st switches role or session authorization,
// and to which role:
//
//	SET [SESSION | LOCAL] ROLE [TO | =] {name | NONE | DEFAULT}
//	SET [SESSION | LOCAL] SESSION AUTHORIZATION [TO | =] {name | DEFAULT}
//	SET [SESSION | LOCAL] SESSION_AUTHORIZATION {TO | =} {name | DEFAULT}
//	RESET ROLE | RESET SESSION AUTHORIZATION | RESET SESSION_AUTHORIZATION
func roleStatement(st string) (roleChange, string) {
	toks := rawTokens(st, 7)
	word := func(i int) string {
		if i < len(toks) && toks[i].kind == tokWord {
			return toks[i].up
		}
		return ""
	}
	switch word(0) {
	case "RESET":
		switch {
		case word(1) == "ROLE":
			return stmtRoleReset, ""
		case word(1) == "SESSION_AUTHORIZATION", word(1) == "SESSION" && word(2) == "AUTHORIZATION":
			return stmtSessionReset, ""
		}
		return stmtRoleKept, ""
	case "SET":
	default:
		return stmtRoleKept, ""
	}
	i := 1
	if (word(1) == "SESSION" || word(1) == "LOCAL") && word(2) != "AUTHORIZATION" && word(2) != "CHARACTERISTICS" {
		i = 2
	}
	session := false
	switch {
	case word(i) == "ROLE":
		i++
	case word(i) == "SESSION_AUTHORIZATION":
		session = true
		i++
	case word(i) == "SESSION" && word(i+1) == "AUTHORIZATION":
		session = true
		i += 2
	default:
		return stmtRoleKept, ""
	}
	if word(i) == "TO" || i < len(toks) && toks[i].raw == "=" {
		i++
	}
	name, ok := "", false
	if i == len(toks)-1 { // else nothing, or more than one value
		name, ok = toks[i].name()
	}
	switch {
	case !ok && session:
		return stmtSessionReset, "" // a role the text does not tell
	case !ok:
		return stmtRoleUnknown, ""
	case toks[i].kind == tokWord && toks[i].up == "DEFAULT", !session && name == "none":
		if session {
			return stmtSessionReset, ""
		}
		return stmtRoleReset, ""
	case session:
		return stmtSessionSet, name
	}
	return stmtRoleSet, name
}

// rawToken is a token of a statement with its text as written.
type rawToken struct {
	raw  string
	up   string // words upper-cased, as tokens returns them
	kind tokKind
}

// name returns the role name a token stands for, as Postgres reads it: an
// unquoted identifier folded to lower case (ASCII only, as Postgres does),
// a quoted identifier or a plain string literal unquoted. ok is false for
// anything else (an escaped E” string, a symbol).
func (t rawToken) name() (string, bool) {
	switch {
	case t.kind == tokWord:
		return asciiLower(t.raw), true
	case t.kind != tokQuoted || len(t.raw) < 2:
		return "", false
	case t.raw[0] == '"' && t.raw[len(t.raw)-1] == '"':
		return strings.ReplaceAll(t.raw[1:len(t.raw)-1], `""`, `"`), true
	case t.raw[0] == '\'' && t.raw[len(t.raw)-1] == '\'':
		return strings.ReplaceAll(t.raw[1:len(t.raw)-1], `''`, `'`), true
	}
	return "", false
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// rawTokens returns up to n leading tokens of st with their text.
func rawTokens(st string, n int) []rawToken {
	var out []rawToken
	lx := lexer{s: st}
	for len(out) < n {
		tok, kind, ok := lx.next()
		if !ok {
			break
		}
		raw := tok
		if kind == tokWord {
			// A word is the longest run of identifier characters ending
			// at lx.pos; tok is upper-cased, which may change its length.
			start := lx.pos
			for start > 0 && isIdentChar(st[start-1]) {
				start--
			}
			raw = st[start:lx.pos]
		}
		out = append(out, rawToken{raw: raw, up: tok, kind: kind})
	}
	return out
}
