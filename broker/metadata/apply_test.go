package metadata

import (
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestRegisterBroker(t *testing.T) {
	h := newHarness(t, 0)
	b1 := Broker{ID: 1, RaftAddr: "a:9093", Rack: "r1", Listeners: []Listener{{"PLAINTEXT", "a", 9092}}}
	if res := h.ok(RegisterBroker{Broker: b1}); !res.Changed {
		t.Fatal("first registration not Changed")
	}
	if got := h.f.State().Brokers[1]; !reflect.DeepEqual(got, b1) {
		t.Fatalf("broker 1 = %#v, want %#v", got, b1)
	}
	if res := h.ok(RegisterBroker{Broker: b1}); res.Changed {
		t.Fatal("identical registration reports Changed")
	}
	moved := Broker{ID: 1, RaftAddr: "b:9093", Listeners: []Listener{{"PLAINTEXT", "b", 9092}, {"SSL", "b", 9094}}}
	if res := h.ok(RegisterBroker{Broker: moved}); !res.Changed {
		t.Fatal("re-registration on a new address not Changed")
	}
	if got := h.f.State().Brokers[1]; !reflect.DeepEqual(got, moved) {
		t.Fatalf("upsert: broker 1 = %#v, want %#v", got, moved)
	}
	h.ok(RegisterBroker{Broker: Broker{ID: 0, RaftAddr: "z:1", Listeners: []Listener{}}})
	if got := h.f.State().Brokers[0]; got.Listeners != nil {
		t.Fatalf("empty listeners stored as %#v, want nil", got.Listeners)
	}
	if got := h.f.State().BrokerIDs(); !slices.Equal(got, []int32{0, 1}) {
		t.Fatalf("BrokerIDs = %v", got)
	}

	for _, bad := range []Broker{
		{ID: -1, RaftAddr: "x:1"},
		{ID: 5, Listeners: []Listener{{"P", "h", -1}}},
		{ID: 5, Listeners: []Listener{{"P", "h", 65536}}},
	} {
		h.fails(RegisterBroker{Broker: bad}, ErrInvalidCommand)
	}
}

func TestCreateTopic(t *testing.T) {
	h := newHarness(t, 3)
	res := h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 3, ReplicationFactor: 2,
		Configs: map[string]string{"retention.ms": "60000"}, CreatedMs: 1234})
	if !res.Changed {
		t.Fatal("CreateTopic not Changed")
	}
	tp := h.topic("orders")
	if tp.Name != "orders" || tp.ID != tid(1) || tp.CreatedMs != 1234 || !reflect.DeepEqual(tp.Configs, map[string]string{"retention.ms": "60000"}) {
		t.Fatalf("topic = %+v", tp)
	}
	want := [][]int32{{1, 2}, {3, 1}, {2, 3}}
	for i, p := range tp.Partitions {
		if !slices.Equal(p.Replicas, want[i]) || p.Leader != -1 || p.LeaderEpoch != -1 {
			t.Fatalf("partition %d = %+v, want replicas %v leader -1 epoch -1", i, p, want[i])
		}
	}
	if len(tp.Partitions) != 3 || tp.ReplicationFactor() != 2 {
		t.Fatalf("%d partitions, RF %d", len(tp.Partitions), tp.ReplicationFactor())
	}
	if h.f.State().TopicByID(tid(1)) != tp {
		t.Fatal("TopicByID does not find the topic")
	}

	h.ok(CreateTopic{Name: "pinned", ID: tid(2), Partitions: 2, ReplicationFactor: -1, Assignment: [][]int32{{3, 1}, {1, 3}}, Configs: map[string]string{}})
	pinned := h.topic("pinned")
	if !slices.Equal(pinned.Partitions[0].Replicas, []int32{3, 1}) || !slices.Equal(pinned.Partitions[1].Replicas, []int32{1, 3}) {
		t.Fatalf("explicit assignment not kept: %+v", pinned.Partitions)
	}
	if pinned.Configs != nil {
		t.Fatalf("empty configs stored as %#v, want nil", pinned.Configs)
	}
	h.ok(CreateTopic{Name: "rf-matches", ID: tid(3), Partitions: 1, ReplicationFactor: 3, Assignment: [][]int32{{2, 3, 1}}})

	tests := []struct {
		name string
		cmd  CreateTopic
		want []error
		msg  string
	}{
		{"name exists", CreateTopic{Name: "orders", ID: tid(9), Partitions: 0, ReplicationFactor: 9}, []error{ErrTopicExists}, `"orders"`},
		{"id in use", CreateTopic{Name: "other", ID: tid(1), Partitions: 1, ReplicationFactor: 1}, []error{ErrTopicExists}, `used by topic "orders"`},
		{"zero id", CreateTopic{Name: "other", Partitions: 1, ReplicationFactor: 1}, []error{ErrInvalidCommand}, "zero topic id"},
		{"empty name", CreateTopic{Name: "", ID: tid(9), Partitions: 1, ReplicationFactor: 1}, []error{ErrInvalidTopicName}, ""},
		{"dot", CreateTopic{Name: ".", ID: tid(9), Partitions: 1, ReplicationFactor: 1}, []error{ErrInvalidTopicName}, ""},
		{"dot dot", CreateTopic{Name: "..", ID: tid(9), Partitions: 1, ReplicationFactor: 1}, []error{ErrInvalidTopicName}, ""},
		{"slash", CreateTopic{Name: "../etc", ID: tid(9), Partitions: 1, ReplicationFactor: 1}, []error{ErrInvalidTopicName}, ""},
		{"too long", CreateTopic{Name: strings.Repeat("a", 250), ID: tid(9), Partitions: 1, ReplicationFactor: 1}, []error{ErrInvalidTopicName}, ""},
		{"zero partitions", CreateTopic{Name: "x", ID: tid(9), Partitions: 0, ReplicationFactor: 1}, []error{ErrInvalidPartitions}, ""},
		{"negative partitions", CreateTopic{Name: "x", ID: tid(9), Partitions: -1, ReplicationFactor: 1}, []error{ErrInvalidPartitions}, ""},
		{"too many partitions", CreateTopic{Name: "x", ID: tid(9), Partitions: MaxPartitions + 1, ReplicationFactor: 1}, []error{ErrInvalidPartitions}, ""},
		{"rf 0", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, ReplicationFactor: 0}, []error{ErrInvalidReplicationFactor}, ""},
		{"rf -1 without assignment", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, ReplicationFactor: -1}, []error{ErrInvalidReplicationFactor}, ""},
		{"rf above brokers", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, ReplicationFactor: 4}, []error{ErrInvalidReplicationFactor}, "registered brokers (3)"},
		{"assignment count", CreateTopic{Name: "x", ID: tid(9), Partitions: 3, Assignment: [][]int32{{1}, {2}}}, []error{ErrInvalidAssignment}, "2 replica lists for 3 partitions"},
		{"uneven lists", CreateTopic{Name: "x", ID: tid(9), Partitions: 2, Assignment: [][]int32{{1, 2}, {3}}}, []error{ErrInvalidAssignment}, "partition 1 has 1 replicas"},
		{"empty list", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, Assignment: [][]int32{{}}}, []error{ErrInvalidAssignment}, "no replicas"},
		{"duplicate broker", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, Assignment: [][]int32{{2, 2}}}, []error{ErrInvalidAssignment}, "broker 2 twice"},
		{"unknown broker", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, Assignment: [][]int32{{1, 7}}}, []error{ErrInvalidAssignment, ErrUnknownBroker}, "7"},
		{"list longer than brokers", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, Assignment: [][]int32{{1, 2, 3, 1}}}, []error{ErrInvalidAssignment}, ""},
		{"rf disagrees with assignment", CreateTopic{Name: "x", ID: tid(9), Partitions: 1, ReplicationFactor: 2, Assignment: [][]int32{{1}}}, []error{ErrInvalidAssignment}, "replication factor 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			res := h.fails(tt.cmd, tt.want[0])
			for _, w := range tt.want[1:] {
				if !errors.Is(res.Err, w) {
					t.Fatalf("err %v does not match %v", res.Err, w)
				}
			}
			if !strings.Contains(res.Err.Error(), tt.msg) {
				t.Fatalf("err %q does not mention %q", res.Err, tt.msg)
			}
		})
	}
	h.t = t
	if _, ok := h.f.State().Topics["x"]; ok {
		t.Fatal("a failed CreateTopic created a topic")
	}
}

