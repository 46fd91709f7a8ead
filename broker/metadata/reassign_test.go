package metadata

import (
	"slices"
	"testing"
)

// TestReassignLifecycle walks one partition from [1 2] to [3 2] the way a
// leader publishes it: learner added, promoted, old replica removed; the
// reassignment ends, and Replicas takes the target's order.
func TestReassignLifecycle(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "t", ID: tid(1), Partitions: 1, Assignment: [][]int32{{1, 2}}})
	h.ok(SetLeader{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 5})
	part := func() Partition { return h.topic("t").Partitions[0] }

	if res := h.ok(Reassign{Topic: tid(1), Partition: 0, Target: []int32{3, 2}}); !res.Changed {
		t.Fatal("Reassign not Changed")
	}
	p := part()
	if !slices.Equal(p.Target, []int32{3, 2}) || !slices.Equal(p.Original, []int32{1, 2}) || !slices.Equal(p.Replicas, []int32{1, 2}) {
		t.Fatalf("after Reassign: %+v", p)
	}
	if !slices.Equal(p.Adding(), []int32{3}) || !slices.Equal(p.Removing(), []int32{1}) || !slices.Equal(p.Members(), []int32{1, 2, 3}) {
		t.Fatalf("adding %v removing %v members %v", p.Adding(), p.Removing(), p.Members())
	}

	// A deposed leader's configuration is ignored.
	if res := h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 2, Epoch: 5, Voters: []int32{2}}); res.Changed {
		t.Fatal("SetReplicas from a broker that does not lead was applied")
	}
	if res := h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 4, Voters: []int32{1}}); res.Changed {
		t.Fatal("SetReplicas at an old epoch was applied")
	}

	h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 5, Voters: []int32{1, 2}, Learners: []int32{3}})
	if p := part(); !slices.Equal(p.Replicas, []int32{3, 2, 1}) || !slices.Equal(p.Learners, []int32{3}) || p.Target == nil {
		t.Fatalf("learner added: %+v", p)
	}
	h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 5, Voters: []int32{1, 2, 3}})
	if p := part(); p.Learners != nil || p.Target == nil {
		t.Fatalf("learner promoted: %+v", p)
	}
	// Leadership moves to the new replica before the old one is removed:
	// it may publish itself although the metadata's Replicas had it only
	// as a learner a moment ago.
	h.ok(SetLeader{Topic: tid(1), Partition: 0, Leader: 3, Epoch: 6})
	h.ok(SetISR{Topic: tid(1), Partition: 0, Leader: 3, Epoch: 6, ISR: []int32{1, 2, 3}})
	h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 3, Epoch: 6, Voters: []int32{3, 2}})
	p = part()
	if !slices.Equal(p.Replicas, []int32{3, 2}) || p.Target != nil || p.Original != nil || p.Learners != nil {
		t.Fatalf("reassignment not settled: %+v", p)
	}
	if !slices.Equal(p.ISR, []int32{2, 3}) {
		t.Fatalf("ISR %v kept a removed replica", p.ISR)
	}
	h.fails(Reassign{Topic: tid(1), Partition: 0}, ErrNoReassignment)
}

