package replication

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Membership changes. A group changes its members one server at a time,
// as raft's single-server changes require: a new replica joins as a
// non-voter (it receives the log but neither votes nor counts toward the
// commit quorum), is promoted once it has caught up, and an old one is
// removed last. The caller (the broker, on the partition's leader) decides
// the order and when a learner has caught up; this file only exposes the
// steps. Every step is a raft configuration entry: it takes effect on each
// member as soon as it is appended, and the call returns once it commits.

// Member is one server of a group's Raft configuration.
type Member struct {
	ID    int32
	Addr  string
	Voter bool
}

// membershipTimeout bounds one configuration change: raft waits for the
// previous one to commit first.
const membershipTimeout = 10 * time.Second

// members returns the latest configuration this node has (committed or
// not) and the index of the entry that made it.
func (n *node) members() ([]Member, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, err
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: brokerID(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, f.Index(), nil
}

// Members is the group's latest Raft configuration and its index.
func (g *Group) Members() ([]Member, uint64, error) { return g.node.members() }

// AddLearner adds p as a non-voter (or updates its address). Only the
// leader can; others get raft.ErrNotLeader.
func (g *Group) AddLearner(p Peer) error {
	return g.wait(g.node.raft.AddNonvoter(ServerID(p.ID), raft.ServerAddress(p.Addr), 0, membershipTimeout))
}

// Promote makes p a voter. The caller checks first that p has caught up:
// a voter that has not counts toward the quorum while it cannot help
// commit, and a group of three with one such member has no slack left.
func (g *Group) Promote(p Peer) error {
	return g.wait(g.node.raft.AddVoter(ServerID(p.ID), raft.ServerAddress(p.Addr), 0, membershipTimeout))
}

// RemoveMember removes broker id from the configuration. A leader that
// removes itself steps down once the change commits; the broker transfers
// leadership first instead.
func (g *Group) RemoveMember(id int32) error {
	return g.wait(g.node.raft.RemoveServer(ServerID(id), 0, membershipTimeout))
}

// Members is Group.Members for the machine's group.
func (m *Machine) Members() ([]Member, uint64, error) { return m.node.members() }

// AddLearner adds p to the machine's group as a non-voter: a broker that
// joins a running cluster beyond its voters.
func (m *Machine) AddLearner(p Peer) error {
	if err := m.node.raft.AddNonvoter(ServerID(p.ID), raft.ServerAddress(p.Addr), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("replication: add learner %d to the metadata group: %w", p.ID, err)
	}
	return nil
}

// SoloTiming reports whether the group runs the single-voter timing. Such
// a group cannot take more voters (its 10 ms leader lease cannot change at
// runtime): the owner reopens it with NoSoloTiming before it grows.
func (g *Group) SoloTiming() bool { return g.node.timing == soloTiming() }

// RemoveMember removes broker id from the machine's group (decommission).
func (m *Machine) RemoveMember(id int32) error {
	if err := m.node.raft.RemoveServer(ServerID(id), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("replication: remove %d from the metadata group: %w", id, err)
	}
	return nil
}

// openVoteGate watches a rejoining member's configuration and lets it vote
// again once it has seen itself demoted to a non-voter (or removed): from
// then on a vote it grants counts only after the leader promotes it, which
// the leader does once this member holds the log.
func (n *node) openVoteGate(logger interface{ Info(string, ...any) }) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
		ms, _, err := n.members()
		if err != nil || len(ms) == 0 {
			continue // no configuration from the leader yet
		}
		demoted := true
		for _, m := range ms {
			if m.ID == n.localID && m.Voter {
				demoted = false
			}
		}
		if demoted {
			n.voteGated.Store(false)
			logger.Info("rejoining replica demoted by its leader; it may vote again once promoted")
			return
		}
	}
}

// Demote makes broker id a non-voter of the group, keeping it a member:
// the first step of taking back a voter that lost its state. Leader only.
func (g *Group) Demote(id int32) error {
	return g.wait(g.node.raft.DemoteVoter(ServerID(id), 0, membershipTimeout))
}

// Demote is Group.Demote for the machine's group.
func (m *Machine) Demote(id int32) error {
	if err := m.node.raft.DemoteVoter(ServerID(id), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("replication: demote %d in the metadata group: %w", id, err)
	}
	return nil
}

// Promote makes p a voter of the machine's group (a voter that rejoined
// and caught up). The caller checks that it has caught up.
func (m *Machine) Promote(p Peer) error {
	if err := m.node.raft.AddVoter(ServerID(p.ID), raft.ServerAddress(p.Addr), 0, membershipTimeout).Error(); err != nil {
		return fmt.Errorf("replication: promote %d in the metadata group: %w", p.ID, err)
	}
	return nil
}

// LastIndex is the last index of the machine's raft log.
func (m *Machine) LastIndex() uint64 { return m.node.raft.LastIndex() }

// AppliedIndex is the last index applied here, raft's own entries (the
// no-op a new leader commits first) included.
func (m *Machine) AppliedIndex() uint64 { return m.node.raft.AppliedIndex() }

// Acked is what peer acknowledged for the machine's group.
func (m *Machine) Acked(peer Peer) (uint64, time.Time) {
	return m.node.mux.Acked(m.node.groupID, raft.ServerAddress(peer.Addr))
}

// TransferLeadership hands the machine's group leadership to another
// voter raft picks (the most caught-up): a broker about to stop gracefully
// does it so that the metadata group does not wait out an election.
func (m *Machine) TransferLeadership() error { return m.node.raft.LeadershipTransfer().Error() }
