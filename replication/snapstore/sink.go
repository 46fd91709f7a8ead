package snapstore

import (
	"bufio"
	"errors"
	"fmt"
	"hash"
	"os"
	"path"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// writeBufferSize is the buffer in front of the data file: FSMs often
// persist in small writes, and each would otherwise be a system call.
const writeBufferSize = 64 << 10

// Sink is an in-progress snapshot, returned by Store.Create as a
// raft.SnapshotSink. Its contents are either the bytes given to Write, or,
// after Reference, data the store's Source holds; never both.
//
// Close publishes the snapshot durably; Cancel discards it. Both may be
// called again afterwards: raft calls Close or Cancel after an FSM's Persist
// that may already have done so. A Sink is safe for concurrent use, but its
// bytes are in Write order only if one goroutine writes.
type Sink struct {
	s    *Store
	id   string
	tmp  string // the in-progress directory, "<id>.tmp"
	meta snapMeta

	mu     sync.Mutex
	f      vfs.File // the data file, opened by the first Write
	w      *bufio.Writer
	crc    hash.Hash32
	size   int64
	wrote  bool
	ref    string
	refSet bool
	err    error // the first write failure; Close fails with it
	done   bool
	result error // what Close or Cancel decided, returned by a later Close
}

var _ raft.SnapshotSink = (*Sink)(nil)

// ID implements raft.SnapshotSink: the id Store.Open takes once the sink
// is closed.
func (k *Sink) ID() string { return k.id }

// Write implements io.Writer: it appends to the snapshot's data file.
func (k *Sink) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.done:
		return 0, fmt.Errorf("%w: %s", ErrSinkDone, k.id)
	case k.refSet:
		return 0, fmt.Errorf("%w: %s references %q", ErrMixed, k.id, k.ref)
	case k.err != nil:
		return 0, k.err
	}
	k.wrote = true
	if err := k.openLocked(); err != nil {
		return 0, err
	}
	n, err := k.w.Write(p)
	k.crc.Write(p[:n])
	k.size += int64(n)
	if err != nil {
		k.err = fmt.Errorf("snapstore: write snapshot %s: %w", k.id, err)
		return n, k.err
	}
	return n, nil
}

// openLocked creates the data file if it is not open yet. Caller holds mu.
func (k *Sink) openLocked() error {
	if k.f != nil {
		return nil
	}
	f, err := k.s.fsys.OpenFile(path.Join(k.tmp, dataName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		k.err = fmt.Errorf("snapstore: create data of %s: %w", k.id, err)
		return k.err
	}
	k.f = f
	k.w = bufio.NewWriterSize(f, writeBufferSize)
	return nil
}

// Reference makes the snapshot's contents Source.Open(ref), size bytes
// long, instead of bytes written to the store: nothing is written, so a
// snapshot of a partition costs a meta file. It fails after Write (even of
// nothing), after an earlier Reference, and on a store without a Source.
//
// On success the store owns ref (see Source): cancelling the sink, a failed
// Close and a later reap release it with Source.Remove. On failure the
// caller still owns it.
func (k *Sink) Reference(ref string, size int64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.done:
		return fmt.Errorf("%w: %s", ErrSinkDone, k.id)
	case k.wrote:
		return fmt.Errorf("%w: %s has written data", ErrMixed, k.id)
	case k.refSet:
		return fmt.Errorf("%w: %s already references %q", ErrMixed, k.id, k.ref)
	case k.s.source == nil:
		return fmt.Errorf("%w: %s", ErrNoSource, k.id)
	case ref == "":
		return fmt.Errorf("snapstore: %s: empty reference", k.id)
	case size < 0:
		return fmt.Errorf("snapstore: %s: negative reference size %d", k.id, size)
	}
	k.ref, k.size, k.refSet = ref, size, true
	return nil
}

// Close implements io.Closer: it makes the snapshot durable and visible,
// then reaps snapshots beyond Retain. The steps: fsync the data file, write
// and fsync the meta file, fsync the snapshot's directory, rename it from
// "<id>.tmp" to "<id>", fsync the store's directory. Once Close returns nil
// the snapshot survives a power loss.
//
// If a step before the rename fails, the snapshot is removed (and a
// reference released). If the final fsync fails, the snapshot is complete
// but may not survive a power loss; Close returns the error, and the store
// fails (ErrFailed) rather than retry the fsync.
//
// A second Close returns what the first did; Close after Cancel fails with
// ErrSinkDone, so raft never takes a cancelled snapshot for a persisted one.
func (k *Sink) Close() error {
	k.mu.Lock()
	if k.done {
		defer k.mu.Unlock()
		return k.result
	}
	k.done = true
	published, err := k.publishLocked()
	if err != nil && !published {
		k.discardLocked()
	}
	k.result = err
	k.mu.Unlock()
	if err != nil {
		k.s.logger.Error("failed to close snapshot", "id", k.id, "error", err)
		return err
	}
	k.s.logger.Info("snapshot complete", "id", k.id, "term", k.meta.Term, "index", k.meta.Index,
		"size", k.meta.Size, "ref", k.meta.Ref)
	k.s.reap()
	return nil
}

