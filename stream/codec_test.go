package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func text(s string) Value { return Value{Kind: ValueText, Data: []byte(s)} }

var (
	null      = Value{Kind: ValueNull}
	unchanged = Value{Kind: ValueUnchanged}
)

var usersRel = Relation{
	ID: 16384, Schema: "public", Name: "users", Identity: IdentityDefault,
	Columns: []Column{
		{Name: "id", Key: true, TypeOID: 20, TypeMod: -1, Type: "bigint"},
		{Name: "name", TypeOID: 25, TypeMod: -1, Type: "text"},
		{Name: "balance", TypeOID: 1700, TypeMod: (10<<16 | 2) + 4, Type: "numeric(10,2)"},
		{Name: "bio", TypeOID: 25, TypeMod: -1, Type: "text"},
	},
}

var ordersRel = Relation{
	ID: 16400, Schema: "sales", Name: "Orders ✓", Identity: IdentityFull,
	Columns: []Column{
		{Name: "order_id", TypeOID: 2950, TypeMod: -1, Type: "uuid"},
		{Name: "payload", TypeOID: 17, TypeMod: -1, Type: "bytea"},
	},
}

var commitTime = time.Date(2024, 5, 1, 10, 0, 0, 123456000, time.UTC)

func txn(rels []Relation, changes ...Change) *Envelope {
	return &Envelope{
		Kind: KindTxn, Source: "prod-eu", Xid: 731,
		CommitLSN: 0x16B3748, EndLSN: 0x16B3780, CommitTime: commitTime,
		Flags: FlagFirst | FlagLast, Relations: rels, Changes: changes,
	}
}

// roundTripCases are valid envelopes; they also seed FuzzDecode.
func roundTripCases() []struct {
	name string
	env  *Envelope
} {
	return []struct {
		name string
		env  *Envelope
	}{
		{"heartbeat", &Envelope{Kind: KindHeartbeat, Source: "prod-eu", CommitLSN: 0x16B3748, CommitTime: commitTime}},
		{"empty heartbeat", &Envelope{Kind: KindHeartbeat}},
		{"transactional message", &Envelope{Kind: KindTxn, Source: "s", CommitLSN: 9, Flags: FlagFirst | FlagLast, Changes: []Change{
			{Op: OpMessage, Transactional: true, Prefix: PrefixDDL, Content: []byte(`{"sql":"ALTER TABLE t ADD c int"}`)},
			{Op: OpMessage, Transactional: true, Prefix: "app", Content: []byte{}},
		}}},
		{"non-transactional message", &Envelope{Kind: KindMessage, Source: "s", CommitLSN: 10, Changes: []Change{
			{Op: OpMessage, Prefix: "app.audit", Content: []byte("\x00binary\xff")},
		}}},
		{"insert with every kind of value", txn([]Relation{usersRel},
			Change{Op: OpInsert, Relation: 16384, New: []Value{text("1"), null, text(""), unchanged}},
			Change{Op: OpInsert, Relation: 16384, New: []Value{text("2"), text("Zoë 日本語 🐘"), text("-0.50"), text("a\x00b\x00\xff")}},
		)},
		{"update without old", txn([]Relation{usersRel},
			Change{Op: OpUpdate, Relation: 16384, New: []Value{text("1"), text("x"), null, unchanged}},
		)},
		{"update with old key", txn([]Relation{usersRel},
			Change{Op: OpUpdate, Relation: 16384,
				Old: []Value{text("1"), null, null, null},
				New: []Value{text("2"), text("x"), null, unchanged}},
		)},
		{"delete with full old row", txn([]Relation{ordersRel},
			Change{Op: OpDelete, Relation: 16400, Old: []Value{text("0b8e4a5c-8a39-4f3e-9d8a-2b3c1d0e9f7a"), text(`\x00ff10`)}},
		)},
		{"truncate with cascade", txn([]Relation{usersRel, ordersRel},
			Change{Op: OpTruncate, Truncated: []uint32{16384, 16400}, TruncateOpts: TruncateCascade | TruncateRestartIdentity},
			Change{Op: OpTruncate, Truncated: []uint32{99999}},
		)},
		{"multiple relations", txn([]Relation{ordersRel, usersRel, {ID: 5, Schema: "s", Name: "empty"}},
			Change{Op: OpInsert, Relation: 16384, New: []Value{text("1"), null, null, null}},
			Change{Op: OpInsert, Relation: 16400, New: []Value{text("u"), text("p")}},
			Change{Op: OpInsert, Relation: 5},
			Change{Op: OpDelete, Relation: 16384, Old: []Value{text("1"), null, null, null}},
		)},
		{"zero commit time", &Envelope{Kind: KindTxn, Source: "s", Xid: 1, CommitLSN: 1, Flags: FlagFirst}},
		{"epoch commit time", &Envelope{Kind: KindHeartbeat, Source: "s", CommitTime: time.Unix(0, 0).UTC()}},
		{"pre-epoch commit time", &Envelope{Kind: KindHeartbeat, Source: "s", CommitTime: time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC)}},
		{"max values", &Envelope{
			Kind: KindTxn, Source: strings.Repeat("s", 300), Origin: "pg_16999", Xid: math.MaxUint32,
			CommitLSN: math.MaxUint64, EndLSN: math.MaxUint64, CommitTime: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
			Chunk: math.MaxUint32, Flags: FlagLast,
			Relations: []Relation{{ID: math.MaxUint32, Schema: "s", Name: "t", Identity: IdentityIndex,
				Columns: []Column{{Name: "c", Key: true, TypeOID: math.MaxUint32, TypeMod: math.MinInt32, Type: "x"},
					{Name: "d", TypeOID: 0, TypeMod: math.MaxInt32, Type: "y"}}}},
			Changes: []Change{{Op: OpInsert, Relation: math.MaxUint32, New: []Value{text(strings.Repeat("v", 70000)), null}}},
		}},
		{"middle chunk", &Envelope{Kind: KindTxn, Source: "s", Xid: 9, CommitLSN: 0x100, Chunk: 7, CommitTime: commitTime,
			Relations: []Relation{usersRel},
			Changes:   []Change{{Op: OpInsert, Relation: 16384, New: []Value{text("7"), null, null, null}}}}},
		{"many relations", manyRelations(20)},
	}
}

