package e2e

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// TestTail_DeadLetters: pgjet tail --dead-letters --region R prints the
// region's dead letters, each with where it came from (stream, sequence,
// subject), why it was set aside, and its message: decoded when it
// decodes, its bytes otherwise. The dead letters are real: an applier
// under --on-bad-message dead-letter set them aside.
func TestTail_DeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCluster(t, "CREATE TABLE t (id int PRIMARY KEY, v text)")
	c.capture(t)
	c.apply(t, "--on-bad-message", "dead-letter")
	exec1(t, c.src, "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g")
	waitSame(t, 60*time.Second, c.src, c.dst)

	js := natsJS(t, c.nats.ClientURL())
	bad := nats.NewMsg(stream.TxnSubject("src"))
	bad.Data = garbageMsg
	gack, err := js.PublishMsg(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	foreign := stream.Encode(&stream.Envelope{Kind: stream.KindHeartbeat, Source: "other", CommitLSN: 0x16B3748, CommitTime: time.Now()})
	fack, err := js.Publish(ctx, stream.HeartbeatSubject("src"), foreign)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "two dead letters", func() (bool, string) {
		checkDaemons(t)
		st, err := js.Stream(ctx, apply.DeadLetterStream("src", "r1"))
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 2, "dead letters: " + strings.Repeat("*", int(info.State.Msgs))
	})

	code, out, errOut := runTail(t, "--nats", c.nats.ClientURL(), "--name", "src", "--dead-letters", "--region", "r1", "--follow=false")
	if code != 0 {
		t.Fatalf("pgjet tail --dead-letters exited %d, want 0; stderr:\n%s", code, errOut)
	}
	lines := tailLines(t, out)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (one per dead letter):\n%s", len(lines), out)
	}
	for i, want := range []struct {
		seq     uint64
		subject string
	}{{gack.Sequence, stream.TxnSubject("src")}, {fack.Sequence, stream.HeartbeatSubject("src")}} {
		l := lines[i]
		if got := l["stream_seq"]; got != float64(i+1) {
			t.Errorf("line %d: stream_seq = %v, want %d (the dead letter's own)", i, got, i+1)
		}
		dl, ok := l["dead_letter"].(map[string]any)
		if !ok {
			t.Fatalf("line %d has no dead_letter object: %s", i, out)
		}
		if got := dl["stream"]; got != stream.StreamName("src") {
			t.Errorf("line %d: dead_letter.stream = %v, want %s", i, got, stream.StreamName("src"))
		}
		if got := dl["sequence"]; got != float64(want.seq) {
			t.Errorf("line %d: dead_letter.sequence = %v, want %d", i, got, want.seq)
		}
		if got := dl["subject"]; got != want.subject {
			t.Errorf("line %d: dead_letter.subject = %v, want %s", i, got, want.subject)
		}
		if got := dl["region"]; got != "r1" {
			t.Errorf("line %d: dead_letter.region = %v, want r1", i, got)
		}
		if e, _ := dl["error"].(string); e == "" {
			t.Errorf("line %d: dead_letter.error is empty", i)
		}
	}
	// The garbled message: the error of decoding it, and its bytes.
	if e, _ := lines[0]["dead_letter"].(map[string]any)["error"].(string); !strings.Contains(e, "cannot be decoded") {
		t.Errorf("line 0: dead_letter.error = %q, want the decode error", e)
	}
	if _, ok := lines[0]["error"]; !ok {
		t.Errorf("line 0 has no error of its own (its message does not decode): %v", lines[0])
	}
	if got, want := lines[0]["data"], base64.StdEncoding.EncodeToString(garbageMsg); got != want {
		t.Errorf("line 0: data = %v, want the letter's bytes %v", got, want)
	}
	// The other source's envelope, decoded.
	if got := lines[1]["kind"]; got != "heartbeat" {
		t.Errorf("line 1: kind = %v, want heartbeat", got)
	}
	if got := lines[1]["source"]; got != "other" {
		t.Errorf("line 1: source = %v, want other", got)
	}
	if got := lines[1]["commit_lsn"]; got != "0/16B3748" {
		t.Errorf("line 1: commit_lsn = %v, want 0/16B3748", got)
	}

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"--dead-letters"},
			{"--region", "r1"},
		} {
			code, _, errOut := runTail(t, append([]string{"--nats", c.nats.ClientURL(), "--name", "src", "--follow=false"}, args...)...)
			if code != 2 || !strings.Contains(errOut, "--region") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("pgjet tail %v: exit %d, stderr %q; want 2 and one line about --region", args, code, errOut)
			}
		}
		code, _, errOut := runTail(t, "--nats", c.nats.ClientURL(), "--name", "src", "--dead-letters", "--region", "r9", "--follow=false")
		if code != 1 || !strings.Contains(errOut, apply.DeadLetterStream("src", "r9")) {
			t.Errorf("pgjet tail of a region without dead letters: exit %d, stderr %q; want 1 naming %s", code, errOut, apply.DeadLetterStream("src", "r9"))
		}
	})
}
