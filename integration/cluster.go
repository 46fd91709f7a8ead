// Package integration boots real Varve brokers in-process for tests: real
// TCP listeners on 127.0.0.1:0, real Raft groups, real data directories
// (or the fault-injecting in-memory filesystem, which power loss can
// strike), real Kafka clients (franz-go kgo and kadm), and fault
// injection: Kill (power loss of one broker), Stop and Restart, Isolate
// (cut its Raft links).
package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/integration/netfault"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication"
)

// Cluster is a set of in-process brokers.
type Cluster struct {
	t     testing.TB
	size  int
	mem   bool
	disk  bool // OnDisk: keep the real filesystem for several brokers
	base  broker.Config
	nodes []*node
	net   *netfault.Network // every Raft connection goes through it (netfault.go)
	seed  uint64
	// addrMu guards the nodes slice and each node's raftAddr against the
	// dialers' idOf, which runs on transport goroutines: AddBroker grows
	// the slice and a broker can move to a new address.
	addrMu sync.RWMutex
}

// node is one broker slot: its identity and disk survive restarts.
type node struct {
	id        int32
	dataDir   string
	kafkaAddr string
	raftAddr  string
	// kafkaLn and raftLn are bound at NewCluster and handed to the first
	// start, so no other process can take the ports in between.
	kafkaLn, raftLn net.Listener
	fs              vfs.FS // the disk; a Kill replaces it with its crash image
	mem             *vfs.Mem

	broker  *broker.Broker
	serving chan error
	// mod changes this broker's config after the cluster's (SetBrokerConfig).
	mod func(*broker.Config)
}

// Option changes how a cluster is built.
type Option func(*Cluster)

// WithConfig lets a test change every broker's config before start.
func WithConfig(f func(*broker.Config)) Option {
	return func(c *Cluster) { f(&c.base) }
}

// Brokers sets the number of brokers (default 1). Clusters of more than
// one run on the in-memory filesystem, so Kill can cut their power.
func Brokers(n int) Option { return func(c *Cluster) { c.size = n } }

// InMemory puts the brokers' data on the fault-injecting in-memory
// filesystem (the default for more than one broker).
func InMemory() Option { return func(c *Cluster) { c.mem = true } }

// OnDisk keeps the brokers' data on the real filesystem (t.TempDir())
// even for more than one broker, for benchmarks whose fsyncs must cost
// what they cost. Kill needs the in-memory filesystem and fails with it.
func OnDisk() Option { return func(c *Cluster) { c.disk = true } }

// testTimings are shorter Raft timeouts than production's, so failover
// tests take seconds, not tens of seconds.
func testTimings(cfg *broker.Config) {
	cfg.LeaderBalanceInterval = 500 * time.Millisecond
	cfg.ISRInterval = 200 * time.Millisecond
	cfg.ReplicaLagMax = 2 * time.Second
	cfg.DataTiming = replication.Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, Lease: 250 * time.Millisecond, Commit: 100 * time.Millisecond}
	cfg.MetadataTiming = replication.Timing{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond, Lease: 150 * time.Millisecond, Commit: 50 * time.Millisecond}
}

// NewCluster starts the brokers on fresh data directories and stops them
// when the test ends.
func NewCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, size: 1, seed: uint64(time.Now().UnixNano())}
	testTimings(&c.base)
	for _, o := range opts {
		o(c)
	}
	c.net = netfault.New(c.seed)
	if c.size > 1 && !c.disk {
		c.mem = true
	}
	var peers []replication.Peer
	for i := range c.size {
		n := &node{id: int32(i + 1), dataDir: path.Join(t.TempDir(), fmt.Sprintf("broker-%d", i+1))}
		if c.mem {
			n.mem = vfs.NewMem()
			n.fs = n.mem
			n.dataDir = fmt.Sprintf("/broker-%d", i+1)
		} else {
			n.fs = vfs.OS{}
		}
		n.kafkaLn, n.raftLn = listen(t), listen(t)
		n.kafkaAddr, n.raftAddr = n.kafkaLn.Addr().String(), n.raftLn.Addr().String()
		peers = append(peers, replication.Peer{ID: n.id, Addr: n.raftAddr})
		c.nodes = append(c.nodes, n)
	}
	if c.size == 1 {
		peers = nil // a cluster of one, as `varve serve` without --peers
	}
	c.base.Peers = peers
	t.Cleanup(c.stopAll)
	var wg sync.WaitGroup
	errs := make([]error, c.size)
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.start(i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c.waitRegistered()
	return c
}

