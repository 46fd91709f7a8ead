package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/replication"
)

// Graceful handoff. A broker that stops on purpose still leads partitions;
// if it just stopped its Raft groups, each of them would sit leaderless
// for an election timeout (2 s in production) and every producer to them
// would stall that long. Instead, Shutdown first hands each partition it
// leads to a caught-up follower (Raft's leadership transfer: catch the
// target up, then TimeoutNow, so it campaigns at once and wins), waits
// briefly for the new leaders to be published in the metadata, and then
// hands off the metadata group's leadership too. Clients see one
// NOT_LEADER_OR_FOLLOWER and a metadata refresh, not a timeout.
//
// The same transfer machinery serves ElectLeaders (43_elect_leaders.go).

const (
	// transferParallel bounds the leadership transfers a broker runs at
	// once: each makes the leader catch its target up and send a
	// TimeoutNow, and a thousand at once would starve heartbeats on a
	// small machine.
	transferParallel = 32
	// maxTransferLag is how many log entries a transfer target may trail
	// the leader by and still count as caught up. A follower that streams
	// the log stays within a few entries (a group keeps at most a handful
	// of produce entries in Raft at once, and a busy partition's last
	// index always runs ahead of the acknowledgements); one further
	// behind is catching up (a restart, a snapshot) and Raft would have to
	// ship its backlog within one election timeout before the transfer
	// could complete.
	maxTransferLag = 16
	// minAckFreshness is the least staleness allowed for a follower's last
	// acknowledgement (see ackFreshness).
	minAckFreshness = 2 * time.Second
)

// ackFreshness is how recent a follower's last acknowledgement must be
// for it to count as alive: the leader replicates at least every
// CommitTimeout (randomised up to twice that) even when idle, so three of
// them without an answer means the follower is gone or cut off.
func (b *Broker) ackFreshness() time.Duration {
	return max(minAckFreshness, 3*b.cfg.DataTiming.Commit)
}

// transferTimeout bounds one leadership transfer. hashicorp/raft gives a
// transfer one election timeout to catch the target up and deliver the
// TimeoutNow, then one more for the target to win; past that it fails the
// transfer itself. The slack covers a loaded machine.
func (b *Broker) transferTimeout() time.Duration {
	return 2*b.cfg.DataTiming.Election + 500*time.Millisecond
}

// followerCaughtUp reports why peer cannot take over g's leadership now
// (nil when it can): it must have acknowledged recently and be at most
// maxTransferLag entries behind this leader's log. Only meaningful on the
// leader: acknowledgements are recorded by the node that sends entries.
func (b *Broker) followerCaughtUp(g *replication.Group, peer replication.Peer) error {
	idx, at := g.Acked(peer)
	if at.IsZero() {
		return fmt.Errorf("broker %d has acknowledged nothing yet", peer.ID)
	}
	if age := time.Since(at); age > b.ackFreshness() {
		return fmt.Errorf("broker %d last acknowledged %v ago", peer.ID, age.Round(time.Millisecond))
	}
	if last := g.LastIndex(); idx+maxTransferLag < last {
		return fmt.Errorf("broker %d is %d entries behind", peer.ID, last-idx)
	}
	return nil
}

// transferAttempts is how many times a failed transfer is tried. The
// usual failure is transient: the TimeoutNow travels on the control
// connection, and the link to a peer that was down a moment ago may still
// be backing off its redial while the data stream already replicates.
const transferAttempts = 3

// transferLeadership hands g's leadership to peer and returns once this
// replica has stepped down (nil), the transfer failed transferAttempts
// times, or ctx ended. hashicorp/raft's transfer takes no context: on ctx
// expiry it is left to finish on its own, which it does within two
// election timeouts or when the group closes. A transfer already under
// way (the balancer's, say) is waited out: if it moved leadership away,
// the goal is met.
func (b *Broker) transferLeadership(ctx context.Context, g *replication.Group, peer replication.Peer) error {
	for failures := 0; ; {
		done := make(chan error, 1)
		go func() { done <- g.TransferLeadershipTo(peer) }()
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err == nil {
			return nil
		}
		if leader, _ := g.Leader(); leader != b.cfg.NodeID {
			return nil
		}
		busy := errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrEnqueueTimeout)
		if !busy {
			if failures++; failures >= transferAttempts {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(1+failures) * 50 * time.Millisecond):
		}
	}
}

