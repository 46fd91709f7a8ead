package broker

import (
	"slices"
	"time"

	"github.com/varvelog/varve/replication"
)

// Leadership balancing: Raft elects whichever replica times out first, so
// leaders drift (a broker that restarts leads nothing). Placement names a
// preferred leader per partition (the first replica, spread evenly); a
// leader that is not the preferred one hands leadership to it once it is
// caught up (its acknowledged index reached the leader's last index
// recently), as Kafka's auto.leader.rebalance does.

// balanceLeaders runs one pass.
func (b *Broker) balanceLeaders() {
	b.mu.RLock()
	var mine []*raftReplica
	for _, t := range b.topics {
		for _, r := range t.load().partitions {
			if r.g != nil && len(r.part.Replicas) > 0 && r.part.Replicas[0] != b.cfg.NodeID && !slices.Contains(r.part.Learners, r.part.Replicas[0]) {
				mine = append(mine, r)
			}
		}
	}
	b.mu.RUnlock()
	for _, r := range mine {
		if b.ctx.Err() != nil {
			return
		}
		if _, err := r.g.Ready(); err != nil {
			continue
		}
		pref := r.part.Replicas[0]
		addr, ok := b.raftAddr(pref)
		if !ok {
			continue
		}
		peer := replication.Peer{ID: pref, Addr: addr}
		idx, at := r.g.Acked(peer)
		if idx < r.g.LastIndex() || time.Since(at) > 2*time.Second {
			continue
		}
		if err := r.g.TransferLeadershipTo(peer); err != nil {
			b.logger.Debug("leadership transfer failed", "topic", r.topic, "partition", r.index, "to", pref, "err", err)
			continue
		}
		b.logger.Info("moved leadership to the preferred replica", "topic", r.topic, "partition", r.index, "to", pref)
	}
}
