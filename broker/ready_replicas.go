package broker

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Readiness waits for replication, not only for serving.
//
// A leader's Raft replication to a follower it cannot reach backs off
// exponentially (hashicorp/raft: up to 10.24 s between attempts) and the
// backoff outlives the outage: after a restart, the leaders' heartbeats
// reach this broker within a second, but their next AppendEntries may be
// ten seconds away (longer when the first attempts arrive before this
// broker has opened its replicas, and fail as "unknown group"). Meanwhile
// this broker serves and its replicas fall further behind. If it reported
// ready then, a rolling restart gated on /readyz would stop the next
// broker while the partitions that now need this one's acknowledgement
// cannot commit: the compose rolling restart measured 8-17 s without an
// acknowledged write on partitions whose leader Metadata named all along.
// So readiness also waits until every replica this broker follows has
// received replicated data from its leader since it started.

// replicaReadyWait bounds that wait: a partition whose other replicas are
// all down has no leader to hear from, and must not keep the broker
// unready for ever (it is ready, with a warning, after this long).
const replicaReadyWait = 30 * time.Second

// waitReplicated waits, at most replicaReadyWait or until ctx ends, until
// every local replica that another broker leads has received an
// AppendEntries with a log position since its group opened (this start).
// Replicas this broker leads, and those of groups without another voter,
// have nothing to wait for; one whose leader is not known yet (an election
// under way) is waited for. status gets what it waits for, for /readyz.
func (b *Broker) waitReplicated(ctx context.Context, status func(string)) {
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting := b.replicasAwaitingLeader()
		if len(waiting) == 0 {
			if time.Since(start) > time.Second {
				b.logger.Info("replicas replicated to by their leaders", "waited", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		status(fmt.Sprintf("%d replicas not yet replicated to by their leaders since the start (%s)", len(waiting), waiting[0]))
		if time.Since(start) > replicaReadyWait {
			b.logger.Warn("ready although some replicas heard no leader replicate since the start",
				"replicas", len(waiting), "first", waiting[0], "waited", replicaReadyWait)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// replicasAwaitingLeader names the local follower replicas that have not
// received replicated data since their group opened, sorted.
func (b *Broker) replicasAwaitingLeader() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []string
	for _, t := range b.topics {
		for _, r := range t.load().partitions {
			if r.g == nil || r.g.SoloTiming() {
				continue
			}
			if leader, _ := r.g.Leader(); leader == b.cfg.NodeID {
				continue
			}
			if r.g.LastAppend().IsZero() {
				out = append(out, fmt.Sprintf("%s-%d", r.topic, r.index))
			}
		}
	}
	slices.Sort(out)
	return out
}
