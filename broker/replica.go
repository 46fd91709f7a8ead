package broker

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"sync/atomic"

	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
)

// replica is the handlers' view of one partition: exactly what the Kafka
// handlers need, so that replication can put a Raft group behind it
// without touching a handler.
type replica interface {
	// Append appends one validated batch (records already checked) and
	// returns where it went once it is acknowledged.
	Append(ctx context.Context, batch []byte) (partition.AppendResult, error)
	// Read returns whole batches from offset, up to maxBytes (at least one
	// batch when any is readable), below upTo, which is at most the high
	// watermark: the caller passes the one it reports.
	Read(offset int64, maxBytes int, upTo int64) ([]byte, error)
	HighWatermark() int64
	LogStartOffset() int64
	// LeaderEpoch is the epoch clients see in Metadata and fence with.
	LeaderEpoch() int32
	// Changed is closed when the high watermark next moves.
	Changed() <-chan struct{}
	OffsetForTimestamp(ts int64) (partition.TimestampOffset, bool, error)
	MaxTimestamp() (partition.TimestampOffset, bool, error)
	OffsetForLeaderEpoch(epoch int32) (int32, int64)
	// EpochForOffset is the leader epoch that wrote offset, -1 if unknown.
	EpochForOffset(offset int64) int32
	DeleteRecords(offset int64) (int64, error)
}

// localReplica is a partition held by this broker alone: the log is the
// whole truth, the high watermark is its end, the leader epoch is 0.
type localReplica struct {
	topic string
	index int32
	log   *partition.Log
	// dirty is set by appends and cleared by the flusher, so idle
	// partitions cost no fsync.
	dirty atomic.Bool
}

var _ replica = (*localReplica)(nil)

// partitionDir is the directory of a partition: <topic>-<index>, as in
// Kafka. Topic names are validated to [a-zA-Z0-9._-], so this cannot
// escape the data directory.
func partitionDir(dataDir, topic string, index int32) string {
	return path.Join(dataDir, "logs", topic+"-"+strconv.Itoa(int(index)))
}

func openLocalReplica(b *Broker, topic string, index int32, s topicSettings) (*localReplica, error) {
	l, err := partition.Open(partition.Options{
		Dir:           partitionDir(b.cfg.DataDir, topic, index),
		FS:            b.cfg.FS,
		Config:        s.log,
		Now:           b.cfg.Now,
		Logger:        b.logger.With("topic", topic, "partition", index),
		FindTimestamp: records.FindTimestamp,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: open %s-%d: %w", topic, index, err)
	}
	// Metadata advertises epoch 0 from the start, so the epoch table must
	// know it before the first batch: OffsetForLeaderEpoch(0) on an empty
	// partition answers (0, log end), not (-1, -1).
	if err := l.StartEpoch(0); err != nil {
		_ = l.Close()
		return nil, err
	}
	return &localReplica{topic: topic, index: index, log: l}, nil
}

func (r *localReplica) Append(_ context.Context, batch []byte) (partition.AppendResult, error) {
	res, err := r.log.Append(batch, 0)
	if err == nil && !res.Duplicate {
		r.dirty.Store(true)
	}
	return res, err
}

func (r *localReplica) Read(offset int64, maxBytes int, upTo int64) ([]byte, error) {
	return r.log.Read(offset, maxBytes, min(upTo, r.HighWatermark()))
}

func (r *localReplica) HighWatermark() int64     { return r.log.LogEndOffset() }
func (r *localReplica) LogStartOffset() int64    { return r.log.LogStartOffset() }
func (r *localReplica) LeaderEpoch() int32       { return 0 }
func (r *localReplica) Changed() <-chan struct{} { return r.log.Changed() }
func (r *localReplica) OffsetForLeaderEpoch(e int32) (int32, int64) {
	return r.log.OffsetForLeaderEpoch(e)
}

func (r *localReplica) EpochForOffset(o int64) int32 { return r.log.EpochForOffset(o) }

func (r *localReplica) OffsetForTimestamp(ts int64) (partition.TimestampOffset, bool, error) {
	return r.log.OffsetForTimestamp(ts, r.HighWatermark())
}

func (r *localReplica) MaxTimestamp() (partition.TimestampOffset, bool, error) {
	return r.log.MaxTimestamp(r.HighWatermark())
}

func (r *localReplica) DeleteRecords(offset int64) (int64, error) {
	return r.log.DeleteRecords(offset)
}

// flush makes appended data durable and checkpoints, when there is any.
func (r *localReplica) flush() error {
	if !r.dirty.Swap(false) {
		return nil
	}
	return r.log.Checkpoint(0)
}

// close checkpoints and closes the log.
func (r *localReplica) close() error {
	if r.log.Err() == nil {
		r.dirty.Store(true)
		if err := r.flush(); err != nil {
			_ = r.log.Close()
			return err
		}
	}
	return r.log.Close()
}