// listen binds a port on 127.0.0.1 for a broker's first start; restarts
// bind the same address again, so clients and peers keep it.
func listen(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// listenRetry binds addr, retrying briefly while the previous owner's
// socket is still going away.
func listenRetry(addr string) (net.Listener, error) {
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func (c *Cluster) start(i int) error {
	n := c.nodes[i]
	cfg := c.base
	if n.mod != nil {
		n.mod(&cfg)
	}
	cfg.NodeID = n.id
	cfg.DataDir = n.dataDir
	cfg.FS = n.fs
	rln, err := n.raftLn, error(nil)
	n.raftLn = nil
	if rln == nil {
		rln, err = listenRetry(n.raftAddr)
	}
	if err != nil {
		return fmt.Errorf("broker %d: raft listener: %w", n.id, err)
	}
	cfg.RaftListener = c.net.Listener(n.id, rln)
	cfg.RaftDial = c.net.Dialer(n.id, c.idOf)
	b, err := broker.New(cfg)
	if err != nil {
		_ = rln.Close()
		return fmt.Errorf("broker %d: %w", n.id, err)
	}
	ln, err := n.kafkaLn, error(nil)
	n.kafkaLn = nil
	if ln == nil {
		ln, err = listenRetry(n.kafkaAddr)
	}
	if err != nil {
		_ = b.Shutdown(context.Background())
		return fmt.Errorf("broker %d: kafka listener: %w", n.id, err)
	}
	n.broker = b
	n.serving = make(chan error, 1)
	go func() { n.serving <- b.Serve("PLAINTEXT", ln) }()
	return nil
}

// idOf maps a Raft address to its broker id (0 when unknown).
func (c *Cluster) idOf(addr string) int32 {
	c.addrMu.RLock()
	defer c.addrMu.RUnlock()
	for _, n := range c.nodes {
		if n.raftAddr == addr {
			return n.id
		}
	}
	return 0
}

// waitRegistered waits until every running broker's metadata lists every
// running broker.
func (c *Cluster) waitRegistered() {
	c.t.Helper()
	eventually(c.t, 30*time.Second, "brokers to register", func() bool {
		for _, n := range c.nodes {
			if n.broker == nil {
				continue
			}
			if len(n.broker.RegisteredBrokers()) < c.running() {
				return false
			}
		}
		return true
	})
}

func (c *Cluster) running() int {
	k := 0
	for _, n := range c.nodes {
		if n.broker != nil {
			k++
		}
	}
	return k
}

func (c *Cluster) stop(i int) {
	n := c.nodes[i]
	if n.broker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.broker.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown broker %d: %v", n.id, err)
	}
	if err := <-n.serving; err != nil && !errors.Is(err, net.ErrClosed) {
		c.t.Errorf("serve broker %d: %v", n.id, err)
	}
	n.broker = nil
}

func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(i)
		}()
	}
	wg.Wait()
}

// Size is the number of broker slots.
func (c *Cluster) Size() int { return len(c.nodes) }

// Stop stops broker i gracefully.
func (c *Cluster) Stop(i int) { c.stop(i) }

// Start starts a stopped or killed broker i again on its data.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
}

// Restart stops broker i gracefully and starts it again on the same data
// directory and addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.stop(i)
	c.Start(i)
}

// Kill cuts broker i's power: its disk becomes what a power loss leaves
// (everything not fsynced gone, unsynced tails torn at random) and the
// running broker is abandoned: cut off the network at once, then stopped
// against its old disk, which nothing reads again. Start brings it back
// on the crash image. Needs the in-memory filesystem.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if n.mem == nil {
		c.t.Fatal("Kill needs the in-memory filesystem (Brokers(n>1) or InMemory())")
	}
	if n.broker == nil {
		return
	}
	c.net.Isolate(n.id, true)
	c.seed++
	rng := rand.New(rand.NewPCG(c.seed, uint64(n.id)))
	image := n.mem.CrashClone(rng)
	c.t.Logf("killed broker %d (crash seed %d)", n.id, c.seed)
	old := n.broker
	n.broker = nil
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_ = old.Shutdown(ctx) // against the abandoned disk; its errors are expected
	cancel()
	<-n.serving
	n.mem = image
	n.fs = image
	c.net.Isolate(n.id, false)
}

// Isolate cuts (or heals) every Raft link of broker i; Kafka clients still
// reach it.
func (c *Cluster) Isolate(i int, cut bool) { c.net.Isolate(c.nodes[i].id, cut) }

// Addr is the Kafka address of the first running broker.
func (c *Cluster) Addr() string {
	for _, n := range c.nodes {
		if n.broker != nil {
			return n.kafkaAddr
		}
	}
	return c.nodes[0].kafkaAddr
}

// BrokerAddr is broker i's Kafka address.
func (c *Cluster) BrokerAddr(i int) string { return c.nodes[i].kafkaAddr }

// Addrs are the Kafka addresses of every broker slot.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.kafkaAddr)
	}
	return out
}

