package snapstore

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// DefaultRetain is how many snapshots a store keeps when Options.Retain is
// 0: the newest, and the one before it in case the newest cannot be read.
const DefaultRetain = 2

// slowSync is the fsync duration past which a warning is logged: a disk this
// slow stalls every snapshot, and raft's log grows until one completes.
const slowSync = time.Second

// readBufferSize is the buffer in front of a data file's ReadAt, so an FSM
// that reads in small pieces does not cost a system call per piece.
const readBufferSize = 64 << 10

// Source resolves references to snapshot data kept outside the store: a
// partition's files, pinned by hard links, stand in for a copy of them.
//
// Once Sink.Reference succeeds the store owns the reference: it calls Remove
// when the snapshot is cancelled, fails to close, or is reaped. Each
// reference must belong to one snapshot only. A Source must be safe for
// concurrent use.
type Source interface {
	// Open returns a stream of the referenced contents and their exact
	// size, which must be the size given to Sink.Reference: raft sends
	// that many bytes to a follower and an FSM reads them back.
	Open(ref string) (io.ReadCloser, int64, error)
	// Remove releases ref: no snapshot refers to it any longer. It must
	// treat an unknown ref as already removed, because after a crash the
	// store may ask again for a reference it released just before.
	Remove(ref string) error
}

// Options configure Open.
type Options struct {
	// Dir is the store's directory, one per raft group; it is created
	// durably if missing.
	Dir string
	// FS is the filesystem; nil means vfs.OS{}.
	FS vfs.FS
	// Retain is how many complete snapshots are kept (older ones are
	// reaped after each new one closes); 0 means DefaultRetain. Raft needs
	// at least one, so a negative value is refused.
	Retain int
	// Source opens and releases references (Sink.Reference). With a nil
	// Source, references are refused, and reference snapshots already in
	// the directory can be listed but not opened or reaped.
	Source Source
	// Logger receives recovery, reaping and failure reports; nil discards.
	Logger *slog.Logger
}

// Store is a raft.SnapshotStore over the vfs seam; doc.go specifies the
// layout and the meta format.
//
// Raft calls it from several goroutines at once (the snapshot goroutine
// creates snapshots while the main goroutine installs one from the leader
// and a replication goroutine streams one to a follower); every method is
// safe for concurrent use. A snapshot that is open for reading is not
// reaped until its reader is closed.
//
// Lock order: Sink.mu before mu, and reapMu before mu; a Sink releases its
// mu before it reaps, so Sink.mu and reapMu are never held together. mu is
// never held across I/O or calls into the Source; reapMu is held across a
// whole reap, so reaps do not interleave.
type Store struct {
	fsys   vfs.FS
	dir    string
	retain int
	source Source
	logger *slog.Logger
	tab    *crc32.Table

	reapMu sync.Mutex

	mu       sync.Mutex
	lastSeq  uint64          // the newest id's seq; ids take max(clock, lastSeq+1)
	readers  map[string]int  // open readers per snapshot id
	reaping  map[string]bool // ids a reap is removing; Open refuses them
	deferred bool            // a reap skipped a snapshot that had readers
	failed   error           // sticky; wraps ErrFailed
}

var _ raft.SnapshotStore = (*Store)(nil)

