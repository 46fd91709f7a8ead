package partition

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

// Log is one partition's Kafka log on disk: a directory of segments, each a
// file of v2 record batches byte-identical to what Fetch returns, with sparse
// offset and time indexes, and a checkpoint file holding the durable state
// (log start, recovery point, leader epochs, idempotent producers, the
// caller's applied position).
//
// Concurrency: one appender and many readers, and fsyncs that block neither.
// Append, StartEpoch, Roll, ExpireProducers and SetConfig serialise on
// appendMu. Sync and Checkpoint take syncMu, hold appendMu only to take a
// snapshot of what to make durable, and fsync without it, so appends go on
// during an fsync. Retain, DeleteRecords, TruncateTo and Close take both:
// they are rare and change which segments exist. Readers (Read, the offset
// lookups, Wait) take mu for reading only long enough to find their segment
// and byte range, then read the file without any lock, so they never wait
// for a write or fsync in progress. The appender takes mu for writing only
// to publish a completed write. Lock order: syncMu, appendMu, mu.
type Log struct {
	fsys   vfs.FS
	dir    string
	logger *slog.Logger
	now    func() time.Time
	findTs TimestampSearcher

	// syncMu serialises the operations that fsync or remove segments; it
	// also owns each segment's index-file bookkeeping.
	syncMu    sync.Mutex
	appendMu  sync.Mutex
	cfg       Config
	producers producerTable
	// pending and wbuf are appendBatches' scratch space, kept between calls.
	pending []pendingBatch
	wbuf    []byte
	// cp is the checkpoint last written; a log start change rewrites it
	// with only the log start changed.
	cp     checkpointState
	closed bool

	mu       sync.RWMutex
	segments []*segment // by base offset; the last one is active
	logStart int64
	epochs   epochTable
	failed   error // sticky: set once, never cleared
	// changed is closed and replaced whenever the log end moves (or the log
	// closes or fails), waking every waiter at once.
	changed chan struct{}
}

// AppendResult says where a batch went.
type AppendResult struct {
	BaseOffset int64
	LastOffset int64
	// Duplicate is true when the batch repeats one of the producer's last
	// five: nothing was written and the offsets are the original ones.
	Duplicate bool
	// LogStartOffset is the log start when the append completed; produce
	// responses carry it.
	LogStartOffset int64
}

// active is the segment appends go to. Callers hold appendMu or mu.
func (l *Log) active() *segment { return l.segments[len(l.segments)-1] }

// logEnd is the offset the next batch gets. Callers hold appendMu or mu.
func (l *Log) logEnd() int64 { return l.active().next }

// Append validates one record batch (see ValidateBatch), deduplicates it if
// it is idempotent, assigns it the next offsets and the leader epoch, and
// writes it to the active segment, rolling first when the segment is full
// or old. The log stamps the batch's baseOffset and partitionLeaderEpoch
// fields (neither is under the CRC) into its own copy: b is neither
// modified nor retained.
//
// The write is in the page cache when Append returns; Sync or Checkpoint
// makes it durable. After a failed write the log refuses further appends.
func (l *Log) Append(b []byte, leaderEpoch int32) (AppendResult, error) {
	var res [1]AppendResult
	var errs [1]error
	if err := l.appendBatches([][]byte{b}, leaderEpoch, l.now().UnixMilli(), res[:], errs[:]); err != nil {
		return AppendResult{}, err
	}
	return res[0], errs[0]
}

// AppendBatches appends several batches as Append does, one after the
// other, with one write per segment they land in: what applying a Raft
// entry that aggregates many produce requests needs, where one syscall per
// small batch would cap throughput. appendTimeMs is the append time the
// idempotent-producer table records (producer expiry measures from it);
// under replication the leader stamps it into the entry so every replica
// records the same, where Append uses the log's clock. Each batch is judged
// on its own: errs[i] says why batch i was refused (it then takes no
// offsets), results[i] where an accepted one went. The returned error is a
// storage failure, after which the log refuses writes; batches before it
// may have been written.
func (l *Log) AppendBatches(batches [][]byte, leaderEpoch int32, appendTimeMs int64) (results []AppendResult, errs []error, err error) {
	results, errs = make([]AppendResult, len(batches)), make([]error, len(batches))
	return results, errs, l.appendBatches(batches, leaderEpoch, appendTimeMs, results, errs)
}

