package broker

// SyncGroup (key 14), v0-5: the leader hands in the assignment, the others
// wait for theirs; served by the group's coordinator only. A completed
// generation's metadata is written through the offsets partition's Raft
// log (groups.go), so a coordinator move does not force a rebalance.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleSyncGroup(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.SyncGroupRequest)
	led, err := b.coordinatorFor(r.Group)
	if err != nil {
		resp := r.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = errorCode(err)
		return resp, nil
	}
	return led.groups.Sync(ctx, r), nil
}
