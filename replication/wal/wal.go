package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// Segment size limits. The minimum exists so tests can roll every few
// entries; the maximum keeps record offsets in 32 bits (see MaxRecordBytes).
const (
	DefaultSegmentBytes = 64 << 20
	MinSegmentBytes     = 256
	MaxSegmentBytes     = 1 << 30
)

// slowSync is the fdatasync duration past which a warning is logged: a disk
// this slow stalls every raft group whose log lives on it.
const slowSync = time.Second

// maxKeptBuffer bounds the encode buffer kept between StoreLogs calls, so one
// huge batch does not pin its memory for the life of the log.
const maxKeptBuffer = 4 << 20

// Options configure Open.
type Options struct {
	// Dir holds the segments, the meta file and the stable store. It is
	// created (durably) if missing. One directory per raft group.
	Dir string
	// FS is the filesystem; nil means vfs.OS{}.
	FS vfs.FS
	// SegmentBytes: the active segment is sealed and a new one started
	// when the next record would take it past this size (an entry larger
	// than a segment gets one of its own). 0 means DefaultSegmentBytes.
	SegmentBytes int64
	// NoSync is write caching: StoreLogs returns without fdatasync, and
	// the entries become durable at the next Sync, segment roll or Close.
	// The risk: a power loss (not a process crash) of a majority at once
	// can lose entries raft acknowledged, and a node that lost its tail
	// may have voted on the longer log. DeleteRange and the StableStore
	// always fsync: a term or vote must never be forgotten, and a
	// truncation that does not stick could mix two leaders' entries.
	NoSync bool
	// Logger receives recovery and failure reports; nil discards.
	Logger *slog.Logger
	// OnSync, if set, is told how long each successful fdatasync of a
	// segment took (the broker's fsync latency histogram; this package
	// imports no metrics library). It runs on the writer, under writeMu,
	// so it must be cheap and must not call the Log.
	OnSync func(time.Duration)
}

// Log is a raft.LogStore and raft.StableStore backed by an append-only,
// segmented write-ahead log in one directory; doc.go specifies the format.
//
// Raft may call it from several goroutines: one writer at a time (StoreLogs,
// DeleteRange, Sync, Close and Set serialise among themselves) and any number
// of readers, which never wait for a write or fsync in progress.
type Log struct {
	fsys     vfs.FS
	dir      string
	segBytes int64
	noSync   bool
	logger   *slog.Logger
	onSync   func(time.Duration) // Options.OnSync; may be nil

	// writeMu serialises StoreLogs, DeleteRange, Sync and Close, and is
	// held across their file writes and fsyncs. The writer reads segs,
	// first and last without mu: only a writeMu holder changes them.
	writeMu   sync.Mutex
	wbuf      []byte // encode buffer; under writeMu
	metaFirst uint64 // first index in the meta file, 0 without one; under writeMu

	// mu guards the published view. Writers hold it exclusively only to
	// publish (never across I/O); readers hold it shared while they read
	// file bytes, so a segment cannot be closed under a reader.
	mu          sync.RWMutex
	segs        []*segment // ascending first index; the last is active
	first, last uint64     // 0, 0 when empty
	closed      bool       // set under writeMu, stableMu and mu: any holder may read it

	failed atomic.Pointer[StorageError]

	stableMu sync.Mutex   // serialises Set; held across the stable file's fsyncs
	kvMu     sync.RWMutex // guards kv, which Set replaces whole
	kv       map[string][]byte
}

var (
	_ raft.LogStore          = (*Log)(nil)
	_ raft.StableStore       = (*Log)(nil)
	_ raft.MonotonicLogStore = (*Log)(nil)
)

// segment is one open segment file. offs[i] is the byte offset of the record
// of index first+i, and the last element is the end of the last record, so a
// record's bytes are offs[i]:offs[i+1] and an empty segment has
// offs == {segHeaderSize}. The writer appends to offs under Log.mu.
type segment struct {
	first uint64
	path  string
	f     vfs.File
	offs  []uint32
}

func (s *segment) count() uint64 { return uint64(len(s.offs) - 1) }
func (s *segment) size() int64   { return int64(s.offs[len(s.offs)-1]) }

