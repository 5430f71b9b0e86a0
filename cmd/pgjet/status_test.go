package main

import (
	"strings"
	"testing"
	"time"

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
	streams := []streamReport{{lastTxn: 0x2000}, {lastTxn: 0x1800}}
	tests := []struct {
		end        string
		wantBehind uint64
		wantCaught bool
	}{
		{"0/2000", 0, true},
		{"0/1000", 0x1000, false},
		{"0/3000", 0, true}, // newer than what this status saw
	}
	for _, tt := range tests {
		tr := targetReport{EndLSN: tt.end}
		fillTargetLag(&tr, streams)
		if tr.BehindBytes == nil || *tr.BehindBytes != tt.wantBehind || *tr.CaughtUp != tt.wantCaught {
			t.Errorf("end %s: behind %v caught up %v, want %d %v", tt.end, tr.BehindBytes, tr.CaughtUp, tt.wantBehind, tt.wantCaught)
		}
	}
	tr := targetReport{EndLSN: "0/1000"}
	fillTargetLag(&tr, nil)
	if tr.BehindBytes != nil {
		t.Errorf("without streams: behind %d, want unknown", *tr.BehindBytes)
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
