package vfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
)

// The durable-update recipes every store in Varve needs, written once: the
// partition log, its snapshots and the Raft WAL all create directories and
// replace small files, and each step is easy to get subtly wrong.

// MkdirAllDurable creates dir and any missing parents, and fsyncs the parent
// of each directory it created: a new directory's name is durable only once
// its parent is synced, and a directory that vanished in a crash would take
// fsynced files with it.
func MkdirAllDurable(fsys FS, dir string) error {
	var missing []string
	for d := path.Clean(dir); ; d = path.Dir(d) {
		if _, err := fsys.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == path.Dir(d) {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := fsys.SyncDir(path.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// WriteFileAtomic replaces dir/name with data durably: write name.tmp, fsync
// it, rename it over name, fsync the directory. A crash leaves the old
// contents or the new ones, never a mix (a leftover name.tmp is the reader's
// to ignore or remove).
func WriteFileAtomic(fsys FS, dir, name string, data []byte) error {
	tmp := path.Join(dir, name+".tmp")
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	if err := fsys.Rename(tmp, path.Join(dir, name)); err != nil {
		return err
	}
	return fsys.SyncDir(dir)
}

// ReadFile returns a whole file's bytes; a missing file is fs.ErrNotExist.
func ReadFile(fsys FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && n == len(b)) {
		return nil, err
	}
	return b, nil
}

// RemoveAll removes a directory and everything under it. A missing
// directory is not an error. It does not sync the parent: callers that
// need the removal durable sync it (removals are idempotent, so a crash
// before that only leaves something to remove again).
func RemoveAll(fsys FS, dir string) error {
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		p := path.Join(dir, name)
		st, err := fsys.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if st.IsDir {
			err = RemoveAll(fsys, p)
		} else {
			err = fsys.Remove(p)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := fsys.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
