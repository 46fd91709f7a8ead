package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/replication"
)

// Rejoining after lost state. A voter whose Raft state is gone (its data
// directory was wiped, or its disk replaced) may have voted in terms it no
// longer remembers; if it voted again it could help elect a second leader
// in one term. So a member that was a voter and starts with no Raft state
// never bootstraps and refuses every vote (replication's Rejoin) until
// the group's leader has demoted it to a non-voter; it then catches up
// like a learner and the leader promotes it. For the metadata group the
// broker first asks its peers whether the cluster has formed (some
// metadata command committed): only if a majority of the voters, counting
// itself, answer that it has not does it bootstrap as on a first start.

const (
	// helloMethod asks a peer whether the cluster has formed.
	helloMethod = "cluster.hello/v1"
	// rejoinMethod asks the metadata leader to demote a rejoining voter.
	rejoinMethod = "metadata.rejoin/v1"
	// partitionRejoinMethod asks a partition's leader to demote a
	// rejoining replica.
	partitionRejoinMethod = "partition.rejoin/v1"
)

type helloReply struct {
	Formed bool `json:"formed"`
}

type partitionRejoin struct {
	Topic     metadata.TopicID `json:"topic"`
	Partition int32            `json:"partition"`
	ID        int32            `json:"id"`
}

// metadataRejoin reports whether this broker must rejoin the metadata
// group: it is one of several voters, it has no Raft state for the group,
// and the cluster has formed without it (clusterFormed). It blocks until
// that is known.
func (b *Broker) metadataRejoin() (bool, error) {
	if len(b.cfg.Peers) < 2 || joiningMetadata(&b.cfg) {
		return false, nil
	}
	if _, err := b.cfg.FS.Stat(path.Join(b.cfg.DataDir, "raft", metadataGroupID)); err == nil {
		return false, nil
	}
	formed, err := b.clusterFormed(b.ctx)
	if err != nil {
		return false, fmt.Errorf("broker: deciding whether to bootstrap the metadata group: %w", err)
	}
	if formed {
		b.logger.Warn("this broker has no metadata Raft state but the cluster has formed: rejoining as a non-voter until caught up")
	}
	return formed, nil
}

// handleHello serves helloMethod.
func (b *Broker) handleHello() ([]byte, error) {
	return json.Marshal(helloReply{Formed: b.opened.Load() && b.meta.State().Index > 0})
}

