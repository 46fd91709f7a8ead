package replication

// TESTPLAN row 9, Raft invariants: one partition group on five members,
// each with its own disk (the fault-injecting in-memory filesystem, whose
// crash image drops everything not fsynced), its own WAL and its own
// transport.Mux on real TCP, every connection dialed through a
// netfault.Network. Writers append uniquely valued batches through
// whichever member is the ready leader while a seeded nemesis partitions
// (majority/minority, bridge, leader blackholed or cut, one-way links,
// flapping), slows (delay, jitter, loss), resets connections and kills
// members (power loss) and restarts them. A sampler checks throughout:
//
//   - at most one leader per term (sampled raft state, and the epochs
//     OnLeader reports as ready);
//   - per member incarnation, commit index, applied index and the
//     partition's high watermark never go back (hashicorp/raft keeps the
//     commit index in memory only: a restarted member, or one that
//     installed a snapshot, may have applied past it, so applied <= commit
//     is not an invariant);
//   - every member's committed log, read at any time, is a prefix of every
//     other's (checked against the longest seen so far, then the final log).
//
// After the last heal it checks liveness (new appends succeed), that all
// members hold byte-identical logs, that offsets are dense and leader
// epochs never go down along the log, that no value appears twice and
// every acknowledged value sits at its acknowledged offset; then that a
// follower blackholed for several election timeouts and healed leaves the
// leader and its term unchanged (pre-vote).
//
// Replay a seed: VARVE_SEED=<n> go test -race -run TestRaftInvariants ./replication
// Random seeds: VARVE_SEED=random; several: VARVE_RAFT_SEEDS=<count> (seed,
// seed+1, ...); a longer nemesis: VARVE_RAFT_DURATION=2m.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/integration/netfault"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication/transport"
)

const invMembers = 5

// invSeeds are the seeds to run: 1 by default, VARVE_SEED's (a number or
// "random"), and VARVE_RAFT_SEEDS consecutive ones from there.
func invSeeds(t *testing.T) []uint64 {
	base := uint64(1)
	switch s := os.Getenv("VARVE_SEED"); s {
	case "":
	case "random":
		base = uint64(time.Now().UnixNano())
	default:
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("VARVE_SEED=%q: %v", s, err)
		}
		base = v
	}
	n := 1
	if s := os.Getenv("VARVE_RAFT_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("VARVE_RAFT_SEEDS=%q", s)
		}
		n = v
	}
	var seeds []uint64
	for i := range n {
		seeds = append(seeds, base+uint64(i))
	}
	return seeds
}

func TestRaftInvariantsUnderFaults(t *testing.T) {
	dur := 20 * time.Second
	if s := os.Getenv("VARVE_RAFT_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("VARVE_RAFT_DURATION=%q: %v", s, err)
		}
		dur = d
	}
	for _, seed := range invSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d; replay with VARVE_SEED=%d go test -race -run 'TestRaftInvariantsUnderFaults' ./replication", seed, seed)
			runInvariants(t, seed, dur)
		})
	}
}

// invMember is one member's slot: its disk and address survive restarts.
type invMember struct {
	id   int32
	addr string
	fs   *vfs.Mem
	cfg  GroupConfig
	// Under invCluster.mu; nil while down.
	mux   *transport.Mux
	g     *Group
	watch *memberWatch
}

// memberWatch is what one incarnation of a member has shown so far.
type memberWatch struct {
	commit, applied uint64
	hwm             int64
}

type invCluster struct {
	t     *testing.T
	nw    *netfault.Network
	crash *rand.Rand // crash images; the nemesis has its own generator
	ms    []*invMember
	byAdr map[string]int32

	mu sync.Mutex // guards each member's mux, g, watch and fs

	vmu         sync.Mutex
	viol        []string
	termLeader  map[uint64]int32 // sampled: a member in state Leader for a whole read of its term
	epochLeader map[int32]int32  // OnLeader: a member ready in an epoch
	ref         []byte           // the longest committed log sampled so far
	samples     int
}

