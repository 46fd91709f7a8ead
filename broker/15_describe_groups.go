package broker

// DescribeGroups (key 15), v0-5: state, protocol type and name, members
// with their metadata and assignments. A group this broker does not
// coordinate answers NOT_COORDINATOR.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleDescribeGroups(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.DescribeGroupsRequest)
	resp := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, id := range r.Groups {
		led, err := b.coordinatorFor(id)
		if err != nil {
			g := kmsg.NewDescribeGroupsResponseGroup()
			g.Group = id
			g.ErrorCode = errorCode(err)
			resp.Groups = append(resp.Groups, g)
			continue
		}
		one := *r
		one.Groups = []string{id}
		resp.Groups = append(resp.Groups, led.groups.Describe(&one)...)
	}
	return resp, nil
}
