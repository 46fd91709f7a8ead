package broker

import (
	"context"
	"slices"
	"time"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/replication"
)

// In-sync replicas. hashicorp/raft exposes no match index, so the
// transport records, per group and peer, the last index each follower
// acknowledged. Each leader samples its last index every ISRInterval; a
// follower is caught up at a sample when it has acknowledged the index the
// leader had one sample earlier and has answered (an acknowledgement or a
// heartbeat) within ReplicaLagMax, and in sync while it was caught up
// within ReplicaLagMax (Kafka's replica.lag.time.max.ms). The leader publishes
// the set through the metadata group when it changes, so every broker
// answers Metadata with it; a new leader starts from every replica and
// drops those that do not answer within an election timeout.

// isrTracker is the leader-side sampling state, owned by the ISR loop.
type isrTracker struct {
	lastIndex map[string]uint64              // group -> leader's last index at the previous sample
	caughtUp  map[string]map[int32]time.Time // group -> follower -> last time caught up
}

func newISRTracker() *isrTracker {
	return &isrTracker{lastIndex: map[string]uint64{}, caughtUp: map[string]map[int32]time.Time{}}
}

// updateISR runs one sample over the partitions this broker leads.
func (b *Broker) updateISR(tr *isrTracker) {
	now := time.Now()
	seen := map[string]bool{}
	for _, r := range b.publishedLeading() {
		epoch, err := r.g.Ready()
		if err != nil || epoch != r.part.LeaderEpoch {
			continue
		}
		gid := r.g.Name()
		seen[gid] = true
		prev, sampled := tr.lastIndex[gid]
		last := r.g.LastIndex()
		tr.lastIndex[gid] = last
		cu := tr.caughtUp[gid]
		if cu == nil {
			cu = map[int32]time.Time{}
			tr.caughtUp[gid] = cu
		}
		isr := []int32{b.cfg.NodeID}
		for _, id := range r.part.Replicas {
			if id == b.cfg.NodeID {
				continue
			}
			addr, ok := b.raftAddr(id)
			if !ok {
				continue
			}
			acked, at := r.g.Acked(replication.Peer{ID: id, Addr: addr})
			if _, known := cu[id]; !known {
				// A new leader knows nothing of its followers yet (and
				// publishing its leadership reset the ISR to every
				// replica): each gets an election timeout (at least
				// three samples) to answer, not the whole lag window,
				// so a replica that died with the old leader leaves
				// the ISR in about that.
				grace := min(b.cfg.ReplicaLagMax, max(b.cfg.DataTiming.Election, 3*b.cfg.ISRInterval))
				cu[id] = now.Add(grace - b.cfg.ReplicaLagMax)
			}
			// Caught up: it has the index of the previous sample and
			// answered within the lag window (heartbeats count), so a
			// dead follower of an idle partition leaves the ISR too.
			if sampled && acked >= prev && now.Sub(at) <= b.cfg.ReplicaLagMax {
				cu[id] = now
			}
			if now.Sub(cu[id]) <= b.cfg.ReplicaLagMax {
				isr = append(isr, id)
			}
		}
		slices.Sort(isr)
		if slices.Equal(isr, r.part.InSync()) {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		_, err = b.propose(ctx, metadata.SetISR{Topic: r.topicID, Partition: r.index, Leader: b.cfg.NodeID, Epoch: epoch, ISR: isr})
		cancel()
		if err != nil {
			b.logger.Debug("publishing the isr failed", "topic", r.topic, "partition", r.index, "err", err)
		} else if len(isr) < len(r.part.Replicas) {
			b.logger.Warn("partition under-replicated", "topic", r.topic, "partition", r.index, "isr", isr, "replicas", r.part.Replicas)
		} else {
			b.logger.Info("partition fully replicated again", "topic", r.topic, "partition", r.index, "isr", isr)
		}
	}
	for gid := range tr.lastIndex {
		if !seen[gid] {
			delete(tr.lastIndex, gid)
			delete(tr.caughtUp, gid)
		}
	}
}
