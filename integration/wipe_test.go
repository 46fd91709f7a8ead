package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/varvelog/varve/replication"
)

// allVoters reports whether every member of ms votes and ms names exactly
// the brokers ids.
func allVoters(ms []replication.Member, ids ...int32) bool {
	if len(ms) != len(ids) {
		return false
	}
	for _, m := range ms {
		if !m.Voter || !slices.Contains(ids, m.ID) {
			return false
		}
	}
	return true
}

// TestWipedBrokerRejoins wipes a broker's whole data directory while
// producers write and starts it again under its id. It must not bootstrap
// anything: it rejoins the metadata group and every partition group as a
// non-voter, catches up, and is promoted back to voter everywhere. Every
// acknowledged record is read back exactly once through every broker,
// every broker's Metadata agrees, and the wiped broker's replicas end up
// holding the same batches as the others.
func TestWipedBrokerRejoins(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	const topic = "wiped"
	const parts = 3
	createReplicated(t, c, topic, parts, 3)
	watch := watchMetadata(t, c, topic)
	var acks ackLog
	stop := make(chan struct{})
	wg := produceLoad(t, c, topic, parts, &acks, stop)
	eventually(t, 30*time.Second, "records before the wipe", func() bool {
		acks.mu.Lock()
		defer acks.mu.Unlock()
		return len(acks.recs) > 3000
	})

	wi := c.Index(2)
	c.Wipe(wi)
	t.Log("broker 2 wiped and restarted")
	w := c.Broker(wi)
	eventually(t, 30*time.Second, "broker 2 to rejoin its replicas", func() bool {
		_, n := w.Rejoined()
		return n == parts
	})
	if meta, _ := w.Rejoined(); !meta {
		t.Fatal("the wiped broker did not rejoin the metadata group as a non-voter (it bootstrapped)")
	}
	eventually(t, 60*time.Second, "broker 2 a voter of the metadata group again", func() bool {
		return allVoters(w.MetadataMembers(), 1, 2, 3)
	})
	for p := range int32(parts) {
		eventually(t, 60*time.Second, fmt.Sprintf("broker 2 a voter of %s/%d again", topic, p), func() bool {
			ms, ok := w.ReplicaMembers(topic, p)
			return ok && allVoters(ms, 1, 2, 3)
		})
	}
	// The cluster serves through the wiped broker too.
	for p := range int32(parts) {
		eventually(t, 30*time.Second, "consistent metadata", func() bool {
			var leaders []int32
			for i := range c.Size() {
				reps, leader := replicasOf(t, c, i, topic, p)
				if len(reps) != 3 || leader < 0 {
					return false
				}
				leaders = append(leaders, leader)
			}
			return slices.Min(leaders) == slices.Max(leaders)
		})
	}

	recs := finishLoad(t, stop, wg, &acks)
	checkWatch(t, watch)
	for _, addr := range c.Addrs() {
		checkExactlyOnce(t, c, addr, topic, recs)
	}
	compareReplicaSet(t, c, topic, []int32{0, 1, 2}, []int32{1, 2, 3})
}