func TestCreateTopicNeedsBrokers(t *testing.T) {
	h := newHarness(t, 0)
	res := h.fails(CreateTopic{Name: "x", ID: tid(1), Partitions: 1, ReplicationFactor: 1}, ErrInvalidReplicationFactor)
	if !strings.Contains(res.Err.Error(), "(0)") {
		t.Fatalf("err %q does not say there are no brokers", res.Err)
	}
}

func TestDeleteTopic(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 2, ReplicationFactor: 3})
	h.ok(CreateTopic{Name: "keep", ID: tid(2), Partitions: 1, ReplicationFactor: 1})
	keep := h.topic("keep")
	if res := h.ok(DeleteTopic{Name: "orders"}); !res.Changed {
		t.Fatal("DeleteTopic not Changed")
	}
	s := h.f.State()
	if s.Topics["orders"] != nil || s.TopicByID(tid(1)) != nil {
		t.Fatal("deleted topic still visible")
	}
	if s.Topics["keep"] != keep || s.TopicByID(tid(2)) != keep {
		t.Fatal("the other topic was copied or lost")
	}
	h.fails(DeleteTopic{Name: "orders"}, ErrUnknownTopic)
	h.fails(DeleteTopic{Name: "never"}, ErrUnknownTopic)
	h.fails(DeleteTopic{Name: "../x"}, ErrUnknownTopic)

	// Re-created under the same name with a new id: a different topic.
	h.ok(CreateTopic{Name: "orders", ID: tid(3), Partitions: 1, ReplicationFactor: 1})
	if s := h.f.State(); s.TopicByID(tid(1)) != nil || s.TopicByID(tid(3)) != s.Topics["orders"] {
		t.Fatal("by-id index wrong after re-create")
	}
}

