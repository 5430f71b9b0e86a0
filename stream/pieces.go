package stream

import (
	"bytes"
	"fmt"
)

// Pieced puts back together a change whose values travel in pieces: the
// last change of a chunk holds them as ValuePieces values, and the piece
// chunks right after that chunk carry their bytes, value after value in
// tuple order (old tuple first), each value's bytes in order, never two
// values in one piece (see ENVELOPE.md, "Values in pieces").
//
// A Pieced holds the values it puts together, and nothing of the
// messages it was given: a consumer holds one such change at a time.
type Pieced struct {
	// Env is the chunk that carried the change, with the change alone in
	// Changes. Its values are copies; once Add reports the change whole,
	// the values that were in pieces are ValueText values.
	Env Envelope
	// vals are the values in pieces, in the order of their pieces; cur
	// is the one being filled.
	vals []*Value
	cur  int
	next uint32 // the chunk number the next piece must have
}

// NewPieced starts putting together the last change of env, a chunk
// whose last change has values in pieces (Change.InPieces). It copies
// what it keeps of env: env's message may be reused after it returns.
func NewPieced(env *Envelope) *Pieced {
	ch := env.Changes[len(env.Changes)-1]
	p := &Pieced{Env: *env, next: env.Chunk + 1}
	p.Env.Changes = []Change{ch}
	c := &p.Env.Changes[0]
	c.Old = p.copyTuple(c.Old)
	c.New = p.copyTuple(c.New)
	c.Content = bytes.Clone(c.Content)
	return p
}

// copyTuple copies a tuple's values, their bytes into one allocation,
// and notes its values in pieces.
func (p *Pieced) copyTuple(vals []Value) []Value {
	if vals == nil {
		return nil
	}
	out := make([]Value, len(vals))
	n := 0
	for _, v := range vals {
		if v.Kind != ValuePieces {
			n += len(v.Data)
		}
	}
	buf := make([]byte, 0, n)
	for i, v := range vals {
		out[i] = Value{Kind: v.Kind, Size: v.Size}
		switch {
		case v.Kind == ValuePieces:
			p.vals = append(p.vals, &out[i])
		case v.Data != nil:
			buf = append(buf, v.Data...)
			out[i].Data = buf[len(buf)-len(v.Data) : len(buf) : len(buf)]
		}
	}
	return out
}

// Add appends the piece chunk env carries to the value being filled. It
// returns true once every value is whole. It returns an error, and the
// Pieced is of no further use, when env is not the next piece of the
// change: another transaction's, a chunk out of order, not a piece chunk,
// or more bytes than the value holds. Add copies the piece.
func (p *Pieced) Add(env *Envelope) (bool, error) {
	switch {
	case p.cur >= len(p.vals):
		return false, fmt.Errorf("a piece after the change's values were whole")
	case !env.IsPiece():
		return false, fmt.Errorf("chunk %d of transaction %s is not a piece, but %d bytes of a value in pieces are missing", env.Chunk, env.CommitLSN, p.Missing())
	case env.CommitLSN != p.Env.CommitLSN || env.Chunk != p.next:
		return false, fmt.Errorf("piece is chunk %d of transaction %s, want chunk %d of transaction %s", env.Chunk, env.CommitLSN, p.next, p.Env.CommitLSN)
	}
	v := p.vals[p.cur]
	if v.Data == nil {
		// Allocated once, whole: growing by appends would hold up to
		// twice the value at a time.
		v.Data = make([]byte, 0, v.Size)
	}
	if len(v.Data)+len(env.Piece) > v.Size {
		return false, fmt.Errorf("piece of %d bytes overruns a value of %d bytes, %d of them received", len(env.Piece), v.Size, len(v.Data))
	}
	v.Data = append(v.Data, env.Piece...)
	p.next++
	if len(v.Data) < v.Size {
		return false, nil
	}
	v.Kind, v.Size = ValueText, 0
	p.cur++
	return p.cur == len(p.vals), nil
}

// Missing is the number of bytes of the change's values not received yet.
func (p *Pieced) Missing() int {
	n := 0
	for _, v := range p.vals[p.cur:] {
		n += v.Size - len(v.Data)
	}
	return n
}
