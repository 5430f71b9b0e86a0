package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// runTail runs `pgjet tail` to completion and returns its exit code,
// stdout and stderr.
func runTail(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.pgjet, append([]string{"tail"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("pgjet tail %v did not finish within 30s; stdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run pgjet tail: %v", err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func tailLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line is not JSON: %v\n%s", err, l)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestTail(t *testing.T) {
	t.Parallel()
	n := local.NewTestNATS(t, local.NATSOptions{Name: "hub", Domain: "hub"})
	ctx := context.Background()
	nc, err := stream.Connect(n.ClientURL(), "test", stream.ConnectOptions{}, local.TestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := stream.NewJetStream(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.EnsureStream(ctx, js, "src", stream.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	txn := &stream.Envelope{
		Kind: stream.KindTxn, Source: "src", Xid: 731, CommitLSN: 0x16B3748, EndLSN: 0x16B3780,
		CommitTime: time.Date(2024, 5, 1, 10, 0, 0, 123456000, time.UTC), Flags: stream.FlagFirst | stream.FlagLast,
		Relations: []stream.Relation{{ID: 1, Schema: "public", Name: "users", Identity: stream.IdentityDefault,
			Columns: []stream.Column{{Name: "id", Key: true, TypeOID: 23, TypeMod: -1, Type: "integer"}, {Name: "bio", TypeOID: 25, TypeMod: -1, Type: "text"}}}},
		Changes: []stream.Change{{Op: stream.OpInsert, Relation: 1, New: []stream.Value{{Kind: stream.ValueText, Data: []byte("1")}, {Kind: stream.ValueNull}}}},
	}
	hb := &stream.Envelope{Kind: stream.KindHeartbeat, Source: "src", CommitLSN: 0x16B3800, CommitTime: time.Now()}
	publish := func(subject string, data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	publish(stream.TxnSubject("src"), stream.Encode(txn))
	publish(stream.HeartbeatSubject("src"), stream.Encode(hb))
	publish(stream.TxnSubject("src"), []byte("not an envelope"))

	t.Run("NoFollow", func(t *testing.T) {
		code, out, errOut := runTail(t, "--nats", n.ClientURL(), "--name", "src", "--follow=false")
		if code != 0 {
			t.Fatalf("exit code %d, want 0; stderr:\n%s", code, errOut)
		}
		lines := tailLines(t, out)
		if got, want := len(lines), 3; got != want {
			t.Fatalf("got %d lines, want %d:\n%s", got, want, out)
		}
		for i, l := range lines {
			if got, want := l["stream_seq"], float64(i+1); got != want {
				t.Errorf("line %d: stream_seq = %v, want %v", i, got, want)
			}
		}
		if got, want := lines[0]["kind"], "txn"; got != want {
			t.Errorf("line 0: kind = %v, want %v", got, want)
		}
		if got, want := lines[0]["commit_lsn"], "0/16B3748"; got != want {
			t.Errorf("line 0: commit_lsn = %v, want %v", got, want)
		}
		if !strings.Contains(out, `"new":{"id":"1","bio":null}`) {
			t.Errorf("line 0 lacks the inserted row:\n%s", out)
		}
		if got, want := lines[1]["kind"], "heartbeat"; got != want {
			t.Errorf("line 1: kind = %v, want %v", got, want)
		}
		if _, ok := lines[2]["error"]; !ok {
			t.Errorf("line 2 has no error: %v", lines[2])
		}
		if got, want := lines[2]["subject"], stream.TxnSubject("src"); got != want {
			t.Errorf("line 2: subject = %v, want %v", got, want)
		}
	})

	t.Run("Last", func(t *testing.T) {
		code, out, errOut := runTail(t, "--nats", n.ClientURL(), "--name", "src", "--follow=false", "--last", "2")
		if code != 0 {
			t.Fatalf("exit code %d, want 0; stderr:\n%s", code, errOut)
		}
		lines := tailLines(t, out)
		if got, want := len(lines), 2; got != want {
			t.Fatalf("got %d lines, want %d:\n%s", got, want, out)
		}
		if got, want := lines[0]["stream_seq"], float64(2); got != want {
			t.Errorf("first stream_seq = %v, want %v", got, want)
		}
	})

	t.Run("FromSeqEnv", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bins.pgjet, "tail", "--follow=false")
		cmd.Env = append(cmd.Environ(), "PGJET_NATS="+n.ClientURL(), "PGJET_NAME=src", "PGJET_FROM_SEQ=3")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("pgjet tail: %v", err)
		}
		lines := tailLines(t, string(out))
		if len(lines) != 1 || lines[0]["stream_seq"] != float64(3) {
			t.Fatalf("want only stream_seq 3, got:\n%s", out)
		}
	})

	t.Run("Follow", func(t *testing.T) {
		p := start(t, "pgjet tail", bins.pgjet, "tail", "--nats", n.ClientURL(), "--name", "src")
		waitFor(t, 15*time.Second, "three lines", func() (bool, string) {
			return strings.Count(p.Output(), "\n") >= 3, p.Output()
		})
		publish(stream.HeartbeatSubject("src"), stream.Encode(hb))
		waitFor(t, 15*time.Second, "the new message", func() (bool, string) {
			return strings.Contains(p.Output(), `"stream_seq":4,`), p.Output()
		})
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		if code := p.Wait(t, 15*time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGINT, want 0:\n%s", code, p.Output())
		}
		// An ordered consumer leaves nothing behind: tail deletes its
		// ephemeral consumer on the way out.
		st, err := js.Stream(ctx, stream.StreamName("src"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		lister := st.ListConsumers(ctx)
		for ci := range lister.Info() {
			names = append(names, ci.Name)
		}
		if err := lister.Err(); err != nil {
			t.Fatal(err)
		}
		if len(names) > 0 {
			t.Errorf("consumers left behind: %v", names)
		}
	})

	t.Run("MissingStream", func(t *testing.T) {
		code, out, errOut := runTail(t, "--nats", n.ClientURL(), "--name", "nosuch", "--follow=false")
		if code != 1 {
			t.Fatalf("exit code %d, want 1; stdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if got := strings.Count(errOut, "\n"); got != 1 || !strings.Contains(errOut, "PGJET_nosuch not found") {
			t.Errorf("want one line naming the missing stream, got:\n%s", errOut)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		port, err := local.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		url := "nats://127.0.0.1:" + strconv.Itoa(port)
		code, _, errOut := runTail(t, "--nats", url, "--name", "src")
		if code != 1 {
			t.Fatalf("exit code %d, want 1; stderr:\n%s", code, errOut)
		}
		if got := strings.Count(errOut, "\n"); got != 1 || !strings.Contains(errOut, url) {
			t.Errorf("want one line naming %s, got:\n%s", url, errOut)
		}
	})
}
