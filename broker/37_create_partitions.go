package broker

// CreatePartitions (key 37), v0-3.
//
// Grows a topic to Count partitions; shrinking or staying equal is
// INVALID_PARTITIONS. Manual assignments must name only this broker.
// ValidateOnly checks without creating.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleCreatePartitions(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.CreatePartitionsRequest)
	resp := r.ResponseKind().(*kmsg.CreatePartitionsResponse)
	for _, rt := range r.Topics {
		st := kmsg.NewCreatePartitionsResponseTopic()
		st.Topic = rt.Topic
		err := validateTopicName(rt.Topic)
		var assignment [][]int32
		for _, a := range rt.Assignment {
			assignment = append(assignment, a.Replicas)
		}
		if err == nil {
			ctx, cancel := requestContext(ctx, r.TimeoutMillis)
			err = b.createPartitions(ctx, rt.Topic, rt.Count, assignment, r.ValidateOnly)
			cancel()
		}
		if err != nil {
			st.ErrorCode, st.ErrorMessage = errorFields(err)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
