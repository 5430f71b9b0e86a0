package console

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/cmd/internal/status"
)

func f64(v float64) *float64 { return &v }
func u64(v uint64) *uint64   { return &v }

// report is a source with a hub and two regions: r1 caught up, r2 as
// given (its domain errored when r2Cut).
func report(r2State string, r2Cut bool, r2Seq uint64) *status.Report {
	rep := &status.Report{At: time.Now(), Healthy: !r2Cut, Problems: []string{},
		Domains: []status.Domain{{Domain: "hub"}, {Domain: "r1"}, {Domain: "r2"}}}
	streams := []status.Stream{
		{Domain: "hub", Stream: "PGJET_src", Role: "home", LastSeq: 100},
		{Domain: "r1", Stream: "PGJET_src", Role: "mirror", LastSeq: 100, Mirror: &status.Mirror{Upstream: "hub", LastContactSeconds: f64(0.5)},
			Consumers: []status.Consumer{{Name: "pgjet_apply_r1", Region: "r1"}}},
	}
	if r2Cut {
		rep.Domains[2].Error = "JetStream domain r2 is unreachable"
		rep.Problems = append(rep.Problems, "domain r2: unreachable")
	} else {
		streams = append(streams, status.Stream{Domain: "r2", Stream: "PGJET_src", Role: "mirror", LastSeq: 100,
			Mirror: &status.Mirror{Upstream: "hub", LastContactSeconds: f64(0.5)}, Consumers: []status.Consumer{{Name: "pgjet_apply_r2", Region: "r2"}}})
	}
	rep.Sources = []status.Source{{Source: "src", Streams: streams, Targets: []status.Target{
		{Region: "r1", State: status.TargetCaughtUp, StreamSeq: 100, WaitingSeconds: f64(0), BehindBytes: u64(0), ApplierState: status.ApplierRunning},
		{Region: "r2", State: r2State, StreamSeq: r2Seq, WaitingSeconds: f64(7), BehindBytes: u64(4096), ApplierState: status.ApplierLagging,
			Conflicts: []status.ConflictCount{{Kind: "update_missing", Decision: "skip", PerMinute: make([]int64, 15), Total: 3}}},
	}, Snapshots: []status.Snapshot{{ID: "20260101T000000000000000Z", State: "complete", LSN: "0/1000", Tables: 2, Rows: 10, Bytes: 2048, Regions: []string{"r1", "r2"}}}}}
	rep.Sources[0].Targets[1].Conflicts[0].PerMinute[14] = 3
	return rep
}

func TestConsole_LinkStates(t *testing.T) {
	const stall = 30 * time.Second
	tests := []struct {
		name  string
		rep   *status.Report
		want  string
		wantW string
	}{
		{"cut: domain does not answer", report(status.TargetCutOff, true, 40), linkCut, "domain does not answer"},
		{"catching up", report(status.TargetCatchingUp, false, 60), linkCatchingUp, "behind 4.0 KiB"},
		{"stalled", report(status.TargetStalled, false, 60), linkStalled, "applying nothing"},
		{"flowing", report(status.TargetCaughtUp, false, 100), linkFlowing, "applied everything"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := findSource(tt.rep, "src")
			got, why := linkState(tt.rep, src, "r2", stall)
			if got != tt.want || !strings.Contains(why, tt.wantW) {
				t.Errorf("link %q (%s), want %q (%s)", got, why, tt.want, tt.wantW)
			}
		})
	}
	t.Run("mirror silent", func(t *testing.T) {
		rep := report(status.TargetCatchingUp, false, 60)
		rep.Sources[0].Streams[2].Mirror.LastContactSeconds = f64(45)
		if got, why := linkState(rep, findSource(rep, "src"), "r2", stall); got != linkCut || !strings.Contains(why, "45s") {
			t.Errorf("link %q (%s), want cut after 45s", got, why)
		}
	})
	t.Run("database unreachable", func(t *testing.T) {
		rep := report(status.TargetCaughtUp, false, 100)
		rep.Sources[0].Targets[1] = status.Target{Region: "r2", Error: "connection refused"}
		if got, why := linkState(rep, findSource(rep, "src"), "r2", stall); got != linkUnknown || !strings.Contains(why, "connection refused") {
			t.Errorf("link %q (%s), want unknown naming the error", got, why)
		}
	})
}

