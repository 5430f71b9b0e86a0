package apply

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestStmtCache_EvictsLeastRecentlyUsed(t *testing.T) {
	c := newStmtCache(3)
	p := &plan{}
	key := func(s string) stmtKey { return stmtKey{p, s} }
	sent := &pgconn.Batch{} // a batch already sent
	for _, s := range []string{"a", "b", "c"} {
		if got := c.evict(sent); len(got) != 0 {
			t.Fatalf("evict below the bound = %v, want nothing", got)
		}
		c.add(key(s), "pgjet_"+s, sent)
	}
	building := &pgconn.Batch{}
	if _, ok := c.use(key("a"), building); !ok {
		t.Fatal("a not cached")
	}
	if got, want := c.evict(building), []string{"pgjet_b"}; !slices.Equal(got, want) {
		t.Errorf("evict = %v, want %v (the least recently used)", got, want)
	}
	c.add(key("d"), "pgjet_d", building)
	if _, ok := c.use(key("b"), building); ok {
		t.Error("b still cached after its eviction")
	}
	if _, ok := c.use(key("c"), building); !ok {
		t.Fatal("c not cached")
	}
	// Every statement is used by the batch being built: none may go.
	if got := c.evict(building); len(got) != 0 {
		t.Errorf("evict = %v, want nothing while the batch being built uses them all", got)
	}
	if got, want := c.evict(&pgconn.Batch{}), []string{"pgjet_a"}; !slices.Equal(got, want) {
		t.Errorf("evict after the batch was sent = %v, want %v", got, want)
	}
	if got, want := c.Len(), 2; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
}
