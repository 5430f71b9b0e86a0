package stream

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOutage(t *testing.T) {
	o := NewOutage("PGJET_x", 30*time.Second)
	t0 := time.Now().Add(-time.Hour)
	boom := errors.New("context deadline exceeded")
	if rep := o.Fail(boom, t0); rep != nil {
		t.Fatalf("reported at the first failure: %v", rep)
	}
	if rep := o.Fail(boom, t0.Add(29*time.Second)); rep != nil {
		t.Fatalf("reported before the limit: %v", rep)
	}
	rep := o.Fail(boom, t0.Add(31*time.Second))
	if rep == nil || !strings.Contains(rep.Error(), "stream PGJET_x unreachable for 31s") || !strings.Contains(rep.Error(), "deadline exceeded") {
		t.Fatalf("report past the limit = %v", rep)
	}
	if rep := o.Fail(boom, t0.Add(40*time.Second)); rep != nil {
		t.Fatalf("reported twice in one outage: %v", rep)
	}
	if o.Err() == nil {
		t.Fatal("Err is nil during a reported outage")
	}
	if d := o.OK(t0.Add(50 * time.Second)); d != 50*time.Second {
		t.Fatalf("OK after a reported outage = %s, want 50s", d)
	}
	if o.Err() != nil {
		t.Fatal("Err after the stream answered")
	}
	// A short outage (a leader change) is never reported.
	o.Fail(boom, t0.Add(60*time.Second))
	if d := o.OK(t0.Add(62 * time.Second)); d != 0 {
		t.Fatalf("OK after an unreported outage = %s, want 0", d)
	}
	if rep := o.Fail(boom, t0.Add(100*time.Second)); rep != nil {
		t.Fatalf("a new outage starts from its own first failure: %v", rep)
	}
}
