package metadata

import (
	"testing"
)

// levelBroker is testBroker running feature level 3.
func levelBroker(id int32) Broker {
	b := testBroker(id)
	b.MaxFeatureLevel = 3
	return b
}

func TestFenceBroker(t *testing.T) {
	h := newHarness(t, 0)
	for id := int32(1); id <= 3; id++ {
		h.ok(RegisterBroker{Broker: levelBroker(id)})
	}
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 2, Assignment: [][]int32{{2, 1, 3}, {1, 2, 3}}})
	h.ok(SetLeader{tid(1), 0, 2, 5})
	h.ok(SetLeader{tid(1), 1, 2, 7})

	// Before the cluster is at level 3 nobody may fence: a level-2 build
	// could not decode the command.
	h.fails(FenceBroker{ID: 2, Fenced: true}, ErrFeatureLevel)
	h.ok(SetFeatureLevel{Level: 3})

	h.fails(FenceBroker{ID: 9, Fenced: true}, ErrUnknownBroker)
	if res := h.ok(FenceBroker{ID: 2, Fenced: true}); !res.Changed {
		t.Fatal("fencing broker 2 did not change the state")
	}
	if res := h.ok(FenceBroker{ID: 2, Fenced: true}); res.Changed {
		t.Fatal("fencing a fenced broker changed the state")
	}
	st := h.f.State()
	if !st.IsFenced(2) || st.IsFenced(1) || st.IsFenced(9) {
		t.Fatalf("fenced: 1 %v, 2 %v, 9 %v; want only 2", st.IsFenced(1), st.IsFenced(2), st.IsFenced(9))
	}
	orders := st.Topics["orders"]
	for i := range orders.Partitions {
		p := &orders.Partitions[i]
		if got := st.ShownLeader(p); got != -1 {
			t.Fatalf("partition %d led by fenced broker 2 shows leader %d, want -1", i, got)
		}
		if p.Leader != 2 {
			t.Fatalf("partition %d: fencing changed the published leader to %d", i, p.Leader)
		}
	}

	// A new leader on a live broker shows at once; the fence is about
	// the broker, not the partition.
	h.ok(SetLeader{tid(1), 1, 3, 8})
	st = h.f.State()
	if got := st.ShownLeader(&st.Topics["orders"].Partitions[1]); got != 3 {
		t.Fatalf("partition 1 newly led by broker 3 shows leader %d", got)
	}

	// The fence survives a snapshot, and a restored state shows the same.
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f2 := NewFSM()
	if err := f2.Restore(snap); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !f2.State().IsFenced(2) {
		t.Fatal("the fence was lost in a snapshot round trip")
	}

	// Only FenceBroker fences: a registration that claims it is refused;
	// registering again (a restart that changed the registration) clears
	// it, as does FenceBroker with Fenced false.
	claim := levelBroker(1)
	claim.Fenced = true
	h.fails(RegisterBroker{Broker: claim}, ErrInvalidCommand)
	h.ok(FenceBroker{ID: 2, Fenced: false})
	st = h.f.State()
	if st.IsFenced(2) || st.ShownLeader(&st.Topics["orders"].Partitions[0]) != 2 {
		t.Fatal("unfencing broker 2 did not show it as leader again")
	}
	h.ok(FenceBroker{ID: 2, Fenced: true})
	moved := levelBroker(2)
	moved.RaftAddr = "127.0.0.1:9193"
	h.ok(RegisterBroker{Broker: moved})
	if h.f.State().IsFenced(2) {
		t.Fatal("re-registering did not clear the fence")
	}
}

// A state with a fenced broker below level 3 is not one any sequence of
// commands produces: Restore refuses it.
func TestRestoreRefusesFenceBelowLevel3(t *testing.T) {
	h := newHarness(t, 2)
	s := h.f.State().clone()
	b := s.Brokers[2]
	b.Fenced = true
	s.Brokers = map[int32]Broker{1: s.Brokers[1], 2: b}
	snap, err := encodeSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewFSM().Restore(snap); err == nil {
		t.Fatal("Restore accepted a fenced broker at feature level 1")
	}
}
