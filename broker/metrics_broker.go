package broker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/replication"
)

// brokerMetrics are the data-path metrics of one broker: bytes in and out
// per topic, produce and fetch latency, Raft commit latency, leadership
// changes, WAL fsync latency and group rebalances. They live on the Broker
// (no global registry: several brokers share a test process), are created
// with it, so they count from its start whether or not an admin listener
// runs, and ServeAdmin registers them.
//
// The lower packages import no metrics library: replication, its WAL and
// the coordinator call the small hooks built here (replication.Metrics,
// coordinator.Config.OnRebalance), which only update these collectors.
//
// Hot paths stay cheap: a produce or fetch finds its topic's byte counters
// in a copy-on-write map read with one atomic load (no lock, no string
// building, no allocation) and adds to atomics; every histogram is
// resolved once here, so an observation is a bucket search and atomic adds.
type brokerMetrics struct {
	// topicBytes maps a topic id to its counters. Readers load it without
	// a lock; topicMu serialises the writers, which copy it (a topic's
	// first produce or fetch, and the pruning of deleted topics at scrape
	// time).
	topicBytes atomic.Pointer[map[metadata.TopicID]*topicBytes]
	topicMu    sync.Mutex

	produce [3]prometheus.Observer // by acks: 0, 1, all (-1)
	fetch   prometheus.Histogram
	commit  prometheus.Histogram
	walSync prometheus.Histogram

	leaderGained, leaderLost prometheus.Counter
	rebalances, generations  prometheus.Counter

	produceVec *prometheus.HistogramVec
	leaderVec  *prometheus.CounterVec
	hooks      replication.Metrics
}

// topicBytes are one topic's byte counters, kept as atomics and reported
// by the scrape-time collector (topicBytesCollector).
type topicBytes struct {
	in, out atomic.Uint64
}

func newBrokerMetrics() *brokerMetrics {
	m := &brokerMetrics{
		produceVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "varve_produce_duration_seconds",
			Help: "Produce requests from decoding to response (validation, Raft commit on a quorum, apply on the leader), by acks.",
			// 250 µs to ~8 s: an fsync-bound commit is milliseconds.
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}, []string{"acks"}),
		fetch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "varve_fetch_duration_seconds",
			Help: "Fetch requests from decoding to response, excluding the time parked in the long poll waiting for data.",
			// 25 µs to ~0.8 s: reads from the page cache.
			Buckets: prometheus.ExponentialBuckets(0.000025, 2, 16),
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "varve_raft_commit_duration_seconds",
			Help:    "Produce Raft entries on the leader from proposal to committed on a quorum and applied here.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}),
		walSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "varve_raft_wal_fsync_duration_seconds",
			Help: "fdatasync calls of the Raft WALs (every partition group and the metadata group) on this broker.",
			// 50 µs to ~1.6 s.
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		leaderVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "varve_raft_leadership_changes_total",
			Help: "Partition Raft groups on this broker that became leader (change=gained) or stopped being leader (change=lost).",
		}, []string{"change"}),
		rebalances: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "varve_group_rebalances_total",
			Help: "Consumer-group join phases this broker coordinated that ended with members: each enters CompletingRebalance with a new generation.",
		}),
		generations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "varve_group_generations_completed_total",
			Help: "Consumer-group generations this broker coordinated that the leader's SyncGroup completed (the group became Stable).",
		}),
	}
	empty := map[metadata.TopicID]*topicBytes{}
	m.topicBytes.Store(&empty)
	for i, acks := range []string{"0", "1", "all"} {
		m.produce[i] = m.produceVec.WithLabelValues(acks)
	}
	m.leaderGained = m.leaderVec.WithLabelValues("gained")
	m.leaderLost = m.leaderVec.WithLabelValues("lost")
	m.hooks = replication.Metrics{
		Committed: func(d time.Duration) { m.commit.Observe(d.Seconds()) },
		Leadership: func(gained bool) {
			if gained {
				m.leaderGained.Inc()
			} else {
				m.leaderLost.Inc()
			}
		},
		WALSync: func(d time.Duration) { m.walSync.Observe(d.Seconds()) },
	}
	return m
}

// collectors are what ServeAdmin registers; b is read at scrape time.
func (m *brokerMetrics) collectors(b *Broker) []prometheus.Collector {
	return []prometheus.Collector{
		m.produceVec, m.fetch, m.commit, m.walSync, m.leaderVec, m.rebalances, m.generations,
		&topicBytesCollector{b: b, m: m,
			in: prometheus.NewDesc("varve_topic_bytes_in_total",
				"Record-batch bytes of produce requests this broker appended as leader (committed and acknowledged), by topic.",
				[]string{"topic"}, nil),
			out: prometheus.NewDesc("varve_topic_bytes_out_total",
				"Record-batch bytes this broker returned in fetch responses, by topic.",
				[]string{"topic"}, nil),
		},
	}
}