func (c *invCluster) violation(format string, args ...any) {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	if len(c.viol) < 50 {
		c.viol = append(c.viol, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
	}
}

func newInvCluster(t *testing.T, seed uint64) *invCluster {
	c := &invCluster{t: t, nw: netfault.New(seed), crash: rand.New(rand.NewPCG(seed, 99)), byAdr: map[string]int32{},
		termLeader: map[uint64]int32{}, epochLeader: map[int32]int32{}}
	c.nw.SetLogf(t.Logf)
	gid := "9e1d3c2a-0000-4000-8000-000000000009-0"
	var peers []Peer
	lns := map[int32]net.Listener{}
	for i := range invMembers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		id := int32(i + 1)
		lns[id] = ln
		m := &invMember{id: id, addr: ln.Addr().String(), fs: vfs.NewMem()}
		c.ms = append(c.ms, m)
		c.byAdr[m.addr] = id
		peers = append(peers, Peer{ID: id, Addr: m.addr})
	}
	for _, m := range c.ms {
		id := m.id
		m.cfg = GroupConfig{
			ID:        gid,
			LocalID:   id,
			Peers:     peers,
			EpochBase: testEpochBase,
			RaftDir:   "/data/raft/" + gid,
			Log:       partition.Options{Dir: "/data/topic-0"},
			Timing:    testTiming,
			Logger:    testLogger().With("broker", id),
			// Snapshots every 32 KiB of entries and a short WAL tail, so
			// members that were down or cut off catch up by InstallSnapshot
			// over the faulty links too.
			SnapshotBytes:   32 << 10,
			SnapshotEntries: 64,
			TrailingLogs:    32,
			OnLeader: func(epoch int32) {
				c.vmu.Lock()
				defer c.vmu.Unlock()
				if prev, ok := c.epochLeader[epoch]; ok && prev != id {
					c.viol = append(c.viol, fmt.Sprintf("epoch %d: members %d and %d both became the ready leader", epoch, prev, id))
				}
				c.epochLeader[epoch] = id
			},
		}
	}
	t.Cleanup(func() {
		for _, m := range c.ms {
			c.mu.Lock()
			g, mux := m.g, m.mux
			m.g, m.mux = nil, nil
			c.mu.Unlock()
			if g != nil {
				_ = g.Close()
			}
			if mux != nil {
				_ = mux.Close()
			}
		}
	})
	var wg sync.WaitGroup
	for i, m := range c.ms {
		wg.Go(func() { c.start(i, lns[m.id]) })
	}
	wg.Wait()
	return c
}

func (c *invCluster) idOf(addr string) int32 { return c.byAdr[addr] }

// start opens member i's transport and group on its disk (ln: its listener
// when already bound). A member must always come back: restart never
// refuses to boot.
func (c *invCluster) start(i int, ln net.Listener) {
	m := c.ms[i]
	var err error
	if ln == nil {
		if ln, err = relisten(m.addr); err != nil {
			c.t.Errorf("member %d: listen: %v", m.id, err)
			return
		}
	}
	mux, err := transport.New(transport.Config{LocalAddr: raft.ServerAddress(m.addr), ClusterID: "invariants",
		Logger: testLogger(), Dial: c.nw.Dialer(m.id, c.idOf)}, c.nw.Listener(m.id, ln))
	if err != nil {
		_ = ln.Close()
		c.t.Errorf("member %d: transport: %v", m.id, err)
		return
	}
	c.mu.Lock()
	cfg := m.cfg
	cfg.Mux = mux
	cfg.Log.FS = m.fs
	c.mu.Unlock()
	g, err := OpenGroup(cfg)
	if err != nil {
		_ = mux.Close()
		c.t.Errorf("member %d refuses to boot: %v", m.id, err)
		return
	}
	c.mu.Lock()
	m.mux, m.g, m.watch = mux, g, &memberWatch{}
	c.mu.Unlock()
}

