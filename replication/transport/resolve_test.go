package transport

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// addrBook is a test resolver: addresses by ServerID, set by the test or learned from Announce.
type addrBook struct {
	m       sync.Map // raft.ServerID -> raft.ServerAddress
	dialMu  sync.Mutex
	dialled map[string]int
}

func newAddrBook() *addrBook { return &addrBook{dialled: map[string]int{}} }

func (b *addrBook) resolve(id raft.ServerID, addr raft.ServerAddress) raft.ServerAddress {
	if a, ok := b.m.Load(id); ok {
		return a.(raft.ServerAddress)
	}
	return addr
}

func (b *addrBook) announce(id raft.ServerID, addr raft.ServerAddress) { b.m.Store(id, addr) }

// wire makes cfg resolve through the book, learn from announcements when learn is set, and count
// the addresses it dials.
func (b *addrBook) wire(cfg *Config, learn bool) {
	cfg.Resolve = b.resolve
	if learn {
		cfg.Announce = b.announce
	}
	dial := cfg.Dial
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		b.dialMu.Lock()
		b.dialled[addr]++
		b.dialMu.Unlock()
		return dial(ctx, addr)
	}
}

func (b *addrBook) dials(addr raft.ServerAddress) int {
	b.dialMu.Lock()
	defer b.dialMu.Unlock()
	return b.dialled[string(addr)]
}

// deadAddr is a 127.0.0.1 address nothing listens on (bound and released: refused when dialled).
func deadAddr(t *testing.T) raft.ServerAddress {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := raft.ServerAddress(ln.Addr().String())
	_ = ln.Close()
	return addr
}

// raftStores are one replica's raft state, kept so the replica can restart on it.
type raftStores struct {
	logs, stable *raft.InmemStore
	snaps        *raft.InmemSnapshotStore
}

// startRaftOn starts n's replica of group g on the given stores (raft bootstraps nothing here).
func (c *testCluster) startRaftOn(n *testNode, g string, s raftStores) *raft.Raft {
	c.t.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = n.id
	conf.Logger = hclog.NewNullLogger()
	fastRaftConfig(conf)
	fsm := &testFSM{}
	r, err := raft.NewRaft(conf, fsm, s.logs, s.stable, s.snaps, n.mux.Group(g))
	if err != nil {
		c.t.Fatal(err)
	}
	n.rafts[g], n.fsms[g] = r, fsm
	return r
}

// TestResolveStaleConfiguration runs a group whose raft configuration names an address nothing
// listens on for every server: Resolve alone takes its RPCs to the peers, acknowledgements are
// recorded under the resolved addresses, and the stale ones are never dialled.
func TestResolveStaleConfiguration(t *testing.T) {
	book := newAddrBook()
	c := newTestCluster(t, 3, 0, nil, func(cfg *Config) { book.wire(cfg, false) })
	var servers []raft.Server
	stale := map[raft.ServerID]raft.ServerAddress{}
	for _, n := range c.nodes {
		stale[n.id] = deadAddr(t)
		book.m.Store(n.id, n.addr)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: stale[n.id]})
	}
	g := "stale"
	c.groups = append(c.groups, g)
	for _, n := range c.nodes {
		s := raftStores{raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore()}
		r := c.startRaftOn(n, g, s)
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitLeaders(10 * time.Second)
	for i := range 10 {
		c.apply(g, fmt.Appendf(nil, "cmd-%d", i))
	}
	c.converged(g, 5*time.Second)
	l, err := c.leader(g)
	if err != nil {
		t.Fatal(err)
	}
	// Raft still believes in the stale addresses: the configuration was never changed.
	if f := l.rafts[g].GetConfiguration(); f.Error() != nil || f.Configuration().Servers[0].Address != stale[c.nodes[0].id] {
		t.Fatalf("configuration changed: %+v", f.Configuration())
	}
	eventually(t, 5*time.Second, func() error {
		last := l.rafts[g].LastIndex()
		for _, n := range c.nodes {
			if n == l {
				continue
			}
			if idx, _ := l.mux.Acked(g, n.addr); idx != last {
				return fmt.Errorf("Acked(%s at %s) = %d, leader's last index %d", n.id, n.addr, idx, last)
			}
			if idx, _ := l.mux.Acked(g, stale[n.id]); idx != 0 {
				return fmt.Errorf("Acked recorded under the stale address %s: %d", stale[n.id], idx)
			}
		}
		return nil
	})
	// TimeoutNow resolves too: hand the leadership to another server by its stale address.
	var next *testNode
	for _, n := range c.nodes {
		if n != l {
			next = n
			break
		}
	}
	if err := l.rafts[g].LeadershipTransferToServer(next.id, stale[next.id]).Error(); err != nil {
		t.Fatalf("leadership transfer to %s: %v", next.id, err)
	}
	eventually(t, 5*time.Second, func() error {
		if nl, err := c.leader(g); err != nil || nl != next {
			return fmt.Errorf("leader %v (%v), want %s", nl, err, next.id)
		}
		return nil
	})
	c.apply(g, []byte("after-transfer"))
	c.converged(g, 5*time.Second)
	for id, a := range stale {
		if k := book.dials(a); k != 0 {
			t.Errorf("stale address %s of %s was dialled %d times", a, id, k)
		}
	}
	if m := l.mux.Resolve("n9", "127.0.0.1:1"); m != "127.0.0.1:1" {
		t.Errorf("Resolve of an unknown id = %s, want the address raft gave", m)
	}
}

