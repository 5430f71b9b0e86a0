package status

import (
	"slices"
	"testing"
	"time"

	"github.com/pgjet/pgjet/stream"
)

func TestStatus_SnapshotIDTime(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC)
	got, ok := snapshotIDTime(stream.NewSnapshotID(at))
	if !ok || !got.Equal(at) {
		t.Errorf("snapshotIDTime(NewSnapshotID(%s)) = %s, %v", at, got, ok)
	}
	for _, bad := range []string{"", "resync-x", "20260102T030405Z"} {
		if _, ok := snapshotIDTime(bad); ok {
			t.Errorf("snapshotIDTime(%q) read a time", bad)
		}
	}
}

func TestStatus_MarkRestored(t *testing.T) {
	s := &Source{
		Snapshots: []Snapshot{{ID: "b", Regions: []string{}}, {ID: "a", Regions: []string{}}},
		Targets: []Target{
			{Region: "r1", Restore: &Restore{Snapshot: "a", Done: true}},
			{Region: "r2", Restore: &Restore{Snapshot: "b"}},
			{Region: "r3", Restore: &Restore{Snapshot: "a", Done: true}},
			{Region: "r4"},
		},
	}
	markRestored(s)
	if got := s.Snapshots[0].Regions; !slices.Equal(got, []string{"r2"}) {
		t.Errorf("snapshot b built %v, want [r2]", got)
	}
	if got := s.Snapshots[1].Regions; !slices.Equal(got, []string{"r1", "r3"}) {
		t.Errorf("snapshot a built %v, want [r1 r3]", got)
	}
}
