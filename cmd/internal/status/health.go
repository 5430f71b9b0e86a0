package status

// What `pgjet status` concludes: the health of capture, mirrors, appliers
// and targets, and the problems that make it exit 1. A status that shows a
// healthy pipeline must be one: a region is compared with the source's
// own stream (never with its own copy, which a cut leaves stale), a
// stopped applier is told from a slow one, and dead letters count.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/schema/pgerr"
	"github.com/pgjet/pgjet/stream"
)

// Consumer and target states.
const (
	stateWaiting    = "waiting"
	stateApplying   = "applying"
	stateStopped    = "stopped"
	stateCaughtUp   = "caught up"
	stateCatchingUp = "catching up"
	stateStalled    = "stalled"
	stateCutOff     = "cut off"
	stateUnknown    = "unknown"
)

// Capture is capture's slot on the source (--source-db).
type Capture struct {
	Slot  string `json:"slot"`
	Error string `json:"error,omitempty"`
	// Missing is true when the source has no such slot.
	Missing bool `json:"missing,omitempty"`
	// Active is true while a client (pgjet-capture) streams from the slot.
	Active    bool   `json:"active"`
	ActivePID *int32 `json:"active_pid,omitempty"`
	// WALStatus is the slot's wal_status: "lost" means it was invalidated.
	WALStatus    string `json:"wal_status,omitempty"`
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	WALLSN       string `json:"wal_lsn,omitempty"`
	// UnconfirmedBytes is the source WAL written after the slot's
	// confirmed position: what capture has not yet published and had
	// acknowledged.
	UnconfirmedBytes *int64 `json:"unconfirmed_bytes,omitempty"`
	// ReplySeconds is the time since the walsender last heard from
	// capture (pg_stat_replication.reply_time); null when unknown.
	ReplySeconds *float64 `json:"reply_seconds,omitempty"`

	confirmed stream.LSN
}

// captureStatus reads the slot of capture on the source at url.
func captureStatus(ctx context.Context, url, slot string) *Capture {
	cr := &Capture{Slot: slot}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		cr.Error = pgerr.ClassifyConnect(url, err).Error()
		return cr
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var confirmed, wal *string
	var walStatus *string
	// pg_current_wal_lsn fails on a standby: the source is then not one
	// capture can stream from, and the slot's own columns still say so.
	err = conn.QueryRow(ctx, `SELECT s.active, s.active_pid, s.wal_status, s.confirmed_flush_lsn::text,
			CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
			CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint END,
			(SELECT extract(epoch FROM clock_timestamp() - r.reply_time)::float8 FROM pg_stat_replication r WHERE r.pid = s.active_pid)
		FROM pg_replication_slots s WHERE s.slot_name = $1`, slot).
		Scan(&cr.Active, &cr.ActivePID, &walStatus, &confirmed, &wal, &cr.UnconfirmedBytes, &cr.ReplySeconds)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		cr.Missing = true
		return cr
	case err != nil:
		cr.Error = fmt.Sprintf("read slot %s: %v", slot, err)
		return cr
	}
	if walStatus != nil {
		cr.WALStatus = *walStatus
	}
	if confirmed != nil {
		cr.ConfirmedLSN = *confirmed
		cr.confirmed, _ = stream.ParseLSN(*confirmed)
	}
	if wal != nil {
		cr.WALLSN = *wal
	}
	if cr.UnconfirmedBytes != nil && *cr.UnconfirmedBytes < 0 {
		*cr.UnconfirmedBytes = 0
	}
	return cr
}

// DeadLetter is one region's dead-letter stream.
type DeadLetter struct {
	Source   string     `json:"source"`
	Region   string     `json:"region"`
	Domain   string     `json:"domain"`
	Stream   string     `json:"stream"`
	Messages uint64     `json:"messages"`
	LastTime *time.Time `json:"last_time,omitempty"`
	// LastError is why the newest dead letter was set aside
	// (its apply.HeaderDLQError).
	LastError string `json:"last_error,omitempty"`
}

