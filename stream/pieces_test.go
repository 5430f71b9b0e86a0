package stream

import (
	"encoding/binary"
	"strings"
	"testing"
)

// pieced returns the chunk of transaction 0x100 that carries an update of
// ordersRel whose old and new payloads (old, new) travel in pieces, and
// the piece chunks after it, each at most size bytes.
func piecedTxn(old, new string, size int) (*Envelope, []*Envelope) {
	env := &Envelope{Kind: KindTxn, Source: "s", Origin: "o", Xid: 9, CommitLSN: 0x100, Chunk: 1, CommitTime: commitTime,
		Relations: []Relation{usersRel, ordersRel},
		Changes: []Change{
			{Op: OpInsert, Relation: 16384, New: []Value{text("7"), null, null, null}},
			{Op: OpUpdate, Relation: 16400, Old: []Value{text("k"), {Kind: ValuePieces, Size: len(old)}},
				New: []Value{text("k2"), {Kind: ValuePieces, Size: len(new)}}},
		}}
	var pieces []*Envelope
	chunk := env.Chunk
	for _, v := range []string{old, new} {
		for len(v) > 0 {
			n := min(len(v), size)
			chunk++
			pieces = append(pieces, piece(chunk, v[:n]))
			v = v[n:]
		}
	}
	return env, pieces
}

func TestPieced(t *testing.T) {
	old, new := strings.Repeat("ab", 1000), strings.Repeat("é", 777)+"z"
	env, pieces := piecedTxn(old, new, 300)
	// Through the wire: what the assembler gets aliases messages that are
	// reused afterwards.
	buf := Encode(env)
	dec, err := Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPieced(dec)
	clear(buf)
	for i, pe := range pieces {
		b := Encode(pe)
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		done, err := p.Add(d)
		clear(b)
		if err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
		if want := i == len(pieces)-1; done != want {
			t.Fatalf("piece %d of %d: done = %v", i, len(pieces), done)
		}
	}
	if got := p.Missing(); got != 0 {
		t.Errorf("Missing = %d after the last piece", got)
	}
	want := Change{Op: OpUpdate, Relation: 16400, Old: []Value{text("k"), text(old)}, New: []Value{text("k2"), text(new)}}
	got := p.Env
	if len(got.Changes) != 1 || got.Changes[0].InPieces() {
		t.Fatalf("Env.Changes = %+v, want the change alone, whole", got.Changes)
	}
	if d := diffTuple(got.Changes[0].Old, want.Old); d != "" {
		t.Errorf("Old: %s", d)
	}
	if d := diffTuple(got.Changes[0].New, want.New); d != "" {
		t.Errorf("New: %s", d)
	}
	if got.CommitLSN != env.CommitLSN || len(got.Relations) != 2 || got.Relations[1].Name != ordersRel.Name {
		t.Errorf("Env header = %+v", got)
	}
}

func TestPieced_Errors(t *testing.T) {
	_, pieces := piecedTxn("abcdef", "gh", 4) // chunks 2, 3 (old), 4 (new)
	tests := []struct {
		name  string
		feed  []*Envelope
		error string
	}{
		{"chunk skipped", []*Envelope{pieces[0], pieces[2]}, "piece is chunk 4 of transaction 0/100, want chunk 3"},
		{"another transaction", []*Envelope{{Kind: KindTxn, CommitLSN: 0x200, Chunk: 2, Flags: FlagPiece, Piece: []byte("x")}}, "want chunk 2 of transaction 0/100"},
		{"not a piece", []*Envelope{pieces[0], {Kind: KindTxn, CommitLSN: 0x100, Chunk: 3, Flags: FlagLast}}, "is not a piece, but 4 bytes"},
		{"overrun", []*Envelope{piece(2, "abcdefg")}, "piece of 7 bytes overruns a value of 6 bytes"},
		{"after the end", append(append([]*Envelope(nil), pieces...), piece(5, "x")), "after the change's values were whole"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := piecedTxn("abcdef", "gh", 4)
			p := NewPieced(env)
			var err error
			for _, pe := range tc.feed {
				if _, err = p.Add(pe); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Fatalf("error = %v, want one containing %q", err, tc.error)
			}
		})
	}
}

func TestEncode_Version(t *testing.T) {
	env, pieces := piecedTxn("abc", "d", 2)
	for name, tc := range map[string]struct {
		env  *Envelope
		want byte
	}{
		"without pieces":  {txn([]Relation{usersRel}, Change{Op: OpInsert, Relation: 16384, New: []Value{text("1"), null, null, null}}), 1},
		"heartbeat":       {&Envelope{Kind: KindHeartbeat}, 1},
		"value in pieces": {env, 2},
		"piece":           {pieces[0], 2},
	} {
		if got := Encode(tc.env)[2]; got != tc.want {
			t.Errorf("%s: written in version %d, want %d", name, got, tc.want)
		}
	}
}

// FuzzPieced feeds a chunk with values in pieces and messages after it,
// cut from the input, to a Pieced: whatever the messages hold, it never
// panics, never holds more bytes than the values' sizes, and once it
// reports the change whole every value is text of its size.
func FuzzPieced(f *testing.F) {
	add := func(msgs ...*Envelope) {
		var b []byte
		for _, m := range msgs {
			e := Encode(m)
			b = binary.AppendUvarint(b, uint64(len(e)))
			b = append(b, e...)
		}
		f.Add(b)
	}
	env, pieces := piecedTxn("abcdef", "ghi", 4)
	add(append([]*Envelope{env}, pieces...)...)
	add(env, pieces[0], pieces[2])
	add(env, piece(2, "abcdefgh"))
	env2, pieces2 := piecedTxn(strings.Repeat("x", 5000), "y", 1000)
	add(append([]*Envelope{env2}, pieces2...)...)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p *Pieced
		var sizes []int
		for len(b) > 0 {
			n, k := binary.Uvarint(b)
			if k <= 0 || n > uint64(len(b)-k) {
				return
			}
			msg := b[k : k+int(n)]
			b = b[k+int(n):]
			e, err := Decode(msg)
			if err != nil {
				continue
			}
			if p == nil {
				if e.IsPiece() || len(e.Changes) == 0 || !e.Changes[len(e.Changes)-1].InPieces() {
					continue
				}
				p = NewPieced(e)
				total := 0
				for _, v := range p.vals {
					sizes = append(sizes, v.Size)
					total += v.Size
				}
				if total > 1<<20 {
					return // a value is allocated whole: keep the fuzzer fast
				}
				clear(msg)
				continue
			}
			done, err := p.Add(e)
			clear(msg)
			if err != nil {
				return
			}
			for i, v := range p.vals {
				if len(v.Data) > sizes[i] {
					t.Fatalf("value %d holds %d bytes, more than its size %d", i, len(v.Data), sizes[i])
				}
			}
			if done {
				for i, v := range p.vals {
					if v.Kind != ValueText || len(v.Data) != sizes[i] {
						t.Fatalf("value %d whole as %c of %d bytes, want text of %d", i, v.Kind, len(v.Data), sizes[i])
					}
				}
				if p.Env.Changes[0].InPieces() {
					t.Fatal("change whole but still in pieces")
				}
				return
			}
		}
	})
}
