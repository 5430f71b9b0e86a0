package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"
)

type testFlags struct {
	nats    string
	group   int
	delay   time.Duration
	ddl     bool
	tables  []string
	maxB    int64
	fs      *pflag.FlagSet
	cfgPath string
}

func newTestFlags(t *testing.T, yaml string) *testFlags {
	t.Helper()
	f := &testFlags{fs: pflag.NewFlagSet("pgjet-test", pflag.ContinueOnError)}
	f.fs.StringVar(&f.nats, "nats", "", "")
	f.fs.IntVar(&f.group, "group-txns", 1000, "")
	f.fs.DurationVar(&f.delay, "group-delay", 200*time.Millisecond, "")
	f.fs.BoolVar(&f.ddl, "ddl", true, "")
	f.fs.StringSliceVar(&f.tables, "tables", nil, "")
	f.fs.Int64Var(&f.maxB, "stream-max-bytes", 0, "")
	f.cfgPath = filepath.Join(t.TempDir(), "pgjet.yaml")
	if err := os.WriteFile(f.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestConfig_Precedence(t *testing.T) {
	f := newTestFlags(t, `
nats: nats://file:4222
group-txns: 500
group-delay: 1s
ddl: false
tables: [public.a, "public.b,c"]
stream-max-bytes: 1073741824
`)
	t.Setenv("PGJET_GROUP_DELAY", "3s")
	ParseWithConfig(f.fs, []string{"--config", f.cfgPath, "--group-txns", "7"})
	if got, want := f.nats, "nats://file:4222"; got != want {
		t.Errorf("nats = %q, want %q (from the file)", got, want)
	}
	if got, want := f.group, 7; got != want {
		t.Errorf("group-txns = %d, want %d (the flag wins)", got, want)
	}
	if got, want := f.delay, 3*time.Second; got != want {
		t.Errorf("group-delay = %s, want %s (the environment wins over the file)", got, want)
	}
	if f.ddl {
		t.Error("ddl = true, want false from the file")
	}
	if got, want := strings.Join(f.tables, "|"), "public.a|public.b,c"; got != want {
		t.Errorf("tables = %q, want %q", got, want)
	}
	if got, want := f.maxB, int64(1<<30); got != want {
		t.Errorf("stream-max-bytes = %d, want %d", got, want)
	}
}

func TestConfig_PGJETConfig(t *testing.T) {
	f := newTestFlags(t, "nats: nats://env-file:4222\n")
	t.Setenv("PGJET_CONFIG", f.cfgPath)
	ParseWithConfig(f.fs, nil)
	if got, want := f.nats, "nats://env-file:4222"; got != want {
		t.Errorf("nats = %q, want %q (file named by PGJET_CONFIG)", got, want)
	}
}

func TestConfig_Errors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "nats: x\ngroup_txns: 5\n", []string{`line 2: unknown key "group_txns"`}},
		{"config key", "config: other.yaml\n", []string{`unknown key "config"`}},
		{"int", "group-txns: many\n", []string{`key "group-txns": expected an integer, got "many"`}},
		{"int from float", "group-txns: 1.5\n", []string{`expected an integer`}},
		{"bool", "ddl: maybe\n", []string{`key "ddl": expected true or false`}},
		{"duration number", "group-delay: 5\n", []string{`expected a duration such as 10s`}},
		{"duration garbage", "group-delay: soon\n", []string{`expected a duration such as 10s, 5m or 1h30m, got "soon"`}},
		{"string map", "nats: {a: b}\n", []string{`key "nats": expected a string`}},
		{"list of maps", "tables: [{a: b}]\n", []string{`expected a list of strings`}},
		{"twice", "nats: a\nnats: b\n", []string{`line 2: key "nats" is given twice`}},
		{"not a mapping", "- nats\n", []string{"expected a mapping"}},
		{"bad yaml", "nats: [\n", []string{"is not valid YAML"}},
		{"two errors", "nope: 1\nddl: 3\n", []string{`unknown key "nope"`, `key "ddl"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFlags(t, tc.yaml)
			err := loadConfig(f.fs, f.cfgPath)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), f.cfgPath) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestWithPassword(t *testing.T) {
	for _, tc := range []struct{ in, pw, want string }{
		{"postgres://u@h:5432/db?sslmode=require", "p@ss:w/rd", "postgres://u:p%40ss%3Aw%2Frd@h:5432/db?sslmode=require"},
		{"postgres://u:old@h/db", "new", "postgres://u:new@h/db"},
		{"host=h user=u dbname=db", `it's\`, `host=h user=u dbname=db password='it\'s\\'`},
	} {
		got, err := WithPassword(tc.in, tc.pw)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("WithPassword(%q, %q) = %q, want %q", tc.in, tc.pw, got, tc.want)
		}
	}
}

// TestWithPassword_FileWins checks, with pgx's own parser, that the
// password given with --db-password-file is the one used, whatever
// password --db holds and wherever: --db-password-file's help says it
// replaces any password in --db.
func TestWithPassword_FileWins(t *testing.T) {
	for _, db := range []string{
		"postgres://u@h/db?password=old",
		"postgres://u:old@h/db?sslmode=disable&password=old2&application_name=a",
		"postgres://u@h/db?pass%77ord=old",
		"postgres://u@h/db?password=old&password=old2",
		"postgresql://u:old@h1:5432,h2:5433/db?password=old2&options=-c%20search_path%3Dx",
		"host=h user=u password=old dbname=db",
		"password='old' host=h user=u",
	} {
		t.Run(db, func(t *testing.T) {
			got, err := WithPassword(db, "fromfile")
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := pgx.ParseConfig(got)
			if err != nil {
				t.Fatalf("pgx cannot parse %q: %v", got, err)
			}
			if cfg.Password != "fromfile" {
				t.Errorf("WithPassword(%q) = %q: pgx uses the password %q, want the file's", db, got, cfg.Password)
			}
			if strings.Contains(got, "old") {
				t.Errorf("WithPassword(%q) = %q still holds the old password", db, got)
			}
		})
	}
}

// FuzzConfig feeds arbitrary files to the config reader: it may refuse
// them, never panic.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"nats: nats://a:4222\ngroup-txns: 5\n", "tables: [a.b, 'c,d']\n", "ddl: yes\n", "- x\n",
		"group-delay: 1s\n", "nats: {a: b}\n", "&a [*a]", "tables: !!binary aGk=\n", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tf := newTestFlags(t, string(data))
		_ = loadConfig(tf.fs, tf.cfgPath)
	})
}
