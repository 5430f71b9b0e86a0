package apply

import (
	"strings"
	"testing"

	"github.com/pgjet/pgjet/stream"
)

func TestCollectLost(t *testing.T) {
	text := func(s string) stream.Value { return stream.Value{Kind: stream.ValueText, Data: []byte(s)} }
	null := stream.Value{Kind: stream.ValueNull}
	rel := stream.Relation{ID: 1, Schema: "public", Name: "acct", Columns: []stream.Column{{Name: "id", Key: true}, {Name: "v"}}}
	full := stream.Relation{ID: 2, Schema: "public", Name: "log", Identity: stream.IdentityFull, Columns: []stream.Column{{Name: "a", Key: true}, {Name: "b", Key: true}}}
	env := &stream.Envelope{Kind: stream.KindTxn, CommitLSN: 100, Relations: []stream.Relation{rel, full}, Changes: []stream.Change{
		{Op: stream.OpInsert, Relation: 1, New: []stream.Value{text("1"), text("x")}},
		{Op: stream.OpUpdate, Relation: 1, Old: []stream.Value{text("2"), null}, New: []stream.Value{text("3"), text("y")}}, // a key change
		{Op: stream.OpDelete, Relation: 1, Old: []stream.Value{text("1"), null}},                                            // a key seen before
		{Op: stream.OpInsert, Relation: 2, New: []stream.Value{text("a"), null}},
		{Op: stream.OpMessage, Prefix: stream.PrefixSequences},
	}}
	tables := map[string]*lostKeys{}
	var order []string
	if err := collectLost(env, tables, &order); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(order, ","), "public.acct,public.log"; got != want {
		t.Errorf("tables %s, want %s", got, want)
	}
	if got, want := strings.Join(tables["public.acct"].order, " "), `["1"] ["3"] ["2"]`; got != want {
		t.Errorf("acct keys %s, want %s", got, want)
	}
	if got, want := strings.Join(tables["public.log"].order, " "), `["a",null]`; got != want {
		t.Errorf("log keys %s, want %s", got, want)
	}

	for _, c := range []struct {
		name string
		ch   stream.Change
		want string
	}{
		{"truncate", stream.Change{Op: stream.OpTruncate, Truncated: []uint32{1}}, "TRUNCATE"},
		{"schema change", stream.Change{Op: stream.OpMessage, Prefix: stream.PrefixDDL}, "schema change"},
		{"unchanged key", stream.Change{Op: stream.OpInsert, Relation: 1, New: []stream.Value{{Kind: stream.ValueUnchanged}, null}}, "unchanged or in pieces"},
		{"unknown relation", stream.Change{Op: stream.OpInsert, Relation: 9, New: []stream.Value{text("1")}}, "does not describe"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := &stream.Envelope{Kind: stream.KindTxn, CommitLSN: 100, Relations: []stream.Relation{rel}, Changes: []stream.Change{c.ch}}
			err := collectLost(e, map[string]*lostKeys{}, new([]string))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("collectLost: %v, want an error naming %q", err, c.want)
			}
		})
	}
}
