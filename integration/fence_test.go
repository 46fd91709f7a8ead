package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

// TestFencedBrokerShowsNoLeader: an RF=1 partition whose broker dies has
// no replica to take over. Once the metadata leader has not heard from the
// broker for BrokerSessionTimeout, every surviving broker's Metadata shows
// the partition without a leader (LEADER_NOT_AVAILABLE, leader and epoch
// -1, the dead replica offline) instead of naming the dead broker forever;
// the other partitions are untouched and keep taking writes. When the
// broker comes back it is unfenced, leads its partition again, and the
// records acknowledged before it died are all there.
func TestFencedBrokerShowsNoLeader(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.BrokerSessionTimeout = 2 * time.Second }))
	const topic = "solo"
	ctx := testContext(t, 3*time.Minute)

	// Partition p lives on broker id p+1 only.
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	for p := range int32(3) {
		a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		a.Partition, a.Replicas = p, []int32{p + 1}
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
	}
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, c.Client(t))
	if err != nil || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("create %s: %v %+v", topic, err, resp)
	}
	for p := range int32(3) {
		if got, want := c.WaitLeader(topic, p), c.Index(p+1); got != want {
			t.Fatalf("partition %d led by slot %d, want %d", p, got, want)
		}
	}

	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))
	produce := func(p int32, value string) {
		t.Helper()
		r := &kgo.Record{Partition: p, Value: []byte(value)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %q to partition %d: %v", value, p, err)
		}
	}
	for i := range 3 {
		for p := range int32(3) {
			produce(p, fmt.Sprintf("before-%d-%d", p, i))
		}
	}

	victim := c.Index(3) // partition 2's only replica
	c.Kill(victim)

	live := []int{}
	for i := range 3 {
		if i != victim {
			live = append(live, i)
		}
	}
	partitionView := func(i int) map[int32]kmsg.MetadataResponseTopicPartition { return metadataView(t, c, i, topic) }
	var last string
	eventually(t, 30*time.Second, "every live broker shows partition 2 without a leader", func() bool {
		for _, i := range live {
			p := partitionView(i)[2]
			if p.Leader != -1 || p.LeaderEpoch != -1 || p.ErrorCode != kerr.LeaderNotAvailable.Code || !slices.Equal(p.OfflineReplicas, []int32{3}) {
				last = fmt.Sprintf("slot %d: leader %d epoch %d error %d offline %v", i, p.Leader, p.LeaderEpoch, p.ErrorCode, p.OfflineReplicas)
				return false
			}
		}
		return true
	})
	t.Logf("partition 2 shown without a leader (last seen before: %s)", last)
	for _, i := range live {
		view := partitionView(i)
		for p := range int32(2) {
			if got := view[p]; got.Leader != p+1 || got.ErrorCode != 0 || len(got.OfflineReplicas) != 0 {
				t.Fatalf("slot %d shows partition %d as leader %d error %d offline %v; want leader %d", i, p, got.Leader, got.ErrorCode, got.OfflineReplicas, p+1)
			}
		}
	}
	for p := range int32(2) {
		produce(p, fmt.Sprintf("during-%d", p))
	}

	c.Start(victim)
	eventually(t, 60*time.Second, "every broker shows partition 2 led by broker 3 again", func() bool {
		for i := range 3 {
			p := partitionView(i)[2]
			if p.Leader != 3 || p.ErrorCode != 0 || len(p.OfflineReplicas) != 0 {
				return false
			}
		}
		return true
	})
	produce(2, "after-2")

	got := map[int32][]string{}
	for _, r := range consumeAll(t, c, topic) {
		got[r.Partition] = append(got[r.Partition], fmt.Sprintf("%d:%s", r.Offset, r.Value))
	}
	want := map[int32]string{
		0: "0:before-0-0 1:before-0-1 2:before-0-2 3:during-0",
		1: "0:before-1-0 1:before-1-1 2:before-1-2 3:during-1",
		2: "0:before-2-0 1:before-2-1 2:before-2-2 3:after-2",
	}
	for p, w := range want {
		if g := strings.Join(got[p], " "); g != w {
			t.Fatalf("partition %d holds %q, want %q", p, g, w)
		}
	}
}

// metadataView is broker slot i's Metadata answer for topic's partitions,
// at the newest version the broker supports (a raw request: version 0
// would drop leader epochs and offline replicas).
func metadataView(t testing.TB, c *Cluster, i int, topic string) map[int32]kmsg.MetadataResponseTopicPartition {
	t.Helper()
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(12)
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	md.Topics = append(md.Topics, mt)
	out := map[int32]kmsg.MetadataResponseTopicPartition{}
	for _, p := range rawRequest(t, c.BrokerAddr(i), md).(*kmsg.MetadataResponse).Topics[0].Partitions {
		out[p.Partition] = p
	}
	return out
}
