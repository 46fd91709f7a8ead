package broker

import (
	"context"
	"path"
	"strconv"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/replication"
)

// replica is the handlers' view of one partition: exactly what the Kafka
// handlers need. Every read is served by the ready leader only: Ready
// first, then the rest.
type replica interface {
	// Ready returns the leader epoch when this broker is the partition's
	// ready leader, else *replication.NotLeaderError (or the storage
	// failure that stopped the replica).
	Ready() (int32, error)
	// Append replicates one validated batch (records already checked)
	// and returns where it went once it is committed and applied.
	Append(ctx context.Context, batch []byte) (partition.AppendResult, error)
	// Read returns whole batches from offset, up to maxBytes (at least one
	// batch when any is readable), below upTo, which is at most the high
	// watermark: the caller passes the one it reports.
	Read(offset int64, maxBytes int, upTo int64) ([]byte, error)
	HighWatermark() int64
	LogStartOffset() int64
	// Changed is closed when the high watermark next moves.
	Changed() <-chan struct{}
	OffsetForTimestamp(ts int64) (partition.TimestampOffset, bool, error)
	MaxTimestamp() (partition.TimestampOffset, bool, error)
	OffsetForLeaderEpoch(epoch int32) (int32, int64)
	// EpochForOffset is the leader epoch that wrote offset, -1 if unknown.
	EpochForOffset(offset int64) int32
	DeleteRecords(ctx context.Context, offset int64) (int64, error)
}

// partitionDir is the directory of a partition: <topic>-<index>, as in
// Kafka. Topic names are validated to [a-zA-Z0-9._-], so this cannot
// escape the data directory. A directory left by a deleted topic of the
// same name is wiped when the new topic's group is created (its Raft
// directory, named by topic id, is new).
func partitionDir(dataDir, topic string, index int32) string {
	return path.Join(dataDir, "logs", topic+"-"+strconv.Itoa(int(index)))
}

// groupID names a partition's Raft group: by topic id, never by name, so a
// re-created topic never meets the old one's replicas.
func groupID(id metadata.TopicID, index int32) string {
	return id.String() + "-" + strconv.Itoa(int(index))
}

// raftReplica is one partition of a topic. g is nil when this broker holds
// no replica of it; then it only answers who leads.
type raftReplica struct {
	b       *Broker
	topic   string
	topicID metadata.TopicID
	index   int32
	part    metadata.Partition
	g       *replication.Group
}

var _ replica = (*raftReplica)(nil)

func (r *raftReplica) Ready() (int32, error) {
	if r.g == nil {
		return -1, &replication.NotLeaderError{Leader: r.part.Leader, Epoch: r.part.LeaderEpoch}
	}
	return r.g.Ready()
}

func (r *raftReplica) log() *partition.Log { return r.g.Log() }

func (r *raftReplica) Append(ctx context.Context, batch []byte) (partition.AppendResult, error) {
	if r.g == nil { // the group checks its own readiness
		_, err := r.Ready()
		return partition.AppendResult{}, err
	}
	return r.g.Append(ctx, batch)
}

func (r *raftReplica) Read(offset int64, maxBytes int, upTo int64) ([]byte, error) {
	l := r.log()
	return l.Read(offset, maxBytes, min(upTo, l.LogEndOffset()))
}

// HighWatermark is the log end: a replica's log holds committed batches
// only.
func (r *raftReplica) HighWatermark() int64     { return r.log().LogEndOffset() }
func (r *raftReplica) LogStartOffset() int64    { return r.log().LogStartOffset() }
func (r *raftReplica) Changed() <-chan struct{} { return r.log().Changed() }
func (r *raftReplica) OffsetForLeaderEpoch(e int32) (int32, int64) {
	return r.log().OffsetForLeaderEpoch(e)
}

func (r *raftReplica) EpochForOffset(o int64) int32 { return r.log().EpochForOffset(o) }

func (r *raftReplica) OffsetForTimestamp(ts int64) (partition.TimestampOffset, bool, error) {
	l := r.log()
	return l.OffsetForTimestamp(ts, l.LogEndOffset())
}

func (r *raftReplica) MaxTimestamp() (partition.TimestampOffset, bool, error) {
	l := r.log()
	return l.MaxTimestamp(l.LogEndOffset())
}

func (r *raftReplica) DeleteRecords(ctx context.Context, offset int64) (int64, error) {
	if r.g == nil { // the group checks its own readiness
		_, err := r.Ready()
		return -1, err
	}
	return r.g.DeleteRecords(ctx, offset)
}

// publishedLeading are the local replicas the metadata names this broker
// the leader of (whether or not raft still agrees: callers check Ready).
func (b *Broker) publishedLeading() []*raftReplica {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var mine []*raftReplica
	for _, t := range b.topics {
		for _, r := range t.load().partitions {
			if r.g != nil && r.part.Leader == b.cfg.NodeID {
				mine = append(mine, r)
			}
		}
	}
	return mine
}