// IsMonotonic implements raft.MonotonicLogStore: the log cannot hold a gap,
// so after restoring a snapshot raft deletes every entry instead of relying
// on a gap, and StoreLogs on the then empty log may start at any index.
func (l *Log) IsMonotonic() bool { return true }

// FirstIndex implements raft.LogStore: the first index held, 0 when empty.
func (l *Log) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0, ErrClosed
	}
	return l.first, nil
}

// LastIndex implements raft.LogStore: the last index held, 0 when empty.
func (l *Log) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0, ErrClosed
	}
	return l.last, nil
}

// GetLog implements raft.LogStore. An index outside [FirstIndex, LastIndex]
// returns raft.ErrLogNotFound; a record that fails its CRC returns
// ErrCorrupt. It reads one record with one ReadAt and allocates once: Data
// and Extensions point into that buffer.
func (l *Log) GetLog(index uint64, out *raft.Log) error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	if l.last == 0 || index < l.first || index > l.last {
		l.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	s := l.segmentLocked(index)
	i := index - s.first
	start, end := s.offs[i], s.offs[i+1]
	rec := make([]byte, end-start)
	n, err := s.f.ReadAt(rec, int64(start))
	l.mu.RUnlock()
	if err != nil && !(errors.Is(err, io.EOF) && n == len(rec)) {
		return fmt.Errorf("wal: read index %d from %s: %w", index, s.path, err)
	}
	if err := decodeRecord(rec, index, out); err != nil {
		return fmt.Errorf("wal: read index %d from %s: %w", index, s.path, err)
	}
	return nil
}

// segmentLocked returns the segment holding index, which must be in the log.
// Caller holds mu (or writeMu).
func (l *Log) segmentLocked(index uint64) *segment {
	j := sort.Search(len(l.segs), func(j int) bool { return l.segs[j].first > index })
	return l.segs[j-1]
}

// StoreLog implements raft.LogStore.
func (l *Log) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

// StoreLogs implements raft.LogStore: it appends entries whose indexes
// continue the log (on an empty log, from any index), with one write per
// segment touched and, unless NoSync, one fdatasync before it returns. When
// a record would take the active segment past SegmentBytes, the segment is
// fsynced and sealed and a new one created (and its directory entry synced)
// first. Readers see the entries only once the call's writes (and, unless
// NoSync, its fdatasync) are done; an error publishes none of them.
func (l *Log) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	next := l.last + 1
	if l.last == 0 {
		next = max(logs[0].Index, 1) // index 0 fails the check below
	}
	for i, e := range logs {
		if e == nil {
			return fmt.Errorf("%w: entry %d is nil", ErrNotContiguous, i)
		}
		if e.Index != next+uint64(i) {
			return fmt.Errorf("%w: entry %d has index %d, want %d", ErrNotContiguous, i, e.Index, next+uint64(i))
		}
		if recordSize(e) > MaxRecordBytes {
			return fmt.Errorf("%w: index %d encodes to %d bytes", ErrTooLarge, e.Index, recordSize(e))
		}
	}
	if l.last == 0 && next < l.metaFirst {
		// The meta file would hide the new entries; lower it first.
		if err := l.writeMetaLocked(next); err != nil {
			return err
		}
	}
	a := appender{l: l}
	if n := len(l.segs); n > 0 {
		a.seg, a.size = l.segs[n-1], l.segs[n-1].size()
		a.pend = []pending{{seg: a.seg}}
	}
	err := a.run(logs)
	if cap(a.buf) <= maxKeptBuffer {
		l.wbuf = a.buf[:0]
	}
	if err != nil {
		for _, p := range a.pend {
			if p.isNew {
				_ = p.seg.f.Close() // never published; the file stays for recovery
			}
		}
		return err
	}
	l.mu.Lock()
	for _, p := range a.pend {
		if p.isNew {
			l.segs = append(l.segs, p.seg)
		}
		p.seg.offs = append(p.seg.offs, p.ends...)
	}
	if l.last == 0 {
		l.first = logs[0].Index
	}
	l.last = logs[len(logs)-1].Index
	l.mu.Unlock()
	return nil
}

// appender is one StoreLogs call's work: records encoded into buf, written to
// seg, rolling into new segments as needed. pend collects the record ends to
// publish per segment once everything is written (and synced).
type appender struct {
	l    *Log
	seg  *segment // nil until the log has a segment
	size int64    // seg's size including buffered records
	buf  []byte   // records for seg not yet written
	pend []pending
}

