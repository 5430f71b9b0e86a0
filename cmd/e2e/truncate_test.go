package e2e

import (
	"testing"
	"time"
)

// TestTruncate_RelationChangedInTransaction: a transaction inserts into b,
// alters b and then truncates a and b together. The new description of b
// closes the chunk in the middle of the TRUNCATE's relations; the chunk
// the TRUNCATE lands in must still describe a as well, or every region
// stops on it.
func TestTruncate_RelationChangedInTransaction(t *testing.T) {
	c := newCluster(t, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, v text)`)
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, `INSERT INTO a SELECT i, 'a' FROM generate_series(1, 20) i`, `INSERT INTO b SELECT i, 'b' FROM generate_series(1, 20) i`)
	execTx(t, c.src, `INSERT INTO b VALUES (100, 'in the transaction')`, `ALTER TABLE b ADD COLUMN w int`,
		`TRUNCATE a, b`, `INSERT INTO b VALUES (2, 'after', 2)`)
	exec1(t, c.src, `INSERT INTO a VALUES (3, 'later')`)
	waitSame(t, 60*time.Second, c.src, c.dst)
	capt.Stop(t)
	app.Stop(t)
}
