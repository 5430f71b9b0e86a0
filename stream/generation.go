package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A source's stream is a sequence of generations, one per primary: the
// first is the original primary's, and each promotion of a region's
// replica (pgjet promote) begins the next with a generation marker. The
// LSNs of two generations are positions in two different WALs and are
// never compared: a consumer that passes a marker compares commit LSNs
// with the new generation's start from then on.

// PrefixGeneration is the logical-message prefix of a generation marker.
// The marker travels as a KindMessage envelope, so that consumers that do
// not act on it (pgjet tail, other readers of the stream) pass over it as
// they pass over any logical message.
const PrefixGeneration = "pgjet.generation"

// GenerationSubject carries a source's generation markers: a subject of
// their own, so the newest is read with one request (LastGeneration).
func GenerationSubject(source string) string { return "pgjet." + source + ".gen" }

// Generation is the content of a generation marker: where a new
// generation of the source begins and where the previous one ended.
type Generation struct {
	// Generation numbers the generation that begins (the first primary's
	// is 1, so a marker's is 2 or more).
	Generation int `json:"generation"`
	// System, Timeline, Database and Slot name the new primary: its
	// system identifier (decimal), timeline, database and the slot its
	// capture streams from. The marker's message carries them in its
	// headers too (HeaderSystem etc.), as capture's messages do.
	System   string `json:"system"`
	Timeline int32  `json:"timeline"`
	Database string `json:"database"`
	Slot     string `json:"slot"`
	// Start is the new primary's slot's consistent point: its
	// transactions in this generation commit after it. LSNs are numbers
	// in the JSON, as in snapshot manifests.
	Start LSN `json:"start_lsn"`
	// PrevSeq is the stream sequence of the previous generation's last
	// message, and PrevLSN the commit LSN of the last transaction of it
	// that the new primary applied: the promotion point.
	PrevSeq uint64 `json:"prev_seq"`
	PrevLSN LSN    `json:"prev_lsn"`
	// PrevTime is that transaction's source commit time.
	PrevTime time.Time `json:"prev_commit_time"`
	// Region is the region whose replica was promoted.
	Region string `json:"region"`
	// Domain is the JetStream domain of the stream the generation is
	// published to, and PrevDomain that of the previous generation's
	// stream when the stream moved (a failover promotes the region's
	// mirror; "" when it stayed).
	Domain     string `json:"domain,omitempty"`
	PrevDomain string `json:"prev_domain,omitempty"`
	// Planned is true for a switchover (the old primary fenced, nothing
	// lost) and false for a failover.
	Planned bool `json:"planned"`
	// PromotedAt is when the marker was written (the promoting host's
	// clock).
	PromotedAt time.Time `json:"promoted_at"`
}

// Envelope returns the marker of g for source, as capture's messages are
// shaped: a KindMessage envelope at the new generation's start LSN.
func (g Generation) Envelope(source string) (*Envelope, error) {
	content, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encode generation marker: %w", err)
	}
	return &Envelope{Kind: KindMessage, Source: source, CommitLSN: g.Start, EndLSN: g.Start, CommitTime: g.PromotedAt,
		Flags:   FlagFirst | FlagLast,
		Changes: []Change{{Op: OpMessage, Prefix: PrefixGeneration, Content: content}}}, nil
}

// MsgID is the Nats-Msg-Id of the marker of g: one per generation, so a
// marker published twice (a retried promote) is stored once.
func (g Generation) MsgID(source string) string {
	return fmt.Sprintf("%s:gen:%d", source, g.Generation)
}

// Header returns the headers of the marker's message: those capture sets
// on its messages, naming the new primary.
func (g Generation) Header(prevID string) nats.Header {
	h := nats.Header{HeaderSystem: {g.System}, HeaderTimeline: {fmt.Sprint(g.Timeline)},
		HeaderDatabase: {g.Database}, HeaderSlot: {g.Slot}}
	if prevID != "" {
		h.Set(HeaderPrev, prevID)
	}
	return h
}