func manyRelations(n int) *Envelope {
	e := txn(nil)
	for i := range n {
		id := uint32(1000 + i)
		e.Relations = append(e.Relations, Relation{ID: id, Schema: "public", Name: fmt.Sprintf("t%d", i),
			Identity: IdentityDefault, Columns: []Column{{Name: "id", Key: true, TypeOID: 23, TypeMod: -1, Type: "integer"}}})
		e.Changes = append(e.Changes, Change{Op: OpInsert, Relation: id, New: []Value{text(fmt.Sprint(i))}})
	}
	return e
}

func TestEncode_RoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := Encode(tc.env)
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := diffEnvelope(got, tc.env); diff != "" {
				t.Fatalf("round trip: %s", diff)
			}
			if got, want := got.CommitTime.Location(), time.UTC; got != want {
				t.Errorf("CommitTime location = %v, want %v", got, want)
			}
			if got, want := got.CommitTime.IsZero(), tc.env.CommitTime.IsZero(); got != want {
				t.Errorf("CommitTime.IsZero() = %v, want %v", got, want)
			}
			// Appending reuses the caller's buffer and leaves its prefix alone.
			prefix := []byte("prefix")
			appended := AppendEnvelope(prefix, tc.env)
			if got, want := string(appended[:len(prefix)]), "prefix"; got != want {
				t.Errorf("AppendEnvelope prefix = %q, want %q", got, want)
			}
			if !bytes.Equal(appended[len(prefix):], b) {
				t.Errorf("AppendEnvelope wrote different bytes than Encode")
			}
		})
	}
}

func TestDecode_UpdateOldNil(t *testing.T) {
	for _, old := range [][]Value{nil, {}} {
		e := txn([]Relation{usersRel}, Change{Op: OpUpdate, Relation: 16384, Old: old, New: []Value{text("1"), null, null, null}})
		got, err := Decode(Encode(e))
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if got.Changes[0].Old != nil {
			t.Errorf("Old = %#v, want nil", got.Changes[0].Old)
		}
	}
}

