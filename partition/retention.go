package partition

import (
	"errors"
	"fmt"
)

// Retain applies retention.bytes and retention.ms: it deletes the oldest
// segments while the log stays at or above RetentionBytes without them, and
// those whose newest timestamp is older than nowMs minus RetentionAge (a
// segment with no timestamps is kept). It never deletes the active segment,
// nor the segment holding the last checkpoint's recovery point or any after
// it: recovery needs them. The log start moves to the first remaining
// segment and is made durable before any file goes. It returns how many
// segments it deleted.
//
// nowMs is the caller's clock, in Kafka's milliseconds, so tests and a
// leader-stamped time can drive it.
func (l *Log) Retain(nowMs int64) (int, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return 0, err
	}
	var total int64
	for _, s := range l.segments {
		total += s.size
	}
	n := 0
	for ; n < l.deletableLocked(); n++ {
		s := l.segments[n]
		bySize := l.cfg.RetentionBytes >= 0 && total-s.size >= l.cfg.RetentionBytes
		byAge := l.cfg.RetentionAge >= 0 && s.track.maxTs >= 0 && s.track.maxTs < nowMs-l.cfg.RetentionAge.Milliseconds()
		// A segment wholly below the log start (DeleteRecords moved it
		// while recovery still needed the file) goes too.
		belowStart := l.segments[n+1].base <= l.logStart
		if !bySize && !byAge && !belowStart {
			break
		}
		total -= s.size
	}
	if n == 0 {
		return 0, nil
	}
	// Never backwards: DeleteRecords may have put the log start inside
	// the first segment kept.
	return n, l.deleteSegmentsLocked(n, max(l.logStart, l.segments[n].base))
}

// DeleteRecords moves the log start to offset (DeleteRecords, and the
// client's "delete everything before"), durably, and deletes the segments
// wholly below it that recovery no longer needs. offset may be at most the
// log end; an offset at or below the log start changes nothing. It returns
// the new log start.
func (l *Log) DeleteRecords(offset int64) (int64, error) {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return 0, err
	}
	end := l.logEnd()
	if offset > end || offset < 0 {
		return 0, &OffsetOutOfRangeError{Offset: offset, LogStart: l.logStart, LogEnd: end}
	}
	if offset <= l.logStart {
		return l.logStart, nil
	}
	n := 0
	for n < l.deletableLocked() && l.segments[n+1].base <= offset {
		n++
	}
	return offset, l.deleteSegmentsLocked(n, offset)
}

// deletableLocked is how many of the oldest segments may be deleted: those
// before the active one and before the one that holds the checkpoint's
// recovery point.
func (l *Log) deletableLocked() int {
	n := 0
	for n < len(l.segments)-1 && l.segments[n+1].base <= l.cp.recovery {
		n++
	}
	return n
}

// deleteSegmentsLocked makes newStart the durable log start (the checkpoint
// is rewritten with only that changed), then deletes the first n segments.
// A crash in between leaves files below the log start, which the next pass
// deletes.
func (l *Log) deleteSegmentsLocked(n int, newStart int64) error {
	cp := l.cp
	cp.logStart = newStart
	if err := writeCheckpoint(l.fsys, l.dir, &cp); err != nil {
		return l.fail("write checkpoint", err)
	}
	l.cp = cp
	l.mu.Lock()
	gone := l.segments[:n:n]
	l.segments = l.segments[n:]
	l.logStart = newStart
	l.epochs = l.epochs.truncateStart(newStart)
	l.mu.Unlock()
	for _, s := range gone {
		if err := l.removeSegmentFiles(s); err != nil {
			s.release()
			return l.fail("delete segment", err)
		}
		s.release()
	}
	if n > 0 {
		if err := l.fsys.SyncDir(l.dir); err != nil {
			return l.fail("sync directory", err)
		}
		l.logger.Info("deleted segments", "count", n, "log_start_offset", newStart)
	}
	return nil
}

