package schema

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ParseTable turns "schema.name" (or "name", in public) into an
// identifier. Names are taken literally: no quoting, case kept.
func ParseTable(s string) (pgx.Identifier, error) {
	schema, name, ok := strings.Cut(s, ".")
	if !ok {
		schema, name = "public", s
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return nil, fmt.Errorf("table %q: use schema.name", s)
	}
	return pgx.Identifier{schema, name}, nil
}
