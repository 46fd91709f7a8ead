package records

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/varvelog/varve/partition"
)

// ErrUnsupportedCompression: a codec id other than 0-4 in the batch
// attributes (UNSUPPORTED_COMPRESSION_TYPE).
var ErrUnsupportedCompression = errors.New("records: unsupported compression type")

// ErrInvalidTimestamp: a record timestamp the broker refuses
// (INVALID_TIMESTAMP, as Kafka answers for a producer that sets
// LogAppendTime). It also matches partition.ErrInvalidRecord, so an error
// table that does not know it answers INVALID_RECORD; list it before
// partition.ErrInvalidRecord to answer Kafka's own code.
var ErrInvalidTimestamp error = timestampError{}

// ErrTimestampNotFound: FindTimestamp found no record at or after the
// target in the batch it was given.
var ErrTimestampNotFound = errors.New("records: no record at or after the timestamp")

type timestampError struct{}

func (timestampError) Error() string        { return "records: invalid timestamp" }
func (timestampError) Is(target error) bool { return target == partition.ErrInvalidRecord }

// Defaults for the zero Limits.
const (
	// DefaultMaxDecompressedBytes is 64 MiB: 64 times Kafka's default
	// max.message.bytes, above the 10-20x that text and JSON reach.
	DefaultMaxDecompressedBytes = 64 << 20
	// DefaultMaxRecords bounds the per-batch walk. A 1 MiB batch of the
	// smallest possible records (7 bytes) holds 150,000.
	DefaultMaxRecords = 1 << 20
)

// Limits bound the work one batch may cause. A zero field means its
// default.
type Limits struct {
	// MaxDecompressedBytes caps a batch's decompressed records section
	// (for an uncompressed batch, the section as sent). Above it:
	// partition.ErrMessageTooLarge.
	MaxDecompressedBytes int64
	// MaxRecords caps the record count a batch header may claim. Above
	// it: partition.ErrMessageTooLarge.
	MaxRecords int32
}

// DefaultLimits scales the decompression cap with the topic's batch size
// limit (max.message.bytes): 16 times it, and never below
// DefaultMaxDecompressedBytes.
func DefaultLimits(maxBatchBytes int) Limits {
	return Limits{
		MaxDecompressedBytes: max(16*int64(maxBatchBytes), DefaultMaxDecompressedBytes),
		MaxRecords:           DefaultMaxRecords,
	}
}

func (l Limits) withDefaults() Limits {
	if l.MaxDecompressedBytes <= 0 {
		l.MaxDecompressedBytes = DefaultMaxDecompressedBytes
	}
	if l.MaxRecords <= 0 {
		l.MaxRecords = DefaultMaxRecords
	}
	return l
}

// readLimits are FindTimestamp's: stored batches passed Check under the
// broker's own limits, and a search holds constant memory whatever the
// decompressed size (it skips keys and values), so the read path only
// guards against stored garbage.
var readLimits = Limits{MaxDecompressedBytes: 1 << 30, MaxRecords: math.MaxInt32}

// Record is one decoded record. Key and Value are nil for a null key or
// value. They, and header values, may point into the batch or into a buffer
// reused for the next record: copy what must outlive the callback.
type Record struct {
	Attributes     int8
	TimestampDelta int64
	OffsetDelta    int32
	Key, Value     []byte
	Headers        []Header
}

// Header is one record header; Value is nil when null.
type Header struct {
	Key   string
	Value []byte
}

// Check validates the records inside one v2 batch produced by a client. The
// batch's framing, CRC and header counts must already have passed
// partition.ValidateBatch, which returned h; batch is not modified.
//
// Refused, with partition.ErrInvalidRecord (INVALID_RECORD) unless noted:
//   - control batches (only the broker writes them) and transactional ones
//     (Varve has no transactions yet);
//   - the LogAppendTime attribute: ErrInvalidTimestamp, as Kafka does
//     ("Producer should not set timestamp type to LogAppendTime");
//   - an unknown codec: ErrUnsupportedCompression; compressed data that does
//     not decode: partition.ErrCorruptBatch (CORRUPT_MESSAGE);
//   - more than lim.MaxRecords records or lim.MaxDecompressedBytes
//     decompressed bytes: partition.ErrMessageTooLarge;
//   - any record that breaks the layout in the package doc: a length that
//     does not match its fields exactly, offsetDelta other than its index,
//     a key, value or header value length below -1, a negative header count
//     or header key length, fields that run past the record; fewer records
//     than NumRecords, or bytes left after the last;
//   - a record timestamp (baseTimestamp + timestampDelta) below -1 or that
//     overflows: ErrInvalidTimestamp;
//   - a maxTimestamp that is not the largest record timestamp. Kafka
//     rewrites it instead; Varve cannot, and the time index, retention and
//     FindTimestamp rely on it (a batch is searched only when its
//     maxTimestamp reaches the target, so a record must be there).
//
// Kafka's timestamp window (message.timestamp.before/after.max.ms) and the
// compacted-topic key rule need topic settings and the clock; the broker
// applies them, through Records when it needs to.
func Check(batch []byte, h *partition.BatchHeader, lim Limits) error {
	switch {
	case h.Control():
		return fmt.Errorf("%w: clients may not write control batches", partition.ErrInvalidRecord)
	case h.Transactional():
		return fmt.Errorf("%w: transactional batches are not supported", partition.ErrInvalidRecord)
	case h.LogAppendTime():
		return fmt.Errorf("%w: producers may not set the LogAppendTime attribute", ErrInvalidTimestamp)
	}
	maxTs := int64(math.MinInt64)
	err := walkBatch(batch, h, lim, false, func(r *Record) error {
		ts := h.BaseTimestamp + r.TimestampDelta
		if (r.TimestampDelta > 0 && ts < h.BaseTimestamp) || (r.TimestampDelta < 0 && ts > h.BaseTimestamp) {
			return fmt.Errorf("%w: record %d: timestamp %d%+d overflows", ErrInvalidTimestamp, r.OffsetDelta, h.BaseTimestamp, r.TimestampDelta)
		}
		if ts < -1 {
			return fmt.Errorf("%w: record %d: timestamp %d is negative", ErrInvalidTimestamp, r.OffsetDelta, ts)
		}
		if ts > h.MaxTimestamp {
			return fmt.Errorf("%w: record %d: timestamp %d is after the batch's max timestamp %d", partition.ErrInvalidRecord, r.OffsetDelta, ts, h.MaxTimestamp)
		}
		maxTs = max(maxTs, ts)
		return nil
	})
	if err != nil {
		return err
	}
	if maxTs != h.MaxTimestamp {
		return fmt.Errorf("%w: max timestamp %d but the largest record timestamp is %d", partition.ErrInvalidRecord, h.MaxTimestamp, maxTs)
	}
	return nil
}

