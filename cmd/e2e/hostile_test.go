package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestHostile_Identifiers: tables and columns named like SQL injections,
// with spaces and non-ASCII characters, and values that look like SQL,
// replicate as data through inserts, updates (of the key too), deletes,
// truncates and a schema change; the table the names try to drop survives.
func TestHostile_Identifiers(t *testing.T) {
	t.Parallel()
	const (
		inject   = `"""; drop table x; --"`        // table "; drop table x; --
		injCol   = `""" or 1=1; --"`               // column " or 1=1; --
		weird    = `"Weird Table"`                 // no key: REPLICA IDENTITY FULL
		weirdCol = `"Ünïcode ☃ col"`               // column Ünïcode ☃ col
		addedCol = `"added ""); drop table x; --"` // added by DDL
	)
	c := newCluster(t,
		`CREATE TABLE x (id int PRIMARY KEY)`,
		`CREATE TABLE `+inject+` (id int PRIMARY KEY, `+injCol+` text, "select" int)`,
		`CREATE TABLE `+weird+` (`+weirdCol+` text, n int)`,
		`ALTER TABLE `+weird+` REPLICA IDENTITY FULL`,
	)
	capt := c.capture(t)
	app := c.apply(t)

	values := []string{`'); DROP TABLE x; --`, `"; DROP TABLE x; --`, `\'; DELETE FROM x; --`, `$1 $$ %s ? :name`, `Ünïcode ☃ "quoted" 'single'`}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.src)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	must := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("exec %q: %v", sql, err)
		}
	}
	must(`INSERT INTO x VALUES (1), (2)`)
	for i, v := range values {
		must(`INSERT INTO `+inject+` (id, `+injCol+`, "select") VALUES ($1, $2, $1)`, i, v)
		must(`INSERT INTO `+weird+` (`+weirdCol+`, n) VALUES ($1, $2), ($1, $2)`, v, i)
	}
	must(`UPDATE ` + inject + ` SET ` + injCol + ` = ` + injCol + ` || $$ OR 1=1 --$$ WHERE id % 2 = 0`)
	must(`UPDATE ` + inject + ` SET id = id + 100 WHERE id = 1`)
	must(`DELETE FROM `+inject+` WHERE `+injCol+` = $1`, values[2])
	must(`UPDATE `+weird+` SET `+weirdCol+` = $1 WHERE n = 0`, values[1]+` (updated)`)
	must(`DELETE FROM ` + weird + ` WHERE n = 3`)
	waitSame(t, 60*time.Second, c.src, c.dst)

	// A schema change naming a hostile column, a truncate, and rows after.
	must(`ALTER TABLE ` + weird + ` ADD COLUMN ` + addedCol + ` text`)
	must(`TRUNCATE ` + inject)
	for i, v := range values {
		must(`INSERT INTO `+inject+` (id, `+injCol+`) VALUES ($1, $2)`, i, v)
		must(`INSERT INTO `+weird+` (`+weirdCol+`, n, `+addedCol+`) VALUES ($1, $2, $1)`, v, 10+i)
	}
	waitSame(t, 60*time.Second, c.src, c.dst)

	if got := queryInt(t, c.dst, `SELECT count(*) FROM x`); got != 2 {
		t.Errorf("table x on the replica has %d rows, want 2", got)
	}
	if got := queryInt(t, c.dst, `SELECT count(*) FROM `+inject+` WHERE `+injCol+` = $1`, values[0]); got != 1 {
		t.Errorf("rows holding %q on the replica = %d, want 1", values[0], got)
	}
	if got := queryInt(t, c.dst, `SELECT count(*) FROM `+weird+` WHERE `+addedCol+` = $1`, values[4]); got != 1 {
		t.Errorf("rows holding %q in the added column on the replica = %d, want 1", values[4], got)
	}
	capt.Stop(t)
	app.Stop(t)
}
