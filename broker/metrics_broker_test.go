package broker

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
)

// TestBrokerMetricsHotPathAllocs: what produce, fetch, Raft commits and
// WAL fsyncs call per request or per entry allocates nothing once a
// topic's counters exist, and counts what it is given.
func TestBrokerMetricsHotPathAllocs(t *testing.T) {
	m := newBrokerMetrics()
	id := metadata.TopicID{1, 2, 3}
	resp := kmsg.NewPtrFetchResponse()
	st := kmsg.NewFetchResponseTopic()
	st.TopicID = id
	for _, n := range []int{100, 0, 23} {
		sp := kmsg.NewFetchResponseTopicPartition()
		sp.RecordBatches = make([]byte, n)
		st.Partitions = append(st.Partitions, sp)
	}
	resp.Topics = append(resp.Topics, st)
	req := kmsg.NewPtrFetchRequest()
	req.Version = 13  // by topic id: no lookup in the broker's topic view
	m.appended(id, 1) // creates the counters
	start := time.Now()
	for name, fn := range map[string]func(){
		"appended": func() { m.appended(id, 10) },
		"produced": func() { m.produced(-1, start) },
		"fetched":  func() { m.fetched(nil, req, resp, time.Millisecond) },
		"committed": func() {
			m.hooks.Committed(time.Millisecond)
			m.hooks.Leadership(true)
			m.hooks.WALSync(time.Millisecond)
		},
		"rebalance": func() { m.onRebalance(false) },
	} {
		if a := testing.AllocsPerRun(100, fn); a != 0 {
			t.Errorf("%s: %v allocations per call", name, a)
		}
	}
	tb := m.bytesFor(id)
	if in, out := tb.in.Load(), tb.out.Load(); in != 1+10*101 || out != 123*101 {
		// AllocsPerRun runs each function once more to warm up.
		t.Fatalf("bytes in %d out %d, want %d and %d", in, out, 1+10*101, 123*101)
	}
}

// BenchmarkTopicBytes is the per-partition cost a produce adds.
func BenchmarkTopicBytes(b *testing.B) {
	m := newBrokerMetrics()
	ids := make([]metadata.TopicID, 64)
	for i := range ids {
		ids[i][0] = byte(i)
		m.appended(ids[i], 1)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.appended(ids[i&63], 1000)
		i++
	}
}
