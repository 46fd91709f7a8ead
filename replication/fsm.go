package replication

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/replication/snapstore"
)

// partitionFSM is the partition as a raft.FSM. raft calls Apply, Snapshot
// and Restore from one goroutine, in log order; that goroutine is the
// log's only appender, which is what lets a checkpoint record the Raft
// index of exactly the batches appended so far.
type partitionFSM struct {
	g    *Group
	opts partition.Options

	mu  sync.RWMutex // guards log against the swap in Restore
	log *partition.Log

	// Owned by the FSM goroutine (and by Close after raft stopped).
	applied uint64 // Raft index of the last entry the log holds
	// lastCkpt is when the last checkpoint was written, by the monotonic
	// clock (time.Now, never GroupConfig.Now): an interval is measured
	// here, and a jump of the wall clock must neither stop checkpoints
	// nor force one per entry.
	lastCkpt time.Time
	dirty    bool // applied moved since the last checkpoint
	snapSeq  uint64

	sinceSnap atomic.Int64 // bytes applied since the last snapshot (the byte trigger)
}

// applied results, as the ApplyFuture's Response.
type produceApplied struct {
	results []partition.AppendResult
	errs    []error
}

type deleteApplied struct{ logStart int64 }

// errReplayed answers an entry the log already holds (raft replays
// entries after a restart): only possible for entries no one waits for.
var errReplayed = errors.New("replication: entry already applied")

func (f *partitionFSM) current() *partition.Log {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.log
}

// Apply implements raft.FSM.
func (f *partitionFSM) Apply(e *raft.Log) any {
	if e.Index <= f.applied {
		return errReplayed
	}
	if err := f.g.failure(); err != nil {
		return err
	}
	if len(e.Data) < 2 || e.Data[1] != cmdVersion1 {
		return f.g.fail(fmt.Errorf("%w: entry %d starts %x", ErrBadCommand, e.Index, e.Data[:min(len(e.Data), 2)]))
	}
	var out any
	epoch := f.g.epoch(e.Term) // the entry's own term, never CurrentTerm()
	switch e.Data[0] {
	case cmdProduce:
		// e.Data is shared with raft's log cache and with AppendEntries
		// being encoded for followers: the log only reads it (it stamps
		// offsets and epochs into its own write buffer).
		ts, batches, err := decodeProduce(e.Data)
		if err != nil {
			return f.g.fail(err)
		}
		res, errs, err := f.log.AppendBatches(batches, epoch, ts)
		if err != nil {
			return f.g.fail(err)
		}
		if f.g.cfg.OnApply != nil {
			var accepted [][]byte
			for i, b := range batches {
				if errs[i] == nil && !res[i].Duplicate {
					accepted = append(accepted, b)
				}
			}
			if err := f.g.cfg.OnApply(e.Index, accepted); err != nil {
				return f.g.fail(fmt.Errorf("replication: apply hook at %d: %w", e.Index, err))
			}
		}
		f.expireProducers(ts)
		out = &produceApplied{results: res, errs: errs}
	case cmdEpochStart:
		if err := f.log.StartEpoch(epoch); err != nil {
			return f.g.fail(err)
		}
		out = nil
	case cmdDeleteRecords:
		off, err := decodeDeleteRecords(e.Data)
		if err != nil {
			return f.g.fail(err)
		}
		start, err := f.log.DeleteRecords(off)
		if err != nil {
			if f.log.Err() != nil {
				return f.g.fail(err)
			}
			out = err // out of range: the caller's error, every replica agrees
		} else {
			out = &deleteApplied{logStart: start}
		}
	default:
		return f.g.fail(fmt.Errorf("%w: entry %d has type %d", ErrBadCommand, e.Index, e.Data[0]))
	}
	if e.Data[0] != cmdProduce && f.g.cfg.OnApply != nil {
		// No batches, but the index moves: the callee's recorded index
		// keeps up with the checkpoint's, so a restart finds it current
		// rather than behind (which would rebuild it from the whole log).
		if err := f.g.cfg.OnApply(e.Index, nil); err != nil {
			return f.g.fail(fmt.Errorf("replication: apply hook at %d: %w", e.Index, err))
		}
	}
	f.applied = e.Index
	f.dirty = true
	if time.Since(f.lastCkpt) >= f.g.cfg.CheckpointInterval {
		if err := f.checkpoint(); err != nil {
			return f.g.fail(err)
		}
	}
	if f.sinceSnap.Add(int64(len(e.Data))) >= f.g.cfg.SnapshotBytes {
		f.sinceSnap.Store(0)
		f.g.requestSnapshot()
	}
	return out
}

