package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/stream"
)

// tailFlags are the flags of `pgjet tail`.
type tailFlags struct {
	nats    string
	name    string
	domain  string
	fromSeq uint64
	last    uint64
	follow  bool
	auth    cli.NATSFlags
	// deadLetters reads region's dead-letter stream instead of the
	// change stream.
	deadLetters bool
	region      string
	// set when --last was given (--last 0 means "only new messages").
	lastSet bool
}

// tailIdle is how long tail waits for a message before it checks whether
// a --follow=false run has reached its end.
const tailIdle = time.Second

func runTail(args []string) int {
	var f tailFlags
	fs := pflag.NewFlagSet("pgjet tail", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet tail prints a source's change stream (or a region's dead letters of it)\n"+
			"as JSON lines, one per message, through an ordered consumer that leaves no state on the server.\n\n"+
			"Usage:\n  pgjet tail --nats URL --name SOURCE [--domain D] [--from-seq N | --last N] [--follow=false]\n"+
			"  pgjet tail --nats URL --name SOURCE --dead-letters --region REGION [...]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	fs.StringVar(&f.nats, "nats", "", "NATS URL, e.g. nats://localhost:4222")
	fs.StringVar(&f.name, "name", "", "source name given to pgjet-capture: the stream is PGJET_<name>")
	fs.StringVar(&f.domain, "domain", "", "JetStream domain to read in, e.g. a region's to read its mirror (default: the connected server's)")
	fs.Uint64Var(&f.fromSeq, "from-seq", 0, "start at this stream sequence (default: the first message)")
	fs.Uint64Var(&f.last, "last", 0, "start with the last N messages (0: only messages published from now on)")
	fs.BoolVar(&f.follow, "follow", true, "keep printing new messages until interrupted; false stops at the stream's last message as of start")
	fs.BoolVar(&f.deadLetters, "dead-letters", false, "print the dead letters of --region (stream PGJET_DLQ_<name>_<region>, in that applier's domain): each line carries \"dead_letter\" (the original stream, sequence and subject, and the error) and the message, decoded")
	fs.StringVar(&f.region, "region", "", "with --dead-letters: the --region of the pgjet-apply that set the messages aside")
	f.auth.Register(fs)
	cli.Parse(fs, args)
	f.lastSet = fs.Changed("last") // also when set from PGJET_LAST

	if err := errors.Join(natsRequired(f.nats), cli.CheckName(f.name)); err != nil {
		return cli.BadUsage("pgjet tail", err)
	}
	if f.deadLetters && f.region == "" {
		fmt.Fprintln(os.Stderr, "pgjet tail: --dead-letters needs --region, the --region of the pgjet-apply whose dead letters to print")
		return 2
	}
	if f.region != "" && !f.deadLetters {
		fmt.Fprintln(os.Stderr, "pgjet tail: --region selects whose dead letters to print; give --dead-letters too, or leave --region out to print the change stream")
		return 2
	}
	if f.lastSet && f.fromSeq > 0 {
		fmt.Fprintln(os.Stderr, "pgjet tail: --from-seq and --last exclude each other; give one")
		return 2
	}

	// Only reconnect warnings reach this logger; the output is the JSON.
	log := zerolog.New(cli.ConsoleWriter()).Level(zerolog.WarnLevel).With().Timestamp().Str("cmd", "pgjet tail").Logger()
	ctx, stop := cli.SignalContext()
	defer stop()
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	err := tail(ctx, f, out, log)
	if ferr := out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write output: %w", ferr)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "pgjet tail: %v\n", err)
		return 1
	}
	return 0
}

