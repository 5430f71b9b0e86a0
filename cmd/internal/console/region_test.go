package console

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/cmd/internal/status"
)

// TestConsole_StoppedApplierWithoutDBRegion: `pgjet console` without
// --db-region for a region whose applier is stopped 60 messages behind.
// The report is the shape status.Gather builds: the region's mirror holds
// the whole stream and hears from the hub; its applier's consumer
// (pgjet_apply_r1) is "stopped" with a lag of 60. The page must not call
// the link flowing ("its replica has applied everything"): the consumer
// says the replica has not, and nothing applies.
func TestConsole_StoppedApplierWithoutDBRegion(t *testing.T) {
	rep := &status.Report{At: time.Now(), Healthy: false,
		Problems: []string{"applier of region r1 is not running: consumer pgjet_apply_r1 of PGJET_src in domain r1 has no pull request waiting and last delivered or was acknowledged 120.0s ago"},
		Domains:  []status.Domain{{Domain: "hub"}, {Domain: "r1"}},
		Sources: []status.Source{{Source: "src", Streams: []status.Stream{
			{Domain: "hub", Stream: "PGJET_src", Role: "home", LastSeq: 100, Consumers: []status.Consumer{}},
			{Domain: "r1", Stream: "PGJET_src", Role: "mirror", LastSeq: 100,
				Mirror: &status.Mirror{Upstream: "hub", LastContactSeconds: f64(0.4)},
				Consumers: []status.Consumer{{Name: "pgjet_apply_r1", Region: "r1", AckFloor: 40, Delivered: 40,
					Pending: 60, Lag: 60, Waiting: 0, LastActiveSeconds: f64(120), State: "stopped"}}},
		}}}}
	c := New(Config{Status: status.Options{Name: "src", Stall: 30 * time.Second}, Interval: time.Second}, zerolog.Nop())
	c.record(rep, nil, time.Now())
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/fragment")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`data-region="r1" data-link="([^"]*)" data-applier="([^"]*)"`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no row for r1:\n%s", b)
	}
	if m[1] == linkFlowing || c.Link("r1") == linkFlowing {
		t.Errorf("r1's applier is stopped 60 messages behind, yet its link is %q (applier column %q, Link() %q)", m[1], m[2], c.Link("r1"))
	}
}

// TestConsole_LinkUnknownWhileSamplesFail: the demo's table shows, per
// region, Console.Link. When the newest samples failed (NATS does not
// answer the console), or the newest is old, the verdict of the last good
// one is no longer the link's state: Link says unknown.
func TestConsole_LinkUnknownWhileSamplesFail(t *testing.T) {
	c := New(Config{Status: status.Options{Name: "src", Stall: 30 * time.Second}, Interval: time.Second}, zerolog.Nop())
	t0 := time.Now().Add(-time.Minute)
	c.record(report(status.TargetCaughtUp, false, 100), nil, t0)
	for i := 1; i <= 30; i++ {
		c.record(nil, errors.New("nats: no servers available for connection"), t0.Add(time.Duration(i)*time.Second))
	}
	if got := c.Link("r1"); got == linkFlowing {
		t.Errorf("30 samples in a row failed (NATS down for the console), yet Link(r1) = %q: the demo's table shows it as current", got)
	}
}

func TestConsole_LinkStaleSample(t *testing.T) {
	c := New(Config{Status: status.Options{Name: "src", Stall: 30 * time.Second}, Interval: time.Second}, zerolog.Nop())
	c.record(report(status.TargetCaughtUp, false, 100), nil, time.Now().Add(-time.Minute))
	if got := c.Link("r1"); got != linkUnknown {
		t.Errorf("newest sample a minute old (interval 1s): Link(r1) = %q, want %q", got, linkUnknown)
	}
	c.record(report(status.TargetCaughtUp, false, 100), nil, time.Now())
	if got := c.Link("r1"); got != linkFlowing {
		t.Errorf("fresh sample: Link(r1) = %q, want %q", got, linkFlowing)
	}
}