// publishLocked runs Close's durable steps; published reports whether the
// rename happened. Caller holds mu.
func (k *Sink) publishLocked() (published bool, err error) {
	if k.err != nil {
		return false, k.err
	}
	// Publishing ends with an fsync of the store's directory, which must
	// not be retried after one failed.
	if err := k.s.failure(); err != nil {
		return false, err
	}
	if k.refSet {
		k.meta.Ref, k.meta.Size = k.ref, k.size
	} else {
		if err := k.finishDataLocked(); err != nil {
			return false, err
		}
		sum := k.crc.Sum32()
		k.meta.Size, k.meta.DataCRC32C = k.size, &sum
	}
	b, err := encodeMeta(&k.meta, k.s.tab)
	if err != nil {
		return false, err
	}
	if err := k.writeMeta(b); err != nil {
		return false, err
	}
	if err := k.s.fsys.SyncDir(k.tmp); err != nil {
		return false, fmt.Errorf("snapstore: sync %s: %w", k.tmp, err)
	}
	final := path.Join(k.s.dir, k.id)
	if err := k.s.fsys.Rename(k.tmp, final); err != nil {
		return false, fmt.Errorf("snapstore: publish snapshot %s: %w", k.id, err)
	}
	if err := k.s.fsys.SyncDir(k.s.dir); err != nil {
		k.s.fail("syncdir", err)
		return true, fmt.Errorf("snapstore: sync %s after publishing %s: %w", k.s.dir, k.id, err)
	}
	return true, nil
}

// finishDataLocked flushes, fsyncs and closes the data file, creating it
// empty if nothing was written. Caller holds mu.
func (k *Sink) finishDataLocked() error {
	if err := k.openLocked(); err != nil {
		return err
	}
	f := k.f
	k.f = nil
	err := k.w.Flush()
	if err == nil {
		err = k.s.syncFile(f, k.id, dataName)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapstore: finish data of %s: %w", k.id, err)
	}
	return nil
}

// writeMeta writes and fsyncs the meta file inside the in-progress
// directory; the rename that follows publishes it, so it needs no
// replace-by-rename of its own.
func (k *Sink) writeMeta(b []byte) error {
	f, err := k.s.fsys.OpenFile(path.Join(k.tmp, metaName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("snapstore: create meta of %s: %w", k.id, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = k.s.syncFile(f, k.id, metaName)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapstore: write meta of %s: %w", k.id, err)
	}
	return nil
}

// Cancel implements raft.SnapshotSink: it discards the in-progress snapshot
// and releases its reference, if any. After Close it does nothing: a
// published snapshot is the store's to reap.
func (k *Sink) Cancel() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done {
		return nil
	}
	k.done = true
	k.result = fmt.Errorf("%w: %s was cancelled", ErrSinkDone, k.id)
	return k.discardLocked()
}

// discardLocked closes the data file, removes the in-progress directory and
// releases the reference. A directory it cannot remove is left for the next
// Open. Caller holds mu.
func (k *Sink) discardLocked() error {
	var errs []error
	if k.f != nil {
		_ = k.f.Close() // the data is being thrown away; its close error says nothing
		k.f = nil
	}
	if err := vfs.RemoveAll(k.s.fsys, k.tmp); err != nil {
		k.s.logger.Warn("failed to remove cancelled snapshot", "id", k.id, "error", err)
		errs = append(errs, fmt.Errorf("snapstore: remove %s: %w", k.tmp, err))
	}
	if k.refSet {
		if err := k.s.source.Remove(k.ref); err != nil {
			k.s.logger.Warn("failed to release reference of cancelled snapshot", "id", k.id, "ref", k.ref, "error", err)
			errs = append(errs, fmt.Errorf("snapstore: release reference %q of %s: %w", k.ref, k.id, err))
		}
	}
	return errors.Join(errs...)
}
