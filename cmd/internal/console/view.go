package console

import (
	"fmt"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/pgjet/pgjet/cmd/internal/status"
	"github.com/pgjet/pgjet/stream"
)

// Link states of a region (RegionSample.Link): how the source's changes
// reach its replica.
const (
	// linkFlowing: the region's mirror hears from the hub and its replica
	// has applied everything.
	linkFlowing = "flowing"
	// linkCatchingUp: the replica is behind, and applying.
	linkCatchingUp = "catching up"
	// linkStalled: the replica is behind and applies nothing, though
	// its link is up (its applier is stopped or failing).
	linkStalled = "stalled"
	// linkCut: the region's copy of the stream receives nothing: its
	// domain does not answer, or its mirror has not heard from the hub.
	linkCut = "cut"
	// linkUnknown: nothing says (its database did not answer).
	linkUnknown = "unknown"
)

// findSource returns source name of rep; nil when rep is nil or lacks
// it. The --db-region databases that could not be read at all are among
// its targets, with their error: status files them under
// Report.DBErrors, since it cannot tell which sources such a database
// holds, and a region without a target would be judged as one without
// --db-region, from its stream alone, and look flowing while its
// database is down.
func findSource(rep *status.Report, name string) *status.Source {
	if rep == nil {
		return nil
	}
	for i := range rep.Sources {
		if rep.Sources[i].Source != name {
			continue
		}
		if len(rep.DBErrors) == 0 {
			return &rep.Sources[i]
		}
		src := rep.Sources[i]
		src.Targets = slices.Clone(src.Targets)
		for _, t := range rep.DBErrors {
			if findTarget(&src, t.Region) == nil {
				src.Targets = append(src.Targets, t)
			}
		}
		return &src
	}
	return nil
}

func findTarget(src *status.Source, region string) *status.Target {
	for i := range src.Targets {
		if src.Targets[i].Region == region {
			return &src.Targets[i]
		}
	}
	return nil
}

func homeOf(src *status.Source) *status.Stream {
	for i := range src.Streams {
		if src.Streams[i].Role == "home" {
			return &src.Streams[i]
		}
	}
	return nil
}

// mirrorOf is the region's copy of the stream: the mirror its applier
// consumes, or the one in the domain named after it.
func mirrorOf(src *status.Source, region string) *status.Stream {
	for i := range src.Streams {
		st := &src.Streams[i]
		if st.Role != "mirror" {
			continue
		}
		if st.Domain == region || slices.ContainsFunc(st.Consumers, func(c status.Consumer) bool { return c.Region == region }) {
			return st
		}
	}
	return nil
}

// consumerOf is the durable consumer of region's applier: on its mirror,
// or on any copy of the stream.
func consumerOf(src *status.Source, region string) *status.Consumer {
	streams := src.Streams
	if m := mirrorOf(src, region); m != nil {
		streams = append([]status.Stream{*m}, streams...)
	}
	for i := range streams {
		for j := range streams[i].Consumers {
			if c := &streams[i].Consumers[j]; c.Region == region {
				return c
			}
		}
	}
	return nil
}

