package broker

// ListGroups (key 16), v0-5: the groups this broker coordinates, as Kafka
// answers (a client asks every broker), with the v4 state and v5 type
// filters.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleListGroups(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.ListGroupsRequest)
	resp := r.ResponseKind().(*kmsg.ListGroupsResponse)
	for _, led := range b.ledPartitions() {
		resp.Groups = append(resp.Groups, led.groups.List(r)...)
	}
	return resp, nil
}
