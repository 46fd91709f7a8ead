package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
)

// soloConfig is a single-voter group on broker b, its files on fsys.
func soloConfig(b *testBroker, fsys vfs.FS, root string) GroupConfig {
	return GroupConfig{
		ID:        "solo",
		LocalID:   b.id,
		Peers:     []Peer{{ID: b.id, Addr: b.addr}},
		EpochBase: testEpochBase,
		RaftDir:   root + "/raft",
		Log:       partition.Options{Dir: root + "/topic-0", FS: fsys},
		Mux:       b.mux,
		Timing:    testTiming,
		Logger:    testLogger(),
	}
}

func mustOpenGroup(t *testing.T, cfg GroupConfig) *Group {
	t.Helper()
	g, err := OpenGroup(cfg)
	if err != nil {
		t.Fatalf("OpenGroup: %v", err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// waitReady waits for g to be the ready leader and returns its epoch.
func waitReady(t *testing.T, g *Group, timeout time.Duration) int32 {
	t.Helper()
	var epoch int32
	eventually(t, timeout, func() error {
		e, err := g.Ready()
		epoch = e
		return err
	})
	return epoch
}

// appended is what a test appended: the original batch and where it went.
type appended struct {
	batch []byte
	res   partition.AppendResult
	epoch int32
}

func expectAppended(t testing.TB, data []byte, as []appended) {
	t.Helper()
	var want [][]byte
	var offs []int64
	var epochs []int32
	for _, a := range as {
		want, offs, epochs = append(want, a.batch), append(offs, a.res.BaseOffset), append(epochs, a.epoch)
	}
	expectLog(t, data, want, offs, epochs)
}

// TestGroupSingleVoter: a one-voter group elects itself at once, becomes
// ready in epoch EpochBase+term, reports it to OnLeader, and appends
// batches at consecutive offsets, stamping base offset and leader epoch.
// It runs on the real filesystem.
func TestGroupSingleVoter(t *testing.T) {
	b := newBroker(t, 7)
	root := t.TempDir()
	onLeader := make(chan int32, 4)
	cfg := soloConfig(b, vfs.OS{}, root)
	cfg.EpochBase = 40
	cfg.OnLeader = func(e int32) { onLeader <- e }
	start := time.Now()
	g := mustOpenGroup(t, cfg)
	epoch := waitReady(t, g, 5*time.Second)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("single voter took %v to become ready", d)
	}
	st := g.Stats()
	if want := 40 + int32(st.Term); epoch != want {
		t.Fatalf("Ready epoch %d, want EpochBase+term = %d", epoch, want)
	}
	select {
	case e := <-onLeader:
		if e != epoch {
			t.Fatalf("OnLeader(%d), want %d", e, epoch)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnLeader not called")
	}
	if id, term := g.Leader(); id != 7 || term != st.Term {
		t.Fatalf("Leader() = %d, %d; want 7, %d", id, term, st.Term)
	}

	var as []appended
	next := int64(0)
	for i := range 20 {
		vals := make([]string, i%3+1)
		for j := range vals {
			vals[j] = fmt.Sprintf("b%02d-r%d", i, j)
		}
		batch := makeBatch(vals...)
		orig := bytes.Clone(batch)
		res := appendOK(t, g, batch)
		if !bytes.Equal(batch, orig) {
			t.Fatalf("Append changed the caller's batch")
		}
		if res.BaseOffset != next || res.LastOffset != next+int64(len(vals))-1 || res.Duplicate || res.LogStartOffset != 0 {
			t.Fatalf("append %d: %+v, want base %d last %d", i, res, next, next+int64(len(vals))-1)
		}
		next = res.LastOffset + 1
		as = append(as, appended{batch: orig, res: res, epoch: epoch})
	}
	l := g.Log()
	if l.LogStartOffset() != 0 || l.LogEndOffset() != next {
		t.Fatalf("log [%d, %d), want [0, %d)", l.LogStartOffset(), l.LogEndOffset(), next)
	}
	expectAppended(t, readAll(t, l), as)
	// A read at an offset inside a batch returns that whole batch.
	got, err := l.Read(as[7].res.BaseOffset+1, 1, next)
	if err != nil {
		t.Fatal(err)
	}
	if bs := splitBatches(t, got); len(bs) != 1 || !bytes.Equal(bs[0], stamped(as[7].batch, as[7].res.BaseOffset, epoch)) {
		t.Fatalf("Read inside batch 7 returned %d batches", len(bs))
	}
	if e, end := l.OffsetForLeaderEpoch(epoch); e != epoch || end != next {
		t.Fatalf("OffsetForLeaderEpoch(%d) = %d, %d; want %d, %d", epoch, e, end, epoch, next)
	}
	if e := l.EpochForOffset(0); e != epoch {
		t.Fatalf("EpochForOffset(0) = %d, want %d", e, epoch)
	}

	// The idempotent producer table works through the group: a retry is a
	// duplicate with the original offsets, a gap is refused, and neither
	// stops the replica.
	idem := makeIdempotentBatch(9, 0, 0, "i0", "i1")
	first := appendOK(t, g, bytes.Clone(idem))
	dup := appendOK(t, g, bytes.Clone(idem))
	if !dup.Duplicate || dup.BaseOffset != first.BaseOffset || dup.LastOffset != first.LastOffset {
		t.Fatalf("retry of an idempotent batch: %+v, want duplicate of %+v", dup, first)
	}
	ctx := context.Background()
	if _, err := g.Append(ctx, makeIdempotentBatch(9, 0, 7, "gap")); !errors.Is(err, partition.ErrOutOfOrderSequence) {
		t.Fatalf("sequence gap: %v, want ErrOutOfOrderSequence", err)
	}
	bad := makeBatch("corrupt")
	bad[len(bad)-1] ^= 0xff
	if _, err := g.Append(ctx, bad); !errors.Is(err, partition.ErrCorruptBatch) {
		t.Fatalf("corrupt batch: %v, want ErrCorruptBatch", err)
	}
	last := appendOK(t, g, makeBatch("after-errors"))
	if last.BaseOffset != first.LastOffset+1 {
		t.Fatalf("append after refused batches at %d, want %d", last.BaseOffset, first.LastOffset+1)
	}
	if s := g.Stats(); s.AppliedIndex <= st.AppliedIndex {
		t.Fatalf("applied index did not move: %d -> %d", st.AppliedIndex, s.AppliedIndex)
	}

	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := g.Append(ctx, makeBatch("late")); !errors.Is(err, ErrStopped) {
		t.Fatalf("Append after Close: %v, want ErrStopped", err)
	}
	if _, err := g.Ready(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Ready after Close: %v, want ErrStopped", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestGroupRemove deletes the partition and raft directories.
func TestGroupRemove(t *testing.T) {
	b := newBroker(t, 1)
	cfg := soloConfig(b, b.fs, "/rm")
	g := mustOpenGroup(t, cfg)
	waitReady(t, g, 5*time.Second)
	appendOK(t, g, makeBatch("x"))
	if err := g.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, dir := range []string{cfg.RaftDir, cfg.Log.Dir} {
		if _, err := b.fs.Stat(dir); err == nil {
			t.Errorf("%s still exists after Remove", dir)
		}
	}
}

// restartWorkload appends n batches (a mix of plain and idempotent ones)
// and returns them.
func restartWorkload(t *testing.T, g *Group, epoch int32, from, n int) []appended {
	t.Helper()
	var as []appended
	for i := from; i < from+n; i++ {
		var batch []byte
		if i%4 == 3 {
			batch = makeIdempotentBatch(77, 0, int32(i/4), fmt.Sprintf("idem-%d", i))
		} else {
			batch = makeBatch(fmt.Sprintf("v%03d-a", i), fmt.Sprintf("v%03d-b", i))
		}
		orig := bytes.Clone(batch)
		res := appendOK(t, g, batch)
		if res.Duplicate {
			t.Fatalf("batch %d was a duplicate", i)
		}
		as = append(as, appended{batch: orig, res: res, epoch: epoch})
	}
	return as
}

// TestGroupRestartReplay is the restart-replay invariant: raft re-applies
// every committed entry after its last snapshot at every start, and the
// partition must neither hold an entry twice nor lose one. With the
// checkpoint far behind, a graceful restart keeps everything (Close
// checkpoints), and a power loss truncates the partition to its last
// checkpoint and lets raft replay the rest from the WAL, which fsyncs
// before acknowledging: every acknowledged batch ends up exactly once, at
// its original offset, in the same bytes.
func TestGroupRestartReplay(t *testing.T) {
	const n = 24
	open := func(t *testing.T, b *testBroker, fsys vfs.FS, mod func(*GroupConfig)) *Group {
		cfg := soloConfig(b, fsys, "/replay")
		cfg.CheckpointInterval = time.Hour
		if mod != nil {
			mod(&cfg)
		}
		return mustOpenGroup(t, cfg)
	}
	// after checks the reopened group: same bytes, the producer table
	// survived (a retry is a duplicate), appends continue at the end in a
	// newer epoch.
	after := func(t *testing.T, g *Group, before []byte, as []appended, oldEpoch int32) {
		epoch := waitReady(t, g, 5*time.Second)
		if epoch <= oldEpoch {
			t.Fatalf("epoch after restart %d, want > %d", epoch, oldEpoch)
		}
		l := g.Log()
		data := readAll(t, l)
		if !bytes.Equal(data, before) {
			expectAppended(t, data, as)
			t.Fatalf("log bytes changed across the restart")
		}
		expectAppended(t, data, as)
		lastIdem := as[len(as)-1]
		for i := len(as) - 1; i >= 0; i-- {
			if h, _ := partition.ParseBatchHeader(as[i].batch); h.ProducerID == 77 {
				lastIdem = as[i]
				break
			}
		}
		dup := appendOK(t, g, bytes.Clone(lastIdem.batch))
		if !dup.Duplicate || dup.BaseOffset != lastIdem.res.BaseOffset {
			t.Fatalf("retry of the last idempotent batch after restart: %+v, want duplicate at %d", dup, lastIdem.res.BaseOffset)
		}
		more := makeBatch("after-restart")
		res := appendOK(t, g, bytes.Clone(more))
		if want := as[len(as)-1].res.LastOffset + 1; res.BaseOffset != want {
			t.Fatalf("append after restart at %d, want %d", res.BaseOffset, want)
		}
		expectAppended(t, readAll(t, l), append(slices.Clip(as), appended{batch: more, res: res, epoch: epoch}))
		if e, end := l.OffsetForLeaderEpoch(oldEpoch); e != oldEpoch || end != res.BaseOffset {
			t.Fatalf("OffsetForLeaderEpoch(%d) = %d, %d; want %d, %d", oldEpoch, e, end, oldEpoch, res.BaseOffset)
		}
	}

	t.Run("graceful", func(t *testing.T) {
		b := newBroker(t, 1)
		g := open(t, b, b.fs, nil)
		epoch := waitReady(t, g, 5*time.Second)
		as := restartWorkload(t, g, epoch, 0, n)
		before := readAll(t, g.Log())
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
		after(t, open(t, b, b.fs, nil), before, as, epoch)
	})

	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("powerloss/seed=%d", seed), func(t *testing.T) {
			b := newBroker(t, 1)
			g := open(t, b, b.fs, nil)
			epoch := waitReady(t, g, 5*time.Second)
			as := restartWorkload(t, g, epoch, 0, n)
			before := readAll(t, g.Log())
			clone := b.fs.CrashClone(rand.New(rand.NewPCG(seed, 99)))
			_ = g.Close() // the victim carries on against the old disk only

			// The partition alone: nothing was checkpointed, so it
			// truncates to nothing and only the WAL still has the batches.
			l, err := partition.Open(partition.Options{Dir: "/replay/topic-0", FS: clone, TruncateUncheckpointed: true})
			if err != nil {
				t.Fatal(err)
			}
			pos, _ := l.Checkpointed()
			t.Logf("after power loss the partition holds [%d, %d), checkpoint position %d", l.LogStartOffset(), l.LogEndOffset(), pos)
			if l.LogEndOffset() != 0 {
				t.Errorf("uncheckpointed partition kept %d offsets", l.LogEndOffset())
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			after(t, open(t, b, clone, nil), before, as, epoch)
		})
	}

	t.Run("powerloss-after-snapshot", func(t *testing.T) {
		b := newBroker(t, 1)
		small := func(cfg *GroupConfig) { cfg.SnapshotEntries, cfg.TrailingLogs = 8, 4 }
		g := open(t, b, b.fs, small)
		epoch := waitReady(t, g, 5*time.Second)
		as := restartWorkload(t, g, epoch, 0, n/2)
		if err := g.Snapshot(); err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		snapEnd := g.Log().LogEndOffset()
		snapIndex := g.Stats().AppliedIndex
		as = append(as, restartWorkload(t, g, epoch, n/2, n/2)...)
		before := readAll(t, g.Log())
		clone := b.fs.CrashClone(rand.New(rand.NewPCG(7, 7)))
		_ = g.Close()

		l, err := partition.Open(partition.Options{Dir: "/replay/topic-0", FS: clone, TruncateUncheckpointed: true})
		if err != nil {
			t.Fatal(err)
		}
		pos, _ := l.Checkpointed()
		if l.LogEndOffset() != snapEnd || pos != snapIndex {
			t.Errorf("after power loss the partition holds up to %d at position %d; want the snapshot's %d at %d",
				l.LogEndOffset(), pos, snapEnd, snapIndex)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		after(t, open(t, b, clone, small), before, as, epoch)
	})
}

// TestGroupThreeVoters: one ready leader serves appends; followers answer
// NotLeaderError naming it; concurrent appends share entries yet each gets
// its own offsets; all replicas hold identical bytes.
func TestGroupThreeVoters(t *testing.T) {
	c := newCluster(t, 3, nil)
	li, epoch := c.waitLeader(10 * time.Second)
	leader, leaderID := c.groups[li], c.brokers[li].id
	if e := leader.Stats().Term; epoch != testEpochBase+int32(e) {
		t.Fatalf("epoch %d, term %d", epoch, e)
	}
	eventually(t, 2*time.Second, func() error {
		if !slices.Contains(c.leaders.of(leaderID), epoch) {
			return fmt.Errorf("OnLeader calls on broker %d: %v", leaderID, c.leaders.of(leaderID))
		}
		return nil
	})
	ctx := context.Background()
	for i, g := range c.groups {
		if i == li {
			continue
		}
		_, err := g.Append(ctx, makeBatch("to-follower"))
		var nle *NotLeaderError
		if !errors.As(err, &nle) || nle.Leader != leaderID || nle.Epoch != epoch {
			t.Fatalf("Append on follower %d: %v, want NotLeaderError{Leader: %d, Epoch: %d}", c.brokers[i].id, err, leaderID, epoch)
		}
		if _, err := g.Ready(); !errors.As(err, &nle) {
			t.Fatalf("Ready on follower: %v", err)
		}
		if len(c.leaders.of(c.brokers[i].id)) != 0 {
			t.Fatalf("OnLeader called on follower %d", c.brokers[i].id)
		}
	}

	var as []appended
	for i := range 10 {
		batch := makeBatch(fmt.Sprintf("seq-%d", i))
		res := appendOK(t, leader, bytes.Clone(batch))
		if res.BaseOffset != int64(i) {
			t.Fatalf("append %d at %d", i, res.BaseOffset)
		}
		as = append(as, appended{batch: batch, res: res, epoch: epoch})
	}
	expectAppended(t, c.converged(10*time.Second), as)

	// 16 writers at once: their batches are aggregated into shared raft
	// entries, and each still gets its own offsets.
	const writers, per = 16, 25
	before := leader.Stats().AppliedIndex
	results := make([][]appended, writers)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for j := range per {
				vals := make([]string, j%3+1)
				for k := range vals {
					vals[k] = fmt.Sprintf("w%02d-%02d-%d", w, j, k)
				}
				batch := makeBatch(vals...)
				res, err := leader.Append(ctx, bytes.Clone(batch))
				if err != nil {
					errs <- fmt.Errorf("writer %d batch %d: %w", w, j, err)
					return
				}
				if n := res.LastOffset - res.BaseOffset + 1; n != int64(len(vals)) || res.Duplicate {
					errs <- fmt.Errorf("writer %d batch %d: %+v for %d records", w, j, res, len(vals))
					return
				}
				if j > 0 && res.BaseOffset <= results[w][j-1].res.LastOffset {
					errs <- fmt.Errorf("writer %d: batch %d at %d after %d", w, j, res.BaseOffset, results[w][j-1].res.LastOffset)
					return
				}
				results[w] = append(results[w], appended{batch: batch, res: res, epoch: epoch})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	entries := leader.Stats().AppliedIndex - before
	t.Logf("%d batches in %d raft entries", writers*per, entries)
	if entries >= writers*per {
		t.Errorf("%d concurrent batches took %d raft entries: no aggregation", writers*per, entries)
	}
	for _, r := range results {
		as = append(as, r...)
	}
	sort.Slice(as, func(i, j int) bool { return as[i].res.BaseOffset < as[j].res.BaseOffset })
	for i := 1; i < len(as); i++ {
		if as[i].res.BaseOffset != as[i-1].res.LastOffset+1 {
			t.Fatalf("offsets not contiguous: %d..%d then %d", as[i-1].res.BaseOffset, as[i-1].res.LastOffset, as[i].res.BaseOffset)
		}
	}
	data := c.converged(10 * time.Second)
	expectAppended(t, data, as)
	if end := leader.Log().LogEndOffset(); end != as[len(as)-1].res.LastOffset+1 {
		t.Fatalf("log end %d, want %d", end, as[len(as)-1].res.LastOffset+1)
	}
}

// TestGroupInstallSnapshot: a follower that missed more than the leader's
// trailing logs catches up through InstallSnapshot, holds identical bytes,
// keeps applying afterwards and survives its own restart.
func TestGroupInstallSnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *GroupConfig) { cfg.SnapshotEntries, cfg.TrailingLogs = 16, 8 })
	li, epoch := c.waitLeader(10 * time.Second)
	leader := c.groups[li]
	var as []appended
	add := func(tag string, n int) {
		for i := range n {
			batch := makeBatch(fmt.Sprintf("%s-%03d", tag, i), "second")
			as = append(as, appended{batch: batch, res: appendOK(t, leader, bytes.Clone(batch)), epoch: epoch})
		}
	}
	add("early", 5)
	c.converged(10 * time.Second)
	fi := (li + 1) % 3
	c.close(fi)
	add("missed", 200)
	if err := leader.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if s := leader.Stats(); s.Snapshots < 1 {
		t.Fatalf("leader stats after Snapshot: %+v", s)
	}
	f := c.open(fi)
	eventually(t, 15*time.Second, func() error {
		if s := f.Stats(); s.Restores == 0 {
			return fmt.Errorf("follower has not installed a snapshot: %+v", s)
		}
		return nil
	})
	expectAppended(t, c.converged(15*time.Second), as)
	add("later", 10)
	expectAppended(t, c.converged(10*time.Second), as)

	// The installed log's checkpoint is where the follower restarts from.
	c.close(fi)
	add("while-down", 3)
	c.open(fi)
	expectAppended(t, c.converged(15*time.Second), as)
}

// TestGroupLeaderFailover: when the leader stops, another replica wins a
// newer epoch, starts it at the old log end, and appends continue there.
// The old leader rejoins as a follower with identical bytes.
func TestGroupLeaderFailover(t *testing.T) {
	c := newCluster(t, 3, nil)
	li, e1 := c.waitLeader(10 * time.Second)
	var as []appended
	for i := range 10 {
		batch := makeBatch(fmt.Sprintf("old-%d", i))
		as = append(as, appended{batch: batch, res: appendOK(t, c.groups[li], bytes.Clone(batch)), epoch: e1})
	}
	oldEnd := c.groups[li].Log().LogEndOffset()
	c.converged(10 * time.Second)
	oldID := c.brokers[li].id
	c.close(li)

	ni, e2 := c.waitLeader(10 * time.Second)
	if e2 <= e1 {
		t.Fatalf("new epoch %d, old %d", e2, e1)
	}
	newID := c.brokers[ni].id
	eventually(t, 2*time.Second, func() error {
		if !slices.Contains(c.leaders.of(newID), e2) {
			return fmt.Errorf("OnLeader calls on broker %d: %v", newID, c.leaders.of(newID))
		}
		return nil
	})
	l := c.groups[ni].Log()
	if e, end := l.OffsetForLeaderEpoch(e2); e != e2 || end != oldEnd {
		t.Fatalf("before any append in epoch %d: OffsetForLeaderEpoch = %d, %d; want %d, %d", e2, e, end, e2, oldEnd)
	}
	for i := range 10 {
		batch := makeBatch(fmt.Sprintf("new-%d", i))
		res := appendOK(t, c.groups[ni], bytes.Clone(batch))
		if i == 0 && res.BaseOffset != oldEnd {
			t.Fatalf("first append of the new leader at %d, want the old end %d", res.BaseOffset, oldEnd)
		}
		as = append(as, appended{batch: batch, res: res, epoch: e2})
	}
	check := func(g *Group) {
		t.Helper()
		l := g.Log()
		if e, end := l.OffsetForLeaderEpoch(e1); e != e1 || end != oldEnd {
			t.Fatalf("OffsetForLeaderEpoch(%d) = %d, %d; want %d, %d", e1, e, end, e1, oldEnd)
		}
		if e, end := l.OffsetForLeaderEpoch(e2); e != e2 || end != l.LogEndOffset() {
			t.Fatalf("OffsetForLeaderEpoch(%d) = %d, %d; want %d, %d", e2, e, end, e2, l.LogEndOffset())
		}
		if got := l.EpochForOffset(oldEnd - 1); got != e1 {
			t.Fatalf("EpochForOffset(%d) = %d, want %d", oldEnd-1, got, e1)
		}
		if got := l.EpochForOffset(oldEnd); got != e2 {
			t.Fatalf("EpochForOffset(%d) = %d, want %d", oldEnd, got, e2)
		}
	}
	expectAppended(t, c.converged(10*time.Second), as)
	for _, g := range c.groups {
		if g != nil {
			check(g)
		}
	}

	// The old leader rejoins as a follower and catches up.
	old := c.open(li)
	expectAppended(t, c.converged(15*time.Second), as)
	check(old)
	eventually(t, 5*time.Second, func() error {
		_, err := old.Append(context.Background(), makeBatch("stale"))
		var nle *NotLeaderError
		if !errors.As(err, &nle) || nle.Leader != newID {
			return fmt.Errorf("Append on the old leader %d: %v, want NotLeaderError{Leader: %d}", oldID, err, newID)
		}
		return nil
	})
}

// TestGroupDeleteRecords: DeleteRecords goes through raft, so every
// replica moves its log start to the same offset.
func TestGroupDeleteRecords(t *testing.T) {
	c := newCluster(t, 3, nil)
	li, epoch := c.waitLeader(10 * time.Second)
	leader := c.groups[li]
	var as []appended
	for i := range 10 {
		batch := makeBatch(fmt.Sprintf("d%d-a", i), fmt.Sprintf("d%d-b", i))
		as = append(as, appended{batch: batch, res: appendOK(t, leader, bytes.Clone(batch)), epoch: epoch})
	}
	c.converged(10 * time.Second)
	ctx := context.Background()
	fi := (li + 1) % 3
	var nle *NotLeaderError
	if _, err := c.groups[fi].DeleteRecords(ctx, 4); !errors.As(err, &nle) || nle.Leader != c.brokers[li].id {
		t.Fatalf("DeleteRecords on a follower: %v", err)
	}
	start, err := leader.DeleteRecords(ctx, 7)
	if err != nil || start != 7 {
		t.Fatalf("DeleteRecords(7) = %d, %v", start, err)
	}
	startsAt := func(want int64) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			for i, g := range c.groups {
				if got := g.Log().LogStartOffset(); got != want {
					return fmt.Errorf("broker %d: log start %d, want %d", c.brokers[i].id, got, want)
				}
			}
			return nil
		})
	}
	startsAt(7)
	for i, g := range c.groups {
		l := g.Log()
		if _, err := l.Read(6, 1<<20, l.LogEndOffset()); !errors.Is(err, partition.ErrOffsetOutOfRange) {
			t.Fatalf("broker %d: read below the log start: %v", c.brokers[i].id, err)
		}
		got, err := l.Read(7, 1<<20, l.LogEndOffset())
		if err != nil {
			t.Fatal(err)
		}
		// Offset 7 is the second record of batch 3 (offsets 6-7): reads
		// return whole batches.
		if bs := splitBatches(t, got); !bytes.Equal(bs[0], stamped(as[3].batch, 6, epoch)) {
			t.Fatalf("broker %d: first batch at the new log start holds %q", c.brokers[i].id, batchValues(t, bs[0]))
		}
	}
	if start, err := leader.DeleteRecords(ctx, 3); err != nil || start != 7 {
		t.Fatalf("DeleteRecords below the log start = %d, %v; want 7, nil", start, err)
	}
	if _, err := leader.DeleteRecords(ctx, 1000); !errors.Is(err, partition.ErrOffsetOutOfRange) {
		t.Fatalf("DeleteRecords past the end: %v, want ErrOffsetOutOfRange", err)
	}
	// A refused delete does not stop anything.
	batch := makeBatch("after-delete")
	res := appendOK(t, leader, bytes.Clone(batch))
	if res.BaseOffset != 20 || res.LogStartOffset != 7 {
		t.Fatalf("append after DeleteRecords: %+v", res)
	}
	end := res.LastOffset + 1
	if start, err := leader.DeleteRecords(ctx, end); err != nil || start != end {
		t.Fatalf("DeleteRecords(end) = %d, %v", start, err)
	}
	startsAt(end)
	// The log start survives a restart.
	c.close(fi)
	c.open(fi)
	startsAt(end)
	c.converged(10 * time.Second)
}