func TestCreatePartitions(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 2, ReplicationFactor: 2})
	h.ok(SetLeader{Topic: tid(1), Partition: 1, Leader: h.topic("orders").Partitions[1].Replicas[1], Epoch: 4})
	before := h.topic("orders")

	if res := h.ok(CreatePartitions{Name: "orders", Total: 5}); !res.Changed {
		t.Fatal("CreatePartitions not Changed")
	}
	after := h.topic("orders")
	if len(after.Partitions) != 5 || after.ID != before.ID {
		t.Fatalf("topic after = %+v", after)
	}
	if !reflect.DeepEqual(after.Partitions[:2], before.Partitions) {
		t.Fatalf("existing partitions changed: %+v -> %+v", before.Partitions, after.Partitions[:2])
	}
	if len(before.Partitions) != 2 {
		t.Fatal("the published topic was modified")
	}
	for i, p := range after.Partitions[2:] {
		if len(p.Replicas) != 2 || p.Leader != -1 || p.LeaderEpoch != -1 {
			t.Fatalf("new partition %d = %+v", i+2, p)
		}
	}
	// Placement counted the existing load: every broker now has the same
	// number of replicas (10 over 3 brokers: 4, 3, 3) and of leaderships.
	assertBalanced(t, h.f.State())

	h.ok(CreatePartitions{Name: "orders", Total: 7, Assignment: [][]int32{{3, 2}, {1, 3}}})
	after = h.topic("orders")
	if !slices.Equal(after.Partitions[5].Replicas, []int32{3, 2}) || !slices.Equal(after.Partitions[6].Replicas, []int32{1, 3}) {
		t.Fatalf("explicit new partitions = %+v", after.Partitions[5:])
	}

	tests := []struct {
		name string
		cmd  CreatePartitions
		want error
	}{
		{"unknown topic", CreatePartitions{Name: "nope", Total: 9}, ErrUnknownTopic},
		{"same count", CreatePartitions{Name: "orders", Total: 7}, ErrInvalidPartitions},
		{"fewer", CreatePartitions{Name: "orders", Total: 3}, ErrInvalidPartitions},
		{"negative", CreatePartitions{Name: "orders", Total: -1}, ErrInvalidPartitions},
		{"too many", CreatePartitions{Name: "orders", Total: MaxPartitions + 1}, ErrInvalidPartitions},
		{"assignment count", CreatePartitions{Name: "orders", Total: 9, Assignment: [][]int32{{1, 2}}}, ErrInvalidAssignment},
		{"assignment rf", CreatePartitions{Name: "orders", Total: 8, Assignment: [][]int32{{1, 2, 3}}}, ErrInvalidAssignment},
		{"assignment unknown broker", CreatePartitions{Name: "orders", Total: 8, Assignment: [][]int32{{1, 4}}}, ErrUnknownBroker},
		{"assignment duplicate", CreatePartitions{Name: "orders", Total: 8, Assignment: [][]int32{{1, 1}}}, ErrInvalidAssignment},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.t = t
			h.fails(tt.cmd, tt.want)
		})
	}
}