// appendBatches is Append and AppendBatches: validate, deduplicate and
// stamp each batch, collect the accepted ones for the active segment, and
// write them with one syscall before a roll and at the end.
func (l *Log) appendBatches(batches [][]byte, leaderEpoch int32, appendMs int64, results []AppendResult, errs []error) error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	l.pending = l.pending[:0]
	end := l.logEnd()
	pendingBytes := int64(0)
	for i, b := range batches {
		h, err := ValidateBatch(b, l.cfg.MaxBatchBytes)
		if err != nil {
			errs[i] = err
			continue
		}
		if h.Idempotent() {
			dup, err := l.producers.check(&h, end == l.logStart)
			if err != nil {
				errs[i] = err
				continue
			}
			if dup != nil {
				results[i] = AppendResult{BaseOffset: dup.firstOffset, LastOffset: dup.lastOffset, Duplicate: true}
				continue
			}
		}
		if l.shouldRollLocked(&h, end, pendingBytes) {
			if err := l.writePendingLocked(leaderEpoch); err != nil {
				return err
			}
			pendingBytes = 0
			if err := l.rollLocked(); err != nil {
				return err
			}
		}
		h.BaseOffset, h.PartitionLeaderEpoch = end, leaderEpoch
		if h.Idempotent() {
			// Now, not after the write: a later batch of the same
			// producer in this call must see this one. If the write
			// fails the log is failed and the table no longer matters.
			l.producers.update(&h, appendMs)
		}
		l.pending = append(l.pending, pendingBatch{b: b, h: h})
		pendingBytes += h.Size()
		results[i] = AppendResult{BaseOffset: end, LastOffset: h.LastOffset()}
		end = h.NextOffset()
	}
	if err := l.writePendingLocked(leaderEpoch); err != nil {
		return err
	}
	l.mu.RLock()
	start := l.logStart
	l.mu.RUnlock()
	for i := range results {
		results[i].LogStartOffset = start
	}
	return nil
}

// pendingBatch is an accepted, stamped batch waiting for its write.
type pendingBatch struct {
	b []byte
	h BatchHeader
}

// writePendingLocked copies the pending batches into the reused write
// buffer, stamps each copy with its base offset and leader epoch, writes them
// to the active segment with one syscall and publishes them: indexes, epoch
// table, log end, waiters woken. appendMu is held.
//
// The callers' buffers are never written: under replication they are a Raft
// entry still held by raft's log cache and still being sent to followers, so
// stamping in place would race with those readers, and cloning the whole
// entry first cost a tenth of the broker's CPU. One copy into a warm buffer
// is what the write needed anyway.
func (l *Log) writePendingLocked(leaderEpoch int32) error {
	if len(l.pending) == 0 {
		return nil
	}
	seg := l.active()
	l.wbuf = l.wbuf[:0]
	for _, p := range l.pending {
		at := len(l.wbuf)
		l.wbuf = append(l.wbuf, p.b...)
		stampBatch(l.wbuf[at:], p.h.BaseOffset, p.h.PartitionLeaderEpoch)
	}
	if _, err := seg.log.Write(l.wbuf); err != nil {
		return l.fail("append", err)
	}
	if cap(l.wbuf) > maxRetainedWriteBuf {
		l.wbuf = nil
	}
	seg.dirty = true
	pos := seg.size
	interval := int64(l.cfg.IndexIntervalBytes)
	l.mu.Lock()
	for i := range l.pending {
		h := &l.pending[i].h
		seg.observe(h, pos, interval)
		pos += h.Size()
		l.epochs = l.epochs.assign(leaderEpoch, h.BaseOffset)
	}
	l.notifyLocked()
	l.mu.Unlock()
	clear(l.pending) // drop the references to the callers' buffers
	l.pending = l.pending[:0]
	return nil
}

// maxRetainedWriteBuf bounds the write buffer kept between appends.
const maxRetainedWriteBuf = 4 << 20