// tail prints the stream until ctx ends or, without --follow, until the
// last message as of start has been printed.
func tail(ctx context.Context, f tailFlags, out *bufio.Writer, log zerolog.Logger) (err error) {
	pr := &tailPrinter{w: out}
	defer func() {
		// A change still waiting for pieces is printed as it is.
		if ferr := pr.flush(); err == nil && ferr != nil {
			err = fmt.Errorf("write output: %w", ferr)
		}
	}()
	auth, err := f.auth.Options()
	if err != nil {
		return err
	}
	nc, err := stream.Connect(f.nats, "pgjet tail "+f.name, auth, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, f.domain)
	if err != nil {
		return fmt.Errorf("open JetStream: %w", err)
	}
	name := stream.StreamName(f.name)
	where := "the JetStream domain of " + stream.RedactURL(f.nats)
	if f.domain != "" {
		where = "JetStream domain " + strconv.Quote(f.domain)
	}
	hint := fmt.Sprintf("has pgjet-capture --name %s run against it? (a region holds a mirror: pass --domain REGION)", f.name)
	if f.deadLetters {
		name = apply.DeadLetterStream(f.name, f.region)
		hint = fmt.Sprintf("has pgjet-apply --name %s --region %s --on-bad-message dead-letter set a message aside there? (its dead letters are in its own domain: pass --domain)", f.name, f.region)
	}

	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(lctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s not found in %s: %s", name, where, hint)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("JetStream is not enabled on %s", stream.RedactURL(f.nats))
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("look up stream %s: nothing answers for %s (JetStream disabled, or a wrong --domain?): %w", name, where, err)
	case err != nil:
		return fmt.Errorf("look up stream %s in %s: %w", name, where, err)
	}
	state := st.CachedInfo().State

	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case f.fromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.fromSeq
	case f.lastSet && f.last == 0:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case f.lastSet && state.LastSeq > 0:
		start := uint64(1)
		if state.LastSeq >= f.last {
			start = state.LastSeq - f.last + 1
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(start, state.FirstSeq)
	}

	// end is the last sequence to print without --follow.
	end := state.LastSeq
	if !f.follow {
		if state.Msgs == 0 || cfg.DeliverPolicy == jetstream.DeliverNewPolicy ||
			(cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && cfg.OptStartSeq > end) {
			return nil
		}
	}

	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("create ordered consumer on %s: %w", name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume %s: %w", name, err)
	}
	defer func() {
		it.Stop()
		// The server would drop the ephemeral consumer after its inactive
		// threshold anyway; deleting it now leaves the stream as it was.
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = st.DeleteConsumer(dctx, ci.Name)
		}
	}()

	var printed uint64 // stream sequence of the last message printed
	for {
		// Following, Next blocks until a message or the end: its own
		// heartbeat check lets the ordered consumer recover from a lost
		// server-side consumer. Otherwise it wakes up to see whether the
		// rest of the range was deleted meanwhile.
		nctx, ncancel := ctx, context.CancelFunc(func() {})
		if !f.follow {
			nctx, ncancel = context.WithTimeout(ctx, tailIdle)
		}
		m, err := it.Next(jetstream.NextContext(nctx))
		ncancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if f.follow || !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("consume %s: %w", name, err)
			}
			// Idle: done when the server has nothing more for us (the
			// rest up to end was deleted) and nothing is buffered here.
			done, err := drained(ctx, cons, printed)
			if err != nil || done {
				return err
			}
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read metadata of a message on %s: %w", name, err)
		}
		seq := md.Sequence.Stream
		if !f.follow && seq > end {
			return nil
		}
		var dead json.RawMessage
		if f.deadLetters {
			dead = deadLetterJSON(m.Headers())
		}
		if err := pr.letter(seq, m.Subject(), m.Data(), dead); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		printed = seq
		if !f.follow && (seq >= end || md.NumPending == 0) {
			return nil
		}
		if md.NumPending == 0 {
			// Caught up: show what we have before waiting for more.
			if err := out.Flush(); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
	}
}

// drained reports whether the ordered consumer has delivered everything the
// stream holds and tail has printed all of it.
func drained(ctx context.Context, cons jetstream.Consumer, printed uint64) (bool, error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if errors.Is(err, jetstream.ErrOrderedConsumerNotCreated) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil // being (re)created: look again later
	}
	if err != nil {
		if ctx.Err() != nil {
			return true, nil
		}
		return false, fmt.Errorf("read consumer info: %w", err)
	}
	return info.NumPending == 0 && info.Delivered.Stream <= printed, nil
}

// tailError is the line printed for a message tail cannot render.
type tailError struct {
	StreamSeq  uint64          `json:"stream_seq"`
	DeadLetter json.RawMessage `json:"dead_letter,omitempty"`
	Error      string          `json:"error"`
	Subject    string          `json:"subject"`
	// Data is a dead letter's message (base64), which may be all a person
	// has to go on when it does not decode.
	Data []byte `json:"data,omitempty"`
}

// deadLetter is what pgjet-apply's headers say of a dead letter: where
// the message was (see apply.HeaderDLQStream and the others) and why it
// was set aside.
type deadLetter struct {
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject,omitempty"`
	Error    string `json:"error"`
	Region   string `json:"region,omitempty"`
	MsgID    string `json:"msg_id,omitempty"`
}