func TestAlterConfigs(t *testing.T) {
	h := newHarness(t, 1)
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"a": "1", "b": "2"}})
	h.ok(CreateTopic{Name: "other", ID: tid(2), Partitions: 1, ReplicationFactor: 1})
	other := h.topic("other")
	before := h.topic("orders")

	if res := h.ok(AlterConfigs{Name: "orders", Configs: map[string]string{"c": "3"}}); !res.Changed {
		t.Fatal("AlterConfigs not Changed")
	}
	if got := h.topic("orders").Configs; !reflect.DeepEqual(got, map[string]string{"c": "3"}) {
		t.Fatalf("configs = %v, want only c=3 (replaced, not merged)", got)
	}
	if !reflect.DeepEqual(before.Configs, map[string]string{"a": "1", "b": "2"}) {
		t.Fatal("the published topic's configs were modified")
	}
	if h.topic("other") != other {
		t.Fatal("an unchanged topic was copied")
	}
	if h.f.State().TopicByID(tid(1)) != h.topic("orders") {
		t.Fatal("TopicByID returns a stale topic")
	}
	if res := h.ok(AlterConfigs{Name: "orders", Configs: map[string]string{"c": "3"}}); res.Changed {
		t.Fatal("identical configs report Changed")
	}
	h.ok(AlterConfigs{Name: "orders"})
	if got := h.topic("orders").Configs; got != nil {
		t.Fatalf("cleared configs = %#v, want nil", got)
	}
	if res := h.ok(AlterConfigs{Name: "orders", Configs: map[string]string{}}); res.Changed {
		t.Fatal("empty configs over none report Changed")
	}
	h.fails(AlterConfigs{Name: "nope", Configs: map[string]string{"a": "1"}}, ErrUnknownTopic)
}

