package broker

// CreatePartitions (key 37), v0-3.
//
// Grows a topic to Count partitions; shrinking or staying equal is
// INVALID_PARTITIONS. Manual assignments must name only this broker.
// ValidateOnly checks without creating.

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleCreatePartitions(b *Broker, _ context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.CreatePartitionsRequest)
	resp := r.ResponseKind().(*kmsg.CreatePartitionsResponse)
	for _, rt := range r.Topics {
		st := kmsg.NewCreatePartitionsResponseTopic()
		st.Topic = rt.Topic
		err := validateTopicName(rt.Topic)
		for _, a := range rt.Assignment {
			if len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.NodeID {
				err = fmt.Errorf("%w: assignments must be [%d]", ErrInvalidReplication, b.cfg.NodeID)
			}
		}
		if err == nil {
			err = b.createPartitions(rt.Topic, rt.Count, r.ValidateOnly)
		}
		if err != nil {
			st.ErrorCode, st.ErrorMessage = errorFields(err)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