// shouldRollLocked: a non-empty active segment is rolled when the batch
// would take it (with pending, the bytes accepted but not yet written) past
// SegmentBytes, when it is older than SegmentAge, or when the batch's
// offsets would not fit the index's 32-bit relative offsets.
func (l *Log) shouldRollLocked(h *BatchHeader, end, pending int64) bool {
	seg := l.active()
	size := seg.size + pending
	if size == 0 {
		return false
	}
	return size+h.Size() > l.cfg.SegmentBytes ||
		(l.cfg.SegmentAge > 0 && l.now().Sub(seg.created) >= l.cfg.SegmentAge) ||
		end+int64(h.LastOffsetDelta)-seg.base > int64(^uint32(0))
}

// StartEpoch records that leaderEpoch begins at the current log end, before
// it writes anything: a new leader calls it so that OffsetForLeaderEpoch
// knows the epoch even while it holds no batches. An epoch at or below the
// latest is ignored. It is durable with the next checkpoint (and replayed by
// the caller's log otherwise, like any append).
func (l *Log) StartEpoch(leaderEpoch int32) error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	l.mu.Lock()
	l.epochs = l.epochs.assign(leaderEpoch, l.logEnd())
	l.mu.Unlock()
	return nil
}

// Read returns whole batches starting with the one that holds offset, up to
// maxBytes in total, none at or after upTo (the high watermark): at least one
// batch whenever one qualifies, even if it alone exceeds maxBytes, so a
// consumer always makes progress. Reads stay within one segment; the caller
// reads again from the next offset. An empty result with a nil error means
// nothing qualifies yet (offset at the end, or upTo reached). An offset below
// the log start or past the log end is an *OffsetOutOfRangeError.
func (l *Log) Read(offset int64, maxBytes int, upTo int64) ([]byte, error) {
	for {
		l.mu.RLock()
		start, end := l.logStart, l.logEnd()
		if offset < start || offset > end {
			l.mu.RUnlock()
			return nil, &OffsetOutOfRangeError{Offset: offset, LogStart: start, LogEnd: end}
		}
		if l.changed == nil { // closed
			l.mu.RUnlock()
			return nil, ErrClosed
		}
		if offset >= min(upTo, end) {
			l.mu.RUnlock()
			return []byte{}, nil
		}
		seg := l.segmentForLocked(offset)
		pos := floorIndex(seg.index, seg.rel(offset))
		size := seg.size
		seg.acquire()
		l.mu.RUnlock()

		data, err := readBatches(seg, pos, size, offset, maxBytes, upTo)
		seg.release()
		if err != nil {
			return nil, err
		}
		if data != nil {
			return data, nil
		}
		// offset lies past the last batch of its segment, at the next
		// segment's base: move to the next one.
		l.mu.RLock()
		nextBase := int64(-1)
		for _, s := range l.segments {
			if s.base > seg.base {
				nextBase = s.base
				break
			}
		}
		l.mu.RUnlock()
		if nextBase < 0 {
			return []byte{}, nil
		}
		offset = nextBase
	}
}

// segmentForLocked returns the segment whose offsets include offset: the
// last one with base <= offset. mu is held; offset is within the log.
func (l *Log) segmentForLocked(offset int64) *segment {
	i := sort.Search(len(l.segments), func(i int) bool { return l.segments[i].base > offset })
	return l.segments[max(i-1, 0)]
}

