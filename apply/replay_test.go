package apply

import (
	"testing"
	"time"

	"github.com/pgjet/pgjet/stream"
)

// TestBefore: a snapshot serves a replay point only when everything in it,
// each table copied again after a resume included, lies before the point.
func TestBefore(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	whole := stream.SnapshotManifest{LSN: 0x100, Started: at(0), Finished: at(5),
		Tables: []stream.SnapshotTable{{Name: "a", LSN: 0x100, Taken: at(0)}, {Name: "b", LSN: 0x100, Taken: at(0)}}}
	resumed := stream.SnapshotManifest{LSN: 0x100, Started: at(0), Finished: at(30),
		Tables: []stream.SnapshotTable{{Name: "a", LSN: 0x100, Taken: at(0)}, {Name: "b", LSN: 0x300, Taken: at(20)}}}
	// Written by a pgjet without Taken: the end time bounds a table copied again.
	old := resumed
	old.Tables = []stream.SnapshotTable{{Name: "a", LSN: 0x100}, {Name: "b", LSN: 0x300}}
	oldWhole := whole
	oldWhole.Tables = []stream.SnapshotTable{{Name: "a", LSN: 0x100}, {Name: "b", LSN: 0x100}}

	for _, tc := range []struct {
		name string
		man  stream.SnapshotManifest
		o    ReplayOptions
		want bool
	}{
		{"no point", resumed, ReplayOptions{}, true},
		{"lsn after", whole, ReplayOptions{UntilLSN: 0x200}, true},
		{"lsn before the snapshot", whole, ReplayOptions{UntilLSN: 0x50}, false},
		{"lsn before a table copied again", resumed, ReplayOptions{UntilLSN: 0x200}, false},
		{"lsn after a table copied again", resumed, ReplayOptions{UntilLSN: 0x300}, true},
		{"time after", whole, ReplayOptions{UntilTime: at(10)}, true},
		{"time before the snapshot", whole, ReplayOptions{UntilTime: at(-1)}, false},
		{"time before a table copied again", resumed, ReplayOptions{UntilTime: at(10)}, false},
		{"time after a table copied again", resumed, ReplayOptions{UntilTime: at(20)}, true},
		{"old format, time before the end", old, ReplayOptions{UntilTime: at(25)}, false},
		{"old format, time after the end", old, ReplayOptions{UntilTime: at(31)}, true},
		{"old format, not resumed", oldWhole, ReplayOptions{UntilTime: at(1)}, true},
	} {
		if got := before(tc.man, tc.o); got != tc.want {
			t.Errorf("%s: before = %v, want %v", tc.name, got, tc.want)
		}
	}
}