// Open opens the store in opts.Dir, creating it durably if missing. It
// removes what incomplete snapshots left behind (a crash mid-Create leaves a
// "<id>.tmp" directory), finishes interrupted reaps (releasing their
// references through the Source) and reaps snapshots beyond Retain.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("snapstore: Options.Dir is empty")
	}
	if opts.Retain < 0 {
		return nil, fmt.Errorf("snapstore: Options.Retain %d: must keep at least one snapshot", opts.Retain)
	}
	s := &Store{
		fsys:    opts.FS,
		dir:     path.Clean(opts.Dir),
		retain:  opts.Retain,
		source:  opts.Source,
		logger:  opts.Logger,
		tab:     crc32.MakeTable(crc32.Castagnoli),
		readers: map[string]int{},
		reaping: map[string]bool{},
	}
	if s.fsys == nil {
		s.fsys = vfs.OS{}
	}
	if s.retain == 0 {
		s.retain = DefaultRetain
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.logger = s.logger.With("dir", s.dir)
	if err := vfs.MkdirAllDurable(s.fsys, s.dir); err != nil {
		return nil, fmt.Errorf("snapstore: create %s: %w", s.dir, err)
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	s.reap()
	return s, nil
}

// recover removes leftovers of snapshots that never completed and finishes
// reaps a crash interrupted, and learns the newest seq so that new ids stay
// unique even if the clock went backwards across the restart.
func (s *Store) recover() error {
	names, err := s.fsys.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("snapstore: list %s: %w", s.dir, err)
	}
	removed := false
	for _, name := range names {
		base, suffix := name, ""
		if i := strings.IndexByte(name, '.'); i >= 0 {
			base, suffix = name[:i], name[i:]
		}
		_, _, seq, ok := parseID(base)
		if !ok || (suffix != "" && suffix != tmpSuffix && suffix != reapSuffix) {
			s.logger.Warn("ignoring unknown entry in snapshot directory", "name", name)
			continue
		}
		s.lastSeq = max(s.lastSeq, seq)
		p := path.Join(s.dir, name)
		switch suffix {
		case tmpSuffix:
			s.logger.Info("removing incomplete snapshot", "id", base)
			if err := vfs.RemoveAll(s.fsys, p); err != nil {
				return fmt.Errorf("snapstore: remove incomplete snapshot %s: %w", p, err)
			}
			removed = true
		case reapSuffix:
			done, err := s.finishReap(base, p)
			if err != nil {
				return err
			}
			removed = removed || done
		}
	}
	if removed {
		if err := s.fsys.SyncDir(s.dir); err != nil {
			return fmt.Errorf("snapstore: sync %s: %w", s.dir, err)
		}
	}
	return nil
}

// finishReap completes a reap that a crash interrupted after its rename was
// durable: the reference (if any) is released, then the directory removed.
// A reference that cannot be released keeps the directory, so the next Open
// tries again rather than leak the Source's data.
func (s *Store) finishReap(id, p string) (removed bool, err error) {
	b, rerr := vfs.ReadFile(s.fsys, path.Join(p, metaName))
	var m *snapMeta
	if rerr == nil {
		m, rerr = decodeMeta(b, id, s.tab)
	}
	switch {
	case rerr != nil:
		// Only a damaged meta gets here (reaps rename complete snapshots):
		// nothing says what to release, so the owner's reconciliation
		// against References must catch any reference it held.
		s.logger.Warn("reaped snapshot has no readable meta", "id", id, "error", rerr)
	case m.Ref != "" && s.source == nil:
		s.logger.Warn("cannot release reference of reaped snapshot without a source", "id", id, "ref", m.Ref)
		return false, nil
	case m.Ref != "":
		if err := s.source.Remove(m.Ref); err != nil {
			s.logger.Warn("failed to release reference of reaped snapshot", "id", id, "ref", m.Ref, "error", err)
			return false, nil
		}
	}
	if err := vfs.RemoveAll(s.fsys, p); err != nil {
		return false, fmt.Errorf("snapstore: remove reaped snapshot %s: %w", p, err)
	}
	s.logger.Info("finished reaping snapshot", "id", id)
	return true, nil
}

// fail makes the store refuse new snapshots after an fsync of its directory
// failed: whether the directory's entries are durable is unknown, and a
// retried fsync could report success for changes the kernel dropped.
func (s *Store) fail(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = fmt.Errorf("%w: %s %s: %w", ErrFailed, op, s.dir, err)
		s.logger.Error("snapshot store failed", "op", op, "error", err)
	}
}

// failure returns the sticky failure, nil while the store is healthy.
func (s *Store) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Create implements raft.SnapshotStore. It makes an in-progress snapshot,
// invisible to List and Open until its sink closes. The sink is a *Sink, so
// an FSM can record a reference instead of writing bytes.
func (s *Store) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	if !supportedVersion(version) {
		return nil, fmt.Errorf("%w: raft snapshot version %d (this store writes 1 to %d)",
			ErrUnsupportedVersion, version, raft.SnapshotVersionMax)
	}
	if err := s.failure(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	seq := max(uint64(time.Now().UnixNano()), s.lastSeq+1)
	s.lastSeq = seq
	s.mu.Unlock()

	id := formatID(term, index, seq)
	tmp := path.Join(s.dir, id+tmpSuffix)
	// Nothing here needs a sync: the directory only becomes the snapshot
	// through Close's rename, which is synced then.
	if err := s.fsys.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("snapstore: create snapshot %s: %w", id, err)
	}
	return &Sink{
		s:    s,
		id:   id,
		tmp:  tmp,
		meta: newSnapMeta(id, version, index, term, configuration, configurationIndex),
		crc:  crc32.New(s.tab),
	}, nil
}