func TestSetLeader(t *testing.T) {
	h := newHarness(t, 4)
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 2, Assignment: [][]int32{{1, 2, 3}, {2, 3, 4}}})
	h.ok(CreateTopic{Name: "other", ID: tid(2), Partitions: 1, ReplicationFactor: 1})
	other := h.topic("other")

	type want struct{ leader, epoch int32 }
	steps := []struct {
		name    string
		cmd     SetLeader
		changed bool
		after   want // partition 0 of orders
	}{
		{"first publication", SetLeader{tid(1), 0, 2, 5}, true, want{2, 5}},
		{"same epoch, other leader", SetLeader{tid(1), 0, 3, 5}, false, want{2, 5}},
		{"same epoch, same leader", SetLeader{tid(1), 0, 2, 5}, false, want{2, 5}},
		{"older epoch", SetLeader{tid(1), 0, 1, 4}, false, want{2, 5}},
		{"newer epoch", SetLeader{tid(1), 0, 3, 6}, true, want{3, 6}},
		{"epoch jumps", SetLeader{tid(1), 0, 1, 100}, true, want{1, 100}},
		{"not a replica", SetLeader{tid(1), 0, 4, 101}, false, want{1, 100}},
		{"unknown leader -1", SetLeader{tid(1), 0, -1, 102}, false, want{1, 100}},
		{"partition too high", SetLeader{tid(1), 2, 1, 200}, false, want{1, 100}},
		{"negative partition", SetLeader{tid(1), -1, 1, 200}, false, want{1, 100}},
		{"unknown topic id", SetLeader{tid(9), 0, 1, 200}, false, want{1, 100}},
		{"other partition", SetLeader{tid(1), 1, 4, 1}, true, want{1, 100}},
	}
	for _, st := range steps {
		before := h.f.State()
		res := h.ok(st.cmd)
		if res.Changed != st.changed {
			t.Fatalf("%s: Changed = %v, want %v", st.name, res.Changed, st.changed)
		}
		if !st.changed {
			sameContent(t, before, h.f.State())
		}
		p := h.topic("orders").Partitions[0]
		if p.Leader != st.after.leader || p.LeaderEpoch != st.after.epoch {
			t.Fatalf("%s: partition 0 leader %d epoch %d, want %+v", st.name, p.Leader, p.LeaderEpoch, st.after)
		}
	}
	if p := h.topic("orders").Partitions[1]; p.Leader != 4 || p.LeaderEpoch != 1 {
		t.Fatalf("partition 1 = %+v", p)
	}
	if h.topic("other") != other {
		t.Fatal("SetLeader copied an unrelated topic")
	}
	if h.f.State().TopicByID(tid(1)) != h.topic("orders") {
		t.Fatal("TopicByID returns a stale topic after SetLeader")
	}

	// A publication for a deleted topic, or for a re-created topic of the
	// same name under its old id, is ignored.
	h.ok(DeleteTopic{Name: "orders"})
	if res := h.ok(SetLeader{tid(1), 0, 1, 500}); res.Changed {
		t.Fatal("SetLeader on a deleted topic changed the state")
	}
	h.ok(CreateTopic{Name: "orders", ID: tid(3), Partitions: 1, Assignment: [][]int32{{1}}})
	if res := h.ok(SetLeader{tid(1), 0, 1, 500}); res.Changed {
		t.Fatal("SetLeader with the old topic id changed the re-created topic")
	}
	if p := h.topic("orders").Partitions[0]; p.Leader != -1 || p.LeaderEpoch != -1 {
		t.Fatalf("re-created topic partition = %+v", p)
	}
}

func TestAllocateProducerIDs(t *testing.T) {
	h := newHarness(t, 0)
	for _, st := range []struct{ count, first int64 }{{1, 0}, {1000, 1}, {MaxProducerIDBlock, 1001}, {5, 1001 + MaxProducerIDBlock}} {
		res := h.ok(AllocateProducerIDs{Count: st.count})
		if res.ProducerID != st.first || !res.Changed {
			t.Fatalf("allocate %d = %+v, want first id %d", st.count, res, st.first)
		}
	}
	next := h.f.State().NextProducerID
	if next != 1006+MaxProducerIDBlock {
		t.Fatalf("NextProducerID = %d", next)
	}
	for _, c := range []int64{0, -1, MaxProducerIDBlock + 1, math.MinInt64, math.MaxInt64} {
		res := h.fails(AllocateProducerIDs{Count: c}, ErrInvalidCommand)
		if res.ProducerID != -1 {
			t.Fatalf("failed allocation ProducerID = %d, want -1", res.ProducerID)
		}
	}

	// The id space running out is an error, not a wrap-around.
	s := h.f.State().clone()
	s.NextProducerID = math.MaxInt64 - 10
	h.f.publish(s, true)
	if res := h.ok(AllocateProducerIDs{Count: 10}); res.ProducerID != math.MaxInt64-10 {
		t.Fatalf("last block = %+v", res)
	}
	h.fails(AllocateProducerIDs{Count: 1}, ErrInvalidCommand)
	if h.f.State().NextProducerID != math.MaxInt64 {
		t.Fatalf("NextProducerID = %d", h.f.State().NextProducerID)
	}
}

