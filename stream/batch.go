package stream

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// BatchMagic starts a message that packs several small transactions: one
// JetStream message per transaction would cost more in NATS than the rows
// themselves cost to apply.
const BatchMagic = "PB"

// maxBatch bounds the envelopes of one batch message.
const maxBatch = 1 << 16

// AppendBatch appends a batch message holding the given encoded
// envelopes, in order, to dst: BatchMagic, version, a uvarint count, then
// each envelope as a uvarint length and its bytes.
func AppendBatch(dst []byte, envs [][]byte) []byte {
	dst = append(dst, BatchMagic[0], BatchMagic[1], Version)
	dst = binary.AppendUvarint(dst, uint64(len(envs)))
	for _, e := range envs {
		dst = binary.AppendUvarint(dst, uint64(len(e)))
		dst = append(dst, e...)
	}
	return dst
}

// DecodeMessage decodes the body of a JetStream message of a pgjet
// stream: a single envelope, or a batch of envelopes (AppendBatch). Every
// envelope of a batch is a complete transaction (one chunk, first and
// last), and their commit LSNs increase. Errors are *DecodeError; it never
// panics. Decoded values alias b, as with Decode.
func DecodeMessage(b []byte) ([]*Envelope, error) {
	if len(b) < 2 || string(b[:2]) != BatchMagic {
		e, err := Decode(b)
		if err != nil {
			return nil, err
		}
		return []*Envelope{e}, nil
	}
	entries, err := splitBatch(b)
	if err != nil {
		return nil, err
	}
	envs := make([]*Envelope, 0, len(entries))
	for _, entry := range entries {
		e, err := Decode(entry.b)
		if err != nil {
			de := err.(*DecodeError)
			return nil, &DecodeError{Offset: entry.off + de.Offset, Reason: "batch entry: " + de.Reason}
		}
		if e.Kind != KindTxn || !e.First() || !e.Last() {
			return nil, &DecodeError{Offset: entry.off, Reason: "batch entry is not a whole transaction"}
		}
		if len(envs) > 0 && e.CommitLSN <= envs[len(envs)-1].CommitLSN {
			return nil, &DecodeError{Offset: entry.off, Reason: "batch entries out of commit order"}
		}
		envs = append(envs, e)
	}
	return envs, nil
}

// SplitBatch returns the encoded envelopes of a batch message, in order,
// checking its framing only (magic, version, count and lengths), not the
// envelopes: a reader that must set aside a message it cannot apply learns
// from it which transactions went with it. It fails, with a *DecodeError,
// for a message that is no batch or whose framing does not hold.
func SplitBatch(b []byte) ([][]byte, error) {
	if len(b) < 2 || string(b[:2]) != BatchMagic {
		return nil, &DecodeError{Offset: 0, Reason: "not a batch"}
	}
	entries, err := splitBatch(b)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(entries))
	for i, e := range entries {
		out[i] = e.b
	}
	return out, nil
}

// batchEntry is one envelope of a batch and its offset in the message.
type batchEntry struct {
	off int
	b   []byte
}

// splitBatch reads the framing of batch message b, which starts with
// BatchMagic.
func splitBatch(b []byte) ([]batchEntry, error) {
	if len(b) < 3 {
		return nil, &DecodeError{Offset: 2, Reason: "truncated batch header"}
	}
	switch v := b[2]; {
	case v == 0:
		return nil, &DecodeError{Offset: 2, Reason: "invalid batch version 0"}
	case v > Version:
		return nil, &DecodeError{Offset: 2, Reason: "batch version is newer than this decoder's; upgrade pgjet"}
	}
	off := 3
	n, k := binary.Uvarint(b[off:])
	if k <= 0 {
		return nil, &DecodeError{Offset: off, Reason: "truncated batch count"}
	}
	off += k
	if n == 0 || n > maxBatch || n > uint64(len(b)-off) {
		return nil, &DecodeError{Offset: off - k, Reason: "implausible batch count"}
	}
	entries := make([]batchEntry, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return nil, &DecodeError{Offset: off, Reason: "truncated batch entry length"}
		}
		start := off + k
		if l > uint64(len(b)-start) {
			return nil, &DecodeError{Offset: off, Reason: "truncated batch entry"}
		}
		entries = append(entries, batchEntry{off: start, b: b[start : start+int(l)]})
		off = start + int(l)
	}
	if off != len(b) {
		return nil, &DecodeError{Offset: off, Reason: "trailing bytes after the batch"}
	}
	return entries, nil
}

// BatchMsgID is the Nats-Msg-Id of a batch message of source holding the
// transactions committed from first to last.
func BatchMsgID(source string, first, last LSN) string {
	return fmt.Sprintf("%s:%016X-%016X:b", source, uint64(first), uint64(last))
}

// ParseBatchMsgID reads back what BatchMsgID wrote; ok is false for an id
// of another form.
func ParseBatchMsgID(id string) (source string, first, last LSN, ok bool) {
	parts := strings.Split(id, ":")
	if len(parts) != 3 || parts[2] != "b" {
		return "", 0, 0, false
	}
	a, b, found := strings.Cut(parts[1], "-")
	if !found || len(a) != 16 || len(b) != 16 {
		return "", 0, 0, false
	}
	f, err1 := strconv.ParseUint(a, 16, 64)
	l, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return parts[0], LSN(f), LSN(l), true
}
