package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// regionSetup is a hub with the primary and capture, and regions each with
// a replica and an applier consuming the region's mirror of the stream.
type regionSetup struct {
	top      *local.Topology
	primary  *local.Postgres
	src      string            // primary URL
	dst      map[string]string // region -> replica URL
	capture  *proc
	appliers map[string]*proc
	js       map[string]jetstream.JetStream // domain -> JetStream through that domain's own server
}

// newRegions starts the topology with every leafnode link behind a proxy,
// pgbench's tables (empty) on the primary and every replica, capture, and
// one applier per region with --upstream-domain hub.
func newRegions(t *testing.T, regions ...string) *regionSetup {
	t.Helper()
	ctx := context.Background()
	s := &regionSetup{
		top:      local.NewTestTopology(t, local.TopologyOptions{Hub: "hub", Regions: regions, Proxied: true}),
		dst:      map[string]string{},
		appliers: map[string]*proc{},
		js:       map[string]jetstream.JetStream{},
	}
	s.primary = local.NewTestPostgres(t, local.PostgresOptions{Name: "primary"})
	s.src = s.primary.URL("postgres")
	pgbench(t, s.src, "-i", "-I", "dtp", "-s", "1", "-q")
	exec1(t, s.src, historyIdentity)
	for _, r := range regions {
		s.dst[r] = local.NewTestPostgres(t, local.PostgresOptions{Name: "replica-" + r}).URL("postgres")
		if err := local.CopySchema(ctx, s.src, s.dst[r]); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range append([]string{"hub"}, regions...) {
		nc, err := nats.Connect(s.top.Server(d).ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if s.js[d], err = jetstream.NewWithDomain(nc, d); err != nil {
			t.Fatal(err)
		}
	}

	s.capture = start(t, "pgjet-capture", bins.capture, "--db", s.src, "--nats", s.top.Hub.ClientURL(), "--name", "src", "--heartbeat", "1s")
	s.capture.waitLog(t, "capture started")
	for _, r := range regions {
		p := start(t, "pgjet-apply "+r, bins.apply, "--db", s.dst[r], "--nats", s.top.Regions[r].ClientURL(),
			"--name", "src", "--region", r, "--upstream-domain", "hub")
		p.waitLog(t, "apply started")
		s.appliers[r] = p
	}
	return s
}

// lastSeq is the last sequence of the source's stream (or mirror) in
// domain, asked of that domain's own server.
func (s *regionSetup) lastSeq(domain string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.js[domain].Stream(ctx, stream.StreamName("src"))
	if err != nil {
		return 0, fmt.Errorf("stream in %s: %w", domain, err)
	}
	return st.CachedInfo().State.LastSeq, nil
}

func (s *regionSetup) mustLastSeq(t *testing.T, domain string) uint64 {
	t.Helper()
	n, err := s.lastSeq(domain)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// appliedSeq is the stream sequence the region's replica has applied.
func (s *regionSetup) appliedSeq(t *testing.T, region string) uint64 {
	t.Helper()
	return uint64(queryInt(t, s.dst[region], "SELECT coalesce(max(stream_seq), 0) FROM pgjet.applied WHERE source = 'src'"))
}

// status runs `pgjet status --json` against the hub for every domain.
func (s *regionSetup) status(t *testing.T, extra ...string) (statusJSON, int) {
	t.Helper()
	args := append([]string{"status", "--nats", s.top.Hub.ClientURL(), "--name", "src", "--domains", "hub," + strings.Join(s.top.Names, ","), "--json"}, extra...)
	cmd := exec.Command(bins.pgjet, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pgjet status: %v", err)
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("pgjet status --json (exit %d) printed no JSON: %v\nstdout:\n%s\nstderr:\n%s", code, err, out, stderr.String())
	}
	st.raw = string(out)
	return st, code
}

// statusJSON is the part of `pgjet status --json` the tests read.
type statusJSON struct {
	Domains []struct {
		Domain string `json:"domain"`
		Error  string `json:"error"`
	} `json:"domains"`
	Sources []struct {
		Source  string `json:"source"`
		Streams []struct {
			Domain  string `json:"domain"`
			Role    string `json:"role"`
			LastSeq uint64 `json:"last_seq"`
			Mirror  *struct {
				Upstream           string   `json:"upstream_domain"`
				Lag                uint64   `json:"lag"`
				LastContactSeconds *float64 `json:"last_contact_seconds"`
				Error              string   `json:"error"`
			} `json:"mirror"`
			Gap       string `json:"gap"`
			Consumers []struct {
				Name     string `json:"name"`
				Region   string `json:"region"`
				AckFloor uint64 `json:"ack_floor_seq"`
				Pending  uint64 `json:"pending"`
				Lag      uint64 `json:"lag"`
			} `json:"consumers"`
		} `json:"streams"`
		Targets []struct {
			Region            string   `json:"region"`
			Error             string   `json:"error"`
			StreamSeq         uint64   `json:"stream_seq"`
			LagSeconds        *float64 `json:"lag_seconds"`
			BehindBytes       *uint64  `json:"behind_bytes"`
			CaughtUp          *bool    `json:"caught_up"`
			ConflictsLastHour int64    `json:"conflicts_last_hour"`
		} `json:"targets"`
	} `json:"sources"`
	raw string
}

// domainErrors maps every domain in the report to its error ("" = answered).
func (st statusJSON) domainErrors() map[string]string {
	m := map[string]string{}
	for _, d := range st.Domains {
		m[d.Domain] = d.Error
	}
	return m
}

// TestRegions_PartitionHeals cuts one region's leafnode link in the middle
// of a pgbench load: the cut region's mirror must stop while the hub and
// the other region go on, its applier must keep running, and after the
// heal both regions must end identical to the primary.
func TestRegions_PartitionHeals(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := newRegions(t, "r1", "r2")
	pgbench(t, s.src, "-i", "-I", "g", "-s", "1", "-q")
	// Both regions hold the initial data (100000 rows, which a loaded
	// machine takes a while to apply) before the load: what r2 does during
	// the cut is then keeping up with the load alone.
	for _, r := range s.top.Names {
		waitSame(t, 3*time.Minute, s.src, s.dst[r])
	}
	t.Logf("setup done after %s", time.Since(began).Round(time.Millisecond))

	// The cut lasts from when the load reaches r1's mirror to load+12s: long
	// enough to prove it, short enough that the mirror's retry backoff (5s
	// more per failed retry, up to 2 minutes) keeps the test near a minute.
	const loadFor, healAfter = 30 * time.Second, 12 * time.Second
	preLoad := s.mustLastSeq(t, "hub")
	loadStart := time.Now()
	load := pgbenchAsync(t, s.src, "-n", "-c", "2", "-R", "200", "-T", fmt.Sprint(int(loadFor.Seconds())), "-b", "tpcb-like")
	// The cut comes once the load flows into r1's mirror.
	waitFor(t, 60*time.Second, "the load in r1's mirror", func() (bool, string) {
		checkDaemons(t)
		n := s.mustLastSeq(t, "r1")
		return n >= preLoad+100, fmt.Sprintf("r1 mirror at seq %d, hub at %d before the load", n, preLoad)
	})
	before := s.mustLastSeq(t, "r1")

	s.top.Proxies["r1"].Cut()
	cutAt := time.Now()
	t.Logf("cut r1 at load+%s (r1 mirror at seq %d)", cutAt.Sub(loadStart).Round(time.Millisecond), before)

	// A cut is a cut only when r1's mirror stops growing while the hub's
	// stream goes on.
	const still = 5 * time.Second
	var frozen, hubAtFreeze uint64
	var frozenSince time.Time
	waitFor(t, 20*time.Second, fmt.Sprintf("r1's mirror to stay still for %s", still), func() (bool, string) {
		n, err := s.lastSeq("r1")
		if err != nil {
			return false, err.Error()
		}
		if n != frozen || frozenSince.IsZero() {
			frozen, frozenSince = n, time.Now()
			hubAtFreeze = s.mustLastSeq(t, "hub")
		}
		return time.Since(frozenSince) >= still, fmt.Sprintf("r1 mirror seq %d since %s", n, time.Since(frozenSince).Round(time.Millisecond))
	})
	hubNow := s.mustLastSeq(t, "hub")
	if hubNow <= hubAtFreeze+100 {
		t.Fatalf("hub stream went from %d to %d while r1's mirror stood still: the load is not running, so the cut proves nothing", hubAtFreeze, hubNow)
	}
	t.Logf("r1 mirror still at %d for %s while the hub went %d -> %d", frozen, still, hubAtFreeze, hubNow)

	t.Run("r2 keeps up during the cut", func(t *testing.T) {
		waitFor(t, 60*time.Second, "r2 to apply past r1's frozen position", func() (bool, string) {
			checkDaemons(t)
			n := s.appliedSeq(t, "r2")
			return n > frozen+100, fmt.Sprintf("r2 applied seq %d, r1 frozen at %d", n, frozen)
		})
		a := s.appliedSeq(t, "r2")
		waitFor(t, 10*time.Second, "r2's applied position to advance", func() (bool, string) {
			n := s.appliedSeq(t, "r2")
			return n > a, fmt.Sprintf("r2 applied seq %d, was %d", n, a)
		})
		if n := s.appliedSeq(t, "r1"); n > frozen {
			t.Errorf("r1 applied seq %d beyond its mirror's %d", n, frozen)
		}
		if n := s.mustLastSeq(t, "r1"); n != frozen {
			t.Errorf("r1's mirror moved from %d to %d while cut", frozen, n)
		}
	})

	t.Run("status during the cut", func(t *testing.T) {
		// A region cut off is a problem: status says so and exits 1.
		st, code := s.status(t)
		if code != 1 {
			t.Errorf("pgjet status exited %d with r1 cut off, want 1:\n%s", code, st.raw)
		}
		errs := st.domainErrors()
		if errs["r1"] == "" || errs["hub"] != "" || errs["r2"] != "" {
			t.Errorf("domain errors = %q, want only r1 unreachable", errs)
		}
		// r1's own server still answers for its mirror, and says it cannot
		// reach the hub.
		r1 := exec.Command(bins.pgjet, "status", "--nats", s.top.Regions["r1"].ClientURL(), "--name", "src")
		out, err := r1.CombinedOutput()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "domain hub") {
			t.Errorf("pgjet status against r1's server during the cut: %v, want exit 1 naming domain hub:\n%s", err, out)
		}
		t.Logf("pgjet status on r1 during the cut:\n%s", out)
	})

	if s.appliers["r1"].Exited() {
		t.Fatalf("r1's applier exited during the cut:\n%s", tail(s.appliers["r1"].Output(), 4096))
	}
	if out := s.appliers["r1"].Output(); strings.Contains(out, "apply interrupted") {
		t.Errorf("r1's applier was interrupted during the cut (it should wait on its local mirror):\n%s", tail(out, 4096))
	}
	// Heal before the load ends, so that r1 catches up under load. The cut
	// is proved already: this pause only gives it the length healAfter
	// chose.
	time.Sleep(time.Until(loadStart.Add(healAfter)))
	if err := s.top.Proxies["r1"].Heal(); err != nil {
		t.Fatal(err)
	}
	t.Logf("healed r1 at load+%s after a %s cut", time.Since(loadStart).Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
	healedAt := time.Now()
	waitFor(t, 30*time.Second, "r1's leafnode link to come back", func() (bool, string) {
		n := s.top.Regions["r1"].Server().NumLeafNodes()
		return n == 1, fmt.Sprintf("%d leafnode connections", n)
	})
	t.Logf("r1's leafnode link back %s after the heal", time.Since(healedAt).Round(time.Millisecond))
	waitFor(t, 90*time.Second, "r1's mirror to move again", func() (bool, string) {
		n, err := s.lastSeq("r1")
		if err != nil {
			return false, err.Error()
		}
		return n > frozen, fmt.Sprintf("r1 mirror seq %d", n)
	})
	t.Logf("r1's mirror resumed %s after the heal", time.Since(healedAt).Round(time.Millisecond))

	if err := <-load; err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	// Every region's copy must be whole: the mirror keeps the origin's
	// sequence numbers, so a skipped message shows as a hole.
	for _, r := range s.top.Names {
		waitFor(t, 60*time.Second, r+"'s mirror to hold all of the hub's stream", func() (bool, string) {
			hub, mirror := s.mustLastSeq(t, "hub"), s.mustLastSeq(t, r)
			return mirror == hub, fmt.Sprintf("hub at %d, %s at %d", hub, r, mirror)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := s.js[r].Stream(ctx, stream.StreamName("src"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if state := st.CachedInfo().State; state.NumDeleted != 0 || state.Msgs != state.LastSeq-state.FirstSeq+1 {
			t.Errorf("%s's mirror has holes: %d messages in %d..%d, %d deleted", r, state.Msgs, state.FirstSeq, state.LastSeq, state.NumDeleted)
		}
	}
	// One subtest per region, so that a region that does not converge
	// does not hide whether the others did.
	for _, r := range s.top.Names {
		t.Run(r+" converges", func(t *testing.T) {
			waitSame(t, 90*time.Second, s.src, s.dst[r])
			t.Logf("%s matches the primary at load end+%s (applied seq %d)", r, time.Since(loadStart.Add(loadFor)).Round(time.Millisecond), s.appliedSeq(t, r))
		})
	}
	checkDaemons(t)
	if t.Failed() {
		t.FailNow()
	}
	if n := queryInt(t, s.src, "SELECT count(*) FROM pgbench_history"); n < 1000 {
		t.Fatalf("pgbench_history has %d rows: the load did not run", n)
	}
	for _, r := range s.top.Names {
		if n := queryInt(t, s.dst[r], "SELECT count(*) FROM pgjet.conflicts"); n != 0 {
			t.Errorf("%s: %d conflicts, want 0", r, n)
		}
	}

	t.Run("status after the heal", func(t *testing.T) {
		var st statusJSON
		waitFor(t, 20*time.Second, "pgjet status to show every region caught up", func() (bool, string) {
			var code int
			st, code = s.status(t, "--db-region", "r1="+s.dst["r1"], "--db-region", "r2="+s.dst["r2"])
			if code != 0 || len(st.Sources) != 1 || len(st.Sources[0].Targets) != 2 {
				return false, st.raw
			}
			for _, tg := range st.Sources[0].Targets {
				if tg.CaughtUp == nil || !*tg.CaughtUp {
					return false, st.raw
				}
			}
			return true, ""
		})
		if errs := st.domainErrors(); len(errs) != 3 || errs["hub"] != "" || errs["r1"] != "" || errs["r2"] != "" {
			t.Errorf("domains = %q, want hub, r1 and r2 answering", errs)
		}
		src := st.Sources[0]
		if got, want := src.Source, "src"; got != want {
			t.Errorf("source = %q, want %q", got, want)
		}
		hubSeq := s.mustLastSeq(t, "hub")
		roles := map[string]string{}
		for _, str := range src.Streams {
			roles[str.Domain] = str.Role
			if str.Gap != "" {
				t.Errorf("%s: gap %q", str.Domain, str.Gap)
			}
			if str.Domain == "hub" {
				if len(str.Consumers) != 0 {
					t.Errorf("hub stream has applier consumers %+v, want none (regions consume their mirrors)", str.Consumers)
				}
				continue
			}
			if str.Mirror == nil || str.Mirror.Upstream != "hub" {
				t.Errorf("%s: mirror = %+v, want one of domain hub", str.Domain, str.Mirror)
			}
			if len(str.Consumers) != 1 || str.Consumers[0].Name != "pgjet_apply_"+str.Domain || str.Consumers[0].Region != str.Domain {
				t.Errorf("%s: consumers = %+v, want pgjet_apply_%s", str.Domain, str.Consumers, str.Domain)
				continue
			}
			if c := str.Consumers[0]; c.AckFloor == 0 || c.AckFloor > hubSeq {
				t.Errorf("%s: consumer ack floor %d, want within 1..%d", str.Domain, c.AckFloor, hubSeq)
			}
		}
		if got, want := fmt.Sprint(roles), "map[hub:home r1:mirror r2:mirror]"; got != want {
			t.Errorf("streams by domain = %s, want %s", got, want)
		}
		for _, tg := range src.Targets {
			if tg.Error != "" || tg.StreamSeq == 0 || tg.LagSeconds == nil || tg.BehindBytes == nil || *tg.BehindBytes != 0 || tg.ConflictsLastHour != 0 {
				t.Errorf("target %s: %+v, want a position, a lag, nothing behind and no conflicts", tg.Region, tg)
			}
		}
		if t.Failed() {
			t.Logf("status:\n%s", st.raw)
		}

		// The same for people.
		cmd := exec.Command(bins.pgjet, "status", "--nats", s.top.Hub.ClientURL(), "--domains", "hub,r1,r2",
			"--db-region", "r1="+s.dst["r1"], "--db-region", "r2="+s.dst["r2"])
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgjet status: %v\n%s", err, out)
		}
		for _, want := range []string{"source src", "pgjet_apply_r1", "pgjet_apply_r2", "(caught up)"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("pgjet status output lacks %q", want)
			}
		}
		t.Logf("pgjet status:\n%s", out)
	})

	for _, r := range s.top.Names {
		s.appliers[r].Stop(t)
	}
	s.capture.Stop(t)
	t.Logf("total %s", time.Since(began).Round(time.Millisecond))
}
