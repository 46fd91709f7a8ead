package broker

import "github.com/prometheus/client_golang/prometheus"

// raftCollector reports the Raft state of this broker's groups, computed
// at scrape time in one pass over the local replicas (no per-group metric
// series: 1,000 partitions would be 1,000 series per gauge).
//
// varve_raft_term_sum rises with any election in any local partition
// group, so its delta over a window counts term changes (each election
// raises it by at least one per replica that hears of it).
type raftCollector struct {
	b *Broker

	groups, leading, termSum, appliedSum, metaTerm *prometheus.Desc
}

func newRaftCollector(b *Broker) *raftCollector {
	return &raftCollector{
		b: b,
		groups: prometheus.NewDesc("varve_raft_groups",
			"Partition Raft groups (replicas) this broker runs.", nil, nil),
		leading: prometheus.NewDesc("varve_raft_groups_leading",
			"Partition Raft groups this broker leads and serves (epoch start applied).", nil, nil),
		termSum: prometheus.NewDesc("varve_raft_term_sum",
			"Sum of the current Raft terms of this broker's partition groups; its delta counts elections.", nil, nil),
		appliedSum: prometheus.NewDesc("varve_raft_applied_index_sum",
			"Sum of the applied Raft indexes of this broker's partition groups; its delta counts applied entries.", nil, nil),
		metaTerm: prometheus.NewDesc("varve_metadata_term",
			"Current Raft term of the metadata group on this broker.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.groups
	ch <- c.leading
	ch <- c.termSum
	ch <- c.appliedSum
	ch <- c.metaTerm
}

// Collect implements prometheus.Collector. It takes reconcileMu only for
// the snapshot of the replica set; the per-group reads are atomic loads.
func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	groups := c.b.localGroups()
	var leading int
	var termSum, appliedSum uint64
	for _, g := range groups {
		st := g.Stats()
		termSum += st.Term
		appliedSum += st.AppliedIndex
		if g.IsReady() {
			leading++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.groups, prometheus.GaugeValue, float64(len(groups)))
	ch <- prometheus.MustNewConstMetric(c.leading, prometheus.GaugeValue, float64(leading))
	ch <- prometheus.MustNewConstMetric(c.termSum, prometheus.GaugeValue, float64(termSum))
	ch <- prometheus.MustNewConstMetric(c.appliedSum, prometheus.GaugeValue, float64(appliedSum))
	ch <- prometheus.MustNewConstMetric(c.metaTerm, prometheus.GaugeValue, float64(c.b.machine.Term()))
}