func TestDecode_DropsFieldsWithoutPlace(t *testing.T) {
	e := txn([]Relation{usersRel},
		Change{Op: OpInsert, Relation: 16384, Old: []Value{text("x"), null, null, null}, New: []Value{{Kind: ValueNull, Data: []byte("junk")}, null, null, unchanged}},
		Change{Op: OpTruncate, Relation: 16384, Truncated: []uint32{16384}},
	)
	got, err := Decode(Encode(e))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got, want := got.Changes[0].Old, []Value(nil); got != nil {
		t.Errorf("insert Old = %#v, want %#v", got, want)
	}
	if got := got.Changes[0].New[0].Data; got != nil {
		t.Errorf("NULL Data = %q, want nil", got)
	}
	if got, want := got.Changes[1].Relation, uint32(0); got != want {
		t.Errorf("truncate Relation = %d, want %d", got, want)
	}
}

func TestDecode_TimeTruncatedToMicroseconds(t *testing.T) {
	e := &Envelope{Kind: KindHeartbeat, CommitTime: time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.FixedZone("X", 3600))}
	got, err := Decode(Encode(e))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got, want := got.CommitTime, time.Date(2024, 1, 2, 2, 4, 5, 123456000, time.UTC); got != want {
		t.Errorf("CommitTime = %v, want %v", got, want)
	}
}

func TestDecode_Truncated(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := Encode(tc.env)
			if len(b) > 4096 {
				b = b[:4096] // every prefix of the big value says the same
			}
			for n := range len(b) {
				_, err := Decode(b[:n])
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("Decode(first %d of %d bytes) error = %v, want *DecodeError", n, len(b), err)
				}
				if de.Offset < 0 || de.Offset > n {
					t.Fatalf("Decode(first %d bytes) offset = %d, outside the input", n, de.Offset)
				}
			}
		})
	}
}

// builder writes envelope bytes by hand for malformed-input tests.
type builder []byte

func (b builder) raw(p ...byte) builder      { return append(b, p...) }
func (b builder) uv(v uint64) builder        { return binary.AppendUvarint(b, v) }
func (b builder) sv(v int64) builder         { return binary.AppendVarint(b, v) }
func (b builder) str(s string) builder       { return append(b.uv(uint64(len(s))), s...) }
func (b builder) lsn(v uint64) builder       { return binary.BigEndian.AppendUint64(b, v) }
func (b builder) column(name string) builder { return b.raw(0).str(name).uv(25).sv(-1).str("text") }

// header writes the preamble and fixed fields of a txn envelope up to and
// including the flags byte.
func header() builder {
	return builder("PJ").raw(Version, byte(KindTxn)).str("src").str("").uv(7).lsn(1).lsn(2).sv(0).uv(0).raw(FlagFirst | FlagLast)
}

// oneRel is header() plus one relation (id 1, two text columns).
func oneRel() builder {
	return header().uv(1).uv(1).str("public").str("t").raw(IdentityDefault).uv(2).column("a").column("b")
}

