// Package sarama drives Varve with IBM/sarama, the Kafka client many Go
// services still use. It is a module of its own, test-only, so Sarama's
// dependency tree stays out of the broker's go.mod; it reaches the cluster
// through the integration package's exported API only.
package sarama

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/integration"
)

// Versions tried, each against apis.go's ranges (Sarama clamps each
// request to the broker's advertised range, never above what the Kafka
// version below allows):
//
//	V2_8_0_0 (Sarama's default): Metadata 11, Fetch 12, FindCoordinator 3,
//	  JoinGroup 7, SyncGroup 5, Heartbeat 4, LeaveGroup 4, OffsetCommit 8,
//	  OffsetFetch 7 (all flexible).
//	V4_0_0_0 (KIP-896's floors, which Varve follows): the same but
//	  JoinGroup 8, LeaveGroup 5, OffsetFetch 8 (batched groups) and
//	  consumer subscription metadata v2 (KIP-792).
var groupVersions = []sarama.KafkaVersion{sarama.V2_8_0_0, sarama.V4_0_0_0}

func TestMain(m *testing.M) {
	// Sarama logs to a package-level logger; show it only with -v.
	flag.Parse()
	if testing.Verbose() {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Ltime|log.Lmicroseconds)
	}
	os.Exit(m.Run())
}

// TestConsumerGroup: two Sarama ConsumerGroup members (range assignor,
// auto-commit every 200 ms, OffsetOldest when nothing is committed) share a
// 6-partition RF=3 topic on three brokers. Every record is consumed at
// least once and both members end up holding disjoint halves of the
// partitions in one generation; after they close (Sarama commits on close)
// the group's committed offsets, read with kadm, are the end offsets of
// every partition, and a new member of the group reads only records
// produced afterwards.
func TestConsumerGroup(t *testing.T) {
	for _, v := range groupVersions {
		t.Run("kafka="+v.String(), func(t *testing.T) { testConsumerGroup(t, v) })
	}
}

func testConsumerGroup(t *testing.T, version sarama.KafkaVersion) {
	c := groupCluster(t)
	const topic, group, partitions = "sarama-orders", "sarama-g1", 6
	createTopic(t, c, topic, partitions, 3)
	first := produceValues(t, c, topic, "a", 3000)

	var seen seenLog
	m1 := startMember(t, c, version, group, topic, &seen)
	m2 := startMember(t, c, version, group, topic, &seen)
	eventually(t, 60*time.Second, "every record consumed", func() bool { return seen.missing(first) == 0 })
	eventually(t, 60*time.Second, "both members holding disjoint halves in one generation", func() bool {
		g1, c1 := m1.latest()
		g2, c2 := m2.latest()
		if g1 != g2 || len(c1) == 0 || len(c2) == 0 {
			return false
		}
		all := append(slices.Clone(c1), c2...)
		slices.Sort(all)
		return slices.Equal(slices.Compact(all), []int32{0, 1, 2, 3, 4, 5}) && len(all) == partitions
	})
	m1.close(t)
	m2.close(t)

	adm := c.Admin(t)
	ctx := testContext(t, time.Minute)
	checkCommittedAtEnd(t, ctx, adm, group, topic, partitions)
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if d := described[group]; d.Err != nil || d.State != "Empty" || d.ProtocolType != "consumer" {
		t.Fatalf("after both members left: state %q type %q err %v, want Empty consumer", d.State, d.ProtocolType, d.Err)
	}

	// A new member resumes at the commits: only the new records.
	second := produceValues(t, c, topic, "b", 300)
	var seen2 seenLog
	m3 := startMember(t, c, version, group, topic, &seen2)
	eventually(t, 60*time.Second, "the new records consumed", func() bool { return seen2.missing(second) == 0 })
	m3.close(t)
	if old := seen2.except(second); len(old) > 0 {
		t.Fatalf("the new member re-read %d records the group had committed, e.g. %q", len(old), old[0])
	}
	checkCommittedAtEnd(t, ctx, adm, group, topic, partitions)
}

