// Package layering holds no code, only the test that keeps pgjet's import
// rules: capture and apply never depend on each other; stream depends on
// no project package but the leaf schema/redact, and schema on none
// outside schema/ (its leaves pgerr and redact); and apply/applied (the
// reader of pgjet.applied) and apply/verify depend on none of the
// applier, so that pgjet status and pgjet verify do not pull it in. It
// needs no server: it reads the import graph with go list.
package layering
