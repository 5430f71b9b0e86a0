// Package pgoutput decodes the row messages of Postgres' pgoutput
// plugin (Insert, Update, Delete; protocol version 1) without copying
// their values. pgoutput sends a row whole in one CopyData message, up to
// the 1 GB a value may take: a decoder that copies each value (as
// pglogrepl's does) holds the row twice. Here a row's values alias the
// message; whoever keeps them past the next message copies them.
//
// See https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
package pgoutput

import (
	"encoding/binary"
	"fmt"
)

// Message types of the row messages.
const (
	Insert = 'I'
	Update = 'U'
	Delete = 'D'
)

// Row is an Insert, Update or Delete message.
type Row struct {
	Op       byte // Insert, Update or Delete
	Relation uint32
	// Old is the old key ('K') or the whole old row ('O') of an update
	// or delete; nil when the message has none.
	Old []Column
	// New is the new row of an insert or update.
	New []Column
}

// Column is one value of a TupleData.
type Column struct {
	// Kind is 'n' (NULL), 'u' (unchanged TOASTed value), 't' (text) or
	// 'b' (binary).
	Kind byte
	// Data is the value of a text or binary column; it aliases the
	// message.
	Data []byte
}

// IsRow reports whether msg is a row message.
func IsRow(msg []byte) bool {
	return len(msg) > 0 && (msg[0] == Insert || msg[0] == Update || msg[0] == Delete)
}

// ParseRow decodes a row message. Its values alias msg. It never panics,
// whatever msg holds.
func ParseRow(msg []byte) (*Row, error) {
	if !IsRow(msg) {
		return nil, fmt.Errorf("not a row message")
	}
	d := decoder{b: msg, off: 1}
	r := &Row{Op: msg[0]}
	var err error
	if r.Relation, err = d.uint32("relation id"); err != nil {
		return nil, err
	}
	tag, err := d.byte1("tuple tag")
	if err != nil {
		return nil, err
	}
	if tag == 'K' || tag == 'O' {
		if r.Op == Insert {
			return nil, fmt.Errorf("insert with an old tuple (%q)", tag)
		}
		if r.Old, err = d.tuple(); err != nil {
			return nil, err
		}
		if r.Op == Delete {
			return r, d.end()
		}
		if tag, err = d.byte1("tuple tag"); err != nil {
			return nil, err
		}
	} else if r.Op == Delete {
		return nil, fmt.Errorf("delete without an old tuple (tag %q)", tag)
	}
	if tag != 'N' {
		return nil, fmt.Errorf("tuple tag %q, want 'N'", tag)
	}
	if r.New, err = d.tuple(); err != nil {
		return nil, err
	}
	return r, d.end()
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) byte1(what string) (byte, error) {
	if d.off >= len(d.b) {
		return 0, fmt.Errorf("row message truncated at byte %d: %s", d.off, what)
	}
	d.off++
	return d.b[d.off-1], nil
}

func (d *decoder) uint32(what string) (uint32, error) {
	if len(d.b)-d.off < 4 {
		return 0, fmt.Errorf("row message truncated at byte %d: %s", d.off, what)
	}
	d.off += 4
	return binary.BigEndian.Uint32(d.b[d.off-4:]), nil
}

func (d *decoder) end() error {
	if d.off != len(d.b) {
		return fmt.Errorf("row message has %d bytes after its last tuple", len(d.b)-d.off)
	}
	return nil
}

// tuple reads a TupleData: Int16 column count, then per column a kind
// byte and, for text and binary, an Int32 length and the bytes.
func (d *decoder) tuple() ([]Column, error) {
	if len(d.b)-d.off < 2 {
		return nil, fmt.Errorf("row message truncated at byte %d: column count", d.off)
	}
	n := int(binary.BigEndian.Uint16(d.b[d.off:]))
	d.off += 2
	if n > len(d.b)-d.off { // each column takes a byte at least
		return nil, fmt.Errorf("row message at byte %d: %d columns in %d bytes", d.off-2, n, len(d.b)-d.off)
	}
	cols := make([]Column, n)
	for i := range cols {
		kind, err := d.byte1("column kind")
		if err != nil {
			return nil, err
		}
		cols[i].Kind = kind
		switch kind {
		case 'n', 'u':
		case 't', 'b':
			size, err := d.uint32("column length")
			if err != nil {
				return nil, err
			}
			if uint64(size) > uint64(len(d.b)-d.off) {
				return nil, fmt.Errorf("row message truncated at byte %d: column %d of %d bytes", d.off, i+1, size)
			}
			cols[i].Data = d.b[d.off : d.off+int(size) : d.off+int(size)]
			d.off += int(size)
		default:
			return nil, fmt.Errorf("row message at byte %d: unknown column kind %q", d.off-1, kind)
		}
	}
	return cols, nil
}
