package partition

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

// Open opens (creating if needed) the log in opts.Dir and recovers it; see
// doc.go for the rules. A torn or corrupt tail is truncated and logged, not
// refused: the log always opens to a valid prefix of what was written.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("partition: Options.Dir is empty")
	}
	if opts.FS == nil {
		opts.FS = vfs.OS{}
	}
	if opts.Config == (Config{}) {
		opts.Config = DefaultConfig()
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		fsys:      opts.FS,
		dir:       path.Clean(opts.Dir),
		logger:    opts.Logger.With("dir", opts.Dir),
		now:       opts.Now,
		findTs:    opts.FindTimestamp,
		cfg:       opts.Config,
		producers: producerTable{},
		changed:   make(chan struct{}),
	}
	if err := finishRestore(l.fsys, l.dir); err != nil {
		return nil, fmt.Errorf("partition: finish an interrupted restore of %s: %w", l.dir, err)
	}
	if err := vfs.MkdirAllDurable(l.fsys, l.dir); err != nil {
		return nil, fmt.Errorf("partition: create %s: %w", l.dir, err)
	}
	segs, err := l.openSegments()
	if err != nil {
		return nil, err
	}
	if err := l.recover(segs, opts.TruncateUncheckpointed); err != nil {
		for _, s := range segs {
			s.release()
		}
		for _, s := range l.segments {
			s.release()
		}
		return nil, err
	}
	return l, nil
}

// openSegments opens every segment file in the directory, in offset order,
// and removes index files that have no segment (left by a crash during
// deletion).
func (l *Log) openSegments() ([]*segment, error) {
	names, err := l.fsys.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("partition: list %s: %w", l.dir, err)
	}
	logs := map[int64]bool{}
	for _, n := range names {
		if base, ext, ok := parseSegmentFileName(n); ok && ext == logExt {
			logs[base] = true
		}
	}
	removed := false
	for _, n := range names {
		if base, ext, ok := parseSegmentFileName(n); ok && ext != logExt && !logs[base] {
			if err := l.fsys.Remove(path.Join(l.dir, n)); err != nil {
				return nil, fmt.Errorf("partition: remove orphan %s: %w", n, err)
			}
			removed = true
		}
	}
	if removed {
		if err := l.fsys.SyncDir(l.dir); err != nil {
			return nil, fmt.Errorf("partition: sync %s: %w", l.dir, err)
		}
	}
	var segs []*segment
	now := l.now()
	for _, n := range names {
		base, ext, ok := parseSegmentFileName(n)
		if !ok || ext != logExt {
			continue
		}
		s := &segment{base: base, dir: l.dir, next: base, created: now, track: segTrack{maxTs: -1, maxTsOffset: -1}}
		f, err := l.fsys.OpenFile(s.path(logExt), os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			for _, s := range segs {
				s.release()
			}
			return nil, fmt.Errorf("partition: open %s: %w", n, err)
		}
		s.log = f
		s.refs.Store(1)
		segs = append(segs, s)
	}
	return segs, nil
}