func TestDecode_Malformed(t *testing.T) {
	valid := Encode(txn([]Relation{usersRel}, Change{Op: OpInsert, Relation: 16384, New: []Value{text("1"), null, null, null}}))
	withByte := func(i int, c byte) []byte {
		b := bytes.Clone(valid)
		b[i] = c
		return b
	}
	tests := []struct {
		name   string
		in     []byte
		offset int
		reason string // substring of DecodeError.Reason
	}{
		{"empty", nil, 0, "truncated preamble"},
		{"bad magic", withByte(0, 'X'), 0, "bad magic"},
		{"bad magic short", []byte("P"), 1, "truncated preamble"},
		{"bad second magic byte", []byte("PX"), 0, "bad magic"},
		{"version 0", withByte(2, 0), 2, "invalid version 0"},
		{"version 2", withByte(2, 2), 2, "version 2 is newer"},
		{"kind 0", withByte(3, 0), 3, "unknown kind 0"},
		{"kind 4", withByte(3, 4), 3, "unknown kind 4"},
		{"trailing byte", append(bytes.Clone(valid), 0), len(valid), "1 trailing bytes"},
		{"unknown flags", builder("PJ").raw(Version, byte(KindTxn)).str("").str("").uv(0).lsn(0).lsn(0).sv(0).uv(0).raw(4), 25, "unknown flags 0x04"},
		{"xid out of range", builder("PJ").raw(Version, byte(KindTxn)).str("").str("").uv(1 << 32), 6, "xid 4294967296 out of range"},
		{"overlong varint", builder("PJ").raw(Version, byte(KindTxn)).raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), 4, "overflows 64 bits"},
		{"huge string", builder("PJ").raw(Version, byte(KindTxn)).uv(1 << 40).raw([]byte("abc")...), 4, "truncated source: length 1099511627776"},
		{"huge relation count", header().uv(1e9).raw(make([]byte, 10)...), len(header()), "relation count 1000000000 exceeds"},
		{"huge column count", header().uv(1).uv(1).str("s").str("t").raw('d').uv(1e9), len(header()) + 7, "column count 1000000000 exceeds"},
		{"huge change count", oneRel().uv(math.MaxUint64), len(oneRel()), "change count 18446744073709551615 exceeds"},
		{"huge tuple", oneRel().uv(1).raw('I').uv(1).uv(1e9), len(oneRel()) + 3, "tuple column count 1000000000 exceeds"},
		{"huge truncate", oneRel().uv(1).raw('T', 0).uv(1e9), len(oneRel()) + 3, "truncated relation count 1000000000 exceeds"},
		{"unknown column flags", header().uv(1).uv(1).str("s").str("t").raw('d').uv(1).raw(2).str("a").uv(25).sv(-1).str("text").uv(0), len(header()) + 8, "unknown column flags 0x02"},
		{"typmod out of range", header().uv(1).uv(1).str("s").str("t").raw('d').uv(1).raw(0).str("a").uv(25).sv(1 << 31).str("text").uv(0), len(header()) + 12, "typmod 2147483648 out of range"},
		{"duplicate relation", header().uv(2).uv(1).str("s").str("t").raw('d').uv(0).uv(1).str("s").str("u").raw('d').uv(0).uv(0), len(header()) + 8, "duplicate relation 1"},
		{"unknown op", oneRel().uv(1).raw('X', 0, 0), len(oneRel()) + 1, "unknown change op 0x58"},
		{"unknown relation", oneRel().uv(1).raw('I').uv(2).uv(2).raw('n', 'n'), len(oneRel()) + 2, "relation 2, which the envelope does not describe"},
		{"tuple too short", oneRel().uv(1).raw('I').uv(1).uv(1).raw('n'), len(oneRel()) + 3, "tuple has 1 columns, relation 1 (public.t) has 2"},
		{"tuple too long", oneRel().uv(1).raw('I').uv(1).uv(3).raw('n', 'n', 'n'), len(oneRel()) + 3, "tuple has 3 columns"},
		{"old tuple of wrong width", oneRel().uv(1).raw('D').uv(1).uv(0), len(oneRel()) + 3, "tuple has 0 columns"},
		{"bad old marker", oneRel().uv(1).raw('U').uv(1).raw(2), len(oneRel()) + 3, "old tuple marker 2"},
		{"unknown value kind", oneRel().uv(1).raw('I').uv(1).uv(2).raw('n', 'b'), len(oneRel()) + 5, "unknown value kind 0x62"},
		{"truncated text value", oneRel().uv(1).raw('I').uv(1).uv(2).raw('n', 't').uv(5).raw([]byte("abc")...), len(oneRel()) + 6, "truncated text value"},
		{"unknown truncate options", oneRel().uv(1).raw('T', 4).uv(0), len(oneRel()) + 2, "unknown truncate options 0x04"},
		{"truncate id out of range", oneRel().uv(1).raw('T', 0).uv(1).uv(1 << 32), len(oneRel()) + 4, "truncated relation id 4294967296 out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode(tc.in)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode = %+v, %v; want *DecodeError", e, err)
			}
			if e != nil {
				t.Errorf("Decode returned an envelope with error %v", err)
			}
			if got, want := de.Offset, tc.offset; got != want {
				t.Errorf("Offset = %d, want %d (%v)", got, want, err)
			}
			if !strings.Contains(de.Reason, tc.reason) {
				t.Errorf("Reason = %q, want it to contain %q", de.Reason, tc.reason)
			}
			if got, want := err.Error(), fmt.Sprintf("decode envelope at byte %d: %s", de.Offset, de.Reason); got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestDecode_BuilderMatchesEncoder(t *testing.T) {
	// The hand-built bytes used above must be what the encoder writes, or
	// the malformed cases test nothing.
	e := &Envelope{Kind: KindTxn, Source: "src", Xid: 7, CommitLSN: 1, EndLSN: 2, CommitTime: time.Unix(0, 0), Flags: FlagFirst | FlagLast,
		Relations: []Relation{{ID: 1, Schema: "public", Name: "t", Identity: IdentityDefault, Columns: []Column{
			{Name: "a", TypeOID: 25, TypeMod: -1, Type: "text"}, {Name: "b", TypeOID: 25, TypeMod: -1, Type: "text"}}}},
	}
	if got, want := Encode(e), []byte(oneRel().uv(0)); !bytes.Equal(got, want) {
		t.Fatalf("Encode = %x, want %x", got, want)
	}
}