// TestPublishedStatesAreImmutable keeps an early state and checks that no
// later command changed it.
func TestPublishedStatesAreImmutable(t *testing.T) {
	h := newHarness(t, 3)
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 2, ReplicationFactor: 2, Configs: map[string]string{"a": "1"}})
	old := h.f.State()
	oldBytes, err := encodeSnapshot(old)
	if err != nil {
		t.Fatal(err)
	}
	h.ok(RegisterBroker{Broker: testBroker(4)})
	h.ok(RegisterBroker{Broker: Broker{ID: 1, RaftAddr: "moved:1"}})
	h.ok(SetLeader{Topic: tid(1), Partition: 0, Leader: old.Topics["orders"].Partitions[0].Replicas[0], Epoch: 1})
	h.ok(AlterConfigs{Name: "orders", Configs: map[string]string{"a": "2"}})
	h.ok(CreatePartitions{Name: "orders", Total: 4})
	h.ok(CreateTopic{Name: "new", ID: tid(2), Partitions: 1, ReplicationFactor: 1})
	h.ok(AllocateProducerIDs{Count: 5})
	h.ok(DeleteTopic{Name: "orders"})
	h.fails(DeleteTopic{Name: "orders"}, ErrUnknownTopic)
	nowBytes, err := encodeSnapshot(old)
	if err != nil {
		t.Fatal(err)
	}
	if string(oldBytes) != string(nowBytes) {
		t.Fatalf("a published state changed:\nbefore %s\nafter  %s", oldBytes, nowBytes)
	}
	if old.TopicByID(tid(1)) == nil || old.TopicByID(tid(2)) != nil {
		t.Fatal("a published state's by-id index changed")
	}
}

func TestSetISR(t *testing.T) {
	f := NewFSM()
	idx := uint64(0)
	apply := func(cmd any) Result {
		t.Helper()
		b, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		idx++
		return f.Apply(idx, 1, b)
	}
	for id := range int32(3) {
		apply(RegisterBroker{Broker: Broker{ID: id + 1, RaftAddr: "r"}})
	}
	id := TopicID{7}
	if r := apply(CreateTopic{Name: "t", ID: id, Partitions: 1, ReplicationFactor: 3}); r.Err != nil {
		t.Fatal(r.Err)
	}
	part := func() Partition { return f.State().Topics["t"].Partitions[0] }
	if got := part().InSync(); got != nil {
		t.Fatalf("no leader: isr %v", got)
	}
	leader := part().Replicas[0]
	apply(SetLeader{Topic: id, Partition: 0, Leader: leader, Epoch: 5})
	if got := part().InSync(); !slices.Equal(got, part().Replicas) {
		t.Fatalf("unpublished isr %v, want the replicas %v", got, part().Replicas)
	}
	other := part().Replicas[1]
	for _, tc := range []struct {
		name string
		cmd  SetISR
	}{
		{"wrong leader", SetISR{Topic: id, Leader: other, Epoch: 5, ISR: []int32{other}}},
		{"stale epoch", SetISR{Topic: id, Leader: leader, Epoch: 4, ISR: []int32{leader}}},
		{"without the leader", SetISR{Topic: id, Leader: leader, Epoch: 5, ISR: []int32{other}}},
		{"not a replica", SetISR{Topic: id, Leader: leader, Epoch: 5, ISR: []int32{leader, 9}}},
		{"unknown topic", SetISR{Topic: TopicID{8}, Leader: leader, Epoch: 5, ISR: []int32{leader}}},
	} {
		if r := apply(tc.cmd); r.Err != nil || r.Changed {
			t.Fatalf("%s: %+v", tc.name, r)
		}
	}
	if r := apply(SetISR{Topic: id, Leader: leader, Epoch: 5, ISR: []int32{leader, other, leader}}); !r.Changed {
		t.Fatal("valid isr not applied")
	}
	want := []int32{min(leader, other), max(leader, other)}
	if got := part().InSync(); !slices.Equal(got, want) {
		t.Fatalf("isr %v, want %v", got, want)
	}
	// Round trip through a snapshot.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := g.State().Topics["t"].Partitions[0].ISR; !slices.Equal(got, want) {
		t.Fatalf("restored isr %v", got)
	}
	// A new leader starts from every replica again.
	apply(SetLeader{Topic: id, Partition: 0, Leader: other, Epoch: 6})
	if got := part().InSync(); !slices.Equal(got, part().Replicas) {
		t.Fatalf("after a leader change: isr %v", got)
	}
}
