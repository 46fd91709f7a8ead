package broker

// LeaveGroup (key 13), v0-5 (v3+ leaves a batch of members, by member id or
// group.instance.id); served by the group's coordinator only.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleLeaveGroup(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.LeaveGroupRequest)
	led, err := b.coordinatorFor(r.Group)
	if err != nil {
		resp := r.ResponseKind().(*kmsg.LeaveGroupResponse)
		resp.ErrorCode = errorCode(err)
		return resp, nil
	}
	return led.groups.Leave(r), nil
}
