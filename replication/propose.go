package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition"
)

// proposal is one produce batch waiting for its entry to apply.
type proposal struct {
	batch []byte
	res   partition.AppendResult
	err   error
	done  chan struct{}
}

// applyTimeout bounds how long raft may take to accept an entry into its
// queue; the wait for the outcome is bounded by the caller's context.
const applyTimeout = 5 * time.Second

// Append replicates one produce batch (already validated, with every
// leader-stamped field in its bytes) and returns where it went once it
// has committed and applied here. Concurrent Appends share raft entries:
// while maxInflightEntries are in flight, new batches wait and go
// together into the next one.
//
// Errors: *NotLeaderError (not the ready leader, or leadership lost while
// the entry was in flight: the outcome is then unknown), ctx.Err() (the
// outcome is unknown; the entry may still commit), the batch's own error
// (duplicate-sequence, out-of-order sequence, ...), or the failure that
// stopped the replica.
func (g *Group) Append(ctx context.Context, batch []byte) (partition.AppendResult, error) {
	if _, err := g.Ready(); err != nil {
		return partition.AppendResult{}, err
	}
	p := &proposal{batch: batch, done: make(chan struct{})}
	g.pmu.Lock()
	g.pending = append(g.pending, p)
	var take []*proposal
	if g.inflight < maxInflightEntries {
		take = g.takeLocked()
	}
	g.pmu.Unlock()
	if take != nil {
		go g.submit(take)
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return partition.AppendResult{}, ctx.Err()
	}
}

// takeLocked removes up to MaxEntryBytes of pending proposals (at least
// one) for the next entry and counts it in flight. pmu is held.
func (g *Group) takeLocked() []*proposal {
	n, size := 0, 0
	for n < len(g.pending) && (n == 0 || size+len(g.pending[n].batch) <= g.cfg.MaxEntryBytes) {
		size += len(g.pending[n].batch)
		n++
	}
	if n == 0 {
		return nil
	}
	take := g.pending[:n:n]
	g.pending = append([]*proposal(nil), g.pending[n:]...)
	g.inflight++
	return take
}

// submit proposes one entry for take, waits for its outcome, hands every
// proposal its result, then submits whatever piled up meanwhile.
func (g *Group) submit(take []*proposal) {
	for take != nil {
		g.propose(take)
		g.pmu.Lock()
		g.inflight--
		take = nil
		if len(g.pending) > 0 && g.inflight < maxInflightEntries {
			take = g.takeLocked()
		}
		g.pmu.Unlock()
	}
}

func (g *Group) propose(take []*proposal) {
	finish := func(err error) {
		for _, p := range take {
			p.err = err
			close(p.done)
		}
	}
	if err := g.failure(); err != nil {
		finish(err)
		return
	}
	batches := make([][]byte, len(take))
	for i, p := range take {
		batches[i] = p.batch
	}
	start := time.Now()
	f := g.node.raft.Apply(encodeProduce(g.now().UnixMilli(), batches), applyTimeout)
	if err := g.applyError(f); err != nil {
		finish(err)
		return
	}
	switch r := f.Response().(type) {
	case *produceApplied:
		if g.cfg.Metrics.Committed != nil {
			g.cfg.Metrics.Committed(time.Since(start))
		}
		for i, p := range take {
			p.res, p.err = r.results[i], r.errs[i]
			close(p.done)
		}
	case error:
		finish(g.outcome(r))
	default:
		finish(fmt.Errorf("replication: unexpected apply result %T", r))
	}
}

// applyError maps raft's future errors: every one of them means this
// replica cannot say the entry committed, so the client retries against
// the leader.
func (g *Group) applyError(f raft.ApplyFuture) error {
	err := g.wait(f)
	if err == nil {
		return nil
	}
	if ferr := g.failure(); ferr != nil {
		return ferr
	}
	return g.outcome(err)
}

func (g *Group) outcome(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, errReplayed):
		return g.notLeader()
	}
	return err
}

// cancelPending fails proposals that never got an entry (Close).
func (g *Group) cancelPending() {
	g.pmu.Lock()
	pending := g.pending
	g.pending = nil
	g.pmu.Unlock()
	for _, p := range pending {
		p.err = ErrStopped
		close(p.done)
	}
}

// DeleteRecords moves the log start of every replica to offset, through
// the log (so every replica agrees), and returns the new log start.
func (g *Group) DeleteRecords(ctx context.Context, offset int64) (int64, error) {
	if _, err := g.Ready(); err != nil {
		return -1, err
	}
	f := g.node.raft.Apply(encodeDeleteRecords(offset), ctxTimeout(ctx, applyTimeout))
	done := make(chan error, 1)
	go func() { done <- g.applyError(f) }()
	select {
	case err := <-done:
		if err != nil {
			return -1, err
		}
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	// applyError returned nil: the future resolved, Response is ready.
	switch r := f.Response().(type) {
	case *deleteApplied:
		return r.logStart, nil
	case error:
		return -1, g.outcome(r)
	default:
		return -1, fmt.Errorf("replication: unexpected apply result %T", r)
	}
}