func TestDecode_ValuesAliasInput(t *testing.T) {
	b := Encode(txn([]Relation{ordersRel}, Change{Op: OpInsert, Relation: 16400, New: []Value{text("abc"), text("def")}}))
	e, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	// Appending to a value must not clobber its neighbour.
	_ = append(e.Changes[0].New[0].Data, 'X')
	if got, want := string(e.Changes[0].New[1].Data), "def"; got != want {
		t.Errorf("second value = %q, want %q", got, want)
	}
	_ = append(e.Changes[0].New, text("zzz"))
	if got, want := len(e.Changes[0].New), 2; got != want {
		t.Errorf("len(New) = %d, want %d", got, want)
	}
	// Strings are copies: reusing b does not change them.
	name := e.Relations[0].Name
	clear(b)
	if got, want := name, "Orders ✓"; got != want {
		t.Errorf("relation name after reuse = %q, want %q", got, want)
	}
}

func FuzzDecode(f *testing.F) {
	for _, tc := range roundTripCases() {
		f.Add(Encode(tc.env))
	}
	f.Add([]byte{})
	f.Add([]byte("PJ"))
	f.Add([]byte("PJ\x01\x01"))
	f.Add([]byte("PJ\x02\x01garbage"))
	f.Add([]byte("\x00\xff\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"))
	f.Add([]byte(oneRel().uv(1).raw('U').uv(1).raw(1).uv(2).raw('n', 'u').uv(2).raw('t').uv(0).raw('t').uv(1).raw(0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is %T, want *DecodeError", err, err)
			}
			if e != nil {
				t.Fatalf("envelope returned with error %v", err)
			}
			return
		}
		b2 := Encode(e)
		e2, err := Decode(b2)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v", err)
		}
		if diff := diffEnvelope(e2, e); diff != "" {
			t.Fatalf("re-encoded envelope differs: %s", diff)
		}
		if b3 := Encode(e2); !bytes.Equal(b3, b2) {
			t.Fatalf("encoding is not stable:\n%x\n%x", b2, b3)
		}
		if _, err := EnvelopeJSON(e); err != nil {
			t.Fatalf("EnvelopeJSON of a decoded envelope: %v", err)
		}
	})
}