// expireProducers forgets idle producers at the entry's time, once per
// minute of entry time: the clock is the leader's stamp, so every replica
// expires at the same entries.
func (f *partitionFSM) expireProducers(nowMs int64) {
	const bucket = 60_000
	if nowMs/bucket != f.g.lastExpiry.Load() {
		f.g.lastExpiry.Store(nowMs / bucket)
		f.log.ExpireProducers(nowMs)
	}
}

// checkpoint makes the log durable up to the last applied entry and
// records that entry's index with it. FSM goroutine only.
func (f *partitionFSM) checkpoint() error {
	f.lastCkpt = time.Now()
	if !f.dirty {
		return nil
	}
	if err := f.log.Checkpoint(f.applied); err != nil {
		return err
	}
	f.dirty = false
	return nil
}

// Snapshot implements raft.FSM: a virtual snapshot, the log's own files
// pinned at the applied index (which also checkpoints there, so the
// checkpoint is never behind the snapshot raft will compact the WAL to).
func (f *partitionFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.snapSeq++
	name := fmt.Sprintf("%020d-%d-%d", f.applied, f.g.now().UnixNano(), f.snapSeq)
	s, err := f.log.Snapshot(name, f.applied)
	if err != nil {
		if f.log.Err() != nil {
			f.g.fail(err)
		}
		return nil, err
	}
	f.dirty, f.lastCkpt = false, time.Now()
	f.sinceSnap.Store(0)
	f.g.snapshots.Add(1)
	return &fsmSnapshot{name: name, size: s.Size()}, nil
}

// Restore implements raft.FSM: a snapshot from the leader replaces the
// log. The old log is closed first (readers see partition.ErrClosed);
// partition.Restore swaps the new directory in atomically.
func (f *partitionFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	old := f.current()
	_ = old.Close()
	l, err := partition.Restore(f.opts, rc)
	if err != nil {
		return f.g.fail(fmt.Errorf("replication: restore snapshot: %w", err))
	}
	f.mu.Lock()
	f.log = l
	f.mu.Unlock()
	f.applied, _ = l.Checkpointed()
	f.dirty = false
	f.g.restores.Add(1)
	f.g.logger.Info("installed snapshot", "applied_index", f.applied, "log_end_offset", l.LogEndOffset())
	if f.g.cfg.OnRestore != nil {
		if err := f.g.cfg.OnRestore(l, f.applied); err != nil {
			return f.g.fail(fmt.Errorf("replication: restore hook: %w", err))
		}
	}
	return nil
}

// catchUpSnapshot restores, before raft starts, a snapshot that raft
// stored (received from a leader) but the partition never installed: a
// crash or a failed restore in between. raft starts with everything up to
// the snapshot counted as applied (NoSnapshotRestoreOnStart), so without
// this the partition would silently miss those entries.
func (f *partitionFSM) catchUpSnapshot(latest *raft.SnapshotMeta, snaps *snapstore.Store) error {
	if latest.Index <= f.applied {
		return nil
	}
	f.g.logger.Warn("partition is behind the latest raft snapshot; restoring it", "applied_index", f.applied, "snapshot_index", latest.Index)
	_, rc, err := snaps.Open(latest.ID)
	if err != nil {
		return err
	}
	defer rc.Close()
	_ = f.log.Close()
	l, err := partition.Restore(f.opts, rc)
	if err != nil {
		return fmt.Errorf("replication: restore snapshot %s at start: %w", latest.ID, err)
	}
	f.mu.Lock()
	f.log = l
	f.mu.Unlock()
	f.applied, _ = l.Checkpointed()
	f.dirty = false
	if f.applied < latest.Index {
		return fmt.Errorf("replication: snapshot %s restored to index %d, below its own %d", latest.ID, f.applied, latest.Index)
	}
	return nil
}

// fsmSnapshot names the pinned partition snapshot; Persist records that
// name in the snapshot store instead of copying bytes.
type fsmSnapshot struct {
	name string
	size int64
}

type referencer interface {
	Reference(ref string, size int64) error
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	r, ok := sink.(referencer)
	if !ok {
		_ = sink.Cancel()
		return fmt.Errorf("replication: snapshot sink %T cannot hold a reference", sink)
	}
	if err := r.Reference(s.name, s.size); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// snapSource resolves the snapshot store's references to the partition's
// pinned snapshots.
type snapSource struct{ f *partitionFSM }

func (s snapSource) Open(ref string) (io.ReadCloser, int64, error) {
	snap, err := partition.OpenSnapshot(s.f.opts.FS, s.f.opts.Dir, ref)
	if err != nil {
		return nil, 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := snap.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	return pr, snap.Size(), nil
}

func (s snapSource) Remove(ref string) error {
	return partition.RemoveSnapshot(s.f.opts.FS, s.f.opts.Dir, ref)
}
