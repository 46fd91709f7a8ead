package replication

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition"
)

// suspectCluster is one group on three brokers whose transports tell the
// group of lost peers, as the broker wires them.
type suspectCluster struct {
	mu      sync.Mutex
	brokers []*testBroker
	groups  []*Group
}

func newSuspectCluster(t *testing.T) *suspectCluster {
	t.Helper()
	sc := &suspectCluster{}
	var peers []Peer
	for i := range 3 {
		idx := i
		b := newBrokerLost(t, int32(i+1), func(addr raft.ServerAddress, at time.Time) {
			sc.mu.Lock()
			g := sc.groups[idx]
			sc.mu.Unlock()
			if g != nil {
				g.SuspectLeader(string(addr), at)
			}
		})
		sc.brokers = append(sc.brokers, b)
		peers = append(peers, Peer{ID: b.id, Addr: b.addr})
	}
	gid := "4f1d3c2a-0000-4000-8000-00000000005a-0"
	groups := make([]*Group, 3)
	for i, b := range sc.brokers {
		g, err := OpenGroup(GroupConfig{
			ID: gid, LocalID: b.id, Peers: peers, EpochBase: testEpochBase,
			RaftDir: "/data/raft/" + gid, Log: partition.Options{Dir: "/data/topic-0", FS: b.fs},
			Mux: b.mux, Timing: testTiming, Logger: testLogger().With("broker", b.id),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Close() })
		groups[i] = g
	}
	sc.mu.Lock()
	sc.groups = groups
	sc.mu.Unlock()
	return sc
}

// readyLeader waits for a ready leader among the open groups.
func (sc *suspectCluster) readyLeader(t *testing.T, timeout time.Duration, not int) int {
	t.Helper()
	leader := -1
	eventually(t, timeout, func() error {
		for i, g := range sc.groups {
			if i == not {
				continue
			}
			if _, err := g.Ready(); err == nil {
				leader = i
				return nil
			}
		}
		return errors.New("no ready leader")
	})
	return leader
}

// slowDetection gives every member a heartbeat timeout so long that only
// the lost-peer path can elect a new leader within a test's patience.
func (sc *suspectCluster) slowDetection(t *testing.T) {
	t.Helper()
	for _, g := range sc.groups {
		rc := g.node.raft.ReloadableConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = time.Minute, time.Minute
		if err := g.node.raft.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSuspectLeaderOnLostPeer: with a one-minute heartbeat timeout, a
// leader whose broker dies (its raft connections reset) is replaced within
// seconds because the survivors' transports report the lost peer, and the
// survivors' configured timeouts come back afterwards.
func TestSuspectLeaderOnLostPeer(t *testing.T) {
	sc := newSuspectCluster(t)
	li := sc.readyLeader(t, 10*time.Second, -1)
	sc.slowDetection(t)
	// Heartbeats must keep flowing under the new timeouts before the kill.
	time.Sleep(2 * testTiming.Lease)

	killed := time.Now()
	if err := sc.brokers[li].mux.Close(); err != nil { // every raft connection of the leader closes
		t.Fatal(err)
	}
	ni := sc.readyLeader(t, 15*time.Second, li)
	t.Logf("new leader broker %d after %v", sc.brokers[ni].id, time.Since(killed))
	var suspected int64
	for i, g := range sc.groups {
		if i != li {
			suspected += g.node.suspected.Load()
		}
	}
	if suspected == 0 {
		t.Fatal("no survivor shortened its heartbeat timeout")
	}
	// Once the new leader is known, the minute-long timeouts are back.
	for i, g := range sc.groups {
		if i == li {
			continue
		}
		eventually(t, 5*time.Second, func() error {
			if rc := g.node.raft.ReloadableConfig(); rc.HeartbeatTimeout != time.Minute || rc.ElectionTimeout != time.Minute {
				return fmt.Errorf("broker %d: timeouts %v / %v, want the configured minute", sc.brokers[i].id, rc.HeartbeatTimeout, rc.ElectionTimeout)
			}
			return nil
		})
	}
}

// TestSuspectFollowerLostChangesNothing: losing a follower's broker touches
// neither the leader (it is not following anyone) nor the other follower
// (it follows someone else), so no timeout is shortened and the term holds.
func TestSuspectFollowerLostChangesNothing(t *testing.T) {
	sc := newSuspectCluster(t)
	li := sc.readyLeader(t, 10*time.Second, -1)
	fi := (li + 1) % 3
	term := sc.groups[li].node.raft.CurrentTerm()
	if err := sc.brokers[fi].mux.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(testTiming.Lease + suspectMargin + 4*suspectPoll)
	for i, g := range sc.groups {
		if i == fi {
			continue
		}
		if n := g.node.suspected.Load(); n != 0 {
			t.Fatalf("broker %d shortened its heartbeat timeout %d times after losing a follower", sc.brokers[i].id, n)
		}
	}
	if _, err := sc.groups[li].Ready(); err != nil {
		t.Fatalf("leader lost readiness after a follower died: %v", err)
	}
	if got := sc.groups[li].node.raft.CurrentTerm(); got != term {
		t.Fatalf("term moved from %d to %d", term, got)
	}
}
