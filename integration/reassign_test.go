package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/partition"
)

// replicasOf is what broker i's Metadata says partition p of topic
// is replicated on, and who leads it.
func replicasOf(t testing.TB, c *Cluster, i int, topic string, p int32) ([]int32, int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.BrokerAddr(i)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	md, err := kadm.NewClient(cl).Metadata(testContext(t, 10*time.Second), topic)
	if err != nil {
		return nil, -1
	}
	pd, ok := md.Topics[topic].Partitions[p]
	if !ok {
		return nil, -1
	}
	return pd.Replicas, pd.Leader
}

// watchMetadata polls every broker's Metadata for topic in the background
// (metaWatch, newaddr_test.go): leader epochs never go down on any broker
// and one epoch never names two leaders anywhere, throughout the test.
// checkWatch stops it and fails the test with what it saw.
func watchMetadata(t *testing.T, c *Cluster, topic string) *metaWatch {
	w := newMetaWatch(t, topic, -1, "", c.Addrs())
	w.start()
	t.Cleanup(w.stop)
	return w
}

func checkWatch(t *testing.T, w *metaWatch) {
	t.Helper()
	w.stop()
	if w.polls() == 0 {
		t.Fatal("the metadata watcher got no answer")
	}
	w.check()
}

// produceLoad produces distinct values to every partition of topic until
// stop is closed, and records what was acknowledged.
func produceLoad(t *testing.T, c *Cluster, topic string, partitions int32, acks *ackLog, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(1000), kgo.RecordDeliveryTimeout(2*time.Minute))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cl.Close()
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-stop:
				if err := cl.Flush(testContext(t, 2*time.Minute)); err != nil {
					t.Errorf("flush: %v", err)
				}
				return
			default:
			}
			p := int32(i) % partitions
			cl.Produce(ctx, &kgo.Record{Partition: p, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%s-%d", topic, i)}, acks.promise)
			if i%50 == 49 {
				time.Sleep(5 * time.Millisecond) // a steady load, not a flood
			}
		}
	}()
	return &wg
}

// finishLoad stops produceLoad, waits for its last acknowledgements and
// returns every acknowledged record.
func finishLoad(t *testing.T, stop chan struct{}, wg *sync.WaitGroup, acks *ackLog) []acked {
	t.Helper()
	close(stop)
	wg.Wait()
	recs, failed := acks.snapshot()
	t.Logf("%d records acknowledged, %d failed", len(recs), failed)
	return recs
}

