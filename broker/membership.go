package broker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/replication"
)

// Moving replicas. An operator (AlterPartitionReassignments) records a
// target replica set in the metadata; the partition's leader then moves its
// Raft group toward it, one configuration change at a time, as raft's
// single-server changes require:
//
//  1. a target broker that is not a member joins as a learner (a non-voter:
//     it receives the log, through a snapshot if it is far behind, but does
//     not count toward commits, so a slow newcomer cannot stall produce);
//  2. a learner of the target is promoted once it has acknowledged close to
//     the leader's last index (learnerSlack) within the last few seconds;
//  3. a member the target drops is removed, the leader itself last: it
//     first hands leadership to a caught-up voter of the target, and the
//     new leader removes it.
//
// After each committed change the leader publishes the group's
// configuration (SetReplicas); the metadata ends the reassignment when the
// group is the target. Every broker's reconciler opens a replica for each
// partition it is a member or target of and removes those it is neither.
// A leader that fails mid-way leaves a configuration its successor reads
// from its own raft log and continues from.

// learnerSlack is how many entries a learner may trail the leader's last
// index and still count as caught up: produce keeps a few entries in
// flight per group, so "equal" would rarely hold under load.
const learnerSlack = 32

// learnerFresh is how recent the learner's acknowledgement must be.
const learnerFresh = 3 * time.Second

// moveReplicas runs one pass over the partitions this broker leads.
func (b *Broker) moveReplicas() {
	for _, r := range b.publishedLeading() {
		if b.ctx.Err() != nil {
			return
		}
		if err := b.moveReplica(r); err != nil && !errors.Is(err, errNothingToMove) {
			b.logger.Warn("replica move step failed", "topic", r.topic, "partition", r.index, "err", err)
		}
	}
}

var errNothingToMove = errors.New("broker: nothing to move")

// moveReplica takes at most one step for one partition this broker leads
// and publishes the group's configuration when the metadata lags it.
func (b *Broker) moveReplica(r *raftReplica) error {
	epoch, err := r.g.Ready()
	if err != nil || epoch != r.part.LeaderEpoch {
		return errNothingToMove // not (yet) the published leader
	}
	members, _, err := r.g.Members()
	if err != nil {
		return err
	}
	want := r.part.Target
	if want == nil {
		want = r.part.Replicas
	}
	has := func(id int32) (replication.Member, bool) {
		for _, m := range members {
			if m.ID == id {
				return m, true
			}
		}
		return replication.Member{}, false
	}
	step, err := b.nextMove(r, want, members, has)
	if err != nil {
		return err
	}
	if step != "" {
		b.logger.Info("moving replicas", "topic", r.topic, "partition", r.index, "step", step, "target", want)
		if members, _, err = r.g.Members(); err != nil {
			return err
		}
	}
	return b.publishMembers(r, epoch, members)
}

// nextMove applies the first step that is due, if any, and names it.
func (b *Broker) nextMove(r *raftReplica, want []int32, members []replication.Member, has func(int32) (replication.Member, bool)) (string, error) {
	self := b.cfg.NodeID
	for _, id := range want {
		if _, ok := has(id); !ok {
			p, err := b.peer(id)
			if err != nil {
				return "", err
			}
			return "add learner " + itoa(id), r.g.AddLearner(p)
		}
	}
	for _, id := range want {
		if m, _ := has(id); !m.Voter && b.caughtUp(r.g, id) {
			p, err := b.peer(id)
			if err != nil {
				return "", err
			}
			return "promote " + itoa(id), r.g.Promote(p)
		}
	}
	for _, m := range members {
		if slices.Contains(want, m.ID) || m.ID == self {
			continue
		}
		return "remove " + itoa(m.ID), r.g.RemoveMember(m.ID)
	}
	if !slices.Contains(want, self) {
		// Everything else is in place: hand leadership to a caught-up
		// voter of the target, which then removes this broker.
		for _, id := range want {
			if m, _ := has(id); m.Voter && b.caughtUp(r.g, id) {
				p, err := b.peer(id)
				if err != nil {
					return "", err
				}
				return "hand leadership to " + itoa(id), r.g.TransferLeadershipTo(p)
			}
		}
	}
	return "", nil
}

// publishMembers proposes SetReplicas when the metadata's view of the
// group differs from its configuration.
func (b *Broker) publishMembers(r *raftReplica, epoch int32, members []replication.Member) error {
	var voters, learners []int32
	for _, m := range members {
		if m.Voter {
			voters = append(voters, m.ID)
		} else {
			learners = append(learners, m.ID)
		}
	}
	if sameSet(r.part.Replicas, append(slices.Clone(voters), learners...)) && sameSet(r.part.Learners, learners) {
		return nil
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	_, err := b.propose(ctx, metadata.SetReplicas{Topic: r.topicID, Partition: r.index, Leader: b.cfg.NodeID, Epoch: epoch, Voters: voters, Learners: learners})
	return err
}

// caughtUp reports whether broker id has acknowledged close to the
// group's last index recently.
func (b *Broker) caughtUp(g *replication.Group, id int32) bool {
	p, err := b.peer(id)
	if err != nil {
		return false
	}
	idx, at := g.Acked(p)
	return idx+learnerSlack >= g.LastIndex() && time.Since(at) < learnerFresh
}

// peer is broker id as a raft peer.
func (b *Broker) peer(id int32) (replication.Peer, error) {
	addr, ok := b.raftAddr(id)
	if !ok {
		return replication.Peer{}, errors.New("broker: broker " + itoa(id) + " has no raft address")
	}
	return replication.Peer{ID: id, Addr: addr}, nil
}

func itoa(id int32) string { return strconv.Itoa(int(id)) }

// sameSet reports whether a and b hold the same brokers, in any order.
func sameSet(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}