// deadLetterJSON renders the headers of a dead letter as the object
// printed under "dead_letter".
func deadLetterJSON(h nats.Header) json.RawMessage {
	d := deadLetter{
		Stream:  h.Get(apply.HeaderDLQStream),
		Subject: h.Get(apply.HeaderDLQSubject),
		Error:   h.Get(apply.HeaderDLQError),
		Region:  h.Get(apply.HeaderDLQRegion),
		MsgID:   h.Get(apply.HeaderDLQMsgID),
	}
	// pgjet-apply writes the sequence; one that is not a number stays 0.
	d.Sequence, _ = strconv.ParseUint(h.Get(apply.HeaderDLQSequence), 10, 64)
	out, _ := json.Marshal(d) // strings and a number: cannot fail
	return out
}

// tailPrinter prints messages as JSON lines, one per envelope. A change
// whose values travel in pieces is printed whole: the line of its chunk
// waits for the piece chunks, whose own lines (without their bytes)
// follow it. tail holds one such change at a time.
type tailPrinter struct {
	w io.Writer
	// held is the change being put back together, env the chunk that
	// carried it (at stream sequence seq), pieces the lines of the pieces
	// that came since.
	held   *stream.Pieced
	env    *stream.Envelope
	seq    uint64
	pieces []byte
	// dead is the held chunk's "dead_letter" object, nil outside
	// --dead-letters.
	dead json.RawMessage
}

// message prints the message at seq, or holds it while it is a piece of
// a change being put back together.
func (p *tailPrinter) message(seq uint64, subject string, data []byte) error {
	return p.letter(seq, subject, data, nil)
}

// letter is message for a dead letter: dead, the object of its headers,
// goes on each of its lines as "dead_letter", after "stream_seq".
func (p *tailPrinter) letter(seq uint64, subject string, data []byte, dead json.RawMessage) error {
	envs, err := stream.DecodeMessage(data)
	if err != nil {
		if err := p.flush(); err != nil {
			return err
		}
		return p.errorLine(seq, subject, err, dead, data)
	}
	env := envs[len(envs)-1]
	if p.held != nil && env.IsPiece() {
		line, err := envelopeLine(nil, seq, dead, env)
		if err != nil {
			return err
		}
		p.pieces = append(p.pieces, line...)
		whole, err := p.held.Add(env)
		switch {
		case err != nil:
			return p.flush() // printed as they are
		case whole:
			p.env.Changes[len(p.env.Changes)-1] = p.held.Env.Changes[0]
			return p.flush()
		}
		return nil
	}
	if err := p.flush(); err != nil {
		return err
	}
	if n := len(env.Changes); len(envs) == 1 && n > 0 && env.Changes[n-1].InPieces() {
		p.held, p.env, p.seq, p.dead = stream.NewPieced(env), env, seq, dead
		return nil
	}
	var out []byte
	for _, env := range envs {
		if out, err = envelopeLine(out, seq, dead, env); err != nil {
			return p.errorLine(seq, subject, err, dead, data)
		}
	}
	_, err = p.w.Write(out)
	return err
}

// flush prints the change held, whole or as far as it came, and the
// lines of its pieces.
func (p *tailPrinter) flush() error {
	if p.env == nil {
		return nil
	}
	out, err := envelopeLine(nil, p.seq, p.dead, p.env)
	if err != nil {
		return err
	}
	out = append(out, p.pieces...)
	p.held, p.env, p.pieces, p.dead = nil, nil, nil, nil
	_, err = p.w.Write(out)
	return err
}

// envelopeLine appends the line of an envelope: stream.EnvelopeJSON
// with "stream_seq" first and, for a dead letter, "dead_letter" next.
func envelopeLine(out []byte, seq uint64, dead json.RawMessage, env *stream.Envelope) ([]byte, error) {
	js, err := stream.EnvelopeJSON(env)
	if err != nil {
		return nil, err
	}
	// EnvelopeJSON always renders an object with keys.
	out = strconv.AppendUint(append(out, `{"stream_seq":`...), seq, 10)
	out = append(out, ',')
	if dead != nil {
		out = append(append(append(out, `"dead_letter":`...), dead...), ',')
	}
	out = append(out, js[1:]...)
	return append(out, '\n'), nil
}

// errorLine prints the line of a message tail cannot render; a dead
// letter's carries its headers and its bytes.
func (p *tailPrinter) errorLine(seq uint64, subject string, err error, dead json.RawMessage, data []byte) error {
	te := tailError{StreamSeq: seq, DeadLetter: dead, Error: err.Error(), Subject: subject}
	if dead != nil {
		te.Data = data
	}
	out, _ := json.Marshal(te)
	_, err = p.w.Write(append(out, '\n'))
	return err
}
