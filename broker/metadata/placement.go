package metadata

import "slices"

// brokerLoad is what automatic placement balances: per registered broker,
// the replicas and preferred leaderships (Replicas[0]) already placed.
type brokerLoad struct {
	id       int32
	leaders  int
	replicas int
}

// currentLoad counts the load of every registered broker, sorted by id. The
// counts are sums, so the order topics are visited in does not matter.
func currentLoad(s *State) []brokerLoad {
	ids := s.BrokerIDs()
	load := make([]brokerLoad, len(ids))
	for i, id := range ids {
		load[i].id = id
	}
	find := func(id int32) *brokerLoad {
		i, ok := slices.BinarySearch(ids, id)
		if !ok {
			return nil // cannot happen: every replica is a registered broker
		}
		return &load[i]
	}
	for _, t := range s.Topics {
		for _, p := range t.Partitions {
			for j, id := range p.Replicas {
				if l := find(id); l != nil {
					l.replicas++
					if j == 0 {
						l.leaders++
					}
				}
			}
		}
	}
	return load
}

// place chooses the replicas of n new partitions of replication factor rf
// (1 <= rf <= len(load)), updating load as it goes, like Kafka's placement:
// for each partition the preferred leader is the broker with the fewest
// preferred leaderships (ties: fewest replicas, then lowest id), and the
// followers are, one by one, the brokers not yet chosen with the fewest
// replicas (ties: lowest id). It depends only on its arguments.
func place(load []brokerLoad, n, rf int) [][]int32 {
	out := make([][]int32, n)
	chosen := make([]bool, len(load))
	for p := range out {
		clear(chosen)
		best := 0
		for i := 1; i < len(load); i++ {
			a, b := &load[i], &load[best]
			if a.leaders < b.leaders || a.leaders == b.leaders && a.replicas < b.replicas {
				best = i // load is sorted by id, so a strict < keeps the lowest id on ties
			}
		}
		replicas := make([]int32, 0, rf)
		replicas = append(replicas, load[best].id)
		chosen[best] = true
		load[best].leaders++
		load[best].replicas++
		for len(replicas) < rf {
			best = -1
			for i := range load {
				if !chosen[i] && (best < 0 || load[i].replicas < load[best].replicas) {
					best = i
				}
			}
			replicas = append(replicas, load[best].id)
			chosen[best] = true
			load[best].replicas++
		}
		out[p] = replicas
	}
	return out
}
