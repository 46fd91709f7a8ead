package protocol

import (
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestCountPartitions(t *testing.T) {
	produce := kmsg.NewPtrProduceRequest()
	for range 2 {
		pt := kmsg.NewProduceRequestTopic()
		pt.Partitions = make([]kmsg.ProduceRequestTopicPartition, 3)
		produce.Topics = append(produce.Topics, pt)
	}
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Topics = []kmsg.FetchRequestTopic{{Partitions: make([]kmsg.FetchRequestTopicPartition, 4)}, {}}
	fetch.ForgottenTopics = []kmsg.FetchRequestForgottenTopic{{Partitions: []int32{1, 2, 3}}}
	offsetFetch := kmsg.NewPtrOffsetFetchRequest()
	offsetFetch.Groups = []kmsg.OffsetFetchRequestGroup{
		{Topics: []kmsg.OffsetFetchRequestGroupTopic{{Partitions: []int32{0, 1}}, {Partitions: []int32{0}}}},
		{Topics: []kmsg.OffsetFetchRequestGroupTopic{{Partitions: []int32{5}}}},
	}
	metadata := kmsg.NewPtrMetadataRequest()
	metadata.Topics = make([]kmsg.MetadataRequestTopic, 7)
	deleteTopics := kmsg.NewPtrDeleteTopicsRequest()
	deleteTopics.TopicNames = []string{"a", "b"}
	deleteTopics.Topics = make([]kmsg.DeleteTopicsRequestTopic, 1)
	createTopics := kmsg.NewPtrCreateTopicsRequest()
	createTopics.Topics = []kmsg.CreateTopicsRequestTopic{{ReplicaAssignment: make([]kmsg.CreateTopicsRequestTopicReplicaAssignment, 9)}, {}}
	for _, tc := range []struct {
		req  kmsg.Request
		want int
	}{
		{produce, 6},
		{fetch, 4 + 3}, // the topic without partitions names none
		{offsetFetch, 4},
		{metadata, 7},
		{deleteTopics, 3},
		{createTopics, 2}, // topics, whatever their assignments
		{kmsg.NewPtrHeartbeatRequest(), 0},
		{kmsg.NewPtrMetadataRequest(), 0}, // null topics: all of them, named by none
	} {
		paths := partitionPaths(reflect.TypeOf(tc.req))
		if got := countPartitions(tc.req, paths, 1000); got != tc.want {
			t.Errorf("%s: %d partitions, want %d (paths %v)", kmsg.NameForKey(tc.req.Key()), got, tc.want, paths)
		}
	}
	// Counting stops soon after the limit: a huge request costs the limit.
	if got := countPartitions(produce, partitionPaths(reflect.TypeOf(produce)), 2); got <= 2 || got > 6 {
		t.Errorf("count with limit 2 = %d", got)
	}
}

// Every request kmsg knows that lists partitions anywhere has them
// counted: filled with two entries in every list, its count is positive
// and counts exactly the Partitions lists' entries.
func TestPartitionPathsCoverKmsg(t *testing.T) {
	covered := 0
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			continue
		}
		v := reflect.ValueOf(req).Elem()
		partitions := fill(v, 0)
		paths := partitionPaths(v.Type())
		got := countPartitions(req, paths, 1<<30)
		if partitions > 0 {
			covered++
			if got != partitions {
				t.Errorf("%s: counted %d, want the %d entries of its Partitions lists", kmsg.NameForKey(k), got, partitions)
			}
		}
		if partitions == 0 && hasTopicList(v.Type()) && got == 0 {
			t.Errorf("%s lists topics but counts none", kmsg.NameForKey(k))
		}
	}
	if covered < 20 {
		t.Fatalf("only %d kmsg requests list partitions; the walk is broken", covered)
	}
}

// fill gives every slice under v two zero entries (recursively) and returns
// how many entries all the slices named Partitions got.
func fill(v reflect.Value, depth int) int {
	if v.Kind() != reflect.Struct || depth > maxCountDepth {
		return 0
	}
	n := 0
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() || f.Kind() != reflect.Slice || f.Type().Elem().Kind() == reflect.Uint8 {
			continue
		}
		f.Set(reflect.MakeSlice(f.Type(), 2, 2))
		if sf.Name == "Partitions" {
			n += 2
			continue
		}
		for j := range 2 {
			n += fill(f.Index(j), depth+1)
		}
	}
	return n
}

func hasTopicList(t reflect.Type) bool {
	for i := range t.NumField() {
		if name := t.Field(i).Name; (name == "Topics" || name == "TopicNames") && t.Field(i).Type.Kind() == reflect.Slice {
			return true
		}
	}
	return false
}

// A request naming more partitions than MaxPartitionsPerRequest closes its
// connection before the Handler sees it; one at the limit is served, and
// other connections carry on.
func TestMaxPartitionsPerRequest(t *testing.T) {
	const limit = 10
	h := newFakeHandler()
	h.conns = make(chan *ConnInfo, 64)
	ts := startServer(t, Config{MaxPartitionsPerRequest: limit}, h)
	healthy := dial(t, ts.addr)
	healthy.roundTrip(metadataReq(), 1)
	<-h.conns

	produce := func(perTopic ...int) kmsg.Request {
		r := kmsg.NewPtrProduceRequest()
		r.Acks = -1
		for _, n := range perTopic {
			pt := kmsg.NewProduceRequestTopic()
			pt.Topic = "t"
			for p := range n {
				pp := kmsg.NewProduceRequestTopicPartition()
				pp.Partition = int32(p)
				pt.Partitions = append(pt.Partitions, pp)
			}
			r.Topics = append(r.Topics, pt)
		}
		return r
	}
	fetch := func(parts, forgotten int) kmsg.Request {
		r := kmsg.NewPtrFetchRequest()
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = "t"
		for p := range parts {
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition = int32(p)
			ft.Partitions = append(ft.Partitions, fp)
		}
		r.Topics = []kmsg.FetchRequestTopic{ft}
		r.ForgottenTopics = []kmsg.FetchRequestForgottenTopic{{Topic: "u", Partitions: make([]int32, forgotten)}}
		return r
	}
	metadata := func(n int) kmsg.Request {
		r := kmsg.NewPtrMetadataRequest()
		for range n {
			mt := kmsg.NewMetadataRequestTopic()
			mt.Topic = kmsg.StringPtr("t")
			r.Topics = append(r.Topics, mt)
		}
		return r
	}
	for _, tc := range []struct {
		name     string
		at, over kmsg.Request
		version  int16
	}{
		{"produce", produce(5, 5), produce(5, 6), 9},
		{"fetch", fetch(8, 2), fetch(8, 3), 12},
		{"metadata", metadata(10), metadata(11), 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.roundTrip(tc.at, tc.version)
			<-h.conns
			c.send(tc.over, tc.version)
			c.expectClosed(5 * time.Second)
			select {
			case <-h.conns:
				t.Fatal("the handler saw the request over the limit")
			default:
			}
			healthy.roundTrip(metadataReq(), 1)
			<-h.conns
		})
	}
}
