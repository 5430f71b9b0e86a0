package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/stream"
)

func TestStatus_ParseDBRegions(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    string // region=url,... or the error's start
		wantErr bool
	}{
		{"none", nil, "", false},
		{"two", []string{"r1=postgres://a/db?x=1", "r2=postgres://b/db"}, "r1=postgres://a/db?x=1,r2=postgres://b/db", false},
		{"no url", []string{"r1="}, "--db-region", true},
		{"no equals", []string{"postgres://a/db"}, "--db-region", true},
		{"bad region", []string{"r 1=postgres://a"}, "--db-region: region", true},
		{"twice", []string{"r1=postgres://a", "r1=postgres://b"}, "--db-region: region r1 given twice", true},
		{"password redacted", []string{"postgres://u:secret@h/db"}, "--db-region", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDBRegions(tt.in)
			if tt.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "secret") {
					t.Fatalf("error = %v, want one starting %q without the password", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, d := range got {
				parts = append(parts, d.region+"="+d.url)
			}
			if got := strings.Join(parts, ","); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestStatus_MirrorUpstream(t *testing.T) {
	tests := []struct {
		src  jetstream.StreamSource
		want string
	}{
		{jetstream.StreamSource{Domain: "hub"}, "hub"},
		{jetstream.StreamSource{External: &jetstream.ExternalStream{APIPrefix: "$JS.hub.API"}}, "hub"},
		{jetstream.StreamSource{External: &jetstream.ExternalStream{APIPrefix: "$JS.ACC.API"}}, "ACC"},
		{jetstream.StreamSource{External: &jetstream.ExternalStream{APIPrefix: "other.prefix"}}, "other.prefix"},
		{jetstream.StreamSource{}, ""},
	}
	for _, tt := range tests {
		if got := mirrorUpstream(&tt.src); got != tt.want {
			t.Errorf("mirrorUpstream(%+v) = %q, want %q", tt.src, got, tt.want)
		}
	}
}

func TestStatus_Gaps(t *testing.T) {
	streams := []streamReport{
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
	home := streamReport{Domain: "hub", Role: "home", lastTxn: 0x2000}
	mirror := func(contact *float64) streamReport {
		return streamReport{Domain: "r1", Role: "mirror", lastTxn: 0x1800, Mirror: &mirrorReport{Upstream: "hub", LastContactSeconds: contact},
			Consumers: []consumerReport{{Name: "pgjet_apply_r1", Region: "r1"}}}
	}
	tests := []struct {
		name       string
		streams    []streamReport
		capture    *captureReport
		tr         targetReport
		wantBehind *uint64 // nil: unknown
		wantCaught *bool   // nil: unknown
		wantState  string
	}{
		{"caught up", []streamReport{home, mirror(&fresh)}, nil, targetReport{EndLSN: "0/2000", WaitingSeconds: f(0)}, u64(0), ptr(true), stateCaughtUp},
		{"behind the home stream, not the mirror", []streamReport{home, mirror(&fresh)}, nil, targetReport{EndLSN: "0/1800", WaitingSeconds: f(1), appliedAgo: &fresh}, u64(0x800), ptr(false), stateCatchingUp},
		{"newer than this status saw", []streamReport{home}, nil, targetReport{EndLSN: "0/3000"}, u64(0), ptr(true), stateCaughtUp},
		{"idle source, heartbeats not applied", []streamReport{home}, nil, targetReport{EndLSN: "0/2000", WaitingSeconds: f(45), appliedAgo: &old}, u64(0), ptr(false), stateStalled},
		{"slow, still committing", []streamReport{home}, nil, targetReport{EndLSN: "0/1000", WaitingSeconds: f(45), appliedAgo: &fresh}, u64(0x1000), ptr(false), stateCatchingUp},
		{"mirror cut off", []streamReport{home, mirror(&old)}, nil, targetReport{Region: "r1", EndLSN: "0/2000", WaitingSeconds: f(2)}, u64(0), ptr(false), stateCutOff},
		{"only the stale mirror answered", []streamReport{mirror(&fresh)}, nil, targetReport{Region: "r1", EndLSN: "0/1800"}, nil, nil, stateUnknown},
		{"home silent, slot confirms more", []streamReport{mirror(&fresh)}, &captureReport{confirmed: 0x2100}, targetReport{Region: "r1", EndLSN: "0/1800", SourceLSN: "0/1900"}, u64(0x800), ptr(false), stateCatchingUp},
		{"home silent, slot confirms no more", []streamReport{mirror(&fresh)}, &captureReport{confirmed: 0x2100}, targetReport{Region: "r1", EndLSN: "0/1800", SourceLSN: "0/2100"}, u64(0), ptr(true), stateCaughtUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sourceReport{Source: "app", Streams: tt.streams, Capture: tt.capture}
			tr := tt.tr
			fillTargetLag(&tr, s, &statusReport{}, stall)
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
	healthy := func() *statusReport {
		return &statusReport{
			At:      at,
			Domains: []domainReport{{Domain: "hub"}, {Domain: "r1"}},
			Sources: []sourceReport{{
				Source: "app",
				Streams: []streamReport{
					{Domain: "hub", Stream: "PGJET_app", Role: "home", LastTime: &recent},
					{Domain: "r1", Stream: "PGJET_app", Role: "mirror", Mirror: &mirrorReport{Upstream: "hub", LastContactSeconds: &fresh},
						Consumers: []consumerReport{{Name: "pgjet_apply_r1", Region: "r1", State: stateWaiting}}},
				},
				Targets:     []targetReport{{Region: "r1", State: stateCaughtUp}},
				DeadLetters: []deadLetterReport{{Region: "r1", Stream: "PGJET_DLQ_app_r1", Domain: "r1"}},
				Capture:     &captureReport{Slot: "pgjet_app", Active: true, ReplySeconds: &fresh},
			}},
		}
	}
	if got := problems(healthy(), stall); len(got) != 0 {
		t.Fatalf("a healthy report has problems: %q", got)
	}
	tests := []struct {
		name   string
		change func(r *statusReport)
		want   string
	}{
		{"domain unreachable", func(r *statusReport) { r.Domains[1].Error = "JetStream domain r1 is unreachable" }, "domain r1: JetStream domain r1 is unreachable"},
		{"database unreachable", func(r *statusReport) { r.DBErrors = []targetReport{{Region: "r1", Error: "connection refused"}} }, "database of region r1: connection refused"},
		{"no position", func(r *statusReport) { r.Sources[0].Targets[0].Error = "no applied position" }, "database of region r1: no applied position"},
		{"mirror error", func(r *statusReport) { r.Sources[0].Streams[1].Mirror.Error = "stream not found" }, "error copying from domain hub: stream not found"},
		{"mirror silent", func(r *statusReport) { r.Sources[0].Streams[1].Mirror.LastContactSeconds = &old }, "last heard from domain hub 60.0s ago"},
		{"mirror never heard", func(r *statusReport) { r.Sources[0].Streams[1].Mirror.LastContactSeconds = nil }, "last heard from domain hub never"},
		{"gap", func(r *statusReport) { r.Sources[0].Streams[1].Gap = "sequences 41-50 expired" }, "PGJET_app in domain r1: sequences 41-50 expired"},
		{"applier stopped", func(r *statusReport) { r.Sources[0].Streams[1].Consumers[0].State = stateStopped }, "applier of region r1 is not running"},
		{"region stalled", func(r *statusReport) {
			w := 45.0
			r.Sources[0].Targets[0].State, r.Sources[0].Targets[0].WaitingSeconds, r.Sources[0].Targets[0].appliedAgo = stateStalled, &w, &old
		}, "region r1 applies nothing"},
		{"dead letters", func(r *statusReport) { r.Sources[0].DeadLetters[0].Messages = 3 }, "region r1 set aside 3 messages in PGJET_DLQ_app_r1"},
		{"capture silent", func(r *statusReport) { r.Sources[0].Streams[0].LastTime = &stale }, "pgjet-capture is down or cannot publish"},
		{"home missing", func(r *statusReport) { r.Sources[0].Streams = r.Sources[0].Streams[1:] }, "the stream capture publishes to did not answer"},
		{"capture down", func(r *statusReport) { r.Sources[0].Capture.Active = false }, "capture is down: no client streams from slot pgjet_app"},
		{"capture stalled", func(r *statusReport) { r.Sources[0].Capture.ReplySeconds = &old }, "capture is stalled"},
		{"slot missing", func(r *statusReport) { r.Sources[0].Capture.Missing = true }, "slot pgjet_app is missing"},
		{"slot lost", func(r *statusReport) { r.Sources[0].Capture.WALStatus = "lost" }, "slot pgjet_app was invalidated"},
		{"source unreachable", func(r *statusReport) { r.Sources[0].Capture.Error = "connection refused" }, "source database: connection refused"},
		{"no streams", func(r *statusReport) { r.Sources = nil }, "no pgjet streams"},
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
		var cr consumerReport
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
	rep := &statusReport{
		At:      at,
		Domains: []domainReport{{Domain: "hub"}, {Domain: "r1"}, {Domain: "r2", Error: "JetStream domain r2 is unreachable"}},
		Sources: []sourceReport{{
			Source: "app",
			Streams: []streamReport{
				{Domain: "hub", Role: "home", LastSeq: 100, LastTime: &last, LastTxnLSN: stream.LSN(0x2000).String(), Consumers: []consumerReport{}},
				{Domain: "r1", Role: "mirror", LastSeq: 90, Mirror: &mirrorReport{Upstream: "hub", Lag: 10, LastContactSeconds: &contact},
					Consumers: []consumerReport{{Name: "pgjet_apply_r1", Region: "r1", AckFloor: 80, Pending: 10, Lag: 10}}},
			},
			Targets: []targetReport{
				{Region: "r1", CommitLSN: "0/1800", EndLSN: "0/1830", StreamSeq: 80, LagSeconds: &lag, BehindBytes: &behind, CaughtUp: &caught, ConflictsLastHour: 2},
				{Region: "r2", Error: "no applied position for source app yet"},
			},
		}},
	}
	var b strings.Builder
	if err := rep.print(&b); err != nil {
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
