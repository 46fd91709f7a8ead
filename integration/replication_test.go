package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
)

// createReplicated creates a topic with the given replication factor and
// waits for a leader of every partition.
func createReplicated(t testing.TB, c *Cluster, name string, partitions int32, rf int16) {
	t.Helper()
	resp, err := c.Admin(t).CreateTopic(testContext(t, 30*time.Second), partitions, rf, nil, name)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
	}
	for p := range partitions {
		c.WaitLeader(name, p)
	}
}

// acked is a record the producer got an acknowledgement for.
type acked struct {
	partition int32
	offset    int64
	value     string
	key       string
}

// ackLog collects acknowledged records from many goroutines.
type ackLog struct {
	mu   sync.Mutex
	recs []acked
	errs int
}

func (a *ackLog) promise(r *kgo.Record, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.errs++
		return
	}
	a.recs = append(a.recs, acked{r.Partition, r.Offset, string(r.Value), string(r.Key)})
}

// count is the number of acknowledged records so far.
func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.recs)
}

// snapshot is a copy of the acknowledged records and the failure count.
func (a *ackLog) snapshot() ([]acked, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.recs), a.errs
}

// checkExactlyOnce reads every partition of topic from offset 0 through
// the broker at addr and checks that every acknowledged record sits at its
// acknowledged offset with its key and value, and that no value appears
// twice.
func checkExactlyOnce(t testing.TB, c *Cluster, addr, topic string, acks []acked) {
	t.Helper()
	ctx := testContext(t, 120*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Leadership may be moving (balancing after a restart): retry the
	// end offsets until every partition answers.
	var ends kadm.ListedOffsets
	var lastErr error
	// 60 s: on a loaded 2-core machine, restarted brokers' elections and
	// leader balancing have taken over 30 s.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ends, lastErr = kadm.NewClient(cl).ListEndOffsets(ctx, topic)
		if lastErr == nil {
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err != nil {
					lastErr = fmt.Errorf("partition %d: %w", o.Partition, o.Err)
				}
			})
		}
		if lastErr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("end offsets of every partition of %s through %s: %v", topic, addr, lastErr)
		}
	}
	want := map[int32]int64{}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		want[o.Partition] = o.Offset
		total += o.Offset
	})
	got := map[string]acked{}
	seen := map[string]string{}
	n := int64(0)
	for n < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", n, total, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= want[r.Partition] {
				return
			}
			n++
			k := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
			v := string(r.Value)
			if prev, dup := seen[v]; dup {
				t.Fatalf("value %q twice: at %s and %s", v, prev, k)
			}
			seen[v] = k
			got[k] = acked{r.Partition, r.Offset, v, string(r.Key)}
		})
	}
	for _, a := range acks {
		k := fmt.Sprintf("%d/%d", a.partition, a.offset)
		if g, ok := got[k]; !ok || g.value != a.value || g.key != a.key {
			t.Fatalf("acknowledged %q at %s, read %+v (present %v)", a.value, k, g, ok)
		}
	}
}

