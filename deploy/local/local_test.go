package local

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// eventually polls cond every 50ms until it returns true or timeout passes;
// the last error explains a timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s (last error: %v)", what, timeout, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func queryString(t *testing.T, ctx context.Context, url, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestPostgres_Lifecycle(t *testing.T) {
	ctx := testContext(t)
	p := NewTestPostgres(t, PostgresOptions{Name: "life"})

	t.Run("settings", func(t *testing.T) {
		for setting, want := range map[string]string{
			"wal_level":              "logical",
			"track_commit_timestamp": "on",
			"fsync":                  "off",
			"max_replication_slots":  "20",
			"listen_addresses":       "127.0.0.1",
		} {
			if got := queryString(t, ctx, p.URL("postgres"), "SHOW "+setting); got != want {
				t.Errorf("SHOW %s = %q, want %q", setting, got, want)
			}
		}
	})

	t.Run("replication connection", func(t *testing.T) {
		conn, err := pgconn.Connect(ctx, p.URL("postgres")+"&replication=database")
		if err != nil {
			t.Fatalf("replication connect: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll(); err != nil {
			t.Fatalf("IDENTIFY_SYSTEM: %v", err)
		}
	})

	if err := p.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'), (2, 'two')`); err != nil {
		t.Fatal(err)
	}

	t.Run("kill and restart keep data", func(t *testing.T) {
		pid, port := p.PID(), p.Port()
		if pid == 0 {
			t.Fatal("PID() = 0 while running")
		}
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("postmaster %d still exists after Kill (kill -0: %v)", pid, err)
		}
		if p.Running() {
			t.Fatal("Running() after Kill")
		}
		if err := p.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if got, want := p.Port(), port; got != want {
			t.Errorf("port after restart = %d, want %d", got, want)
		}
		if got, want := queryString(t, ctx, p.URL("app"), "SELECT string_agg(v, ',' ORDER BY id) FROM t"), "one,two"; got != want {
			t.Errorf("rows after crash restart = %q, want %q", got, want)
		}
	})

	t.Run("restart while running", func(t *testing.T) {
		if err := p.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if got, want := queryString(t, ctx, p.URL("app"), "SELECT count(*)::text FROM t"), "2"; got != want {
			t.Errorf("count after restart = %s, want %s", got, want)
		}
	})

	t.Run("stop removes dir", func(t *testing.T) {
		dir, pid := p.Dir(), p.PID()
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cluster dir %s after Stop: %v, want not exist", dir, err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("postmaster %d still exists after Stop", pid)
		}
		if err := p.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if err := p.Restart(ctx); err == nil {
			t.Error("Restart after Stop succeeded, want error")
		}
	})
}

func TestPostgres_Options(t *testing.T) {
	ctx := testContext(t)
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := NewTestPostgres(t, PostgresOptions{
		Name:     "replica-level",
		Port:     port,
		WALLevel: "replica",
		Settings: map[string]string{"application_name": "it's pgjet"},
	})
	if got, want := p.Port(), port; got != want {
		t.Errorf("Port() = %d, want %d", got, want)
	}
	if got, want := queryString(t, ctx, p.URL("postgres"), "SHOW wal_level"), "replica"; got != want {
		t.Errorf("wal_level = %q, want %q", got, want)
	}
	if got, want := queryString(t, ctx, p.URL("postgres"), "SELECT setting FROM pg_settings WHERE name = 'application_name' AND source = 'configuration file'"), "it's pgjet"; got != want {
		t.Errorf("configured application_name = %q, want %q", got, want)
	}
	if fi, err := os.Stat(p.LogPath()); err != nil || fi.Size() == 0 {
		t.Errorf("log %s: %v, want a non-empty file", p.LogPath(), err)
	}
}