// TestReassignUnderLoad moves a partition off its preferred leader's
// broker onto the third broker while producers write to it: the new
// replica joins as a learner, is promoted, leadership leaves the broker
// being removed, and that broker's replica is deleted. Every acknowledged
// record is then read back exactly once at its offset through every
// broker, and the two new replicas hold identical batches. A second
// reassignment cancelled at once ends on its original replicas.
func TestReassignUnderLoad(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	const topic = "moving"
	createReplicated(t, c, topic, 2, 2)
	watch := watchMetadata(t, c, topic)
	var reps []int32
	eventually(t, 30*time.Second, "partition 0's preferred leader leads", func() bool {
		var leader int32
		reps, leader = replicasOf(t, c, 0, topic, 0)
		return len(reps) == 2 && leader == reps[0]
	})
	var newID int32
	for i := range c.Size() {
		id := c.nodes[i].id
		if !slices.Contains(reps, id) {
			newID = id
		}
	}
	target := []int32{newID, reps[1]} // drops the leader's broker
	removed := reps[0]

	var acks ackLog
	stop := make(chan struct{})
	wg := produceLoad(t, c, topic, 2, &acks, stop)
	eventually(t, 30*time.Second, "records acknowledged before the move", func() bool {
		acks.mu.Lock()
		defer acks.mu.Unlock()
		return len(acks.recs) > 2000
	})

	adm := c.Admin(t)
	ctx := testContext(t, 2*time.Minute)
	bad := kadm.AlterPartitionAssignmentsReq{}
	bad.Assign(topic, 0, []int32{newID, 99})
	if rs, err := adm.AlterPartitionAssignments(ctx, bad); err != nil {
		t.Fatal(err)
	} else if r := rs[topic][0]; !errors.Is(r.Err, kerr.InvalidReplicaAssignment) {
		t.Fatalf("target naming broker 99: %v, want INVALID_REPLICA_ASSIGNMENT", r.Err)
	}
	req := kadm.AlterPartitionAssignmentsReq{}
	req.Assign(topic, 0, target)
	rs, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r := rs[topic][0]; r.Err != nil {
		t.Fatalf("reassign %s/0 to %v: %v", topic, target, r.Err)
	}
	sawInProgress := false
	eventually(t, 90*time.Second, fmt.Sprintf("partition 0 on %v in every broker's Metadata", target), func() bool {
		l, err := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{topic: {0: {}}})
		if err != nil {
			return false
		}
		if r, ok := l[topic][0]; ok {
			sawInProgress = true
			if !slices.Equal(r.AddingReplicas, []int32{newID}) || !slices.Equal(r.RemovingReplicas, []int32{removed}) {
				t.Fatalf("in progress: adding %v removing %v, want [%d] [%d]", r.AddingReplicas, r.RemovingReplicas, newID, removed)
			}
			return false
		}
		for i := range c.Size() {
			got, leader := replicasOf(t, c, i, topic, 0)
			if !slices.Equal(got, target) || !slices.Contains(target, leader) {
				return false
			}
		}
		return true
	})
	if !sawInProgress {
		t.Log("the reassignment finished before it was first listed")
	}
	ri := c.Index(removed)
	eventually(t, 30*time.Second, "the removed replica deleted", func() bool {
		_, ok := c.Broker(ri).ReplicaStats(topic, 0)
		return !ok
	})

	// A reassignment cancelled right away returns to its original replicas.
	orig1, _ := replicasOf(t, c, 0, topic, 1)
	var other int32
	for i := range c.Size() {
		if id := c.nodes[i].id; !slices.Contains(orig1, id) {
			other = id
		}
	}
	mv := kadm.AlterPartitionAssignmentsReq{}
	mv.Assign(topic, 1, []int32{other, orig1[0]})
	if rs, err := adm.AlterPartitionAssignments(ctx, mv); err != nil || rs[topic][1].Err != nil {
		t.Fatalf("reassign partition 1: %v %v", err, rs[topic][1].Err)
	}
	cancelReq := kadm.AlterPartitionAssignmentsReq{}
	cancelReq.CancelAssign(topic, 1)
	if rs, err := adm.AlterPartitionAssignments(ctx, cancelReq); err != nil || rs[topic][1].Err != nil {
		t.Fatalf("cancel partition 1: %v %v", err, rs[topic][1].Err)
	}
	eventually(t, 90*time.Second, fmt.Sprintf("partition 1 back on %v", orig1), func() bool {
		l, err := adm.ListPartitionReassignments(ctx, kadm.TopicsSet{topic: {1: {}}})
		if err != nil || len(l[topic]) > 0 {
			return false
		}
		got, _ := replicasOf(t, c, 0, topic, 1)
		return sameBrokers(got, orig1)
	})
	if rs, err := adm.AlterPartitionAssignments(ctx, cancelReq); err != nil {
		t.Fatal(err)
	} else if r := rs[topic][1]; !errors.Is(r.Err, kerr.NoReassignmentInProgress) {
		t.Fatalf("cancelling again: %v, want NO_REASSIGNMENT_IN_PROGRESS", r.Err)
	}

	recs := finishLoad(t, stop, wg, &acks)
	checkWatch(t, watch)
	for _, addr := range c.Addrs() {
		checkExactlyOnce(t, c, addr, topic, recs)
	}
	compareReplicaSet(t, c, topic, []int32{0}, target)
}

func sameBrokers(a, b []int32) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(id int32) bool { return !slices.Contains(b, id) })
}