// recover turns the opened segment files into the log's state. It trusts
// everything below the checkpoint's recovery point (it was fsynced before the
// checkpoint was written), reads the index files of sealed segments, and
// validates every batch past the recovery point, truncating at the first bad
// one. On success l.segments holds the segments; on failure the caller
// releases both slices.
func (l *Log) recover(segs []*segment, truncate bool) error {
	openMs := l.now().UnixMilli()
	cp, err := readCheckpoint(l.fsys, l.dir)
	switch {
	case errors.Is(err, errBadCheckpoint):
		l.logger.Warn("ignoring unreadable checkpoint; validating the whole log", "err", err)
		cp = nil
	case err != nil:
		return fmt.Errorf("partition: read checkpoint: %w", err)
	}
	start := -1 // index of the recovery segment
	if cp != nil {
		start = slices.IndexFunc(segs, func(s *segment) bool { return s.base == cp.recoverySegment })
		fileSize := int64(0)
		if start >= 0 {
			if fileSize, err = segs[start].log.Size(); err != nil {
				return err
			}
		}
		empty := len(segs) == 0 && cp.recoveryPos == 0
		var damage error
		if !empty && start >= 0 && fileSize >= cp.recoveryPos {
			if damage, err = tailDamage(segs[start], cp); err != nil {
				return fmt.Errorf("partition: check the tail of segment %d: %w", cp.recoverySegment, err)
			}
		}
		if !empty && (start < 0 || fileSize < cp.recoveryPos || damage != nil) {
			l.logger.Warn("checkpoint does not match the segments; validating the whole log",
				"recovery_segment", cp.recoverySegment, "recovery_pos", cp.recoveryPos, "segment_size", fileSize, "damage", damage)
			cp.recovery, cp.recoverySegment, cp.recoveryPos, cp.position = 0, 0, 0, 0
			cp.epochs, cp.producers, cp.active = nil, nil, segTrack{}
			start = -1
			if !truncate {
				cp = &checkpointState{logStart: cp.logStart}
			}
		}
	}
	useCP := cp != nil && start >= 0
	if cp != nil {
		l.cp = *cp
		l.logStart = cp.logStart
		l.epochs = cp.epochs.clone()
		if cp.producers != nil {
			// A copy: l.cp keeps the table as of the checkpoint, which
			// TruncateTo rebuilds from; appends must not change it.
			l.producers = cp.producers.clone()
		}
	}
	if !useCP {
		start = 0
		l.epochs, l.producers = nil, producerTable{}
		if truncate {
			// Nothing is known to be applied: keep nothing.
			segs, err = l.dropFrom(segs, 0, 0, true)
			if err != nil {
				return err
			}
		}
	}
	interval := int64(l.cfg.IndexIntervalBytes)

	// Sealed segments below the recovery segment: trusted, indexes loaded.
	for j := 0; j < start && j < len(segs); j++ {
		ok, err := l.loadSealed(segs[j], segs[j+1].base)
		if err != nil {
			return err
		}
		if !ok {
			segs, err = l.dropFrom(segs, j, segs[j].size, false)
			if err != nil {
				return err
			}
			break
		}
	}

	if start < len(segs) {
		if useCP {
			if err := l.loadRecoverySegment(segs[start], cp); err != nil {
				return err
			}
		}
		if truncate && useCP {
			segs, err = l.dropFrom(segs, start, cp.recoveryPos, false)
			if err != nil {
				return err
			}
		} else {
			// Validate every batch past the recovery point.
			for j := start; j < len(segs); j++ {
				s := segs[j]
				if j > 0 && s.base != segs[j-1].next {
					l.logger.Warn("segment does not continue the previous one; dropping it and all after", "base_offset", s.base, "expected", segs[j-1].next)
					segs, err = l.dropFrom(segs, j-1, segs[j-1].size, false)
					if err != nil {
						return err
					}
					break
				}
				fileSize, err := s.log.Size()
				if err != nil {
					return err
				}
				goodEnd, _, corrupt, ioErr := scanBatches(s.log, s.size, fileSize, s.next, true, func(h *BatchHeader, pos int64) bool {
					s.observe(h, pos, interval)
					if h.Idempotent() {
						// The append time is gone with the crash; the
						// open time keeps the producer at least as long.
						l.producers.update(h, openMs)
					}
					l.epochs = l.epochs.assign(h.PartitionLeaderEpoch, h.BaseOffset)
					return true
				})
				if ioErr != nil {
					return fmt.Errorf("partition: recover segment %d: %w", s.base, ioErr)
				}
				if corrupt != nil {
					l.logger.Warn("truncating the log at a torn or corrupt batch", "base_offset", s.base, "position", goodEnd, "reason", corrupt)
					segs, err = l.dropFrom(segs, j, goodEnd, false)
					if err != nil {
						return err
					}
					break
				}
			}
		}
	}

	restart := false
	if n := len(segs); n > 0 && !truncate && l.logStart > segs[n-1].next {
		// The checkpoint made a log start durable (DeleteRecords) past
		// what survived: batches below it were never synced. Their
		// offsets were handed out, and consumers may have moved past them
		// to the log start, so the log starts over empty at the log start
		// instead of handing them out again (Kafka does the same). With
		// TruncateUncheckpointed the caller re-applies everything after
		// the checkpoint, that DeleteRecords included, at the original
		// offsets, so there the log start is clamped to the end below.
		l.logger.Warn("log start is past the recovered log end; starting the log over at the log start",
			"log_start_offset", l.logStart, "log_end_offset", segs[n-1].next)
		if segs, err = l.dropFrom(segs, 0, 0, true); err != nil {
			return err
		}
		restart = true
	}
	if len(segs) == 0 {
		base := l.logStart
		if cp != nil && useCP {
			base = max(base, cp.recovery)
		}
		s, err := l.createSegment(base)
		if err != nil {
			return fmt.Errorf("partition: create first segment: %w", err)
		}
		segs = []*segment{s}
	}
	// Sealed segments whose indexes were rebuilt get complete index files
	// now, so that they never need rebuilding again. Complete includes the
	// final time index entry rollLocked writes: a later open takes the
	// segment's largest timestamp from the last entry, and without it
	// timestamp lookups would skip the segment's newest batches and
	// retention would find the segment older than it is.
	for _, s := range segs[:len(segs)-1] {
		s.addTimeEntry()
		if err := s.writeIndexes(l.fsys, s.index, s.times, true); err != nil {
			return fmt.Errorf("partition: write index of segment %d: %w", s.base, err)
		}
	}
	l.segments = segs
	end := l.logEnd()
	l.logStart = min(max(l.logStart, segs[0].base), end)
	// An epoch that starts exactly at the end (StartEpoch before its first
	// batch) is kept; only entries past the end are stale.
	l.epochs = l.epochs.truncateEnd(end + 1).truncateStart(l.logStart)
	if restart {
		// The checkpoint named a segment that is gone: replace it with
		// one at the new start, or the next open would find it not
		// matching and forget the producer and epoch state with it.
		if err := l.checkpointLocked(l.cp.position); err != nil {
			return fmt.Errorf("partition: checkpoint the restarted log: %w", err)
		}
	}
	l.logger.Info("opened partition log", "log_start_offset", l.logStart, "log_end_offset", end, "segments", len(segs))
	return nil
}

