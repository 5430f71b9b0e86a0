package e2e

import (
	"testing"
	"time"
)

// TestMessages: logical messages of applications pass through the stream
// for other consumers: a transactional one inside its transaction, a
// non-transactional one on its own. `pgjet tail` shows them, and apply
// passes over them.
func TestMessages(t *testing.T) {
	t.Parallel()
	c := newCluster(t, `CREATE TABLE t (id int PRIMARY KEY)`)
	capt := c.capture(t)
	app := c.apply(t)
	exec1(t, c.src, `BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'app.event', 'order 1 paid'); INSERT INTO t VALUES (2); COMMIT`,
		`SELECT pg_logical_emit_message(false, 'app.ping', 'ping')`,
		`INSERT INTO t VALUES (3)`)
	waitSame(t, 60*time.Second, c.src, c.dst)

	code, out, errOut := runTail(t, "--nats", c.nats.ClientURL(), "--name", "src", "--follow=false")
	if code != 0 {
		t.Fatalf("pgjet tail exited %d:\n%s", code, errOut)
	}
	var txn, ping bool
	for _, l := range tailLines(t, out) {
		changes, _ := l["changes"].([]any)
		for i, ch := range changes {
			m := ch.(map[string]any)
			if m["op"] != "message" {
				continue
			}
			switch m["prefix"] {
			case "app.event":
				txn = true
				if l["kind"] != "txn" || m["transactional"] != true || m["content"] != "order 1 paid" || i != 1 || len(changes) != 3 {
					t.Errorf("transactional message not between the two inserts of its transaction: %v", l)
				}
			case "app.ping":
				ping = true
				if l["kind"] != "message" || m["transactional"] != false || m["content"] != "ping" {
					t.Errorf("non-transactional message: %v", l)
				}
			}
		}
	}
	if !txn || !ping {
		t.Errorf("pgjet tail shows transactional message: %v, non-transactional: %v; output:\n%s", txn, ping, tail(out, 4096))
	}
	capt.Stop(t)
	app.Stop(t)
}