// clusterFormed decides, for a voter of the metadata group that has no
// Raft state for it, whether the cluster already formed (then it rejoins)
// or not (then it bootstraps with the others). It waits until one peer
// says formed or a majority of the voters, itself included, say not.
func (b *Broker) clusterFormed(ctx context.Context) (bool, error) {
	voters := len(b.cfg.Peers)
	for {
		notFormed := 1 // this broker
		for _, p := range b.cfg.Peers {
			if p.ID == b.cfg.NodeID {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			out, err := b.mux.Call(cctx, raft.ServerAddress(p.Addr), helloMethod, nil)
			cancel()
			var rep helloReply
			if err != nil || json.Unmarshal(out, &rep) != nil {
				continue
			}
			if rep.Formed {
				return true, nil
			}
			notFormed++
		}
		if notFormed > voters/2 {
			return false, nil
		}
		b.logger.Info("no Raft state for the metadata group: waiting to hear from a majority of its voters", "voters", voters, "answered_not_formed", notFormed-1)
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// rejoinLoop asks the metadata leader to demote this broker until its
// metadata member is no longer a voter (then the leader promotes it once
// it has caught up: promoteMetadataVoters).
func (b *Broker) rejoinLoop() {
	defer b.wg.Done()
	body, _ := json.Marshal(joinRequest{ID: b.cfg.NodeID, Addr: b.raftAdvertise})
	for i := 0; b.ctx.Err() == nil; i++ {
		ms, _, err := b.machine.Members()
		if err == nil && slices.ContainsFunc(ms, func(m replication.Member) bool { return m.ID == b.cfg.NodeID && !m.Voter }) {
			b.logger.Info("demoted in the metadata group; catching up before promotion")
			return
		}
		p := b.cfg.Peers[i%len(b.cfg.Peers)]
		if p.ID != b.cfg.NodeID {
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			_, err = b.mux.Call(ctx, raft.ServerAddress(p.Addr), rejoinMethod, body)
			cancel()
		}
		select {
		case <-b.ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// handleRejoin serves rejoinMethod: the leader demotes the broker; a
// follower forwards once.
func (b *Broker) handleRejoin(ctx context.Context, body []byte) ([]byte, error) {
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil || req.ID < 0 {
		return nil, errors.New("broker: bad rejoin request")
	}
	if !b.machine.IsLeader() {
		return b.forwardToMetadataLeader(ctx, rejoinMethod, req)
	}
	ms, _, err := b.machine.Members()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.ID == req.ID && m.Voter {
			b.logger.Warn("a metadata voter lost its state: demoting it until it catches up", "broker", req.ID)
			return nil, b.machine.Demote(req.ID)
		}
	}
	return nil, nil
}

// promoteMetadataVoters runs on the metadata leader: a voter named by the
// peers list that is a non-voter (it rejoined after losing its state) and
// has caught up becomes a voter again. And when a voter of the peers list
// has been decommissioned (retired), a caught-up learner that joined later
// takes its seat, so the metadata group keeps the size it formed with
// (len(--peers) voters) instead of shrinking for good: two voters left of
// three can lose neither. A peer that is only demoted (rejoining) keeps
// its seat; the replacement waits for seats nobody holds.
func (b *Broker) promoteMetadataVoters() {
	if !b.machine.IsLeader() {
		return
	}
	ms, _, err := b.machine.Members()
	if err != nil {
		return
	}
	st := b.meta.State()
	isPeer := func(id int32) bool {
		return slices.ContainsFunc(b.cfg.Peers, func(p replication.Peer) bool { return p.ID == id })
	}
	caughtUp := func(m replication.Member) bool {
		idx, at, ok := b.metadataAcked(m.ID)
		return ok && idx+learnerSlack >= b.machine.LastIndex() && time.Since(at) <= learnerFresh
	}
	seats := 0 // voters, and peers that will be voters again once caught up
	for _, m := range ms {
		if m.Voter || (isPeer(m.ID) && !slices.Contains(st.Retired, m.ID)) {
			seats++
		}
	}
	for _, m := range ms {
		if m.Voter || !isPeer(m.ID) || slices.Contains(st.Retired, m.ID) || !caughtUp(m) {
			continue
		}
		b.logger.Info("promoting a caught-up metadata voter", "broker", m.ID)
		if err := b.machine.Promote(replication.Peer{ID: m.ID, Addr: m.Addr}); err != nil {
			b.logger.Warn("promoting a metadata voter failed", "broker", m.ID, "err", err)
		}
	}
	if seats >= len(b.cfg.Peers) {
		return
	}
	// One replacement per pass, the lowest id first: every leader picks the
	// same one, and the next pass sees the new count.
	slices.SortFunc(ms, func(x, y replication.Member) int { return int(x.ID) - int(y.ID) })
	for _, m := range ms {
		_, registered := st.Brokers[m.ID]
		if m.Voter || isPeer(m.ID) || !registered || !caughtUp(m) {
			continue
		}
		b.logger.Info("promoting a metadata learner to replace a decommissioned voter", "broker", m.ID, "voters_and_peers", seats, "wanted", len(b.cfg.Peers))
		if err := b.machine.Promote(replication.Peer{ID: m.ID, Addr: m.Addr}); err != nil {
			b.logger.Warn("promoting a metadata learner failed", "broker", m.ID, "err", err)
		}
		return
	}
}

// requestDemotion asks a partition's leader, until it has, to demote this
// broker's rejoining replica (opened with GroupConfig.Rejoin).
func (b *Broker) requestDemotion(id metadata.TopicID, idx int32, g *replication.Group) {
	body, _ := json.Marshal(partitionRejoin{Topic: id, Partition: idx, ID: b.cfg.NodeID})
	b.goTracked(func() {
		for b.ctx.Err() == nil {
			ms, _, err := g.Members()
			if errors.Is(err, raft.ErrRaftShutdown) {
				return
			}
			if err == nil && slices.ContainsFunc(ms, func(m replication.Member) bool { return m.ID == b.cfg.NodeID && !m.Voter }) {
				return
			}
			leader, _ := g.Leader()
			if addr, ok := b.raftAddr(leader); ok && leader != b.cfg.NodeID {
				ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
				_, _ = b.mux.Call(ctx, raft.ServerAddress(addr), partitionRejoinMethod, body)
				cancel()
			}
			select {
			case <-b.ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}

// handlePartitionRejoin serves partitionRejoinMethod on the partition's
// leader.
func (b *Broker) handlePartitionRejoin(body []byte) ([]byte, error) {
	var req partitionRejoin
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errors.New("broker: bad partition rejoin request")
	}
	g := b.groupOf(req.Topic, req.Partition)
	if g == nil {
		return nil, fmt.Errorf("broker: no replica of %s-%d here", req.Topic, req.Partition)
	}
	if _, err := g.Ready(); err != nil {
		return nil, err
	}
	ms, _, err := g.Members()
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.ID == req.ID && m.Voter {
			b.logger.Warn("a partition replica lost its state: demoting it until it catches up", "topic_id", req.Topic, "partition", req.Partition, "broker", req.ID)
			return nil, g.Demote(req.ID)
		}
	}
	return nil, nil
}

// raiseFeatureLevel runs on the metadata leader: once every registered
// broker runs a higher feature level than the cluster's (a rolling upgrade
// finished), the cluster's level is raised to it.
func (b *Broker) raiseFeatureLevel() {
	if !b.machine.IsLeader() {
		return
	}
	st := b.meta.State()
	want := min(st.SupportedLevel(), b.cfg.MaxFeatureLevel)
	if want <= st.FeatureLevelOrBase() {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	res, err := b.propose(ctx, metadata.SetFeatureLevel{Level: want})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		b.logger.Warn("raising the cluster feature level failed", "level", want, "err", err)
		return
	}
	b.logger.Info("cluster feature level raised", "level", want)
}