// TestReplicatedProduceConsume: three brokers, a 6-partition RF=3 topic;
// every acknowledged record is read back at its offset through every
// broker, and every replica holds it.
func TestReplicatedProduceConsume(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	createReplicated(t, c, "rep", 6, 3)
	// Placement spreads preferred leaders evenly and balancing moves
	// leadership to them: every broker leads two partitions.
	eventually(t, 20*time.Second, "balanced leadership", func() bool {
		count := map[int]int{}
		for p := range int32(6) {
			count[c.WaitLeader("rep", p)]++
		}
		return count[0] == 2 && count[1] == 2 && count[2] == 2
	})
	cl := c.Client(t, kgo.DefaultProduceTopic("rep"))
	var log ackLog
	const n = 5000
	for i := range n {
		cl.Produce(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%97), Value: fmt.Appendf(nil, "v%06d", i)}, log.promise)
	}
	if err := cl.Flush(testContext(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	if log.errs != 0 || len(log.recs) != n {
		t.Fatalf("%d acknowledged, %d failed", len(log.recs), log.errs)
	}
	for i := range c.Size() {
		checkExactlyOnce(t, c, c.BrokerAddr(i), "rep", log.recs)
	}
	// Every replica applied every entry: the logs' ends agree.
	eventually(t, 10*time.Second, "replicas to converge", func() bool {
		for p := range int32(6) {
			var ends []int64
			for i := range c.Size() {
				st, ok := c.Broker(i).ReplicaStats("rep", p)
				if !ok {
					return false
				}
				ends = append(ends, int64(st.AppliedIndex))
			}
			if slices.Min(ends) != slices.Max(ends) {
				return false
			}
		}
		return true
	})
}

// TestLeaderKillDuringProduce is the headline promise: the default
// franz-go producer writes 200k records to a 6-partition RF=3 topic while
// the leader of partition 0 loses power twice and comes back. Every
// acknowledged record is read back exactly once at its acknowledged
// offset through every broker, and the replicas' segment files hold
// byte-identical committed batches.
func TestLeaderKillDuringProduce(t *testing.T) {
	if testing.Short() {
		t.Skip("200k records; run without -short")
	}
	c := NewCluster(t, Brokers(3))
	createReplicated(t, c, "kill", 6, 3)
	cl := c.Client(t, kgo.DefaultProduceTopic("kill"), kgo.RecordDeliveryTimeout(2*time.Minute))
	var log ackLog
	const n = 200_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			cl.Produce(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%1009), Value: fmt.Appendf(nil, "v%07d", i)}, log.promise)
		}
	}()
	for round := range 2 {
		// Let some records through, then cut the leader's power.
		want := (round + 1) * n / 4
		eventually(t, 2*time.Minute, fmt.Sprintf("%d acknowledgements", want), func() bool {
			log.mu.Lock()
			defer log.mu.Unlock()
			return len(log.recs) >= want
		})
		victim := c.WaitLeader("kill", 0)
		c.Kill(victim)
		// The others elect a new leader while the victim is down.
		eventually(t, 30*time.Second, "a new leader", func() bool {
			for i := range c.Size() {
				if i != victim && c.Broker(i) != nil && c.Broker(i).IsReadyLeader("kill", 0) {
					return true
				}
			}
			return false
		})
		c.Start(victim)
	}
	<-done
	if err := cl.Flush(testContext(t, 3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if log.errs != 0 || len(log.recs) != n {
		t.Fatalf("%d acknowledged, %d failed", len(log.recs), log.errs)
	}
	for p := range int32(6) {
		c.WaitLeader("kill", p)
	}
	for i := range c.Size() {
		checkExactlyOnce(t, c, c.BrokerAddr(i), "kill", log.recs)
	}
	compareReplicas(t, c, "kill", 6)
}

// compareReplicas waits until every replica has applied the same entries,
// stops the cluster, and compares the partitions' committed batches
// offline, byte for byte, from the highest log start any replica kept.
func compareReplicas(t *testing.T, c *Cluster, topic string, partitions int32) {
	t.Helper()
	eventually(t, 30*time.Second, "replicas to converge", func() bool {
		for p := range partitions {
			var idx []uint64
			for i := range c.Size() {
				st, ok := c.Broker(i).ReplicaStats(topic, p)
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
	dirs := make([][]string, partitions)
	for p := range partitions {
		for i := range c.Size() {
			dirs[p] = append(dirs[p], c.Broker(i).PartitionDir(topic, p))
		}
	}
	c.stopAll()
	for p := range partitions {
		var logs []*partition.Log
		for i := range c.Size() {
			l, err := partition.Open(partition.Options{Dir: dirs[p][i], FS: c.FS(i)})
			if err != nil {
				t.Fatalf("open replica %d of partition %d offline: %v", i, p, err)
			}
			defer l.Close()
			logs = append(logs, l)
		}
		from := int64(0)
		for _, l := range logs {
			from = max(from, l.LogStartOffset())
		}
		ref := readAll(t, logs[0], from)
		if len(ref) == 0 {
			t.Fatalf("partition %d: no batches", p)
		}
		for i, l := range logs[1:] {
			if got := readAll(t, l, from); !bytes.Equal(got, ref) {
				t.Fatalf("partition %d: replica %d holds %d bytes of batches from offset %d, replica 0 %d; they differ", p, i+1, len(got), from, len(ref))
			}
		}
	}
}

// readAll returns every batch of l from offset to its end.
func readAll(t *testing.T, l *partition.Log, offset int64) []byte {
	t.Helper()
	var out []byte
	end := l.LogEndOffset()
	for offset < end {
		b, err := l.Read(offset, 1<<20, end)
		if err != nil {
			t.Fatalf("read at %d: %v", offset, err)
		}
		if len(b) == 0 {
			t.Fatalf("read at %d below the end %d returned nothing", offset, end)
		}
		out = append(out, b...)
		offset = nextOffset(b)
	}
	return out
}

// nextOffset is the offset after the last batch in b (v2 batches: base
// offset at 0, length at 8, last offset delta at 23).
func nextOffset(b []byte) int64 {
	var next int64
	for len(b) >= 27 {
		base := int64(binary.BigEndian.Uint64(b))
		size := 12 + int(binary.BigEndian.Uint32(b[8:]))
		next = base + int64(int32(binary.BigEndian.Uint32(b[23:]))) + 1
		if size > len(b) {
			break
		}
		b = b[size:]
	}
	return next
}

// TestISRFollowsFollowers: a follower cut off from the leader leaves the
// ISR Metadata reports (on every broker) once it lags past ReplicaLagMax,
// and comes back after it heals and catches up.
func TestISRFollowsFollowers(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	createReplicated(t, c, "isr", 1, 3)
	leader := c.WaitLeader("isr", 0)
	follower := (leader + 1) % c.Size()
	followerID := int32(follower + 1)
	isrOf := func(addr string) []int32 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		md, err := kadm.NewClient(cl).Metadata(testContext(t, 5*time.Second), "isr")
		if err != nil {
			return nil
		}
		p := md.Topics["isr"].Partitions[0]
		return p.ISR
	}
	everywhere := func(want func([]int32) bool) func() bool {
		return func() bool {
			for i := range c.Size() {
				if !want(isrOf(c.BrokerAddr(i))) {
					return false
				}
			}
			return true
		}
	}
	eventually(t, 10*time.Second, "a full ISR", everywhere(func(isr []int32) bool { return len(isr) == 3 }))
	c.Isolate(follower, true)
	cl := c.Client(t, kgo.DefaultProduceTopic("isr"))
	var log ackLog
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // keep the leader's log moving so the follower lags
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := &kgo.Record{Value: fmt.Appendf(nil, "isr%06d", i)}
			log.promise(cl.ProduceSync(context.Background(), r).First())
			time.Sleep(20 * time.Millisecond)
		}
	}()
	without := func(isr []int32) bool { return len(isr) == 2 && !slices.Contains(isr, followerID) }
	eventually(t, 20*time.Second, "the cut-off follower to leave the ISR", func() bool {
		// The isolated broker's own metadata is cut off too: ask the others.
		for i := range c.Size() {
			if i != follower && !without(isrOf(c.BrokerAddr(i))) {
				return false
			}
		}
		return true
	})
	c.Isolate(follower, false)
	eventually(t, 20*time.Second, "the healed follower to rejoin the ISR", everywhere(func(isr []int32) bool { return len(isr) == 3 }))
	close(stop)
	<-stopped
	checkExactlyOnce(t, c, c.BrokerAddr(follower), "isr", log.recs)

	// With nothing written, the index never moves: a follower that stops
	// answering must leave the ISR all the same (heartbeats are what
	// tell the leader it is alive), and come back once it answers again.
	c.Isolate(follower, true)
	eventually(t, 20*time.Second, "the cut-off follower of an idle partition to leave the ISR", func() bool {
		for i := range c.Size() {
			if i != follower && !without(isrOf(c.BrokerAddr(i))) {
				return false
			}
		}
		return true
	})
	c.Isolate(follower, false)
	eventually(t, 20*time.Second, "the healed follower of an idle partition to rejoin the ISR", everywhere(func(isr []int32) bool { return len(isr) == 3 }))
}

// TestFsyncFailureMovesLeadership: when the leader's disk fails an fsync
// of a partition's Raft log, that replica stops (fail closed, never
// retried), answers KAFKA_STORAGE_ERROR, and leadership moves to a healthy
// replica; producing carries on and nothing acknowledged is lost.
func TestFsyncFailureMovesLeadership(t *testing.T) {
	// No balancing: the leader must stay put until its disk fails.
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.LeaderBalanceInterval = -1 }))
	createReplicated(t, c, "disk", 1, 3)
	victim := c.WaitLeader("disk", 0)
	cl := c.Client(t, kgo.DefaultProduceTopic("disk"), kgo.RecordDeliveryTimeout(time.Minute))
	var log ackLog
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			cl.Produce(context.Background(), &kgo.Record{Value: fmt.Appendf(nil, "d%06d", i)}, log.promise)
		}
		if err := cl.Flush(testContext(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 500)
	mem := c.FS(victim).(*vfs.Mem)
	failed := errors.New("injected fsync failure")
	mem.SetFault(func(op vfs.Op, name string) error {
		if op == vfs.OpSync && strings.Contains(name, "/raft/") && !strings.Contains(name, "__cluster_metadata") {
			return failed
		}
		return nil
	})
	produce(500, 1500)
	if _, ok := c.Broker(victim).ReplicaStats("disk", 0); !ok {
		t.Fatal("the victim holds no replica")
	}
	if c.Broker(victim).IsReadyLeader("disk", 0) {
		t.Fatal("the victim still leads after failing an fsync")
	}
	if log.errs != 0 || len(log.recs) != 1500 {
		t.Fatalf("%d acknowledged, %d failed", len(log.recs), log.errs)
	}
	leader := c.WaitLeader("disk", 0)
	if leader == victim {
		t.Fatalf("broker %d still leads after its disk failed", victim+1)
	}
	// The stopped replica answers KAFKA_STORAGE_ERROR to a direct request.
	req := kmsg.NewPtrListOffsetsRequest()
	req.Version = 4
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = "disk"
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Timestamp = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.BrokerAddr(victim), req).(*kmsg.ListOffsetsResponse)
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.KafkaStorageError.Code {
		t.Fatalf("failed replica answers error %d, want KAFKA_STORAGE_ERROR", code)
	}
	mem.SetFault(nil)
	checkExactlyOnce(t, c, c.BrokerAddr(leader), "disk", log.recs)
}

