package broker

// UnregisterBroker (key 64), v0.
//
// The last step of decommissioning a broker, live or dead: its
// registration leaves the metadata (so clients and placement forget it)
// and it leaves the metadata Raft group. Refused with INVALID_REQUEST
// while any partition still has, or is moving, a replica on it: move them
// first (AlterPartitionReassignments); BROKER_ID_NOT_REGISTERED for an id
// the cluster does not know. The broker itself should be stopped after:
// if it keeps running it re-registers.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/protocol"
	"github.com/varvelog/varve/replication"
)

func handleUnregisterBroker(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.UnregisterBrokerRequest)
	resp := r.ResponseKind().(*kmsg.UnregisterBrokerResponse)
	ctx, cancel := requestContext(ctx, 30_000)
	defer cancel()
	if err := b.unregisterBroker(ctx, r.BrokerID); err != nil {
		resp.ErrorCode, resp.ErrorMessage = errorFields(err)
	}
	return resp, nil
}

// unregisterBroker removes the registration, then the metadata group
// membership (through the leader, which alone can change it).
func (b *Broker) unregisterBroker(ctx context.Context, id int32) error {
	res, err := b.propose(ctx, metadata.UnregisterBroker{ID: id})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return err
	}
	return b.leaveMetadataGroup(ctx, id)
}

// leaveMetadataGroup removes broker id from the metadata group's Raft
// configuration, asking the leader when this broker is not it.
func (b *Broker) leaveMetadataGroup(ctx context.Context, id int32) error {
	for {
		var err error
		if b.machine.IsLeader() {
			err = b.removeMetadataMember(id)
		} else if addr, ok := b.raftAddr(b.machine.Leader()); ok {
			body, _ := json.Marshal(joinRequest{ID: id})
			_, err = b.mux.Call(ctx, raft.ServerAddress(addr), leaveMethod, body)
		} else {
			err = errors.New("broker: no metadata leader known")
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// leaveMethod asks the metadata leader to remove a broker from the group.
const leaveMethod = "metadata.leave/v1"

// handleLeave serves leaveMethod on the leader.
func (b *Broker) handleLeave(body []byte) ([]byte, error) {
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil || req.ID < 0 {
		return nil, errors.New("broker: bad leave request")
	}
	if !b.machine.IsLeader() {
		return nil, errors.New("broker: not the metadata leader")
	}
	return nil, b.removeMetadataMember(req.ID)
}

// removeMetadataMember removes id from the metadata group if it is a
// member; on the leader.
func (b *Broker) removeMetadataMember(id int32) error {
	ms, _, err := b.machine.Members()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(ms, func(m replication.Member) bool { return m.ID == id }) {
		return nil
	}
	b.logger.Info("removing a broker from the metadata group", "broker", id)
	return b.machine.RemoveMember(id)
}
