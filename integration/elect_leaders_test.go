package integration

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

// TestElectLeaders: with automatic balancing off, a stop and start moves
// leadership off the preferred replicas. ElectLeaders (PREFERRED) sent to
// a broker that leads none of the partitions (so it forwards every one)
// moves each displaced partition back and answers ELECTION_NOT_NEEDED for
// the others; Metadata on every broker then names the preferred replicas.
// The same through kadm (to the controller) after a second displacement;
// then a repeat answers ELECTION_NOT_NEEDED everywhere, unknown topics and
// partitions UNKNOWN_TOPIC_OR_PARTITION, UNCLEAN ELECTION_NOT_NEEDED (every
// partition has a leader), v0 (no election type, no top-level error code)
// works, and an unknown election type is INVALID_REQUEST.
func TestElectLeaders(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.LeaderBalanceInterval = -1 }))
	const topic, partitions = "elect", int32(6)
	createReplicated(t, c, topic, partitions, 3)
	replicas := electReplicaLists(t, c, 0, topic)

	// Forwarding: the request goes to the displaced broker, which leads
	// nothing after its restart.
	j := c.Index(replicas[0][0])
	displaced := electDisplace(t, c, j, topic, partitions, replicas)
	req := kmsg.NewPtrElectLeadersRequest()
	req.Version, req.TimeoutMillis = 2, 8000
	rt := kmsg.NewElectLeadersRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rt.Partitions = append(rt.Partitions, p)
	}
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.BrokerAddr(j), req).(*kmsg.ElectLeadersResponse)
	if resp.ErrorCode != 0 || len(resp.Topics) != 1 || resp.Topics[0].Topic != topic || len(resp.Topics[0].Partitions) != int(partitions) {
		t.Fatalf("ElectLeaders through broker %d: %+v", j+1, resp)
	}
	for _, rp := range resp.Topics[0].Partitions {
		want := kerr.ElectionNotNeeded.Code
		if displaced[rp.Partition] {
			want = 0
		}
		if rp.ErrorCode != want {
			t.Fatalf("partition %d answered %v (%s), want %v", rp.Partition, kerr.ErrorForCode(rp.ErrorCode), electString(rp.ErrorMessage), kerr.ErrorForCode(want))
		}
	}
	// The broker that answered waited for its metadata to show the new
	// leaders; the others follow within moments.
	electCheckPreferred(t, c, j, topic, replicas)
	electWaitPreferred(t, c, topic, replicas)

	// Through kadm (sent to the controller), for every partition.
	k := c.Index(replicas[electOtherPreferred(replicas, replicas[0][0])][0])
	displaced = electDisplace(t, c, k, topic, partitions, replicas)
	adm := c.Admin(t)
	res, err := adm.ElectLeaders(testContext(t, 30*time.Second), kadm.ElectPreferredReplica, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res[topic]) != int(partitions) {
		t.Fatalf("ElectLeaders for all partitions answered %d of %s's: %+v", len(res[topic]), topic, res)
	}
	for tp, ps := range res {
		for p, r := range ps {
			var want error = kerr.ElectionNotNeeded
			if tp == topic && displaced[p] {
				want = nil
			}
			if r.How != kadm.ElectPreferredReplica || !errors.Is(r.Err, want) {
				t.Fatalf("%s-%d: %+v, want error %v", tp, p, r, want)
			}
		}
	}
	electWaitPreferred(t, c, topic, replicas)

	// Nothing left to move.
	res, err = adm.ElectLeaders(testContext(t, 30*time.Second), kadm.ElectPreferredReplica, nil)
	if err != nil {
		t.Fatal(err)
	}
	for p := range partitions {
		if r := res[topic][p]; !errors.Is(r.Err, kerr.ElectionNotNeeded) || r.ErrMessage == "" {
			t.Fatalf("repeated election of %s-%d: %+v", topic, p, r)
		}
	}

	// Unknown topics and partitions.
	unknown := make(kadm.TopicsSet)
	unknown.Add("no-such-topic", 0)
	unknown.Add(topic, partitions, -1)
	res, err = adm.ElectLeaders(testContext(t, 30*time.Second), kadm.ElectPreferredReplica, unknown)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range []struct {
		topic string
		p     int32
	}{{"no-such-topic", 0}, {topic, partitions}, {topic, -1}} {
		if r, ok := res[tp.topic][tp.p]; !ok || !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("election of unknown %s-%d: %+v (present %v)", tp.topic, tp.p, r, ok)
		}
	}

	// UNCLEAN: every partition has a leader, so none is needed.
	res, err = adm.ElectLeaders(testContext(t, 30*time.Second), kadm.ElectLiveReplica, electTopicsSet(topic, partitions))
	if err != nil {
		t.Fatal(err)
	}
	for p := range partitions {
		if r := res[topic][p]; r.How != kadm.ElectLiveReplica || !errors.Is(r.Err, kerr.ElectionNotNeeded) {
			t.Fatalf("unclean election of %s-%d: %+v", topic, p, r)
		}
	}

	// v0: no election type (preferred) and no top-level error code.
	v0 := kmsg.NewPtrElectLeadersRequest()
	v0.Version, v0.TimeoutMillis = 0, 5000
	v0.Topics = []kmsg.ElectLeadersRequestTopic{{Topic: topic, Partitions: []int32{0, 1}}}
	r0 := rawRequest(t, c.BrokerAddr(k), v0).(*kmsg.ElectLeadersResponse)
	if len(r0.Topics) != 1 || len(r0.Topics[0].Partitions) != 2 {
		t.Fatalf("v0 answer: %+v", r0)
	}
	for _, rp := range r0.Topics[0].Partitions {
		if rp.ErrorCode != kerr.ElectionNotNeeded.Code {
			t.Fatalf("v0, partition %d: %v", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
		}
	}

	// An election type Kafka does not define.
	bad := kmsg.NewPtrElectLeadersRequest()
	bad.Version, bad.ElectionType, bad.TimeoutMillis = 1, 7, 5000
	bad.Topics = []kmsg.ElectLeadersRequestTopic{{Topic: topic, Partitions: []int32{0}}}
	rb := rawRequest(t, c.BrokerAddr(0), bad).(*kmsg.ElectLeadersResponse)
	if rb.ErrorCode != kerr.InvalidRequest.Code || len(rb.Topics) != 1 || rb.Topics[0].Partitions[0].ErrorCode != kerr.InvalidRequest.Code {
		t.Fatalf("election type 7: %+v", rb)
	}
}

