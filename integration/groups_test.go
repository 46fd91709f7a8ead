package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/broker/coordinator"
)

// groupCluster is a three-broker cluster with no initial rebalance delay,
// so group tests do not wait 3 s per new group.
func groupCluster(t *testing.T) *Cluster {
	return NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.GroupInitialRebalanceDelay = -1 }))
}

// produceValues writes n records with distinct values prefix-i to topic and
// returns them.
func produceValues(t *testing.T, c *Cluster, topic, prefix string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic))
	defer cl.Close()
	var vals []string
	var recs []*kgo.Record
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		vals = append(vals, v)
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%97), Value: []byte(v)})
	}
	if err := cl.ProduceSync(testContext(t, time.Minute), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	return vals
}

// groupMember is one franz-go group consumer that records what it reads.
type groupMember struct {
	cl   *kgo.Client
	stop chan struct{}
	done chan struct{}
}

// seenLog collects consumed values from all members.
type seenLog struct {
	mu   sync.Mutex
	seen map[string]int
}

func (s *seenLog) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]int{}
	}
	s.seen[v]++
}

func (s *seenLog) has(vals []string) (missing int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if s.seen[v] == 0 {
			missing++
		}
	}
	return missing
}

// startMember joins group on topic with franz-go's defaults
// (cooperative-sticky, autocommit, commit on revoke).
func startMember(t *testing.T, c *Cluster, group, topic string, log *seenLog, opts ...kgo.Opt) *groupMember {
	t.Helper()
	all := append([]kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.AutoCommitInterval(200 * time.Millisecond)}, opts...)
	cl := c.Client(t, all...)
	m := &groupMember{cl: cl, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-m.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			fs := cl.PollFetches(ctx)
			cancel()
			select {
			case <-m.stop:
				return
			default:
			}
			fs.EachRecord(func(r *kgo.Record) { log.add(string(r.Value)) })
		}
	}()
	return m
}

// close stops polling and leaves the group, committing what it read.
func (m *groupMember) close(t *testing.T) {
	close(m.stop)
	<-m.done
	if err := m.cl.CommitUncommittedOffsets(testContext(t, 30*time.Second)); err != nil {
		t.Logf("final commit: %v", err)
	}
	m.cl.Close()
}

// coordinatorSlot is the broker slot coordinating group.
func coordinatorSlot(t *testing.T, c *Cluster, group string) int {
	t.Helper()
	p := coordinator.OffsetsPartition(group, 16)
	return c.WaitLeader("__consumer_offsets", p)
}

// TestConsumerGroups: three franz-go members of one group consume a
// 12-partition RF=3 topic with commits; every record is read at least
// once; the group's committed offsets reach the end (kadm lag 0). The
// coordinator's broker is then killed: the commits survive (a new member
// resumes exactly at them, reading only what was produced afterwards) and
// DescribeGroups through the new coordinator shows the group.
func TestConsumerGroups(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "orders", "g1"
	createReplicated(t, c, topic, 12, 3)
	first := produceValues(t, c, topic, "a", 6000)

	var log seenLog
	var members []*groupMember
	for range 3 {
		members = append(members, startMember(t, c, group, topic, &log))
	}
	eventually(t, 60*time.Second, "every record consumed", func() bool { return log.has(first) == 0 })
	for _, m := range members {
		m.close(t)
	}

	adm := c.Admin(t)
	ctx := testContext(t, time.Minute)
	eventually(t, 30*time.Second, "group lag 0", func() bool {
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			return false
		}
		l, ok := lags[group]
		if !ok || l.Error() != nil {
			return false
		}
		return l.Lag.Total() == 0 && len(l.Lag[topic]) == 12
	})
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		got, ok := committed.Lookup(topic, o.Partition)
		if !ok || got.At != o.Offset {
			t.Fatalf("partition %d: committed %+v, want the end %d", o.Partition, got, o.Offset)
		}
	})

	// The coordinator dies; the commits survive.
	ci := coordinatorSlot(t, c, group)
	c.Kill(ci)
	t.Logf("killed the coordinator, broker slot %d", ci)
	second := produceValues(t, c, topic, "b", 600)
	var log2 seenLog
	m := startMember(t, c, group, topic, &log2)
	eventually(t, 60*time.Second, "the new records consumed after the failover", func() bool { return log2.has(second) == 0 })
	m.close(t)
	log2.mu.Lock()
	var old []string
	for v := range log2.seen {
		if !slices.Contains(second, v) {
			old = append(old, v)
		}
	}
	log2.mu.Unlock()
	if len(old) > 0 {
		t.Fatalf("after the coordinator failover the group re-read %d records it had committed, e.g. %q", len(old), old[0])
	}
	// The admin client may still have the dead coordinator cached: retry.
	var d kadm.DescribedGroup
	eventually(t, 30*time.Second, "DescribeGroups through the new coordinator", func() bool {
		described, err := c.Admin(t).DescribeGroups(ctx, group)
		if err != nil {
			t.Logf("describe: %v", err)
			return false
		}
		d = described[group]
		if d.Err != nil {
			t.Logf("describe: %v", d.Err)
		}
		return d.Err == nil
	})
	if d.State != "Empty" || d.ProtocolType != "consumer" {
		t.Fatalf("described after the failover: state %q type %q", d.State, d.ProtocolType)
	}
}

