package snapstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// A real hashicorp/raft cluster on the store: three nodes over
// raft.InmemTransport with InmemStore logs and a Store (on its own vfs.Mem)
// each. FSM snapshots are references, as a partition's are: the FSM puts its
// encoded state in the node's Source and calls Sink.Reference, so the
// leader streams a reference and the follower stores the bytes it receives.
//
// The test applies commands, snapshots, cuts one follower off, applies
// more, snapshots again with TrailingLogs low so the leader compacts past
// the follower, reconnects it and checks it installed the snapshot (its FSM
// restored exactly the leader's state) and converges. Then it cuts that
// follower's power and restarts it from its store.

// recFSM records every applied command. Commands are numbered, and a
// command applied again (the client retried it across a leadership change,
// but the first try had committed) is skipped, so the contents are exact.
type recFSM struct {
	node string
	src  *fakeSource
	refs *atomic.Int64

	mu       sync.Mutex
	applied  [][]byte
	restores [][][]byte // what each Restore loaded
	gaps     int        // commands that arrived ahead of their turn
}

func (f *recFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int
	if _, err := fmt.Sscanf(string(l.Data), "cmd-%d", &n); err != nil {
		f.gaps++
		return nil
	}
	switch {
	case n < len(f.applied): // a retried duplicate
	case n == len(f.applied):
		f.applied = append(f.applied, slices.Clone(l.Data))
	default:
		f.gaps++
	}
	return nil
}

func (f *recFSM) gapCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gaps
}

func (f *recFSM) contents() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

func (f *recFSM) restored() [][][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.restores)
}

func (f *recFSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnap{fsm: f, data: encodeCmds(f.contents())}, nil
}

func (f *recFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	cmds, err := decodeCmds(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = cmds
	f.restores = append(f.restores, slices.Clone(cmds))
	return nil
}

func encodeCmds(cmds [][]byte) []byte {
	var b []byte
	for _, c := range cmds {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return b
}

func decodeCmds(b []byte) ([][]byte, error) {
	var cmds [][]byte
	for len(b) > 0 {
		if len(b) < 4 || int(binary.BigEndian.Uint32(b)) > len(b)-4 {
			return nil, errors.New("bad snapshot encoding")
		}
		n := binary.BigEndian.Uint32(b)
		cmds = append(cmds, b[4:4+n])
		b = b[4+n:]
	}
	return cmds, nil
}

// fsmSnap persists by reference when the sink can take one, the way a
// partition's virtual snapshot does.
type fsmSnap struct {
	fsm  *recFSM
	data []byte
}

func (s *fsmSnap) Persist(sink raft.SnapshotSink) error {
	referrer, ok := sink.(interface{ Reference(string, int64) error })
	if !ok {
		return errors.New("sink cannot take a reference")
	}
	ref := fmt.Sprintf("%s-%d", s.fsm.node, s.fsm.refs.Add(1))
	s.fsm.src.put(ref, s.data)
	if err := referrer.Reference(ref, int64(len(s.data))); err != nil {
		_ = s.fsm.src.Remove(ref) // still ours: Reference failed
		_ = sink.Cancel()
		return err
	}
	return sink.Close() // raft closes it again; that must be harmless
}

func (*fsmSnap) Release() {}

type raftNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	mem   *vfs.Mem
	src   *fakeSource
	refs  atomic.Int64
	logs  *raft.InmemStore
	store *Store
	fsm   *recFSM
	trans *raft.InmemTransport
	raft  *raft.Raft
}

func raftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	// Snapshots only when the test asks.
	c.SnapshotThreshold = 1 << 40
	c.SnapshotInterval = time.Hour
	c.LogOutput = io.Discard
	return c
}

