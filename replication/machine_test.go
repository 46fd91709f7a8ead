package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// smEntry is one command as a listSM applied it.
type smEntry struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Cmd   string `json:"cmd"`
}

// listSM is a metadata-style state machine: it keeps every command in
// order; its snapshot is that list as JSON.
type listSM struct {
	mu       sync.Mutex
	entries  []smEntry
	restores int
}

func (s *listSM) Apply(index, term uint64, cmd []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, smEntry{Index: index, Term: term, Cmd: string(cmd)})
	return fmt.Sprintf("%d:%s", len(s.entries), cmd)
}

func (s *listSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(s.entries)
}

func (s *listSM) Restore(data []byte) error {
	var entries []smEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = entries
	s.restores++
	return nil
}

func (s *listSM) state() ([]smEntry, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.entries), s.restores
}

// machines is a Machine on each of n simulated brokers.
type machines struct {
	t       *testing.T
	brokers []*testBroker
	peers   []Peer
	ms      []*Machine // nil while closed
	sms     []*listSM
}

func newMachines(t *testing.T, n int) *machines {
	c := &machines{t: t}
	for i := range n {
		b := newBroker(t, int32(i+1))
		c.brokers = append(c.brokers, b)
		c.peers = append(c.peers, Peer{ID: b.id, Addr: b.addr})
	}
	c.ms, c.sms = make([]*Machine, n), make([]*listSM, n)
	for i := range n {
		c.open(i)
	}
	return c
}

// open starts member i on its directory with a fresh, empty state machine.
func (c *machines) open(i int) {
	c.t.Helper()
	b := c.brokers[i]
	sm := &listSM{}
	m, err := OpenMachine(MachineConfig{
		ID: "__cluster_metadata", LocalID: b.id, Peers: c.peers, Dir: "/data/raft/meta",
		FS: b.fs, Mux: b.mux, Timing: testTiming, Logger: testLogger().With("broker", b.id),
	}, sm)
	if err != nil {
		c.t.Fatalf("OpenMachine on broker %d: %v", b.id, err)
	}
	c.ms[i], c.sms[i] = m, sm
	c.t.Cleanup(func() {
		if c.ms[i] == m {
			c.close(i)
		}
	})
}

func (c *machines) close(i int) {
	c.t.Helper()
	if err := c.ms[i].Close(); err != nil {
		c.t.Errorf("Close machine on broker %d: %v", c.brokers[i].id, err)
	}
	c.ms[i] = nil
}

// waitLeader waits for one open member to lead with every other open
// member naming it.
func (c *machines) waitLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	eventually(c.t, timeout, func() error {
		leader = -1
		for i, m := range c.ms {
			if m != nil && m.IsLeader() {
				if leader >= 0 {
					return errors.New("two leaders")
				}
				leader = i
			}
		}
		if leader < 0 {
			return errors.New("no leader")
		}
		for i, m := range c.ms {
			if m != nil && m.Leader() != c.brokers[leader].id {
				return fmt.Errorf("broker %d names %d as leader", c.brokers[i].id, m.Leader())
			}
		}
		return nil
	})
	return leader
}

// agree waits until every open member is caught up and holds the same
// state, and returns it.
func (c *machines) agree(timeout time.Duration) []smEntry {
	c.t.Helper()
	var want []smEntry
	eventually(c.t, timeout, func() error {
		want = nil
		first := -1
		for i, m := range c.ms {
			if m == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			ok := m.CaughtUp(ctx)
			cancel()
			if !ok {
				return fmt.Errorf("broker %d not caught up", c.brokers[i].id)
			}
			got, _ := c.sms[i].state()
			if first < 0 {
				first, want = i, got
				continue
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("broker %d holds %d entries, broker %d %d", c.brokers[i].id, len(got), c.brokers[first].id, len(want))
			}
		}
		return nil
	})
	return want
}

// propose proposes cmd on member i and checks the state machine's result:
// cmd is the n-th command applied.
func (c *machines) propose(i int, cmd string, n int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.ms[i].Propose(ctx, []byte(cmd))
	if err != nil {
		c.t.Fatalf("Propose(%q): %v", cmd, err)
	}
	if want := fmt.Sprintf("%d:%s", n, cmd); res != want {
		c.t.Fatalf("Propose(%q) = %v, want %q", cmd, res, want)
	}
}

// cmds lists the commands of a state.
func cmds(es []smEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Cmd)
	}
	return out
}

// TestMachine: a 3-member Machine applies proposals on its leader and
// returns their results, refuses them elsewhere naming the leader, and a
// restarted member (or the whole group) rebuilds identical state from its
// snapshot plus its WAL.
func TestMachine(t *testing.T) {
	c := newMachines(t, 3)
	li := c.waitLeader(10 * time.Second)
	leaderID := c.brokers[li].id
	for i, m := range c.ms {
		if i == li {
			continue
		}
		_, err := m.Propose(context.Background(), []byte("nope"))
		var nle *NotLeaderError
		if !errors.As(err, &nle) || nle.Leader != leaderID {
			t.Fatalf("Propose on follower %d: %v, want NotLeaderError{Leader: %d}", c.brokers[i].id, err, leaderID)
		}
	}
	var want []string
	for i := range 20 {
		cmd := fmt.Sprintf("cmd-%02d", i)
		c.propose(li, cmd, len(want)+1)
		want = append(want, cmd)
	}
	state := c.agree(10 * time.Second)
	if !slices.Equal(cmds(state), want) {
		t.Fatalf("state %q, want %q", cmds(state), want)
	}
	for i := 1; i < len(state); i++ {
		if state[i].Index <= state[i-1].Index || state[i].Term < state[i-1].Term {
			t.Fatalf("entries out of order: %+v then %+v", state[i-1], state[i])
		}
	}

	// A follower snapshots, more commands follow, and it restarts: it
	// restores the snapshot and replays the WAL after it.
	fi := (li + 1) % 3
	if err := c.ms[fi].node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("follower snapshot: %v", err)
	}
	for i := range 10 {
		cmd := fmt.Sprintf("after-snap-%d", i)
		c.propose(li, cmd, len(want)+1)
		want = append(want, cmd)
	}
	c.agree(10 * time.Second)
	c.close(fi)
	c.propose(li, "while-down", len(want)+1)
	want = append(want, "while-down")
	c.open(fi)
	state = c.agree(10 * time.Second)
	if !slices.Equal(cmds(state), want) {
		t.Fatalf("state after a follower restart %q, want %q", cmds(state), want)
	}
	if _, restores := c.sms[fi].state(); restores != 1 {
		t.Fatalf("restarted follower restored %d snapshots, want 1", restores)
	}

	// The leader snapshots and restarts: another member takes over.
	if err := c.ms[li].node.raft.Snapshot().Error(); err != nil {
		t.Fatalf("leader snapshot: %v", err)
	}
	c.close(li)
	ni := c.waitLeader(10 * time.Second)
	c.propose(ni, "new-leader", len(want)+1)
	want = append(want, "new-leader")
	c.open(li)
	state = c.agree(10 * time.Second)
	if !slices.Equal(cmds(state), want) {
		t.Fatalf("state after a leader restart %q, want %q", cmds(state), want)
	}

	// The whole group restarts.
	for i := range c.ms {
		c.close(i)
	}
	for i := range c.ms {
		c.open(i)
	}
	c.waitLeader(10 * time.Second)
	after := c.agree(10 * time.Second)
	if !slices.Equal(after, state) {
		t.Fatalf("state after a full restart %+v, want %+v", after, state)
	}
}
