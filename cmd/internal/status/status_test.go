package status

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

func TestStatus_Gaps(t *testing.T) {
	streams := []Stream{
		{Domain: "hub", Role: "home", Messages: 50, FirstSeq: 51, LastSeq: 100},
		{Domain: "r1", Role: "mirror", Messages: 40, FirstSeq: 1, LastSeq: 40},   // missed 41-50
		{Domain: "r2", Role: "mirror", Messages: 50, FirstSeq: 51, LastSeq: 100}, // whole
		{Domain: "r3", Role: "mirror", Messages: 50, FirstSeq: 1, LastSeq: 50},   // next needed is 51: fine
	}
	markMirrorGaps(streams)
	for i, want := range []string{"", "sequences 41-50 expired", "", ""} {
		if got := streams[i].Gap; (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: gap %q, want %q", streams[i].Domain, got, want)
		}
	}
}

func TestStatus_TargetLag(t *testing.T) {
	const stall = 30 * time.Second
	f := func(v float64) *float64 { return &v }
	old, fresh := 60.0, 1.0
	home := Stream{Domain: "hub", Role: "home", lastTxn: 0x2000}
	mirror := func(contact *float64) Stream {
		return Stream{Domain: "r1", Role: "mirror", lastTxn: 0x1800, Mirror: &Mirror{Upstream: "hub", LastContactSeconds: contact},
			Consumers: []Consumer{{Name: "pgjet_apply_r1", Region: "r1"}}}
	}
	tests := []struct {
		name       string
		streams    []Stream
		capture    *Capture
		tr         Target
		wantBehind *uint64 // nil: unknown
		wantCaught *bool   // nil: unknown
		wantState  string
	}{
		{"caught up", []Stream{home, mirror(&fresh)}, nil, Target{EndLSN: "0/2000", WaitingSeconds: f(0)}, u64(0), ptr(true), stateCaughtUp},
		{"behind the home stream, not the mirror", []Stream{home, mirror(&fresh)}, nil, Target{EndLSN: "0/1800", WaitingSeconds: f(1), appliedAgo: &fresh}, u64(0x800), ptr(false), stateCatchingUp},
		{"newer than this status saw", []Stream{home}, nil, Target{EndLSN: "0/3000"}, u64(0), ptr(true), stateCaughtUp},
		{"idle source, heartbeats not applied", []Stream{home}, nil, Target{EndLSN: "0/2000", WaitingSeconds: f(45), appliedAgo: &old}, u64(0), ptr(false), stateStalled},
		{"slow, still committing", []Stream{home}, nil, Target{EndLSN: "0/1000", WaitingSeconds: f(45), appliedAgo: &fresh}, u64(0x1000), ptr(false), stateCatchingUp},
		{"mirror cut off", []Stream{home, mirror(&old)}, nil, Target{Region: "r1", EndLSN: "0/2000", WaitingSeconds: f(2)}, u64(0), ptr(false), stateCutOff},
		{"only the stale mirror answered", []Stream{mirror(&fresh)}, nil, Target{Region: "r1", EndLSN: "0/1800"}, nil, nil, stateUnknown},
		{"home silent, slot confirms more", []Stream{mirror(&fresh)}, &Capture{confirmed: 0x2100}, Target{Region: "r1", EndLSN: "0/1800", SourceLSN: "0/1900"}, u64(0x800), ptr(false), stateCatchingUp},
		{"home silent, slot confirms no more", []Stream{mirror(&fresh)}, &Capture{confirmed: 0x2100}, Target{Region: "r1", EndLSN: "0/1800", SourceLSN: "0/2100"}, u64(0), ptr(true), stateCaughtUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Source{Source: "app", Streams: tt.streams, Capture: tt.capture}
			tr := tt.tr
			fillTargetLag(&tr, s, &Report{}, stall)
			if got, want := fmt.Sprint(deref64(tr.BehindBytes)), fmt.Sprint(deref64(tt.wantBehind)); got != want {
				t.Errorf("behind %s, want %s", got, want)
			}
			if got, want := fmt.Sprint(derefBool(tr.CaughtUp)), fmt.Sprint(derefBool(tt.wantCaught)); got != want {
				t.Errorf("caught up %s, want %s", got, want)
			}
			if tr.State != tt.wantState {
				t.Errorf("state %q, want %q", tr.State, tt.wantState)
			}
		})
	}
}

