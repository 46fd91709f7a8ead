package integration

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

// metricsTopic is the topic TestMetricsDataPath meters: 3 partitions at
// replication factor 3, metricsPerPartition one-record batches each.
const (
	metricsTopic        = "metered"
	metricsPartitions   = 3
	metricsPerPartition = 10
)

// TestMetricsDataPath scrapes /metrics over HTTP from a three-broker
// cluster, with a real Prometheus text parser, around known work:
//   - produce 30 one-record batches: the per-topic bytes-in counters sum to
//     exactly the bytes the partitions' logs hold, and the produce, Raft
//     commit and WAL fsync histograms count them;
//   - read each partition whole with one raw Fetch at its leader: each
//     leader's bytes-out counter equals exactly what it returned, and the
//     fetch histogram counts it;
//   - the led and followed gauges sum to partitions and to partitions x RF
//     (the cluster's Metadata says how many), nothing is under-replicated
//     or offline, exactly one broker is the metadata leader;
//   - a consumer group joins and reads everything: a rebalance and a
//     completed generation are counted; committed offsets of another group
//     give a lag gauge equal to the known lag, on the coordinator only;
//   - the leader of partition 0 is killed: the survivors count leadership
//     gains, and under-replicated partitions rise to 3; after a restart
//     they return to 0.
func TestMetricsDataPath(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) {
		cfg.MetricsGroupLag = true
		cfg.GroupInitialRebalanceDelay = -1
	}))
	admins := make([]string, c.Size())
	for i := range admins {
		admins[i] = serveMetrics(t, c.Broker(i))
	}
	adm := c.Admin(t)
	ctx := testContext(t, 120*time.Second)
	if resp, err := adm.CreateTopic(ctx, metricsPartitions, 3, nil, metricsTopic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	leaders := make([]int, metricsPartitions)
	for p := range leaders {
		leaders[p] = c.WaitLeader(metricsTopic, int32(p))
	}
	topicLabel := map[string]string{"topic": metricsTopic}
	before := scrapeAll(t, admins)
	for i, fams := range before {
		for _, name := range []string{"varve_topic_bytes_in_total", "varve_topic_bytes_out_total"} {
			if v, ok := metricValue(fams, name, topicLabel); !ok || v != 0 {
				t.Fatalf("broker %d: %s{topic=%q} = %v (present %v) before any produce, want a series at 0", i, name, metricsTopic, v, ok)
			}
		}
	}

	// Produce: one record per request, so every batch and Raft entry
	// holds exactly one record.
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	for i := range metricsPerPartition {
		for p := range int32(metricsPartitions) {
			r := &kgo.Record{Topic: metricsTopic, Partition: p, Value: []byte(fmt.Sprintf("m-%d-%02d", p, i))}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Read every partition whole from its leader, checking the contents;
	// these are the only fetches of the topic until the group below.
	id := topicID(t, c, metricsTopic)
	var logBytes int64
	fetchedFrom := make([]int64, c.Size())
	fetchesTo := make([]int, c.Size())
	for p := range leaders {
		// Leadership may move (preferred-leader balancing): a fetch the
		// old leader refuses returns no bytes, and is retried.
		var data []byte
		var leader int
		for try := 0; data == nil; try++ {
			if try == 20 {
				t.Fatalf("partition %d: no leader served the fetch in 20 tries", p)
			}
			leader = c.WaitLeader(metricsTopic, int32(p))
			data = fetchWhole(t, c.BrokerAddr(leader), id, int32(p))
		}
		checkOneRecordBatches(t, data, p)
		logBytes += int64(len(data))
		fetchedFrom[leader] += int64(len(data))
		fetchesTo[leader]++
	}
	after := scrapeAll(t, admins)
	var bytesIn float64
	for i, fams := range after {
		v, _ := metricValue(fams, "varve_topic_bytes_in_total", topicLabel)
		bytesIn += v
		if out, _ := metricValue(fams, "varve_topic_bytes_out_total", topicLabel); out != float64(fetchedFrom[i]) {
			t.Fatalf("broker %d: bytes out %v, want the %d bytes its fetches returned", i, out, fetchedFrom[i])
		}
		if n := histCount(fams, "varve_fetch_duration_seconds", nil) - histCount(before[i], "varve_fetch_duration_seconds", nil); n < uint64(fetchesTo[i]) {
			t.Fatalf("broker %d: %d fetch latency observations for %d fetches", i, n, fetchesTo[i])
		}
		if n := histCount(fams, "varve_raft_wal_fsync_duration_seconds", nil) - histCount(before[i], "varve_raft_wal_fsync_duration_seconds", nil); n < 1 {
			t.Fatalf("broker %d: no WAL fsync observed while every broker replicated 30 entries", i)
		}
	}
	if bytesIn != float64(logBytes) {
		t.Fatalf("bytes in summed over brokers = %v, want the %d bytes the partitions hold", bytesIn, logBytes)
	}
	const produced = metricsPartitions * metricsPerPartition
	for _, m := range []struct {
		name   string
		labels map[string]string
	}{
		{"varve_produce_duration_seconds", map[string]string{"acks": "all"}},
		{"varve_raft_commit_duration_seconds", nil},
	} {
		var n uint64
		for i := range after {
			n += histCount(after[i], m.name, m.labels) - histCount(before[i], m.name, m.labels)
		}
		if n < produced {
			t.Fatalf("%s: %d observations over the brokers, want at least one per produced batch (%d)", m.name, n, produced)
		}
	}
	checkPartitionGauges(t, c, admins, 0)
	metaLeaders := 0
	for _, fams := range after {
		v, _ := metricValue(fams, "varve_metadata_leader", nil)
		metaLeaders += int(v)
	}
	if metaLeaders != 1 {
		t.Fatalf("%d brokers report varve_metadata_leader 1, want 1", metaLeaders)
	}

	// A consumer group joins and reads everything: a rebalance into
	// CompletingRebalance and a completed generation, on the coordinator.
	gcl := c.Client(t, kgo.ConsumerGroup("metered-group"), kgo.ConsumeTopics(metricsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	for got := 0; got < produced; {
		fs := gcl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("group consumed %d of %d records: %v", got, produced, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("group fetch %s/%d: %v", tp, p, err) })
		got += fs.NumRecords()
	}
	if err := gcl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	sum := func(name string, labels map[string]string) float64 {
		var s float64
		for _, fams := range scrapeAll(t, admins) {
			v, _ := metricValue(fams, name, labels)
			s += v
		}
		return s
	}
	if n := sum("varve_group_rebalances_total", nil); n < 1 {
		t.Fatalf("varve_group_rebalances_total sums to %v after a group formed", n)
	}
	if n := sum("varve_group_generations_completed_total", nil); n < 1 {
		t.Fatalf("varve_group_generations_completed_total sums to %v after a group formed", n)
	}

	// Known lag: offsets committed for a group with no members.
	committed := map[int32]int64{0: 4, 1: metricsPerPartition, 2: 0}
	offs := make(kadm.Offsets)
	for p, o := range committed {
		offs.Add(kadm.Offset{Topic: metricsTopic, Partition: p, At: o, LeaderEpoch: -1})
	}
	if resp, err := adm.CommitOffsets(ctx, "lagging", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}
	for p, o := range committed {
		checkLag(t, admins, "lagging", p, metricsPerPartition-o)
		checkLag(t, admins, "metered-group", p, 0)
	}
	// Every partition, the 16 of __consumer_offsets included, is led and
	// followed as the metadata says.
	checkPartitionGauges(t, c, admins, 0)

	// Kill the leader of partition 0: the survivors win elections, and
	// the partitions that lost a replica become under-replicated once
	// their leaders drop it from the ISR. The ISR (isr.go) drops a
	// follower that has not acknowledged the leader's last index for
	// ReplicaLagMax, so only partitions whose log moved do: those written
	// after the kill (every metered partition, below), and those the
	// victim led (the new leader's epoch-start entry; how many that is
	// depends on where preferred-leader balancing had moved leadership).
	// An idle partition keeps its dead follower in sync.
	victim := c.WaitLeader(metricsTopic, 0)
	survivors := []int{}
	for i := range admins {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	gainedBefore := 0.0
	for _, i := range survivors {
		v, _ := metricValue(scrape(t, admins[i]), "varve_raft_leadership_changes_total", map[string]string{"change": "gained"})
		gainedBefore += v
	}
	c.Kill(victim)
	eventually(t, 60*time.Second, "the survivors to win leadership of the victim's partitions", func() bool {
		gained := 0.0
		for _, i := range survivors {
			v, _ := metricValue(scrape(t, admins[i]), "varve_raft_leadership_changes_total", map[string]string{"change": "gained"})
			gained += v
		}
		return gained > gainedBefore
	})
	pcl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range int32(metricsPartitions) {
		if err := pcl.ProduceSync(ctx, &kgo.Record{Topic: metricsTopic, Partition: p, Value: []byte("after-kill")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	lo, hi := metricsPartitions, partitionsOn(t, c, victim)
	var under float64
	ok := waitFor(60*time.Second, func() bool {
		under = 0
		for _, i := range survivors {
			v, _ := metricValue(scrape(t, admins[i]), "varve_partitions_under_replicated", nil)
			under += v
		}
		return int(under) >= lo && int(under) <= hi
	})
	if !ok {
		md, _ := adm.Metadata(ctx)
		for _, td := range md.Topics {
			for _, pd := range td.Partitions {
				t.Logf("%s-%d: leader %d epoch %d replicas %v isr %v", td.Topic, pd.Partition, pd.Leader, pd.LeaderEpoch, pd.Replicas, pd.ISR)
			}
		}
		t.Fatalf("%v partitions under-replicated with broker %d down, want between %d and %d", under, victim, lo, hi)
	}
	t.Logf("%v partitions under-replicated with broker %d down (%d written since, %d with a replica there)", under, victim, lo, hi)
	c.Start(victim)
	admins[victim] = serveMetrics(t, c.Broker(victim))
	checkPartitionGauges(t, c, admins, 0)
}

// TestMetricsGroupLagOptIn: without Config.MetricsGroupLag no lag series
// exists, though a group has committed offsets behind the log end; the
// rebalance counters are there either way.
func TestMetricsGroupLagOptIn(t *testing.T) {
	c := NewCluster(t)
	admin := serveMetrics(t, c.Broker(0))
	adm := c.Admin(t)
	ctx := testContext(t, 60*time.Second)
	createTopic(t, adm, "unmetered", 1, nil)
	cl := c.Client(t, kgo.DefaultProduceTopic("unmetered"))
	for i := range 5 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	offs := make(kadm.Offsets)
	offs.Add(kadm.Offset{Topic: "unmetered", Partition: 0, At: 2, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "behind", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}
	if fetched := committedOffset(t, adm, "behind"); fetched != 2 {
		t.Fatalf("committed offset reads back as %d, want 2", fetched)
	}
	fams := scrape(t, admin)
	if f, ok := fams["varve_group_lag"]; ok {
		t.Fatalf("varve_group_lag present without the opt-in: %v", f)
	}
	for _, name := range []string{"varve_group_rebalances_total", "varve_topic_bytes_in_total", "varve_partitions_led"} {
		if _, ok := fams[name]; !ok {
			t.Fatalf("%s missing from /metrics", name)
		}
	}
}

// waitFor polls cond every 50 ms until it holds (true) or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// serveMetrics starts b's admin listener and returns its address; it
// stops with the broker.
func serveMetrics(t testing.TB, b *broker.Broker) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.ServeAdmin(ln) }()
	return ln.Addr().String()
}

// scrape reads one broker's /metrics and parses it as Prometheus text.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func scrapeAll(t testing.TB, addrs []string) []map[string]*dto.MetricFamily {
	t.Helper()
	out := make([]map[string]*dto.MetricFamily, len(addrs))
	for i, a := range addrs {
		out[i] = scrape(t, a)
	}
	return out
}

// findMetric is the series of family name whose labels include labels.
func findMetric(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match == len(labels) {
			return m
		}
	}
	return nil
}

// metricValue is a counter's or gauge's value, and whether the series
// exists.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	m := findMetric(fams, name, labels)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

// histCount is a histogram's observation count (0 without the series).
func histCount(fams map[string]*dto.MetricFamily, name string, labels map[string]string) uint64 {
	m := findMetric(fams, name, labels)
	if m == nil || m.Histogram == nil {
		return 0
	}
	return m.Histogram.GetSampleCount()
}

// fetchWhole reads a partition from offset 0 to its high watermark with
// one raw Fetch (v16, by topic id) at addr, its leader; nil when addr no
// longer leads it.
func fetchWhole(t testing.TB, addr string, id [16]byte, p int32) []byte {
	t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.Version = 16
	req.ReplicaID, req.MaxBytes = -1, 16<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.TopicID = id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = p, 0, 16<<20, -1, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, addr, req).(*kmsg.FetchResponse)
	sp := resp.Topics[0].Partitions[0]
	switch sp.ErrorCode {
	case kerr.NotLeaderForPartition.Code, kerr.FencedLeaderEpoch.Code, kerr.LeaderNotAvailable.Code:
		if len(sp.RecordBatches) != 0 {
			t.Fatalf("fetch %d at %s: error %d with %d bytes of records", p, addr, sp.ErrorCode, len(sp.RecordBatches))
		}
		return nil
	}
	if resp.ErrorCode != 0 || sp.ErrorCode != 0 || sp.HighWatermark != metricsPerPartition {
		t.Fatalf("fetch %d at %s: codes %d/%d, high watermark %d (want %d)", p, addr, resp.ErrorCode, sp.ErrorCode, sp.HighWatermark, metricsPerPartition)
	}
	return sp.RecordBatches
}

// checkOneRecordBatches checks that data is partition p's log as produced:
// metricsPerPartition batches of one record each, values m-<p>-<i>, at
// offsets 0, 1, ...
func checkOneRecordBatches(t testing.TB, data []byte, p int) {
	t.Helper()
	for i := 0; i < metricsPerPartition; i++ {
		var b kmsg.RecordBatch
		if err := b.ReadFrom(data); err != nil {
			t.Fatalf("partition %d batch %d: %v", p, i, err)
		}
		size := int(b.Length) + 12
		var r kmsg.Record
		if err := r.ReadFrom(b.Records); err != nil {
			t.Fatalf("partition %d batch %d record: %v", p, i, err)
		}
		if want := fmt.Sprintf("m-%d-%02d", p, i); b.FirstOffset != int64(i) || b.NumRecords != 1 || string(r.Value) != want {
			t.Fatalf("partition %d batch %d: offset %d, %d records, value %q; want offset %d, 1 record, %q", p, i, b.FirstOffset, b.NumRecords, r.Value, i, want)
		}
		data = data[size:]
	}
	if len(data) != 0 {
		t.Fatalf("partition %d: %d bytes after the %d batches", p, len(data), metricsPerPartition)
	}
}

// clusterPartitions counts, from Metadata, every partition of the cluster
// (internal topics included) and the replicas they have in total.
func clusterPartitions(t testing.TB, c *Cluster) (partitions, replicas int) {
	t.Helper()
	md, err := c.Admin(t).Metadata(testContext(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range md.Topics {
		for _, pd := range td.Partitions {
			partitions++
			replicas += len(pd.Replicas)
		}
	}
	return partitions, replicas
}

// partitionsOn counts, from Metadata, the partitions with a replica on
// broker slot i.
func partitionsOn(t testing.TB, c *Cluster, i int) int {
	t.Helper()
	md, err := c.Admin(t).Metadata(testContext(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, td := range md.Topics {
		for _, pd := range td.Partitions {
			for _, id := range pd.Replicas {
				if c.Index(id) == i {
					n++
				}
			}
		}
	}
	return n
}

// checkPartitionGauges waits until, summed over the brokers, the led
// gauge equals the cluster's partitions, led plus followed its replicas,
// and under-replicated and offline equal under.
func checkPartitionGauges(t testing.TB, c *Cluster, admins []string, under int) {
	t.Helper()
	var last string
	eventually(t, 60*time.Second, "partition gauges to match the metadata", func() bool {
		partitions, replicas := clusterPartitions(t, c)
		var led, followed, ur, offline float64
		for _, a := range admins {
			fams := scrape(t, a)
			v, _ := metricValue(fams, "varve_partitions_led", nil)
			led += v
			v, _ = metricValue(fams, "varve_partitions_followed", nil)
			followed += v
			v, _ = metricValue(fams, "varve_partitions_under_replicated", nil)
			ur += v
			v, _ = metricValue(fams, "varve_partitions_offline", nil)
			offline += v
		}
		last = fmt.Sprintf("led %v followed %v under-replicated %v offline %v; metadata: %d partitions, %d replicas", led, followed, ur, offline, partitions, replicas)
		return int(led) == partitions && int(led+followed) == replicas && int(ur) == under && offline == 0
	})
	t.Log(last)
}

// checkLag waits until exactly one broker (the group's coordinator)
// reports the lag of group on partition p of metricsTopic, equal to want.
func checkLag(t testing.TB, admins []string, group string, p int32, want int64) {
	t.Helper()
	labels := map[string]string{"group": group, "topic": metricsTopic, "partition": strconv.Itoa(int(p))}
	var last string
	eventually(t, 30*time.Second, fmt.Sprintf("lag of %s on partition %d", group, p), func() bool {
		reporters, value := 0, 0.0
		for _, a := range admins {
			if v, ok := metricValue(scrape(t, a), "varve_group_lag", labels); ok {
				reporters++
				value = v
			}
		}
		last = fmt.Sprintf("%d brokers report, value %v", reporters, value)
		return reporters == 1 && value == float64(want)
	})
	t.Logf("lag %s/%d: %s", group, p, last)
}

// committedOffset is group's committed offset of unmetered-0.
func committedOffset(t testing.TB, adm *kadm.Client, group string) int64 {
	t.Helper()
	resp, err := adm.FetchOffsets(testContext(t, 10*time.Second), group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := resp.Lookup("unmetered", 0)
	if !ok || o.Err != nil {
		t.Fatalf("no committed offset for unmetered-0: %v", o.Err)
	}
	return o.At
}