func TestNATS_RestartKeepsStream(t *testing.T) {
	ctx := testContext(t)
	n := NewTestNATS(t, NATSOptions{Name: "solo", Domain: "solo"})

	publish := func(js jetstream.JetStream, data string) {
		t.Helper()
		if _, err := js.Publish(ctx, "s.x", []byte(data)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b", "c"} {
		publish(js, d)
	}
	nc.Close()

	before := n.Options()
	n.Shutdown()
	if n.Server() != nil {
		t.Fatal("Server() != nil after Shutdown")
	}
	n.Shutdown() // idempotent
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, want := n.Options().Port, before.Port; got != want {
		t.Errorf("port after restart = %d, want %d", got, want)
	}

	nc, err = nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(3); got != want {
		t.Errorf("messages after restart = %d, want %d", got, want)
	}
	m, err := s.GetMsg(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(m.Data), "c"; got != want {
		t.Errorf("message 3 = %q, want %q", got, want)
	}
}

func TestTopology_Mirror(t *testing.T) {
	ctx := testContext(t)
	top := NewTestTopology(t, TopologyOptions{Hub: "hub", Regions: []string{"r1", "r2"}})
	if got, want := strings.Join(top.Names, ","), "r1,r2"; got != want {
		t.Errorf("Names = %s, want %s", got, want)
	}
	if top.Hub.LeafURL() == "" {
		t.Fatal("hub has no LeafURL")
	}
	if so, err := top.Hub.serverOptions(); err != nil || !so.LeafNode.NoAdvertise {
		t.Error("hub leafnode listener advertises its URLs; want no_advertise")
	}

	hubConn, err := nats.Connect(top.Hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer hubConn.Close()
	hubJS, err := jetstream.NewWithDomain(hubConn, "hub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hubJS.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"cdc.>"}}); err != nil {
		t.Fatalf("create stream in hub: %v", err)
	}
	if _, err := hubJS.Publish(ctx, "cdc.one", []byte("first")); err != nil {
		t.Fatal(err)
	}

	for _, region := range top.Names {
		t.Run(region, func(t *testing.T) {
			nc, err := nats.Connect(top.Regions[region].ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.NewWithDomain(nc, region)
			if err != nil {
				t.Fatal(err)
			}
			m, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name:   "M",
				Mirror: &jetstream.StreamSource{Name: "S", Domain: "hub"},
			})
			if err != nil {
				t.Fatalf("create mirror in %s: %v", region, err)
			}
			msgs := func(want uint64) func() (bool, error) {
				return func() (bool, error) {
					info, err := m.Info(ctx)
					if err != nil {
						return false, err
					}
					return info.State.Msgs >= want, nil
				}
			}
			eventually(t, 30*time.Second, "first message mirrored into "+region, msgs(1))
			if _, err := hubJS.Publish(ctx, "cdc.two", []byte("second-"+region)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, "second message mirrored into "+region, msgs(2))
			got, err := m.GetMsg(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(got.Data), "first"; got != want {
				t.Errorf("mirror message 1 = %q, want %q", got, want)
			}
		})
	}
}

func TestCopySchemaAndDigest(t *testing.T) {
	ctx := testContext(t)
	a := NewTestPostgres(t, PostgresOptions{Name: "primary"})
	b := NewTestPostgres(t, PostgresOptions{Name: "replica"})
	for _, p := range []*Postgres{a, b} {
		if err := p.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	schema := `
CREATE SCHEMA other;
CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2), doc jsonb);
CREATE TABLE other."Mixed Case" (k text PRIMARY KEY, at timestamptz);
CREATE TABLE public.empty (id int);
`
	if err := a.Exec(ctx, "app", schema+`
CREATE SCHEMA pgjet;
CREATE TABLE pgjet.applied (source text PRIMARY KEY, lsn pg_lsn);
INSERT INTO pgjet.applied VALUES ('x', '0/16B3748');`); err != nil {
		t.Fatal(err)
	}
	if err := CopySchema(ctx, a.URL("app"), b.URL("app")); err != nil {
		t.Fatalf("CopySchema: %v", err)
	}

	rows := `
INSERT INTO public.items VALUES
  (1, 'it''s', 1.50, '{"a": [1, 2]}'),
  (2, NULL, NULL, NULL),
  (3, 'ünïcödé', 99999999.99, '"s"');
INSERT INTO other."Mixed Case" VALUES ('k1', '2024-01-02 03:04:05+00'), ('k2', NULL);`
	reversed := `
INSERT INTO other."Mixed Case" VALUES ('k2', NULL), ('k1', '2024-01-02 03:04:05+00');
INSERT INTO public.items VALUES
  (3, 'ünïcödé', 99999999.99, '"s"'),
  (2, NULL, NULL, NULL),
  (1, 'it''s', 1.50, '{"a": [1, 2]}');`
	if err := a.Exec(ctx, "app", rows); err != nil {
		t.Fatal(err)
	}
	if err := b.Exec(ctx, "app", reversed); err != nil {
		t.Fatal(err)
	}

	da, err := Digest(ctx, a.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range da {
		names = append(names, d.Table)
	}
	if got, want := strings.Join(names, ","), "other.Mixed Case,public.empty,public.items"; got != want {
		t.Errorf("digested tables = %s, want %s", got, want)
	}
	if got, want := da[2].Rows, int64(3); got != want {
		t.Errorf("items rows = %d, want %d", got, want)
	}
	if got, want := da[1].MD5, ""; got != want {
		t.Errorf("empty table md5 = %q, want %q", got, want)
	}

	t.Run("equal regardless of row order", func(t *testing.T) {
		db, err := Digest(ctx, b.URL("app"))
		if err != nil {
			t.Fatal(err)
		}
		if diffs := DiffDigests(da, db); len(diffs) != 0 {
			t.Errorf("digests differ:\n%s", strings.Join(diffs, "\n"))
		}
	})

	t.Run("different value", func(t *testing.T) {
		if err := b.Exec(ctx, "app", `UPDATE public.items SET price = 1.51 WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		db, err := Digest(ctx, b.URL("app"), "public.items", "other.Mixed Case")
		if err != nil {
			t.Fatal(err)
		}
		// Only the two tables asked for: leave public.empty out of the primary's side.
		diffs := DiffDigests([]TableDigest{da[2], da[0]}, db)
		if len(diffs) != 1 || !strings.HasPrefix(diffs[0], "public.items:") {
			t.Errorf("diffs = %q, want one line about public.items", diffs)
		}
	})

	t.Run("copy into existing schema fails with psql's message", func(t *testing.T) {
		err := CopySchema(ctx, a.URL("app"), b.URL("app"))
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("second CopySchema error = %v, want one quoting psql's \"already exists\"", err)
		}
	})

	t.Run("missing table", func(t *testing.T) {
		_, err := Digest(ctx, a.URL("app"), "public.nope")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
			t.Errorf("Digest of a missing table: %v, want SQLSTATE 42P01", err)
		}
	})
}

func TestDiffDigests(t *testing.T) {
	base := []TableDigest{{"public.a", 1, "x"}, {"public.b", 2, "y"}}
	tests := []struct {
		name string
		b    []TableDigest
		want []string
	}{
		{"equal", []TableDigest{{"public.b", 2, "y"}, {"public.a", 1, "x"}}, nil},
		{"rows", []TableDigest{{"public.a", 1, "x"}, {"public.b", 3, "z"}}, []string{"public.b: 2 rows vs 3 rows"}},
		{"md5", []TableDigest{{"public.a", 1, "q"}, {"public.b", 2, "y"}}, []string{"public.a: same 1 rows, different contents (md5 x vs q)"}},
		{"missing and extra", []TableDigest{{"public.a", 1, "x"}, {"public.c", 0, ""}}, []string{"public.b: only in first (2 rows)", "public.c: only in second (0 rows)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DiffDigests(base, tt.b)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("DiffDigests = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStartPostgres_MissingTool(t *testing.T) {
	t.Setenv("PATH", "")
	_, err := StartPostgres(context.Background(), PostgresOptions{BinDir: "/nonexistent"}, TestLogger(t))
	var missing *MissingToolError
	if !errors.As(err, &missing) {
		t.Fatalf("StartPostgres without binaries: %v, want *MissingToolError", err)
	}
	if got, want := missing.Tool, "initdb"; got != want {
		t.Errorf("missing tool = %q, want %q", got, want)
	}
	if !strings.Contains(err.Error(), "install postgresql-15") {
		t.Errorf("error %q does not say what to install", err)
	}
}
