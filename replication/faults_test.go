package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

// TestGroupFailedRestoreThenRestart: a follower whose snapshot install
// fails in partition.Restore (a disk error while writing the staged
// directory) stops, fail-closed. Raft has already stored the installed
// snapshot in its own store by then. When the replica is reopened on a
// healthy disk it must end up with the leader's exact log: raft must not
// start it from the stored snapshot's index while the partition still
// holds only what it had before the install. The leader it rejoins has
// not seen the failed install, so it catches the follower up with
// AppendEntries from wherever the follower says its log ends.
func TestGroupFailedRestoreThenRestart(t *testing.T) {
	c := newCluster(t, 3, func(cfg *GroupConfig) { cfg.SnapshotEntries, cfg.TrailingLogs = 16, 8 })
	li, epoch := c.waitLeader(10 * time.Second)
	leader := c.groups[li]
	var as []appended
	add := func(tag string, n int) {
		for i := range n {
			batch := makeBatch(fmt.Sprintf("%s-%03d", tag, i))
			as = append(as, appended{batch: batch, res: appendOK(t, leader, bytes.Clone(batch)), epoch: epoch})
		}
	}
	add("early", 5)
	c.converged(10 * time.Second)
	fi := (li + 1) % 3
	c.close(fi)
	add("missed", 100)
	if err := leader.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}

	fs := c.brokers[fi].fs
	staging := c.cfgs[fi].Log.Dir + ".restore/"
	injected := errors.New("injected: disk error")
	fs.SetFault(func(op vfs.Op, name string) error {
		if op == vfs.OpWrite && strings.HasPrefix(name, staging) {
			return injected
		}
		return nil
	})
	f := c.open(fi)
	eventually(t, 15*time.Second, func() error {
		_, err := f.Ready()
		var nle *NotLeaderError
		if err == nil || errors.As(err, &nle) {
			return fmt.Errorf("follower still running: %v", err)
		}
		return nil
	})
	_, err := f.Ready()
	t.Logf("follower stopped after the failed install: %v", err)
	fs.SetFault(nil)
	c.close(fi)

	// A leader that never saw the failed install (here: after a handover
	// to the third replica) starts from AppendEntries, not from a snapshot.
	ti := 3 - li - fi
	if err := leader.TransferLeadershipTo(c.peers[ti]); err != nil {
		t.Fatalf("TransferLeadershipTo: %v", err)
	}
	if li, epoch = c.waitLeader(10 * time.Second); li != ti {
		t.Fatalf("broker %d leads after the handover, want %d", c.brokers[li].id, c.brokers[ti].id)
	}
	leader = c.groups[li]

	f = c.open(fi)
	pos, _ := f.Log().Checkpointed()
	t.Logf("reopened follower: partition checkpoint at raft index %d holding [%d, %d); raft applied index %d",
		pos, f.Log().LogStartOffset(), f.Log().LogEndOffset(), f.Stats().AppliedIndex)
	add("after", 3)
	eventually(t, 5*time.Second, func() error {
		l := f.Log()
		want := leader.Log()
		if l.LogEndOffset() != want.LogEndOffset() {
			return fmt.Errorf("follower log [%d, %d), leader [%d, %d); follower stats %+v",
				l.LogStartOffset(), l.LogEndOffset(), want.LogStartOffset(), want.LogEndOffset(), f.Stats())
		}
		return nil
	})
	expectAppended(t, c.converged(10*time.Second), as)
}

// TestGroupClusterPowerLoss: every broker loses power at once, with the
// partitions' checkpoints far behind. On restart each partition truncates
// to its checkpoint and raft replays the rest from the WALs: every
// acknowledged batch is there exactly once at its offset, in identical
// bytes on every replica, and appends continue at the end.
func TestGroupClusterPowerLoss(t *testing.T) {
	c := newCluster(t, 3, func(cfg *GroupConfig) { cfg.CheckpointInterval = time.Hour })
	li, epoch := c.waitLeader(10 * time.Second)
	leader := c.groups[li]
	const writers, per = 8, 10
	results := make([][]appended, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for j := range per {
				batch := makeBatch(fmt.Sprintf("w%d-%d", w, j))
				res, err := leader.Append(context.Background(), bytes.Clone(batch))
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				results[w] = append(results[w], appended{batch: batch, res: res, epoch: epoch})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var as []appended
	for _, r := range results {
		as = append(as, r...)
	}
	sort.Slice(as, func(i, j int) bool { return as[i].res.BaseOffset < as[j].res.BaseOffset })
	before := c.converged(10 * time.Second)
	expectAppended(t, before, as)

	rng := rand.New(rand.NewPCG(3, 4))
	clones := make([]*vfs.Mem, len(c.brokers))
	for i, b := range c.brokers {
		clones[i] = b.fs.CrashClone(rng)
	}
	for i := range c.groups {
		_ = c.groups[i].Close()
		c.groups[i] = nil
	}
	for i := range c.groups {
		c.cfgs[i].Log.FS = clones[i]
		c.open(i)
	}
	li, e2 := c.waitLeader(10 * time.Second)
	if e2 <= epoch {
		t.Fatalf("epoch after the restart %d, want > %d", e2, epoch)
	}
	if data := c.converged(10 * time.Second); !bytes.Equal(data, before) {
		expectAppended(t, data, as)
		t.Fatalf("log bytes changed across the power loss")
	}
	batch := makeBatch("after-power-loss")
	res := appendOK(t, c.groups[li], bytes.Clone(batch))
	if want := as[len(as)-1].res.LastOffset + 1; res.BaseOffset != want {
		t.Fatalf("append after the power loss at %d, want %d", res.BaseOffset, want)
	}
	expectAppended(t, c.converged(10*time.Second), append(as, appended{batch: batch, res: res, epoch: e2}))
}
