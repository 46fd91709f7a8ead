package broker

import (
	"context"
	"strconv"
	"time"
)

// offsetsTopic holds committed offsets and group metadata, one Raft group
// per partition like any topic (coordinator.go).
const offsetsTopic = "__consumer_offsets"

// ensureOffsetsTopic creates __consumer_offsets in the background, once at
// a time: Config.OffsetsTopicPartitions partitions (fixed from then on: the
// group -> partition mapping depends on it), replication factor
// min(3, registered brokers), retention off (see below).
func (b *Broker) ensureOffsetsTopic() {
	if !b.creatingOffsets.CompareAndSwap(false, true) {
		return
	}
	b.goTracked(func() {
		defer b.creatingOffsets.Store(false)
		if _, ok := b.meta.State().Topics[offsetsTopic]; ok {
			return
		}
		rf := min(3, len(b.meta.State().Brokers))
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		_, err := b.createTopic(ctx, topicSpec{name: offsetsTopic, partitions: b.cfg.OffsetsTopicPartitions, replicationFactor: int16(rf),
			// Kafka compacts this topic; Varve's coordinator compacts it
			// through Raft instead (offsets_compact.go), so time and size
			// retention stay off: the offset store must always be
			// rebuildable from the log. Small segments let a compaction
			// delete most of the log.
			configs: map[string]string{"retention.ms": "-1", "retention.bytes": "-1",
				"segment.bytes": strconv.FormatInt(b.offsetsSegmentBytes(), 10)}})
		if err != nil {
			b.logger.Warn("creating the offsets topic failed; the next FindCoordinator retries", "err", err)
		}
	})
}
