package stream

import (
	"encoding/json"
	"testing"
)

func TestEnvelopeJSON(t *testing.T) {
	tests := []struct {
		name string
		env  *Envelope
		want string
	}{
		{
			name: "heartbeat",
			env:  &Envelope{Kind: KindHeartbeat, Source: "prod-eu", CommitLSN: 0x16B3748, CommitTime: commitTime},
			want: `{"source":"prod-eu","kind":"heartbeat","xid":0,"commit_lsn":"0/16B3748","end_lsn":"0/0",` +
				`"commit_time":"2024-05-01T10:00:00.123456Z","origin":"","chunk":0,"first":false,"last":false,"changes":[]}`,
		},
		{
			name: "zero time",
			env:  &Envelope{Kind: KindTxn, Source: "s", Chunk: 3},
			want: `{"source":"s","kind":"txn","xid":0,"commit_lsn":"0/0","end_lsn":"0/0",` +
				`"commit_time":null,"origin":"","chunk":3,"first":false,"last":false,"changes":[]}`,
		},
		{
			name: "changes",
			env: txn([]Relation{usersRel},
				Change{Op: OpInsert, Relation: 16384, New: []Value{text("1"), text(`<a href="x">&</a>` + "\x00\n"), null, unchanged}},
				Change{Op: OpUpdate, Relation: 16384, New: []Value{text("1"), text("日本"), text(""), unchanged}},
				Change{Op: OpUpdate, Relation: 16384, Old: []Value{text("1"), null, null, null}, New: []Value{text("2"), null, null, null}},
				Change{Op: OpDelete, Relation: 16384, Old: []Value{text("2"), null, null, null}},
				Change{Op: OpTruncate, Truncated: []uint32{16384, 777}, TruncateOpts: TruncateCascade},
			),
			want: `{"source":"prod-eu","kind":"txn","xid":731,"commit_lsn":"0/16B3748","end_lsn":"0/16B3780",` +
				`"commit_time":"2024-05-01T10:00:00.123456Z","origin":"","chunk":0,"first":true,"last":true,"changes":[` +
				`{"op":"insert","table":"public.users","new":{"id":"1","name":"<a href=\"x\">&</a>\u0000\n","balance":null,"bio":{"unchanged_toast":true}}},` +
				`{"op":"update","table":"public.users","new":{"id":"1","name":"日本","balance":"","bio":{"unchanged_toast":true}}},` +
				`{"op":"update","table":"public.users","old":{"id":"1","name":null,"balance":null,"bio":null},"new":{"id":"2","name":null,"balance":null,"bio":null}},` +
				`{"op":"delete","table":"public.users","old":{"id":"2","name":null,"balance":null,"bio":null}},` +
				`{"op":"truncate","tables":["public.users","777"],"cascade":true,"restart_identity":false}]}`,
		},
		{
			name: "piece",
			env:  piece(4, "abc"),
			want: `{"source":"s","kind":"txn","xid":9,"commit_lsn":"0/100","end_lsn":"0/0",` +
				`"commit_time":"2024-05-01T10:00:00.123456Z","origin":"o","chunk":4,"first":false,"last":false,"piece":{"bytes":3},"changes":[]}`,
		},
		{
			name: "value in pieces",
			env: &Envelope{Kind: KindTxn, Source: "s", Chunk: 1, Relations: []Relation{ordersRel},
				Changes: []Change{{Op: OpInsert, Relation: 16400, New: []Value{text("k"), {Kind: ValuePieces, Size: 5 << 20}}}}},
			want: `{"source":"s","kind":"txn","xid":0,"commit_lsn":"0/0","end_lsn":"0/0",` +
				`"commit_time":null,"origin":"","chunk":1,"first":false,"last":false,"changes":[` +
				`{"op":"insert","table":"sales.Orders ✓","new":{"order_id":"k","payload":{"in_pieces":5242880}}}]}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EnvelopeJSON(tc.env)
			if err != nil {
				t.Fatalf("EnvelopeJSON: %v", err)
			}
			if got, want := string(b), tc.want; got != want {
				t.Errorf("EnvelopeJSON =\n%s\nwant\n%s", got, want)
			}
			if !json.Valid(b) {
				t.Errorf("EnvelopeJSON output is not valid JSON")
			}
		})
	}
}

func TestEnvelopeJSON_Errors(t *testing.T) {
	tests := []struct {
		name string
		env  *Envelope
	}{
		{"unknown kind", &Envelope{Kind: 9}},
		{"unknown op", txn(nil, Change{Op: 'X'})},
		{"unknown value kind", txn([]Relation{ordersRel}, Change{Op: OpInsert, Relation: 16400, New: []Value{{Kind: 'b'}, null}})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := EnvelopeJSON(tc.env); err == nil {
				t.Errorf("EnvelopeJSON succeeded, want an error")
			}
		})
	}
}

func TestEnvelopeJSON_UnknownRelation(t *testing.T) {
	e := txn(nil, Change{Op: OpInsert, Relation: 42, New: []Value{text("a"), null}})
	b, err := EnvelopeJSON(e)
	if err != nil {
		t.Fatalf("EnvelopeJSON: %v", err)
	}
	var got struct {
		Changes []struct {
			Table string
			New   map[string]any
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if got, want := got.Changes[0].Table, "42"; got != want {
		t.Errorf("table = %q, want %q", got, want)
	}
	if got, want := got.Changes[0].New["$1"], "a"; got != want {
		t.Errorf(`new["$1"] = %v, want %q`, got, want)
	}
}
