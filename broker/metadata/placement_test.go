package metadata

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// loadOf counts preferred leaderships and replicas per broker.
func loadOf(s *State) (leaders, replicas map[int32]int) {
	leaders, replicas = map[int32]int{}, map[int32]int{}
	for _, id := range s.BrokerIDs() {
		leaders[id], replicas[id] = 0, 0
	}
	for _, tp := range s.Topics {
		for _, p := range tp.Partitions {
			leaders[p.Replicas[0]]++
			for _, r := range p.Replicas {
				replicas[r]++
			}
		}
	}
	return leaders, replicas
}

func spread(m map[int32]int) int {
	v := slices.Collect(maps.Values(m))
	return slices.Max(v) - slices.Min(v)
}

// assertBalanced checks that leaderships and replicas differ by at most one
// between brokers.
func assertBalanced(t *testing.T, s *State) {
	t.Helper()
	leaders, replicas := loadOf(s)
	if spread(leaders) > 1 || spread(replicas) > 1 {
		t.Fatalf("unbalanced: leaders %v replicas %v", leaders, replicas)
	}
}

func TestPlacementTwelvePartitionsRF3(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "t", ID: tid(1), Partitions: 12, ReplicationFactor: 3})
	leaders, replicas := loadOf(h.f.State())
	for id := int32(1); id <= 3; id++ {
		if leaders[id] != 4 || replicas[id] != 12 {
			t.Fatalf("broker %d: %d preferred leaderships, %d replicas; want 4 and 12 (all: %v %v)", id, leaders[id], replicas[id], leaders, replicas)
		}
	}
	for i, p := range h.topic("t").Partitions {
		if len(p.Replicas) != 3 || len(slices.Compact(slices.Sorted(slices.Values(p.Replicas)))) != 3 {
			t.Fatalf("partition %d replicas %v", i, p.Replicas)
		}
	}
}

func TestPlacementSpreadsLeadersAcrossTopics(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "a", ID: tid(1), Partitions: 1, ReplicationFactor: 3})
	h.ok(CreateTopic{Name: "b", ID: tid(2), Partitions: 1, ReplicationFactor: 3})
	la, lb := h.topic("a").Partitions[0].Replicas[0], h.topic("b").Partitions[0].Replicas[0]
	if la == lb {
		t.Fatalf("two single-partition topics share preferred leader %d", la)
	}
	h.ok(CreateTopic{Name: "c", ID: tid(3), Partitions: 1, ReplicationFactor: 1})
	lc := h.topic("c").Partitions[0].Replicas[0]
	if lc == la || lc == lb {
		t.Fatalf("third topic's leader %d repeats %d or %d", lc, la, lb)
	}
}

func TestPlacementAvoidsLoadedBrokers(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "hot", ID: tid(1), Partitions: 4, Assignment: [][]int32{{1, 2}, {1, 2}, {1, 2}, {1, 2}}})
	h.ok(CreateTopic{Name: "new", ID: tid(2), Partitions: 2, ReplicationFactor: 1})
	for _, p := range h.topic("new").Partitions {
		if p.Replicas[0] == 1 {
			t.Fatalf("new partition led by broker 1, which already leads 4: %+v", h.topic("new").Partitions)
		}
	}
	// Broker 3 has no replicas at all: it gets the first new partition.
	if got := h.topic("new").Partitions[0].Replicas[0]; got != 3 {
		t.Fatalf("first new leader = %d, want 3", got)
	}
}

func TestPlacementBalanced(t *testing.T) {
	for brokers := 1; brokers <= 7; brokers++ {
		for rf := 1; rf <= brokers; rf++ {
			for _, parts := range []int32{1, 5, 12, 31} {
				t.Run(fmt.Sprintf("brokers=%d/rf=%d/partitions=%d", brokers, rf, parts), func(t *testing.T) {
					h := newHarness(t, brokers)
					h.ok(CreateTopic{Name: "a", ID: tid(1), Partitions: parts, ReplicationFactor: int16(rf)})
					assertBalanced(t, h.f.State())
					h.ok(CreateTopic{Name: "b", ID: tid(2), Partitions: parts + 1, ReplicationFactor: int16(rf)})
					assertBalanced(t, h.f.State())
					h.ok(CreatePartitions{Name: "a", Total: parts + 3})
					assertBalanced(t, h.f.State())
				})
			}
		}
	}
}

func TestPlacementDeterministic(t *testing.T) {
	load := []brokerLoad{{id: 2, leaders: 1, replicas: 3}, {id: 5}, {id: 9, replicas: 1}}
	a := place(slices.Clone(load), 7, 2)
	b := place(slices.Clone(load), 7, 2)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("same input, different placements: %v %v", a, b)
	}
	want := "[[5 9] [9 5] [5 2] [9 5] [2 5] [9 2] [5 9]]" // worked by hand from the rules
	if got := fmt.Sprint(a); got != want {
		t.Fatalf("place = %s, want %s", got, want)
	}
}