// electDisplace stops broker slot i and starts it again with balancing off, so
// every partition it led (and prefers) is led elsewhere, and returns the
// partitions not led by their preferred replica. It checks that slot i
// leads nothing afterwards and that some partition was displaced.
func electDisplace(t *testing.T, c *Cluster, i int, topic string, partitions int32, replicas map[int32][]int32) map[int32]bool {
	t.Helper()
	others := []int{}
	for s := range c.Size() {
		if s != i {
			others = append(others, s)
		}
	}
	c.Stop(i)
	for p := range partitions {
		waitLeaderAmong(t, c, topic, p, others...)
	}
	c.Start(i)
	c.waitRegistered()
	for p := range partitions {
		c.WaitLeader(topic, p)
	}
	// Caught up: ElectLeaders moves leadership only to a caught-up replica.
	waitConverged(t, c, topic, partitions)
	displaced := map[int32]bool{}
	for p := range partitions {
		l := c.WaitLeader(topic, p)
		if l == i {
			t.Fatalf("broker %d leads %s-%d right after its restart, with balancing off", i+1, topic, p)
		}
		if c.Index(replicas[p][0]) != l {
			displaced[p] = true
		}
	}
	if len(displaced) == 0 {
		t.Fatalf("restarting broker %d displaced no leader", i+1)
	}
	t.Logf("restarted broker %d; partitions led off their preferred replica: %v", i+1, displaced)
	return displaced
}

