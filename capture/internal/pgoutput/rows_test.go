package pgoutput

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// msg builds a row message.
type msg []byte

func (m msg) raw(p ...byte) msg { return append(m, p...) }
func (m msg) u32(v uint32) msg  { return binary.BigEndian.AppendUint32(m, v) }
func (m msg) u16(v uint16) msg  { return binary.BigEndian.AppendUint16(m, v) }
func (m msg) text(s string) msg { return append(m.raw('t').u32(uint32(len(s))), s...) }
func (m msg) tuple(cols ...func(msg) msg) msg {
	m = m.u16(uint16(len(cols)))
	for _, c := range cols {
		m = c(m)
	}
	return m
}

func t_(s string) func(msg) msg { return func(m msg) msg { return m.text(s) } }
func kind(k byte) func(msg) msg { return func(m msg) msg { return m.raw(k) } }

func rowCases() map[string][]byte {
	big := strings.Repeat("x", 70000)
	return map[string][]byte{
		"insert":              msg{Insert}.u32(16384).raw('N').tuple(t_("1"), kind('n'), t_(""), t_(big)),
		"update":              msg{Update}.u32(7).raw('N').tuple(t_("1"), kind('u')),
		"update with key":     msg{Update}.u32(7).raw('K').tuple(t_("1"), kind('n')).raw('N').tuple(t_("2"), t_("v")),
		"update with old row": msg{Update}.u32(7).raw('O').tuple(t_("1"), t_("a\x00b")).raw('N').tuple(t_("1"), t_("c")),
		"delete":              msg{Delete}.u32(7).raw('K').tuple(t_("1"), kind('n')),
		"delete old row":      msg{Delete}.u32(7).raw('O').tuple(t_("1"), t_("x")),
	}
}

func TestParseRow_NoColumns(t *testing.T) {
	// A table without columns has rows too (pglogrepl refuses them).
	r, err := ParseRow(msg{Insert}.u32(9).raw('N').tuple())
	if err != nil {
		t.Fatal(err)
	}
	if r.Relation != 9 || r.New == nil || len(r.New) != 0 || r.Old != nil {
		t.Fatalf("row = %+v, want an insert of no columns into relation 9", r)
	}
}

func TestParseRow_MatchesPglogrepl(t *testing.T) {
	for name, b := range rowCases() {
		t.Run(name, func(t *testing.T) {
			got, err := ParseRow(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffPglogrepl(got, b); d != "" {
				t.Fatal(d)
			}
		})
	}
}

func TestParseRow_Aliases(t *testing.T) {
	b := rowCases()["insert"]
	r, err := ParseRow(b)
	if err != nil {
		t.Fatal(err)
	}
	// The value is the message's bytes, not a copy, and capped: appending
	// to it does not write over the next value.
	if &r.New[3].Data[0] != &b[len(b)-70000] {
		t.Error("value does not alias the message")
	}
	if cap(r.New[0].Data) != 1 {
		t.Errorf("value capacity %d, want 1", cap(r.New[0].Data))
	}
}

func TestParseRow_Malformed(t *testing.T) {
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":            {nil, "not a row message"},
		"relation message": {[]byte("R"), "not a row message"},
		"short relation":   {msg{Insert}.raw(0, 0), "truncated at byte 1: relation id"},
		"no tag":           {msg{Insert}.u32(1), "truncated at byte 5: tuple tag"},
		"insert with key":  {msg{Insert}.u32(1).raw('K').tuple(), "insert with an old tuple"},
		"delete with new":  {msg{Delete}.u32(1).raw('N').tuple(), "delete without an old tuple"},
		"bad tag":          {msg{Update}.u32(1).raw('X'), "tuple tag 'X'"},
		"too many columns": {msg{Insert}.u32(1).raw('N').u16(10).raw('n'), "10 columns in 1 bytes"},
		"long column":      {msg{Insert}.u32(1).raw('N').u16(1).raw('t').u32(100).raw('a'), "column 1 of 100 bytes"},
		"unknown kind":     {msg{Insert}.u32(1).raw('N').u16(1).raw('z'), "unknown column kind 'z'"},
		"trailing":         {msg{Insert}.u32(1).raw('N').tuple().raw(0), "1 bytes after its last tuple"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRow(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// diffPglogrepl compares a parsed row with what pglogrepl makes of b.
func diffPglogrepl(r *Row, b []byte) string {
	m, err := pglogrepl.Parse(b)
	if err != nil {
		return "pglogrepl: " + err.Error()
	}
	var rel uint32
	var old, new *pglogrepl.TupleData
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		rel, new = m.RelationID, m.Tuple
	case *pglogrepl.UpdateMessage:
		rel, old, new = m.RelationID, m.OldTuple, m.NewTuple
	case *pglogrepl.DeleteMessage:
		rel, old = m.RelationID, m.OldTuple
	default:
		return "pglogrepl parsed another message"
	}
	if rel != r.Relation {
		return "relation differs"
	}
	if d := diffTuple(r.Old, old); d != "" {
		return "old: " + d
	}
	return diffTuple(r.New, new)
}

func diffTuple(got []Column, want *pglogrepl.TupleData) string {
	if want == nil {
		if got != nil {
			return "tuple present, pglogrepl has none"
		}
		return ""
	}
	if len(got) != len(want.Columns) {
		return "column counts differ"
	}
	for i, c := range want.Columns {
		if got[i].Kind != c.DataType || !bytes.Equal(got[i].Data, c.Data) {
			return "column values differ"
		}
	}
	return ""
}

// FuzzParseRow: ParseRow never panics, and what it accepts pglogrepl
// reads the same way.
func FuzzParseRow(f *testing.F) {
	for _, b := range rowCases() {
		f.Add(b)
	}
	f.Add([]byte{Update, 0, 0, 0, 1, 'O', 0, 1, 't', 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRow(b)
		if err != nil || len(b) < 8 { // pglogrepl refuses rows of no columns
			return
		}
		if d := diffPglogrepl(r, b); d != "" {
			t.Fatal(d)
		}
	})
}
