package broker

// JoinGroup (key 11), v0-9: the classic rebalance protocol
// (coordinator.Groups), served by the group's coordinator only; elsewhere
// NOT_COORDINATOR. It blocks until the join phase ends (bounded by the
// group's rebalance timeout, not the request's).

import (
	"context"
	"net"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleJoinGroup(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.JoinGroupRequest)
	led, err := b.coordinatorFor(r.Group)
	if err != nil {
		resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = errorCode(err)
		resp.Generation = -1
		return resp, nil
	}
	return led.groups.Join(ctx, r, req.ClientID, clientHost(req)), nil
}

// clientHost is what Kafka reports as a member's host: "/" + the peer's IP.
func clientHost(req *protocol.Request) string {
	if req.Conn == nil || req.Conn.RemoteAddr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(req.Conn.RemoteAddr.String())
	if err != nil {
		return "/" + req.Conn.RemoteAddr.String()
	}
	return "/" + host
}