// relisten binds addr again, retrying while the old socket goes away.
func relisten(addr string) (net.Listener, error) {
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

// kill cuts member i's power: its network first (nothing it does from now
// on reaches anyone), then its disk becomes the crash image, then the
// abandoned group and transport are closed against the old disk.
func (c *invCluster) kill(i int) {
	m := c.ms[i]
	c.nw.Isolate(m.id, true)
	c.mu.Lock()
	g, mux := m.g, m.mux
	m.g, m.mux, m.watch = nil, nil, nil
	m.fs = m.fs.CrashClone(c.crash)
	c.mu.Unlock()
	if g != nil {
		_ = g.Close()
	}
	if mux != nil {
		_ = mux.Close()
	}
	c.nw.Isolate(m.id, false)
}

// group is member i's running group, nil while down.
func (c *invCluster) group(i int) *Group {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ms[i].g
}

// leader is the slot of a ready leader, -1 when none.
func (c *invCluster) leader() int {
	for i := range c.ms {
		if g := c.group(i); g != nil && g.IsReady() {
			return i
		}
	}
	return -1
}

// sample checks the per-member invariants once.
func (c *invCluster) sample(withLogs bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.ms {
		if m.g == nil {
			continue
		}
		r, w := m.g.node.raft, m.watch
		t1 := r.CurrentTerm()
		st := r.State()
		applied := r.AppliedIndex()
		commit := r.CommitIndex()
		t2 := r.CurrentTerm()
		hwm := m.g.Log().LogEndOffset()
		if st == raft.Leader && t1 == t2 {
			c.vmu.Lock()
			if prev, ok := c.termLeader[t1]; ok && prev != m.id {
				c.viol = append(c.viol, fmt.Sprintf("term %d: members %d and %d both seen as leader", t1, prev, m.id))
			}
			c.termLeader[t1] = m.id
			c.vmu.Unlock()
		}
		if commit < w.commit {
			c.violation("member %d: commit index went back %d -> %d", m.id, w.commit, commit)
		}
		if applied < w.applied {
			c.violation("member %d: applied index went back %d -> %d", m.id, w.applied, applied)
		}
		if hwm < w.hwm {
			c.violation("member %d: high watermark went back %d -> %d", m.id, w.hwm, hwm)
		}
		w.commit, w.applied, w.hwm = max(w.commit, commit), max(w.applied, applied), max(w.hwm, hwm)
		if withLogs {
			// A read can race a snapshot install closing the log: skip it.
			if data, err := tryReadAll(m.g.Log()); err == nil {
				c.checkPrefix(m.id, data)
			}
		}
	}
}

// checkPrefix requires data to agree with the longest committed log seen
// so far (one is a prefix of the other) and keeps the longer.
func (c *invCluster) checkPrefix(id int32, data []byte) {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	c.samples++
	n := min(len(data), len(c.ref))
	if !bytes.Equal(data[:n], c.ref[:n]) {
		c.viol = append(c.viol, fmt.Sprintf("member %d: committed log (%d bytes) disagrees with one sampled earlier (%d bytes) within the first %d bytes",
			id, len(data), len(c.ref), n))
		return
	}
	if len(data) > len(c.ref) {
		c.ref = data
	}
}

// invAcks records the writers' outcomes.
type invAcks struct {
	mu      sync.Mutex
	ok      map[string]int64 // value -> acknowledged base offset
	unknown int              // errors: the batch may or may not be in the log
	sent    map[string]bool
}

func (a *invAcks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ok)
}