// readBatches reads from pos (a batch boundary at or before the batch that
// holds offset) to at most size: one ReadAt that covers the skip to offset
// plus maxBytes, then batch boundaries parsed in memory. It returns nil when
// no batch at or after offset is in [pos, size).
func readBatches(seg *segment, pos, size, offset int64, maxBytes int, upTo int64) ([]byte, error) {
	const lastOffsetEnd = offLastOffsetDelta + 4 // header bytes needed to know a batch's last offset
	maxBytes = max(maxBytes, 0)
	want := min(size-pos, int64(maxBytes)+int64(BatchHeaderSize)+8192)
	for pos < size {
		buf := make([]byte, want)
		if _, err := seg.log.ReadAt(buf, pos); err != nil && err != io.EOF {
			return nil, &StorageError{Op: fmt.Sprintf("read segment %d at %d", seg.base, pos), Err: err}
		}
		// Skip the batches that end before offset.
		off := int64(0)
		for off+lastOffsetEnd <= int64(len(buf)) {
			_, bsize, last := batchBounds(buf[off:])
			if bsize < BatchHeaderSize || pos+off+bsize > size {
				return nil, fmt.Errorf("%w: segment %d has a bad batch at position %d", ErrCorruptBatch, seg.base, pos+off)
			}
			if last >= offset {
				break
			}
			off += bsize
		}
		if off+lastOffsetEnd > int64(len(buf)) {
			// The skip ran past the buffer: read again from there.
			pos += off
			if pos >= size {
				return nil, nil
			}
			want = min(size-pos, int64(maxBytes)+int64(BatchHeaderSize)+8192)
			continue
		}
		// Take whole batches from off while they fit maxBytes (the first
		// always) and start below upTo.
		first := off
		total := int64(0)
		for off+lastOffsetEnd <= int64(len(buf)) {
			base, bsize, _ := batchBounds(buf[off:])
			if bsize < BatchHeaderSize || pos+off+bsize > size {
				// A damaged length in a segment recovery trusted (the
				// first batch passed the same check above): return the
				// batches before it; a read that starts at it reports
				// the corruption. Never bytes that are not batches.
				break
			}
			if base >= upTo || (total > 0 && total+bsize > int64(maxBytes)) || off+bsize > int64(len(buf)) {
				if total == 0 && base < upTo && pos+off+bsize <= size {
					// The first batch alone is bigger than the buffer:
					// read it whole.
					big := make([]byte, bsize)
					if _, err := seg.log.ReadAt(big, pos+off); err != nil && err != io.EOF {
						return nil, &StorageError{Op: fmt.Sprintf("read segment %d at %d", seg.base, pos+off), Err: err}
					}
					return big, nil
				}
				break
			}
			total += bsize
			off += bsize
		}
		return buf[first : first+total], nil
	}
	return nil, nil
}

// batchBounds reads a batch's base offset, size and last offset from the
// first lastOffsetEnd bytes of b, without validating anything.
func batchBounds(b []byte) (base, size, last int64) {
	base = int64(binary.BigEndian.Uint64(b[offBaseOffset:]))
	size = int64(int32(binary.BigEndian.Uint32(b[offBatchLength:]))) + logOverhead
	last = base + int64(int32(binary.BigEndian.Uint32(b[offLastOffsetDelta:])))
	return base, size, last
}

// Wait blocks until the log end passes offset (LogEndOffset() > offset), the
// context ends, or the log closes or fails.
func (l *Log) Wait(ctx context.Context, offset int64) error {
	for {
		l.mu.RLock()
		end, ch, failed := l.logEnd(), l.changed, l.failed
		l.mu.RUnlock()
		switch {
		case failed != nil:
			return failed
		case ch == nil:
			return ErrClosed
		case end > offset:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Changed returns a channel that is closed at the next change of the log end
// (or on close or failure). A fetch that waits on many partitions selects on
// several of these. Nil after Close.
func (l *Log) Changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.changed
}

// notifyLocked wakes every waiter. mu is held for writing.
func (l *Log) notifyLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

// LogStartOffset is the first offset a read may ask for.
func (l *Log) LogStartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.logStart
}

// LogEndOffset is the offset the next appended record gets.
func (l *Log) LogEndOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.logEnd()
}

// Size is the total bytes of all segments.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segments {
		n += s.size
	}
	return n
}

// Segments lists the base offsets of the segments, oldest first.
func (l *Log) Segments() []int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	bases := make([]int64, len(l.segments))
	for i, s := range l.segments {
		bases[i] = s.base
	}
	return bases
}

// Err is the sticky storage failure, or nil while the log is healthy.
func (l *Log) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.failed
}

// Producer reports what the log holds for an idempotent producer.
func (l *Log) Producer(id int64) (ProducerState, bool) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	e := l.producers[id]
	if e == nil || len(e.batches) == 0 {
		return ProducerState{}, false
	}
	last := e.batches[len(e.batches)-1]
	return ProducerState{ProducerID: id, Epoch: e.epoch, LastSequence: last.lastSeq, LastOffset: last.lastOffset, LastTimestamp: e.lastTimestamp}, true
}

