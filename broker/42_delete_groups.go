package broker

// DeleteGroups (key 42), v0-2: a group with no members (Empty, or known
// only by its commits) is deleted with its committed offsets, through the
// offsets partition's Raft log (tombstones); NON_EMPTY_GROUP otherwise,
// GROUP_ID_NOT_FOUND for a group the coordinator does not know.

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/protocol"
)

func handleDeleteGroups(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.DeleteGroupsRequest)
	resp := r.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, id := range r.Groups {
		g := kmsg.NewDeleteGroupsResponseGroup()
		g.Group = id
		if err := b.deleteGroup(ctx, id); err != nil {
			g.ErrorCode, g.ErrorMessage = errorFields(err)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp, nil
}

func (b *Broker) deleteGroup(ctx context.Context, id string) error {
	led, err := b.coordinatorFor(id)
	if err != nil {
		return err
	}
	if err := led.groups.Delete([]string{id})[id]; err != nil {
		return err
	}
	evs := []coordinator.OffsetEvent{{Kind: coordinator.OffsetEventGroupTombstone, Group: id}}
	b.gstate.mu.Lock()
	store := b.gstate.store
	b.gstate.mu.Unlock()
	if store != nil {
		for topic, ps := range store.GroupOffsets(id) {
			for p := range ps {
				evs = append(evs, coordinator.OffsetEvent{Kind: coordinator.OffsetEventCommitTombstone,
					Commit: coordinator.CommitKey{Group: id, Topic: topic, Partition: p}})
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return b.writeOffsetEvents(wctx, led, evs...)
}