// List implements raft.SnapshotStore: complete snapshots, newest first (by
// term, index, then id), at most Retain of them. A snapshot whose meta
// cannot be read is skipped with a warning, so one damaged snapshot does not
// hide the others from raft.
func (s *Store) List() ([]*raft.SnapshotMeta, error) {
	metas, err := s.scan()
	if err != nil {
		return nil, err
	}
	out := make([]*raft.SnapshotMeta, 0, min(len(metas), s.retain))
	for _, m := range metas[:min(len(metas), s.retain)] {
		out = append(out, m.raftMeta())
	}
	return out, nil
}

// References returns the reference of every complete snapshot in the store.
// A crash can leave a Source holding data no snapshot refers to (a snapshot
// that was being created, or one whose reap was interrupted before its meta
// was durable); the Source's owner calls this after Open and releases what
// is not listed. It must not race with Create: an in-progress snapshot's
// reference is not listed.
func (s *Store) References() ([]string, error) {
	metas, err := s.scan()
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, m := range metas {
		if m.Ref != "" {
			refs = append(refs, m.Ref)
		}
	}
	return refs, nil
}

// scan reads the meta of every complete snapshot and sorts them newest
// first. Unreadable ones are logged and left out.
func (s *Store) scan() ([]*snapMeta, error) {
	names, err := s.fsys.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snapstore: list %s: %w", s.dir, err)
	}
	var metas []*snapMeta
	for _, name := range names {
		if _, _, _, ok := parseID(name); !ok {
			continue // in progress, being reaped, or not ours
		}
		m, err := s.readMeta(name)
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := s.fsys.Stat(path.Join(s.dir, name)); errors.Is(serr, fs.ErrNotExist) {
				continue // reaped since ReadDir: nothing to report
			}
		}
		if err != nil {
			s.logger.Warn("skipping unreadable snapshot", "id", name, "error", err)
			continue
		}
		metas = append(metas, m)
	}
	slices.SortFunc(metas, func(a, b *snapMeta) int {
		return cmp.Or(cmp.Compare(b.Term, a.Term), cmp.Compare(b.Index, a.Index), strings.Compare(b.ID, a.ID))
	})
	return metas, nil
}

// readMeta reads and checks the meta file of the complete snapshot id.
func (s *Store) readMeta(id string) (*snapMeta, error) {
	p := path.Join(s.dir, id, metaName)
	st, err := s.fsys.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("snapstore: %s: %w", id, err)
	}
	if st.IsDir || st.Size > maxMetaBytes {
		return nil, fmt.Errorf("%w: %s: meta file is a directory or larger than %d bytes", ErrCorrupt, id, maxMetaBytes)
	}
	b, err := vfs.ReadFile(s.fsys, p)
	if err != nil {
		return nil, fmt.Errorf("snapstore: %s: %w", id, err)
	}
	return decodeMeta(b, id, s.tab)
}

// Open implements raft.SnapshotStore. The reader yields exactly meta.Size
// bytes: the data file, whose CRC-32C is checked as it is read (the read
// that would deliver the last bytes fails instead if it does not match), or
// the Source's stream for a reference. The snapshot is not reaped while the
// reader is open; Close it (more than once is harmless).
func (s *Store) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if _, _, _, ok := parseID(id); !ok {
		return nil, nil, fmt.Errorf("%w: %q is not a snapshot id", ErrNotFound, id)
	}
	s.mu.Lock()
	if s.reaping[id] {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: %s is being reaped", ErrNotFound, id)
	}
	s.readers[id]++
	s.mu.Unlock()

	m, rc, err := s.open(id)
	if err != nil {
		s.release(id)
		return nil, nil, err
	}
	return m.raftMeta(), rc, nil
}