// diffEnvelope describes the first difference between got and want, or
// returns "". Byte slices compare by content (nil equals empty); Old
// compares nil-ness too, since a nil Old means "not sent".
func diffEnvelope(got, want *Envelope) string {
	if got.Kind != want.Kind || got.Source != want.Source || got.Origin != want.Origin || got.Xid != want.Xid ||
		got.CommitLSN != want.CommitLSN || got.EndLSN != want.EndLSN || got.Chunk != want.Chunk || got.Flags != want.Flags {
		return fmt.Sprintf("header = %+v, want %+v", *got, *want)
	}
	if !got.CommitTime.Equal(want.CommitTime) || got.CommitTime.IsZero() != want.CommitTime.IsZero() {
		return fmt.Sprintf("CommitTime = %v, want %v", got.CommitTime, want.CommitTime)
	}
	if len(got.Relations) != len(want.Relations) {
		return fmt.Sprintf("%d relations, want %d", len(got.Relations), len(want.Relations))
	}
	for i := range got.Relations {
		g, w := &got.Relations[i], &want.Relations[i]
		if g.ID != w.ID || g.Schema != w.Schema || g.Name != w.Name || g.Identity != w.Identity || len(g.Columns) != len(w.Columns) {
			return fmt.Sprintf("relation %d = %+v, want %+v", i, *g, *w)
		}
		for j := range g.Columns {
			if g.Columns[j] != w.Columns[j] {
				return fmt.Sprintf("relation %d column %d = %+v, want %+v", i, j, g.Columns[j], w.Columns[j])
			}
		}
	}
	if len(got.Changes) != len(want.Changes) {
		return fmt.Sprintf("%d changes, want %d", len(got.Changes), len(want.Changes))
	}
	for i := range got.Changes {
		g, w := &got.Changes[i], &want.Changes[i]
		if g.Op != w.Op || g.Relation != w.Relation || g.TruncateOpts != w.TruncateOpts {
			return fmt.Sprintf("change %d = %+v, want %+v", i, *g, *w)
		}
		if (g.Old == nil) != (w.Old == nil) {
			return fmt.Sprintf("change %d Old = %v, want %v", i, g.Old, w.Old)
		}
		if d := diffTuple(g.Old, w.Old); d != "" {
			return fmt.Sprintf("change %d Old: %s", i, d)
		}
		if d := diffTuple(g.New, w.New); d != "" {
			return fmt.Sprintf("change %d New: %s", i, d)
		}
		if len(g.Truncated) != len(w.Truncated) {
			return fmt.Sprintf("change %d Truncated = %v, want %v", i, g.Truncated, w.Truncated)
		}
		for j := range g.Truncated {
			if g.Truncated[j] != w.Truncated[j] {
				return fmt.Sprintf("change %d Truncated = %v, want %v", i, g.Truncated, w.Truncated)
			}
		}
	}
	return ""
}

func diffTuple(got, want []Value) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d values, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Kind != want[i].Kind || !bytes.Equal(got[i].Data, want[i].Data) {
			return fmt.Sprintf("value %d = %c %q, want %c %q", i, got[i].Kind, got[i].Data, want[i].Kind, want[i].Data)
		}
	}
	return ""
}

// typicalChunk is a 100-row chunk of inserts into an 8-column table.
func typicalChunk() *Envelope {
	rel := Relation{ID: 16500, Schema: "public", Name: "events", Identity: IdentityDefault, Columns: []Column{
		{Name: "id", Key: true, TypeOID: 20, TypeMod: -1, Type: "bigint"},
		{Name: "account_id", TypeOID: 20, TypeMod: -1, Type: "bigint"},
		{Name: "kind", TypeOID: 1043, TypeMod: 36, Type: "character varying(32)"},
		{Name: "amount", TypeOID: 1700, TypeMod: (12<<16 | 2) + 4, Type: "numeric(12,2)"},
		{Name: "created_at", TypeOID: 1184, TypeMod: -1, Type: "timestamp with time zone"},
		{Name: "note", TypeOID: 25, TypeMod: -1, Type: "text"},
		{Name: "payload", TypeOID: 3802, TypeMod: -1, Type: "jsonb"},
		{Name: "deleted", TypeOID: 16, TypeMod: -1, Type: "boolean"},
	}}
	e := txn([]Relation{rel})
	for i := range 100 {
		e.Changes = append(e.Changes, Change{Op: OpInsert, Relation: rel.ID, New: []Value{
			text(fmt.Sprint(1000000 + i)), text("42"), text("purchase"), text("1234.50"),
			text("2024-05-01 10:00:00.123456+00"), null,
			text(`{"sku": "ABC-123", "qty": 3, "tags": ["red", "large"]}`), text("f"),
		}})
	}
	return e
}

func BenchmarkEncode(b *testing.B) {
	e := typicalChunk()
	buf := Encode(e)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEnvelope(buf[:0], e)
	}
}