// deadLetterStatus lists the dead-letter streams of source ("" = every
// source) in one domain, found by their subjects pgjetdlq.<source>.<region>.
func deadLetterStatus(ctx context.Context, js jetstream.JetStream, domain, source string) ([]DeadLetter, error) {
	subject := "pgjetdlq.>"
	if source != "" {
		subject = apply.DeadLetterSubject(source, "*")
	}
	var out []DeadLetter
	l := js.ListStreams(ctx, jetstream.WithStreamListSubject(subject))
	for info := range l.Info() {
		for _, subj := range info.Config.Subjects {
			parts := strings.Split(subj, ".")
			if len(parts) != 3 || parts[0] != "pgjetdlq" {
				continue
			}
			d := DeadLetter{Source: parts[1], Region: parts[2], Domain: domain, Stream: info.Config.Name, Messages: info.State.Msgs}
			if info.State.Msgs > 0 {
				t := info.State.LastTime.UTC()
				d.LastTime = &t
				if st, err := js.Stream(ctx, info.Config.Name); err == nil {
					if m, err := st.GetLastMsgForSubject(ctx, subj); err == nil {
						d.LastError = m.Header.Get(apply.HeaderDLQError)
					}
				}
			}
			out = append(out, d)
		}
	}
	if err := l.Err(); err != nil {
		return out, fmt.Errorf("list dead-letter streams: %w", err)
	}
	return out, nil
}

// consumerState says whether an applier pulls from its consumer. A running
// applier always keeps a pull request waiting on the server, and a busy
// one receives messages or acknowledges them; a consumer with neither for
// the stall timeout has no applier, however far behind it is.
func consumerState(cr *Consumer, ci *jetstream.ConsumerInfo, stall time.Duration) {
	cr.Waiting = ci.NumWaiting
	now := ci.TimeStamp
	if now.IsZero() {
		now = time.Now()
	}
	var last *time.Time
	for _, t := range []*time.Time{ci.Delivered.Last, ci.AckFloor.Last} {
		if t != nil && (last == nil || t.After(*last)) {
			last = t
		}
	}
	active := false
	if last != nil {
		s := max(now.Sub(*last).Seconds(), 0)
		cr.LastActiveSeconds = &s
		active = s <= stall.Seconds()
	}
	switch {
	case ci.NumWaiting == 0 && !active:
		cr.State = stateStopped
	case ci.NumPending > 0 || ci.NumAckPending > 0:
		cr.State = stateApplying
	default:
		cr.State = stateWaiting
	}
}

// homeStream is the stream capture publishes to, among a source's streams;
// nil when its domain did not answer.
func homeStream(streams []Stream) *Stream {
	for i := range streams {
		if streams[i].Role == "home" {
			return &streams[i]
		}
	}
	return nil
}

// oldestUnapplied is the age of the first message of the home stream after
// stream sequence seq (mirrors keep their origin's sequences): how long
// the oldest message a region has not applied has waited. nil when the
// stream does not say.
func oldestUnapplied(ctx context.Context, nc *nats.Conn, home *Stream, seq uint64, now time.Time) *float64 {
	zero := 0.0
	if seq >= home.LastSeq {
		return &zero
	}
	js, err := stream.NewJetStream(nc, home.asked)
	if err != nil {
		return nil
	}
	st, err := js.Stream(ctx, home.Stream)
	if err != nil {
		return nil
	}
	m, err := st.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(">"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return &zero
	}
	if err != nil {
		return nil
	}
	age := max(now.Sub(m.Time).Seconds(), 0)
	return &age
}

// regionCutOff says why region's copy of the stream cannot receive new
// messages ("" when nothing says so): its mirror is in error or has not
// heard from its origin within the stall timeout, or the domain named
// after the region does not answer.
func regionCutOff(s *Source, rep *Report, region string, stall time.Duration) string {
	for _, st := range s.Streams {
		for _, c := range st.Consumers {
			if c.Region != region {
				continue
			}
			m := st.Mirror
			switch {
			case m == nil:
				return ""
			case m.Error != "":
				return fmt.Sprintf("its mirror in domain %s reports an error", st.Domain)
			case m.LastContactSeconds == nil:
				return fmt.Sprintf("its mirror in domain %s has never heard from domain %s", st.Domain, m.Upstream)
			case *m.LastContactSeconds > stall.Seconds():
				return fmt.Sprintf("its mirror in domain %s has not heard from domain %s for %.1fs", st.Domain, m.Upstream, *m.LastContactSeconds)
			}
			return ""
		}
	}
	for _, d := range rep.Domains {
		if d.Domain == region && d.Error != "" {
			return fmt.Sprintf("domain %s does not answer", region)
		}
	}
	return ""
}