// open opens snapshot id for reading; the caller has registered a reader.
func (s *Store) open(id string) (*snapMeta, io.ReadCloser, error) {
	m, err := s.readMeta(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, err
	}
	if m.Ref != "" {
		if s.source == nil {
			return nil, nil, fmt.Errorf("%w: snapshot %s references %q", ErrNoSource, id, m.Ref)
		}
		rc, size, err := s.source.Open(m.Ref)
		if err != nil {
			return nil, nil, fmt.Errorf("snapstore: open reference %q of %s: %w", m.Ref, id, err)
		}
		if size != m.Size {
			_ = rc.Close()
			return nil, nil, fmt.Errorf("%w: %s: reference %q is %d bytes, meta says %d", ErrCorrupt, id, m.Ref, size, m.Size)
		}
		return m, s.newReader(id, rc, rc.Close, m.Size, nil, 0), nil
	}
	f, err := s.fsys.OpenFile(path.Join(s.dir, id, dataName), os.O_RDONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%w: %s: data file missing", ErrCorrupt, id)
		}
		return nil, nil, fmt.Errorf("snapstore: open data of %s: %w", id, err)
	}
	size, err := f.Size()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("snapstore: size of data of %s: %w", id, err)
	}
	if size != m.Size {
		_ = f.Close()
		return nil, nil, fmt.Errorf("%w: %s: data file is %d bytes, meta says %d", ErrCorrupt, id, size, m.Size)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), readBufferSize)
	return m, s.newReader(id, r, f.Close, size, crc32.New(s.tab), *m.DataCRC32C), nil
}

// release unregisters a reader of id, and runs a reap that an open reader
// held up.
func (s *Store) release(id string) {
	s.mu.Lock()
	s.readers[id]--
	last := s.readers[id] <= 0
	if last {
		delete(s.readers, id)
	}
	again := s.deferred && last
	if again {
		s.deferred = false
	}
	s.mu.Unlock()
	if again {
		s.reap()
	}
}

// reap removes complete snapshots beyond Retain, oldest first, skipping any
// that are open for reading (a later reap, or the reader's Close, takes
// them). Failures are logged, not returned: the snapshot that triggered the
// reap is durable whatever happens here. Each reap renames the snapshot to
// "<id>.del" and syncs the directory before it releases the reference, so a
// crash can never leave a listed snapshot whose reference is gone.
func (s *Store) reap() {
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	if s.failure() != nil {
		return
	}
	metas, err := s.scan()
	if err != nil {
		s.logger.Warn("cannot reap snapshots", "error", err)
		return
	}
	if len(metas) <= s.retain {
		return
	}
	for _, m := range slices.Backward(metas[s.retain:]) {
		if m.Ref != "" && s.source == nil {
			s.logger.Warn("not reaping snapshot: its reference cannot be released without a source", "id", m.ID, "ref", m.Ref)
			continue
		}
		s.mu.Lock()
		if s.readers[m.ID] > 0 {
			s.deferred = true
			s.mu.Unlock()
			continue
		}
		s.reaping[m.ID] = true
		s.mu.Unlock()
		ok := s.reapOne(m)
		s.mu.Lock()
		delete(s.reaping, m.ID)
		s.mu.Unlock()
		if !ok {
			return
		}
	}
}

// reapOne removes one snapshot; it reports false if the store failed and
// reaping must stop. Caller holds reapMu.
func (s *Store) reapOne(m *snapMeta) bool {
	from := path.Join(s.dir, m.ID)
	to := from + reapSuffix
	if err := s.fsys.Rename(from, to); err != nil {
		s.logger.Warn("failed to reap snapshot", "id", m.ID, "error", err)
		return true
	}
	if err := s.fsys.SyncDir(s.dir); err != nil {
		s.fail("syncdir", err)
		return false
	}
	if m.Ref != "" {
		if err := s.source.Remove(m.Ref); err != nil {
			// Keep the directory: the next Open asks again.
			s.logger.Warn("failed to release reference of reaped snapshot", "id", m.ID, "ref", m.Ref, "error", err)
			return true
		}
	}
	if err := vfs.RemoveAll(s.fsys, to); err != nil {
		s.logger.Warn("failed to remove reaped snapshot", "id", m.ID, "error", err)
		return true
	}
	s.logger.Info("reaped snapshot", "id", m.ID, "term", m.Term, "index", m.Index)
	return true
}

// syncFile fsyncs f and warns when the disk is slow.
func (s *Store) syncFile(f vfs.File, id, what string) error {
	start := time.Now()
	err := f.Sync()
	if d := time.Since(start); d > slowSync {
		s.logger.Warn("slow fsync", "id", id, "file", what, "duration", d)
	}
	return err
}
