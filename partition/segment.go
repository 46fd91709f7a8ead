package partition

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

const (
	logExt       = ".log"
	indexExt     = ".index"
	timeIndexExt = ".timeindex"
	// maxSegmentBytes keeps every byte position below 2^31, so index
	// positions fit their 4 bytes with room for one maximal batch past the
	// roll point.
	maxSegmentBytes = math.MaxInt32
)

// segmentFileName is the 20-digit zero-padded base offset plus ext, Kafka's
// naming, so that names sort in offset order.
func segmentFileName(base int64, ext string) string {
	return fmt.Sprintf("%020d%s", base, ext)
}

// parseSegmentFileName is the inverse of segmentFileName. It accepts only
// exactly 20 digits and a known extension.
func parseSegmentFileName(name string) (base int64, ext string, ok bool) {
	dot := strings.IndexByte(name, '.')
	if dot != 20 {
		return 0, "", false
	}
	ext = name[dot:]
	if ext != logExt && ext != indexExt && ext != timeIndexExt {
		return 0, "", false
	}
	for _, c := range name[:dot] {
		if c < '0' || c > '9' {
			return 0, "", false
		}
	}
	base, err := strconv.ParseInt(name[:dot], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return base, ext, true
}

// segTrack is the bookkeeping that decides where index entries go. It is
// deterministic in the sequence of batches, so recovery that replays batch
// headers from a checkpointed segTrack produces the very entries the
// appender made.
type segTrack struct {
	indexCount, timeCount int // entries in the index files (checkpoint use)
	sinceIndex            int64
	maxTs                 int64 // largest batch MaxTimestamp, -1 when none
	maxTsOffset           int64 // base offset of the batch that set maxTs
}

// segment is one file of batches plus its two sparse indexes, held in
// memory and written to .index and .timeindex files.
//
// Fields under "published" are written by the appender while it holds
// Log.mu for writing and read by readers under Log.mu for reading; the
// others are owned by the lock their group names.
type segment struct {
	base int64
	dir  string
	// log is opened with O_APPEND: every write lands at the end of the
	// file, also after a truncation or a reopen, whatever the handle's
	// offset was.
	log vfs.File
	// refs counts the log's own reference plus readers in flight; the file
	// is closed when it drops to zero, so retention never closes a file
	// under a reader.
	refs atomic.Int32

	// published
	size  int64
	next  int64
	index []indexEntry
	times []timeEntry
	track segTrack

	// appender only (appendMu)
	created time.Time
	dirty   bool // log bytes written since the last fsync

	// index files (Log.syncMu)
	indexWritten int  // index entries in the .index file
	timesWritten int  // entries in the .timeindex file
	indexSynced  bool // the files hold exactly that many entries, fsynced
}

func (s *segment) path(ext string) string { return path.Join(s.dir, segmentFileName(s.base, ext)) }

func (s *segment) rel(offset int64) uint32 { return uint32(offset - s.base) }

func (s *segment) acquire() { s.refs.Add(1) }

func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		_ = s.log.Close() // read-only by now; nothing to lose
	}
}

// observe is the single place where a batch at pos updates a segment's
// bookkeeping, for appends and for recovery alike: size, next offset, the
// largest timestamp, and an index entry (plus a time index entry when the
// largest timestamp grew) once intervalBytes have passed since the last one.
func (s *segment) observe(h *BatchHeader, pos, intervalBytes int64) {
	if h.MaxTimestamp > s.track.maxTs {
		s.track.maxTs = h.MaxTimestamp
		s.track.maxTsOffset = h.BaseOffset
	}
	if pos > 0 && s.track.sinceIndex >= intervalBytes {
		s.index = append(s.index, indexEntry{rel: s.rel(h.BaseOffset), pos: uint32(pos)})
		s.track.sinceIndex = 0
		s.addTimeEntry()
	}
	s.track.sinceIndex += h.Size()
	s.size = pos + h.Size()
	s.next = h.NextOffset()
}

// addTimeEntry records the segment's largest timestamp so far when it grew
// since the last time entry. The next index write sees the longer slice and
// writes the entry (a roll's final entry included).
func (s *segment) addTimeEntry() {
	if s.track.maxTs < 0 {
		return
	}
	if n := len(s.times); n == 0 || s.track.maxTs > s.times[n-1].ts {
		s.times = append(s.times, timeEntry{ts: s.track.maxTs, rel: s.rel(s.track.maxTsOffset)})
	}
}