// regionNames lists the regions of a source: those with a --db-region
// target, and those whose applier has a consumer.
func regionNames(src *status.Source) []string {
	var out []string
	add := func(r string) {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	for _, t := range src.Targets {
		add(t.Region)
	}
	for _, st := range src.Streams {
		for _, c := range st.Consumers {
			add(c.Region)
		}
	}
	slices.Sort(out)
	return out
}

func domainError(rep *status.Report, domain string) string {
	for _, d := range rep.Domains {
		if d.Domain == domain && d.Error != "" {
			return d.Error
		}
	}
	return ""
}

// linkState says how the source's changes reach region, and why.
func linkState(rep *status.Report, src *status.Source, region string, stall time.Duration) (string, string) {
	mirror := mirrorOf(src, region)
	t := findTarget(src, region)
	if err := domainError(rep, region); err != "" {
		return linkCut, "its NATS domain does not answer: " + err
	}
	if mirror != nil && mirror.Mirror != nil {
		m := mirror.Mirror
		switch {
		case m.Error != "":
			return linkCut, "its mirror reports: " + m.Error
		case m.LastContactSeconds == nil:
			return linkCut, fmt.Sprintf("its mirror has never heard from domain %s", m.Upstream)
		case *m.LastContactSeconds > stall.Seconds():
			return linkCut, fmt.Sprintf("its mirror has not heard from domain %s for %.0fs", m.Upstream, *m.LastContactSeconds)
		}
	}
	if t == nil {
		return consumerLink(src, region)
	}
	switch {
	case t.Error != "":
		return linkUnknown, "its database does not answer: " + t.Error
	case t.State == status.TargetCutOff:
		return linkCut, "its copy of the stream receives nothing"
	case t.State == status.TargetCaughtUp:
		return linkFlowing, "applied everything in the source's stream"
	case t.State == status.TargetCatchingUp:
		return linkCatchingUp, "behind " + behind(t) + ", and applying"
	case t.State == status.TargetStalled:
		return linkStalled, fmt.Sprintf("behind %s, and applying nothing for %.0fs (see its applier)", behind(t), deref(t.WaitingSeconds))
	}
	return linkUnknown, "the source's stream did not answer"
}

// consumerLink judges a region without --db-region by its applier's
// consumer: its replica is not read, but the consumer's ack floor is
// what the applier has committed. A mirror that holds the whole stream
// says nothing of the replica: the applier may be stopped, or behind.
func consumerLink(src *status.Source, region string) (string, string) {
	const unread = " (no --db-region: its replica is not read)"
	c, home := consumerOf(src, region), homeOf(src)
	switch {
	case c == nil:
		return linkUnknown, "no --db-region for it, and no consumer of its applier found"
	case c.State == status.ConsumerStopped:
		return linkStalled, fmt.Sprintf("its applier's consumer %s is stopped, %d messages behind: no pgjet-apply pulls from it%s", c.Name, c.Lag, unread)
	case home == nil:
		return linkUnknown, "the source's stream did not answer" + unread
	case c.AckFloor >= home.LastSeq && c.Pending == 0 && c.AckPending == 0:
		return linkFlowing, "its applier acknowledged the whole stream" + unread
	}
	return linkCatchingUp, fmt.Sprintf("its applier is %d messages behind the source's stream, and applying%s", home.LastSeq-min(c.AckFloor, home.LastSeq), unread)
}

// consumerApplier sums up an applier by its consumer, for a region whose
// database does not say (no --db-region, or it does not answer).
func consumerApplier(c *status.Consumer) string {
	switch c.State {
	case status.ConsumerStopped:
		return status.ApplierStopped
	case status.ConsumerApplying:
		return status.ApplierLagging
	case status.ConsumerWaiting:
		return status.ApplierRunning
	}
	return ""
}

func behind(t *status.Target) string {
	if t.BehindBytes == nil {
		return "?"
	}
	return status.HumanBytes(int64(*t.BehindBytes))
}

func deref(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

// view is what the page shows.
type view struct {
	Source   string
	NATS     string
	Now      time.Time
	At       time.Time // of the report shown
	Interval int64     // milliseconds between reloads
	Window   string
	// Stall is how long capture, the home stream or a link may go
	// without progress before the page calls it stalled.
	Stall time.Duration
	// Failed is set while no report can be gathered; the page then
	// shows the last one it had, marked stale.
	Failed  string
	NoData  bool
	Healthy bool
	// Problems are the report's, one line each.
	Problems []string
	Domains  []status.Domain
	Capture  *status.Capture
	Home     *status.Stream
	Regions  []regionView

	Topology  template.HTML
	LagChart  template.HTML
	ByteChart template.HTML
	RateChart template.HTML
	Timeline  template.HTML

	Conflicts     []conflictView
	DeadLetters   []status.DeadLetter
	Snapshots     []status.Snapshot
	SnapshotError string
	Stopped       []stoppedView
}

// regionView is one region's row.
type regionView struct {
	Name  string
	Color string
	Link  string
	Why   string
	// Mirror describes its copy of the stream; Applier its applier.
	Mirror, Applier string
	ApplierState    string
	Lag, Behind     string
	Rate            string
	Conflicts       int64 // in the last minute
	DeadLetters     uint64
	DBError         string
	Restore         string
}

// conflictView is one kind and decision of conflicts in one region.
type conflictView struct {
	Region     string
	Kind       string
	Decision   string
	LastMinute int64
	Total      int64
	Spark      template.HTML
}

// stoppedView is a stopped process and the last error it logged.
type stoppedView struct {
	What  string
	Since string
	Error string
}

// view builds what the page shows now.
func (c *Console) view(now time.Time) view {
	c.mu.RLock()
	rep, failed, samples := c.latest, c.failed, c.hist.all()
	c.mu.RUnlock()
	v := view{
		Source:   c.cfg.Status.Name,
		NATS:     stream.RedactURL(c.cfg.Status.NATS),
		Now:      now,
		Interval: c.cfg.Interval.Milliseconds(),
		Window:   shortDuration(c.cfg.Window),
		Stall:    c.cfg.Status.Stall,
		Failed:   failed,
		NoData:   rep == nil,
	}
	if rep == nil {
		return v
	}
	v.At, v.Healthy, v.Problems, v.Domains = rep.At, rep.Healthy && failed == "", rep.Problems, rep.Domains
	src := findSource(rep, c.cfg.Status.Name)
	if src == nil {
		src = &status.Source{Source: c.cfg.Status.Name}
	}
	v.Capture, v.Home = src.Capture, homeOf(src)
	names := regionNames(src)
	for _, s := range samples {
		for _, r := range s.Regions {
			if !slices.Contains(names, r.Region) {
				names = append(names, r.Region)
			}
		}
	}
	var last *Sample
	if len(samples) > 0 {
		last = &samples[len(samples)-1]
	}
	for i, name := range names {
		v.Regions = append(v.Regions, c.regionView(rep, src, name, palette[i%len(palette)], last))
	}
	v.DeadLetters, v.Snapshots, v.SnapshotError = src.DeadLetters, src.Snapshots, src.SnapshotError
	for _, t := range src.Targets {
		for _, k := range t.Conflicts {
			v.Conflicts = append(v.Conflicts, conflictView{Region: t.Region, Kind: k.Kind, Decision: k.Decision,
				LastMinute: k.PerMinute[len(k.PerMinute)-1], Total: k.Total, Spark: spark(k.PerMinute)})
		}
		if a := t.Applier; a != nil && (t.ApplierState == status.ApplierStopped || t.ApplierState == status.ApplierDown) {
			why := a.LastError
			if why == "" && t.ApplierState == status.ApplierStopped {
				why = "stopped cleanly (SIGTERM)"
			}
			if why == "" {
				why = fmt.Sprintf("no heartbeat for %.0fs: killed, or its host is gone", a.HeartbeatSeconds)
			}
			since := ""
			if a.StoppedAt != nil {
				since = a.StoppedAt.Local().Format(time.DateTime)
			}
			v.Stopped = append(v.Stopped, stoppedView{What: "applier of region " + t.Region + " (" + t.ApplierState + ")", Since: since, Error: why})
		}
	}
	for _, name := range names {
		if t := findTarget(src, name); t != nil && t.Applier != nil {
			continue // its own record says, above
		}
		if c := consumerOf(src, name); c != nil && c.State == status.ConsumerStopped {
			last := "never"
			if c.LastActiveSeconds != nil {
				last = fmt.Sprintf("%.0fs ago", *c.LastActiveSeconds)
			}
			v.Stopped = append(v.Stopped, stoppedView{What: "applier of region " + name + " (consumer " + c.Name + ")",
				Error: fmt.Sprintf("no pull request waiting, last active %s, %d messages behind: pgjet-apply --region %s is not running (its log says why)", last, c.Lag, name)})
		}
	}
	if cp := src.Capture; cp != nil && !cp.Active && cp.Error == "" {
		v.Stopped = append(v.Stopped, stoppedView{What: "capture (slot " + cp.Slot + ")", Error: "no client streams from its slot: pgjet-capture is not running (its log says why)"})
	}
	v.Topology = topology(v)
	v.LagChart, v.ByteChart, v.RateChart, v.Timeline = charts(samples, v.Regions, now, c.cfg.Window)
	return v
}

// palette colours the regions, in order, in every chart.
var palette = []string{"#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#ff7f0e"}

func (c *Console) regionView(rep *status.Report, src *status.Source, name, color string, last *Sample) regionView {
	rv := regionView{Name: name, Color: color, Lag: "-", Behind: "-", Rate: "-", Mirror: "-", Applier: "-"}
	rv.Link, rv.Why = linkState(rep, src, name, c.cfg.Status.Stall)
	if !slices.Contains(regionNames(src), name) {
		rv.Link, rv.Why = linkUnknown, "not in the newest report (its domain and database did not answer)"
	}
	if m := mirrorOf(src, name); m != nil {
		rv.Mirror = fmt.Sprintf("seq %d", m.LastSeq)
		if mm := m.Mirror; mm != nil && mm.LastContactSeconds != nil {
			rv.Mirror += fmt.Sprintf(", hub %.1fs ago", *mm.LastContactSeconds)
		}
	} else if err := domainError(rep, name); err != "" {
		rv.Mirror = "domain unreachable"
	}
	for _, d := range src.DeadLetters {
		if d.Region == name {
			rv.DeadLetters += d.Messages
		}
	}
	if t := findTarget(src, name); t != nil {
		if t.Error != "" {
			rv.DBError = t.Error
		} else {
			rv.Lag = "0s"
			if t.WaitingSeconds != nil {
				rv.Lag = fmt.Sprintf("%.1fs", *t.WaitingSeconds)
			}
			rv.Behind = behind(t)
		}
		rv.ApplierState = t.ApplierState
		for _, k := range t.Conflicts {
			rv.Conflicts += k.PerMinute[len(k.PerMinute)-1]
		}
		if r := t.Restore; r != nil {
			rv.Restore = "built from snapshot " + r.Snapshot
			if !r.Done {
				rv.Restore = "being built from snapshot " + r.Snapshot
			}
		}
	}
	if rv.ApplierState != "" {
		rv.Applier = rv.ApplierState
	} else if c := consumerOf(src, name); c != nil && c.State != "" {
		// The database does not say (no --db-region, or it does not
		// answer): the consumer does.
		rv.ApplierState = consumerApplier(c)
		rv.Applier = "consumer " + c.State
		if c.Lag > 0 {
			rv.Applier += fmt.Sprintf(", %d behind", c.Lag)
		}
	}
	if rs := last.region(name); rs != nil && rs.AppliedPerSecond != nil {
		rv.Rate = fmt.Sprintf("%.1f", *rs.AppliedPerSecond)
	}
	return rv
}

// shortDuration renders 15m0s as 15m, 1h0m0s as 1h.
func shortDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// funcs are the template's helpers.
var funcs = template.FuncMap{
	"clock": func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format(time.DateTime)
	},
	"hms":   func(t time.Time) string { return t.Local().Format(time.TimeOnly) },
	"bytes": func(n int64) string { return status.HumanBytes(n) },
	"ago": func(now time.Time, t *time.Time) string {
		if t == nil {
			return "-"
		}
		return fmt.Sprintf("%.0fs ago", max(now.Sub(*t).Seconds(), 0))
	},
	"join": strings.Join,
	"or": func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	},
	"class": func(s string) string { return strings.ReplaceAll(s, " ", "-") },
}