// writer appends one-record batches with unique values through the ready
// leader until ctx ends. Each value is proposed once: an error is an
// indeterminate outcome, never retried.
func (c *invCluster) writer(ctx context.Context, w int, acks *invAcks) {
	for seq := 0; ctx.Err() == nil; {
		li := c.leader()
		if li < 0 {
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		g := c.group(li)
		if g == nil {
			continue
		}
		v := fmt.Sprintf("w%d-%06d", w, seq)
		seq++
		acks.mu.Lock()
		acks.sent[v] = true
		acks.mu.Unlock()
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := g.Append(actx, makeBatch(v))
		cancel()
		acks.mu.Lock()
		if err == nil {
			acks.ok[v] = res.BaseOffset
		} else {
			acks.unknown++
		}
		acks.mu.Unlock()
		sleepCtx(ctx, 3*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// nemesis applies a random fault every 0.7-1.8 s until end, healing the
// previous one first; it returns a description of each step and how many
// members it killed. The seed fixes the sequence of fault kinds and their
// parameters; who "the leader" is, and so which member a leader-targeted
// fault hits, and how many steps fit in the time, follow the run.
func (c *invCluster) nemesis(rng *rand.Rand, end time.Time) (steps []string, kills int) {
	ids := make([]int32, len(c.ms))
	for i, m := range c.ms {
		ids[i] = m.id
	}
	var down []int
	for time.Now().Before(end) {
		// Bring back each killed member with probability 0.6.
		down = slices.DeleteFunc(down, func(i int) bool {
			if rng.Float64() < 0.6 {
				c.start(i, nil)
				steps = append(steps, fmt.Sprintf("restart %d", c.ms[i].id))
				return true
			}
			return false
		})
		c.nw.Heal()
		// Drawn whether or not there is a leader, so the sequence of
		// draws (fault kinds and parameters) depends on the seed alone.
		li, anyone := c.leader(), rng.IntN(len(c.ms))
		if li < 0 {
			li = anyone
		}
		lid := c.ms[li].id
		others := slices.DeleteFunc(slices.Clone(ids), func(id int32) bool { return id == lid })
		hold := 700*time.Millisecond + time.Duration(rng.Int64N(int64(1100*time.Millisecond)))
		var step string
		var flapping <-chan struct{}
		var stopFlap context.CancelFunc
		switch k := rng.IntN(10); k {
		case 0:
			step = "calm"
		case 1:
			maj, mino := netfault.Split(rng, ids)
			c.nw.Partition(maj, mino)
			step = fmt.Sprintf("partition %v | %v", maj, mino)
		case 2:
			s := slices.Clone(ids)
			rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
			c.nw.Bridge(s[0], s[1:3], s[3:])
			step = fmt.Sprintf("bridge %d between %v and %v", s[0], s[1:3], s[3:])
		case 3:
			c.nw.Blackhole(lid)
			step = fmt.Sprintf("blackhole leader %d", lid)
		case 4:
			c.nw.PartitionWith(netfault.Fault{Refuse: true}, []int32{lid}, others)
			step = fmt.Sprintf("cut leader %d", lid)
		case 5:
			out := rng.IntN(2) == 0
			for _, o := range others {
				if out {
					c.nw.Set(lid, o, netfault.Fault{Blackhole: true})
				} else {
					c.nw.Set(o, lid, netfault.Fault{Blackhole: true})
				}
			}
			step = fmt.Sprintf("one-way blackhole of leader %d (outbound %v)", lid, out)
		case 6:
			f := netfault.Fault{Delay: time.Duration(1+rng.IntN(20)) * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.01 + rng.Float64()*0.04}
			c.nw.SetAll(f)
			step = fmt.Sprintf("slow lossy network %v", f)
		case 7:
			f := netfault.Fault{Reset: 0.002 + rng.Float64()*0.02}
			c.nw.SetAll(f)
			step = fmt.Sprintf("random resets %v", f)
		case 8:
			if len(down) >= 2 {
				step = "calm (two members down)"
				break
			}
			victim := li
			if rng.IntN(2) == 0 {
				victim = rng.IntN(len(c.ms))
			}
			if slices.Contains(down, victim) {
				step = "calm (victim down)"
				break
			}
			c.kill(victim)
			down = append(down, victim)
			kills++
			step = fmt.Sprintf("kill %d", c.ms[victim].id)
		case 9:
			var ctx context.Context
			ctx, stopFlap = context.WithCancel(context.Background())
			every := time.Duration(150+rng.IntN(250)) * time.Millisecond
			frng := rand.New(rand.NewPCG(rng.Uint64(), 0))
			flapping = c.nw.Flap(ctx, every, func() {
				maj, mino := netfault.Split(frng, ids)
				c.nw.Partition(maj, mino)
			})
			step = fmt.Sprintf("flapping majority/minority every %v", every)
		}
		c.t.Logf("nemesis %s: %s for %v", time.Now().Format("15:04:05.000"), step, hold)
		steps = append(steps, step)
		time.Sleep(hold)
		if stopFlap != nil {
			stopFlap()
			<-flapping
		}
	}
	for _, i := range down {
		c.start(i, nil)
		steps = append(steps, fmt.Sprintf("restart %d", c.ms[i].id))
	}
	c.nw.Heal()
	return steps, kills
}

// converged waits until every member holds byte-identical logs and returns
// them.
func (c *invCluster) converged(timeout time.Duration) []byte {
	c.t.Helper()
	var want []byte
	eventually(c.t, timeout, func() error {
		want = nil
		var first *partition.Log
		for i, m := range c.ms {
			g := c.group(i)
			if g == nil {
				return fmt.Errorf("member %d is down", m.id)
			}
			l := g.Log()
			data, err := tryReadAll(l)
			if err != nil {
				return fmt.Errorf("member %d: %w", m.id, err)
			}
			if first == nil {
				first, want = l, data
				continue
			}
			if l.LogStartOffset() != first.LogStartOffset() || l.LogEndOffset() != first.LogEndOffset() {
				return fmt.Errorf("member %d holds [%d, %d), member %d [%d, %d)", m.id,
					l.LogStartOffset(), l.LogEndOffset(), c.ms[0].id, first.LogStartOffset(), first.LogEndOffset())
			}
			if !bytes.Equal(data, want) {
				return fmt.Errorf("member %d: log bytes differ", m.id)
			}
		}
		return nil
	})
	return want
}

func runInvariants(t *testing.T, seed uint64, dur time.Duration) {
	c := newInvCluster(t, seed)
	if t.Failed() {
		t.FailNow()
	}
	c.waitLeader(30 * time.Second)

	acks := &invAcks{ok: map[string]int64{}, sent: map[string]bool{}}
	wctx, stopWriters := context.WithCancel(context.Background())
	defer stopWriters()
	var writers sync.WaitGroup
	const nWriters = 4
	for w := range nWriters {
		writers.Go(func() { c.writer(wctx, w, acks) })
	}
	sctx, stopSampler := context.WithCancel(context.Background())
	defer stopSampler()
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for tick := 0; sctx.Err() == nil; tick++ {
			c.sample(tick%20 == 0)
			sleepCtx(sctx, 20*time.Millisecond)
		}
	})

	steps, kills := c.nemesis(rand.New(rand.NewPCG(seed, 1)), time.Now().Add(dur))
	if t.Failed() {
		stopWriters()
		writers.Wait()
		stopSampler()
		sampler.Wait()
		t.FailNow()
	}

	// Liveness after the last heal: a leader, and new acknowledgements.
	c.waitLeader(60 * time.Second)
	before := acks.count()
	eventually(t, 60*time.Second, func() error {
		if n := acks.count(); n < before+50 {
			return fmt.Errorf("%d acknowledgements since the heal", n-before)
		}
		return nil
	})
	stopWriters()
	writers.Wait()
	final := c.converged(60 * time.Second)
	c.sample(true)
	stopSampler()
	sampler.Wait()

	c.checkFinal(final, acks)
	terms := c.preVote()

	var snaps, restores int64
	for i := range c.ms {
		st := c.group(i).Stats()
		snaps, restores = snaps+st.Snapshots, restores+st.Restores
	}
	c.vmu.Lock()
	defer c.vmu.Unlock()
	acks.mu.Lock()
	t.Logf("row 9 seed %d: %d nemesis steps (%d kills), %d acknowledged, %d indeterminate, %d batches in the final log, "+
		"%d terms with a sampled leader, %d ready epochs, %d log samples, %d snapshots, %d installs; network %+v",
		seed, len(steps), kills, len(acks.ok), acks.unknown, len(splitBatches(t, final)), len(c.termLeader), len(c.epochLeader),
		c.samples, snaps, restores, c.nw.Stats())
	acks.mu.Unlock()
	t.Logf("terms after the pre-vote check: %v", terms)
	for _, v := range c.viol {
		t.Error(v)
	}
}

// waitLeader waits until one member is the ready leader and every running
// member names it.
func (c *invCluster) waitLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	eventually(c.t, timeout, func() error {
		leader = c.leader()
		if leader < 0 {
			return errors.New("no ready leader")
		}
		for i, m := range c.ms {
			if g := c.group(i); g != nil && i != leader {
				if id, _ := g.Leader(); id != c.ms[leader].id {
					return fmt.Errorf("member %d names leader %d, not %d", m.id, id, c.ms[leader].id)
				}
			}
		}
		return nil
	})
	return leader
}

// checkFinal checks the converged log against everything observed.
func (c *invCluster) checkFinal(final []byte, acks *invAcks) {
	t := c.t
	t.Helper()
	c.vmu.Lock()
	if !bytes.HasPrefix(final, c.ref) {
		c.viol = append(c.viol, fmt.Sprintf("the final log (%d bytes) does not extend the longest log sampled during the run (%d bytes)", len(final), len(c.ref)))
	}
	c.vmu.Unlock()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	at := map[string]int64{}
	next, lastEpoch := int64(0), int32(-1)
	for _, b := range splitBatches(t, final) {
		h, err := partition.ParseBatchHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if h.BaseOffset != next {
			c.violation("batch at offset %d, expected %d: offsets not dense", h.BaseOffset, next)
		}
		if h.PartitionLeaderEpoch < lastEpoch {
			c.violation("batch at offset %d has leader epoch %d after epoch %d", h.BaseOffset, h.PartitionLeaderEpoch, lastEpoch)
		}
		lastEpoch = max(lastEpoch, h.PartitionLeaderEpoch)
		next = h.NextOffset()
		for k, v := range batchValues(t, b) {
			off := h.BaseOffset + int64(k)
			if prev, dup := at[v]; dup {
				c.violation("value %q at offsets %d and %d", v, prev, off)
			}
			if !acks.sent[v] {
				c.violation("value %q at offset %d was never sent", v, off)
			}
			at[v] = off
		}
	}
	lost := 0
	for v, off := range acks.ok {
		if got, ok := at[v]; !ok || got != off {
			if lost++; lost <= 10 {
				c.violation("acknowledged %q at offset %d; the log has it at %d (present %v)", v, off, got, ok)
			}
		}
	}
	if lost > 10 {
		c.violation("%d acknowledged values lost or moved in all", lost)
	}
}

// preVote blackholes a follower for six election timeouts, heals it and
// lets it catch up: the leader and its term must not change, and the
// follower's term must not move while it is cut off. It returns the
// terms it saw.
func (c *invCluster) preVote() []uint64 {
	t := c.t
	t.Helper()
	li := c.waitLeader(30 * time.Second)
	leader := c.group(li)
	term := leader.Stats().Term
	fi := (li + 1) % len(c.ms)
	follower := c.group(fi)
	fterm := follower.Stats().Term
	lid, fid := c.ms[li].id, c.ms[fi].id
	t.Logf("pre-vote check: leader %d at term %d; blackholing follower %d (term %d)", lid, term, fid, fterm)
	c.nw.Blackhole(fid)
	check := func(what string) error {
		if !leader.IsReady() {
			return fmt.Errorf("%s: leader %d is no longer the ready leader", what, lid)
		}
		if got := leader.Stats().Term; got != term {
			return fmt.Errorf("%s: leader %d term %d, was %d", what, lid, got, term)
		}
		return nil
	}
	var errs []string
	for end := time.Now().Add(6 * testTiming.Election); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := check("while a follower is blackholed"); err != nil {
			errs = append(errs, err.Error())
			break
		}
	}
	if got := follower.Stats().Term; got != fterm {
		errs = append(errs, fmt.Sprintf("the blackholed follower's term moved %d -> %d: pre-vote should keep it", fterm, got))
	}
	c.nw.Heal()
	var more []string
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v := fmt.Sprintf("prevote-%d", i)
		if _, err := leader.Append(ctx, makeBatch(v)); err != nil {
			errs = append(errs, fmt.Sprintf("append after healing: %v", err))
		}
		cancel()
		more = append(more, v)
	}
	eventually(t, 20*time.Second, func() error {
		if l, f := leader.Log().LogEndOffset(), follower.Log().LogEndOffset(); l != f {
			return fmt.Errorf("healed follower at %d, leader at %d", f, l)
		}
		return nil
	})
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := check("after healing"); err != nil {
			errs = append(errs, err.Error())
			break
		}
	}
	var terms []uint64
	for i := range c.ms {
		terms = append(terms, c.group(i).Stats().Term)
	}
	for _, e := range errs {
		c.violation("pre-vote: %s", e)
	}
	data := c.converged(20 * time.Second)
	for _, v := range more {
		if !strings.Contains(string(data), v) {
			c.violation("pre-vote: %q acknowledged after healing is not in the log", v)
		}
	}
	return terms
}