// Broker is broker i while it runs (nil when stopped).
func (c *Cluster) Broker(i int) *broker.Broker { return c.nodes[i].broker }

// FS is broker i's current disk.
func (c *Cluster) FS(i int) vfs.FS { return c.nodes[i].fs }

// DataDir is broker i's data directory on its disk.
func (c *Cluster) DataDir(i int) string { return c.nodes[i].dataDir }

// Index is the slot of the broker with the given id, -1 if none.
func (c *Cluster) Index(id int32) int {
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a partition has a ready leader that every
// running broker's metadata names, and returns its slot.
func (c *Cluster) WaitLeader(topic string, p int32) int {
	c.t.Helper()
	leader := -1
	eventually(c.t, 60*time.Second, fmt.Sprintf("a leader for %s-%d", topic, p), func() bool {
		leader = -1
		var id int32 = -1
		for i, n := range c.nodes {
			if n.broker == nil {
				continue
			}
			l, _ := n.broker.PartitionLeader(topic, p)
			if l < 0 || (id >= 0 && l != id) {
				return false
			}
			id = l
			if n.id == l && n.broker.IsReadyLeader(topic, p) {
				leader = i
			}
		}
		return leader >= 0
	})
	return leader
}

// Client returns a franz-go client seeded with every broker, closed at
// the end of the test.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns a kadm client over a new franz-go client.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	return kadm.NewClient(c.Client(t))
}

// eventually polls cond every 20 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// String names the cluster in failure messages.
func (c *Cluster) String() string {
	var parts []string
	for _, n := range c.nodes {
		state := "down"
		if n.broker != nil {
			state = "up"
		}
		parts = append(parts, fmt.Sprintf("%d@%s(%s)", n.id, n.kafkaAddr, state))
	}
	return strings.Join(parts, " ")
}

// freeAddr picks a free port on 127.0.0.1 for a process started later (the
// port is released, so another process could take it first: in-process
// brokers use listen instead).
func freeAddr(t testing.TB) string {
	ln := listen(t)
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// MoveBroker stops broker i gracefully and starts it again on its data
// with new Kafka and Raft listeners (fresh 127.0.0.1:0 ports), as when an
// operator moves a broker to another host or port. Its own entry in its
// Peers config names the new Raft address; the running brokers keep the
// list they were started with, which still names the old one, as they
// would in production until restarted (the cluster's base list is
// replaced, not modified, so a broker started later gets the new entry).
// Clients seeded with the old Kafka address no longer reach it there;
// BrokerAddr and Addrs give the new one. Isolate and Kill follow it: the
// network knows a broker by id and maps the new Raft address to it.
func (c *Cluster) MoveBroker(i int) {
	c.t.Helper()
	n := c.nodes[i]
	c.stop(i)
	oldKafka, oldRaft := n.kafkaAddr, n.raftAddr
	// Bound before the slot names them, so no one else takes the ports;
	// a port the kernel hands back unchanged would make the move a plain
	// restart, so it is bound again while the first stays held.
	var held []net.Listener
	fresh := func(old string) net.Listener {
		for {
			ln := listen(c.t)
			if ln.Addr().String() != old {
				return ln
			}
			held = append(held, ln)
		}
	}
	kln, rln := fresh(oldKafka), fresh(oldRaft)
	for _, ln := range held {
		_ = ln.Close()
	}
	c.addrMu.Lock()
	n.kafkaLn, n.raftLn = kln, rln
	n.kafkaAddr, n.raftAddr = kln.Addr().String(), rln.Addr().String()
	c.addrMu.Unlock()
	if len(c.base.Peers) > 0 {
		peers := make([]replication.Peer, len(c.base.Peers))
		copy(peers, c.base.Peers)
		for j := range peers {
			if peers[j].ID == n.id {
				peers[j].Addr = n.raftAddr
			}
		}
		c.base.Peers = peers
	}
	c.t.Logf("moving broker %d: kafka %s -> %s, raft %s -> %s", n.id, oldKafka, n.kafkaAddr, oldRaft, n.raftAddr)
	c.Start(i)
}

// RaftAddr is broker i's current Raft address.
func (c *Cluster) RaftAddr(i int) string {
	c.addrMu.RLock()
	defer c.addrMu.RUnlock()
	return c.nodes[i].raftAddr
}

// RaftConnsTo counts the Raft connections broker from has dialed to broker
// to's current Raft address since the cluster started (closed ones
// included). A peer's configured address is only a hint, so this is how a
// test sees which address a broker's raft traffic really goes to.
func (c *Cluster) RaftConnsTo(from, to int) int {
	return c.net.DialsTo(c.nodes[from].id, c.RaftAddr(to))
}
