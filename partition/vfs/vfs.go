// Package vfs is the filesystem seam under every durable structure in Varve:
// partition segments, indexes, checkpoints and (later) the Raft WAL.
//
// Two implementations exist. OS is the real filesystem. Mem is an in-memory
// filesystem for tests that can fail chosen operations and can simulate a
// power loss: everything that was not made durable is dropped, including
// directory operations (create, rename, remove, link) whose parent directory
// was not synced, and an unsynced write may survive as a torn prefix.
//
// The durability contract both implementations share, and that callers must
// follow to keep data across a crash:
//   - File data is durable once File.Sync returns nil.
//   - A directory entry (a created, renamed, removed or linked name) is durable
//     once SyncDir on its parent directory returns nil.
//   - A newly created directory's own entry is durable once its parent is
//     synced with SyncDir.
//
// Paths are slash-separated and cleaned by the implementation; relative paths
// are taken as they are by OS and resolved against "/" by Mem.
package vfs

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// FS is the small set of operations durable code needs. Implementations must
// be safe for concurrent use.
type FS interface {
	// OpenFile opens name with os.OpenFile semantics for the flags
	// os.O_RDONLY, os.O_RDWR, os.O_WRONLY, os.O_CREATE, os.O_EXCL,
	// os.O_TRUNC and os.O_APPEND.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Link makes newname a hard link to the file oldname.
	Link(oldname, newname string) error
	// MkdirAll creates a directory and any missing parents.
	MkdirAll(name string, perm fs.FileMode) error
	// ReadDir lists the names in a directory, sorted.
	ReadDir(name string) ([]string, error)
	// Stat reports the size of a file, or that the name is a directory.
	Stat(name string) (FileInfo, error)
	// SyncDir makes the directory's entries durable (fsync of the directory).
	SyncDir(name string) error
}

// File is an open file. ReadAt may be called concurrently with Write on the
// same file for byte ranges that a completed Write has already covered.
type File interface {
	io.ReaderAt
	io.Writer
	io.Closer
	// Sync makes the file's contents durable (fdatasync). After a failed
	// Sync the durability of earlier writes is unknown: callers must not
	// retry it and treat the file as failed.
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Size is the file's current size.
	Size() (int64, error)
}

// FileInfo is what Stat reports.
type FileInfo struct {
	Size  int64
	IsDir bool
}

// OS is the real filesystem.
type OS struct{}

var _ FS = OS{}

// OpenFile implements FS.
func (OS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Remove implements FS.
func (OS) Remove(name string) error { return os.Remove(name) }

// Rename implements FS.
func (OS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Link implements FS.
func (OS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// MkdirAll implements FS.
func (OS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }

// ReadDir implements FS.
func (OS) ReadDir(name string) ([]string, error) {
	entries, err := os.ReadDir(name)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

// Stat implements FS.
func (OS) Stat(name string) (FileInfo, error) {
	st, err := os.Stat(name)
	if err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Size: st.Size(), IsDir: st.IsDir()}, nil
}

// SyncDir implements FS.
func (OS) SyncDir(name string) error {
	d, err := os.Open(filepath.Clean(name))
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

type osFile struct{ f *os.File }

func (o osFile) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }
func (o osFile) Write(p []byte) (int, error)             { return o.f.Write(p) }
func (o osFile) Close() error                            { return o.f.Close() }
func (o osFile) Truncate(size int64) error               { return o.f.Truncate(size) }

// Sync uses fdatasync where the platform has it: the file's size is data for
// fdatasync, so appends stay durable, and inode timestamps are not flushed.
func (o osFile) Sync() error { return fdatasync(o.f) }

func (o osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
