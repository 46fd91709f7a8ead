package partition

import (
	"fmt"
	"io"
)

// OffsetForLeaderEpoch answers OffsetForLeaderEpoch: for the latest epoch,
// (that epoch, log end); for an older one, (the largest epoch at or below
// it, the start offset of the next epoch); for an epoch older than the whole
// table, (that epoch, the first start offset); (-1, -1) when the epoch is
// newer than any known or the table is empty.
func (l *Log) OffsetForLeaderEpoch(leaderEpoch int32) (epoch int32, endOffset int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.endOffsetFor(leaderEpoch, l.logEnd())
}

// EpochForOffset is the leader epoch that wrote offset (the latest epoch
// starting at or below it), -1 when unknown. ListOffsets answers carry it.
func (l *Log) EpochForOffset(offset int64) int32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.epochFor(offset)
}

// LatestEpoch is the newest leader epoch in the log's epoch table, -1 if
// none.
func (l *Log) LatestEpoch() int32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epochs.latest()
}

// TimestampOffset is a ListOffsets answer.
type TimestampOffset struct {
	Offset    int64
	Timestamp int64
}

// OffsetForTimestamp answers ListOffsets by time: the first offset below
// upTo, in log order, whose record timestamp is at or after ts, with that
// timestamp. found is false when there is none (Kafka then answers offset
// -1). Without an injected TimestampSearcher the answer is the first
// qualifying batch's base offset and max timestamp, except for LogAppendTime
// batches, where every record carries the max timestamp and the answer is
// exact anyway.
func (l *Log) OffsetForTimestamp(ts, upTo int64) (TimestampOffset, bool, error) {
	l.mu.RLock()
	var seg *segment
	var pos, size int64
	for _, s := range l.segments {
		if s.track.maxTs >= ts && s.base < upTo {
			seg, size = s, s.size
			if rel, ok := lastBelowTime(s.times, ts); ok {
				pos = floorIndex(s.index, rel)
			}
			break
		}
	}
	start := l.logStart
	if l.changed == nil { // closed: the segments' files are closed
		l.mu.RUnlock()
		return TimestampOffset{}, false, ErrClosed
	}
	if seg != nil {
		seg.acquire()
	}
	l.mu.RUnlock()
	if seg == nil {
		return TimestampOffset{}, false, nil
	}
	defer seg.release()
	return l.searchSegment(seg, pos, size, func(h *BatchHeader) bool {
		return h.MaxTimestamp >= ts && h.NextOffset() > start
	}, ts, start, upTo)
}

// MaxTimestamp answers ListOffsets with timestamp -3 (KIP-734): the offset
// and timestamp of the record with the largest timestamp below upTo (the
// first such record when several share it). found is false on an empty log.
func (l *Log) MaxTimestamp(upTo int64) (TimestampOffset, bool, error) {
	l.mu.RLock()
	var seg *segment
	var size int64
	best := int64(-1)
	for _, s := range l.segments {
		if s.track.maxTs > best && s.track.maxTsOffset < upTo && s.track.maxTsOffset >= l.logStart {
			seg, best, size = s, s.track.maxTs, s.size
		}
	}
	start := l.logStart
	if l.changed == nil { // closed
		l.mu.RUnlock()
		return TimestampOffset{}, false, ErrClosed
	}
	if seg != nil {
		seg.acquire()
	}
	l.mu.RUnlock()
	if seg == nil {
		// No segment's maximum is readable (empty, or the maximum lies at
		// or past upTo). A full scan would be needed to find the best
		// record below upTo; answer with the scan.
		return l.maxTimestampScan(upTo)
	}
	defer seg.release()
	return l.searchSegment(seg, 0, size, func(h *BatchHeader) bool {
		return h.MaxTimestamp == best && h.NextOffset() > start
	}, best, start, upTo)
}

// maxTimestampScan finds the largest timestamp below upTo by reading every
// batch header; only reached when the segment maxima all lie at or past
// upTo.
func (l *Log) maxTimestampScan(upTo int64) (TimestampOffset, bool, error) {
	l.mu.RLock()
	if l.changed == nil { // closed
		l.mu.RUnlock()
		return TimestampOffset{}, false, ErrClosed
	}
	segs := append([]*segment(nil), l.segments...)
	sizes := make([]int64, len(segs))
	for i, s := range segs {
		s.acquire()
		sizes[i] = s.size
	}
	start := l.logStart
	l.mu.RUnlock()
	defer func() {
		for _, s := range segs {
			s.release()
		}
	}()
	var best *segment
	bestTs := int64(-1)
	for i, s := range segs {
		_, _, corrupt, ioErr := scanBatches(s.log, 0, sizes[i], s.base, false, func(h *BatchHeader, _ int64) bool {
			if h.BaseOffset < upTo && h.NextOffset() > start && h.MaxTimestamp > bestTs {
				best, bestTs = s, h.MaxTimestamp
			}
			return true
		})
		if ioErr != nil {
			return TimestampOffset{}, false, ioErr
		}
		if corrupt != nil {
			return TimestampOffset{}, false, corrupt
		}
	}
	if best == nil {
		return TimestampOffset{}, false, nil
	}
	i := 0
	for segs[i] != best {
		i++
	}
	return l.searchSegment(best, 0, sizes[i], func(h *BatchHeader) bool {
		return h.MaxTimestamp == bestTs && h.NextOffset() > start
	}, bestTs, start, upTo)
}

// searchSegment walks the batch headers of seg from pos and answers with the
// first batch below upTo that match accepts: its exact record through the
// injected searcher when there is one, else the batch's base offset; never
// an offset below start (a batch may straddle the log start).
func (l *Log) searchSegment(seg *segment, pos, size int64, match func(*BatchHeader) bool, ts, start, upTo int64) (TimestampOffset, bool, error) {
	var hit *BatchHeader
	var hitPos int64
	_, _, corrupt, ioErr := scanBatches(seg.log, pos, size, -1, false, func(h *BatchHeader, p int64) bool {
		if hit == nil && h.BaseOffset < upTo && match(h) {
			c := *h
			hit, hitPos = &c, p
		}
		return hit == nil && h.BaseOffset < upTo
	})
	if ioErr != nil {
		return TimestampOffset{}, false, ioErr
	}
	if corrupt != nil && hit == nil {
		return TimestampOffset{}, false, corrupt
	}
	if hit == nil {
		return TimestampOffset{}, false, nil
	}
	if hit.LogAppendTime() || l.findTs == nil {
		return TimestampOffset{Offset: max(hit.BaseOffset, start), Timestamp: hit.MaxTimestamp}, true, nil
	}
	batch := make([]byte, hit.Size())
	if _, err := seg.log.ReadAt(batch, hitPos); err != nil && err != io.EOF {
		return TimestampOffset{}, false, err
	}
	off, rts, err := l.findTs(batch, ts)
	if err != nil {
		return TimestampOffset{}, false, fmt.Errorf("partition: search batch at offset %d: %w", hit.BaseOffset, err)
	}
	return TimestampOffset{Offset: max(off, start), Timestamp: rts}, true, nil
}
