package partition

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

// Config holds the per-topic settings the log obeys, under Kafka's names in
// the comments. It may change while the log is open (SetConfig).
type Config struct {
	// SegmentBytes rolls the active segment once it would grow past this
	// size (segment.bytes). At most 2^31-1.
	SegmentBytes int64
	// SegmentAge rolls a non-empty active segment this long after it was
	// created or the log opened (segment.ms). 0 disables.
	SegmentAge time.Duration
	// RetentionBytes deletes the oldest segments while the log would stay at
	// or above this size without them (retention.bytes). -1 disables.
	RetentionBytes int64
	// RetentionAge deletes segments whose newest timestamp is older than
	// this (retention.ms). -1 disables.
	RetentionAge time.Duration
	// MaxBatchBytes refuses larger batches (max.message.bytes).
	MaxBatchBytes int
	// IndexIntervalBytes is how many bytes pass between index entries
	// (index.interval.bytes).
	IndexIntervalBytes int
	// ProducerExpiration forgets idempotent producers whose newest batch
	// timestamp is older than this (producer.id.expiration.ms), when the
	// caller runs ExpireProducers.
	ProducerExpiration time.Duration
}

// DefaultConfig is Kafka's defaults.
func DefaultConfig() Config {
	return Config{
		SegmentBytes:       1 << 30,
		SegmentAge:         7 * 24 * time.Hour,
		RetentionBytes:     -1,
		RetentionAge:       7 * 24 * time.Hour,
		MaxBatchBytes:      1048588,
		IndexIntervalBytes: 4096,
		ProducerExpiration: 24 * time.Hour,
	}
}

// Validate reports every problem with the config at once.
func (c Config) Validate() error {
	var errs []error
	if c.SegmentBytes < BatchHeaderSize || c.SegmentBytes > maxSegmentBytes {
		errs = append(errs, fmt.Errorf("segment bytes %d not in [%d, %d]", c.SegmentBytes, BatchHeaderSize, maxSegmentBytes))
	}
	if c.SegmentAge < 0 {
		errs = append(errs, fmt.Errorf("segment age %v is negative", c.SegmentAge))
	}
	if c.RetentionBytes < -1 {
		errs = append(errs, fmt.Errorf("retention bytes %d below -1", c.RetentionBytes))
	}
	if c.RetentionAge < -1 {
		errs = append(errs, fmt.Errorf("retention age %v below -1", c.RetentionAge))
	}
	if c.MaxBatchBytes < BatchHeaderSize || c.MaxBatchBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("max batch bytes %d not in [%d, %d]", c.MaxBatchBytes, BatchHeaderSize, 1<<30))
	}
	if c.IndexIntervalBytes < 1 {
		errs = append(errs, fmt.Errorf("index interval bytes %d below 1", c.IndexIntervalBytes))
	}
	if c.ProducerExpiration <= 0 {
		errs = append(errs, fmt.Errorf("producer expiration %v is not positive", c.ProducerExpiration))
	}
	if len(errs) > 0 {
		return fmt.Errorf("partition: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// TimestampSearcher finds, inside one batch, the first record whose
// timestamp is at or after target, and returns its offset and timestamp.
// The log never decodes records itself: the broker, which can decompress,
// injects this for ListOffsets by time. It is only called with batches whose
// MaxTimestamp is at or after target.
type TimestampSearcher func(batch []byte, target int64) (offset, timestamp int64, err error)

// Options are how a log is opened: where, on which filesystem, and with
// which seams.
type Options struct {
	// Dir is the partition's directory (<topic>-<partition>); created if
	// missing.
	Dir string
	// FS is the filesystem; nil means the real one.
	FS vfs.FS
	// Config is the topic configuration; the zero value means
	// DefaultConfig().
	Config Config
	// Now is the wall clock for segment age; nil means time.Now.
	Now func() time.Time
	// Logger receives recovery and failure reports; nil discards.
	Logger *slog.Logger
	// FindTimestamp looks inside batches for OffsetForTimestamp; nil makes
	// the search answer at batch granularity (the batch's base offset and
	// max timestamp).
	FindTimestamp TimestampSearcher
	// TruncateUncheckpointed discards, on open, every batch after the last
	// checkpoint's recovery point. Replication sets it: Raft re-applies
	// every entry after the checkpointed position, so keeping those batches
	// would append them twice.
	TruncateUncheckpointed bool
}
