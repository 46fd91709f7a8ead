package wal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path"
	"strings"

	"github.com/varvelog/varve/partition/vfs"
)

// Open opens (creating if needed) the WAL in opts.Dir and recovers it; see
// doc.go for the rules. A torn or corrupt tail of the last segment is
// truncated and logged, so the log opens to a valid prefix of what was
// written; damage that a crash cannot explain is refused with ErrCorrupt.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("wal: Options.Dir is empty")
	}
	if opts.FS == nil {
		opts.FS = vfs.OS{}
	}
	if opts.SegmentBytes == 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.SegmentBytes < MinSegmentBytes || opts.SegmentBytes > MaxSegmentBytes {
		return nil, fmt.Errorf("wal: Options.SegmentBytes %d outside [%d, %d]", opts.SegmentBytes, MinSegmentBytes, MaxSegmentBytes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir := path.Clean(opts.Dir)
	l := &Log{
		fsys:     opts.FS,
		dir:      dir,
		segBytes: opts.SegmentBytes,
		noSync:   opts.NoSync,
		logger:   opts.Logger.With("dir", dir),
		onSync:   opts.OnSync,
	}
	if err := vfs.MkdirAllDurable(l.fsys, dir); err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	if err := l.recover(); err != nil {
		for _, s := range l.segs {
			_ = s.f.Close()
		}
		return nil, err
	}
	return l, nil
}

// recover reads the meta and stable files, opens and scans every segment,
// and sets the published view. Segments it opened are in l.segs even when
// it fails, for Open to close.
func (l *Log) recover() error {
	names, err := l.fsys.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("wal: list %s: %w", l.dir, err)
	}
	dirty := false // a directory entry changed: sync before returning
	var firsts []uint64
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			if err := l.fsys.Remove(path.Join(l.dir, n)); err != nil {
				return fmt.Errorf("wal: remove %s: %w", n, err)
			}
			dirty = true
		} else if first, ok := parseSegName(n); ok {
			firsts = append(firsts, first) // ReadDir sorts, so in index order
		}
	}
	if err := l.readMeta(); err != nil {
		return err
	}
	if err := l.readStable(); err != nil {
		return err
	}
	for _, first := range firsts {
		p := segPath(l.dir, first)
		f, err := l.fsys.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("wal: open %s: %w", p, err)
		}
		l.segs = append(l.segs, &segment{first: first, path: p, f: f})
	}
	for i := 0; i < len(l.segs); i++ {
		s := l.segs[i]
		if i > 0 {
			if prev := l.segs[i-1]; s.first != prev.first+prev.count() {
				// Only an interrupted suffix deletion, its removals made
				// durable out of order, leaves a discontinuity: what
				// follows it was being deleted.
				l.logger.Warn("segment does not continue the previous one; removing it and all after",
					"first_index", s.first, "expected", prev.first+prev.count())
				if err := l.dropFrom(i); err != nil {
					return err
				}
				dirty = true
				break
			}
		}
		last := i == len(l.segs)-1
		torn, err := l.scan(s, last)
		if err != nil {
			return err
		}
		if torn {
			l.logger.Warn("removing a last segment with a torn header", "first_index", s.first)
			if err := l.dropFrom(i); err != nil {
				return err
			}
			dirty = true
		}
	}
	if n := len(l.segs); n > 0 {
		end := l.segs[n-1].first + l.segs[n-1].count() // one past the last index
		first := max(l.metaFirst, l.segs[0].first)
		k := 0
		if end <= first {
			// Nothing live: keep the invariant that an empty log has no
			// segments, so StoreLogs may start it at any index.
			k = n
		} else {
			for k+1 < n && l.segs[k+1].first <= first {
				k++ // an interrupted prefix deletion left it
			}
			l.first, l.last = first, end-1
		}
		for _, s := range l.segs[:k] {
			if err := l.removeSegment(s); err != nil {
				return err
			}
			dirty = true
		}
		l.segs = l.segs[k:]
	}
	if dirty {
		if err := l.fsys.SyncDir(l.dir); err != nil {
			return fmt.Errorf("wal: sync %s: %w", l.dir, err)
		}
	}
	l.logger.Info("opened wal", "first_index", l.first, "last_index", l.last, "segments", len(l.segs))
	return nil
}

// readMeta loads the durable first index. An unreadable meta file is
// ignored with a warning: the first index then comes from the first
// segment, which resurrects only compacted (committed) entries.
func (l *Log) readMeta() error {
	b, err := vfs.ReadFile(l.fsys, path.Join(l.dir, metaFile))
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wal: read meta: %w", err)
	}
	first, err := decodeMeta(b)
	switch {
	case errors.Is(err, ErrUnsupportedVersion):
		return err
	case err != nil:
		l.logger.Warn("ignoring unreadable meta file", "err", err)
	default:
		l.metaFirst = first
	}
	return nil
}

