package capture

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgjet/pgjet/schema"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

func TestFilter_Table(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		table   string
		want    bool
		setting bool
	}{
		{"no filter", Config{}, "public.t", true, false},
		{"include match", Config{IncludeTables: []string{"public.ord*"}}, "public.orders", true, true},
		{"include miss", Config{IncludeTables: []string{"public.ord*"}}, "public.users", false, true},
		{"include other schema", Config{IncludeTables: []string{"public.*"}}, "audit.log", false, true},
		{"exclude", Config{ExcludeTables: []string{"audit.*"}}, "audit.log", false, true},
		{"exclude miss", Config{ExcludeTables: []string{"audit.*"}}, "public.log", true, true},
		{"exclude wins", Config{IncludeTables: []string{"*.*"}, ExcludeTables: []string{"public.secret"}}, "public.secret", false, true},
		{"tables list", Config{Tables: []string{"public.a"}}, "public.b", false, true},
		{"tables list and exclude", Config{Tables: []string{"public.a"}, ExcludeTables: []string{"public.a"}}, "public.a", false, true},
		{"star does not cross dots wrongly", Config{IncludeTables: []string{"public.*"}}, "public.a.b", true, true},
		{"pgjet's own", Config{}, "pgjet.restore", false, false},
		{"pgjet's own, included", Config{IncludeTables: []string{"*.*"}}, "pgjet.applied", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFilter(&tt.cfg)
			s, n, _ := strings.Cut(tt.table, ".")
			if got := f.table(s, n); got != tt.want {
				t.Errorf("table(%s) = %v, want %v", tt.table, got, tt.want)
			}
			if got := f.tableFilter(); got != tt.setting {
				t.Errorf("tableFilter() = %v, want %v", got, tt.setting)
			}
		})
	}
}

func TestFilter_ColumnMask(t *testing.T) {
	rel := &stream.Relation{Schema: "public", Name: "users", Identity: stream.IdentityDefault, Columns: []stream.Column{
		{Name: "id", Key: true}, {Name: "email"}, {Name: "ssn"}, {Name: "name"}}}
	f := newFilter(&Config{ExcludeColumns: []string{"*.*.ssn", "public.users.email"}})
	keep, err := f.columnMask(rel)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 3}; !reflect.DeepEqual(keep, want) {
		t.Errorf("columnMask = %v, want %v", keep, want)
	}
	if keep, err := newFilter(&Config{ExcludeColumns: []string{"other.users.ssn"}}).columnMask(rel); err != nil || keep != nil {
		t.Errorf("columnMask without a match = %v, %v; want nil, nil", keep, err)
	}
	_, err = newFilter(&Config{ExcludeColumns: []string{"public.users.id"}}).columnMask(rel)
	if !pgerr.IsFatal(err) || !strings.Contains(err.Error(), "public.users.id") {
		t.Errorf("excluding a key column: err = %v, want a fatal error naming it", err)
	}
	full := &stream.Relation{Schema: "public", Name: "log", Identity: stream.IdentityFull, Columns: []stream.Column{{Name: "a", Key: true}, {Name: "ssn", Key: true}}}
	if _, err := f.columnMask(full); !pgerr.IsFatal(err) || !strings.Contains(err.Error(), "FULL") {
		t.Errorf("excluding a column of an identity FULL table: err = %v, want a fatal error about FULL", err)
	}
}

func TestFilter_DDL(t *testing.T) {
	obj := func(s, tbl string) schema.DDLObject {
		return schema.DDLObject{Type: "table", TableSchema: s, Table: tbl}
	}
	f := newFilter(&Config{ExcludeTables: []string{"audit.*"}})
	tests := []struct {
		name string
		d    schema.DDL
		want bool
	}{
		{"excluded table", schema.DDL{SQL: "ALTER TABLE audit.log ADD c int", Objects: []schema.DDLObject{obj("audit", "log")}}, false},
		{"captured table", schema.DDL{SQL: "ALTER TABLE public.t ADD c int", Objects: []schema.DDLObject{obj("public", "t")}}, true},
		{"mixed", schema.DDL{SQL: "DROP TABLE audit.log, public.t", Objects: []schema.DDLObject{obj("audit", "log"), obj("public", "t")}}, true},
		{"no table", schema.DDL{SQL: "CREATE TYPE audit.mood AS ENUM ('a')", Objects: []schema.DDLObject{{Type: "type", Schema: "audit"}}}, true},
		{"several statements", schema.DDL{SQL: "CREATE TABLE audit.x (a int); CREATE TABLE public.y (a int)", Objects: []schema.DDLObject{obj("audit", "x")}}, true},
	}
	for _, tt := range tests {
		if got := f.ddl(&tt.d); got != tt.want {
			t.Errorf("%s: ddl() = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !newFilter(&Config{}).ddl(&tests[0].d) {
		t.Error("without a filter a schema change was dropped")
	}
}

func TestConfig_ValidateFilters(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DB, cfg.NATS, cfg.Name = "postgres://x", "nats://x", "src"
	cfg.IncludeTables = []string{"public.*", "nodot", "bad[.x"}
	cfg.ExcludeColumns = []string{"public.users.ssn", "users.ssn"}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad patterns")
	}
	for _, want := range []string{`"nodot" must be schema.table`, `"bad[.x" is not a valid pattern`, `"users.ssn" must be schema.table.column`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not say %q", err, want)
		}
	}
	for _, ok := range []string{"public.*", "public.users.ssn"} {
		if strings.Contains(err.Error(), `"`+ok+`"`) {
			t.Errorf("Validate rejected the good pattern %q: %v", ok, err)
		}
	}
}
