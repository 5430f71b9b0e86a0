// Package layering holds no code, only the test that keeps pgjet's import
// rules: capture and apply never depend on each other, and stream and
// schema depend on no project package but the leaf schema/redact. It
// needs no server: it reads the import graph with go list.
package layering