// fillTargetLag compares a target's position with the newest transaction
// of the source: the home stream's, never a mirror's (a cut-off region's
// mirror is as stale as the region), or, when the home stream did not
// answer, the position capture's slot confirmed. A target is caught up
// only when nothing of the source's stream has waited for it longer than
// stall and its region's copy of the stream is not cut off.
func fillTargetLag(tr *Target, s *Source, rep *Report, stall time.Duration) {
	if tr.Error != "" || tr.EndLSN == "" {
		return
	}
	end, err := stream.ParseLSN(tr.EndLSN)
	if err != nil {
		return
	}
	known, caught := false, false
	if home := homeStream(s.Streams); home != nil {
		behind := uint64(0)
		if home.lastTxn > end {
			behind = uint64(home.lastTxn - end)
		}
		tr.BehindBytes = &behind
		known = true
		caught = behind == 0 && (tr.WaitingSeconds == nil || *tr.WaitingSeconds <= stall.Seconds())
	} else if c := s.Capture; c != nil && c.confirmed > 0 {
		reached := end
		if l, err := stream.ParseLSN(tr.SourceLSN); err == nil {
			reached = max(reached, l)
		}
		behind := uint64(0)
		if c.confirmed > reached {
			behind = uint64(c.confirmed - reached)
		}
		tr.BehindBytes = &behind
		known, caught = true, behind == 0
	}
	cut := regionCutOff(s, rep, tr.Region, stall)
	if cut != "" {
		caught = false
	}
	if known {
		tr.CaughtUp = &caught
	}
	committing := tr.appliedAgo != nil && *tr.appliedAgo <= stall.Seconds()
	switch {
	case tr.WaitingSeconds != nil && *tr.WaitingSeconds > stall.Seconds() && !committing:
		tr.State = stateStalled
	case cut != "":
		tr.State = stateCutOff
	case !known:
		tr.State = stateUnknown
	case caught:
		tr.State = stateCaughtUp
	default:
		tr.State = stateCatchingUp
	}
}

// problems lists, one line each, everything that keeps the pipeline from
// being healthy; an empty list is exit status 0.
func problems(rep *Report, stall time.Duration) []string {
	out := []string{}
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, d := range rep.Domains {
		if d.Error != "" {
			add("domain %s: %s", orDash(d.Domain), d.Error)
		}
	}
	for _, t := range rep.DBErrors {
		add("database of region %s: %s", t.Region, t.Error)
	}
	if len(rep.Sources) == 0 {
		add("no pgjet streams (PGJET_*) in the domains asked")
	}
	for i := range rep.Sources {
		s := &rep.Sources[i]
		captureProblems(s, rep.At, stall, add)
		down := applierProblems(s, add)
		for _, st := range s.Streams {
			streamProblems(st, stall, down, add)
		}
		for _, d := range s.DeadLetters {
			if d.Messages == 0 {
				continue
			}
			msgs := "messages"
			if d.Messages == 1 {
				msgs = "message"
			}
			add("region %s set aside %d %s in %s (domain %s), the newest %s: %s; the replica lacks their rows: read them with `nats stream view %s`, then purge the stream once they are handled",
				d.Region, d.Messages, msgs, d.Stream, orDash(d.Domain), ago(rep.At, d.LastTime), orDash(d.LastError), d.Stream)
		}
		for _, t := range s.Targets {
			switch {
			case t.Error != "":
				add("database of region %s: %s", t.Region, t.Error)
			case t.State == stateStalled && !down[t.Region]:
				why := regionCutOff(s, rep, t.Region, stall)
				if why == "" {
					why = "its applier is stopped or failing (its log says why)"
				}
				add("region %s applies nothing: the oldest message of %s it has not applied has waited %.1fs and it last committed %s; %s",
					t.Region, stream.StreamName(s.Source), *t.WaitingSeconds, agoSeconds(t.appliedAgo), why)
			}
		}
	}
	return out
}