// start opens the node's store and starts raft with a fresh FSM.
func (n *raftNode) start(t *testing.T, bootstrap *raft.Configuration) {
	t.Helper()
	n.store = mustOpen(t, Options{Dir: "/raft/" + string(n.id) + "/snapshots", FS: n.mem, Source: n.src, Retain: 1})
	n.fsm = &recFSM{node: string(n.id), src: n.src, refs: &n.refs}
	conf := raftConfig(n.id)
	if bootstrap != nil {
		if err := raft.BootstrapCluster(conf, n.logs, n.logs, n.store, n.trans, *bootstrap); err != nil {
			t.Fatal(err)
		}
	}
	r, err := raft.NewRaft(conf, n.fsm, n.logs, n.logs, n.store, n.trans)
	if err != nil {
		t.Fatal(err)
	}
	n.raft = r
}

func (n *raftNode) stop(t *testing.T) {
	t.Helper()
	if n.raft == nil {
		return
	}
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	n.raft = nil
}

// connect joins (or with up false, cuts) n and every other node, both ways.
func connect(n *raftNode, others []*raftNode, up bool) {
	for _, p := range others {
		if p == n {
			continue
		}
		if up {
			n.trans.Connect(p.addr, p.trans)
			p.trans.Connect(n.addr, n.trans)
		} else {
			n.trans.Disconnect(p.addr)
			p.trans.Disconnect(n.addr)
		}
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func leaderOf(nodes []*raftNode) *raftNode {
	for _, n := range nodes {
		if n.raft != nil && n.raft.State() == raft.Leader {
			return n
		}
	}
	return nil
}

func cmd(i int) []byte { return fmt.Appendf(nil, "cmd-%05d", i) }

// applyAll applies commands [from, to) through whichever node leads and
// waits until each has been applied to the leader's FSM, retrying from the
// first failure across a leadership change (the FSM skips duplicates).
func applyAll(t *testing.T, nodes []*raftNode, from, to int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := from; i < to; {
		if time.Now().After(deadline) {
			t.Fatalf("applied only up to %d of [%d, %d)", i, from, to)
		}
		var leader *raftNode
		eventually(t, 5*time.Second, "a leader", func() bool { leader = leaderOf(nodes); return leader != nil })
		end := min(i+100, to)
		futures := make([]raft.ApplyFuture, 0, end-i)
		for j := i; j < end; j++ {
			futures = append(futures, leader.raft.Apply(cmd(j), 5*time.Second))
		}
		ok := 0
		for _, f := range futures {
			if f.Error() != nil {
				break
			}
			ok++
		}
		i += ok
	}
}

func cmds(from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, cmd(i))
	}
	return out
}

func sameCmds(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }

func TestRaftCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a raft cluster")
	}
	nodes := make([]*raftNode, 3)
	var servers []raft.Server
	for i := range nodes {
		id := raft.ServerID(fmt.Sprintf("node%d", i))
		n := &raftNode{id: id, mem: vfs.NewMem(), src: newFakeSource(), logs: raft.NewInmemStore()}
		n.addr, n.trans = raft.NewInmemTransport(raft.ServerAddress(id))
		nodes[i] = n
		servers = append(servers, raft.Server{ID: id, Address: n.addr})
	}
	for _, n := range nodes {
		connect(n, nodes, true)
	}
	for i, n := range nodes {
		var boot *raft.Configuration
		if i == 0 {
			boot = &raft.Configuration{Servers: servers}
		}
		n.start(t, boot)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
	})

	applyAll(t, nodes, 0, 200)
	first := leaderOf(nodes)
	if first == nil {
		t.Fatal("no leader")
	}
	if err := first.raft.Snapshot().Error(); err != nil {
		t.Fatalf("first snapshot: %v", err)
	}

	// Cut a follower off and move on without it.
	var lagger *raftNode
	var others []*raftNode
	for _, n := range nodes {
		if n != first && lagger == nil {
			lagger = n
		} else {
			others = append(others, n)
		}
	}
	connect(lagger, nodes, false)
	applyAll(t, others, 200, 700)
	lagApplied := lagger.raft.AppliedIndex()

	// Both remaining nodes snapshot with few trailing logs, so whichever
	// leads when the follower returns has compacted past it. They wait
	// for all 700 commands first, so both snapshots hold exactly those.
	snapBytes := map[*raftNode][]byte{}
	for _, n := range others {
		eventually(t, 5*time.Second, "every command applied on "+string(n.id), func() bool {
			return len(n.fsm.contents()) == 700
		})
		if err := n.raft.ReloadConfig(raft.ReloadableConfig{
			TrailingLogs:      10,
			SnapshotInterval:  time.Hour,
			SnapshotThreshold: 1 << 40,
			HeartbeatTimeout:  200 * time.Millisecond,
			ElectionTimeout:   200 * time.Millisecond,
		}); err != nil {
			t.Fatal(err)
		}
		snap := n.raft.Snapshot()
		if err := snap.Error(); err != nil {
			t.Fatalf("second snapshot on %s: %v", n.id, err)
		}
		meta, rc, err := snap.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := decodeCmds(b); !sameCmds(got, cmds(0, 700)) {
			t.Fatalf("%s's snapshot holds %d commands, want 700", n.id, len(got))
		}
		snapBytes[n] = b
		if firstIdx, _ := n.logs.FirstIndex(); firstIdx <= lagApplied+1 {
			t.Fatalf("%s's log starts at %d: not compacted past the follower (applied %d)", n.id, firstIdx, lagApplied)
		}
		// Snapshots taken here are references.
		if m, err := n.store.readMeta(meta.ID); err != nil || m.Ref == "" {
			t.Fatalf("%s's snapshot is not a reference: %+v, %v", n.id, m, err)
		}
	}
	// The first leader kept one snapshot (Retain 1): taking its second
	// reaped the first and released that reference.
	if got := first.src.removedRefs(); !slices.Equal(got, []string{string(first.id) + "-1"}) {
		t.Fatalf("%s released %v", first.id, got)
	}

	// Reconnect: the follower is behind every log and must install a
	// snapshot, whose contents its FSM must restore exactly.
	connect(lagger, nodes, true)
	eventually(t, 10*time.Second, "the follower to install the snapshot", func() bool {
		return len(lagger.fsm.restored()) > 0
	})
	restores := lagger.fsm.restored()
	if !sameCmds(restores[0], cmds(0, 700)) {
		t.Fatalf("follower restored %d commands, want 700", len(restores[0]))
	}
	// It stored the bytes it received: a data snapshot, equal to the sender's.
	lagMetas, err := lagger.store.List()
	if err != nil || len(lagMetas) != 1 || lagMetas[0].Size != int64(len(snapBytes[others[0]])) {
		t.Fatalf("follower's snapshots %+v, %v", lagMetas, err)
	}
	if _, got := readSnap(t, lagger.store, lagMetas[0].ID); !bytes.Equal(got, snapBytes[others[0]]) {
		t.Fatal("follower's stored snapshot differs from the leader's")
	}
	if m, _ := lagger.store.readMeta(lagMetas[0].ID); m.Ref != "" {
		t.Fatalf("follower's installed snapshot is a reference %q", m.Ref)
	}

	converged := func(n int) func() bool {
		return func() bool {
			for _, node := range nodes {
				if !sameCmds(node.fsm.contents(), cmds(0, n)) {
					return false
				}
			}
			return true
		}
	}
	applyAll(t, nodes, 700, 750)
	eventually(t, 10*time.Second, "every FSM to hold all 750 commands", converged(750))

	// Power loss on the follower: it comes back from its snapshot store
	// (the installed snapshot must have survived) and catches up.
	lagger.stop(t)
	lagger.mem.Crash(rand.New(rand.NewPCG(1, 1)))
	connect(lagger, nodes, false)
	lagger.addr, lagger.trans = raft.NewInmemTransport(lagger.addr)
	connect(lagger, nodes, true)
	lagger.start(t, nil)
	restores = lagger.fsm.restored()
	if len(restores) != 1 || len(restores[0]) < 700 || !sameCmds(restores[0], cmds(0, len(restores[0]))) {
		t.Fatalf("restarted follower restored %d times", len(restores))
	}
	applyAll(t, nodes, 750, 800)
	eventually(t, 10*time.Second, "every FSM to hold all 800 commands after the restart", converged(800))
	for _, n := range nodes {
		if g := n.fsm.gapCount(); g != 0 {
			t.Fatalf("%s applied %d commands out of order", n.id, g)
		}
	}
}
