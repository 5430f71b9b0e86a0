package stream

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// The binary layout is specified byte by byte in ENVELOPE.md; keep the two
// in step. Any change to the layout needs a Version bump.

// Magic is the two bytes every envelope starts with.
const Magic = "PJ"

// colFlagKey is bit 0 of a column's flags byte: the column is part of the
// replica identity key. The other bits are reserved and must be zero.
const colFlagKey = 1 << 0

// knownFlags are the envelope flag bits each version defines; a decoder
// refuses the others so that a new flag cannot be silently ignored.
var knownFlags = [Version + 1]uint8{1: FlagFirst | FlagLast, 2: FlagFirst | FlagLast | FlagPiece}

// minVersion is the version an envelope is written in unless it carries
// values in pieces (see Version).
const minVersion = 1

// versionOffset is where the version byte sits in an envelope.
const versionOffset = 2

// knownTruncateOpts are the TRUNCATE option bits version 1 defines.
const knownTruncateOpts = TruncateCascade | TruncateRestartIdentity

// zeroTimeMicros is how the zero time.Time is written: its own Unix
// microseconds (0001-01-01T00:00:00Z). No source commit can carry that
// time, so it cannot be confused with a real one, and it is what the
// arithmetic would give anyway; the decoder maps it back to time.Time{}.
const zeroTimeMicros = -62135596800000000

// Smallest encodings, used to refuse counts the remaining bytes cannot
// possibly hold before anything is allocated for them.
const (
	minRelationSize = 5 // id, schema length, name length, identity, column count
	minColumnSize   = 5 // flags, name length, type OID, typmod, type length
	minChangeSize   = 3 // op, relation (or options), tuple (or id) count
	minValueSize    = 1 // kind
	minRelIDSize    = 1 // one uvarint byte
)

// AppendEnvelope appends the binary encoding of e to dst and returns the
// extended slice, so that a publisher can reuse one buffer for every
// message.
//
// AppendEnvelope does not validate e; it writes what Decode reads and
// nothing else. Fields that have no place in the format are dropped (Old
// of an insert, New of a delete, Relation of a truncate, Data of a NULL or
// unchanged value), Old of an update is written only when it is not empty,
// and CommitTime is truncated to microseconds, Postgres' precision. An
// envelope that breaks Decode's rules (an insert, update or delete whose
// relation is not in Relations, a tuple whose length differs from its
// relation's column count, a delete without Old, unknown kinds, ops or
// flags, a value in pieces that is not in the last change of a chunk
// that is not the last) encodes to bytes that Decode refuses.
//
// The envelope is written in version 1 unless it is a piece chunk or has
// a value in pieces, which need version 2. A piece chunk is written with
// its Piece alone: its Relations and Changes are dropped. A value in
// pieces is written with its Size, not its Data.
func AppendEnvelope(dst []byte, e *Envelope) []byte {
	dst = slices.Grow(dst, sizeHint(e))
	start := len(dst)
	dst = append(dst, Magic[0], Magic[1], minVersion, byte(e.Kind))
	dst = appendString(dst, e.Source)
	dst = appendString(dst, e.Origin)
	dst = binary.AppendUvarint(dst, uint64(e.Xid))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.CommitLSN))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.EndLSN))
	dst = binary.AppendVarint(dst, timeToMicros(e.CommitTime))
	dst = binary.AppendUvarint(dst, uint64(e.Chunk))
	dst = append(dst, e.Flags)
	if e.Flags&FlagPiece != 0 {
		dst[start+versionOffset] = 2
		return appendBytes(dst, e.Piece)
	}

	dst = binary.AppendUvarint(dst, uint64(len(e.Relations)))
	for i := range e.Relations {
		r := &e.Relations[i]
		dst = binary.AppendUvarint(dst, uint64(r.ID))
		dst = appendString(dst, r.Schema)
		dst = appendString(dst, r.Name)
		dst = append(dst, r.Identity)
		dst = binary.AppendUvarint(dst, uint64(len(r.Columns)))
		for j := range r.Columns {
			c := &r.Columns[j]
			var flags byte
			if c.Key {
				flags |= colFlagKey
			}
			dst = append(dst, flags)
			dst = appendString(dst, c.Name)
			dst = binary.AppendUvarint(dst, uint64(c.TypeOID))
			dst = binary.AppendVarint(dst, int64(c.TypeMod))
			dst = appendString(dst, c.Type)
		}
	}

	dst = binary.AppendUvarint(dst, uint64(len(e.Changes)))
	for i := range e.Changes {
		c := &e.Changes[i]
		dst = append(dst, byte(c.Op))
		switch c.Op {
		case OpInsert:
			dst = binary.AppendUvarint(dst, uint64(c.Relation))
			dst = appendTuple(dst, c.New, start)
		case OpUpdate:
			dst = binary.AppendUvarint(dst, uint64(c.Relation))
			if len(c.Old) > 0 {
				dst = append(dst, 1)
				dst = appendTuple(dst, c.Old, start)
			} else {
				dst = append(dst, 0)
			}
			dst = appendTuple(dst, c.New, start)
		case OpDelete:
			dst = binary.AppendUvarint(dst, uint64(c.Relation))
			dst = appendTuple(dst, c.Old, start)
		case OpTruncate:
			dst = append(dst, c.TruncateOpts)
			dst = binary.AppendUvarint(dst, uint64(len(c.Truncated)))
			for _, id := range c.Truncated {
				dst = binary.AppendUvarint(dst, uint64(id))
			}
		case OpMessage:
			var flags byte
			if c.Transactional {
				flags = 1
			}
			dst = append(dst, flags)
			dst = appendString(dst, c.Prefix)
			dst = binary.AppendUvarint(dst, uint64(len(c.Content)))
			dst = append(dst, c.Content...)
		}
	}
	return dst
}