// TruncateTo removes every batch at or after offset, which must be a batch
// boundary between the log start and the log end, durably (the segment is
// truncated and fsynced, later segments deleted, the directory synced). The
// idempotent-producer and leader-epoch tables are rebuilt to match. When
// offset is below the last checkpoint's recovery point a new checkpoint is
// written at offset with the same position: a caller that records positions
// must checkpoint again with the right one.
func (l *Log) TruncateTo(offset int64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	end := l.logEnd()
	if offset >= end {
		return nil
	}
	if offset < l.logStart {
		return &OffsetOutOfRangeError{Offset: offset, LogStart: l.logStart, LogEnd: end}
	}
	l.mu.RLock()
	seg := l.segmentForLocked(offset)
	l.mu.RUnlock()
	j := 0
	for l.segments[j] != seg {
		j++
	}
	// Re-derive the segment's bookkeeping up to offset from its headers,
	// which also proves offset is a batch boundary.
	fresh := &segment{base: seg.base, track: segTrack{maxTs: -1, maxTsOffset: -1}, next: seg.base}
	interval := int64(l.cfg.IndexIntervalBytes)
	var walkErr error
	_, _, corrupt, ioErr := scanBatches(seg.log, 0, seg.size, seg.base, false, func(h *BatchHeader, pos int64) bool {
		if h.BaseOffset >= offset {
			return false
		}
		fresh.observe(h, pos, interval)
		return true
	})
	switch {
	case ioErr != nil:
		return l.fail("truncate", ioErr)
	case corrupt != nil:
		walkErr = corrupt
	case fresh.next != offset:
		walkErr = fmt.Errorf("partition: truncation offset %d is not a batch boundary", offset)
	}
	if walkErr != nil {
		return walkErr
	}

	l.mu.Lock()
	later := l.segments[j+1:]
	l.segments = l.segments[: j+1 : j+1]
	seg.size, seg.next, seg.track = fresh.size, fresh.next, fresh.track
	seg.index, seg.times = fresh.index, fresh.times
	// Index files that hold entries past offset keep them until the
	// segment itself is truncated: their first entries are exactly the
	// ones kept, fsynced, which is all the checkpoint below needs, while
	// cutting them now would leave a sealed segment that the old checkpoint
	// still trusts with incomplete indexes if the power fails before the
	// new checkpoint is durable.
	staleIndex := seg.indexWritten > len(seg.index) || seg.timesWritten > len(seg.times)
	seg.indexWritten, seg.timesWritten = min(seg.indexWritten, len(seg.index)), min(seg.timesWritten, len(seg.times))
	seg.indexSynced = staleIndex
	l.epochs = l.epochs.truncateEnd(offset)
	l.notifyLocked()
	l.mu.Unlock()

	if err := l.rebuildProducersLocked(offset); err != nil {
		return err
	}
	// Below the recovery point the checkpoint is rewritten first, while the
	// files are still whole: a checkpoint whose recovery point lies past
	// the truncated files would not match them after a crash, and recovery
	// would then validate the whole log without its producer and epoch
	// state, or with TruncateUncheckpointed keep nothing at all. In this
	// order a crash leaves either the old log (validated past the new
	// recovery point) or the truncated one.
	if offset < l.cp.recovery {
		if err := l.checkpointLocked(l.cp.position); err != nil {
			return err
		}
	}
	if err := seg.log.Truncate(seg.size); err != nil {
		return l.fail("truncate", err)
	}
	if err := seg.log.Sync(); err != nil {
		return l.fail("fsync segment", err)
	}
	seg.dirty = false
	seg.indexSynced = false // the next index write drops the stale entries
	for _, s := range later {
		if err := l.removeSegmentFiles(s); err != nil {
			s.release()
			return l.fail("delete segment", err)
		}
		s.release()
	}
	if err := l.fsys.SyncDir(l.dir); err != nil {
		return l.fail("sync directory", err)
	}
	return nil
}

// rebuildProducersLocked recomputes the idempotent-producer table for a log
// that now ends at end: from the checkpoint's table plus the batches after
// its recovery point when the checkpoint is still below end, else from every
// batch in the log (producers known only from deleted segments are then
// forgotten, which KIP-360 tolerates).
func (l *Log) rebuildProducersLocked(end int64) error {
	from := l.logStart
	t := producerTable{}
	if l.cp.recovery <= end && l.cp.producers != nil {
		t, from = l.cp.producers.clone(), l.cp.recovery
	}
	nowMs := l.now().UnixMilli() // append times are not in the log; see recover
	for _, s := range l.segments {
		if s.next <= from {
			continue
		}
		_, _, corrupt, ioErr := scanBatches(s.log, 0, s.size, s.base, false, func(h *BatchHeader, _ int64) bool {
			if h.Idempotent() && h.BaseOffset >= from {
				t.update(h, nowMs)
			}
			return true
		})
		if ioErr != nil {
			return l.fail("rebuild producers", ioErr)
		}
		if corrupt != nil {
			return errors.Join(ErrCorruptBatch, corrupt)
		}
	}
	l.producers = t
	return nil
}
