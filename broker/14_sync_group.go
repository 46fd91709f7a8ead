package broker

// SyncGroup (key 14), v0-5: the leader hands in the assignment, the others
// wait for theirs; served by the group's coordinator only. A completed
// generation's metadata is written through the offsets partition's Raft
// log (groups.go) before the members get their assignments, so a
// coordinator move neither loses the group nor forces a rebalance.

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
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
	resp := led.groups.Sync(ctx, r)
	if resp.ErrorCode != 0 {
		return resp, nil
	}
	// The new generation's metadata is written in the background once the
	// group is Stable; answer only once it is committed.
	if err := led.waitPersisted(ctx, r.Group, r.Generation); err != nil {
		b.logger.Info("SyncGroup: group metadata not persisted; the member rejoins",
			"group", r.Group, "generation", r.Generation, "err", err)
		failed := r.ResponseKind().(*kmsg.SyncGroupResponse)
		failed.ErrorCode = errorCode(err)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			failed.ErrorCode = kerr.RebalanceInProgress.Code
		}
		return failed, nil
	}
	return resp, nil
}