// Encode returns the binary encoding of e in a new slice; see
// AppendEnvelope.
func Encode(e *Envelope) []byte {
	return AppendEnvelope(nil, e)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendTuple appends a tuple of the envelope that starts at dst[start];
// a value in pieces makes it a version 2 envelope.
func appendTuple(dst []byte, vals []Value, start int) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(vals)))
	for i := range vals {
		v := &vals[i]
		dst = append(dst, v.Kind)
		switch v.Kind {
		case ValueText:
			dst = appendBytes(dst, v.Data)
		case ValuePieces:
			dst[start+versionOffset] = 2
			dst = binary.AppendUvarint(dst, uint64(v.Size))
		}
	}
	return dst
}

func timeToMicros(t time.Time) int64 {
	if t.IsZero() {
		return zeroTimeMicros
	}
	return t.UnixMicro()
}

func microsToTime(us int64) time.Time {
	if us == zeroTimeMicros {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// sizeHint estimates the encoded size of e closely enough that encoding
// into a fresh buffer does not reallocate.
func sizeHint(e *Envelope) int {
	n := 4 + 2*binary.MaxVarintLen32 + 16 + binary.MaxVarintLen64 + binary.MaxVarintLen32 + 1 +
		len(e.Source) + len(e.Origin) + 2*binary.MaxVarintLen32 + len(e.Piece)
	for i := range e.Relations {
		r := &e.Relations[i]
		n += 16 + len(r.Schema) + len(r.Name)
		for j := range r.Columns {
			n += 16 + len(r.Columns[j].Name) + len(r.Columns[j].Type)
		}
	}
	for i := range e.Changes {
		c := &e.Changes[i]
		n += 12 + 5*len(c.Truncated)
		for j := range c.Old {
			n += 6 + len(c.Old[j].Data)
		}
		for j := range c.New {
			n += 6 + len(c.New[j].Data)
		}
	}
	return n
}

// DecodeError is the error Decode returns for bytes that are not a valid
// envelope of a version it reads. Such a message can never be applied:
// retrying it will fail the same way.
type DecodeError struct {
	Offset int    // byte offset of the offending field in the message
	Reason string // what is wrong there
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode envelope at byte %d: %s", e.Offset, e.Reason)
}

// Decode decodes one envelope. It never panics, whatever b holds, and it
// allocates no more than a small multiple of len(b). Every error is a
// *DecodeError.
//
// Besides the layout, Decode checks that the version is one it reads
// (1..Version), that kinds, ops, value kinds and flag bits are known,
// that no bytes follow the envelope, that relation ids are unique, that
// every insert, update and delete refers to a relation of the same
// envelope and that each of its tuples has exactly as many values as that
// relation has columns, so a consumer can index Relations and tuples
// without further checks. A delete always has Old; an update without an
// old tuple has Old == nil; empty tuple and truncate lists decode as nil.
// Values in pieces (version 2) have a Size of 1 to MaxValueSize, occur in
// the last change of a chunk only, and never in a transaction's last
// chunk; a piece chunk is a middle chunk of a transaction, its Piece
// holds at least one byte.
//
// The Data of decoded text values aliases b: b must not be modified or
// reused while the envelope is in use, and a consumer that keeps values
// beyond that copies them (bytes.Clone). Strings (names, types, source,
// origin) are copies and do not pin b. CommitTime is in UTC; the zero
// time.Time round-trips as the zero time.Time.
func Decode(b []byte) (*Envelope, error) {
	d := decoder{b: b, piecesAt: -1, pieced: -1}
	e := new(Envelope)
	if err := d.preamble(e); err != nil {
		return nil, err
	}

	// The header and relations hold every string of the envelope. A dry
	// pass finds where they end, so that one string conversion can back
	// all of them instead of one allocation per name.
	start := d.off
	d.dry = true
	if err := d.header(e); err != nil {
		return nil, err
	}
	if !e.IsPiece() {
		if err := d.relations(e); err != nil {
			return nil, err
		}
	}
	d.text, d.textBase = string(b[start:d.off]), start
	d.off, d.dry = start, false
	if err := d.header(e); err != nil {
		return nil, err
	}
	if e.IsPiece() {
		if err := d.piece(e); err != nil {
			return nil, err
		}
	} else {
		if err := d.relations(e); err != nil {
			return nil, err
		}
		if err := d.changes(e); err != nil {
			return nil, err
		}
	}
	if d.off != len(b) {
		return nil, d.errorf(d.off, "%d trailing bytes after the envelope", len(b)-d.off)
	}
	return e, nil
}

// decoder reads one envelope from b.
type decoder struct {
	b       []byte
	off     int
	version uint8
	// piecesAt is the offset of the first value in pieces, -1 for none
	// yet; pieced is the index of its change.
	piecesAt, pieced int

	// dry is set during the first pass over header and relations: strings
	// are checked and skipped, relations are not stored.
	dry bool
	// text holds b[textBase:] up to the end of the relations, as a string
	// that all decoded strings are sliced from.
	text     string
	textBase int

	// byID maps relation ids to indexes in Relations when there are too
	// many relations for a linear search.
	byID map[uint32]int
	// slab is unused Value space that tuples are carved from.
	slab []Value
}

func (d *decoder) errorf(off int, format string, args ...any) *DecodeError {
	return &DecodeError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) byte1(what string) (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.errorf(d.off, "truncated %s", what)
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n == 0 {
		return 0, d.errorf(d.off, "truncated %s", what)
	}
	if n < 0 {
		return 0, d.errorf(d.off, "%s overflows 64 bits", what)
	}
	d.off += n
	return v, nil
}

func (d *decoder) varint(what string) (int64, error) {
	v, n := binary.Varint(d.b[d.off:])
	if n == 0 {
		return 0, d.errorf(d.off, "truncated %s", what)
	}
	if n < 0 {
		return 0, d.errorf(d.off, "%s overflows 64 bits", what)
	}
	d.off += n
	return v, nil
}

func (d *decoder) uint32v(what string) (uint32, error) {
	off := d.off
	v, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint32 {
		return 0, d.errorf(off, "%s %d out of range", what, v)
	}
	return uint32(v), nil
}

// count reads an element count and refuses one that the remaining bytes
// cannot hold at minSize bytes per element.
func (d *decoder) count(what string, minSize int) (int, error) {
	off := d.off
	n, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if n > uint64(d.remaining()/minSize) {
		return 0, d.errorf(off, "%s %d exceeds what the remaining %d bytes can hold", what, n, d.remaining())
	}
	return int(n), nil
}

func (d *decoder) fixed64(what string) (uint64, error) {
	if d.remaining() < 8 {
		return 0, d.errorf(d.off, "truncated %s", what)
	}
	v := binary.BigEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v, nil
}

// bytes reads a length-prefixed byte string, aliasing b.
func (d *decoder) bytes(what string) ([]byte, error) {
	off := d.off
	n, k := binary.Uvarint(d.b[d.off:])
	if k == 0 {
		return nil, d.errorf(off, "truncated %s length", what)
	}
	if k < 0 {
		return nil, d.errorf(off, "%s length overflows 64 bits", what)
	}
	d.off += k
	if n > uint64(d.remaining()) {
		return nil, d.errorf(off, "truncated %s: length %d, %d bytes left", what, n, d.remaining())
	}
	p := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return p, nil
}

// str reads a length-prefixed string out of d.text; in the dry pass it
// only checks and skips it.
func (d *decoder) str(what string) (string, error) {
	p, err := d.bytes(what)
	if err != nil || d.dry || len(p) == 0 {
		return "", err
	}
	end := d.off - d.textBase
	return d.text[end-len(p) : end], nil
}

func (d *decoder) preamble(e *Envelope) error {
	if m := min(len(d.b), len(Magic)); string(d.b[:m]) != Magic[:m] {
		return d.errorf(0, "bad magic %q: not a pgjet envelope", d.b[:m])
	}
	if len(d.b) < 4 {
		return d.errorf(len(d.b), "truncated preamble: %d bytes", len(d.b))
	}
	switch v := d.b[2]; {
	case v == 0:
		return d.errorf(2, "invalid version 0")
	case v > Version:
		return d.errorf(2, "version %d is newer than this decoder's %d; upgrade pgjet", v, Version)
	}
	d.version = d.b[2]
	switch k := Kind(d.b[3]); k {
	case KindTxn, KindHeartbeat, KindMessage:
		e.Kind = k
	default:
		return d.errorf(3, "unknown kind %d", k)
	}
	d.off = 4
	return nil
}

func (d *decoder) header(e *Envelope) error {
	var err error
	if e.Source, err = d.str("source"); err != nil {
		return err
	}
	if e.Origin, err = d.str("origin"); err != nil {
		return err
	}
	if e.Xid, err = d.uint32v("xid"); err != nil {
		return err
	}
	lsn, err := d.fixed64("commit LSN")
	if err != nil {
		return err
	}
	e.CommitLSN = LSN(lsn)
	if lsn, err = d.fixed64("end LSN"); err != nil {
		return err
	}
	e.EndLSN = LSN(lsn)
	us, err := d.varint("commit time")
	if err != nil {
		return err
	}
	e.CommitTime = microsToTime(us)
	if e.Chunk, err = d.uint32v("chunk"); err != nil {
		return err
	}
	off := d.off
	if e.Flags, err = d.byte1("flags"); err != nil {
		return err
	}
	if known := knownFlags[d.version]; e.Flags&^known != 0 {
		return d.errorf(off, "unknown flags %#02x", e.Flags&^known)
	}
	if e.IsPiece() && (e.Kind != KindTxn || e.Flags&(FlagFirst|FlagLast) != 0) {
		return d.errorf(off, "a piece must be a middle chunk of a transaction (kind %d, flags %#02x)", e.Kind, e.Flags)
	}
	return nil
}

// piece reads what a piece chunk carries after its header.
func (d *decoder) piece(e *Envelope) error {
	off := d.off
	p, err := d.bytes("piece")
	if err != nil {
		return err
	}
	if len(p) == 0 {
		return d.errorf(off, "empty piece")
	}
	e.Piece = p
	return nil
}

func (d *decoder) relations(e *Envelope) error {
	n, err := d.count("relation count", minRelationSize)
	if err != nil {
		return err
	}
	var scratch Relation
	if !d.dry && n > 0 {
		e.Relations = make([]Relation, n)
	}
	for i := range n {
		r := &scratch
		if !d.dry {
			r = &e.Relations[i]
		}
		off := d.off
		if err := d.relation(r); err != nil {
			return err
		}
		if !d.dry {
			if err := d.index(e.Relations[:i+1], off); err != nil {
				return err
			}
		}
	}
	return nil
}

// linearLookup is the relation count up to which a linear search beats a
// map.
const linearLookup = 8

// index makes the last relation of rels findable and refuses a duplicate
// id.
func (d *decoder) index(rels []Relation, off int) error {
	i := len(rels) - 1
	id := rels[i].ID
	if i < linearLookup {
		for j := range i {
			if rels[j].ID == id {
				return d.errorf(off, "duplicate relation %d", id)
			}
		}
		return nil
	}
	if d.byID == nil {
		d.byID = make(map[uint32]int, len(rels))
		for j := range i {
			d.byID[rels[j].ID] = j
		}
	}
	if _, dup := d.byID[id]; dup {
		return d.errorf(off, "duplicate relation %d", id)
	}
	d.byID[id] = i
	return nil
}

func (d *decoder) lookup(rels []Relation, id uint32) (*Relation, bool) {
	if d.byID != nil {
		i, ok := d.byID[id]
		if !ok {
			return nil, false
		}
		return &rels[i], true
	}
	for i := range rels {
		if rels[i].ID == id {
			return &rels[i], true
		}
	}
	return nil, false
}

func (d *decoder) relation(r *Relation) error {
	var err error
	if r.ID, err = d.uint32v("relation id"); err != nil {
		return err
	}
	if r.Schema, err = d.str("relation schema"); err != nil {
		return err
	}
	if r.Name, err = d.str("relation name"); err != nil {
		return err
	}
	if r.Identity, err = d.byte1("replica identity"); err != nil {
		return err
	}
	n, err := d.count("column count", minColumnSize)
	if err != nil {
		return err
	}
	var scratch Column
	r.Columns = nil
	if !d.dry && n > 0 {
		r.Columns = make([]Column, n)
	}
	for i := range n {
		c := &scratch
		if !d.dry {
			c = &r.Columns[i]
		}
		off := d.off
		flags, err := d.byte1("column flags")
		if err != nil {
			return err
		}
		if flags&^colFlagKey != 0 {
			return d.errorf(off, "unknown column flags %#02x", flags&^colFlagKey)
		}
		c.Key = flags&colFlagKey != 0
		if c.Name, err = d.str("column name"); err != nil {
			return err
		}
		if c.TypeOID, err = d.uint32v("type OID"); err != nil {
			return err
		}
		off = d.off
		mod, err := d.varint("typmod")
		if err != nil {
			return err
		}
		if mod < math.MinInt32 || mod > math.MaxInt32 {
			return d.errorf(off, "typmod %d out of range", mod)
		}
		c.TypeMod = int32(mod)
		if c.Type, err = d.str("type name"); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) changes(e *Envelope) error {
	n, err := d.count("change count", minChangeSize)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	e.Changes = make([]Change, n)
	for i := range e.Changes {
		if err := d.change(e, &e.Changes[i], n-i); err != nil {
			return err
		}
		if d.piecesAt >= 0 && d.pieced < 0 {
			d.pieced = i
		}
	}
	if d.piecesAt >= 0 {
		// The pieces follow this chunk: the change they complete must be
		// the chunk's last, and the transaction must go on.
		switch {
		case d.pieced != n-1:
			return d.errorf(d.piecesAt, "change %d of %d has values in pieces; only the last change of a chunk may", d.pieced+1, n)
		case e.Kind != KindTxn || e.Last():
			return d.errorf(d.piecesAt, "a value in pieces in the last chunk of its transaction, where no piece can follow")
		}
	}
	return nil
}

func (d *decoder) change(e *Envelope, c *Change, left int) error {
	off := d.off
	op, err := d.byte1("change op")
	if err != nil {
		return err
	}
	c.Op = Op(op)
	switch c.Op {
	case OpInsert, OpUpdate, OpDelete:
	case OpTruncate:
		return d.truncate(c)
	case OpMessage:
		return d.message(c)
	default:
		return d.errorf(off, "unknown change op %#02x", op)
	}

	off = d.off
	if c.Relation, err = d.uint32v("change relation"); err != nil {
		return err
	}
	rel, ok := d.lookup(e.Relations, c.Relation)
	if !ok {
		return d.errorf(off, "change refers to relation %d, which the envelope does not describe", c.Relation)
	}
	width := len(rel.Columns)
	switch c.Op {
	case OpInsert:
		c.New, err = d.tuple(rel, width, left)
	case OpUpdate:
		off = d.off
		var present byte
		if present, err = d.byte1("old tuple marker"); err != nil {
			return err
		}
		switch present {
		case 0:
		case 1:
			if c.Old, err = d.tuple(rel, width, left); err != nil {
				return err
			}
		default:
			return d.errorf(off, "old tuple marker %d, want 0 or 1", present)
		}
		c.New, err = d.tuple(rel, width, left)
	case OpDelete:
		c.Old, err = d.tuple(rel, width, left)
	}
	return err
}

func (d *decoder) message(c *Change) error {
	off := d.off
	flags, err := d.byte1("message flags")
	if err != nil {
		return err
	}
	if flags&^1 != 0 {
		return d.errorf(off, "unknown message flags %#02x", flags&^1)
	}
	c.Transactional = flags&1 != 0
	// Changes lie beyond the header's shared string: copy the prefix.
	prefix, err := d.bytes("message prefix")
	if err != nil {
		return err
	}
	c.Prefix = string(prefix)
	if c.Content, err = d.bytes("message content"); err != nil {
		return err
	}
	if c.Content == nil {
		c.Content = []byte{}
	}
	return nil
}

func (d *decoder) truncate(c *Change) error {
	off := d.off
	opts, err := d.byte1("truncate options")
	if err != nil {
		return err
	}
	if opts&^knownTruncateOpts != 0 {
		return d.errorf(off, "unknown truncate options %#02x", opts&^knownTruncateOpts)
	}
	c.TruncateOpts = opts
	n, err := d.count("truncated relation count", minRelIDSize)
	if err != nil || n == 0 {
		return err
	}
	c.Truncated = make([]uint32, n)
	for i := range c.Truncated {
		if c.Truncated[i], err = d.uint32v("truncated relation id"); err != nil {
			return err
		}
	}
	return nil
}

// tuple reads a tuple of rel, which must have exactly width values. left
// is the number of changes still to decode, this one included, used to
// size the slab the values are carved from.
func (d *decoder) tuple(rel *Relation, width, left int) ([]Value, error) {
	off := d.off
	n, err := d.count("tuple column count", minValueSize)
	if err != nil {
		return nil, err
	}
	if n != width {
		return nil, d.errorf(off, "tuple has %d columns, relation %d (%s.%s) has %d",
			n, rel.ID, rel.Schema, rel.Name, width)
	}
	if n == 0 {
		return nil, nil
	}
	vals := d.values(n, left)
	for i := range vals {
		v := &vals[i]
		off := d.off
		if v.Kind, err = d.byte1("value kind"); err != nil {
			return nil, err
		}
		switch v.Kind {
		case ValueNull, ValueUnchanged:
		case ValueText:
			if v.Data, err = d.bytes("text value"); err != nil {
				return nil, err
			}
		case ValuePieces:
			if d.version < 2 {
				return nil, d.errorf(off, "unknown value kind %#02x", v.Kind)
			}
			sizeOff := d.off
			size, err := d.uvarint("value size")
			if err != nil {
				return nil, err
			}
			if size == 0 || size > MaxValueSize {
				return nil, d.errorf(sizeOff, "value in pieces of %d bytes, want 1 to %d", size, MaxValueSize)
			}
			v.Size = int(size)
			if d.piecesAt < 0 {
				d.piecesAt = off
			}
		default:
			return nil, d.errorf(off, "unknown value kind %#02x", v.Kind)
		}
	}
	return vals, nil
}

// maxSlab caps the number of values allocated at once.
const maxSlab = 4096

// values returns n zero values carved from a slab shared by the tuples of
// the envelope, so that a chunk of rows costs a few allocations rather
// than one per row. The slab is sized for left more tuples of n values,
// bounded by the remaining bytes (each value takes at least one), so it
// never exceeds a small multiple of the input.
func (d *decoder) values(n, left int) []Value {
	if len(d.slab) < n {
		size := d.remaining()
		if left <= size/n {
			size = n * left
		}
		size = max(min(size, maxSlab), n)
		d.slab = make([]Value, size)
	}
	v := d.slab[:n:n]
	d.slab = d.slab[n:]
	return v
}