func BenchmarkDecode(b *testing.B) {
	buf := Encode(typicalChunk())
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodeMessage_Batch(t *testing.T) {
	txn := func(lsn LSN) []byte {
		return Encode(&Envelope{Kind: KindTxn, Source: "s", CommitLSN: lsn, EndLSN: lsn + 8, Flags: FlagFirst | FlagLast})
	}
	b := AppendBatch(nil, [][]byte{txn(10), txn(20), txn(30)})
	envs, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(envs), 3; got != want {
		t.Fatalf("envelopes = %d, want %d", got, want)
	}
	if got, want := envs[2].CommitLSN, LSN(30); got != want {
		t.Errorf("third commit LSN = %s, want %s", got, want)
	}
	single, err := DecodeMessage(txn(5))
	if err != nil || len(single) != 1 {
		t.Fatalf("single envelope: %v, %d", err, len(single))
	}
	for name, bad := range map[string][]byte{
		"out of order":  AppendBatch(nil, [][]byte{txn(20), txn(10)}),
		"empty":         AppendBatch(nil, nil),
		"partial chunk": AppendBatch(nil, [][]byte{Encode(&Envelope{Kind: KindTxn, Source: "s", CommitLSN: 1, Flags: FlagFirst})}),
		"trailing":      append(AppendBatch(nil, [][]byte{txn(1)}), 0),
		"truncated":     b[:len(b)-1],
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeMessage(bad); err == nil {
				t.Fatal("decoded, want an error")
			} else if _, ok := err.(*DecodeError); !ok {
				t.Fatalf("error %T, want *DecodeError", err)
			}
		})
	}
}

func FuzzDecodeMessage(f *testing.F) {
	txn := Encode(&Envelope{Kind: KindTxn, Source: "s", CommitLSN: 1, Flags: FlagFirst | FlagLast})
	f.Add(AppendBatch(nil, [][]byte{txn}))
	f.Add(txn)
	f.Add([]byte("PB\x01\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		envs, err := DecodeMessage(b)
		if err == nil && len(envs) == 0 {
			t.Fatal("no envelopes and no error")
		}
		if entries, err := SplitBatch(b); err == nil && len(entries) == 0 {
			t.Fatal("no batch entries and no error")
		}
	})
}

func TestParseMsgID(t *testing.T) {
	for _, id := range []string{MsgID("app", 0x16B3748, 7, "0a1b2c3d"), "app:00000000016B3748:7"} {
		src, lsn, chunk, ok := ParseMsgID(id)
		if !ok || src != "app" || lsn != 0x16B3748 || chunk != 7 {
			t.Errorf("ParseMsgID(%q) = %q, %s, %d, %v", id, src, lsn, chunk, ok)
		}
	}
	for _, id := range []string{"", "app:0000000001508C70-0000000001508D00:b", "app:16B3748:0", "app:000000000016B3748:x", "hb:1"} {
		if _, _, _, ok := ParseMsgID(id); ok {
			t.Errorf("ParseMsgID(%q) ok, want not a chunk id", id)
		}
	}
}

func TestSplitBatch(t *testing.T) {
	txn := func(lsn LSN) []byte {
		return Encode(&Envelope{Kind: KindTxn, Source: "s", CommitLSN: lsn, EndLSN: lsn + 8, Flags: FlagFirst | FlagLast})
	}
	garbage := []byte("PJ\x01\x01garbage")
	// A damaged entry fails DecodeMessage but not the framing.
	b := AppendBatch(nil, [][]byte{txn(10), garbage, txn(30)})
	if _, err := DecodeMessage(b); err == nil {
		t.Fatal("DecodeMessage read a batch with a damaged entry")
	}
	entries, err := SplitBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || string(entries[1]) != string(garbage) || string(entries[2]) != string(txn(30)) {
		t.Errorf("entries = %q", entries)
	}
	for name, bad := range map[string][]byte{
		"single envelope": txn(5),
		"truncated":       b[:len(b)-1],
		"trailing":        append(b, 0),
	} {
		if _, err := SplitBatch(bad); err == nil {
			t.Errorf("%s: split, want an error", name)
		}
	}
}

func TestParseBatchMsgID(t *testing.T) {
	src, first, last, ok := ParseBatchMsgID(BatchMsgID("app", 0x1508C70, 0x1508D00))
	if !ok || src != "app" || first != 0x1508C70 || last != 0x1508D00 {
		t.Errorf("ParseBatchMsgID(BatchMsgID(...)) = %q, %s, %s, %v", src, first, last, ok)
	}
	for _, id := range []string{"", MsgID("app", 1, 0, "x"), "app:0000000001508C70-1508D00:b", "app:0000000001508C70-0000000001508D00:c"} {
		if _, _, _, ok := ParseBatchMsgID(id); ok {
			t.Errorf("ParseBatchMsgID(%q) ok, want not a batch id", id)
		}
	}
}
