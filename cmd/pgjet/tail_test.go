package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgjet/pgjet/deploy/local"
	"github.com/pgjet/pgjet/stream"
)

// TestTail_Pieces: a change whose value travels in pieces is printed
// whole on its chunk's line, the pieces' lines after it; one left
// unfinished is printed as it came.
func TestTail_Pieces(t *testing.T) {
	rel := stream.Relation{ID: 1, Schema: "public", Name: "docs", Columns: []stream.Column{{Name: "id", Key: true, Type: "int"}, {Name: "body", Type: "text"}}}
	value := strings.Repeat("0123456789", 10)
	chunk := &stream.Envelope{Kind: stream.KindTxn, Source: "s", CommitLSN: 0x100, Flags: stream.FlagFirst, Relations: []stream.Relation{rel},
		Changes: []stream.Change{
			{Op: stream.OpInsert, Relation: 1, New: []stream.Value{{Kind: stream.ValueText, Data: []byte("1")}, {Kind: stream.ValueText, Data: []byte("small")}}},
			{Op: stream.OpInsert, Relation: 1, New: []stream.Value{{Kind: stream.ValueText, Data: []byte("2")}, {Kind: stream.ValuePieces, Size: len(value)}}},
		}}
	piece := func(n uint32, p string) []byte {
		return stream.Encode(&stream.Envelope{Kind: stream.KindTxn, Source: "s", CommitLSN: 0x100, Chunk: n, Flags: stream.FlagPiece, Piece: []byte(p)})
	}
	last := stream.Encode(&stream.Envelope{Kind: stream.KindTxn, Source: "s", CommitLSN: 0x100, Chunk: 4, Flags: stream.FlagLast})

	t.Run("whole", func(t *testing.T) {
		var out bytes.Buffer
		p := &tailPrinter{w: &out}
		for i, msg := range [][]byte{stream.Encode(chunk), piece(1, value[:40]), piece(2, value[40:80]), piece(3, value[80:]), last} {
			if err := p.message(uint64(10+i), "pgjet.s.txn", msg); err != nil {
				t.Fatal(err)
			}
			if i == 1 && out.Len() != 0 {
				t.Fatalf("printed before the value was whole: %s", out.String())
			}
		}
		if err := p.flush(); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if got, want := len(lines), 5; got != want {
			t.Fatalf("%d lines, want %d:\n%s", got, want, out.String())
		}
		var first struct {
			StreamSeq int `json:"stream_seq"`
			Changes   []struct {
				New map[string]string `json:"new"`
			} `json:"changes"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
			t.Fatal(err)
		}
		if first.StreamSeq != 10 || len(first.Changes) != 2 || first.Changes[1].New["body"] != value || first.Changes[0].New["body"] != "small" {
			t.Errorf("first line = %s, want the chunk at 10 with the value whole", lines[0])
		}
		for i, want := range []string{`"stream_seq":11`, `"stream_seq":12`, `"stream_seq":13`, `"stream_seq":14`} {
			if !strings.Contains(lines[i+1], want) {
				t.Errorf("line %d = %s, want %s", i+2, lines[i+1], want)
			}
		}
		if !strings.Contains(lines[1], `"piece":{"bytes":40}`) {
			t.Errorf("piece line = %s", lines[1])
		}
	})
	t.Run("unfinished", func(t *testing.T) {
		var out bytes.Buffer
		p := &tailPrinter{w: &out}
		for i, msg := range [][]byte{stream.Encode(chunk), piece(1, value[:40])} {
			if err := p.message(uint64(10+i), "pgjet.s.txn", msg); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.flush(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); !strings.Contains(got, `"body":{"in_pieces":100}`) || strings.Count(got, "\n") != 2 {
			t.Errorf("output = %s, want the chunk as it came and the piece", got)
		}
	})
}

// TestTail_PasswordNotShown: the errors of pgjet tail that name the
// server (a stream not found, JetStream off) hide the password of the
// --nats URL, as every other error does.
func TestTail_PasswordNotShown(t *testing.T) {
	t.Parallel()
	const pw = "Tail-s3cret-pw"
	for _, tc := range []struct {
		name  string
		noJS  bool
		wantE string
	}{
		{"stream not found", false, "not found"},
		{"no JetStream", true, "nothing answers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, err := local.StartNATS(local.NATSOptions{User: "u", Password: pw, NoJetStream: tc.noJS}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			url := strings.Replace(n.ClientURL(), "://", "://u:"+pw+"@", 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var out bytes.Buffer
			err = tail(ctx, tailFlags{nats: url, name: "nope"}, bufio.NewWriter(&out), zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tc.wantE) {
				t.Fatalf("tail error = %v, want one saying %q", err, tc.wantE)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("tail error shows the password: %v", err)
			}
		})
	}
}
