package partition

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Offsets of the fields in a v2 record batch header (Kafka's
// DefaultRecordBatch). Everything from attributes on is covered by the CRC;
// baseOffset, batchLength and partitionLeaderEpoch are not, which is why the
// log may rewrite baseOffset and partitionLeaderEpoch without touching the CRC.
const (
	offBaseOffset      = 0
	offBatchLength     = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offBaseTimestamp   = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offRecordCount     = 57

	// BatchHeaderSize is the size of a v2 record batch header; records follow.
	BatchHeaderSize = 61
	// logOverhead is baseOffset plus batchLength: the bytes in front of what
	// batchLength counts.
	logOverhead = 12
)

// Attribute bits of a v2 batch.
const (
	attrCompressionMask = 0x07
	attrTimestampType   = 0x08 // set: LogAppendTime
	attrTransactional   = 0x10
	attrControl         = 0x20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// BatchHeader is the decoded fixed header of one v2 record batch. The log
// stores batches as opaque bytes plus this header; records inside are never
// decoded on the append or read paths.
type BatchHeader struct {
	BaseOffset           int64
	Length               int32 // batchLength: bytes after the length field
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	BaseTimestamp        int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	NumRecords           int32
}

// Size is the batch's size in bytes on disk and on the wire.
func (h *BatchHeader) Size() int64 { return int64(h.Length) + logOverhead }

// LastOffset is the offset of the batch's last record.
func (h *BatchHeader) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// NextOffset is the offset after the batch.
func (h *BatchHeader) NextOffset() int64 { return h.LastOffset() + 1 }

// LastSequence is the sequence number of the batch's last record (sequences
// wrap at MaxInt32, as in Kafka).
func (h *BatchHeader) LastSequence() int32 {
	return wrapSequence(h.BaseSequence, h.LastOffsetDelta)
}

// Compression is the codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
func (h *BatchHeader) Compression() int8 { return int8(h.Attributes & attrCompressionMask) }

// LogAppendTime reports whether the batch's timestamps are the broker's
// append time (every record then has MaxTimestamp).
func (h *BatchHeader) LogAppendTime() bool { return h.Attributes&attrTimestampType != 0 }

// Transactional reports the transactional attribute bit.
func (h *BatchHeader) Transactional() bool { return h.Attributes&attrTransactional != 0 }

// Control reports the control-batch attribute bit.
func (h *BatchHeader) Control() bool { return h.Attributes&attrControl != 0 }

// Idempotent reports whether the batch carries a producer id, and so takes
// part in sequence checks and deduplication.
func (h *BatchHeader) Idempotent() bool { return h.ProducerID >= 0 }

// ParseBatchHeader decodes the fixed header at the start of b. It checks only
// that the header is present; see ValidateBatch for the full checks.
func ParseBatchHeader(b []byte) (BatchHeader, error) {
	if len(b) < BatchHeaderSize {
		return BatchHeader{}, fmt.Errorf("%w: %d bytes is shorter than a batch header", ErrCorruptBatch, len(b))
	}
	be := binary.BigEndian
	return BatchHeader{
		BaseOffset:           int64(be.Uint64(b[offBaseOffset:])),
		Length:               int32(be.Uint32(b[offBatchLength:])),
		PartitionLeaderEpoch: int32(be.Uint32(b[offLeaderEpoch:])),
		Magic:                int8(b[offMagic]),
		CRC:                  be.Uint32(b[offCRC:]),
		Attributes:           int16(be.Uint16(b[offAttributes:])),
		LastOffsetDelta:      int32(be.Uint32(b[offLastOffsetDelta:])),
		BaseTimestamp:        int64(be.Uint64(b[offBaseTimestamp:])),
		MaxTimestamp:         int64(be.Uint64(b[offMaxTimestamp:])),
		ProducerID:           int64(be.Uint64(b[offProducerID:])),
		ProducerEpoch:        int16(be.Uint16(b[offProducerEpoch:])),
		BaseSequence:         int32(be.Uint32(b[offBaseSequence:])),
		NumRecords:           int32(be.Uint32(b[offRecordCount:])),
	}, nil
}

// ValidateBatch checks that b is exactly one well-formed v2 record batch no
// larger than maxBytes (maxBytes <= 0: no limit) and returns its header.
//
// Checks, in order, each with the error Kafka would answer:
//   - a header is present and batchLength is non-negative and matches len(b):
//     ErrCorruptBatch (CORRUPT_MESSAGE), except that room for a second batch
//     after the first is ErrInvalidRecord (INVALID_RECORD: one batch only);
//   - the size limit: ErrMessageTooLarge (MESSAGE_TOO_LARGE), checked before
//     the CRC so an oversized batch costs no checksum;
//   - magic 2 (magic 0 and 1 are valid Kafka formats this log does not
//     store: ErrInvalidRecord; anything else is ErrCorruptBatch);
//   - CRC-32C over attributes..end: ErrCorruptBatch;
//   - at least one record, numRecords = lastOffsetDelta + 1, non-negative
//     deltas, a non-negative producer epoch and sequence for an idempotent
//     batch: ErrInvalidRecord (INVALID_RECORD).
//
// It never looks inside the records: the broker checks record contents
// (offset deltas, timestamps, decompressed size) once before a batch reaches
// the log.
func ValidateBatch(b []byte, maxBytes int) (BatchHeader, error) {
	h, err := ParseBatchHeader(b)
	if err != nil {
		return h, err
	}
	if h.Length < BatchHeaderSize-logOverhead {
		return h, fmt.Errorf("%w: batch length %d is shorter than a header", ErrCorruptBatch, h.Length)
	}
	if rest := int64(len(b)) - h.Size(); rest >= BatchHeaderSize {
		// Room for another batch after this one: Kafka takes one batch per
		// partition and answers INVALID_RECORD, not CORRUPT_MESSAGE.
		return h, fmt.Errorf("%w: more than one batch (%d bytes follow the first)", ErrInvalidRecord, rest)
	} else if rest != 0 {
		return h, fmt.Errorf("%w: batch length %d does not match the %d bytes given", ErrCorruptBatch, h.Length, len(b)-logOverhead)
	}
	if maxBytes > 0 && len(b) > maxBytes {
		return h, fmt.Errorf("%w: batch of %d bytes is over the limit of %d", ErrMessageTooLarge, len(b), maxBytes)
	}
	if err := h.checkMagic(); err != nil {
		return h, err
	}
	if got := crc32.Checksum(b[offAttributes:], castagnoli); got != h.CRC {
		return h, fmt.Errorf("%w: crc32c %08x, header says %08x", ErrCorruptBatch, got, h.CRC)
	}
	if err := h.checkCounts(); err != nil {
		return h, err
	}
	return h, nil
}

// checkMagic accepts only magic 2. Magic 0 and 1 are valid Kafka formats
// this log does not store (INVALID_RECORD); anything else is garbage.
func (h *BatchHeader) checkMagic() error {
	switch {
	case h.Magic == 0 || h.Magic == 1:
		return fmt.Errorf("%w: magic %d batches are not accepted, only magic 2", ErrInvalidRecord, h.Magic)
	case h.Magic != 2:
		return fmt.Errorf("%w: unknown magic %d", ErrCorruptBatch, h.Magic)
	}
	return nil
}

// checkCounts checks the header fields that must agree with each other: at
// least one record, numRecords = lastOffsetDelta + 1, and a usable producer
// epoch and sequence when the batch is idempotent.
func (h *BatchHeader) checkCounts() error {
	if h.NumRecords <= 0 {
		return fmt.Errorf("%w: batch holds %d records", ErrInvalidRecord, h.NumRecords)
	}
	if h.LastOffsetDelta < 0 || int64(h.NumRecords) != int64(h.LastOffsetDelta)+1 {
		return fmt.Errorf("%w: %d records but last offset delta %d", ErrInvalidRecord, h.NumRecords, h.LastOffsetDelta)
	}
	if h.Idempotent() && (h.ProducerEpoch < 0 || h.BaseSequence < 0) {
		return fmt.Errorf("%w: producer %d with epoch %d and base sequence %d", ErrInvalidRecord, h.ProducerID, h.ProducerEpoch, h.BaseSequence)
	}
	return nil
}

// stampBatch rewrites the two header fields the log owns. Neither is under the
// CRC, so the client's checksum stays valid and the bytes stay as sent.
func stampBatch(b []byte, baseOffset int64, leaderEpoch int32) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(baseOffset))
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(leaderEpoch))
}

// wrapSequence adds delta to a producer sequence the way Kafka does: past
// MaxInt32 sequences continue from 0.
func wrapSequence(seq, delta int32) int32 {
	s := int64(seq) + int64(delta)
	if s > int64(^uint32(0)>>1) {
		s -= int64(^uint32(0)>>1) + 1
	}
	return int32(s)
}