// TestReassignCancelAndErrors: a cancellation targets the original
// replicas; a target equal to the replicas settles at once; bad targets
// and unknown partitions are refused.
func TestReassignCancelAndErrors(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "t", ID: tid(1), Partitions: 2, Assignment: [][]int32{{1, 2}, {2, 3}}})
	h.ok(Reassign{Topic: tid(1), Partition: 0, Target: []int32{3}})
	h.ok(Reassign{Topic: tid(1), Partition: 0, Target: []int32{2, 3}}) // replaces the target, keeps the original
	if p := h.topic("t").Partitions[0]; !slices.Equal(p.Target, []int32{2, 3}) || !slices.Equal(p.Original, []int32{1, 2}) {
		t.Fatalf("replaced target: %+v", p)
	}
	h.ok(SetLeader{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 1})
	h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 1, Voters: []int32{1, 2}, Learners: []int32{3}})
	h.ok(Reassign{Topic: tid(1), Partition: 0}) // cancel
	if p := h.topic("t").Partitions[0]; !slices.Equal(p.Target, []int32{1, 2}) || !slices.Equal(p.Replicas, []int32{2, 3, 1}) {
		t.Fatalf("cancel: %+v, want target [1 2] (the original) while broker 3 is still a member", p)
	}
	h.ok(SetReplicas{Topic: tid(1), Partition: 0, Leader: 1, Epoch: 1, Voters: []int32{1, 2}})
	if p := h.topic("t").Partitions[0]; !slices.Equal(p.Replicas, []int32{1, 2}) || p.Target != nil {
		t.Fatalf("cancelled reassignment did not settle: %+v", p)
	}

	// Reordering alone needs no move: it settles at once.
	h.ok(Reassign{Topic: tid(1), Partition: 1, Target: []int32{3, 2}})
	if p := h.topic("t").Partitions[1]; !slices.Equal(p.Replicas, []int32{3, 2}) || p.Target != nil {
		t.Fatalf("reorder: %+v", p)
	}

	h.fails(Reassign{Topic: tid(1), Partition: 1, Target: []int32{3, 7}}, ErrInvalidAssignment)
	h.fails(Reassign{Topic: tid(1), Partition: 1, Target: []int32{3, 3}}, ErrInvalidAssignment)
	h.fails(Reassign{Topic: tid(1), Partition: 1, Target: []int32{}}, ErrInvalidAssignment)
	h.fails(Reassign{Topic: tid(1), Partition: 2, Target: []int32{1}}, ErrUnknownPartition)
	h.fails(Reassign{Topic: tid(9), Partition: 0, Target: []int32{1}}, ErrUnknownTopic)
	// A configuration naming an unregistered broker is ignored.
	h.ok(SetLeader{Topic: tid(1), Partition: 1, Leader: 3, Epoch: 1})
	if res := h.ok(SetReplicas{Topic: tid(1), Partition: 1, Leader: 3, Epoch: 1, Voters: []int32{3, 8}}); res.Changed {
		t.Fatal("SetReplicas naming broker 8 was applied")
	}
}

// TestUnregisterBroker: refused while the broker holds or is receiving a
// replica; afterwards its id is retired and cannot register again, and the
// retirement survives a snapshot.
func TestUnregisterBroker(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "t", ID: tid(1), Partitions: 1, Assignment: [][]int32{{1, 2}}})
	h.fails(UnregisterBroker{ID: 2}, ErrBrokerInUse)
	h.ok(Reassign{Topic: tid(1), Partition: 0, Target: []int32{1, 3}})
	h.fails(UnregisterBroker{ID: 3}, ErrBrokerInUse) // a target counts
	h.fails(UnregisterBroker{ID: 9}, ErrUnknownBroker)
	h.ok(Reassign{Topic: tid(1), Partition: 0}) // cancel: back on [1 2], settled
	if res := h.ok(UnregisterBroker{ID: 3}); !res.Changed {
		t.Fatal("UnregisterBroker not Changed")
	}
	st := h.f.State()
	if _, ok := st.Brokers[3]; ok || !slices.Equal(st.Retired, []int32{3}) {
		t.Fatalf("brokers %v retired %v", st.BrokerIDs(), st.Retired)
	}
	h.fails(RegisterBroker{Broker: Broker{ID: 3, RaftAddr: "c:1"}}, ErrBrokerRetired)
	h.fails(Reassign{Topic: tid(1), Partition: 0, Target: []int32{1, 3}}, ErrUnknownBroker)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f2 := NewFSM()
	if err := f2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := f2.State().Retired; !slices.Equal(got, []int32{3}) {
		t.Fatalf("restored retired %v", got)
	}
}