// TestDeletedWhileDown: a topic deleted while a broker is down leaves
// nothing on that broker's disk once it is back.
func TestDeletedWhileDown(t *testing.T) {
	c := NewCluster(t, Brokers(3))
	createReplicated(t, c, "gone", 2, 3)
	dir := c.Broker(2).PartitionDir("gone", 0)
	c.Stop(2)
	resp, err := c.Admin(t).DeleteTopics(testContext(t, 30*time.Second), "gone")
	if err != nil || resp["gone"].Err != nil {
		t.Fatalf("delete: %v %v", err, resp["gone"].Err)
	}
	if _, err := c.FS(2).Stat(dir); err != nil {
		t.Fatalf("the stopped broker's replica is not on its disk to begin with: %v", err)
	}
	c.Start(2)
	eventually(t, 30*time.Second, "the orphaned replicas to be removed", func() bool {
		logs, _ := c.FS(2).ReadDir(path.Dir(dir))
		rafts, _ := c.FS(2).ReadDir(path.Join(c.DataDir(2), "raft"))
		return len(logs) == 0 && slices.Equal(rafts, []string{"__cluster_metadata"})
	})
}

// TestISRAfterLeaderChange: a new leader does not give dead replicas the
// whole lag window. With a 30 s replica.lag.time.max, one follower is
// killed, then the leader restarts, so leadership changes while that
// follower is dead; publishing the new leader resets the ISR to every
// replica, and the new leader must drop the dead one within seconds, not
// 30 s (the ISR becomes the two live replicas).
func TestISRAfterLeaderChange(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.ReplicaLagMax = 30 * time.Second }))
	createReplicated(t, c, "isr2", 1, 3)
	leader := waitPreferredLeader(t, c, "isr2", 0)
	follower := (leader + 1) % 3
	cl := c.Client(t, kgo.DefaultProduceTopic("isr2"))
	if err := cl.ProduceSync(testContext(t, 20*time.Second), &kgo.Record{Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	_, epoch := c.Broker(leader).PartitionLeader("isr2", 0)
	c.Kill(follower)
	c.Restart(leader)
	start := time.Now()
	var live []int32
	for i := range 3 {
		if i != follower {
			live = append(live, int32(i+1))
		}
	}
	eventually(t, 15*time.Second, fmt.Sprintf("a new leader with ISR %v", live), func() bool {
		for i := range 3 {
			if i == follower {
				continue
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.BrokerAddr(i)))
			if err != nil {
				return false
			}
			md, err := kadm.NewClient(cl).Metadata(testContext(t, 5*time.Second), "isr2")
			cl.Close()
			if err != nil {
				return false
			}
			p := md.Topics["isr2"].Partitions[0]
			if p.LeaderEpoch <= epoch || !slices.Equal(p.ISR, live) {
				return false
			}
		}
		return true
	})
	t.Logf("ISR %v %v after the leader restarted (lag window 30 s)", live, time.Since(start).Round(10*time.Millisecond))
}