func TestConsole_Ring(t *testing.T) {
	r := newRing(3)
	if r.last() != nil || len(r.all()) != 0 {
		t.Fatal("empty ring has samples")
	}
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		r.add(Sample{At: t0.Add(time.Duration(i) * time.Second)})
	}
	all := r.all()
	if got, want := len(all), 3; got != want {
		t.Fatalf("%d samples, want %d", got, want)
	}
	for i, s := range all {
		if got, want := s.At, t0.Add(time.Duration(i+2)*time.Second); !got.Equal(want) {
			t.Errorf("sample %d at %s, want %s", i, got, want)
		}
	}
	r.add(Sample{At: t0.Add(9 * time.Second), Error: "nats down"})
	if got := r.last(); got == nil || !got.At.Equal(t0.Add(4*time.Second)) {
		t.Errorf("last good sample %v, want the one at +4s", got)
	}
}

func TestConsole_Rate(t *testing.T) {
	t0 := time.Now()
	first := sampleOf(report(status.TargetCatchingUp, false, 40), "src", t0, nil, 30*time.Second)
	if rs := first.region("r2"); rs == nil || rs.AppliedPerSecond != nil {
		t.Fatalf("first sample has a rate: %+v", rs)
	}
	second := sampleOf(report(status.TargetCatchingUp, false, 60), "src", t0.Add(4*time.Second), &first, 30*time.Second)
	if rs := second.region("r2"); rs == nil || rs.AppliedPerSecond == nil || *rs.AppliedPerSecond != 5 {
		t.Fatalf("rate %+v, want 5/s (20 messages in 4s)", rs)
	}
	// A region whose domain and database both stop answering stays, unknown.
	rep := report(status.TargetCaughtUp, false, 100)
	rep.Sources[0].Targets = rep.Sources[0].Targets[:1]
	rep.Sources[0].Streams = rep.Sources[0].Streams[:2]
	third := sampleOf(rep, "src", t0.Add(6*time.Second), &second, 30*time.Second)
	if rs := third.region("r2"); rs == nil || rs.Link != linkUnknown {
		t.Fatalf("r2 in the third sample: %+v, want it kept as unknown", rs)
	}
}

// TestConsole_Page renders the page over a cut, then a heal, and reads
// it as the browser gets it.
func TestConsole_Page(t *testing.T) {
	c := New(Config{Status: status.Options{Name: "src", NATS: "nats://u:secret@hub:4222", Stall: 30 * time.Second}, Interval: time.Second}, zerolog.Nop())
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/api/status"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no status gathered yet") {
		t.Errorf("/api/status before a sample: %d %s", code, body)
	}
	if _, body := get("/"); !strings.Contains(body, "Gathering the first status report") || strings.Contains(body, "secret") {
		t.Errorf("page before a sample:\n%s", body)
	}

	t0 := time.Now().Add(-time.Minute)
	c.record(report(status.TargetCaughtUp, false, 100), nil, t0)
	c.record(report(status.TargetCutOff, true, 100), nil, t0.Add(10*time.Second))
	code, page := get("/")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d", code)
	}
	for _, want := range []string{
		`data-region="r2" data-link="cut"`, `data-region="r1" data-link="flowing"`, "its NATS domain does not answer",
		"update_missing", "20260101T000000000000000Z", "r1, r2", `<polyline`, `fetch("fragment"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "secret") {
		t.Errorf("page shows the NATS password")
	}
	if n := len(regexp.MustCompile(`<title>r2: cut</title>`).FindAllString(page, -1)); n != 1 {
		t.Errorf("timeline has %d cut stretches of r2, want 1", n)
	}

	c.record(report(status.TargetCaughtUp, false, 100), nil, t0.Add(20*time.Second))
	if _, frag := get("/fragment"); !strings.Contains(frag, `data-region="r2" data-link="flowing"`) || strings.Contains(frag, "<html") {
		t.Errorf("fragment after the heal does not show r2 flowing, or is a whole page:\n%s", frag)
	}
	code, body := get("/api/status")
	var rep status.Report
	if err := json.Unmarshal([]byte(body), &rep); code != http.StatusOK || err != nil || len(rep.Sources) != 1 || rep.Sources[0].Snapshots[0].Regions[1] != "r2" {
		t.Errorf("/api/status: %d %v %s", code, err, body)
	}

	c.record(nil, io.ErrUnexpectedEOF, t0.Add(30*time.Second))
	if _, frag := get("/fragment"); !strings.Contains(frag, "Cannot gather the status: unexpected EOF") || !strings.Contains(frag, `data-link="flowing"`) {
		t.Errorf("fragment while NATS fails does not say so over the last report:\n%s", frag)
	}
	if code, _ := get("/api/status"); code != http.StatusServiceUnavailable {
		t.Errorf("/api/status while NATS fails: %d, want 503", code)
	}
}