type pending struct {
	seg   *segment
	isNew bool
	ends  []uint32
}

func (a *appender) run(logs []*raft.Log) error {
	a.buf = a.l.wbuf[:0]
	for _, e := range logs {
		n := recordSize(e)
		if a.seg == nil || (a.size > segHeaderSize && a.size+n > a.l.segBytes) {
			if err := a.roll(e.Index); err != nil {
				return err
			}
		}
		a.buf = appendRecord(a.buf, e)
		a.size += n
		p := &a.pend[len(a.pend)-1]
		p.ends = append(p.ends, uint32(a.size))
	}
	if err := a.flush(); err != nil {
		return err
	}
	if a.l.noSync {
		return nil
	}
	return a.l.syncSegment(a.seg)
}

// roll writes what is buffered for the active segment, fsyncs it (in NoSync
// mode too: every sealed segment is durable, which recovery relies on) and
// starts a new segment at index first.
func (a *appender) roll(first uint64) error {
	if a.seg != nil {
		if err := a.flush(); err != nil {
			return err
		}
		if err := a.l.syncSegment(a.seg); err != nil {
			return err
		}
	}
	s, err := a.l.createSegment(first)
	if err != nil {
		return err
	}
	a.seg, a.size = s, segHeaderSize
	a.pend = append(a.pend, pending{seg: s, isNew: true})
	return nil
}

// flush writes the buffered records to the active segment with one Write.
func (a *appender) flush() error {
	if len(a.buf) == 0 {
		return nil
	}
	if _, err := a.seg.f.Write(a.buf); err != nil {
		return a.l.fail("write "+a.seg.path, err)
	}
	a.buf = a.buf[:0]
	return nil
}

// createSegment creates the segment file for first, writes and fsyncs its
// header, and fsyncs the directory, so the file is durable before any entry
// goes into it. Caller holds writeMu.
func (l *Log) createSegment(first uint64) (*segment, error) {
	p := segPath(l.dir, first)
	f, err := l.fsys.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, l.fail("create "+p, err)
	}
	s := &segment{first: first, path: p, f: f, offs: []uint32{segHeaderSize}}
	if _, err := f.Write(segHeader(first)); err != nil {
		_ = f.Close()
		return nil, l.fail("write "+p, err)
	}
	if err := l.syncSegment(s); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := l.fsys.SyncDir(l.dir); err != nil {
		_ = f.Close()
		return nil, l.fail("sync dir "+l.dir, err)
	}
	return s, nil
}

// syncSegment fdatasyncs s, warning when the disk is slow. A failure is
// sticky and never retried: after a failed fsync the kernel may have
// dropped the dirty pages, so a later success would lie.
func (l *Log) syncSegment(s *segment) error {
	start := time.Now()
	err := s.f.Sync()
	d := time.Since(start)
	if d > slowSync {
		l.logger.Warn("slow fdatasync", "file", s.path, "took", d)
	}
	if err != nil {
		return l.fail("sync "+s.path, err)
	}
	if l.onSync != nil {
		l.onSync(d)
	}
	return nil
}

// DeleteRange implements raft.LogStore: it deletes [from, to], inclusive.
// The range (clipped to the log) must be a prefix or a suffix, which is all
// raft asks for:
//   - A prefix [FirstIndex, max] is compaction after a snapshot: the new
//     first index is written to the meta file durably, then segments that
//     hold only deleted entries are removed. Entries below the first index
//     may stay in the first segment; they are never read again.
//   - A suffix [min, LastIndex] drops a conflicting tail before raft stores
//     the leader's entries: later segments are removed (the directory
//     fsynced) and then the segment holding min is truncated and fsynced.
//     Deleting everything removes every segment.
//
// Both are durable before DeleteRange returns, even with NoSync. Readers stop
// seeing the deleted entries before any file changes.
func (l *Log) DeleteRange(from, to uint64) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if l.last == 0 {
		return nil
	}
	lo, hi := max(from, l.first), min(to, l.last)
	switch {
	case lo > hi:
		return nil
	case hi == l.last:
		return l.deleteSuffixLocked(lo)
	case lo == l.first:
		return l.deletePrefixLocked(hi + 1)
	}
	return fmt.Errorf("%w: [%d, %d] inside [%d, %d]", ErrRange, from, to, l.first, l.last)
}