// compareReplicaSet checks, offline, that the replicas of the given
// partitions on the given brokers hold identical batches. It stops every
// broker.
func compareReplicaSet(t *testing.T, c *Cluster, topic string, parts []int32, ids []int32) {
	t.Helper()
	eventually(t, 30*time.Second, "the replicas to converge", func() bool {
		for _, p := range parts {
			var idx []uint64
			for _, id := range ids {
				st, ok := c.Broker(c.Index(id)).ReplicaStats(topic, p)
				if !ok {
					return false
				}
				idx = append(idx, st.AppliedIndex)
			}
			if slices.Min(idx) != slices.Max(idx) {
				return false
			}
		}
		return true
	})
	dirs := map[int32][]string{}
	for _, p := range parts {
		for _, id := range ids {
			dirs[p] = append(dirs[p], c.Broker(c.Index(id)).PartitionDir(topic, p))
		}
	}
	c.stopAll()
	for _, p := range parts {
		var logs []*partition.Log
		from := int64(0)
		for k, id := range ids {
			l, err := partition.Open(partition.Options{Dir: dirs[p][k], FS: c.FS(c.Index(id))})
			if err != nil {
				t.Fatalf("open broker %d's replica of %s/%d offline: %v", id, topic, p, err)
			}
			defer l.Close()
			logs = append(logs, l)
			from = max(from, l.LogStartOffset())
		}
		ref := readAll(t, logs[0], from)
		if len(ref) == 0 {
			t.Fatalf("broker %d's replica of %s/%d holds no batches", ids[0], topic, p)
		}
		for k, l := range logs[1:] {
			if got := readAll(t, l, from); !bytes.Equal(got, ref) {
				t.Fatalf("broker %d's replica of %s/%d differs from broker %d's from offset %d (%d and %d bytes)", ids[k+1], topic, p, ids[0], from, len(got), len(ref))
			}
		}
	}
}

// TestAddBrokerAndMoveOnto adds a fourth broker to a running cluster (it
// joins the metadata group as a learner) and moves a partition of an RF=3
// topic onto it while producers write: Metadata on every broker, the new
// one included, lists four brokers and the partition on its target; every
// acknowledged record is read back exactly once through every broker; the
// new replica holds the same batches as the others. A topic created after
// the join can place replicas on the new broker.
func TestAddBrokerAndMoveOnto(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	const topic = "grow"
	createReplicated(t, c, topic, 3, 3)
	watch := watchMetadata(t, c, topic)
	var acks ackLog
	stop := make(chan struct{})
	wg := produceLoad(t, c, topic, 3, &acks, stop)

	ni := c.AddBroker()
	newID := c.nodes[ni].id
	for i := range c.Size() {
		if got := len(c.Broker(i).RegisteredBrokers()); got != 4 {
			t.Fatalf("broker slot %d knows %d brokers, want 4", i, got)
		}
	}
	reps, _ := replicasOf(t, c, 0, topic, 0)
	target := append([]int32{newID}, reps[1:]...) // replaces the first replica
	adm := c.Admin(t)
	ctx := testContext(t, 2*time.Minute)
	req := kadm.AlterPartitionAssignmentsReq{}
	req.Assign(topic, 0, target)
	if rs, err := adm.AlterPartitionAssignments(ctx, req); err != nil || rs[topic][0].Err != nil {
		t.Fatalf("reassign onto broker %d: %v %v", newID, err, rs[topic][0].Err)
	}
	eventually(t, 90*time.Second, fmt.Sprintf("partition 0 on %v everywhere", target), func() bool {
		for i := range c.Size() {
			got, leader := replicasOf(t, c, i, topic, 0)
			if !slices.Equal(got, target) || !slices.Contains(target, leader) {
				return false
			}
		}
		return true
	})
	// The new broker takes part in placement from now on.
	createReplicated(t, c, "after-join", 4, 3)
	placed := 0
	for p := range int32(4) {
		got, _ := replicasOf(t, c, ni, "after-join", p)
		if slices.Contains(got, newID) {
			placed++
		}
	}
	if placed == 0 {
		t.Fatalf("no partition of a topic created after the join has a replica on broker %d", newID)
	}

	recs := finishLoad(t, stop, wg, &acks)
	checkWatch(t, watch)
	for _, addr := range c.Addrs() {
		checkExactlyOnce(t, c, addr, topic, recs)
	}
	compareReplicaSet(t, c, topic, []int32{0}, target)
}