// readStable loads the stable store. An unreadable one is refused: it is
// replaced atomically, so damage is not a crash, and guessing would forget
// a term or a vote.
func (l *Log) readStable() error {
	l.kv = map[string][]byte{}
	b, err := vfs.ReadFile(l.fsys, path.Join(l.dir, stableFile))
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wal: read stable store: %w", err)
	}
	kv, err := decodeStable(b)
	if err != nil {
		return err
	}
	l.kv = kv
	return nil
}

// scan validates a segment's header and every record, building s.offs. A
// bad record ends the last segment: it is truncated there and fsynced. In a
// sealed segment (fsynced before the next was created) it is ErrCorrupt.
// torn reports a last segment whose header never became durable.
func (l *Log) scan(s *segment, last bool) (torn bool, err error) {
	size, err := s.f.Size()
	if err != nil {
		return false, fmt.Errorf("wal: size of %s: %w", s.path, err)
	}
	hdr := make([]byte, min(size, segHeaderSize))
	if n, err := s.f.ReadAt(hdr, 0); err != nil && !(errors.Is(err, io.EOF) && n == len(hdr)) {
		return false, fmt.Errorf("wal: read %s: %w", s.path, err)
	}
	if err := checkSegHeader(hdr, s.first); err != nil {
		if errors.Is(err, errTornHeader) && last {
			return true, nil
		}
		return false, fmt.Errorf("wal: segment %s: %w", s.path, errors.Join(ErrCorrupt, err))
	}
	offs, good, reason, err := scanRecords(s.f, s.first, size)
	if err != nil {
		return false, fmt.Errorf("wal: read %s: %w", s.path, err)
	}
	s.offs = offs
	if reason == nil {
		return false, nil
	}
	if !last {
		return false, fmt.Errorf("%w: sealed segment %s at byte %d: %v", ErrCorrupt, s.path, good, reason)
	}
	l.logger.Warn("truncating a torn or corrupt tail", "file", s.path, "position", good,
		"dropped_bytes", size-good, "last_index", s.first+s.count()-1, "reason", reason)
	if err := s.f.Truncate(good); err != nil {
		return false, fmt.Errorf("wal: truncate %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return false, fmt.Errorf("wal: sync %s: %w", s.path, err)
	}
	return false, nil
}

// scanRecords reads the records of a segment after its header, checking
// framing, CRC and that indexes count up from first. It returns the record
// offsets (see segment.offs), where the valid records end, why it stopped
// early (nil at a clean end), and any read error.
func scanRecords(f vfs.File, first uint64, size int64) (offs []uint32, good int64, reason, err error) {
	offs = []uint32{segHeaderSize}
	pos := int64(segHeaderSize)
	// Buffer up to 1 MiB, less for a small segment (tests open many).
	r := bufio.NewReaderSize(io.NewSectionReader(f, pos, size-pos), int(min(max(size-pos, 16), 1<<20)))
	var prefix [recordPrefix]byte
	var body []byte
	for pos < size {
		if _, err := io.ReadFull(r, prefix[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return offs, pos, errors.New("torn record prefix"), nil
			}
			return offs, pos, nil, err
		}
		n, perr := checkPrefix(prefix[:])
		if perr != nil {
			return offs, pos, perr, nil
		}
		end := pos + recordPrefix + n
		if end > size {
			return offs, pos, fmt.Errorf("record of %d bytes runs past the end (%d)", recordPrefix+n, size), nil
		}
		if end > math.MaxUint32 {
			return offs, pos, fmt.Errorf("record ends at byte %d, past 2^32", end), nil
		}
		if int64(cap(body)) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return offs, pos, nil, err
		}
		index, _, berr := checkBody(body, be.Uint32(prefix[4:]))
		if berr != nil {
			return offs, pos, berr, nil
		}
		if want := first + uint64(len(offs)-1); index != want {
			return offs, pos, fmt.Errorf("record holds index %d, want %d", index, want), nil
		}
		pos = end
		offs = append(offs, uint32(pos))
	}
	return offs, pos, nil, nil
}

// dropFrom closes and removes l.segs[i:] (highest first) during recovery;
// the caller syncs the directory.
func (l *Log) dropFrom(i int) error {
	for j := len(l.segs) - 1; j >= i; j-- {
		if err := l.removeSegment(l.segs[j]); err != nil {
			return err
		}
		l.segs = l.segs[:j]
	}
	return nil
}