// forEachBounded calls fn(i) for i in [0, n), at most limit at once, and
// returns when every call has.
func forEachBounded(n, limit int, fn func(i int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

// handoffResult counts what a handoff did, for its summary.
type handoffResult struct {
	mu        sync.Mutex
	moved     []*raftReplica // leadership handed to a follower
	failed    int            // caught-up followers existed, every transfer failed
	skipped   int            // no follower caught up
	alone     int            // no other voter to hand to
	published int            // moved partitions whose new leader the metadata named in time
	regained  int            // partitions led here again after the first pass (another broker's balancer)
	metadata  string         // what became of the metadata group's leadership
}

// handoff moves the leadership this broker holds to other brokers before
// its Raft groups stop. Shutdown calls it once the Kafka servers have
// finished their in-flight requests and the background loops have stopped
// (so this broker's balancer cannot race it), and before closeGroups.
// Bounded by ctx and Config.ShutdownHandoffTimeout; it never fails the
// shutdown: whatever it cannot move is left to an ordinary election.
func (b *Broker) handoff(ctx context.Context) {
	budget := b.cfg.ShutdownHandoffTimeout
	if budget < 0 {
		return
	}
	if ctx.Err() != nil {
		b.logger.Warn("no leadership handoff: the shutdown deadline has passed")
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	res := &handoffResult{}
	b.handoffPartitions(ctx, b.ledReplicas(), res)
	res.published = b.waitPublished(ctx, res.moved)
	// Another broker's balancer may have handed a partition back (this
	// broker is its preferred replica and was caught up): move it again,
	// right before the groups close.
	if again := b.ledReplicas(); len(again) > 0 && ctx.Err() == nil {
		res.regained = len(again)
		b.handoffPartitions(ctx, again, &handoffResult{})
	}
	res.metadata = b.handoffMetadata(ctx)
	b.logger.Info("leadership handoff finished",
		"moved", len(res.moved), "failed", res.failed, "skipped", res.skipped,
		"single_replica", res.alone, "published", res.published, "regained", res.regained,
		"metadata", res.metadata, "duration", time.Since(start).Round(time.Millisecond))
}

// ledReplicas are the partitions whose Raft group this broker leads, ready
// or not (a leader whose epoch start has not applied still leads).
func (b *Broker) ledReplicas() []*raftReplica {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []*raftReplica
	for _, t := range b.topics {
		for _, r := range t.load().partitions {
			if r.g == nil {
				continue
			}
			if leader, _ := r.g.Leader(); leader == b.cfg.NodeID {
				out = append(out, r)
			}
		}
	}
	return out
}

// handoffPartitions transfers each partition's leadership to its first
// caught-up follower in replica order (the preferred replica first, so
// the handoff also restores balance where it can), transferParallel at a
// time, each transfer bounded by transferTimeout.
func (b *Broker) handoffPartitions(ctx context.Context, led []*raftReplica, res *handoffResult) {
	forEachBounded(len(led), transferParallel, func(i int) {
		r := led[i]
		plog := b.logger.With("topic", r.topic, "partition", r.index)
		var targets []replication.Peer
		var why []error
		for _, id := range r.part.Replicas {
			if id == b.cfg.NodeID || slices.Contains(r.part.Learners, id) {
				continue // a learner cannot lead: it does not vote
			}
			addr, ok := b.raftAddr(id)
			if !ok {
				why = append(why, fmt.Errorf("broker %d has no raft address", id))
				continue
			}
			peer := replication.Peer{ID: id, Addr: addr}
			if err := b.followerCaughtUp(r.g, peer); err != nil {
				why = append(why, err)
				continue
			}
			targets = append(targets, peer)
		}
		if len(targets) == 0 {
			res.mu.Lock()
			defer res.mu.Unlock()
			if len(why) == 0 {
				res.alone++
				return
			}
			res.skipped++
			plog.Warn("no caught-up follower to hand leadership to", "err", errors.Join(why...))
			return
		}
		for _, peer := range targets {
			tctx, cancel := context.WithTimeout(ctx, b.transferTimeout())
			err := b.transferLeadership(tctx, r.g, peer)
			cancel()
			if err == nil {
				plog.Info("handed off partition leadership", "to", peer.ID)
				res.mu.Lock()
				res.moved = append(res.moved, r)
				res.mu.Unlock()
				return
			}
			plog.Warn("leadership handoff failed", "to", peer.ID, "err", err)
			if ctx.Err() != nil {
				break
			}
		}
		res.mu.Lock()
		res.failed++
		res.mu.Unlock()
	})
}

// publishWait bounds how long a handoff waits for the new leaders to be
// published. Normally that takes one commit in the partition and one in
// the metadata group (milliseconds); the wait matters most when this
// broker leads the metadata group, whose leadership goes next.
func (b *Broker) publishWait() time.Duration {
	return max(time.Second, 2*b.cfg.MetadataTiming.Election)
}

// waitPublished waits, at most publishWait or until ctx ends, for the
// metadata to name a leader other than this broker for every moved
// partition, so that by the time this broker stops, Metadata answers (on
// every broker) already send clients to the new leaders. It returns how
// many were published. When the new leader is itself shutting down it
// never publishes; the bound keeps that from delaying the stop.
func (b *Broker) waitPublished(ctx context.Context, moved []*raftReplica) int {
	if len(moved) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, b.publishWait())
	defer cancel()
	for {
		changed := b.meta.Changed()
		st := b.meta.State()
		n := 0
		for _, r := range moved {
			mt, ok := st.Topics[r.topic]
			if !ok || mt.ID != r.topicID || int(r.index) >= len(mt.Partitions) {
				n++ // deleted meanwhile: nothing left to publish
				continue
			}
			if l := mt.Partitions[r.index].Leader; l >= 0 && l != b.cfg.NodeID {
				n++
			}
		}
		if n == len(moved) {
			return n
		}
		select {
		case <-ctx.Done():
			return n
		case <-changed:
		}
	}
}

// waitNewMetadataCommit waits, bounded by ctx, until this broker has
// applied an entry past last: the new metadata leader's first one (the
// no-op raft commits in a new term). Until the new leader commits in its
// own term, no survivor applies what this broker committed just before
// (the leaderships it published): stopping earlier left every survivor's
// Metadata naming this broker for a few milliseconds after it had gone.
func (b *Broker) waitNewMetadataCommit(ctx context.Context, last uint64) string {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for b.machine.AppliedIndex() <= last {
		select {
		case <-ctx.Done():
			b.logger.Warn("metadata leadership moved, but the new leader had not committed before the stop", "err", ctx.Err())
			return "moved_uncommitted"
		case <-tick.C:
		}
	}
	return "moved"
}

// handoffMetadata hands the metadata group's leadership away when this
// broker holds it, and reports what happened for the summary.
func (b *Broker) handoffMetadata(ctx context.Context) string {
	if !b.machine.IsLeader() {
		return "not_leader"
	}
	if len(b.peers) < 2 {
		return "single_voter"
	}
	m := b.machine
	ctx, cancel := context.WithTimeout(ctx, 2*b.cfg.MetadataTiming.Election+500*time.Millisecond)
	defer cancel()
	last := m.LastIndex() // the leaderships published above are at or below it
	done := make(chan error, 1)
	go func() { done <- m.TransferLeadership() }()
	select {
	case err := <-done:
		if err != nil {
			b.logger.Warn("metadata leadership handoff failed", "err", err)
			return "failed"
		}
		return b.waitNewMetadataCommit(ctx, last)
	case <-ctx.Done():
		b.logger.Warn("metadata leadership handoff timed out", "err", ctx.Err())
		return "failed"
	}
}
