package broker

// Heartbeat (key 12), v0-4: keeps a member's session; served by the
// group's coordinator only.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleHeartbeat(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.HeartbeatRequest)
	led, err := b.coordinatorFor(r.Group)
	if err != nil {
		resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = errorCode(err)
		return resp, nil
	}
	return led.groups.Heartbeat(r), nil
}
