package main

// pgjet skip passes over one transaction a region's applier cannot apply,
// as ALTER SUBSCRIPTION ... SKIP (lsn = L) does for native subscriptions.
// It checks, against the target's position and the region's stream, that
// L is the very next transaction the applier applies, then records the
// request in the target (pgjet.skip); the applier skips the transaction
// of exactly that commit LSN when it meets it (apply/skip.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/apply/applied"
	"github.com/pgjet/pgjet/cmd/internal/cli"
	"github.com/pgjet/pgjet/schema/redact"
	"github.com/pgjet/pgjet/stream"
)

// maxSkipScan bounds the messages pgjet skip reads after the target's
// position looking for the next transaction: heartbeats and strangers'
// messages only come between.
const maxSkipScan = 100000

func runSkip(args []string) int {
	var f dropFlags
	var region, lsnText string
	var wait time.Duration
	fs := pflag.NewFlagSet("pgjet skip", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "pgjet skip passes over one transaction of a source that a region's applier cannot apply\n"+
			"(it stopped on it: a constraint only the replica has, a row only the replica lacks), as\n"+
			"ALTER SUBSCRIPTION ... SKIP does. --lsn is the transaction's commit LSN, which the\n"+
			"applier's error names. It must be the next transaction the applier applies: any other is\n"+
			"refused. The applier skips it when it starts again (or at once, when it retries an\n"+
			"error): its messages go to the region's dead-letter stream and a row to pgjet.conflicts\n"+
			"(kind skipped). The target then lacks that transaction's changes: pgjet verify shows\n"+
			"them.\n\n"+
			"Usage:\n  pgjet skip --db TARGET_URL --nats URL --name SOURCE --region REGION --lsn LSN [--domain D]\n\n"+
			"Flags (each also read from the environment variable in brackets):\n%s", fs.FlagUsages())
	}
	f.register(fs, "the region's target database URL")
	fs.StringVar(&f.nats, "nats", "", "NATS URL of the region, e.g. nats://localhost:4222")
	fs.StringVar(&region, "region", "", "the region's name, as given to pgjet-apply --region")
	fs.StringVar(&lsnText, "lsn", "", "commit LSN of the transaction to skip, e.g. 0/1A2B3C8 (the applier's error names it)")
	fs.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for a running applier to skip it (0: do not wait)")
	cli.Parse(fs, args)
	err := errors.Join(f.validate(true), cli.CheckRegion(region))
	lsn, lerr := stream.ParseLSN(lsnText)
	if lsnText == "" {
		err = errors.Join(err, errors.New("--lsn is required (the commit LSN the applier's error names, e.g. 0/1A2B3C8)"))
	} else if lerr != nil || lsn == 0 {
		err = errors.Join(err, fmt.Errorf("--lsn %q: not an LSN; give it as Postgres writes one, e.g. 0/1A2B3C8", lsnText))
	}
	if err != nil {
		return cli.BadUsage("pgjet skip", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, js, closeAll, err := f.connect(ctx, "pgjet skip "+f.name+" "+region)
	if err != nil {
		return fail("pgjet skip", err)
	}
	defer closeAll()
	sk := skipper{conn: conn, js: js, f: f, region: region, lsn: lsn}
	if err := sk.run(ctx, wait); err != nil {
		return fail("pgjet skip", err)
	}
	return 0
}

// skipper checks and records one skip.
type skipper struct {
	conn   *pgx.Conn
	js     jetstream.JetStream
	f      dropFlags
	region string
	lsn    stream.LSN
}

// nextTxn is the transaction an applier applies next.
type nextTxn struct {
	lsn         stream.LSN
	first, last uint64 // stream sequences of its first and last message seen
}

func (k *skipper) run(ctx context.Context, wait time.Duration) error {
	name, where := k.f.name, redact.Postgres(k.f.db)
	st, err := readApplierState(ctx, k.conn, name)
	if err != nil {
		return err
	}
	switch {
	case st != nil && st.region != k.region:
		return fmt.Errorf("the applier of source %s into %s is region %s's (pgjet.applier_state), not %s's: check --region", name, where, st.region, k.region)
	case st != nil && st.runs() && st.lastError == nil:
		return fmt.Errorf("the applier of source %s in region %s runs without an error (pid %d on %s): it is not stopped on a transaction, and would apply %s before it read the request; stop pgjet-apply first to skip the transaction it applies next",
			name, k.region, derefPID(st.pid), orDashPtr(st.host), k.lsn)
	}
	commit, seq, err := k.position(ctx)
	if err != nil {
		return err
	}
	if k.lsn <= commit {
		return fmt.Errorf("transaction %s is applied already: the target's position of source %s in region %s is at commit LSN %s; pgjet skip skips only the transaction the applier applies next",
			k.lsn, name, k.region, commit)
	}
	next, err := k.next(ctx, commit, seq)
	if err != nil {
		return err
	}
	if next.lsn != k.lsn {
		return fmt.Errorf("transaction %s is not the one the applier of region %s applies next: that is %s (stream %s sequence %d); pgjet skip skips only that one, give --lsn %s if it is the one the applier stopped on",
			k.lsn, k.region, next.lsn, stream.StreamName(name), next.first, next.lsn)
	}
	replaced, err := apply.RequestSkip(ctx, k.conn, k.f.db, name, k.lsn)
	if err != nil {
		return err
	}
	if replaced != 0 {
		fmt.Printf("replaced the request to skip transaction %s, which is not the next one\n", replaced)
	}
	seqs := fmt.Sprintf("stream sequence %d", next.first)
	if next.last != next.first {
		seqs = fmt.Sprintf("stream sequences %d to %d", next.first, next.last)
	}
	fmt.Printf("recorded: the applier of source %s in region %s skips transaction %s (%s); its messages go to dead-letter stream %s, and pgjet.conflicts records it (kind %s)\n",
		name, k.region, k.lsn, seqs, apply.DeadLetterStream(name, k.region), apply.KindSkipped)
	if st == nil || !st.runs() || wait <= 0 {
		fmt.Printf("start pgjet-apply --name %s --region %s again: it skips the transaction, then goes on\n", name, k.region)
		return nil
	}
	// A running applier retrying an error reads the request when its next
	// session starts.
	deadline := time.Now().Add(wait)
	for {
		pending, recorded, err := apply.SkipPending(ctx, k.conn, name, k.lsn)
		if err != nil {
			return err
		}
		switch {
		case !pending && recorded:
			fmt.Printf("skipped: the applier passed over transaction %s\n", k.lsn)
			return nil
		case !pending:
			return fmt.Errorf("the applier removed the request to skip %s without skipping it (it applied the transaction meanwhile); see its log", k.lsn)
		case time.Now().After(deadline):
			fmt.Printf("the running applier has not skipped it within %s: it reads the request when it next retries, or when it starts again\n", wait)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// position reads the target's applied position of the source: zero when
// nothing was applied yet.
func (k *skipper) position(ctx context.Context) (stream.LSN, uint64, error) {
	p, _, err := applied.ReadSource(ctx, k.conn, k.f.name)
	return p.CommitLSN, p.StreamSeq, err
}

// next reads the region's stream after the target's position (commit
// LSN commit, stream sequence seq) up to the first transaction of the
// source committed after it, as the applier does.
func (k *skipper) next(ctx context.Context, commit stream.LSN, seq uint64) (*nextTxn, error) {
	name := stream.StreamName(k.f.name)
	st, err := k.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s not found in domain %s: give --nats (or --domain) of region %s, where its applier consumes", name, orDash(k.f.domain), k.region)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", name, err)
	}
	state := st.CachedInfo().State
	var found *nextTxn
	start := max(seq+1, state.FirstSeq)
	for q := start; q <= state.LastSeq && q-start < maxSkipScan; q++ {
		raw, err := st.GetMsg(ctx, q)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read stream %s sequence %d: %w", name, q, err)
		}
		envs, err := stream.DecodeMessage(raw.Data)
		if err != nil {
			return nil, fmt.Errorf("stream %s sequence %d cannot be decoded (%v): pgjet skip cannot tell which transaction it holds; run pgjet-apply with --on-bad-message dead-letter to set it aside", name, q, err)
		}
		for _, env := range envs {
			if env.Kind != stream.KindTxn || env.Source != k.f.name || env.CommitLSN <= commit {
				continue
			}
			if found == nil {
				found = &nextTxn{lsn: env.CommitLSN, first: q}
			}
			if env.CommitLSN != found.lsn {
				return found, nil
			}
			found.last = q
			if env.Last() {
				return found, nil
			}
		}
	}
	if found != nil {
		return found, nil
	}
	return nil, fmt.Errorf("stream %s in domain %s holds no transaction of source %s after the target's position (commit LSN %s, stream sequence %d; the stream ends at %d): there is nothing to skip yet",
		name, orDash(k.f.domain), k.f.name, commit, seq, state.LastSeq)
}
