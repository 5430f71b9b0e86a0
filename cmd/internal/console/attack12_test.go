package console

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/cmd/internal/status"
)

// TestAttack12_StoppedApplierWithoutDBRegion: `pgjet console` without
// --db-region (allowed: "[--db-region ...]") for a region whose applier
// is stopped 60 messages behind. The report is the shape status.Gather
// builds: the region's mirror holds the whole stream and hears from the
// hub; its applier's consumer (pgjet_apply_r1) is "stopped" with a lag of
// 60; Gather's streamProblems lists it. The page must not call the link
// flowing ("its replica has applied everything"): the consumer says the
// replica has not, and nothing applies.
func TestAttack12_StoppedApplierWithoutDBRegion(t *testing.T) {
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

// TestAttack12_LinkStaleWhileNATSDown: the demo's table shows, per
// region, Console.Link: "region's link state in the newest sample". When
// the newest sample failed (NATS does not answer the console), Link
// still returns the verdict of the last good sample, so the demo's
// table keeps saying "flowing" for every region with nothing to mark it
// stale.
func TestAttack12_LinkStaleWhileNATSDown(t *testing.T) {
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
