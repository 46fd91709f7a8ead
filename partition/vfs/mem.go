package vfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Op names a kind of Mem operation, so that a fault hook can choose which
// operations to fail.
type Op int

// The operations a fault hook is consulted for. Stat, ReadDir, File.Size and
// the introspection helpers (ReadFile, SyncedSize) are not faultable: they
// never change state, and failing them would only test error plumbing that
// the faultable reads already cover.
const (
	OpOpen     Op = iota + 1 // FS.OpenFile, including O_CREATE and O_TRUNC
	OpWrite                  // File.Write
	OpSync                   // File.Sync
	OpTruncate               // File.Truncate
	OpRemove                 // FS.Remove
	OpRename                 // FS.Rename
	OpLink                   // FS.Link
	OpMkdir                  // FS.MkdirAll
	OpSyncDir                // FS.SyncDir
	OpRead                   // File.ReadAt
	OpClose                  // File.Close
)

// String returns the lowercase operation name, for test failure messages and
// for hooks that log what they fail.
func (o Op) String() string {
	switch o {
	case OpOpen:
		return "open"
	case OpWrite:
		return "write"
	case OpSync:
		return "sync"
	case OpTruncate:
		return "truncate"
	case OpRemove:
		return "remove"
	case OpRename:
		return "rename"
	case OpLink:
		return "link"
	case OpMkdir:
		return "mkdir"
	case OpSyncDir:
		return "syncdir"
	case OpRead:
		return "read"
	case OpClose:
		return "close"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// Errors Mem reports where the OS would report an errno that io/fs has no
// sentinel for. Sentinels rather than syscall errnos keep Mem portable.
var (
	errNotDir   = errors.New("vfs: not a directory")
	errIsDir    = errors.New("vfs: is a directory")
	errNotEmpty = errors.New("vfs: directory not empty")
	errBadFD    = errors.New("vfs: bad file descriptor") // the handle's access mode forbids the op
	errTooLarge = errors.New("vfs: file too large")
)

// maxMemSize bounds a Mem file's size so that a wild offset or Truncate in a
// test fails with an error instead of overflowing or exhausting memory.
const maxMemSize = 1 << 32

// Mem is an in-memory FS for tests that can fail chosen operations (SetFault,
// FailNext) and simulate a power loss (Crash) under the durability contract in
// the package doc.
//
// Model: a file inode holds its current bytes and the bytes as of its last
// successful File.Sync; a directory holds its current entries and a copy of
// the entries as of its last SyncDir. Hard links share an inode, and an open
// handle keeps its inode after Remove or Rename, as on POSIX.
//
// A rename across two directories is durable only once both directories are
// synced; until then each directory reverts independently on Crash, so the
// file may survive under both names or neither, which a real filesystem may
// also do. Callers must sync both parents, which the contract asks anyway.
//
// Mem differs from OS in a few corners durable code must not rely on:
// OpenFile refuses directories (use SyncDir), SyncDir refuses regular files,
// and O_TRUNC is honoured only for writable handles.
//
// Mem is safe for concurrent use. Lock order: faultMu and mu are never held
// together, so a fault hook may call back into Mem.
type Mem struct {
	mu   sync.RWMutex // guards root, gen, every node and every memFile's state
	root *node
	gen  uint64 // incremented by Crash; handles from an older generation are closed

	faultMu sync.Mutex // guards hook and next
	hook    func(Op, string) error
	next    map[Op][]error // one-shot faults queued by FailNext, oldest first
}

var _ FS = (*Mem)(nil)

// node is a file or a directory. One type for both keeps a directory entry a
// single pointer, as in a real inode table, so Link and Rename are pointer
// moves and Crash can tell which inodes stay reachable.
type node struct {
	isDir bool

	// Files. data and synced never share a backing array, so writes to data
	// cannot disturb synced.
	data   []byte
	synced []byte
	// diverged is set when a write or truncate since the last Sync touched
	// bytes below len(synced). While it is clear, synced is a prefix of data
	// and Sync only appends the new tail instead of copying the whole file.
	diverged bool

	// Directories.
	entries map[string]*node // current
	durable map[string]*node // as of the last SyncDir
}

func newDir() *node {
	return &node{isDir: true, entries: map[string]*node{}, durable: map[string]*node{}}
}

// NewMem returns an empty filesystem holding only the root directory "/",
// whose (empty) entries count as durable.
func NewMem() *Mem {
	return &Mem{root: newDir(), next: map[Op][]error{}}
}

// SetFault installs f to be consulted before every faultable operation (see
// Op). name is the cleaned path the operation touches; for file-handle
// operations it is the path the handle was opened with; Rename and Link
// consult f with the old name and then the new one. A non-nil return fails the
// operation with that error (wrapped in *fs.PathError or *os.LinkError, so
// errors.Is matches it) before anything changes: a failed Write writes
// nothing, a failed Sync makes nothing durable.
//
// f is called without Mem's locks held, possibly from several goroutines at
// once, so it must be safe for concurrent use and may call Mem's methods.
// A nil f removes the hook.
func (m *Mem) SetFault(f func(op Op, name string) error) {
	m.faultMu.Lock()
	defer m.faultMu.Unlock()
	m.hook = f
}

// FailNext makes the next operation of kind op fail with err, once; calling it
// n times queues n failures, used in order. A queued failure is checked before
// the SetFault hook, and an operation it fails does not consult the hook. A
// nil err queues nothing.
func (m *Mem) FailNext(op Op, err error) {
	if err == nil {
		return
	}
	m.faultMu.Lock()
	defer m.faultMu.Unlock()
	m.next[op] = append(m.next[op], err)
}

// fault reports the injected error for op on names, if any. It must be called
// before taking mu, and before the operation changes anything.
func (m *Mem) fault(op Op, names ...string) error {
	m.faultMu.Lock()
	if q := m.next[op]; len(q) > 0 {
		err := q[0]
		if len(q) == 1 {
			delete(m.next, op)
		} else {
			m.next[op] = q[1:]
		}
		m.faultMu.Unlock()
		return err
	}
	hook := m.hook
	m.faultMu.Unlock()
	if hook == nil {
		return nil
	}
	for _, n := range names {
		if err := hook(op, n); err != nil {
			return err
		}
	}
	return nil
}

// Crash simulates a power loss and reboot. Every directory reachable from the
// root reverts to its entries as of its last SyncDir, so unsynced creates,
// links, removes and renames are undone, and a directory whose own entry was
// never synced into its parent vanishes with its contents. Every file that
// survives reverts to its synced bytes, except that an unsynced append (data
// that extends the synced bytes) may survive as a torn prefix of random
// length, chosen by rng; an unsynced overwrite or truncate is undone exactly.
// A nil rng drops all unsynced data.
//
// Afterwards the surviving state is the durable state, and every handle opened
// before the crash is closed (its operations return fs.ErrClosed). Directories
// are visited in name order, so one rng seed reproduces one outcome.
func (m *Mem) Crash(rng *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	crashNode(m.root, rng, map[*node]bool{})
}

func crashNode(n *node, rng *rand.Rand, seen map[*node]bool) {
	if seen[n] {
		return // a hard link, already reverted through another name
	}
	seen[n] = true
	if n.isDir {
		n.entries = cloneEntries(n.durable)
		names := make([]string, 0, len(n.entries))
		for name := range n.entries {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			crashNode(n.entries[name], rng, seen)
		}
		return
	}
	keep := n.synced
	if rng != nil && len(n.data) > len(n.synced) && bytes.HasPrefix(n.data, n.synced) {
		tail := n.data[len(n.synced):]
		keep = n.data[:len(n.synced)+rng.IntN(len(tail)+1)]
	}
	n.data = bytes.Clone(keep)
	n.synced = bytes.Clone(keep)
	n.diverged = false
}

// CrashClone returns a new filesystem holding what a power loss now would
// leave (as Crash describes, torn tails chosen by rng), while m itself
// carries on untouched. Tests use it to kill a process abruptly: the
// victim keeps running against m until it is stopped, and its successor
// starts on the clone, so nothing the victim does after this instant can
// reach the successor's disk.
func (m *Mem) CrashClone(rng *rand.Rand) *Mem {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := NewMem()
	c.root = cloneDurable(m.root, rng, map[*node]*node{})
	return c
}

// cloneDurable copies n's durable state; copies maps originals to their
// copies, so hard links stay shared.
func cloneDurable(n *node, rng *rand.Rand, copies map[*node]*node) *node {
	if c, ok := copies[n]; ok {
		return c
	}
	if n.isDir {
		c := newDir()
		copies[n] = c
		names := make([]string, 0, len(n.durable))
		for name := range n.durable {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			child := cloneDurable(n.durable[name], rng, copies)
			c.entries[name], c.durable[name] = child, child
		}
		return c
	}
	keep := n.synced
	if rng != nil && len(n.data) > len(n.synced) && bytes.HasPrefix(n.data, n.synced) {
		tail := n.data[len(n.synced):]
		keep = n.data[:len(n.synced)+rng.IntN(len(tail)+1)]
	}
	c := &node{data: bytes.Clone(keep), synced: bytes.Clone(keep)}
	copies[n] = c
	return c
}

// cloneEntries copies a directory's entry map; the result is never nil so it
// can be written to.
func cloneEntries(src map[string]*node) map[string]*node {
	dst := make(map[string]*node, len(src))
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// ReadFile returns a copy of the current (not necessarily durable) contents of
// name, for tests to assert on without opening a handle. It is not faultable.
func (m *Mem) ReadFile(name string) ([]byte, error) {
	p := clean(name)
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := m.lookupLocked(p)
	if err != nil {
		return nil, pathErr("readfile", p, err)
	}
	if n.isDir {
		return nil, pathErr("readfile", p, errIsDir)
	}
	return append([]byte{}, n.data...), nil
}

// SyncedSize returns how many bytes of name the last successful File.Sync
// made durable (or that survived the last Crash), so tests can check that
// code synced what it claims to have synced. It is not faultable.
func (m *Mem) SyncedSize(name string) (int64, error) {
	p := clean(name)
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := m.lookupLocked(p)
	if err != nil {
		return 0, pathErr("syncedsize", p, err)
	}
	if n.isDir {
		return 0, pathErr("syncedsize", p, errIsDir)
	}
	return int64(len(n.synced)), nil
}

// clean makes name absolute and canonical: Mem has no working directory, so
// relative names are taken from the root.
func clean(name string) string {
	if !path.IsAbs(name) {
		name = "/" + name
	}
	return path.Clean(name)
}

func pathErr(op, p string, err error) error {
	return &fs.PathError{Op: op, Path: p, Err: err}
}

// lookupLocked returns the node at the cleaned path p. Caller holds mu.
func (m *Mem) lookupLocked(p string) (*node, error) {
	n := m.root
	if p == "/" {
		return n, nil
	}
	for _, el := range strings.Split(p[1:], "/") {
		if !n.isDir {
			return nil, errNotDir
		}
		c, ok := n.entries[el]
		if !ok {
			return nil, fs.ErrNotExist
		}
		n = c
	}
	return n, nil
}

// parentLocked returns the directory that holds the entry for the cleaned
// path p, and the entry's name. The root has no parent. Caller holds mu.
func (m *Mem) parentLocked(p string) (*node, string, error) {
	if p == "/" {
		return nil, "", fs.ErrInvalid
	}
	dir, base := path.Split(p)
	d, err := m.lookupLocked(clean(dir))
	if err != nil {
		return nil, "", err
	}
	if !d.isDir {
		return nil, "", errNotDir
	}
	return d, base, nil
}

// OpenFile implements FS. Directories cannot be opened; use SyncDir.
func (m *Mem) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	p := clean(name)
	if err := m.fault(OpOpen, p); err != nil {
		return nil, pathErr("open", p, err)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == "/" {
		return nil, pathErr("open", p, errIsDir)
	}
	d, base, err := m.parentLocked(p)
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	n, ok := d.entries[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", p, fs.ErrExist)
	case ok && n.isDir:
		return nil, pathErr("open", p, errIsDir)
	case !ok && flag&os.O_CREATE == 0:
		return nil, pathErr("open", p, fs.ErrNotExist)
	case !ok:
		n = &node{}
		d.entries[base] = n
	}
	f := &memFile{
		m:      m,
		n:      n,
		name:   p,
		gen:    m.gen,
		read:   acc != os.O_WRONLY,
		write:  acc != os.O_RDONLY,
		append: flag&os.O_APPEND != 0,
	}
	if flag&os.O_TRUNC != 0 && f.write {
		n.resize(0)
	}
	return f, nil
}

// Remove implements FS.
func (m *Mem) Remove(name string) error {
	p := clean(name)
	if err := m.fault(OpRemove, p); err != nil {
		return pathErr("remove", p, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.parentLocked(p)
	if err != nil {
		return pathErr("remove", p, err)
	}
	n, ok := d.entries[base]
	switch {
	case !ok:
		return pathErr("remove", p, fs.ErrNotExist)
	case n.isDir && len(n.entries) > 0:
		return pathErr("remove", p, errNotEmpty)
	}
	delete(d.entries, base)
	return nil
}

// Rename implements FS. As on POSIX, a file may replace a file and a
// directory may replace an empty directory.
func (m *Mem) Rename(oldname, newname string) error {
	op, np := clean(oldname), clean(newname)
	lerr := func(err error) error {
		return &os.LinkError{Op: "rename", Old: op, New: np, Err: err}
	}
	if err := m.fault(OpRename, op, np); err != nil {
		return lerr(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	od, obase, err := m.parentLocked(op)
	if err != nil {
		return lerr(err)
	}
	n, ok := od.entries[obase]
	if !ok {
		return lerr(fs.ErrNotExist)
	}
	nd, nbase, err := m.parentLocked(np)
	if err != nil {
		return lerr(err)
	}
	if n.isDir && strings.HasPrefix(np, op+"/") {
		return lerr(fs.ErrInvalid) // a directory cannot move into itself
	}
	if t, ok := nd.entries[nbase]; ok {
		switch {
		case t == n:
			return nil // same inode: POSIX says do nothing
		case n.isDir && !t.isDir:
			return lerr(errNotDir)
		case !n.isDir && t.isDir:
			return lerr(errIsDir)
		case t.isDir && len(t.entries) > 0:
			return lerr(errNotEmpty)
		}
	}
	delete(od.entries, obase)
	nd.entries[nbase] = n
	return nil
}

// Link implements FS. Directories cannot be linked.
func (m *Mem) Link(oldname, newname string) error {
	op, np := clean(oldname), clean(newname)
	lerr := func(err error) error {
		return &os.LinkError{Op: "link", Old: op, New: np, Err: err}
	}
	if err := m.fault(OpLink, op, np); err != nil {
		return lerr(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookupLocked(op)
	if err != nil {
		return lerr(err)
	}
	if n.isDir {
		return lerr(fs.ErrPermission)
	}
	nd, nbase, err := m.parentLocked(np)
	if err != nil {
		return lerr(err)
	}
	if _, ok := nd.entries[nbase]; ok {
		return lerr(fs.ErrExist)
	}
	nd.entries[nbase] = n
	return nil
}

// MkdirAll implements FS. The new directories' entries become durable only
// when each one's parent is synced with SyncDir.
func (m *Mem) MkdirAll(name string, perm fs.FileMode) error {
	p := clean(name)
	if err := m.fault(OpMkdir, p); err != nil {
		return pathErr("mkdir", p, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == "/" {
		return nil
	}
	n := m.root
	for _, el := range strings.Split(p[1:], "/") {
		c, ok := n.entries[el]
		switch {
		case !ok:
			c = newDir()
			n.entries[el] = c
		case !c.isDir:
			return pathErr("mkdir", p, errNotDir)
		}
		n = c
	}
	return nil
}

// ReadDir implements FS. It is not faultable.
func (m *Mem) ReadDir(name string) ([]string, error) {
	p := clean(name)
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := m.lookupLocked(p)
	if err != nil {
		return nil, pathErr("readdir", p, err)
	}
	if !n.isDir {
		return nil, pathErr("readdir", p, errNotDir)
	}
	names := make([]string, 0, len(n.entries))
	for name := range n.entries {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// Stat implements FS. It is not faultable.
func (m *Mem) Stat(name string) (FileInfo, error) {
	p := clean(name)
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := m.lookupLocked(p)
	if err != nil {
		return FileInfo{}, pathErr("stat", p, err)
	}
	return FileInfo{Size: int64(len(n.data)), IsDir: n.isDir}, nil
}

// SyncDir implements FS: it makes the directory's current entries the ones a
// Crash restores. It refuses regular files.
func (m *Mem) SyncDir(name string) error {
	p := clean(name)
	if err := m.fault(OpSyncDir, p); err != nil {
		return pathErr("syncdir", p, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookupLocked(p)
	if err != nil {
		return pathErr("syncdir", p, err)
	}
	if !n.isDir {
		return pathErr("syncdir", p, errNotDir)
	}
	n.durable = cloneEntries(n.entries)
	return nil
}

// resize sets a file's size, zero-filling any growth. Caller holds mu.
func (n *node) resize(size int64) {
	if size < int64(len(n.synced)) {
		n.diverged = true
	}
	old := int64(len(n.data))
	if size <= old {
		n.data = n.data[:size]
		return
	}
	n.data = slices.Grow(n.data, int(size-old))[:size]
	clear(n.data[old:]) // reused capacity may hold bytes from before a shrink
}

// writeAt writes p at off, zero-filling any gap past the end. Caller holds mu.
func (n *node) writeAt(p []byte, off int64) {
	if len(p) == 0 {
		return
	}
	if off < int64(len(n.synced)) {
		n.diverged = true
	}
	if end := off + int64(len(p)); end > int64(len(n.data)) {
		n.resize(end)
	}
	copy(n.data[off:], p)
}

// sync makes the current bytes the durable ones. Caller holds mu.
func (n *node) sync() {
	if n.diverged || len(n.data) < len(n.synced) {
		n.synced = bytes.Clone(n.data)
	} else {
		n.synced = append(n.synced, n.data[len(n.synced):]...)
	}
	n.diverged = false
}

// memFile is an open handle on a Mem inode. Its mutable state (off, closed)
// is guarded by m.mu; the rest is fixed at open.
type memFile struct {
	m      *Mem
	n      *node
	name   string // cleaned path at open, for errors and fault hooks
	gen    uint64 // Mem generation at open; a Crash closes the handle
	read   bool
	write  bool
	append bool

	off    int64
	closed bool
}

// checkLocked reports fs.ErrClosed for a closed handle or one that predates a
// Crash. Caller holds m.mu.
func (f *memFile) checkLocked() error {
	if f.closed || f.gen != f.m.gen {
		return fs.ErrClosed
	}
	return nil
}

// ReadAt implements io.ReaderAt: a short read returns io.EOF.
func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.m.fault(OpRead, f.name); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	f.m.mu.RLock()
	defer f.m.mu.RUnlock()
	if err := f.checkLocked(); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	if !f.read {
		return 0, pathErr("read", f.name, errBadFD)
	}
	if off < 0 {
		return 0, pathErr("read", f.name, fs.ErrInvalid)
	}
	data := f.n.data
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Write implements io.Writer at the handle's offset, or at the end of the
// file for O_APPEND handles.
func (f *memFile) Write(p []byte) (int, error) {
	if err := f.m.fault(OpWrite, f.name); err != nil {
		return 0, pathErr("write", f.name, err)
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return 0, pathErr("write", f.name, err)
	}
	if !f.write {
		return 0, pathErr("write", f.name, errBadFD)
	}
	off := f.off
	if f.append {
		off = int64(len(f.n.data))
	}
	if off+int64(len(p)) > maxMemSize {
		return 0, pathErr("write", f.name, errTooLarge)
	}
	f.n.writeAt(p, off)
	f.off = off + int64(len(p))
	return len(p), nil
}

// Sync implements File: the inode's current bytes become the ones a Crash
// keeps, whichever name or handle wrote them.
func (f *memFile) Sync() error {
	if err := f.m.fault(OpSync, f.name); err != nil {
		return pathErr("sync", f.name, err)
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return pathErr("sync", f.name, err)
	}
	f.n.sync()
	return nil
}

// Truncate implements File. It does not move the handle's offset.
func (f *memFile) Truncate(size int64) error {
	if err := f.m.fault(OpTruncate, f.name); err != nil {
		return pathErr("truncate", f.name, err)
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return pathErr("truncate", f.name, err)
	}
	switch {
	case !f.write:
		return pathErr("truncate", f.name, errBadFD)
	case size < 0:
		return pathErr("truncate", f.name, fs.ErrInvalid)
	case size > maxMemSize:
		return pathErr("truncate", f.name, errTooLarge)
	}
	f.n.resize(size)
	return nil
}

// Size implements File. It is not faultable.
func (f *memFile) Size() (int64, error) {
	f.m.mu.RLock()
	defer f.m.mu.RUnlock()
	if err := f.checkLocked(); err != nil {
		return 0, pathErr("size", f.name, err)
	}
	return int64(len(f.n.data)), nil
}

// Close implements io.Closer. A second Close returns fs.ErrClosed, as os does.
func (f *memFile) Close() error {
	if err := f.m.fault(OpClose, f.name); err != nil {
		return pathErr("close", f.name, err)
	}
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return pathErr("close", f.name, err)
	}
	f.closed = true
	return nil
}
