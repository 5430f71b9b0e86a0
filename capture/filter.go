package capture

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// filter decides, on the capture side, which tables, columns and schema
// changes reach the stream. Postgres still decodes what it drops.
type filter struct {
	tables  map[string]bool // --tables (the publication), exact schema.table
	include []string        // --include-tables patterns
	exclude []string        // --exclude-tables patterns
	columns []string        // --exclude-columns patterns, schema.table.column
}

func newFilter(cfg *Config) *filter {
	f := &filter{include: cfg.IncludeTables, exclude: cfg.ExcludeTables, columns: cfg.ExcludeColumns}
	if len(cfg.Tables) > 0 {
		f.tables = map[string]bool{}
		for _, t := range cfg.Tables {
			f.tables[t] = true
		}
	}
	return f
}

// Filter is the choice of tables and columns that pgjet-capture's
// --tables, --include-tables, --exclude-tables and --exclude-columns make,
// for tools that must see a source as its replicas do (pgjet verify).
// The zero Filter keeps everything.
type Filter struct{ f *filter }

// NewFilter builds the Filter of these flags' values: tables exact
// schema.table names (none: all), the others patterns as capture takes
// them. It returns one error per bad value, naming its flag.
func NewFilter(tables, include, exclude, columns []string) (Filter, error) {
	cfg := &Config{Tables: tables, IncludeTables: include, ExcludeTables: exclude, ExcludeColumns: columns}
	if err := cfg.validateFilter(); err != nil {
		return Filter{}, err
	}
	return Filter{newFilter(cfg)}, nil
}

// Table reports whether the table is captured; pgjet's own never is.
func (f Filter) Table(schemaName, name string) bool {
	if f.f == nil {
		return schemaName != schema.Own
	}
	return f.f.table(schemaName, name)
}

// Column reports whether a column of a table is captured.
func (f Filter) Column(schemaName, table, column string) bool {
	return f.f == nil || f.f.column(schemaName, table, column)
}

// validateFilter checks --tables, --include-tables, --exclude-tables and
// --exclude-columns.
func (c *Config) validateFilter() error {
	var errs []error
	for _, t := range c.Tables {
		if !strings.Contains(t, ".") {
			errs = append(errs, fmt.Errorf("--tables: %q must be schema.table", t))
		}
	}
	return errors.Join(append(errs, validatePatterns("--include-tables", c.IncludeTables, 2),
		validatePatterns("--exclude-tables", c.ExcludeTables, 2),
		validatePatterns("--exclude-columns", c.ExcludeColumns, 3))...)
}

// tableFilter reports whether only some tables are captured.
func (f *filter) tableFilter() bool {
	return f.tables != nil || len(f.include) > 0 || len(f.exclude) > 0
}

// table reports whether changes of schemaName.name are captured. Patterns
// match schema.table with path.Match; an exclude wins over an include.
// pgjet's own tables never are (a FOR ALL TABLES publication holds them
// where the source is a pgjet target too).
func (f *filter) table(schemaName, name string) bool {
	if schemaName == schema.Own {
		return false
	}
	qn := schemaName + "." + name
	if f.tables != nil && !f.tables[qn] {
		return false
	}
	for _, p := range f.exclude {
		if ok, _ := path.Match(p, qn); ok {
			return false
		}
	}
	if len(f.include) == 0 {
		return true
	}
	for _, p := range f.include {
		if ok, _ := path.Match(p, qn); ok {
			return true
		}
	}
	return false
}

// column reports whether a column of a table is captured.
func (f *filter) column(schemaName, table, col string) bool {
	qn := schemaName + "." + table + "." + col
	for _, p := range f.columns {
		if ok, _ := path.Match(p, qn); ok {
			return false
		}
	}
	return true
}

// columnMask returns the indexes of rel's columns that are captured, or
// nil when all are. An excluded column of the replica identity is a
// configuration error: replicas find rows by it.
func (f *filter) columnMask(rel *stream.Relation) ([]int, error) {
	if len(f.columns) == 0 {
		return nil, nil
	}
	var keep []int
	for i, c := range rel.Columns {
		if f.column(rel.Schema, rel.Name, c.Name) {
			keep = append(keep, i)
			continue
		}
		if c.Key {
			why := "is part of its replica identity key"
			if rel.Identity == stream.IdentityFull {
				why = "identifies rows: the table has REPLICA IDENTITY FULL, which makes every column part of the key"
			}
			return nil, pgerr.Fatalf(nil, "--exclude-columns: column %s.%s.%s %s; replicas find rows by it, so it cannot be excluded: remove it from --exclude-columns",
				rel.Schema, rel.Name, c.Name, why)
		}
	}
	if len(keep) == len(rel.Columns) {
		return nil, nil
	}
	if keep == nil {
		keep = []int{}
	}
	return keep, nil
}

// ddl reports whether a captured schema change is published. A change
// whose objects belong to tables that are all filtered out is dropped; one
// that touches no table (a type, a function) or whose query string holds
// several statements (the objects describe only the first) is kept.
func (f *filter) ddl(d *schema.DDL) bool {
	if !f.tableFilter() {
		return true
	}
	tables := d.Tables()
	if len(tables) == 0 || len(schema.SplitStatements(d.SQL)) > 1 {
		return true
	}
	for _, t := range tables {
		if f.table(t[0], t[1]) {
			return true
		}
	}
	return false
}

// validatePatterns checks --include-tables, --exclude-tables and
// --exclude-columns.
func validatePatterns(flag string, pats []string, parts int) error {
	var errs []error
	for _, p := range pats {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a valid pattern: %w", flag, p, err))
			continue
		}
		if strings.Count(p, ".") < parts-1 {
			want := "schema.table (e.g. public.audit_*)"
			if parts == 3 {
				want = "schema.table.column (e.g. public.users.ssn or *.*.ssn)"
			}
			errs = append(errs, fmt.Errorf("%s: %q must be %s", flag, p, want))
		}
	}
	return errors.Join(errs...)
}
