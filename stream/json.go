package stream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// EnvelopeJSON renders e as one line of JSON for people and jq, as
// `pgjet tail` prints it (without a trailing newline):
//
//	{"source":"prod","kind":"txn","xid":731,"commit_lsn":"0/16B3748",
//	 "end_lsn":"0/16B3780","commit_time":"2024-05-01T10:00:00.123456Z",
//	 "origin":"","chunk":0,"first":true,"last":true,"changes":[
//	  {"op":"update","table":"public.users","old":{"id":"1"},
//	   "new":{"id":"2","bio":{"unchanged_toast":true},"note":null}},
//	  {"op":"truncate","tables":["public.a"],"cascade":true,"restart_identity":false}]}
//
// Every key is always present at the top level; commit_time is null for
// the zero time. Change objects have op and table (insert, update,
// delete), old (update when the source sent one, delete) and new (insert,
// update), or op, tables, cascade and restart_identity (truncate). Rows
// are objects whose keys follow the relation's column order. A NULL is
// null, an unchanged TOASTed value is {"unchanged_toast":true} and a text
// value is a string (invalid UTF-8 is replaced by U+FFFD). A value that
// travels in pieces is {"in_pieces":SIZE}, and a piece chunk has, after
// "last", "piece":{"bytes":N} (its bytes are not shown: `pgjet tail`
// shows the value whole in its change instead). A relation the
// envelope does not describe is shown by its OID and columns beyond its
// description as "$1", "$2"…, so a damaged envelope can still be looked
// at; an unknown kind, op or value kind is an error.
//
// It is a function rather than a MarshalJSON method on purpose: this
// lossy, human-oriented form is not the wire format, and json.Marshal of
// an Envelope must not pretend otherwise.
func EnvelopeJSON(e *Envelope) ([]byte, error) {
	w := newJSONWriter()
	var kind string
	switch e.Kind {
	case KindTxn:
		kind = "txn"
	case KindHeartbeat:
		kind = "heartbeat"
	case KindMessage:
		kind = "message"
	default:
		return nil, fmt.Errorf("render envelope: unknown kind %d", e.Kind)
	}
	w.raw(`{"source":`)
	w.str(e.Source)
	w.raw(`,"kind":`)
	w.str(kind)
	w.raw(`,"xid":`)
	w.uint(uint64(e.Xid))
	w.raw(`,"commit_lsn":`)
	w.str(e.CommitLSN.String())
	w.raw(`,"end_lsn":`)
	w.str(e.EndLSN.String())
	w.raw(`,"commit_time":`)
	if e.CommitTime.IsZero() {
		w.raw("null")
	} else {
		w.str(e.CommitTime.UTC().Format(time.RFC3339Nano))
	}
	w.raw(`,"origin":`)
	w.str(e.Origin)
	w.raw(`,"chunk":`)
	w.uint(uint64(e.Chunk))
	w.raw(`,"first":`)
	w.bool(e.First())
	w.raw(`,"last":`)
	w.bool(e.Last())
	if e.IsPiece() {
		w.raw(`,"piece":{"bytes":`)
		w.uint(uint64(len(e.Piece)))
		w.raw("}")
	}
	w.raw(`,"changes":[`)
	for i := range e.Changes {
		if i > 0 {
			w.raw(",")
		}
		if err := w.change(e, &e.Changes[i]); err != nil {
			return nil, fmt.Errorf("render change %d: %w", i, err)
		}
	}
	w.raw("]}")
	return w.buf.Bytes(), nil
}

// jsonWriter builds JSON text by hand so that row objects keep column
// order; encoding/json does the string escaping.
type jsonWriter struct {
	buf     bytes.Buffer
	scratch bytes.Buffer
	enc     *json.Encoder
}

func newJSONWriter() *jsonWriter {
	w := new(jsonWriter)
	w.enc = json.NewEncoder(&w.scratch)
	w.enc.SetEscapeHTML(false) // keep <, > and & readable
	return w
}

func (w *jsonWriter) raw(s string) { w.buf.WriteString(s) }

func (w *jsonWriter) str(s string) {
	w.scratch.Reset()
	_ = w.enc.Encode(s) // a string always encodes
	w.buf.Write(bytes.TrimSuffix(w.scratch.Bytes(), []byte("\n")))
}

func (w *jsonWriter) uint(v uint64) {
	w.buf.Write(strconv.AppendUint(w.buf.AvailableBuffer(), v, 10))
}

func (w *jsonWriter) bool(v bool) {
	w.buf.Write(strconv.AppendBool(w.buf.AvailableBuffer(), v))
}

func opName(op Op) string {
	switch op {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	case OpMessage:
		return "message"
	}
	return ""
}

func findRelation(e *Envelope, id uint32) *Relation {
	for i := range e.Relations {
		if e.Relations[i].ID == id {
			return &e.Relations[i]
		}
	}
	return nil
}

func tableName(e *Envelope, id uint32) string {
	if r := findRelation(e, id); r != nil {
		return r.Schema + "." + r.Name
	}
	return strconv.FormatUint(uint64(id), 10)
}

func (w *jsonWriter) change(e *Envelope, c *Change) error {
	name := opName(c.Op)
	if name == "" {
		return fmt.Errorf("unknown op %#02x", byte(c.Op))
	}
	w.raw(`{"op":`)
	w.str(name)
	if c.Op == OpMessage {
		w.raw(`,"prefix":`)
		w.str(c.Prefix)
		w.raw(`,"transactional":`)
		w.bool(c.Transactional)
		w.raw(`,"content":`)
		w.str(string(c.Content))
		w.raw("}")
		return nil
	}
	if c.Op == OpTruncate {
		w.raw(`,"tables":[`)
		for i, id := range c.Truncated {
			if i > 0 {
				w.raw(",")
			}
			w.str(tableName(e, id))
		}
		w.raw(`],"cascade":`)
		w.bool(c.TruncateOpts&TruncateCascade != 0)
		w.raw(`,"restart_identity":`)
		w.bool(c.TruncateOpts&TruncateRestartIdentity != 0)
		w.raw("}")
		return nil
	}
	w.raw(`,"table":`)
	w.str(tableName(e, c.Relation))
	rel := findRelation(e, c.Relation)
	if c.Op == OpDelete || (c.Op == OpUpdate && c.Old != nil) {
		w.raw(`,"old":`)
		if err := w.row(rel, c.Old); err != nil {
			return fmt.Errorf("old row: %w", err)
		}
	}
	if c.Op != OpDelete {
		w.raw(`,"new":`)
		if err := w.row(rel, c.New); err != nil {
			return fmt.Errorf("new row: %w", err)
		}
	}
	w.raw("}")
	return nil
}

func (w *jsonWriter) row(rel *Relation, vals []Value) error {
	w.raw("{")
	for i := range vals {
		if i > 0 {
			w.raw(",")
		}
		if rel != nil && i < len(rel.Columns) {
			w.str(rel.Columns[i].Name)
		} else {
			w.str("$" + strconv.Itoa(i+1))
		}
		w.raw(":")
		switch v := &vals[i]; v.Kind {
		case ValueNull:
			w.raw("null")
		case ValueUnchanged:
			w.raw(`{"unchanged_toast":true}`)
		case ValueText:
			w.str(string(v.Data))
		case ValuePieces:
			w.raw(`{"in_pieces":`)
			w.uint(uint64(v.Size))
			w.raw("}")
		default:
			return fmt.Errorf("column %d: unknown value kind %#02x", i+1, v.Kind)
		}
	}
	w.raw("}")
	return nil
}
