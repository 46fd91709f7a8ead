package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventually polls fn every 10 ms until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("VARVE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// faultNet is the test's network: every node dials through it, so it can refuse dials across a
// partition and close the connections that cross it (both ends see the close).
type faultNet struct {
	mu       sync.Mutex
	isolated map[string]bool
	conns    map[*faultConn]struct{}
}

func newFaultNet() *faultNet {
	return &faultNet{isolated: map[string]bool{}, conns: map[*faultConn]struct{}{}}
}

type faultConn struct {
	net.Conn
	f        *faultNet
	from, to string
}

func (c *faultConn) Close() error {
	c.f.mu.Lock()
	delete(c.f.conns, c)
	c.f.mu.Unlock()
	return c.Conn.Close()
}

func (f *faultNet) dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		f.mu.Lock()
		cut := f.isolated[from] || f.isolated[addr]
		f.mu.Unlock()
		if cut {
			return nil, errors.New("faultnet: partitioned")
		}
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := &faultConn{Conn: nc, f: f, from: from, to: addr}
		f.mu.Lock()
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		return c, nil
	}
}

// isolate cuts addr off from everyone until heal.
func (f *faultNet) isolate(addr string) {
	f.mu.Lock()
	f.isolated[addr] = true
	var victims []*faultConn
	for c := range f.conns {
		if c.from == addr || c.to == addr {
			victims = append(victims, c)
		}
	}
	f.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
}

func (f *faultNet) heal(addr string) {
	f.mu.Lock()
	delete(f.isolated, addr)
	f.mu.Unlock()
}

// testFSM keeps every applied command, so replicas can be compared exactly; its snapshot is all of
// them, length-prefixed.
type testFSM struct {
	mu   sync.Mutex
	cmds [][]byte
}

func (f *testFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, append([]byte(nil), l.Data...))
	return len(f.cmds)
}

func (f *testFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fsmSnap{cmds: append([][]byte(nil), f.cmds...)}, nil
}

func (f *testFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var cmds [][]byte
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < n {
			return errors.New("testFSM: corrupt snapshot")
		}
		cmds = append(cmds, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	f.mu.Lock()
	f.cmds = cmds
	f.mu.Unlock()
	return nil
}

func (f *testFSM) state() (int, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.cmds), bytes.Join(f.cmds, []byte{0})
}

type fsmSnap struct{ cmds [][]byte }

func (s *fsmSnap) Persist(sink raft.SnapshotSink) error {
	var b []byte
	for _, c := range s.cmds {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	if _, err := sink.Write(b); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnap) Release() {}

// testNode is one broker: a Mux and its raft groups.
type testNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	mux   *Mux
	rafts map[string]*raft.Raft
	fsms  map[string]*testFSM
	dead  bool
}

// testCluster is n in-process nodes sharing a faultNet, every group replicated on all of them.
type testCluster struct {
	t      testing.TB
	net    *faultNet
	nodes  []*testNode
	groups []string
	conf   func(*raft.Config)
}

func fastRaftConfig(c *raft.Config) {
	c.HeartbeatTimeout = 150 * time.Millisecond
	c.ElectionTimeout = 150 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
}

func newTestCluster(t testing.TB, nodes, groups int, conf func(*raft.Config), muxConf func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: newFaultNet(), conf: conf}
	for i := 0; i < groups; i++ {
		c.groups = append(c.groups, fmt.Sprintf("g%03d", i))
	}
	for i := 0; i < nodes; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := raft.ServerAddress(ln.Addr().String())
		cfg := Config{LocalAddr: addr, ClusterID: "test-cluster", Dial: c.net.dialer(string(addr)),
			Logger: testLogger(), RPCTimeout: time.Second, DialTimeout: 500 * time.Millisecond}
		if muxConf != nil {
			muxConf(&cfg)
		}
		m, err := New(cfg, ln)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, &testNode{id: raft.ServerID(fmt.Sprintf("n%d", i)), addr: addr, mux: m,
			rafts: map[string]*raft.Raft{}, fsms: map[string]*testFSM{}})
	}
	var servers []raft.Server
	for _, n := range c.nodes {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: n.addr})
	}
	for _, g := range c.groups {
		for _, n := range c.nodes {
			r := c.startRaft(n, g)
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(c.stop)
	return c
}

func (c *testCluster) startRaft(n *testNode, g string) *raft.Raft {
	conf := raft.DefaultConfig()
	conf.LocalID = n.id
	conf.Logger = hclog.NewNullLogger()
	if os.Getenv("VARVE_TEST_RAFTLOG") != "" {
		conf.Logger = hclog.New(&hclog.LoggerOptions{Name: string(n.id) + "/" + g, Level: hclog.Debug, Output: os.Stderr})
	}
	fastRaftConfig(conf)
	if c.conf != nil {
		c.conf(conf)
	}
	fsm := &testFSM{}
	r, err := raft.NewRaft(conf, fsm, raft.NewInmemStore(), raft.NewInmemStore(),
		raft.NewInmemSnapshotStore(), n.mux.Group(g))
	if err != nil {
		c.t.Fatal(err)
	}
	n.rafts[g], n.fsms[g] = r, fsm
	return r
}

// stop shuts every raft down in parallel, then every Mux.
func (c *testCluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		for _, r := range n.rafts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = r.Shutdown().Error()
			}()
		}
	}
	wg.Wait()
	for _, n := range c.nodes {
		_ = n.mux.Close()
	}
}

// leader returns the node leading group g, or an error if there is none or more than one.
func (c *testCluster) leader(g string) (*testNode, error) {
	var found *testNode
	for _, n := range c.nodes {
		if r := n.rafts[g]; r != nil && !n.dead && r.State() == raft.Leader {
			if found != nil {
				return nil, fmt.Errorf("group %s: two leaders", g)
			}
			found = n
		}
	}
	if found == nil {
		return nil, fmt.Errorf("group %s: no leader", g)
	}
	return found, nil
}

func (c *testCluster) waitLeaders(timeout time.Duration) {
	c.t.Helper()
	eventually(c.t, timeout, func() error {
		for _, g := range c.groups {
			if _, err := c.leader(g); err != nil {
				return err
			}
		}
		return nil
	})
}

// apply applies cmd to group g through its current leader, retrying across leader changes.
func (c *testCluster) apply(g string, cmd []byte) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		l, err := c.leader(g)
		if err != nil {
			return err
		}
		return l.rafts[g].Apply(cmd, time.Second).Error()
	})
}

// converged waits until every live replica of g has applied exactly what the leader has.
func (c *testCluster) converged(g string, timeout time.Duration) {
	c.t.Helper()
	eventually(c.t, timeout, func() error {
		l, err := c.leader(g)
		if err != nil {
			return err
		}
		wantN, want := l.fsms[g].state()
		for _, n := range c.nodes {
			if n.dead || n.fsms[g] == nil {
				continue
			}
			if gotN, got := n.fsms[g].state(); gotN != wantN || !bytes.Equal(got, want) {
				return fmt.Errorf("group %s: %s has %d commands, leader %s has %d", g, n.id, gotN, l.id, wantN)
			}
		}
		return nil
	})
}
