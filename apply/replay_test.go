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
		cut  *timeCut // where the source's commit times pass UntilTime
		want bool
	}{
		{"no point", resumed, ReplayOptions{}, nil, true},
		{"lsn after", whole, ReplayOptions{UntilLSN: 0x200}, nil, true},
		{"lsn before the snapshot", whole, ReplayOptions{UntilLSN: 0x50}, nil, false},
		{"lsn before a table copied again", resumed, ReplayOptions{UntilLSN: 0x200}, nil, false},
		{"lsn after a table copied again", resumed, ReplayOptions{UntilLSN: 0x300}, nil, true},
		{"time after", whole, ReplayOptions{UntilTime: at(10)}, nil, true},
		{"time before the snapshot", whole, ReplayOptions{UntilTime: at(-1)}, nil, false},
		{"time before a table copied again", resumed, ReplayOptions{UntilTime: at(10)}, nil, false},
		{"time after a table copied again", resumed, ReplayOptions{UntilTime: at(20)}, nil, true},
		{"old format, time before the end", old, ReplayOptions{UntilTime: at(25)}, nil, false},
		{"old format, time after the end", old, ReplayOptions{UntilTime: at(31)}, nil, true},
		{"old format, not resumed", oldWhole, ReplayOptions{UntilTime: at(1)}, nil, true},
		// By the source's commit times: the capture host's clock says
		// nothing then.
		{"commit past the point after the snapshot", whole, ReplayOptions{UntilTime: at(-100)}, &timeCut{lsn: 0x100, past: true}, true},
		{"commit past the point in the snapshot", whole, ReplayOptions{UntilTime: at(100)}, &timeCut{lsn: 0xff, past: true}, false},
		{"commit past the point in a table copied again", resumed, ReplayOptions{UntilTime: at(100)}, &timeCut{lsn: 0x200, past: true}, false},
		{"no commit past the point, snapshot in the stream", resumed, ReplayOptions{UntilTime: at(-100)}, &timeCut{lsn: 0x300}, true},
		{"no commit past the point, snapshot past the stream", resumed, ReplayOptions{UntilTime: at(10)}, &timeCut{lsn: 0x200}, false},
	} {
		if got := before(tc.man, tc.o, tc.cut); got != tc.want {
			t.Errorf("%s: before = %v, want %v", tc.name, got, tc.want)
		}
	}
}