// tailDamage validates completely (CRC-32C included) the batches the
// checkpoint counted since the recovery segment's last offset index entry:
// everything below the recovery point is trusted as fsynced, but a damaged
// disk or a misdirected write shows at the tail first, and those few KiB
// are cheap to check at every open. A non-nil damage makes the caller
// ignore the checkpoint, as when the segment is shorter than it says.
func tailDamage(s *segment, cp *checkpointState) (damage, ioErr error) {
	from := cp.recoveryPos - cp.active.sinceIndex
	if from == cp.recoveryPos {
		return nil, nil
	}
	if from < 0 || cp.active.sinceIndex < 0 {
		return fmt.Errorf("%w: checkpoint counts %d bytes since the last index entry at position %d", ErrCorruptBatch, cp.active.sinceIndex, cp.recoveryPos), nil
	}
	end, next, corrupt, ioErr := scanBatches(s.log, from, cp.recoveryPos, -1, true, func(*BatchHeader, int64) bool { return true })
	switch {
	case ioErr != nil:
		return nil, ioErr
	case corrupt != nil:
		return corrupt, nil
	case end != cp.recoveryPos || next != cp.recovery:
		return fmt.Errorf("%w: the batches before the recovery point end at offset %d, position %d; the checkpoint says offset %d, position %d",
			ErrCorruptBatch, next, end, cp.recovery, cp.recoveryPos), nil
	}
	return nil, nil
}

// loadSealed reads a sealed segment's index files, or rebuilds them from the
// batch headers when they are missing or inconsistent. It reports false when
// the segment itself turned out to be broken; s.size then says where its
// good part ends.
func (l *Log) loadSealed(s *segment, next int64) (bool, error) {
	size, err := s.log.Size()
	if err != nil {
		return false, err
	}
	s.size, s.next = size, next
	idx, iok := readIndexFile(l.fsys, s.path(indexExt))
	tim, tok := readIndexFile(l.fsys, s.path(timeIndexExt))
	if iok && tok {
		var ok1, ok2 bool
		s.index, ok1 = decodeIndex(idx, size, uint64(next-s.base))
		s.times, ok2 = decodeTimeIndex(tim, uint64(next-s.base))
		if ok1 && ok2 {
			s.indexWritten, s.timesWritten, s.indexSynced = len(s.index), len(s.times), true
			if n := len(s.times); n > 0 {
				s.track.maxTs = s.times[n-1].ts
				s.track.maxTsOffset = s.base + int64(s.times[n-1].rel)
			}
			return true, nil
		}
	}
	l.logger.Warn("rebuilding the indexes of a sealed segment", "base_offset", s.base)
	s.index, s.times, s.indexWritten, s.timesWritten, s.indexSynced = nil, nil, 0, 0, false
	s.track = segTrack{maxTs: -1, maxTsOffset: -1}
	s.size, s.next = 0, s.base
	interval := int64(l.cfg.IndexIntervalBytes)
	goodEnd, got, corrupt, ioErr := scanBatches(s.log, 0, size, s.base, false, func(h *BatchHeader, pos int64) bool {
		s.observe(h, pos, interval)
		return true
	})
	if ioErr != nil {
		return false, ioErr
	}
	s.addTimeEntry()
	if corrupt != nil || got != next {
		l.logger.Error("sealed segment is damaged below the recovery point; truncating the log there",
			"base_offset", s.base, "position", goodEnd, "reason", corrupt)
		return false, nil
	}
	return true, nil
}

