package integration

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reassignAndWait moves every partition of topic whose replicas pass
// change, as change rewrites them, and waits until broker slot via's
// Metadata shows every partition on its target.
func reassignAndWait(t *testing.T, c *Cluster, via int, topic string, partitions int32, change func([]int32) []int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.BrokerAddr(via)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := testContext(t, 2*time.Minute)
	targets := map[int32][]int32{}
	req := kadm.AlterPartitionAssignmentsReq{}
	for p := range partitions {
		reps, _ := replicasOf(t, c, via, topic, p)
		if tgt := change(slices.Clone(reps)); tgt != nil {
			targets[p] = tgt
			req.Assign(topic, p, tgt)
		}
	}
	if len(targets) == 0 {
		return
	}
	rs, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for p := range targets {
		if r := rs[topic][p]; r.Err != nil {
			t.Fatalf("reassign %s/%d to %v: %v", topic, p, targets[p], r.Err)
		}
	}
	eventually(t, 2*time.Minute, fmt.Sprintf("%s on %v", topic, targets), func() bool {
		for p, tgt := range targets {
			got, leader := replicasOf(t, c, via, topic, p)
			if !slices.Equal(got, tgt) || !slices.Contains(tgt, leader) {
				return false
			}
		}
		return true
	})
}

// unregister sends UnregisterBroker for id through broker slot via.
func unregister(t *testing.T, c *Cluster, via int, id int32) error {
	t.Helper()
	req := kmsg.NewPtrUnregisterBrokerRequest()
	req.BrokerID = id
	resp := rawRequest(t, c.BrokerAddr(via), req).(*kmsg.UnregisterBrokerResponse)
	return kerr.ErrorForCode(resp.ErrorCode)
}

// TestDecommission removes a dead broker and then a live one from a
// four-broker cluster under load: each one's replicas are moved off it,
// UnregisterBroker refuses while any remain and succeeds after; the dead
// metadata voter's seat goes to the learner that joined later; Metadata
// on every surviving broker then lists the survivors only, and every
// acknowledged record is read back exactly once.
func TestDecommission(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	c.AddBroker()
	const topic = "shrink"
	const parts = 4
	createReplicated(t, c, topic, parts, 3)
	watch := watchMetadata(t, c, topic)
	var acks ackLog
	stop := make(chan struct{})
	wg := produceLoad(t, c, topic, parts, &acks, stop)
	time.Sleep(500 * time.Millisecond)

	// The dead one: broker 3, a voter of the metadata group.
	dead := c.Index(3)
	if err := unregister(t, c, 0, 3); !errors.Is(err, kerr.InvalidRequest) {
		t.Fatalf("unregistering broker 3 while it holds replicas: %v, want INVALID_REQUEST", err)
	}
	c.Kill(dead)
	reassignAndWait(t, c, 0, topic, parts, func(reps []int32) []int32 {
		i := slices.Index(reps, 3)
		if i < 0 {
			return nil
		}
		for _, id := range []int32{1, 2, 4} {
			if !slices.Contains(reps, id) {
				reps[i] = id
				return reps
			}
		}
		t.Fatalf("no broker to replace 3 in %v", reps)
		return nil
	})
	if err := unregister(t, c, 0, 3); err != nil {
		t.Fatalf("unregister dead broker 3: %v", err)
	}
	if err := unregister(t, c, 0, 3); !errors.Is(err, kerr.BrokerIDNotRegistered) {
		t.Fatalf("unregistering broker 3 again: %v, want BROKER_ID_NOT_REGISTERED", err)
	}
	// Broker 3's seat in the metadata group goes to the learner that
	// joined later, so the group keeps three voters and can still lose one.
	eventually(t, 30*time.Second, "broker 4 a voter of the metadata group, in broker 3's place", func() bool {
		voters := []int32{}
		for _, m := range c.Broker(0).MetadataMembers() {
			if m.Voter {
				voters = append(voters, m.ID)
			}
		}
		slices.Sort(voters)
		return slices.Equal(voters, []int32{1, 2, 4})
	})

	// The live one: broker 4, which joined as a learner; RF drops to 2.
	live := c.Index(4)
	reassignAndWait(t, c, 0, topic, parts, func(reps []int32) []int32 {
		if !slices.Contains(reps, 4) {
			return nil
		}
		return slices.DeleteFunc(reps, func(id int32) bool { return id == 4 })
	})
	if err := unregister(t, c, 1, 4); err != nil {
		t.Fatalf("unregister live broker 4: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // it must not come back by registering again
	for _, i := range []int{0, 1, live} {
		eventually(t, 10*time.Second, "brokers 1 and 2 only", func() bool {
			return slices.Equal(c.Broker(i).RegisteredBrokers(), []int32{1, 2})
		})
	}
	c.Stop(live)

	recs := finishLoad(t, stop, wg, &acks)
	checkWatch(t, watch)
	for _, i := range []int{0, 1} {
		checkExactlyOnce(t, c, c.BrokerAddr(i), topic, recs)
	}
	compareReplicaSet(t, c, topic, []int32{0, 1, 2, 3}, []int32{1, 2})
}
