package broker

import "github.com/varvelog/varve/replication"

// What tests, metrics and operators can ask a running broker about the
// cluster, without a Kafka round trip.

// RegisteredBrokers are the broker ids in this broker's metadata.
func (b *Broker) RegisteredBrokers() []int32 { return b.meta.State().BrokerIDs() }

// PartitionLeader is the leader and epoch this broker's metadata records
// for a partition ((-1, -1) when none or unknown topic).
func (b *Broker) PartitionLeader(topic string, p int32) (leader, epoch int32) {
	t, ok := b.meta.State().Topics[topic]
	if !ok || p < 0 || int(p) >= len(t.Partitions) {
		return -1, -1
	}
	part := t.Partitions[p]
	return part.Leader, part.LeaderEpoch
}

// IsReadyLeader reports whether this broker is the partition's ready
// leader (its epoch-start entry applied).
func (b *Broker) IsReadyLeader(topic string, p int32) bool {
	r := b.lookupTopic(topic).partition(p)
	if r == nil {
		return false
	}
	_, err := r.Ready()
	return err == nil
}

// ReplicaStats are the Raft counters of this broker's replica of a
// partition; false when it holds none.
func (b *Broker) ReplicaStats(topic string, p int32) (replication.GroupStats, bool) {
	r := b.lookupTopic(topic).partition(p)
	if r == nil || r.g == nil {
		return replication.GroupStats{}, false
	}
	return r.g.Stats(), true
}

// PartitionSize is the bytes of this broker's replica's segments of a
// partition; -1 when it holds none.
func (b *Broker) PartitionSize(topic string, p int32) int64 {
	r := b.lookupTopic(topic).partition(p)
	if r == nil || r.g == nil {
		return -1
	}
	return r.log().Size()
}

// SnapshotReplica makes this broker's replica of a partition take a Raft
// snapshot now (compacting its WAL).
func (b *Broker) SnapshotReplica(topic string, p int32) error {
	r := b.lookupTopic(topic).partition(p)
	if r == nil || r.g == nil {
		return ErrUnknownTopic
	}
	return r.g.Snapshot()
}

// PartitionDir is where this broker keeps a partition's log.
func (b *Broker) PartitionDir(topic string, p int32) string {
	return partitionDir(b.cfg.DataDir, topic, p)
}

// ReplicaMembers is the Raft configuration this broker's replica of a
// partition holds (false when it holds none).
func (b *Broker) ReplicaMembers(topic string, p int32) ([]replication.Member, bool) {
	r := b.lookupTopic(topic).partition(p)
	if r == nil || r.g == nil {
		return nil, false
	}
	ms, _, err := r.g.Members()
	return ms, err == nil
}

// MetadataMembers is the metadata group's configuration as this broker's
// member holds it.
func (b *Broker) MetadataMembers() []replication.Member {
	ms, _, _ := b.machine.Members()
	return ms
}

// Rejoined reports whether this process started its metadata member in
// rejoin mode (no Raft state, cluster formed) and how many partition
// replicas it opened in rejoin mode.
func (b *Broker) Rejoined() (metadata bool, replicas int64) {
	return b.rejoinedMetadata, b.rejoinedReplicas.Load()
}

// FeatureLevel is the cluster feature level in this broker's metadata.
func (b *Broker) FeatureLevel() int32 { return b.meta.State().FeatureLevelOrBase() }

// MetadataApplied counts the metadata commands of cmd's type this broker
// has applied since it started (failed ones included).
func (b *Broker) MetadataApplied(cmd any) int64 { return b.meta.Applied(cmd) }

// GroupGeneration is the generation of a group as this broker's offset
// store last materialised it (false when unknown).
func (b *Broker) GroupGeneration(group string) (int32, bool) {
	b.gstate.mu.Lock()
	s := b.gstate.store
	b.gstate.mu.Unlock()
	if s == nil {
		return 0, false
	}
	md, ok := s.GroupMetadata(group)
	if !ok {
		return 0, false
	}
	return md.Generation, true
}