// ExpireProducers forgets idempotent producers whose newest batch was
// appended before nowMs minus ProducerExpiration. The caller supplies the time
// so that replicas expire the same producers at the same point in the log.
// It returns how many were removed.
func (l *Log) ExpireProducers(nowMs int64) int {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.producers.expire(nowMs, l.cfg.ProducerExpiration.Milliseconds())
}

// SetConfig changes the topic configuration; it applies from the next
// append or retention pass.
func (l *Log) SetConfig(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.cfg = c
	return nil
}

// Config returns the topic configuration in force.
func (l *Log) Config() Config {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.cfg
}

// writableLocked refuses writes after a failure or Close. appendMu is held.
func (l *Log) writableLocked() error {
	if l.closed {
		return ErrClosed
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.failed
}

// fail makes err the log's sticky failure: from now on every write returns
// it, and the failure is never retried (after a failed fsync the kernel may
// have dropped the dirty pages, so a later success would lie). It takes mu;
// any other lock may be held.
func (l *Log) fail(op string, err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = &StorageError{Op: op, Err: err}
		l.logger.Error("partition storage failure; refusing writes", "op", op, "err", err)
		l.notifyLocked()
	}
	return l.failed
}

// Sync makes every appended batch durable: it fsyncs each segment written
// since the last Sync, without holding up appends. The recovery point in the
// checkpoint moves only with Checkpoint.
func (l *Log) Sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	if err := l.writableLocked(); err != nil {
		l.appendMu.Unlock()
		return err
	}
	dirty := l.takeDirtyLocked()
	l.appendMu.Unlock()
	return l.fsyncSegments(dirty)
}

// takeDirtyLocked returns the segments with unsynced writes and marks them
// clean: the fsync that follows covers every write made before this call,
// and a later write marks its segment dirty again. appendMu is held.
func (l *Log) takeDirtyLocked() []*segment {
	var dirty []*segment
	for _, s := range l.segments {
		if s.dirty {
			dirty = append(dirty, s)
			s.dirty = false
		}
	}
	return dirty
}

// fsyncSegments fsyncs segment files. syncMu is held, so no segment is
// deleted (and its file closed) meanwhile.
func (l *Log) fsyncSegments(segs []*segment) error {
	for _, s := range segs {
		if err := s.log.Sync(); err != nil {
			return l.fail("fsync segment", err)
		}
	}
	return nil
}

// Checkpoint makes every appended batch durable and then durably records the
// log's state at its end: the recovery point (so reopening validates nothing
// before it), the leader epochs, the idempotent producers, the log start and
// position, an opaque value the caller associates with this state
// (replication records the Raft index of the last applied entry). The
// position must describe exactly the batches appended so far: a caller that
// records positions calls Checkpoint between appends, never concurrently
// with them. Appends are held up only while the state is copied, not during
// the fsyncs.
func (l *Log) Checkpoint(position uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	if err := l.writableLocked(); err != nil {
		l.appendMu.Unlock()
		return err
	}
	snap := l.snapshotLocked(position)
	l.appendMu.Unlock()
	if err := l.persist(snap); err != nil {
		return err
	}
	l.appendMu.Lock()
	l.cp = snap.cp
	l.appendMu.Unlock()
	return nil
}

// checkpointLocked is Checkpoint for callers that already hold syncMu and
// appendMu (recovery, TruncateTo).
func (l *Log) checkpointLocked(position uint64) error {
	snap := l.snapshotLocked(position)
	if err := l.persist(snap); err != nil {
		return err
	}
	l.cp = snap.cp
	return nil
}

// ckptSnapshot is what one checkpoint makes durable: the segments to fsync,
// each segment's index entries as of the snapshot, and the state to record.
type ckptSnapshot struct {
	dirty []*segment
	segs  []*segment
	index [][]indexEntry
	times [][]timeEntry
	cp    checkpointState
}