// groupHooks are the replication hooks of every Raft group of this broker
// (partition groups get them all; the metadata group uses WALSync only).
func (m *brokerMetrics) groupHooks() replication.Metrics { return m.hooks }

// onRebalance is coordinator.Config.OnRebalance: it runs under a group's
// lock, so it only increments a counter.
func (m *brokerMetrics) onRebalance(completed bool) {
	if completed {
		m.generations.Inc()
	} else {
		m.rebalances.Inc()
	}
}

// bytesFor returns id's counters, creating them on the topic's first use.
func (m *brokerMetrics) bytesFor(id metadata.TopicID) *topicBytes {
	if tb := (*m.topicBytes.Load())[id]; tb != nil {
		return tb
	}
	m.topicMu.Lock()
	defer m.topicMu.Unlock()
	cur := *m.topicBytes.Load()
	if tb := cur[id]; tb != nil {
		return tb
	}
	next := make(map[metadata.TopicID]*topicBytes, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	tb := &topicBytes{}
	next[id] = tb
	m.topicBytes.Store(&next)
	return tb
}

// produced records one answered produce request; start is when its
// handler began. Called with defer from handleProduce.
func (m *brokerMetrics) produced(acks int16, start time.Time) {
	var i int
	switch acks {
	case 0:
		i = 0
	case 1:
		i = 1
	case -1:
		i = 2
	default:
		return // refused with INVALID_REQUIRED_ACKS: no series for it
	}
	m.produce[i].Observe(time.Since(start).Seconds())
}

// appended counts the bytes of one produced batch the leader appended.
func (m *brokerMetrics) appended(id metadata.TopicID, n int) {
	m.bytesFor(id).in.Add(uint64(n))
}

// fetched records one fetch response: its latency without the long-poll
// wait, and the record bytes it carries per topic (only the response sent
// counts, not the reads of a long poll's earlier passes).
func (m *brokerMetrics) fetched(b *Broker, r *kmsg.FetchRequest, resp *kmsg.FetchResponse, busy time.Duration) {
	m.fetch.Observe(busy.Seconds())
	for i := range resp.Topics {
		st := &resp.Topics[i]
		var n int
		for j := range st.Partitions {
			n += len(st.Partitions[j].RecordBatches)
		}
		if n == 0 {
			continue
		}
		id := metadata.TopicID(st.TopicID)
		if r.Version < 13 {
			t := b.lookupTopic(st.Topic)
			if t == nil {
				continue // deleted while the fetch ran
			}
			id = t.id
		}
		m.bytesFor(id).out.Add(uint64(n))
	}
}

// topicBytesCollector reports the byte counters of every topic the
// metadata names (at zero before its first produce or fetch, so a rate
// over it is defined), and forgets the counters of deleted topics.
type topicBytesCollector struct {
	b       *Broker
	m       *brokerMetrics
	in, out *prometheus.Desc
}

func (c *topicBytesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.in
	ch <- c.out
}

func (c *topicBytesCollector) Collect(ch chan<- prometheus.Metric) {
	c.b.mu.RLock()
	names := make(map[metadata.TopicID]string, len(c.b.byID))
	for id, t := range c.b.byID {
		names[id] = t.name
	}
	c.b.mu.RUnlock()
	counters := *c.m.topicBytes.Load()
	stale := false
	for id := range counters {
		if _, ok := names[id]; !ok {
			stale = true
		}
	}
	if stale {
		c.m.prune(names)
		counters = *c.m.topicBytes.Load()
	}
	for id, name := range names {
		var in, out uint64
		if tb := counters[id]; tb != nil {
			in, out = tb.in.Load(), tb.out.Load()
		}
		ch <- prometheus.MustNewConstMetric(c.in, prometheus.CounterValue, float64(in), name)
		ch <- prometheus.MustNewConstMetric(c.out, prometheus.CounterValue, float64(out), name)
	}
}

// prune drops the counters of topics no longer in live (deleted): a
// topic re-created under the same name has a new id and starts at zero,
// which Prometheus reads as a counter reset.
func (m *brokerMetrics) prune(live map[metadata.TopicID]string) {
	m.topicMu.Lock()
	defer m.topicMu.Unlock()
	cur := *m.topicBytes.Load()
	next := make(map[metadata.TopicID]*topicBytes, len(cur))
	for id, tb := range cur {
		if _, ok := live[id]; ok {
			next[id] = tb
		}
	}
	m.topicBytes.Store(&next)
}