// TestGroupSnapshotBytesTrigger: past SnapshotBytes of applied entries the
// group snapshots on its own (long before raft's entry threshold or
// interval), and a restart after it keeps every batch.
func TestGroupSnapshotBytesTrigger(t *testing.T) {
	b := newBroker(t, 1)
	cfg := soloConfig(b, b.fs, "/bytes")
	cfg.SnapshotBytes = 4 << 10
	cfg.SnapshotEntries = 1 << 20
	cfg.TrailingLogs = 4
	g := mustOpenGroup(t, cfg)
	epoch := waitReady(t, g, 5*time.Second)
	var as []appended
	for i := range 40 {
		batch := makeBatch(fmt.Sprintf("%03d-%s", i, bytes.Repeat([]byte("x"), 200)))
		as = append(as, appended{batch: batch, res: appendOK(t, g, bytes.Clone(batch)), epoch: epoch})
	}
	eventually(t, 5*time.Second, func() error {
		if s := g.Stats(); s.Snapshots == 0 {
			return fmt.Errorf("no snapshot after %d bytes of entries: %+v", 40*260, s)
		}
		return nil
	})
	before := readAll(t, g.Log())
	expectAppended(t, before, as)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	g = mustOpenGroup(t, cfg)
	waitReady(t, g, 5*time.Second)
	if data := readAll(t, g.Log()); !bytes.Equal(data, before) {
		t.Fatalf("log changed across a restart after a byte-triggered snapshot")
	}
}