// Records decodes every record of one v2 batch in order and calls fn with
// each; an error from fn stops the walk and is returned. It checks the
// record layout as Check does, but none of Check's producer rules
// (attributes, timestamps), so it also reads batches the broker wrote.
// fn's Record is reused: see Record.
func Records(batch []byte, lim Limits, fn func(Record) error) error {
	h, err := batchHeader(batch)
	if err != nil {
		return err
	}
	return walkBatch(batch, &h, lim, true, func(r *Record) error { return fn(*r) })
}

// FindTimestamp is the partition.TimestampSearcher the broker injects: the
// offset and timestamp of the first record, in batch order, whose
// timestamp is at or after target. In a LogAppendTime batch every record's
// timestamp is maxTimestamp, so the answer is the first record without
// decoding anything. ErrTimestampNotFound when no record qualifies.
func FindTimestamp(batch []byte, target int64) (offset, timestamp int64, err error) {
	return readLimits.FindTimestamp(batch, target)
}

// FindTimestamp is the package function under limits l.
func (l Limits) FindTimestamp(batch []byte, target int64) (offset, timestamp int64, err error) {
	h, err := batchHeader(batch)
	if err != nil {
		return 0, 0, err
	}
	if h.LogAppendTime() {
		if h.MaxTimestamp >= target {
			return h.BaseOffset, h.MaxTimestamp, nil
		}
		return 0, 0, fmt.Errorf("%w: %d in the batch at offset %d", ErrTimestampNotFound, target, h.BaseOffset)
	}
	found := false
	err = walkBatch(batch, &h, l, false, func(r *Record) error {
		if ts := h.BaseTimestamp + r.TimestampDelta; ts >= target {
			offset, timestamp, found = h.BaseOffset+int64(r.OffsetDelta), ts, true
			return errStop
		}
		return nil
	})
	if found {
		return offset, timestamp, nil
	}
	if err == nil {
		err = fmt.Errorf("%w: %d in the batch at offset %d", ErrTimestampNotFound, target, h.BaseOffset)
	}
	return 0, 0, err
}

// errStop ends a walk early without an error.
var errStop = errors.New("records: stop")

// Offsets in the v2 batch header of the fields StampLogAppendTime writes
// (partition/batch.go has the full layout).
const (
	offCRC            = 17
	offAttributes     = 21
	offMaxTimestamp   = 35
	attrLogAppendTime = 0x08
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StampLogAppendTime rewrites a checked batch in place for a topic with
// message.timestamp.type=LogAppendTime, as Kafka's leader does: the
// timestamp-type attribute is set, maxTimestamp becomes nowMs, and the
// CRC-32C is recomputed (both fields are under it). baseTimestamp and the
// records keep what the client sent; readers take maxTimestamp as every
// record's timestamp. The old CRC is verified first, so a batch damaged
// since it was checked is refused rather than given a fresh checksum.
func StampLogAppendTime(batch []byte, nowMs int64) error {
	h, err := batchHeader(batch)
	if err != nil {
		return err
	}
	if h.Magic != 2 {
		return fmt.Errorf("%w: magic %d", partition.ErrCorruptBatch, h.Magic)
	}
	if got := crc32.Checksum(batch[offAttributes:], castagnoli); got != h.CRC {
		return fmt.Errorf("%w: crc32c %08x, header says %08x", partition.ErrCorruptBatch, got, h.CRC)
	}
	be := binary.BigEndian
	be.PutUint16(batch[offAttributes:], uint16(h.Attributes)|attrLogAppendTime)
	be.PutUint64(batch[offMaxTimestamp:], uint64(nowMs))
	be.PutUint32(batch[offCRC:], crc32.Checksum(batch[offAttributes:], castagnoli))
	return nil
}

// batchHeader parses the header of a batch that must be exactly one batch.
func batchHeader(batch []byte) (partition.BatchHeader, error) {
	h, err := partition.ParseBatchHeader(batch)
	if err != nil {
		return h, err
	}
	if h.Size() != int64(len(batch)) {
		return h, fmt.Errorf("%w: batch length %d does not match the %d bytes given", partition.ErrCorruptBatch, h.Length, len(batch))
	}
	return h, nil
}