// loadRecoverySegment restores the segment that holds the recovery point to
// its state at the checkpoint: size, next offset, the index entries the
// checkpoint counted and the tracking state, so that validating the batches
// after it recreates the same index entries the appender made.
func (l *Log) loadRecoverySegment(s *segment, cp *checkpointState) error {
	s.size, s.next, s.track = cp.recoveryPos, cp.recovery, cp.active
	idx, iok := readIndexFile(l.fsys, s.path(indexExt))
	tim, tok := readIndexFile(l.fsys, s.path(timeIndexExt))
	rel := uint64(cp.recovery - s.base)
	index, _ := decodeIndex(idx, cp.recoveryPos, rel)
	times, _ := decodeTimeIndex(tim, rel)
	if iok && tok && len(index) >= cp.active.indexCount && len(times) >= cp.active.timeCount {
		s.index, s.times = index[:cp.active.indexCount], times[:cp.active.timeCount]
		s.indexWritten, s.timesWritten = len(s.index), len(s.times)
		return nil
	}
	// The index files lost what the checkpoint counted (they are fsynced
	// before it is written, so only damage does that): rebuild from the
	// batch headers below the recovery point, which are trusted.
	l.logger.Warn("rebuilding the indexes of the recovery segment", "base_offset", s.base)
	s.size, s.next, s.track = 0, s.base, segTrack{maxTs: -1, maxTsOffset: -1}
	s.index, s.times, s.indexWritten, s.timesWritten = nil, nil, 0, 0
	interval := int64(l.cfg.IndexIntervalBytes)
	_, _, corrupt, ioErr := scanBatches(s.log, 0, cp.recoveryPos, s.base, false, func(h *BatchHeader, pos int64) bool {
		s.observe(h, pos, interval)
		return true
	})
	if ioErr != nil {
		return ioErr
	}
	if corrupt != nil || s.next != cp.recovery {
		return fmt.Errorf("%w: segment %d is damaged below the recovery point: %v", ErrCorruptBatch, s.base, corrupt)
	}
	return nil
}

// readIndexFile returns an index file's bytes; ok is false when it is
// missing or unreadable (it is then rebuilt).
func readIndexFile(fsys vfs.FS, name string) ([]byte, bool) {
	b, err := vfs.ReadFile(fsys, name)
	if err != nil {
		return nil, false
	}
	return b, true
}

// dropFrom truncates segs[j] to pos bytes (keeping its in-memory state
// consistent) and deletes every later segment, durably: the truncation is
// fsynced and the directory synced before it returns. With all it deletes
// segs[j] too. It returns what is left.
func (l *Log) dropFrom(segs []*segment, j int, pos int64, all bool) ([]*segment, error) {
	if j >= len(segs) {
		return segs, nil
	}
	from := j + 1
	if all {
		from = j
	} else {
		s := segs[j]
		if err := s.log.Truncate(pos); err != nil {
			return segs, fmt.Errorf("partition: truncate segment %d: %w", s.base, err)
		}
		if err := s.log.Sync(); err != nil {
			return segs, fmt.Errorf("partition: sync segment %d: %w", s.base, err)
		}
		if s.size > pos {
			// Only reached when the caller has not yet loaded this
			// segment beyond pos; its state is rebuilt by the scan.
			s.size = pos
		}
	}
	for _, s := range segs[from:] {
		if err := l.removeSegmentFiles(s); err != nil {
			return segs, err
		}
		s.release()
	}
	if err := l.fsys.SyncDir(l.dir); err != nil {
		return segs, fmt.Errorf("partition: sync %s: %w", l.dir, err)
	}
	return segs[:from], nil
}

// removeSegmentFiles unlinks a segment's three files. Open handles stay
// valid, so readers in flight finish their reads. The caller syncs the
// directory.
func (l *Log) removeSegmentFiles(s *segment) error {
	for _, ext := range []string{logExt, indexExt, timeIndexExt} {
		if err := l.fsys.Remove(s.path(ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("partition: remove %s: %w", s.path(ext), err)
		}
	}
	return nil
}