// TestCoordinatorMoveNoRebalance: while two members consume, the
// coordinator's broker stops gracefully (its leaderships, the group's
// offsets partition included, move to other brokers) and comes back (and
// leadership balancing moves the partition back). The group metadata was
// written through Raft, so the new coordinators know the generation and
// the members: no member is revoked or assigned anything again, and
// consumption goes on.
func TestCoordinatorMoveNoRebalance(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "moves", "g-move"
	createReplicated(t, c, topic, 6, 3)
	first := produceValues(t, c, topic, "a", 600)

	var mu sync.Mutex
	assigned := map[int]int{}
	var log seenLog
	var members []*groupMember
	for i := range 2 {
		members = append(members, startMember(t, c, group, topic, &log,
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				mu.Lock()
				assigned[i]++
				mu.Unlock()
			})))
	}
	eventually(t, 60*time.Second, "the first records consumed", func() bool { return log.has(first) == 0 })
	eventually(t, 60*time.Second, "both members assigned and the group stable", func() bool {
		mu.Lock()
		both := assigned[0] > 0 && assigned[1] > 0
		mu.Unlock()
		if !both {
			return false
		}
		described, err := c.Admin(t).DescribeGroups(testContext(t, 10*time.Second), group)
		if err != nil {
			return false
		}
		d := described[group]
		return d.Err == nil && d.State == "Stable" && len(d.Members) == 2
	})
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	before := map[int]int{0: assigned[0], 1: assigned[1]}
	mu.Unlock()
	ci := coordinatorSlot(t, c, group)
	other := (ci + 1) % c.Size()
	gen, ok := c.Broker(other).GroupGeneration(group)
	if !ok || gen < 1 {
		t.Fatalf("broker slot %d's offset store has no generation for %s (%d, %v)", other, group, gen, ok)
	}

	c.Stop(ci)
	second := produceValues(t, c, topic, "b", 600)
	eventually(t, 60*time.Second, "records produced while the coordinator moved", func() bool { return log.has(second) == 0 })
	c.Start(ci)
	eventually(t, 30*time.Second, "the offsets partition back on its preferred replica", func() bool {
		return coordinatorSlot(t, c, group) == ci
	})
	third := produceValues(t, c, topic, "c", 600)
	eventually(t, 60*time.Second, "records produced after it moved back", func() bool { return log.has(third) == 0 })

	mu.Lock()
	after := map[int]int{0: assigned[0], 1: assigned[1]}
	mu.Unlock()
	for _, m := range members {
		m.close(t)
	}
	if after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("the coordinator moves caused a rebalance: assignments per member %v before, %v after", before, after)
	}
	if got, _ := c.Broker(other).GroupGeneration(group); got != gen {
		t.Fatalf("the group's generation went from %d to %d across the coordinator moves", gen, got)
	}
}
