package broker

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// lagCollector reports consumer lag per group and partition:
// varve_group_lag{group,topic,partition} = high watermark - committed
// offset (0 when the commit is at or past it). Opt-in
// (Config.MetricsGroupLag, `varve serve --metrics-group-lag`): it makes a
// series per committed partition of every group, and each scrape reads
// every committed offset of the groups this broker coordinates.
//
// The coordinator of a group reports its lag (sum over brokers: each
// group is counted once), for each partition it has a committed offset
// for and holds a replica of: the high watermark is the local replica's
// log end, exact where this broker leads the partition and behind by the
// replication delay where it follows it. A partition this broker holds no
// replica of has no series here (with as many brokers as the replication
// factor, every broker holds every partition). Commits for topics that no
// longer exist are skipped.
type lagCollector struct {
	b   *Broker
	lag *prometheus.Desc
}

func newLagCollector(b *Broker) *lagCollector {
	return &lagCollector{b: b, lag: prometheus.NewDesc("varve_group_lag",
		"Consumer lag (high watermark minus committed offset) per group and partition, reported by the group's coordinator for partitions it holds a replica of.",
		[]string{"group", "topic", "partition"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lag }

// Collect implements prometheus.Collector. It reads the offset store (no
// lock held) and the local replicas' log ends (atomic loads).
func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	b.gstate.mu.Lock()
	store := b.gstate.store
	b.gstate.mu.Unlock()
	if store == nil {
		return
	}
	for _, led := range b.ledPartitions() {
		for _, group := range store.Groups(led.r.index) {
			for topicName, parts := range store.GroupOffsets(group) {
				t := b.lookupTopic(topicName)
				if t == nil {
					continue
				}
				for p, v := range parts {
					r := t.partition(p)
					if r == nil || r.g == nil || v.Offset < 0 {
						continue
					}
					lag := max(r.g.Log().LogEndOffset()-v.Offset, 0)
					ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag),
						group, topicName, strconv.Itoa(int(p)))
				}
			}
		}
	}
}