// TestConsole_LinkByConsumer judges regions without --db-region by their
// applier's consumer, against the home stream's last sequence.
func TestConsole_LinkByConsumer(t *testing.T) {
	const stall = 30 * time.Second
	tests := []struct {
		name     string
		mirror   uint64 // the mirror's last sequence; the home's is 100
		consumer *status.Consumer
		want     string
		wantWhy  string
		applier  string
	}{
		{"flowing", 100, &status.Consumer{AckFloor: 100, Delivered: 100, State: status.ConsumerWaiting}, linkFlowing, "acknowledged the whole stream", status.ApplierRunning},
		{"applying", 100, &status.Consumer{AckFloor: 70, Delivered: 80, Pending: 20, AckPending: 10, Lag: 30, State: status.ConsumerApplying}, linkCatchingUp, "30 messages behind", status.ApplierLagging},
		{"mirror behind", 90, &status.Consumer{AckFloor: 90, Delivered: 90, State: status.ConsumerWaiting}, linkCatchingUp, "10 messages behind", status.ApplierRunning},
		{"stopped", 100, &status.Consumer{AckFloor: 40, Delivered: 40, Pending: 60, Lag: 60, State: status.ConsumerStopped}, linkStalled, "stopped, 60 messages behind", status.ApplierStopped},
		{"no consumer", 100, nil, linkUnknown, "no consumer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mirror := status.Stream{Domain: "r1", Stream: "PGJET_src", Role: "mirror", LastSeq: tt.mirror,
				Mirror: &status.Mirror{Upstream: "hub", LastContactSeconds: f64(0.4)}, Consumers: []status.Consumer{}}
			if tt.consumer != nil {
				cons := *tt.consumer
				cons.Name, cons.Region = "pgjet_apply_r1", "r1"
				mirror.Consumers = append(mirror.Consumers, cons)
			}
			rep := &status.Report{At: time.Now(), Domains: []status.Domain{{Domain: "hub"}, {Domain: "r1"}},
				Sources: []status.Source{{Source: "src", Streams: []status.Stream{
					{Domain: "hub", Stream: "PGJET_src", Role: "home", LastSeq: 100, Consumers: []status.Consumer{}}, mirror}}}}
			got, why := linkState(rep, findSource(rep, "src"), "r1", stall)
			if got != tt.want || !strings.Contains(why, tt.wantWhy) {
				t.Errorf("link %q (%s), want %q (%s)", got, why, tt.want, tt.wantWhy)
			}
			c := New(Config{Status: status.Options{Name: "src", Stall: stall}, Interval: time.Second}, zerolog.Nop())
			rv := c.regionView(rep, findSource(rep, "src"), "r1", "#000", nil)
			if rv.ApplierState != tt.applier {
				t.Errorf("applier state %q (%s), want %q", rv.ApplierState, rv.Applier, tt.applier)
			}
		})
	}
}

// TestConsole_RegionDatabaseUnreachable: a --db-region database that
// does not answer is in Report.DBErrors, under no source; its region's
// link is unknown, its row says why and its replica box is red.
func TestConsole_RegionDatabaseUnreachable(t *testing.T) {
	rep := report(status.TargetCaughtUp, false, 100)
	rep.Sources[0].Targets = rep.Sources[0].Targets[:1]
	rep.DBErrors = []status.Target{{Region: "r2", Error: "connection refused"}}
	c := New(Config{Status: status.Options{Name: "src", Stall: 30 * time.Second}, Interval: time.Second}, zerolog.Nop())
	c.record(rep, nil, time.Now())
	v := c.view(time.Now())
	i := slices.IndexFunc(v.Regions, func(r regionView) bool { return r.Name == "r2" })
	if i < 0 {
		t.Fatalf("no row for r2: %+v", v.Regions)
	}
	if r := v.Regions[i]; r.Link != linkUnknown || r.DBError != "connection refused" {
		t.Errorf("r2: link %q, database error %q; want unknown, connection refused", r.Link, r.DBError)
	}
	if got := c.Link("r2"); got != linkUnknown {
		t.Errorf("Link(r2) = %q, want unknown", got)
	}
	red := `stroke="` + linkColors[linkCut] + `" stroke-width="2"/><text x="784" y="` // the replica boxes' column
	if !strings.Contains(string(v.Topology), red) {
		t.Errorf("no red replica box:\n%s", v.Topology)
	}
	if len(rep.Sources[0].Targets) != 1 {
		t.Errorf("the console changed the report's targets: %+v", rep.Sources[0].Targets)
	}
}

// TestConsole_TopologyCaptureStalled: the source and hub boxes are green
// only while capture replies to its walsender and the home stream
// receives messages (capture's heartbeats included).
func TestConsole_TopologyCaptureStalled(t *testing.T) {
	const stall = 30 * time.Second
	stalled, flowing := `stroke="`+linkColors[linkStalled]+`"`, `stroke="`+linkColors[linkFlowing]+`"`
	hubBox := func(svg string) string {
		i := strings.Index(svg, `<rect x="190"`)
		if i < 0 {
			t.Fatalf("no hub box:\n%s", svg)
		}
		return svg[i : i+strings.Index(svg[i:], "/>")]
	}
	sourceBox := func(svg string) string {
		i := strings.Index(svg, `<rect x="8"`)
		return svg[i : i+strings.Index(svg[i:], "/>")]
	}
	at := time.Now()
	fresh, old := at.Add(-2*time.Second), at.Add(-2*time.Minute)
	home := func(last *time.Time) *status.Stream {
		return &status.Stream{Domain: "hub", Stream: "PGJET_src", Role: "home", LastSeq: 100, LastTime: last}
	}
	capture := func(reply float64) *status.Capture {
		return &status.Capture{Slot: "pgjet_src", Active: true, ReplySeconds: &reply}
	}
	tests := []struct {
		name        string
		v           view
		hub, source string
	}{
		{"flowing", view{At: at, Stall: stall, Home: home(&fresh), Capture: capture(1)}, flowing, flowing},
		{"home silent", view{At: at, Stall: stall, Home: home(&old), Capture: capture(1)}, stalled, flowing},
		{"home empty", view{At: at, Stall: stall, Home: home(nil)}, stalled, ""},
		{"capture silent", view{At: at, Stall: stall, Home: home(&fresh), Capture: capture(45)}, flowing, stalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svg := string(topology(tt.v))
			if got := hubBox(svg); !strings.Contains(got, tt.hub) {
				t.Errorf("hub box %s, want %s", got, tt.hub)
			}
			if got := sourceBox(svg); tt.source != "" && !strings.Contains(got, tt.source) {
				t.Errorf("source box %s, want %s", got, tt.source)
			}
		})
	}
}
