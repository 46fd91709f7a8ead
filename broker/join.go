package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/replication"
)

// Joining a running cluster. The metadata group's voters are the brokers
// named by --peers, fixed when the cluster formed. A broker whose id is not
// among them joins as a learner of the metadata group: it starts its
// metadata member without bootstrapping (so it never holds a configuration
// of its own, and as a non-voter never campaigns nor counts toward a
// commit) and asks the voters, until one of them is the leader and has
// added it, to add it. From then on it replicates the metadata, registers,
// and placement gives it replicas of the topics created afterwards (and
// reassignments may move existing ones onto it).

// joinMethod asks the metadata leader to add a broker as a learner.
const joinMethod = "metadata.join/v1"

// joinRequest is joinMethod's body.
type joinRequest struct {
	ID   int32  `json:"id"`
	Addr string `json:"addr"`
	Hops int    `json:"hops"` // forwards so far: a follower forwards once to its leader
}

// joiningMetadata reports whether this broker is not one of the metadata
// group's voters.
func joiningMetadata(cfg *Config) bool {
	return len(cfg.Peers) > 0 && !slices.ContainsFunc(cfg.Peers, func(p replication.Peer) bool { return p.ID == cfg.NodeID })
}

// metadataMember reports whether this broker's metadata member has a
// configuration that names it (added, or a voter).
func (b *Broker) metadataMember() bool {
	ms, _, err := b.machine.Members()
	return err == nil && slices.ContainsFunc(ms, func(m replication.Member) bool { return m.ID == b.cfg.NodeID })
}

// joinLoop asks the voters in turn to add this broker until it is a
// member of the metadata group.
func (b *Broker) joinLoop() {
	defer b.wg.Done()
	body, _ := json.Marshal(joinRequest{ID: b.cfg.NodeID, Addr: b.raftAdvertise})
	for i := 0; b.ctx.Err() == nil; i++ {
		if b.metadataMember() {
			if i > 0 {
				b.logger.Info("joined the metadata group as a learner")
			}
			return
		}
		p := b.cfg.Peers[i%len(b.cfg.Peers)]
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		_, err := b.mux.Call(ctx, raft.ServerAddress(p.Addr), joinMethod, body)
		cancel()
		if err != nil && i%len(b.cfg.Peers) == len(b.cfg.Peers)-1 {
			b.logger.Warn("asking to join the metadata group failed; retrying", "peer", p.ID, "err", err)
		}
		select {
		case <-b.ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// forwardToMetadataLeader sends a membership request a follower received
// on to the metadata leader, once: a request forwarded already is refused,
// so two brokers with stale ideas of the leader cannot bounce it forever.
func (b *Broker) forwardToMetadataLeader(ctx context.Context, method string, req joinRequest) ([]byte, error) {
	if req.Hops > 0 {
		return nil, errors.New("broker: not the metadata leader")
	}
	addr, ok := b.raftAddr(b.machine.Leader())
	if !ok {
		return nil, errors.New("broker: no metadata leader known")
	}
	req.Hops++
	fwd, _ := json.Marshal(req)
	return b.mux.Call(ctx, raft.ServerAddress(addr), method, fwd)
}

// handleJoin serves joinMethod: the leader adds the broker as a learner
// of the metadata group; a follower forwards to its leader once.
func (b *Broker) handleJoin(ctx context.Context, body []byte) ([]byte, error) {
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil || req.ID < 0 || req.Addr == "" {
		return nil, fmt.Errorf("broker: bad join request %q", body)
	}
	if !b.machine.IsLeader() {
		return b.forwardToMetadataLeader(ctx, joinMethod, req)
	}
	ms, _, err := b.machine.Members()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.ID != req.ID {
			continue
		}
		if m.Voter {
			// Re-adding would demote a voter; a voter that lost its data
			// rejoins another way.
			return nil, fmt.Errorf("broker: broker %d is a voter of the metadata group", req.ID)
		}
		if m.Addr == req.Addr {
			return nil, nil
		}
	}
	b.logger.Info("adding a broker to the metadata group as a learner", "broker", req.ID, "raft_addr", req.Addr)
	return nil, b.machine.AddLearner(replication.Peer{ID: req.ID, Addr: req.Addr})
}
