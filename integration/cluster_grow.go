package integration

import (
	"fmt"
	"path"
	"slices"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication"
)

// AddBroker starts one more broker, with the next id, on a fresh data
// directory and new addresses, as an operator adds a machine: its Peers
// are the cluster's metadata voters, which do not include it, so it joins
// the running cluster as a learner of the metadata group. It returns the
// new broker's slot once every running broker has its registration.
func (c *Cluster) AddBroker() int {
	c.t.Helper()
	if len(c.base.Peers) == 0 {
		c.t.Fatal("AddBroker needs a cluster of at least two brokers (one without peers is a cluster of one)")
	}
	var maxID int32
	for _, n := range c.nodes {
		maxID = max(maxID, n.id)
	}
	n := &node{id: maxID + 1}
	if c.mem {
		n.mem = vfs.NewMem()
		n.fs = n.mem
		n.dataDir = fmt.Sprintf("/broker-%d", n.id)
	} else {
		n.fs = vfs.OS{}
		n.dataDir = path.Join(c.t.TempDir(), fmt.Sprintf("broker-%d", n.id))
	}
	n.kafkaLn, n.raftLn = listen(c.t), listen(c.t)
	n.kafkaAddr, n.raftAddr = n.kafkaLn.Addr().String(), n.raftLn.Addr().String()
	if slices.ContainsFunc(c.base.Peers, func(p replication.Peer) bool { return p.ID == n.id }) {
		c.t.Fatalf("broker id %d is already a metadata voter", n.id)
	}
	c.addrMu.Lock()
	c.nodes = append(c.nodes, n)
	c.addrMu.Unlock()
	i := len(c.nodes) - 1
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
	c.waitRegistered()
	return i
}

// Wipe stops broker i gracefully, deletes its whole data directory (as an
// operator replacing a failed disk would find it) and starts it again
// under the same id and addresses.
func (c *Cluster) Wipe(i int) {
	c.t.Helper()
	c.stop(i)
	n := c.nodes[i]
	if n.mem != nil {
		n.mem = vfs.NewMem()
		n.fs = n.mem
	} else if err := vfs.RemoveAll(n.fs, n.dataDir); err != nil {
		c.t.Fatalf("wipe broker %d: %v", n.id, err)
	}
	c.Start(i)
}

// SetBrokerConfig changes broker slot i's config, on top of the cluster's,
// from its next start on (a rolling upgrade restarts each broker with a
// new build's settings).
func (c *Cluster) SetBrokerConfig(i int, f func(*broker.Config)) { c.nodes[i].mod = f }
