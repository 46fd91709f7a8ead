package broker

// OffsetDelete (key 47), v0: deletes a group's committed offsets of some
// partitions (tombstones through Raft). Kafka refuses partitions of topics
// a Stable group is subscribed to; Varve, which does not parse the
// members' subscriptions, refuses every partition while the group has
// members (GROUP_SUBSCRIBED_TO_TOPIC), and deletes freely when it has none.

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/protocol"
)

func handleOffsetDelete(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.OffsetDeleteRequest)
	resp := r.ResponseKind().(*kmsg.OffsetDeleteResponse)
	code := int16(0)
	led, err := b.coordinatorFor(r.Group)
	if err != nil {
		resp.ErrorCode = errorCode(err)
		return resp, nil
	}
	d := kmsg.NewPtrDescribeGroupsRequest()
	d.Groups = []string{r.Group}
	if gs := led.groups.Describe(d); len(gs) == 1 && len(gs[0].Members) > 0 {
		code = kerr.GroupSubscribedToTopic.Code
	}
	var evs []coordinator.OffsetEvent
	for _, rt := range r.Topics {
		t := kmsg.NewOffsetDeleteResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetDeleteResponseTopicPartition()
			p.Partition, p.ErrorCode = rp.Partition, code
			t.Partitions = append(t.Partitions, p)
			if code == 0 {
				evs = append(evs, coordinator.OffsetEvent{Kind: coordinator.OffsetEventCommitTombstone,
					Commit: coordinator.CommitKey{Group: r.Group, Topic: rt.Topic, Partition: rp.Partition}})
			}
		}
		resp.Topics = append(resp.Topics, t)
	}
	if len(evs) > 0 {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := b.writeOffsetEvents(wctx, led, evs...); err != nil {
			resp.ErrorCode = commitErrorCode(err)
		}
	}
	return resp, nil
}