// TestInvariantCheckerCatches feeds the checks above logs that break each
// invariant, so a passing run means the checks held, not that they were
// blind.
func TestInvariantCheckerCatches(t *testing.T) {
	c := &invCluster{t: t, termLeader: map[uint64]int32{}, epochLeader: map[int32]int32{}}
	b0, b1, b2 := makeBatch("w0-000000"), makeBatch("w0-000001"), makeBatch("w1-000000")
	good := slices.Concat(stamped(b0, 0, 101), stamped(b1, 1, 101))
	c.checkPrefix(1, good[:len(b0)])
	c.checkPrefix(2, good)
	if len(c.viol) != 0 {
		t.Fatalf("agreeing prefixes reported: %v", c.viol)
	}
	c.checkPrefix(3, slices.Concat(stamped(b0, 0, 101), stamped(b2, 1, 101)))
	if len(c.viol) != 1 {
		t.Fatalf("a diverging log was not reported: %v", c.viol)
	}

	cases := map[string][]byte{
		"offsets not dense":         slices.Concat(stamped(b0, 0, 101), stamped(b1, 2, 101)),
		"epoch 100 after epoch 101": slices.Concat(stamped(b0, 0, 101), stamped(b1, 1, 100)),
		"at offsets 0 and 1":        slices.Concat(stamped(b0, 0, 101), stamped(b0, 1, 101)),
		"was never sent":            slices.Concat(stamped(b0, 0, 101), stamped(b1, 1, 101), stamped(b2, 2, 101)),
		"the log has it at 0":       slices.Concat(stamped(b1, 0, 101), stamped(b0, 1, 101)),
	}
	for want, log := range cases {
		c.viol, c.ref = nil, nil
		acks := &invAcks{ok: map[string]int64{"w0-000000": 0, "w0-000001": 1}, sent: map[string]bool{"w0-000000": true, "w0-000001": true}}
		c.checkFinal(log, acks)
		if !slices.ContainsFunc(c.viol, func(v string) bool { return strings.Contains(v, want) }) {
			t.Errorf("%s: not reported; got %q", want, c.viol)
		}
	}
	c.viol, c.ref = nil, good
	c.checkFinal(good[:len(b0)], &invAcks{ok: map[string]int64{}, sent: map[string]bool{"w0-000000": true, "w0-000001": true}})
	if !slices.ContainsFunc(c.viol, func(v string) bool { return strings.Contains(v, "does not extend") }) {
		t.Errorf("a final log shorter than a sampled one was not reported: %q", c.viol)
	}
}
