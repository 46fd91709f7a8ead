package broker

import "github.com/prometheus/client_golang/prometheus"

// partitionCollector reports, at scrape time, the partitions this broker
// leads and follows, those it leads that are under-replicated, and (on
// the metadata leader only) the cluster's offline partitions. Four gauges
// without labels, computed in one pass over state the broker already
// keeps: no per-partition series.
//
//   - varve_partitions_led: local replicas that are the ready leader of
//     their partition (epoch start applied: they serve Produce and Fetch).
//   - varve_partitions_followed: local replicas that run and are not the
//     ready leader (followers, learners, and a new leader in the moment
//     before its epoch start applies). Across the cluster, led and
//     followed sum to partitions x replication factor (__consumer_offsets
//     included) once every partition has a ready leader and no replica
//     has failed.
//   - varve_partitions_under_replicated: partitions this broker leads
//     whose in-sync replica set, as last published in the metadata, is
//     smaller than their replica set (isr.go drops a follower from the ISR
//     after ReplicaLagMax without catching up).
//   - varve_partitions_offline: partitions the metadata names no leader
//     for. Reported by the metadata leader only (every other broker
//     reports 0, as Kafka's controller does), so a sum over brokers counts
//     each once. A leader whose broker is fenced (not heard from for
//     BrokerSessionTimeout, fence.go) counts as none, as in Metadata
//     responses: a partition whose every replica is down is offline.
//   - varve_metadata_leader: 1 on the broker that leads the metadata
//     group (the one reporting offline partitions), else 0.
type partitionCollector struct {
	b *Broker

	led, followed, underReplicated, offline, metaLeader *prometheus.Desc
}

func newPartitionCollector(b *Broker) *partitionCollector {
	return &partitionCollector{
		b: b,
		led: prometheus.NewDesc("varve_partitions_led",
			"Partition replicas on this broker that are the ready leader.", nil, nil),
		followed: prometheus.NewDesc("varve_partitions_followed",
			"Partition replicas on this broker that run and are not the ready leader.", nil, nil),
		underReplicated: prometheus.NewDesc("varve_partitions_under_replicated",
			"Partitions this broker leads whose published ISR is smaller than the replica set.", nil, nil),
		offline: prometheus.NewDesc("varve_partitions_offline",
			"Partitions with no leader in the metadata; reported by the metadata leader only (0 elsewhere).", nil, nil),
		metaLeader: prometheus.NewDesc("varve_metadata_leader",
			"1 on the broker that leads the metadata group, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *partitionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.led
	ch <- c.followed
	ch <- c.underReplicated
	ch <- c.offline
	ch <- c.metaLeader
}

// Collect implements prometheus.Collector. It holds the broker's read
// lock over the topic view; the per-replica reads are atomic loads.
func (c *partitionCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	var led, followed, under, offline int
	for _, g := range b.localGroups() {
		switch _, err := g.Ready(); {
		case err == nil:
			led++
		case g.Log().Err() == nil:
			followed++ // a failed replica is neither (varve_partitions_failed)
		}
	}
	metaLeader := b.machine.IsLeader()
	self := b.cfg.NodeID
	st := b.meta.State()
	b.mu.RLock()
	for _, t := range b.topics {
		for _, r := range t.load().partitions {
			p := &r.part
			if st.ShownLeader(p) < 0 {
				offline++
				continue
			}
			if p.Leader != self || r.g == nil {
				continue
			}
			if epoch, err := r.g.Ready(); err == nil && epoch == p.LeaderEpoch && len(p.InSync()) < len(p.Replicas) {
				under++
			}
		}
	}
	b.mu.RUnlock()
	if !metaLeader {
		offline = 0
	}
	ch <- prometheus.MustNewConstMetric(c.led, prometheus.GaugeValue, float64(led))
	ch <- prometheus.MustNewConstMetric(c.followed, prometheus.GaugeValue, float64(followed))
	ch <- prometheus.MustNewConstMetric(c.underReplicated, prometheus.GaugeValue, float64(under))
	ch <- prometheus.MustNewConstMetric(c.offline, prometheus.GaugeValue, float64(offline))
	ml := 0.0
	if metaLeader {
		ml = 1
	}
	ch <- prometheus.MustNewConstMetric(c.metaLeader, prometheus.GaugeValue, ml)
}
