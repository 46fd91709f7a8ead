package integration

import (
	"github.com/varvelog/varve/integration/netfault"
)

// Fault injection on the brokers' Raft links: every Raft connection of a
// Cluster is dialed through a netfault.Network, whose node ids are broker
// ids. These helpers take broker slots; Net gives the whole API
// (one-way links, delay, loss, resets, flapping).

// Seed fixes the cluster's randomness: the fault network's and Kill's
// crash images'. Without it the seed is the start time (logged by
// LogFaults).
func Seed(seed uint64) Option { return func(c *Cluster) { c.seed = seed } }

// Net is the fault network under the cluster's Raft connections.
func (c *Cluster) Net() *netfault.Network { return c.net }

// LogFaults logs the network's seed and every fault change through the
// test's log, so a failing schedule can be replayed.
func (c *Cluster) LogFaults() {
	c.t.Logf("fault network seed %d", c.net.Seed())
	c.net.SetLogf(c.t.Logf)
}

// ID is broker slot i's id.
func (c *Cluster) ID(i int) int32 { return c.nodes[i].id }

// IDs maps broker slots to ids.
func (c *Cluster) IDs(slots ...int) []int32 {
	ids := make([]int32, len(slots))
	for k, i := range slots {
		ids[k] = c.nodes[i].id
	}
	return ids
}

// Partition splits the brokers, given by slot, into sides that cannot
// reach each other over Raft (blackholed both ways; Kafka clients still
// reach every broker).
func (c *Cluster) Partition(sides ...[]int) {
	var ids [][]int32
	for _, s := range sides {
		ids = append(ids, c.IDs(s...))
	}
	c.net.Partition(ids...)
}

// Bridge splits left from right, while slot bridge still reaches both.
func (c *Cluster) Bridge(bridge int, left, right []int) {
	c.net.Bridge(c.ID(bridge), c.IDs(left...), c.IDs(right...))
}

// SetLink sets the fault on the Raft link from slot from to slot to.
func (c *Cluster) SetLink(from, to int, f netfault.Fault) { c.net.Set(c.ID(from), c.ID(to), f) }

// Heal clears every link fault and isolation.
func (c *Cluster) Heal() { c.net.Heal() }
