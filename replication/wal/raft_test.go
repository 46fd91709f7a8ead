package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// A real hashicorp/raft cluster on the WAL: three nodes over
// raft.InmemTransport, each with a Log (on its own vfs.Mem) as LogStore and
// StableStore and a file snapshot store, fast timeouts and a low snapshot
// threshold so compaction (prefix DeleteRange) runs. It applies 1,000
// commands, checks that every FSM applied them in order, then twice cuts one
// follower's power, applies more, restarts it from its WAL and checks that it
// catches up to identical FSM contents.

// recFSM records the data of every applied command, in order.
type recFSM struct {
	mu      sync.Mutex
	applied [][]byte
}

func (f *recFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, append([]byte{}, l.Data...))
	return len(f.applied)
}

func (f *recFSM) contents() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

func (f *recFSM) Snapshot() (raft.FSMSnapshot, error) { return fsmSnap(f.contents()), nil }

func (f *recFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var applied [][]byte
	for len(b) > 0 {
		if len(b) < 4 || int(binary.BigEndian.Uint32(b)) > len(b)-4 {
			return errors.New("bad snapshot")
		}
		n := binary.BigEndian.Uint32(b)
		applied = append(applied, b[4:4+n])
		b = b[4+n:]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = applied
	return nil
}

type fsmSnap [][]byte

func (s fsmSnap) Persist(sink raft.SnapshotSink) error {
	var b []byte
	for _, d := range s {
		b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
		b = append(b, d...)
	}
	if _, err := sink.Write(b); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (fsmSnap) Release() {}

// raftNode is one member; mem and snaps outlive restarts.
type raftNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	mem   *vfs.Mem
	snaps raft.SnapshotStore
	log   *Log
	fsm   *recFSM
	trans *raft.InmemTransport
	raft  *raft.Raft
}

func raftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotThreshold = 200
	c.SnapshotInterval = 50 * time.Millisecond
	c.TrailingLogs = 50
	c.LogOutput = io.Discard
	return c
}

// start opens the node's WAL and starts raft on it with a fresh FSM and
// transport, connected to the others.
func (n *raftNode) start(t *testing.T, peers []*raftNode, bootstrap *raft.Configuration) {
	t.Helper()
	n.log = mustOpen(t, Options{Dir: "/raft/" + string(n.id), FS: n.mem, SegmentBytes: 16 << 10})
	n.fsm = &recFSM{}
	n.addr, n.trans = raft.NewInmemTransport(n.addr)
	for _, p := range peers {
		if p != n && p.trans != nil {
			n.trans.Connect(p.addr, p.trans)
			p.trans.Connect(n.addr, n.trans)
		}
	}
	conf := raftConfig(n.id)
	if bootstrap != nil {
		if err := raft.BootstrapCluster(conf, n.log, n.log, n.snaps, n.trans, *bootstrap); err != nil {
			t.Fatal(err)
		}
	}
	r, err := raft.NewRaft(conf, n.fsm, n.log, n.log, n.snaps, n.trans)
	if err != nil {
		t.Fatal(err)
	}
	n.raft = r
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

// applyAll applies commands [from, to) through whichever node leads,
// retrying on a leadership change. It reports whether any retry happened
// (a retried command may then have applied twice).
func applyAll(t *testing.T, nodes []*raftNode, from, to int) (retried bool) {
	t.Helper()
	for i := from; i < to; {
		var leader *raftNode
		eventually(t, 5*time.Second, "a leader", func() bool { leader = leaderOf(nodes); return leader != nil })
		end := min(i+100, to)
		futures := make([]raft.ApplyFuture, 0, end-i)
		for j := i; j < end; j++ {
			futures = append(futures, leader.raft.Apply(fmt.Appendf(nil, "cmd-%05d", j), 5*time.Second))
		}
		ok := 0
		for _, f := range futures {
			if f.Error() != nil {
				break
			}
			ok++
		}
		if ok < len(futures) {
			retried = true
		}
		i += ok
	}
	return retried
}

func TestRaftCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a raft cluster")
	}
	nodes := make([]*raftNode, 3)
	var servers []raft.Server
	for i := range nodes {
		id := raft.ServerID(fmt.Sprintf("node%d", i))
		snaps, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &raftNode{id: id, addr: raft.ServerAddress(id), mem: vfs.NewMem(), snaps: snaps}
		servers = append(servers, raft.Server{ID: id, Address: raft.ServerAddress(id)})
	}
	for _, n := range nodes {
		n.start(t, nodes, &raft.Configuration{Servers: servers})
	}
	defer func() {
		for _, n := range nodes {
			if n.raft != nil {
				_ = n.raft.Shutdown().Error()
				_ = n.log.Close()
			}
		}
	}()

	want := func(n int) [][]byte {
		var out [][]byte
		for j := range n {
			out = append(out, fmt.Appendf(nil, "cmd-%05d", j))
		}
		return out
	}
	agree := func(n int, exact bool) {
		t.Helper()
		eventually(t, 10*time.Second, fmt.Sprintf("every FSM to apply %d commands", n), func() bool {
			for _, nd := range nodes {
				if len(nd.fsm.contents()) < n {
					return false
				}
			}
			return true
		})
		ref := nodes[0].fsm.contents()
		for _, nd := range nodes[1:] {
			eventually(t, 5*time.Second, "identical FSMs", func() bool {
				return slices.EqualFunc(nd.fsm.contents(), ref, func(a, b []byte) bool { return string(a) == string(b) })
			})
		}
		if exact && !slices.EqualFunc(ref, want(n), func(a, b []byte) bool { return string(a) == string(b) }) {
			t.Fatalf("FSMs hold %d commands, not the %d applied in order", len(ref), n)
		}
	}

	retried := applyAll(t, nodes, 0, 1000)
	agree(1000, !retried)
	// Every WAL was compacted after a snapshot (a prefix DeleteRange), or
	// emptied by installing the leader's snapshot (DeleteRange of all).
	for _, n := range nodes {
		eventually(t, 5*time.Second, string(n.id)+" to compact its WAL after a snapshot", func() bool {
			first, _ := n.log.FirstIndex()
			return first != 1
		})
	}

	// Cut a follower's power, move the cluster on, restart the follower
	// from its WAL. The first time the cluster moves far enough to compact
	// past it (it installs a snapshot, empties its WAL and stores on from
	// the snapshot's index); the second time it catches up from the
	// leader's trailing entries on top of its own WAL.
	applied := 1000
	for round, missed := range []int{300, 30} {
		var f *raftNode
		for _, n := range nodes {
			if n.raft.State() != raft.Leader {
				f = n
				break
			}
		}
		if err := f.raft.Shutdown().Error(); err != nil {
			t.Fatal(err)
		}
		f.raft = nil
		f.mem.Crash(newRand(uint64(round))) // f.log is dead: never used or closed again
		retried = applyAll(t, nodes, applied, applied+missed) || retried
		applied += missed
		f.start(t, nodes, nil)
		if ok, err := raft.HasExistingState(f.log, f.log, f.snaps); !ok || err != nil {
			t.Fatalf("restarted node has no state: %v, %v", ok, err)
		}
		agree(applied, !retried)
		retried = applyAll(t, nodes, applied, applied+100) || retried
		applied += 100
		agree(applied, !retried)
		if term, err := f.log.GetUint64([]byte("CurrentTerm")); err != nil || term != f.raft.CurrentTerm() {
			t.Fatalf("stable CurrentTerm %d (%v), raft's %d", term, err, f.raft.CurrentTerm())
		}
	}
}
