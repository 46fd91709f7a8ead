package partition

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/varvelog/varve/partition/vfs"
)

// Virtual snapshots. A Raft snapshot of a partition is not a copy of its
// data: it is the log's own files as of a checkpoint, pinned by hard links
// so retention cannot pull them away, plus their sizes at that moment
// (segments are append-only, so the linked file may grow; only the recorded
// prefix belongs to the snapshot). Streaming one sends a header and those
// prefixes; restoring one writes them into a staging directory and swaps it
// in for the partition directory. See doc.go for the formats.

const (
	snapshotsDir      = "snapshots"
	snapshotManifest  = "manifest"
	snapshotMagic     = "VSNP"
	snapshotVersion   = 1
	restoreSuffix     = ".restore"
	oldSuffix         = ".old"
	restoreComplete   = "restore-complete"
	maxSnapshotFiles  = 1 << 20
	maxSnapshotHeader = 64 << 20
)

// Snapshot is a pinned, point-in-time view of a log.
type Snapshot struct {
	fsys     vfs.FS
	dir      string // snapshots/<name> inside the partition directory
	name     string
	position uint64
	files    []snapshotFile
}

type snapshotFile struct {
	name string
	size int64
}

// Name is the snapshot's name, as given to Log.Snapshot.
func (s *Snapshot) Name() string { return s.name }

// Position is the caller's position recorded with the snapshot (the Raft
// index it was taken at).
func (s *Snapshot) Position() uint64 { return s.position }

// Size is the number of bytes WriteTo writes.
func (s *Snapshot) Size() int64 {
	n := int64(len(s.header()))
	for _, f := range s.files {
		n += f.size + 4
	}
	return n
}

// Snapshot checkpoints the log at position and pins every segment, index and
// the checkpoint file with hard links in snapshots/<name>, durably (links
// and manifest fsynced, directories synced). name must be a plain file name;
// an existing snapshot of that name is an error. Appends are held up only
// for the checkpoint's state copy, as with Checkpoint. A snapshot stays
// valid through appends, retention, DeleteRecords and restarts; TruncateTo
// below its position cuts the pinned segment too and invalidates it (Raft
// never truncates applied entries, so replication never does that).
func (l *Log) Snapshot(name string, position uint64) (*Snapshot, error) {
	if err := validSnapshotName(name); err != nil {
		return nil, err
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.appendMu.Lock()
	if err := l.writableLocked(); err != nil {
		l.appendMu.Unlock()
		return nil, err
	}
	snap := l.snapshotLocked(position)
	l.appendMu.Unlock()
	if err := l.persist(snap); err != nil {
		return nil, err
	}
	l.appendMu.Lock()
	l.cp = snap.cp
	l.appendMu.Unlock()

	// The files as of the checkpoint just written: every segment up to
	// the recovery segment, at its size then, and its index files at the
	// entry counts then. syncMu keeps retention and truncation out.
	var files []snapshotFile
	for i, s := range snap.segs {
		size := s.size
		if s.base == snap.cp.recoverySegment {
			size = snap.cp.recoveryPos
		}
		files = append(files,
			snapshotFile{segmentFileName(s.base, logExt), size},
			snapshotFile{segmentFileName(s.base, indexExt), int64(len(snap.index[i])) * indexEntrySize},
			snapshotFile{segmentFileName(s.base, timeIndexExt), int64(len(snap.times[i])) * timeEntrySize})
		if s.base == snap.cp.recoverySegment {
			break
		}
	}
	files = append(files, snapshotFile{checkpointName, int64(len(snap.cp.encode()))})
	dir := path.Join(l.dir, snapshotsDir, name)
	if err := pinFiles(l.fsys, l.dir, dir, files, position); err != nil {
		return nil, fmt.Errorf("partition: snapshot %s: %w", name, err)
	}
	return &Snapshot{fsys: l.fsys, dir: dir, name: name, position: position, files: files}, nil
}

func validSnapshotName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("partition: invalid snapshot name %q", name)
	}
	return nil
}