// snapshotLocked copies the log's state at its end. The index slices share
// the segments' arrays: entries are only ever appended past a snapshot's
// length (TruncateTo, which rewrites them, needs syncMu). appendMu is held.
func (l *Log) snapshotLocked(position uint64) *ckptSnapshot {
	snap := &ckptSnapshot{dirty: l.takeDirtyLocked(), segs: append([]*segment(nil), l.segments...)}
	for _, s := range snap.segs {
		snap.index = append(snap.index, s.index[:len(s.index):len(s.index)])
		snap.times = append(snap.times, s.times[:len(s.times):len(s.times)])
	}
	act := l.active()
	l.mu.RLock()
	snap.cp = checkpointState{
		logStart:        l.logStart,
		recovery:        act.next,
		recoverySegment: act.base,
		recoveryPos:     act.size,
		active:          act.track,
		position:        position,
		epochs:          l.epochs.clone(),
		producers:       l.producers.clone(),
	}
	l.mu.RUnlock()
	snap.cp.active.indexCount, snap.cp.active.timeCount = len(act.index), len(act.times)
	return snap
}

// persist fsyncs the snapshot's segments, writes and fsyncs their index
// files up to the snapshot, then writes the checkpoint: everything it
// describes is on disk before it is. syncMu is held.
func (l *Log) persist(snap *ckptSnapshot) error {
	if err := l.fsyncSegments(snap.dirty); err != nil {
		return err
	}
	for i, s := range snap.segs {
		if err := s.writeIndexes(l.fsys, snap.index[i], snap.times[i], true); err != nil {
			return l.fail("write index", err)
		}
	}
	if err := writeCheckpoint(l.fsys, l.dir, &snap.cp); err != nil {
		return l.fail("write checkpoint", err)
	}
	return nil
}

// Checkpointed returns the position and recovery point of the last
// checkpoint written or found on open.
func (l *Log) Checkpointed() (position uint64, recoveryPoint int64) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.cp.position, l.cp.recovery
}

// Close syncs what was appended, writes the index files, and closes every
// file. It does not write a checkpoint (the position is the caller's to
// give): call Checkpoint first for a fast reopen. Waiters get ErrClosed.
func (l *Log) Close() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if l.closed {
		return ErrClosed
	}
	var err error
	if l.Err() == nil {
		err = l.fsyncSegments(l.takeDirtyLocked())
		for _, s := range l.segments {
			if err == nil {
				if werr := s.writeIndexes(l.fsys, s.index, s.times, true); werr != nil {
					err = l.fail("write index", werr)
				}
			}
		}
	}
	l.closed = true
	l.mu.Lock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	segs := l.segments
	l.mu.Unlock()
	for _, s := range segs {
		s.release()
	}
	return err
}

// createSegment creates the three files of a new segment and fsyncs the
// directory so the new names survive a crash. An existing file of the same
// name (left over from a truncation) is emptied.
func (l *Log) createSegment(base int64) (*segment, error) {
	s := &segment{base: base, dir: l.dir, next: base, created: l.now(), track: segTrack{maxTs: -1, maxTsOffset: -1}}
	f, err := l.fsys.OpenFile(s.path(logExt), os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	s.log = f
	s.refs.Store(1)
	for _, ext := range []string{indexExt, timeIndexExt} {
		f, err := l.fsys.OpenFile(s.path(ext), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err == nil {
			err = f.Close()
		}
		if err != nil {
			s.release()
			return nil, err
		}
	}
	if err := l.fsys.SyncDir(l.dir); err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

// Roll starts a new active segment now (if the active one holds anything).
func (l *Log) Roll() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if l.active().size == 0 {
		return nil
	}
	return l.rollLocked()
}

// rollLocked seals the active segment and opens a new one at the log end.
// The sealed segment gets its final time index entry and its data is
// fsynced (once per segment.bytes, so the pause is rare), which makes every
// batch before a roll durable. Its index files are written and fsynced by
// the next Checkpoint (they belong to syncMu); a checkpoint never records a
// recovery point past a segment whose index files it has not fsynced.
func (l *Log) rollLocked() error {
	old := l.active()
	l.mu.Lock()
	old.addTimeEntry()
	l.mu.Unlock()
	if old.dirty {
		if err := old.log.Sync(); err != nil {
			return l.fail("fsync segment", err)
		}
		old.dirty = false
	}
	s, err := l.createSegment(old.next)
	if err != nil {
		return l.fail("create segment", err)
	}
	l.mu.Lock()
	l.segments = append(l.segments, s)
	l.mu.Unlock()
	l.logger.Debug("rolled segment", "base_offset", s.base)
	return nil
}
