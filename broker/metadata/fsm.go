package metadata

import (
	"context"
	"sync"
	"sync/atomic"
)

// Result is what Apply returns for every command.
type Result struct {
	// Err is nil, or one of the package's sentinels wrapped with detail.
	Err error
	// ProducerID is the first id of the block an AllocateProducerIDs
	// reserved; -1 when that command failed, 0 for other commands.
	ProducerID int64
	// Changed is false when the command changed nothing: it failed, or it was
	// valid but had no effect (a stale SetLeader, an identical registration).
	Changed bool
}

// FSM is the cluster-metadata state machine. The replication layer adapts
// it to hashicorp/raft.
//
// Contract: Apply, Snapshot and Restore are called from one goroutine (the
// Raft apply goroutine). State, Changed and Wait may be called from any
// goroutine at any time.
type FSM struct {
	state atomic.Pointer[State]
	// maxLevel is the highest feature level this FSM decodes: this build's
	// MaxFeatureLevel, lower only to stand in for an older build in tests.
	maxLevel int32
	// applied counts applied commands by type (failed ones included).
	counts [256]atomic.Int64

	mu      sync.Mutex    // guards the two channels
	applied chan struct{} // closed at the next publication (Index moved)
	changed chan struct{} // closed at the next publication that changed content
}

// NewFSM returns an FSM holding the empty state (Index 0).
func NewFSM() *FSM { return NewFSMAtLevel(MaxFeatureLevel) }

// NewFSMAtLevel is an FSM that decodes only the commands of feature levels
// up to maxLevel, as a build of that level would: what a mixed-version
// test runs to stand in for an older broker.
func NewFSMAtLevel(maxLevel int32) *FSM {
	f := &FSM{applied: make(chan struct{}), changed: make(chan struct{}), maxLevel: min(maxLevel, MaxFeatureLevel)}
	f.state.Store(emptyState())
	return f
}

// State returns the current published state without taking a lock. The
// returned value never changes; call State again for a newer one.
func (f *FSM) State() *State { return f.state.Load() }

// Changed returns a channel that is closed the next time the state's
// content changes (a Restore counts; a command that changes nothing does
// not). Each change makes a new channel, so a watcher loops:
//
//	for {
//		ch := f.Changed() // before State, so no change is missed
//		reconcile(f.State())
//		select { case <-ch: case <-ctx.Done(): return }
//	}
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Wait blocks until State().Index >= index, or ctx ends (then it returns
// ctx.Err()). Every applied index counts, failed commands included.
func (f *FSM) Wait(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		ch := f.applied
		f.mu.Unlock()
		if f.state.Load().Index >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// publish makes s the current state and wakes the waiters. The store happens
// before the channels are swapped, under mu, so a waiter that took a channel
// before the store sees it closed, and one that took it after sees s.
func (f *FSM) publish(s *State, changed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state.Store(s)
	close(f.applied)
	f.applied = make(chan struct{})
	if changed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// Applied counts the commands of a type applied so far (failed included).
func (f *FSM) Applied(cmd any) int64 {
	b, err := Encode(cmd)
	if err != nil {
		return 0
	}
	return f.counts[b[0]].Load()
}

// MaxLevel is the highest feature level this FSM decodes.
func (f *FSM) MaxLevel() int32 { return f.maxLevel }

// Apply applies the command at a Raft log index. It is deterministic: the
// result and the new state depend only on the current state and the
// arguments. An index at or below State().Index was already applied (Raft
// replays entries after a restore) and is skipped: Result{} and no change.
// Any other index is recorded in State().Index, whether the command succeeds
// or not. term is the Raft term of the entry; no version 1 command uses it.
func (f *FSM) Apply(index, term uint64, cmd []byte) Result {
	cur := f.state.Load()
	if index <= cur.Index {
		return Result{}
	}
	if len(cmd) > 0 {
		f.counts[cmd[0]].Add(1)
	}
	next, res := applyCommand(cur, cmd, f.maxLevel)
	if next == nil {
		next = cur.clone()
	}
	next.Index = index
	f.publish(next, res.Changed)
	return res
}