// GenerationOf returns the generation env marks, ok false when env is no
// generation marker. A marker whose content does not decode is an error:
// passing over it would compare the new generation's LSNs with the old
// one's.
func GenerationOf(env *Envelope) (g Generation, ok bool, err error) {
	if env.Kind != KindMessage || len(env.Changes) != 1 || env.Changes[0].Prefix != PrefixGeneration {
		return Generation{}, false, nil
	}
	if err := json.Unmarshal(env.Changes[0].Content, &g); err != nil {
		return Generation{}, true, fmt.Errorf("generation marker at LSN %s does not decode: %w", env.CommitLSN, err)
	}
	if g.Generation < 2 || g.System == "" || g.Start == 0 {
		return Generation{}, true, fmt.Errorf("generation marker at LSN %s is incomplete (generation %d, system %q, start %s)", env.CommitLSN, g.Generation, g.System, g.Start)
	}
	return g, true, nil
}

// LastGeneration returns the newest generation marker of source in st and
// its stream sequence, or nil when the stream holds none (the source is in
// its first generation).
func LastGeneration(ctx context.Context, st jetstream.Stream, source string) (*Generation, uint64, error) {
	m, err := st.GetLastMsgForSubject(ctx, GenerationSubject(source))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read the last generation marker of %s: %w", source, err)
	}
	envs, err := DecodeMessage(m.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("generation marker at sequence %d: %w", m.Sequence, err)
	}
	g, ok, err := GenerationOf(envs[0])
	if err != nil {
		return nil, 0, fmt.Errorf("sequence %d: %w", m.Sequence, err)
	}
	if !ok || envs[0].Source != source {
		return nil, 0, fmt.Errorf("message at sequence %d on %s is no generation marker of source %s", m.Sequence, GenerationSubject(source), source)
	}
	return &g, m.Sequence, nil
}

// RetiredSubjects are the subjects the streams of a source's old home take
// after a failover moved them elsewhere (see RetireOldHome): none of the
// source's, so that they neither store nor answer the new home's
// publishes once their server is back, while they keep the old
// generation's messages (those past the promotion point never reached the
// new primary). kind tells the change stream ("tx") from the snapshot
// stream ("snap").
func RetiredSubjects(source string, generation int, kind string) []string {
	return []string{fmt.Sprintf("pgjetretired.%s.g%d.%s.>", source, generation, kind)}
}

// RetireOldHome gives the change and snapshot streams of the previous
// generation's home (domain g.PrevDomain) RetiredSubjects, when they are
// reachable and still take the source's subjects: their server, back after
// a failover, would otherwise answer every publish of the new home's
// capture with an error (the change stream's last message id is the old
// generation's) before the new home's stream acks it. It reports whether
// both are retired (or gone); false with a nil error means the old home
// cannot be reached yet.
func RetireOldHome(ctx context.Context, nc *nats.Conn, source string, g *Generation) (retired bool, err error) {
	if g == nil || g.PrevDomain == "" || g.PrevDomain == g.Domain {
		return true, nil
	}
	js, err := NewJetStream(nc, g.PrevDomain)
	if err != nil {
		return false, err
	}
	for _, st := range []struct{ name, kind string }{{StreamName(source), "tx"}, {SnapshotStreamName(source), "snap"}} {
		want := []string{"pgjet." + source + ".>"}
		if st.kind == "snap" {
			want = SnapshotStreamConfig(source, 0).Subjects
		}
		old, err := js.Stream(ctx, st.name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			continue
		case err != nil:
			return false, nil // its domain does not answer (yet)
		}
		cfg := old.CachedInfo().Config
		if cfg.Mirror != nil || len(cfg.Sources) > 0 || !slices.Equal(cfg.Subjects, want) {
			continue
		}
		cfg.Subjects = RetiredSubjects(source, g.Generation-1, st.kind)
		cfg.Description = fmt.Sprintf("pgjet: generation %d of source %s, retired when region %s was promoted", g.Generation-1, source, g.Region)
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return false, fmt.Errorf("retire stream %s of domain %s: %w", st.name, g.PrevDomain, err)
		}
	}
	return true, nil
}
