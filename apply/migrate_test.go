package apply

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/schema/pgerr"
)

// TestMigrations_Numbered: versions run 1, 2, 3... with nothing missing,
// so that a target's version says which migrations it has.
func TestMigrations_Numbered(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 {
			t.Errorf("migration %d has version %d, want %d", i, m.version, i+1)
		}
		if m.what == "" || m.sql == "" {
			t.Errorf("migration %d lacks a description or SQL", m.version)
		}
	}
}

// TestMigrate runs the migrations against a real Postgres: once each,
// one applier at a time, and never on tables newer than they know.
func TestMigrate(t *testing.T) {
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "migrate"})
	ctx := context.Background()
	n := 0
	fresh := func(t *testing.T) string {
		t.Helper()
		n++
		db := fmt.Sprintf("m%d", n)
		if err := pg.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
		return pg.URL(db)
	}
	connect := func(t *testing.T, url string) *pgx.Conn {
		t.Helper()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		return conn
	}
	versions := func(t *testing.T, conn *pgx.Conn) string {
		t.Helper()
		var got string
		if err := conn.QueryRow(ctx, "SELECT string_agg(version::text, ',' ORDER BY version) FROM pgjet.schema_version").Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	all := ""
	for _, m := range migrations {
		if all != "" {
			all += ","
		}
		all += fmt.Sprint(m.version)
	}

	t.Run("once", func(t *testing.T) {
		conn := connect(t, fresh(t))
		for range 2 {
			if err := migrate(ctx, conn, "test"); err != nil {
				t.Fatal(err)
			}
		}
		if got := versions(t, conn); got != all {
			t.Errorf("recorded versions %q, want %q, each once", got, all)
		}
	})

	// Appliers of several sources start on one new target together.
	t.Run("concurrent", func(t *testing.T) {
		url := fresh(t)
		const appliers = 4
		conns := make([]*pgx.Conn, appliers)
		for i := range conns {
			conns[i] = connect(t, url)
		}
		var wg sync.WaitGroup
		errs := make([]error, appliers)
		for i, conn := range conns {
			wg.Go(func() { errs[i] = migrate(ctx, conn, "test") })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("applier %d: %v", i, err)
			}
		}
		if got := versions(t, conns[0]); got != all {
			t.Errorf("recorded versions %q, want %q, each once", got, all)
		}
	})

	// Another session holding the lock (a migration under way) holds the
	// migration back until it is done.
	t.Run("waits for the lock", func(t *testing.T) {
		url := fresh(t)
		holder, conn := connect(t, url), connect(t, url)
		if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- migrate(ctx, conn, "test") }()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var waiting bool
			if err := holder.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND NOT granted)", conn.PgConn().PID()).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if waiting {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("migrate ran while another session held the migration lock (err %v)", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("migrate never waited for the migration lock")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", migrationLock); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("newer", func(t *testing.T) {
		conn := connect(t, fresh(t))
		if err := migrate(ctx, conn, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO pgjet.schema_version (version, what) VALUES ($1, 'from the future')", SchemaVersion()+1); err != nil {
			t.Fatal(err)
		}
		err := migrate(ctx, conn, "test")
		if !pgerr.IsFatal(err) {
			t.Fatalf("migrate on a newer version returned %v, want a fatal error", err)
		}
		if got, want := versions(t, conn), all+fmt.Sprintf(",%d", SchemaVersion()+1); got != want {
			t.Errorf("recorded versions %q, want %q", got, want)
		}
	})
}