// deleteSuffixLocked deletes lo and everything after it. Caller holds writeMu.
func (l *Log) deleteSuffixLocked(lo uint64) error {
	all := lo == l.first // the first segment may start below first: it goes too
	k := 0
	if !all {
		k = sort.Search(len(l.segs), func(j int) bool { return l.segs[j].first >= lo })
	}
	drop := slices.Clone(l.segs[k:])
	var cut *segment
	var cutAt int64
	if k > 0 {
		cut = l.segs[k-1]
		cutAt = int64(cut.offs[lo-cut.first])
	}
	l.mu.Lock()
	l.segs = l.segs[:k:k]
	if cut != nil {
		cut.offs = cut.offs[:lo-cut.first+1]
	}
	if all {
		l.first, l.last = 0, 0
	} else {
		l.last = lo - 1
	}
	l.mu.Unlock()
	// Highest first, so that the segments left at any point are a prefix.
	for i := len(drop) - 1; i >= 0; i-- {
		if err := l.removeSegment(drop[i]); err != nil {
			return err
		}
	}
	if len(drop) > 0 {
		if err := l.fsys.SyncDir(l.dir); err != nil {
			return l.fail("sync dir "+l.dir, err)
		}
	}
	if cut != nil {
		if err := cut.f.Truncate(cutAt); err != nil {
			return l.fail("truncate "+cut.path, err)
		}
		return l.syncSegment(cut)
	}
	return nil
}

// deletePrefixLocked makes first the first index; first <= last. Caller
// holds writeMu.
func (l *Log) deletePrefixLocked(first uint64) error {
	if err := l.writeMetaLocked(first); err != nil {
		return err
	}
	k := 0
	for k+1 < len(l.segs) && l.segs[k+1].first <= first {
		k++
	}
	drop := l.segs[:k]
	l.mu.Lock()
	l.segs = slices.Clone(l.segs[k:])
	l.first = first
	l.mu.Unlock()
	for _, s := range drop {
		if err := l.removeSegment(s); err != nil {
			return err
		}
	}
	if len(drop) > 0 {
		if err := l.fsys.SyncDir(l.dir); err != nil {
			return l.fail("sync dir "+l.dir, err)
		}
	}
	return nil
}

// removeSegment closes and unlinks a segment no longer published (no reader
// can hold it: they read under mu). The caller syncs the directory.
func (l *Log) removeSegment(s *segment) error {
	if err := s.f.Close(); err != nil {
		l.logger.Warn("close removed segment", "file", s.path, "err", err)
	}
	if err := l.fsys.Remove(s.path); err != nil {
		return l.fail("remove "+s.path, err)
	}
	return nil
}

// Sync makes every stored entry durable. Only NoSync mode needs it: the
// caller runs it on an interval (write caching's flush).
func (l *Log) Sync() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if n := len(l.segs); n > 0 && l.noSync {
		return l.syncSegment(l.segs[n-1])
	}
	return nil
}

// Close syncs (in NoSync mode) and closes the files. Later calls of any
// method return ErrClosed.
func (l *Log) Close() error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.stableMu.Lock()
	defer l.stableMu.Unlock()
	if l.closed {
		return ErrClosed
	}
	var errs []error
	if n := len(l.segs); n > 0 && l.noSync && l.failed.Load() == nil {
		errs = append(errs, l.syncSegment(l.segs[n-1]))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	l.closed = true
	return errors.Join(errs...)
}

// writableLocked reports why the log refuses writes, if it does. Caller
// holds writeMu or stableMu.
func (l *Log) writableLocked() error {
	if l.closed {
		return ErrClosed
	}
	if f := l.failed.Load(); f != nil {
		return f
	}
	return nil
}

// fail makes err the log's sticky failure, returned by every later write.
func (l *Log) fail(op string, err error) error {
	se := &StorageError{Op: op, Err: err}
	if l.failed.CompareAndSwap(nil, se) {
		l.logger.Error("wal storage failure; refusing writes", "op", op, "err", err)
		return se
	}
	return l.failed.Load()
}