func u64(v uint64) *uint64 { return &v }
func ptr(v bool) *bool     { return &v }

func deref64(p *uint64) any {
	if p == nil {
		return "unknown"
	}
	return *p
}

func derefBool(p *bool) any {
	if p == nil {
		return "unknown"
	}
	return *p
}

// TestStatus_Problems: everything that is not healthy is a problem, and a
// healthy report has none.
func TestStatus_Problems(t *testing.T) {
	const stall = 30 * time.Second
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	recent, stale := at.Add(-time.Second), at.Add(-time.Minute)
	fresh, old := 1.0, 60.0
	healthy := func() *Report {
		return &Report{
			At:      at,
			Domains: []Domain{{Domain: "hub"}, {Domain: "r1"}},
			Sources: []Source{{
				Source: "app",
				Streams: []Stream{
					{Domain: "hub", Stream: "PGJET_app", Role: "home", LastTime: &recent},
					{Domain: "r1", Stream: "PGJET_app", Role: "mirror", Mirror: &Mirror{Upstream: "hub", LastContactSeconds: &fresh},
						Consumers: []Consumer{{Name: "pgjet_apply_r1", Region: "r1", State: stateWaiting}}},
				},
				Targets:     []Target{{Region: "r1", State: stateCaughtUp}},
				DeadLetters: []DeadLetter{{Region: "r1", Stream: "PGJET_DLQ_app_r1", Domain: "r1"}},
				Capture:     &Capture{Slot: "pgjet_app", Active: true, ReplySeconds: &fresh},
			}},
		}
	}
	if got := problems(healthy(), stall); len(got) != 0 {
		t.Fatalf("a healthy report has problems: %q", got)
	}
	tests := []struct {
		name   string
		change func(r *Report)
		want   string
	}{
		{"domain unreachable", func(r *Report) { r.Domains[1].Error = "JetStream domain r1 is unreachable" }, "domain r1: JetStream domain r1 is unreachable"},
		{"database unreachable", func(r *Report) { r.DBErrors = []Target{{Region: "r1", Error: "connection refused"}} }, "database of region r1: connection refused"},
		{"no position", func(r *Report) { r.Sources[0].Targets[0].Error = "no applied position" }, "database of region r1: no applied position"},
		{"mirror error", func(r *Report) { r.Sources[0].Streams[1].Mirror.Error = "stream not found" }, "error copying from domain hub: stream not found"},
		{"mirror silent", func(r *Report) { r.Sources[0].Streams[1].Mirror.LastContactSeconds = &old }, "last heard from domain hub 60.0s ago"},
		{"mirror never heard", func(r *Report) { r.Sources[0].Streams[1].Mirror.LastContactSeconds = nil }, "last heard from domain hub never"},
		{"gap", func(r *Report) { r.Sources[0].Streams[1].Gap = "sequences 41-50 expired" }, "PGJET_app in domain r1: sequences 41-50 expired"},
		{"applier stopped", func(r *Report) { r.Sources[0].Streams[1].Consumers[0].State = stateStopped }, "applier of region r1 is not running"},
		{"region stalled", func(r *Report) {
			w := 45.0
			r.Sources[0].Targets[0].State, r.Sources[0].Targets[0].WaitingSeconds, r.Sources[0].Targets[0].appliedAgo = stateStalled, &w, &old
		}, "region r1 applies nothing"},
		{"dead letters", func(r *Report) { r.Sources[0].DeadLetters[0].Messages = 3 }, "region r1 set aside 3 messages in PGJET_DLQ_app_r1"},
		{"capture silent", func(r *Report) { r.Sources[0].Streams[0].LastTime = &stale }, "pgjet-capture is down or cannot publish"},
		{"home missing", func(r *Report) { r.Sources[0].Streams = r.Sources[0].Streams[1:] }, "the stream capture publishes to did not answer"},
		{"capture down", func(r *Report) { r.Sources[0].Capture.Active = false }, "capture is down: no client streams from slot pgjet_app"},
		{"capture stalled", func(r *Report) { r.Sources[0].Capture.ReplySeconds = &old }, "capture is stalled"},
		{"slot missing", func(r *Report) { r.Sources[0].Capture.Missing = true }, "slot pgjet_app is missing"},
		{"slot lost", func(r *Report) { r.Sources[0].Capture.WALStatus = "lost" }, "slot pgjet_app was invalidated"},
		{"source unreachable", func(r *Report) { r.Sources[0].Capture.Error = "connection refused" }, "source database: connection refused"},
		{"no streams", func(r *Report) { r.Sources = nil }, "no pgjet streams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := healthy()
			tt.change(r)
			got := problems(r, stall)
			if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), tt.want) {
				t.Errorf("problems = %q, want one with %q", got, tt.want)
			}
		})
	}
}

