package replication

import (
	"time"

	"github.com/hashicorp/raft"
)

// Faster failure detection.
//
// A hashicorp/raft follower learns that its leader is gone only when a
// timer, re-armed at a random HeartbeatTimeout to twice that, fires and
// finds no contact for a whole HeartbeatTimeout: with the data groups' 2 s
// that is 2-4 s of detection, and with pre-vote the election waits for the
// second survivor too (a voter that still has a leader refuses a pre-vote).
// Measured at 1,000 partitions, that put failover p99 near 8 s.
//
// When the transport sees a control connection to a peer fail (its process
// died: the kernel resets every connection at once), each follower of a
// group that peer leads shortens its heartbeat timeout to the leader lease
// for a while, timed to take effect just as a lease has passed since the
// connection failed. Raft then checks at once and campaigns if it has not
// heard from the leader for a lease, which every survivor does at about the
// same moment, so pre-votes are granted. This is safe for the same reason
// the lease is: a leader that has not reached a quorum for a lease has
// stepped down already. If the leader is alive and its heartbeats still
// arrive (only one connection broke), raft sees the recent contact and
// nothing happens. Once another leader is known (or after suspectHold) the
// configured timeouts come back.

const (
	// suspectMargin is added to the lease so that the check comes after it
	// has passed, whatever the timer resolution.
	suspectMargin = 50 * time.Millisecond
	// suspectHold bounds how long the shorter timeout stays.
	suspectHold = 10 * time.Second
	// suspectPoll is how often the node looks for the new leader.
	suspectPoll = 50 * time.Millisecond
)

// suspectLeader is told that the connection to the raft address addr
// failed at lostAt. It does nothing unless this node follows addr and its
// heartbeat timeout is longer than its lease.
func (n *node) suspectLeader(addr raft.ServerAddress, lostAt time.Time) {
	if n.timing.Heartbeat <= n.timing.Lease || n.raft.State() != raft.Follower {
		return
	}
	if leader, _ := n.raft.LeaderWithID(); leader != addr {
		return
	}
	if !n.suspecting.CompareAndSwap(false, true) {
		return
	}
	go n.runSuspect(addr, lostAt)
}

func (n *node) runSuspect(addr raft.ServerAddress, lostAt time.Time) {
	defer n.suspecting.Store(false)
	t := time.NewTimer(time.Until(lostAt.Add(n.timing.Lease + suspectMargin)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-n.closing:
		return
	}
	if leader, _ := n.raft.LeaderWithID(); leader != addr || n.raft.LastContact().After(lostAt) {
		return // a new leader already, or the old one is still heard from
	}
	orig := n.raft.ReloadableConfig()
	fast := orig
	fast.HeartbeatTimeout, fast.ElectionTimeout = n.timing.Lease, n.timing.Lease
	if err := n.raft.ReloadConfig(fast); err != nil {
		return
	}
	n.suspected.Add(1)
	tick := time.NewTicker(suspectPoll)
	defer tick.Stop()
	deadline := time.Now().Add(suspectHold)
	for time.Now().Before(deadline) {
		select {
		case <-tick.C:
		case <-n.closing:
			return
		}
		if leader, _ := n.raft.LeaderWithID(); leader != "" && leader != addr {
			break
		}
	}
	_ = n.raft.ReloadConfig(orig)
}

// SuspectLeader tells the group that the raft connection to addr (a
// peer's raft address) failed at at: if addr leads the group, this replica
// looks for a lost leader after a lease instead of a heartbeat timeout
// (see suspectLeader). Cheap when it does not apply; safe to call for every
// group on every lost peer.
func (g *Group) SuspectLeader(addr string, at time.Time) {
	g.node.suspectLeader(raft.ServerAddress(addr), at)
}

// SuspectLeader is Group.SuspectLeader for the machine's group.
func (m *Machine) SuspectLeader(addr string, at time.Time) {
	m.node.suspectLeader(raft.ServerAddress(addr), at)
}