// pinFiles hard-links files from dir into snapDir and writes the manifest
// last, so a snapshot directory without a manifest is an unfinished one.
func pinFiles(fsys vfs.FS, dir, snapDir string, files []snapshotFile, position uint64) error {
	if _, err := fsys.Stat(snapDir); err == nil {
		return fs.ErrExist
	}
	if err := vfs.MkdirAllDurable(fsys, snapDir); err != nil {
		return err
	}
	for _, f := range files {
		if err := fsys.Link(path.Join(dir, f.name), path.Join(snapDir, f.name)); err != nil {
			return err
		}
	}
	m := (&Snapshot{position: position, files: files}).header()
	if err := vfs.WriteFileAtomic(fsys, snapDir, snapshotManifest, m); err != nil {
		return err
	}
	return fsys.SyncDir(snapDir)
}

// header is the stream header, which is also the manifest file:
//
//	magic "VSNP" | version u16 | body length u32 | body crc32c u32 | body
//	body: position u64 | files u32 | per file: name length u16, name, size i64
func (s *Snapshot) header() []byte {
	var body []byte
	be := binary.BigEndian
	body = be.AppendUint64(body, s.position)
	body = be.AppendUint32(body, uint32(len(s.files)))
	for _, f := range s.files {
		body = be.AppendUint16(body, uint16(len(f.name)))
		body = append(body, f.name...)
		body = be.AppendUint64(body, uint64(f.size))
	}
	out := append([]byte(snapshotMagic), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	be.PutUint16(out[4:], snapshotVersion)
	be.PutUint32(out[6:], uint32(len(body)))
	be.PutUint32(out[10:], crc32.Checksum(body, castagnoli))
	return append(out, body...)
}

// readSnapshotHeader parses a header from r, validating every file name (a
// stream from a peer must not write outside the staging directory).
func readSnapshotHeader(r io.Reader) (position uint64, files []snapshotFile, err error) {
	var fixed [14]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return 0, nil, fmt.Errorf("partition: snapshot header: %w", err)
	}
	be := binary.BigEndian
	if string(fixed[:4]) != snapshotMagic || be.Uint16(fixed[4:]) != snapshotVersion {
		return 0, nil, fmt.Errorf("%w: not a version %d snapshot", ErrCorruptBatch, snapshotVersion)
	}
	n, sum := be.Uint32(fixed[6:]), be.Uint32(fixed[10:])
	if n > maxSnapshotHeader {
		return 0, nil, fmt.Errorf("%w: snapshot header of %d bytes", ErrCorruptBatch, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("partition: snapshot header: %w", err)
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, nil, fmt.Errorf("%w: snapshot header checksum", ErrCorruptBatch)
	}
	rd := reader{b: body}
	position = uint64(rd.i64())
	count := rd.count(10)
	if count > maxSnapshotFiles {
		return 0, nil, fmt.Errorf("%w: %d files", ErrCorruptBatch, count)
	}
	for range count {
		nl := int(rd.u16())
		name := string(rd.take(nl))
		size := rd.i64()
		if !snapshotFileAllowed(name) || size < 0 {
			return 0, nil, fmt.Errorf("%w: snapshot file %q of %d bytes", ErrCorruptBatch, name, size)
		}
		files = append(files, snapshotFile{name, size})
	}
	if rd.bad || len(rd.b) != 0 {
		return 0, nil, fmt.Errorf("%w: snapshot header does not parse", ErrCorruptBatch)
	}
	return position, files, nil
}

func snapshotFileAllowed(name string) bool {
	if name == checkpointName {
		return true
	}
	_, _, ok := parseSegmentFileName(name)
	return ok
}

// WriteTo streams the snapshot: the header, then each file's recorded
// prefix followed by its crc32c.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	n, err := bw.Write(s.header())
	total := int64(n)
	if err != nil {
		return total, err
	}
	for _, f := range s.files {
		src, err := s.fsys.OpenFile(path.Join(s.dir, f.name), os.O_RDONLY, 0)
		if err != nil {
			return total, err
		}
		crc := crc32.New(castagnoli)
		c, err := io.Copy(io.MultiWriter(bw, crc), io.NewSectionReader(src, 0, f.size))
		_ = src.Close()
		total += c
		if err == nil && c != f.size {
			err = fmt.Errorf("partition: snapshot file %s is %d bytes, %d recorded", f.name, c, f.size)
		}
		if err != nil {
			return total, err
		}
		n, err := bw.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, bw.Flush()
}

// OpenSnapshot opens the snapshot pinned under dir/snapshots/name, after a
// restart for example.
func OpenSnapshot(fsys vfs.FS, dir, name string) (*Snapshot, error) {
	if err := validSnapshotName(name); err != nil {
		return nil, err
	}
	if fsys == nil {
		fsys = vfs.OS{}
	}
	sdir := path.Join(dir, snapshotsDir, name)
	b, err := vfs.ReadFile(fsys, path.Join(sdir, snapshotManifest))
	if err != nil {
		return nil, fmt.Errorf("partition: snapshot %s: %w", name, err)
	}
	position, files, err := readSnapshotHeader(strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	return &Snapshot{fsys: fsys, dir: sdir, name: name, position: position, files: files}, nil
}

// ListSnapshots names the complete snapshots pinned under dir.
func ListSnapshots(fsys vfs.FS, dir string) ([]string, error) {
	if fsys == nil {
		fsys = vfs.OS{}
	}
	names, err := fsys.ReadDir(path.Join(dir, snapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, n := range names {
		if _, err := fsys.Stat(path.Join(dir, snapshotsDir, n, snapshotManifest)); err == nil {
			out = append(out, n)
		}
	}
	return out, err
}

// RemoveSnapshot unpins a snapshot: its links and manifest go, durably.
func RemoveSnapshot(fsys vfs.FS, dir, name string) error {
	if err := validSnapshotName(name); err != nil {
		return err
	}
	if fsys == nil {
		fsys = vfs.OS{}
	}
	return removeTree(fsys, path.Join(dir, snapshotsDir, name))
}

// RemoveDir deletes a partition directory with everything in it (segments,
// checkpoint, pinned snapshots) and syncs its parent, so the removal is
// durable. A missing directory is not an error. The log must be closed.
func RemoveDir(fsys vfs.FS, dir string) error {
	if fsys == nil {
		fsys = vfs.OS{}
	}
	dir = path.Clean(dir)
	for _, d := range []string{dir + restoreSuffix, dir + oldSuffix, dir} {
		if err := removeTree(fsys, d); err != nil {
			return err
		}
	}
	return nil
}

// removeTree removes a directory and what is in it, and syncs its parent.
func removeTree(fsys vfs.FS, dir string) error {
	if _, err := fsys.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil // nothing to remove, nothing to sync
	}
	if err := vfs.RemoveAll(fsys, dir); err != nil {
		return err
	}
	return fsys.SyncDir(path.Dir(dir))
}

// Restore replaces the log in opts.Dir with a snapshot stream and opens it.
// The caller has closed the old log. The stream is written to a staging
// directory beside the partition's, each file checked against its crc32c
// and fsynced, and marked complete; then the old directory is moved aside,
// the staging directory renamed into place and the parent synced. Open
// finishes or discards an interrupted restore, so a crash at any point
// leaves either the old log or the new one. Snapshots pinned in the old
// directory are gone with it.
func Restore(opts Options, r io.Reader) (*Log, error) {
	fsys := opts.FS
	if fsys == nil {
		fsys = vfs.OS{}
	}
	dir := path.Clean(opts.Dir)
	staging := dir + restoreSuffix
	if err := removeTree(fsys, staging); err != nil {
		return nil, fmt.Errorf("partition: clear %s: %w", staging, err)
	}
	if err := receiveSnapshot(fsys, staging, r); err != nil {
		_ = removeTree(fsys, staging)
		return nil, err
	}
	if err := finishRestore(fsys, dir); err != nil {
		return nil, err
	}
	return Open(opts)
}

// receiveSnapshot materialises a stream into dir, durably, and marks it
// complete last.
func receiveSnapshot(fsys vfs.FS, dir string, r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	_, files, err := readSnapshotHeader(br)
	if err != nil {
		return err
	}
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return err
	}
	for _, f := range files {
		if err := receiveFile(fsys, path.Join(dir, f.name), br, f.size); err != nil {
			return fmt.Errorf("partition: restore %s: %w", f.name, err)
		}
	}
	for _, f := range files {
		if err := verifySegment(fsys, dir, f); err != nil {
			return fmt.Errorf("partition: restore %s: %w", f.name, err)
		}
	}
	if err := vfs.WriteFileAtomic(fsys, dir, restoreComplete, nil); err != nil {
		return err
	}
	return fsys.SyncDir(dir)
}

// verifySegment checks every batch of a received segment file in full
// (framing, offsets, CRC-32C, counts). The stream's per-file checksum only
// proves the transfer: it is computed by the sender over what it read, so
// a batch that rotted on the sender's disk below its checkpoint (which
// the sender's own recovery never re-reads) would arrive with a matching
// checksum. Refusing it here keeps the rot from spreading to a replica
// that had none; the failed install is retried, and logged, every time.
func verifySegment(fsys vfs.FS, dir string, sf snapshotFile) error {
	if _, ext, ok := parseSegmentFileName(sf.name); !ok || ext != logExt {
		return nil
	}
	f, err := fsys.OpenFile(path.Join(dir, sf.name), os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	end, _, corrupt, ioErr := scanBatches(f, 0, sf.size, -1, true, func(*BatchHeader, int64) bool { return true })
	if ioErr != nil {
		return ioErr
	}
	if corrupt != nil {
		return fmt.Errorf("%w: the snapshot carries a bad batch: %w", ErrCorruptBatch, corrupt)
	}
	if end != sf.size {
		return fmt.Errorf("%w: batches end at %d of %d bytes", ErrCorruptBatch, end, sf.size)
	}
	return nil
}

func receiveFile(fsys vfs.FS, name string, r io.Reader, size int64) error {
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	crc := crc32.New(castagnoli)
	if _, err := io.CopyN(io.MultiWriter(f, crc), r, size); err != nil {
		return err
	}
	var sum [4]byte
	if _, err := io.ReadFull(r, sum[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(sum[:]) != crc.Sum32() {
		return fmt.Errorf("%w: checksum mismatch", ErrCorruptBatch)
	}
	return f.Sync()
}

// finishRestore completes or discards a restore of dir: a complete staging
// directory replaces dir (moved aside first, removed after); an incomplete
// one is removed. Open calls it too, so an interrupted restore is resolved
// before the log is read.
func finishRestore(fsys vfs.FS, dir string) error {
	staging, old := dir+restoreSuffix, dir+oldSuffix
	if _, err := fsys.Stat(staging); err == nil {
		if _, err := fsys.Stat(path.Join(staging, restoreComplete)); err != nil {
			return removeTree(fsys, staging)
		}
		if _, err := fsys.Stat(dir); err == nil {
			if err := removeTree(fsys, old); err != nil {
				return err
			}
			if err := fsys.Rename(dir, old); err != nil {
				return err
			}
		}
		if err := fsys.Rename(staging, dir); err != nil {
			return err
		}
		if err := fsys.SyncDir(path.Dir(dir)); err != nil {
			return err
		}
		if err := fsys.Remove(path.Join(dir, restoreComplete)); err != nil {
			return err
		}
		if err := fsys.SyncDir(dir); err != nil {
			return err
		}
	}
	return removeTree(fsys, old)
}
