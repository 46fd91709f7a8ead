package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/varvelog/varve/broker/coordinator"
)

// Offsets compaction.
//
// Kafka compacts __consumer_offsets: only the last record of each key is
// kept. Varve keeps every replica's bytes identical, so it cannot let each
// replica clean its own log. Instead the coordinator compacts through Raft:
// when a partition's log passes Config.OffsetsCompactBytes (and twice what
// the last compaction wrote), it appends the partition's live state, read
// from the offset store (one group record per group, one commit per
// committed offset), and then deletes the records before it with
// DeleteRecords. Replaying the log from its new start rebuilds exactly that
// state, so a new or wiped replica still rebuilds its store from the log.
//
// While it runs, no other write reaches the partition (ledOffsets.writeMu):
// a commit proposed between reading the store and appending the rewrite
// would otherwise be overwritten by its older value. Commits wait for the
// rewrite, which writes about as many bytes as the live state.
//
// A failure or a crash part way leaves the rewrite's records after the
// history they repeat; replaying both gives the same state, and the next
// compaction tries again. The segments before the new log start are
// deleted as whole segments, which is why the topic is created with small
// ones (Broker.offsetsSegmentBytes).

// offsetsSegmentBytes is segment.bytes of __consumer_offsets: a quarter of
// the compaction threshold (at most 16 MiB, at least 64 KiB), so a
// compaction frees most of the log.
func (b *Broker) offsetsSegmentBytes() int64 {
	limit := b.cfg.OffsetsCompactBytes
	if limit < 0 {
		return 16 << 20
	}
	return min(16<<20, max(limit/4, 64<<10))
}

// offsetsRewriteBatchBytes bounds one rewrite batch (about; a single group
// record larger than it goes alone, as it went when first written).
const offsetsRewriteBatchBytes = 512 << 10

// maybeCompactOffsets starts a compaction of led's partition in the
// background when its log is due one.
func (b *Broker) maybeCompactOffsets(store *coordinator.OffsetStore, led *ledOffsets) {
	limit := b.cfg.OffsetsCompactBytes
	if limit < 0 || led.r.g == nil {
		return
	}
	size := led.r.log().Size()
	if size < limit || size < 2*led.liveBytes.Load() {
		return
	}
	if !led.compacting.CompareAndSwap(false, true) {
		return
	}
	b.goTracked(func() {
		defer led.compacting.Store(false)
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
		defer cancel()
		start := time.Now()
		st, err := b.compactOffsets(ctx, store, led)
		if err != nil {
			b.logger.Warn("compacting offsets partition failed; the next check tries again",
				"partition", led.r.index, "err", err)
			return
		}
		b.logger.Info("compacted offsets partition", "partition", led.r.index,
			"bytes_before", size, "bytes_after", led.r.log().Size(), "live_records", st.records,
			"live_bytes", st.bytes, "log_start", st.logStart, "took", time.Since(start).Round(time.Millisecond))
	})
}

// compactStats describe one compaction.
type compactStats struct {
	records  int
	bytes    int64
	logStart int64
}

// compactOffsets rewrites led's live state into its log and deletes the
// log before the rewrite.
func (b *Broker) compactOffsets(ctx context.Context, store *coordinator.OffsetStore, led *ledOffsets) (compactStats, error) {
	led.writeMu.Lock()
	defer led.writeMu.Unlock()
	if _, err := readyEpoch(led.r); err != nil {
		return compactStats{}, err
	}
	var (
		st      compactStats
		pending []coordinator.OffsetEvent
		size    int
	)
	first := int64(-1)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		batch, err := coordinator.OffsetBatch(b.cfg.Now().UnixMilli(), pending...)
		if err != nil {
			return err
		}
		res, err := led.r.g.Append(ctx, batch)
		if err != nil {
			return err
		}
		if first < 0 {
			first = res.BaseOffset
		}
		st.bytes += int64(len(batch))
		pending, size = pending[:0], 0
		return nil
	}
	// Live reads one consistent view; the appends it triggers apply to
	// the store in their own transactions (the same values again), which
	// the view does not see.
	err := store.Live(led.r.index, func(ev coordinator.OffsetEvent) error {
		pending = append(pending, ev)
		st.records++
		size += offsetEventSize(&ev)
		if size >= offsetsRewriteBatchBytes {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return st, fmt.Errorf("rewriting live state: %w", err)
	}
	if first < 0 {
		// Nothing is live: the whole log can go.
		first = led.r.log().LogEndOffset()
	}
	start, err := led.r.g.DeleteRecords(ctx, first)
	if err != nil {
		return st, fmt.Errorf("deleting records before %d: %w", first, err)
	}
	st.logStart = start
	led.liveBytes.Store(st.bytes)
	return st, nil
}

// offsetEventSize estimates an event's bytes in a batch.
func offsetEventSize(ev *coordinator.OffsetEvent) int {
	n := 64 + len(ev.Group) + len(ev.Commit.Topic) + len(ev.Offset.Metadata)
	if ev.Metadata != nil {
		n += len(ev.Metadata.AppendTo(nil))
	}
	return n
}
