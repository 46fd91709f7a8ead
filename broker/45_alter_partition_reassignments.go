package broker

// AlterPartitionReassignments (key 45), v0-1.
//
// Records a target replica set per partition in the metadata (a null list
// cancels: the partition goes back to the replicas it had when its
// reassignment started); the partition's leader then moves its Raft group
// there one change at a time (membership.go). The answer comes once the
// target is recorded, as Kafka's does; ListPartitionReassignments shows the
// progress. v1's AllowReplicationFactorChange=false refuses a target of
// another length with INVALID_REPLICATION_FACTOR.

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/protocol"
)

func handleAlterPartitionReassignments(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.AlterPartitionAssignmentsRequest)
	resp := r.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
	ctx, cancel := requestContext(ctx, r.TimeoutMillis)
	defer cancel()
	allowRF := r.Version < 1 || r.AllowReplicationFactorChange
	for _, rt := range r.Topics {
		st := kmsg.NewAlterPartitionAssignmentsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
			sp.Partition = rp.Partition
			if err := b.reassign(ctx, rt.Topic, rp.Partition, rp.Replicas, allowRF); err != nil {
				sp.ErrorCode, sp.ErrorMessage = errorFields(err)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

// reassign records one partition's target (nil cancels).
func (b *Broker) reassign(ctx context.Context, topic string, idx int32, target []int32, allowRF bool) error {
	mt, ok := b.meta.State().Topics[topic]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, topic)
	}
	if idx < 0 || int(idx) >= len(mt.Partitions) {
		return fmt.Errorf("%w: %q has no partition %d", ErrUnknownTopic, topic, idx)
	}
	if target != nil && !allowRF {
		cur := mt.Partitions[idx].Replicas
		if o := mt.Partitions[idx].Original; o != nil {
			cur = o
		}
		if len(target) != len(cur) {
			return fmt.Errorf("%w: %d replicas where the partition has %d and the request does not allow a change", ErrInvalidReplication, len(target), len(cur))
		}
	}
	if target != nil && len(target) == 0 {
		return fmt.Errorf("%w: an empty replica list", metadata.ErrInvalidAssignment)
	}
	res, err := b.propose(ctx, metadata.Reassign{Topic: mt.ID, Partition: idx, Target: target})
	if err == nil {
		err = res.Err
	}
	return err
}