func TestStatus_ConsumerState(t *testing.T) {
	const stall = 30 * time.Second
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	recent, stale := now.Add(-time.Second), now.Add(-time.Minute)
	tests := []struct {
		name string
		ci   jetstream.ConsumerInfo
		want string
	}{
		{"idle, pulling", jetstream.ConsumerInfo{NumWaiting: 1, Delivered: jetstream.SequenceInfo{Last: &stale}}, stateWaiting},
		{"busy, buffer full", jetstream.ConsumerInfo{NumPending: 500, Delivered: jetstream.SequenceInfo{Last: &recent}}, stateApplying},
		{"slow, acking", jetstream.ConsumerInfo{NumPending: 500, AckFloor: jetstream.SequenceInfo{Last: &recent}, Delivered: jetstream.SequenceInfo{Last: &stale}}, stateApplying},
		{"stopped behind", jetstream.ConsumerInfo{NumPending: 500, Delivered: jetstream.SequenceInfo{Last: &stale}, AckFloor: jetstream.SequenceInfo{Last: &stale}}, stateStopped},
		{"stopped, never delivered", jetstream.ConsumerInfo{}, stateStopped},
	}
	for _, tt := range tests {
		tt.ci.TimeStamp = now
		var cr Consumer
		consumerState(&cr, &tt.ci, stall)
		if cr.State != tt.want {
			t.Errorf("%s: state %q, want %q", tt.name, cr.State, tt.want)
		}
	}
}

func TestStatus_Print(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	last := at.Add(-2 * time.Second)
	contact, lag, behind, caught := 12.5, 3.25, uint64(2048), false
	rep := &Report{
		At:      at,
		Domains: []Domain{{Domain: "hub"}, {Domain: "r1"}, {Domain: "r2", Error: "JetStream domain r2 is unreachable"}},
		Sources: []Source{{
			Source: "app",
			Streams: []Stream{
				{Domain: "hub", Role: "home", LastSeq: 100, LastTime: &last, LastTxnLSN: stream.LSN(0x2000).String(), Consumers: []Consumer{}},
				{Domain: "r1", Role: "mirror", LastSeq: 90, Mirror: &Mirror{Upstream: "hub", Lag: 10, LastContactSeconds: &contact},
					Consumers: []Consumer{{Name: "pgjet_apply_r1", Region: "r1", AckFloor: 80, Pending: 10, Lag: 10}}},
			},
			Targets: []Target{
				{Region: "r1", CommitLSN: "0/1800", EndLSN: "0/1830", StreamSeq: 80, LagSeconds: &lag, BehindBytes: &behind, CaughtUp: &caught, ConflictsLastHour: 2},
				{Region: "r2", Error: "no applied position for source app yet"},
			},
		}},
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"domain r2: JetStream domain r2 is unreachable",
		"source app",
		"hub     home    100       2.0s ago      0/2000",
		"12.5s ago",
		"pgjet_apply_r1  80         10       0            10",
		"r1      0/1800      80",
		"3.2s",
		"2.0 KiB",
		"r2      error: no applied position",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
