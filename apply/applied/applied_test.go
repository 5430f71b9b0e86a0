package applied

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestApplied_Read reads pgjet.applied as each of its readers needs it:
// a database without it (ErrNoTable, or no position, and an open
// transaction not aborted), a table from before source_lsn (pgjet verify
// reads targets it does not migrate), and one source of several.
func TestApplied_Read(t *testing.T) {
	pg := local.NewTestPostgres(t, local.PostgresOptions{Name: "applied"})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })

	t.Run("NoTable", func(t *testing.T) {
		if _, err := Read(ctx, conn); !errors.Is(err, ErrNoTable) {
			t.Fatalf("Read = %v, want ErrNoTable", err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, ok, err := ReadSource(ctx, tx, "app"); ok || err != nil {
			t.Fatalf("ReadSource = %v, %v; want no position and no error", ok, err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("the transaction is aborted: %v", err)
		}
	})

	// The layout before source_lsn, with a position a restore wrote (no
	// commit time) and one an applier wrote.
	if _, err := conn.Exec(ctx, `CREATE SCHEMA pgjet;
CREATE TABLE pgjet.applied (
	source      text PRIMARY KEY,
	commit_lsn  pg_lsn NOT NULL,
	end_lsn     pg_lsn NOT NULL,
	stream_seq  bigint NOT NULL,
	commit_time timestamptz,
	applied_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgjet.applied (source, commit_lsn, end_lsn, stream_seq, commit_time) VALUES
	('b', '0/20', '0/28', 7, now() - interval '1 minute'), ('a', '0/10', '0/18', 3, NULL)`); err != nil {
		t.Fatal(err)
	}
	t.Run("BeforeSourceLSN", func(t *testing.T) {
		ps, err := Read(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(ps), 2; got != want {
			t.Fatalf("%d positions, want %d", got, want)
		}
		a, b := ps[0], ps[1]
		if a.Source != "a" || b.Source != "b" {
			t.Fatalf("sources %s, %s; want a, b in order", a.Source, b.Source)
		}
		if a.CommitLSN != 0x10 || a.EndLSN != 0x18 || a.SourceLSN != 0x18 || a.StreamSeq != 3 || a.CommitTime != nil {
			t.Errorf("a = %+v, want commit 0/10, end and source 0/18, seq 3, no commit time", a)
		}
		if b.CommitTime == nil {
			t.Fatalf("b has no commit time")
		}
		if lag := b.Clock.Sub(*b.CommitTime).Seconds(); lag < 59 || lag > 600 {
			t.Errorf("b's lag by the target's clock = %.1fs, want about 60s", lag)
		}
	})

	if _, err := conn.Exec(ctx, `ALTER TABLE pgjet.applied ADD COLUMN source_lsn pg_lsn;
UPDATE pgjet.applied SET source_lsn = '0/30' WHERE source = 'b'`); err != nil {
		t.Fatal(err)
	}
	t.Run("OneSource", func(t *testing.T) {
		p, ok, err := ReadSource(ctx, conn, "b")
		if err != nil || !ok {
			t.Fatalf("ReadSource(b) = %v, %v", ok, err)
		}
		if got, want := p.SourceLSN, stream.LSN(0x30); got != want {
			t.Errorf("SourceLSN = %s, want %s", got, want)
		}
		if _, ok, err := ReadSource(ctx, conn, "c"); ok || err != nil {
			t.Errorf("ReadSource(c) = %v, %v; want no position", ok, err)
		}
		ps, err := Read(ctx, conn, "a")
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].Source != "a" || ps[0].SourceLSN != 0x18 {
			t.Errorf("Read(a) = %+v, want a alone, source_lsn NULL read as its end 0/18", ps)
		}
	})
}