// electOtherPreferred is a partition whose preferred replica is not id.
func electOtherPreferred(replicas map[int32][]int32, id int32) int32 {
	for p := range int32(len(replicas)) {
		if replicas[p][0] != id {
			return p
		}
	}
	return 0
}

// electReplicaLists reads each partition's replica list through broker
// slot i's Metadata.
func electReplicaLists(t testing.TB, c *Cluster, i int, topic string) map[int32][]int32 {
	t.Helper()
	out := map[int32][]int32{}
	for _, mp := range electMetadataAt(t, c, i, topic) {
		out[mp.Partition] = mp.Replicas
	}
	return out
}

// electMetadataAt asks broker slot i (and only it) for a topic's
// partitions.
func electMetadataAt(t testing.TB, c *Cluster, i int, topic string) []kmsg.MetadataResponseTopicPartition {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 12
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.BrokerAddr(i), req).(*kmsg.MetadataResponse)
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata of %s from broker %d: %+v", topic, i+1, resp.Topics)
	}
	return resp.Topics[0].Partitions
}

// electPreferredDiff reports how broker slot i's Metadata differs from every
// partition being led by its preferred replica ("" when it does not).
func electPreferredDiff(t testing.TB, c *Cluster, i int, topic string, replicas map[int32][]int32) string {
	t.Helper()
	mps := electMetadataAt(t, c, i, topic)
	if len(mps) != len(replicas) {
		return fmt.Sprintf("%d partitions, want %d", len(mps), len(replicas))
	}
	for _, mp := range mps {
		if !slices.Equal(mp.Replicas, replicas[mp.Partition]) {
			return fmt.Sprintf("partition %d has replicas %v, was %v", mp.Partition, mp.Replicas, replicas[mp.Partition])
		}
		if mp.ErrorCode != 0 || mp.Leader != mp.Replicas[0] {
			return fmt.Sprintf("partition %d led by %d (error %d), preferred %d", mp.Partition, mp.Leader, mp.ErrorCode, mp.Replicas[0])
		}
	}
	return ""
}

// electCheckPreferred fails unless broker slot i's Metadata names every
// partition's preferred replica as its leader now.
func electCheckPreferred(t testing.TB, c *Cluster, i int, topic string, replicas map[int32][]int32) {
	t.Helper()
	if diff := electPreferredDiff(t, c, i, topic, replicas); diff != "" {
		t.Fatalf("broker %d's metadata right after ElectLeaders: %s", i+1, diff)
	}
}

// electWaitPreferred waits briefly until every broker's Metadata
// names every partition's preferred replica as leader, and that replica
// is the ready leader.
func electWaitPreferred(t testing.TB, c *Cluster, topic string, replicas map[int32][]int32) {
	t.Helper()
	diff := func() string {
		for i := range c.Size() {
			if d := electPreferredDiff(t, c, i, topic, replicas); d != "" {
				return fmt.Sprintf("broker %d: %s", i+1, d)
			}
		}
		for p, rs := range replicas {
			if !c.Broker(c.Index(rs[0])).IsReadyLeader(topic, p) {
				return fmt.Sprintf("broker %d is not the ready leader of partition %d", rs[0], p)
			}
		}
		return ""
	}
	deadline := time.Now().Add(5 * time.Second)
	for d := diff(); d != ""; d = diff() {
		if time.Now().After(deadline) {
			t.Fatalf("preferred leaders not everywhere 5 s after ElectLeaders: %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// electTopicsSet names partitions 0..n-1 of topic.
func electTopicsSet(topic string, n int32) kadm.TopicsSet {
	s := make(kadm.TopicsSet)
	for p := range n {
		s.Add(topic, p)
	}
	return s
}

func electString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
