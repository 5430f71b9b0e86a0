package console

import (
	"slices"
	"time"

	"github.com/pgjet/pgjet/cmd/internal/status"
)

// Sample is what the console keeps of one status report for its charts.
type Sample struct {
	At time.Time `json:"at"`
	// Error is set when no report could be gathered (NATS unreachable).
	Error   string         `json:"error,omitempty"`
	Regions []RegionSample `json:"regions,omitempty"`
}

// RegionSample is one region's part of a Sample.
type RegionSample struct {
	Region string `json:"region"`
	// Link is the state of the region's link: flowing, catching up,
	// stalled, cut, or unknown.
	Link string `json:"link"`
	// LagSeconds is how long the oldest transaction of the source's
	// stream the region has not applied has waited (0: caught up), or,
	// when the stream does not say, the age of the last one applied.
	LagSeconds *float64 `json:"lag_seconds"`
	// BehindBytes is the source WAL the region has yet to apply.
	BehindBytes *uint64 `json:"behind_bytes"`
	// StreamSeq is the stream sequence the region has applied (0:
	// unknown).
	StreamSeq uint64 `json:"stream_seq"`
	// AppliedPerSecond is the stream messages the region applied per
	// second since the sample before: its transactions, and capture's
	// heartbeats (one per --heartbeat). Null for the first sample.
	AppliedPerSecond *float64 `json:"applied_per_second"`
}

// sampleOf keeps of rep what the charts draw for source; prev is the
// sample before, for rates.
func sampleOf(rep *status.Report, source string, at time.Time, prev *Sample, stall time.Duration) Sample {
	s := Sample{At: at}
	src := findSource(rep, source)
	if src == nil {
		return s
	}
	names := regionNames(src)
	if prev != nil {
		// A region that drops out of the report (its domain and database
		// do not answer) stays on the charts.
		for _, r := range prev.Regions {
			if !slices.Contains(names, r.Region) {
				names = append(names, r.Region)
			}
		}
	}
	for _, region := range names {
		rs := RegionSample{Region: region}
		rs.Link, _ = linkState(rep, src, region, stall)
		if t := findTarget(src, region); t != nil && t.Error == "" {
			rs.LagSeconds = t.WaitingSeconds
			if rs.LagSeconds == nil {
				rs.LagSeconds = t.LagSeconds
			}
			rs.BehindBytes = t.BehindBytes
			rs.StreamSeq = t.StreamSeq
		}
		if p := prev.region(region); p != nil && p.StreamSeq > 0 && rs.StreamSeq >= p.StreamSeq {
			if dt := at.Sub(prev.At).Seconds(); dt > 0 {
				r := float64(rs.StreamSeq-p.StreamSeq) / dt
				rs.AppliedPerSecond = &r
			}
		}
		s.Regions = append(s.Regions, rs)
	}
	return s
}

// region returns the sample of region; nil when s is nil or has none.
func (s *Sample) region(region string) *RegionSample {
	if s == nil {
		return nil
	}
	for i := range s.Regions {
		if s.Regions[i].Region == region {
			return &s.Regions[i]
		}
	}
	return nil
}

// ring keeps the newest samples, a fixed number of them.
type ring struct {
	buf  []Sample
	next int // where the next sample goes
	full bool
}

func newRing(size int) *ring { return &ring{buf: make([]Sample, max(size, 1))} }

func (r *ring) add(s Sample) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

// newest returns the newest sample, failed or not, or nil.
func (r *ring) newest() *Sample {
	if r.next == 0 && !r.full {
		return nil
	}
	return &r.buf[(r.next+len(r.buf)-1)%len(r.buf)]
}

// last returns the newest sample with a report, or nil.
func (r *ring) last() *Sample {
	all := r.all()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Error == "" {
			return &all[i]
		}
	}
	return nil
}

// all returns the samples, oldest first.
func (r *ring) all() []Sample {
	if !r.full {
		return append([]Sample(nil), r.buf[:r.next]...)
	}
	return append(append([]Sample(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}

// Link returns region's link state in the newest sample (flowing,
// catching up, stalled, cut or unknown), and "" before the first one or
// when that sample does not name region. It is "unknown" when the
// newest sample failed (NATS did not answer the console) or is older
// than staleAfter: an older verdict is no longer the link's state.
func (c *Console) Link(region string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := c.hist.newest()
	switch {
	case s == nil:
		return ""
	case s.Error != "" || time.Since(s.At) > c.staleAfter():
		return linkUnknown
	}
	if rs := s.region(region); rs != nil {
		return rs.Link
	}
	return ""
}

// staleAfter is how old the newest sample may be and still tell the
// links' state: a few intervals, and the time a sample may take when
// domains and databases do not answer (Gather waits Timeout for each
// domain, then for each database).
func (c *Console) staleAfter() time.Duration {
	return 3*c.cfg.Interval + 3*c.cfg.Status.Timeout
}