// TestAnnounceFindsMovedPeer restarts a follower on a new address, on its raft state. Nobody tells
// the others: they resolve only by what peers announce in their requests. The follower hears
// nothing, campaigns, its pre-votes announce the new address, and the leader replicates to it
// there; then it can lead (TimeoutNow to its old configured address reaches it).
func TestAnnounceFindsMovedPeer(t *testing.T) {
	book := newAddrBook()
	muxConf := func(cfg *Config) { book.wire(cfg, true) }
	c := newTestCluster(t, 3, 0, nil, muxConf)
	g := "moved"
	c.groups = append(c.groups, g)
	var servers []raft.Server
	for _, n := range c.nodes {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.addr})
	}
	stores := map[raft.ServerID]raftStores{}
	for _, n := range c.nodes {
		s := raftStores{raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore()}
		stores[n.id] = s
		r := c.startRaftOn(n, g, s)
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitLeaders(10 * time.Second)
	for i := range 5 {
		c.apply(g, fmt.Appendf(nil, "before-%d", i))
	}
	c.converged(g, 5*time.Second)
	l, err := c.leader(g)
	if err != nil {
		t.Fatal(err)
	}
	var v *testNode
	for _, n := range c.nodes {
		if n != l {
			v = n
			break
		}
	}

	// Move v: stop its raft and Mux, serve a new port, restart raft on the same state.
	oldAddr := v.addr
	if err := v.rafts[g].Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	_ = v.mux.Close()
	for i := range 3 {
		c.apply(g, fmt.Appendf(nil, "while-down-%d", i))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v.addr = raft.ServerAddress(ln.Addr().String())
	cfg := Config{LocalAddr: v.addr, ClusterID: "test-cluster", Dial: c.net.dialer(string(v.addr)),
		Logger: testLogger(), RPCTimeout: time.Second, DialTimeout: 500 * time.Millisecond}
	muxConf(&cfg)
	if v.mux, err = New(cfg, ln); err != nil {
		t.Fatal(err)
	}
	c.startRaftOn(v, g, stores[v.id])
	t.Logf("moved %s from %s to %s", v.id, oldAddr, v.addr)

	for i := range 5 {
		c.apply(g, fmt.Appendf(nil, "after-%d", i))
	}
	c.converged(g, 10*time.Second)
	l, err = c.leader(g)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		last := l.rafts[g].LastIndex()
		if idx, _ := l.mux.Acked(g, v.addr); idx != last {
			return fmt.Errorf("Acked(%s at its new address) = %d, leader's last index %d", v.id, idx, last)
		}
		return nil
	})
	if got := l.mux.Resolve(v.id, oldAddr); got != v.addr {
		t.Fatalf("leader resolves %s to %s, want %s", v.id, got, v.addr)
	}
	// The configuration still names the old address, and the moved server can take over.
	if err := l.rafts[g].LeadershipTransferToServer(v.id, oldAddr).Error(); err != nil {
		t.Fatalf("leadership transfer to the moved %s: %v", v.id, err)
	}
	eventually(t, 5*time.Second, func() error {
		if nl, err := c.leader(g); err != nil || nl != v {
			return fmt.Errorf("leader %v (%v), want %s", nl, err, v.id)
		}
		return nil
	})
	c.apply(g, []byte("led-by-moved"))
	c.converged(g, 5*time.Second)
}