// writeIndexes brings the index files to index and times (the segment's
// entries, or a snapshot of them): it appends what the files lack and, with
// sync, fsyncs, after which the files hold exactly those entries durably.
// Files that already hold them, fsynced, are left alone. The caller holds
// Log.syncMu (or is single-threaded recovery), which owns the bookkeeping.
func (s *segment) writeIndexes(fsys vfs.FS, index []indexEntry, times []timeEntry, sync bool) error {
	if s.indexSynced && s.indexWritten == len(index) && s.timesWritten == len(times) {
		return nil
	}
	if err := appendToFile(fsys, s.path(indexExt), int64(s.indexWritten)*indexEntrySize,
		appendIndexEntries(nil, index[min(s.indexWritten, len(index)):]), sync); err != nil {
		return err
	}
	s.indexWritten = len(index)
	if err := appendToFile(fsys, s.path(timeIndexExt), int64(s.timesWritten)*timeEntrySize,
		appendTimeEntries(nil, times[min(s.timesWritten, len(times)):]), sync); err != nil {
		return err
	}
	s.timesWritten = len(times)
	s.indexSynced = sync
	return nil
}

// appendToFile makes the file exactly at bytes long, appends b and
// optionally fsyncs. Truncating first drops whatever stale tail an earlier
// crash or truncation left behind.
func appendToFile(fsys vfs.FS, name string, at int64, b []byte, sync bool) error {
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	err = func() error {
		size, err := f.Size()
		if err != nil {
			return err
		}
		if size != at {
			if err := f.Truncate(at); err != nil {
				return err
			}
		}
		if len(b) > 0 {
			if _, err := f.Write(b); err != nil {
				return err
			}
		}
		if sync {
			return f.Sync()
		}
		return nil
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// errTorn says a scan met an incomplete batch: the tail of an interrupted
// write.
var errTorn = errors.New("partition: torn batch at the tail")

// scanBatches reads the batches of f between pos and end, in order, calling
// fn for each until it returns false. expectBase is the base offset the
// first batch must have (-1: any; later batches must follow on). With verify it checks each batch completely (framing, magic,
// CRC-32C streamed over the body, record counts); without, only framing and
// offsets, for rebuilding indexes over data already known good. It returns
// the position after the last good batch, the offset after it, and why it
// stopped early: a corruption or torn-tail error (the caller truncates
// there) or an I/O error (the caller fails).
func scanBatches(f vfs.File, pos, end, expectBase int64, verify bool, fn func(h *BatchHeader, pos int64) bool) (goodEnd, next int64, corrupt, ioErr error) {
	// The buffer is never larger than the section: timestamp lookups,
	// truncations and recovery of a short tail would otherwise allocate
	// and clear 256 KiB per call.
	br := bufio.NewReaderSize(io.NewSectionReader(f, pos, end-pos), int(min(256<<10, max(end-pos, 16))))
	var hdr [BatchHeaderSize]byte
	crc := crc32.New(castagnoli)
	next = expectBase
	for pos < end {
		n, err := io.ReadFull(br, hdr[:])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || (errors.Is(err, io.EOF) && n == 0) {
				return pos, next, fmt.Errorf("%w: %d bytes at position %d", errTorn, n, pos), nil
			}
			return pos, next, nil, err
		}
		h, _ := ParseBatchHeader(hdr[:])
		switch {
		case h.Length < BatchHeaderSize-logOverhead:
			return pos, next, fmt.Errorf("%w: batch length %d at position %d", ErrCorruptBatch, h.Length, pos), nil
		case pos+h.Size() > end:
			return pos, next, fmt.Errorf("%w: batch of %d bytes at position %d passes the end %d", errTorn, h.Size(), pos, end), nil
		case next >= 0 && h.BaseOffset != next:
			return pos, next, fmt.Errorf("%w: base offset %d at position %d, expected %d", ErrCorruptBatch, h.BaseOffset, pos, next), nil
		}
		if err := h.checkMagic(); err != nil {
			return pos, next, fmt.Errorf("at position %d: %w", pos, err), nil
		}
		body := h.Size() - BatchHeaderSize
		if verify {
			crc.Reset()
			crc.Write(hdr[offAttributes:])
			if _, err := io.CopyN(crc, br, body); err != nil {
				return pos, next, nil, err
			}
			if got := crc.Sum32(); got != h.CRC {
				return pos, next, fmt.Errorf("%w: crc32c %08x, header says %08x, at position %d", ErrCorruptBatch, got, h.CRC, pos), nil
			}
			if err := h.checkCounts(); err != nil {
				return pos, next, fmt.Errorf("at position %d: %w", pos, err), nil
			}
		} else if _, err := br.Discard(int(body)); err != nil {
			return pos, next, nil, err
		}
		more := fn(&h, pos)
		pos += h.Size()
		next = h.NextOffset()
		if !more {
			break
		}
	}
	return pos, next, nil, nil
}
