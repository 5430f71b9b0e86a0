package stream

import (
	"encoding/binary"
)

// BatchMagic starts a message that packs several small transactions: one
// JetStream message per transaction would cost more in NATS than the rows
// themselves cost to apply.
const BatchMagic = "PB"

// maxBatch bounds the envelopes of one batch message.
const maxBatch = 1 << 16

// batchVersion is the version of the batch layout, which is versioned
// apart from the envelopes it holds.
const batchVersion = 1

// AppendBatch appends a batch message holding the given encoded
// envelopes, in order, to dst: BatchMagic, version, a uvarint count, then
// each envelope as a uvarint length and its bytes.
func AppendBatch(dst []byte, envs [][]byte) []byte {
	dst = append(dst, BatchMagic[0], BatchMagic[1], batchVersion)
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
	if len(b) < 3 {
		return nil, &DecodeError{Offset: 2, Reason: "truncated batch header"}
	}
	switch v := b[2]; {
	case v == 0:
		return nil, &DecodeError{Offset: 2, Reason: "invalid batch version 0"}
	case v > batchVersion:
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
	envs := make([]*Envelope, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return nil, &DecodeError{Offset: off, Reason: "truncated batch entry length"}
		}
		start := off + k
		if l > uint64(len(b)-start) {
			return nil, &DecodeError{Offset: off, Reason: "truncated batch entry"}
		}
		e, err := Decode(b[start : start+int(l)])
		if err != nil {
			de := err.(*DecodeError)
			return nil, &DecodeError{Offset: start + de.Offset, Reason: "batch entry: " + de.Reason}
		}
		if e.Kind != KindTxn || !e.First() || !e.Last() {
			return nil, &DecodeError{Offset: start, Reason: "batch entry is not a whole transaction"}
		}
		if len(envs) > 0 && e.CommitLSN <= envs[len(envs)-1].CommitLSN {
			return nil, &DecodeError{Offset: start, Reason: "batch entries out of commit order"}
		}
		envs = append(envs, e)
		off = start + int(l)
	}
	if off != len(b) {
		return nil, &DecodeError{Offset: off, Reason: "trailing bytes after the batch"}
	}
	return envs, nil
}
