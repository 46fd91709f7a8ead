package broker

// ListPartitionReassignments (key 46), v0.
//
// The partitions being reassigned (all of them when Topics is null), as
// Kafka reports them: Replicas is every broker that holds or will hold a
// replica (the group's members and the target), Adding the target's
// brokers that were not replicas when the reassignment started, Removing
// the original replicas the target drops. Unknown topics and partitions
// are left out, as Kafka does.

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleListPartitionReassignments(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.ListPartitionReassignmentsRequest)
	resp := r.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
	st := b.meta.State()
	want := map[string][]int32{} // nil slice: every partition
	names := st.TopicNames()
	if r.Topics != nil {
		names = nil
		for _, rt := range r.Topics {
			if _, ok := st.Topics[rt.Topic]; ok && !slices.Contains(names, rt.Topic) {
				names = append(names, rt.Topic)
			}
			want[rt.Topic] = append(want[rt.Topic], rt.Partitions...)
		}
	}
	for _, name := range names {
		mt := st.Topics[name]
		t := kmsg.NewListPartitionReassignmentsResponseTopic()
		t.Topic = name
		for i, p := range mt.Partitions {
			if p.Target == nil || (r.Topics != nil && !slices.Contains(want[name], int32(i))) {
				continue
			}
			sp := kmsg.NewListPartitionReassignmentsResponseTopicPartition()
			sp.Partition = int32(i)
			sp.Replicas = p.Members()
			sp.AddingReplicas = p.Adding()
			sp.RemovingReplicas = p.Removing()
			t.Partitions = append(t.Partitions, sp)
		}
		if len(t.Partitions) > 0 {
			resp.Topics = append(resp.Topics, t)
		}
	}
	return resp, nil
}
