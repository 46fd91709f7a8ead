package broker

import (
	"time"

	"github.com/hashicorp/raft"
)

// peerLost is the transport's Config.PeerLost: a control connection to or
// from the raft address addr failed. Every local replica, and the metadata
// member, is told; those that follow addr look for a lost leader after a
// lease rather than a whole heartbeat timeout (replication.suspectLeader),
// which is most of what a failover waits for when a broker dies.
func (b *Broker) peerLost(addr raft.ServerAddress, at time.Time) {
	if b.ctx.Err() != nil || !b.opened.Load() {
		return
	}
	b.logger.Info("raft peer connection lost", "peer", string(addr))
	b.machine.SuspectLeader(string(addr), at)
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, t := range b.topics {
		for _, r := range t.load().partitions {
			if r != nil && r.g != nil {
				r.g.SuspectLeader(string(addr), at)
			}
		}
	}
}
