package partition

import (
	"errors"
	"fmt"
)

// Errors the log returns. The broker maps each to one Kafka error code in
// broker/errors.go; the code each is meant for is named here.
var (
	// ErrCorruptBatch: the bytes are not a well-formed batch (CORRUPT_MESSAGE).
	ErrCorruptBatch = errors.New("partition: corrupt record batch")
	// ErrInvalidRecord: a well-formed batch that breaks a rule
	// (INVALID_RECORD).
	ErrInvalidRecord = errors.New("partition: invalid record batch")
	// ErrMessageTooLarge: a batch over max.message.bytes (MESSAGE_TOO_LARGE).
	ErrMessageTooLarge = errors.New("partition: record batch too large")
	// ErrOutOfOrderSequence: an idempotent batch whose first sequence does not
	// follow the producer's last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
	ErrOutOfOrderSequence = errors.New("partition: out of order sequence number")
	// ErrInvalidProducerEpoch: a producer epoch older than the one the log
	// has seen (INVALID_PRODUCER_EPOCH).
	ErrInvalidProducerEpoch = errors.New("partition: invalid producer epoch")
	// ErrUnknownProducerID: a producer the log has no state for whose first
	// sequence is not 0 on an empty log (UNKNOWN_PRODUCER_ID). Clients read
	// the log start offset in the response to tell retention from data loss.
	ErrUnknownProducerID = errors.New("partition: unknown producer id")
	// ErrOffsetOutOfRange: a read or truncation point outside the log
	// (OFFSET_OUT_OF_RANGE). Returned wrapped in *OffsetOutOfRangeError.
	ErrOffsetOutOfRange = errors.New("partition: offset out of range")
	// ErrStorage: a write, sync or other file operation failed; the log
	// refuses appends from then on (KAFKA_STORAGE_ERROR). Returned wrapped in
	// *StorageError.
	ErrStorage = errors.New("partition: storage failure")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("partition: log closed")
)

// OffsetOutOfRangeError says where the log starts and ends, so the broker
// can answer OFFSET_OUT_OF_RANGE with the bounds a client resets to.
type OffsetOutOfRangeError struct {
	Offset   int64
	LogStart int64
	LogEnd   int64
}

func (e *OffsetOutOfRangeError) Error() string {
	return fmt.Sprintf("partition: offset %d out of range [%d, %d)", e.Offset, e.LogStart, e.LogEnd)
}

// Unwrap makes errors.Is(err, ErrOffsetOutOfRange) true.
func (e *OffsetOutOfRangeError) Unwrap() error { return ErrOffsetOutOfRange }

// StorageError is the sticky failure of a log: the operation that failed and
// the underlying error. Once a log has one, every later write returns it.
type StorageError struct {
	Op  string
	Err error
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("partition: storage failure in %s: %v", e.Op, e.Err)
}

// Is makes errors.Is(err, ErrStorage) true.
func (e *StorageError) Is(target error) bool { return target == ErrStorage }

// Unwrap exposes the underlying filesystem error.
func (e *StorageError) Unwrap() error { return e.Err }