// TestOffsetFetchUnknownGroup: Sarama reads offsets of a group that never
// existed (as its OffsetManager does outside any group, and as
// ClusterAdmin.ListConsumerGroupOffsets does): every partition answers -1
// with no error, at each OffsetFetch version Sarama sends (v1 for Kafka
// 0.8.2, v3 for 0.11, v7 for 2.8, v8 batched for 3.0+).
func TestOffsetFetchUnknownGroup(t *testing.T) {
	c := integration.NewCluster(t)
	const topic = "sarama-unknown"
	createTopic(t, c, topic, 3, 1)
	for _, v := range []sarama.KafkaVersion{sarama.V0_8_2_0, sarama.V0_11_0_0, sarama.V2_8_0_0, sarama.V4_0_0_0} {
		t.Run("kafka="+v.String(), func(t *testing.T) {
			cfg := newConfig(v)
			group := "never-existed-" + v.String()
			// ClusterAdmin needs a controller, which Metadata reports
			// from Kafka 0.10 on.
			if v.IsAtLeast(sarama.V0_10_0_0) {
				adm, err := sarama.NewClusterAdmin(c.Addrs(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer adm.Close()
				resp, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
				if err != nil {
					t.Fatalf("ListConsumerGroupOffsets: %v", err)
				}
				for p := range int32(3) {
					b := resp.GetBlock(topic, p)
					if b == nil {
						t.Fatalf("partition %d: no block in the answer", p)
					}
					if b.Err != sarama.ErrNoError || b.Offset != -1 {
						t.Fatalf("partition %d: offset %d err %v, want -1 and no error", p, b.Offset, b.Err)
					}
				}
			}

			// The OffsetManager (Sarama's commit API outside a consumer
			// group) fails ManagePartition on any error in the answer and
			// starts a partition answered -1 at the configured initial
			// offset.
			client, err := sarama.NewClient(c.Addrs(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			om, err := sarama.NewOffsetManagerFromClient(group, client)
			if err != nil {
				t.Fatal(err)
			}
			defer om.Close()
			pom, err := om.ManagePartition(topic, 1)
			if err != nil {
				t.Fatalf("ManagePartition: %v", err)
			}
			defer pom.Close()
			if off, _ := pom.NextOffset(); off != cfg.Consumer.Offsets.Initial {
				t.Fatalf("OffsetManager's next offset %d, want the configured initial %d (nothing committed)", off, cfg.Consumer.Offsets.Initial)
			}
		})
	}
}

// checkCommittedAtEnd fails unless group's committed offset of every
// partition of topic is that partition's end offset.
func checkCommittedAtEnd(t *testing.T, ctx context.Context, adm *kadm.Client, group, topic string, partitions int32) {
	t.Helper()
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if err := committed.Error(); err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ends.Each(func(o kadm.ListedOffset) {
		n++
		got, ok := committed.Lookup(topic, o.Partition)
		if o.Err != nil || !ok || got.At != o.Offset {
			t.Errorf("partition %d: committed %+v, want the end %d (%v)", o.Partition, got, o.Offset, o.Err)
		}
	})
	if n != int(partitions) {
		t.Fatalf("%d end offsets listed, want %d", n, partitions)
	}
}

// newConfig is the Sarama configuration the tests share: version pinned,
// start at the oldest offset when the group has no commit, auto-commit
// every 200 ms, errors returned (and logged by the member).
func newConfig(v sarama.KafkaVersion) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "varve-sarama-test"
	cfg.Version = v
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = true
	cfg.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	cfg.Consumer.MaxWaitTime = 250 * time.Millisecond
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = time.Second
	return cfg
}

// member is one Sarama ConsumerGroup running Consume in a loop.
type member struct {
	group  sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	generation int32
	claims     []int32 // the partitions of the latest session
}

// latest is the generation and sorted partitions of the member's latest
// session.
func (m *member) latest() (int32, []int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.generation, slices.Clone(m.claims)
}

func startMember(t *testing.T, c *integration.Cluster, v sarama.KafkaVersion, group, topic string, seen *seenLog) *member {
	t.Helper()
	g, err := sarama.NewConsumerGroup(c.Addrs(), group, newConfig(v))
	if err != nil {
		t.Fatalf("new consumer group: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{group: g, cancel: cancel, done: make(chan struct{})}
	errsDone := make(chan struct{})
	go func() {
		defer close(errsDone)
		for err := range g.Errors() {
			t.Logf("sarama group error: %v", err)
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			err := g.Consume(ctx, []string{topic}, &handler{m: m, topic: topic, seen: seen})
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
			if err != nil && ctx.Err() == nil {
				t.Logf("consume: %v", err)
				time.Sleep(100 * time.Millisecond) // Sarama's own retry backoff is 2 s
			}
		}
	}()
	t.Cleanup(func() {
		m.cancel()
		<-m.done
		_ = m.group.Close() // a no-op after close
		<-errsDone
	})
	return m
}

// close ends the member's session (Sarama commits what it marked) and
// leaves the group.
func (m *member) close(t *testing.T) {
	t.Helper()
	m.cancel()
	<-m.done
	if err := m.group.Close(); err != nil {
		t.Errorf("close consumer group: %v", err)
	}
}

// handler records every value and marks it consumed.
type handler struct {
	m     *member
	topic string
	seen  *seenLog
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	ps := slices.Clone(s.Claims()[h.topic])
	slices.Sort(ps)
	h.m.mu.Lock()
	h.m.generation, h.m.claims = s.GenerationID(), ps
	h.m.mu.Unlock()
	return nil
}

func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.seen.add(string(msg.Value))
			s.MarkMessage(msg, "")
		case <-s.Context().Done():
			return nil
		}
	}
}

// seenLog counts consumed values across members.
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

// missing is how many of vals were never consumed.
func (s *seenLog) missing(vals []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range vals {
		if s.seen[v] == 0 {
			n++
		}
	}
	return n
}

// except lists the consumed values not in vals, sorted.
func (s *seenLog) except(vals []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for v := range s.seen {
		if !slices.Contains(vals, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// groupCluster is three brokers with no initial rebalance delay, so a new
// group does not wait 3 s for more members.
func groupCluster(t *testing.T) *integration.Cluster {
	return integration.NewCluster(t, integration.Brokers(3),
		integration.WithConfig(func(cfg *broker.Config) { cfg.GroupInitialRebalanceDelay = -1 }))
}

// createTopic creates topic with kadm and waits for every partition's
// leader.
func createTopic(t *testing.T, c *integration.Cluster, topic string, partitions int32, rf int16) {
	t.Helper()
	resp, err := c.Admin(t).CreateTopic(testContext(t, 30*time.Second), partitions, rf, nil, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", topic, err, resp.Err)
	}
	for p := range partitions {
		c.WaitLeader(topic, p)
	}
}

// produceValues writes n records with distinct values prefix-i to topic
// with franz-go and returns the values.
func produceValues(t *testing.T, c *integration.Cluster, topic, prefix string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic))
	defer cl.Close()
	vals := make([]string, 0, n)
	recs := make([]*kgo.Record, 0, n)
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

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