// captureProblems reports a capture that does not publish: its slot on
// the source (--source-db) has no client, or the source's stream has had
// no message, not even a heartbeat, within the stall timeout.
func captureProblems(s *Source, now time.Time, stall time.Duration, add func(string, ...any)) {
	if len(s.Streams) == 0 {
		add("source %s: no stream %s in the domains asked", s.Source, stream.StreamName(s.Source))
	} else if homeStream(s.Streams) == nil {
		add("source %s: the stream capture publishes to did not answer (only mirrors did): regions cannot be compared with the source", s.Source)
	}
	if home := homeStream(s.Streams); home != nil {
		if home.LastTime == nil || now.Sub(*home.LastTime) > stall {
			add("source %s: the newest message of %s (domain %s) is %s, and capture publishes a heartbeat every --heartbeat (10s by default): pgjet-capture is down or cannot publish",
				s.Source, home.Stream, orDash(home.Domain), ago(now, home.LastTime))
		}
	}
	c := s.Capture
	switch {
	case c == nil:
	case c.Error != "":
		add("source database: %s", c.Error)
	case c.Missing:
		add("source %s: slot %s is missing on the source database: pgjet-capture has not started there, or the slot was dropped (then every region must be rebuilt)", s.Source, c.Slot)
	case c.WALStatus == "lost":
		add("source %s: slot %s was invalidated (wal_status lost, max_slot_wal_keep_size): the changes since are gone; start a new stream and rebuild every region", s.Source, c.Slot)
	case !c.Active:
		add("source %s: capture is down: no client streams from slot %s on the source (start pgjet-capture; meanwhile the slot keeps %s of WAL it has not confirmed)",
			s.Source, c.Slot, HumanBytes(deref(c.UnconfirmedBytes)))
	case c.ReplySeconds != nil && *c.ReplySeconds > stall.Seconds():
		add("source %s: capture is stalled: the walsender of slot %s has not heard from pgjet-capture for %.1fs (%s of WAL not confirmed)",
			s.Source, c.Slot, *c.ReplySeconds, HumanBytes(deref(c.UnconfirmedBytes)))
	}
}

// streamProblems reports a copy of the stream that has lost messages or
// stopped receiving them, and appliers that stopped.
// Regions in down are left out: their applier's own record said why.
func streamProblems(st Stream, stall time.Duration, down map[string]bool, add func(string, ...any)) {
	where := fmt.Sprintf("%s in domain %s", st.Stream, orDash(st.Domain))
	if st.Gap != "" {
		add("%s: %s", where, st.Gap)
	}
	if m := st.Mirror; m != nil {
		switch {
		case m.Error != "":
			add("mirror %s: error copying from domain %s: %s", where, m.Upstream, m.Error)
		case m.LastContactSeconds == nil || *m.LastContactSeconds > stall.Seconds():
			add("mirror %s last heard from domain %s %s: the link between them is cut (leafnode down) or %s is down; the region applies nothing new meanwhile",
				where, m.Upstream, agoSeconds(m.LastContactSeconds), m.Upstream)
		}
	}
	for _, c := range st.Consumers {
		if c.Gap != "" {
			add("consumer %s of %s: %s", c.Name, where, c.Gap)
		}
		if c.State == stateStopped && !down[c.Region] {
			add("applier of region %s is not running: consumer %s of %s has no pull request waiting and last delivered or was acknowledged %s (start pgjet-apply --region %s; if the region is gone for good, delete the consumer)",
				c.Region, c.Name, where, agoSeconds(c.LastActiveSeconds), c.Region)
		}
	}
}

// agoSeconds renders seconds since something happened; nil is never.
func agoSeconds(s *float64) string {
	if s == nil {
		return "never"
	}
	return fmt.Sprintf("%.1fs ago", *s)
}

func deref(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

// describe is the capture line of the status for people.
func (c *Capture) describe() string {
	switch {
	case c.Error != "":
		return "error: " + c.Error
	case c.Missing:
		return "missing"
	}
	state := "inactive (no pgjet-capture streams from it)"
	if c.Active {
		state = "active"
		if c.ActivePID != nil {
			state = fmt.Sprintf("active (walsender pid %d)", *c.ActivePID)
		}
	}
	out := fmt.Sprintf("%s, confirmed %s, source WAL at %s", state, orDash(c.ConfirmedLSN), orDash(c.WALLSN))
	if c.UnconfirmedBytes != nil {
		out += fmt.Sprintf(" (%s not confirmed)", HumanBytes(*c.UnconfirmedBytes))
	}
	if c.ReplySeconds != nil {
		out += fmt.Sprintf(", last reply %.1fs ago", *c.ReplySeconds)
	}
	if c.WALStatus != "" {
		out += ", wal_status " + c.WALStatus
	}
	return out
}
