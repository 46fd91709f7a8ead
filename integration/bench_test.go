package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/replication"
)

// The produce and consume benchmarks run the same franz-go workload (12
// partitions, 1 KiB records of random bytes, the default producer:
// idempotent, acks=all, snappy, 10 ms linger) against Varve and against
// franz-go's in-memory fake broker (kfake) in the same process, so they
// compare as ratios on one machine. The targets:
//
//   - varve-rf3: three brokers, RF=3, on the real disk (OnDisk), default
//     durability: every replica fdatasyncs its Raft WAL before it
//     acknowledges an entry. The headline number.
//   - varve-rf1: one broker on the real disk, default durability.
//   - kfake: one kfake broker, everything in memory (kfake with three
//     brokers keeps one in-memory copy all the same).
//   - varve-rf3-writecaching: varve-rf3 with Config.WriteCaching (no
//     fdatasync before acknowledgement). Labelled: not the default.
//
// All brokers and the client share the process and the machine's cores
// and disk: with RF=3 every byte reaches the same disk six times (each
// replica's Raft WAL and partition segment). Data
// groups run production's Raft timeouts (replication.DataTiming), not the
// integration package's shortened ones: with a 250 ms leader lease, a
// loaded machine's slow follower fsyncs made leaders step down in the
// middle of a run (seconds-long stalls). Leadership is settled on the
// preferred replicas before anything is measured, and the leader-changes
// metric counts the epochs that moved while it was.
//
// -count repeats one sub-benchmark back to back; to alternate the targets
// in rounds (better on a noisy machine), set VARVE_BENCH_ROUNDS and use
// -count=1:
//
//	VARVE_BENCH_ROUNDS=6 go test -run='^$' -bench=Produce -benchtime=3s -count=1 ./integration/
//	benchstat -col /broker -ignore /round out.txt

const (
	benchTopic      = "bench"
	benchPartitions = 12
	benchRecordSize = 1024
	benchChunk      = 20_000 // records per produce iteration
)

type benchTarget struct {
	name  string
	start func(b *testing.B) benchEnv
}

// benchEnv is a started target: the topic exists and is led.
type benchEnv struct {
	addrs []string
	stats func() raftStats // nil for kfake
}

// raftStats are sums over the bench topic's partitions, read on broker
// slot 0 (which holds a replica of every partition).
type raftStats struct {
	epochs    int64  // leader epochs
	applied   uint64 // applied Raft indexes: entries, when differenced
	snapshots int64
}

func benchTargets() []benchTarget {
	// The broker's own partition flush interval, as a user runs it (tests
	// use a shorter one). It is not the durability point: the Raft WAL is.
	flush := WithConfig(func(cfg *broker.Config) {
		cfg.FlushInterval = time.Second
		cfg.DataTiming = replication.DataTiming()
	})
	caching := WithConfig(func(cfg *broker.Config) { cfg.WriteCaching = true })
	return []benchTarget{
		{"varve-rf3", func(b *testing.B) benchEnv {
			return benchVarve(b, 3, flush, Brokers(3), OnDisk())
		}},
		{"varve-rf1", func(b *testing.B) benchEnv {
			return benchVarve(b, 1, flush, OnDisk())
		}},
		{"kfake", func(b *testing.B) benchEnv {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(benchPartitions, benchTopic))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			return benchEnv{addrs: c.ListenAddrs()}
		}},
		{"varve-rf3-writecaching", func(b *testing.B) benchEnv {
			return benchVarve(b, 3, flush, caching, Brokers(3), OnDisk())
		}},
	}
}

// benchVarve starts a cluster, creates the bench topic with replication
// factor rf and waits until every partition is led by its preferred
// replica, so leader balancing does not move leaders while it is measured.
func benchVarve(b *testing.B, rf int16, opts ...Option) benchEnv {
	c := NewCluster(b, opts...)
	adm := c.Admin(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, benchPartitions, rf, nil, benchTopic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		b.Fatalf("create topic: %v", err)
	}
	benchWaitPreferred(b, c, adm)
	stats := func() raftStats {
		var st raftStats
		for p := range int32(benchPartitions) {
			_, e := c.Broker(0).PartitionLeader(benchTopic, p)
			st.epochs += int64(e)
			if gs, ok := c.Broker(0).ReplicaStats(benchTopic, p); ok {
				st.applied += gs.AppliedIndex
				st.snapshots += gs.Snapshots
			}
		}
		return st
	}
	return benchEnv{addrs: c.Addrs(), stats: stats}
}

func benchWaitPreferred(b *testing.B, c *Cluster, adm *kadm.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := adm.Metadata(ctx, benchTopic)
	if err != nil {
		b.Fatal(err)
	}
	for p := range int32(benchPartitions) {
		pd, ok := md.Topics[benchTopic].Partitions[p]
		if !ok || len(pd.Replicas) == 0 {
			b.Fatalf("metadata of %s-%d: %+v", benchTopic, p, md.Topics[benchTopic])
		}
		pref := c.Index(pd.Replicas[0])
		eventually(b, time.Minute, fmt.Sprintf("%s-%d led by slot %d", benchTopic, p, pref), func() bool {
			return c.WaitLeader(benchTopic, p) == pref
		})
	}
}

// benchRounds is VARVE_BENCH_ROUNDS (default 1): how many times every
// target runs, alternating.
func benchRounds(b *testing.B) int {
	s := os.Getenv("VARVE_BENCH_ROUNDS")
	if s == "" {
		return 1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("VARVE_BENCH_ROUNDS=%q", s)
	}
	return n
}

// forEachTarget runs body as a sub-benchmark per target, in rounds. With
// one round the names carry no round, as before.
func forEachTarget(b *testing.B, body func(b *testing.B, env benchEnv)) {
	rounds := benchRounds(b)
	for r := range rounds {
		for _, tgt := range benchTargets() {
			if !benchWanted(tgt.name) {
				continue
			}
			name := "broker=" + tgt.name
			if rounds > 1 {
				name = fmt.Sprintf("round=%d/%s", r+1, name)
			}
			// Every target starts from a heap that has given its free
			// memory back to the OS. Otherwise a target inherits the
			// pages the previous one faulted in, and page faults cost
			// more than anything else on this VM: kfake measured up to
			// 1.6x faster right after an RF=3 cluster had grown the heap
			// than in a process of its own.
			debug.FreeOSMemory()
			b.Run(name, func(b *testing.B) { body(b, tgt.start(b)) })
		}
	}
}

// benchWanted reports whether VARVE_BENCH_TARGETS (a comma-separated list
// of target names; empty means all) selects the target, so a profile or a
// quick comparison can run two targets without the others' minutes.
func benchWanted(name string) bool {
	list := os.Getenv("VARVE_BENCH_TARGETS")
	if list == "" {
		return true
	}
	return slices.Contains(strings.Split(list, ","), name)
}

func benchClient(b *testing.B, addrs []string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(benchTopic)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return cl
}

// benchValues are incompressible record values: 32 MiB of random bytes
// handed out 1 KiB at a time, so no two records of one iteration (20 MB)
// are equal. One value repeated in every record lets snappy shrink a
// batch about tenfold, and MB/s would count bytes that never reach the
// disk or the wire.
type benchValues struct {
	pool []byte
	off  int
}

func newBenchValues() *benchValues {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([]byte, 32<<20)
	for i := 0; i < len(pool); i += 8 {
		binary.LittleEndian.PutUint64(pool[i:], rng.Uint64())
	}
	return &benchValues{pool: pool}
}

// next is the next value; one goroutine at a time.
func (v *benchValues) next() []byte {
	if v.off+benchRecordSize > len(v.pool) {
		v.off = 0
	}
	val := v.pool[v.off : v.off+benchRecordSize : v.off+benchRecordSize]
	v.off += benchRecordSize
	return val
}

// produceChunk produces n records and waits for every acknowledgement,
// appending each record's latency (from the Produce call, which blocks
// while the client's buffer is full, to its promise) to lat.
func produceChunk(b *testing.B, cl *kgo.Client, values *benchValues, n int, lat *[]time.Duration) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	wg.Add(n)
	for i := range n {
		start := time.Now()
		r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: values.next()}
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			d := time.Since(start)
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			*lat = append(*lat, d)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

// reportLatency reports the median and 99th percentile of lat in ms.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
}

// BenchmarkProduce is throughput under a closed-loop burst: each
// iteration produces benchChunk records as fast as the client takes them
// and waits for every acknowledgement. Its latencies are mostly queueing
// in the client's buffer (50,000 records by default), so they track
// 1/throughput; BenchmarkProduceLatency measures an unloaded round trip.
func BenchmarkProduce(b *testing.B) {
	values := newBenchValues()
	forEachTarget(b, func(b *testing.B, env benchEnv) {
		cl := benchClient(b, env.addrs)
		var lat []time.Duration
		produceChunk(b, cl, values, 2000, &lat) // warm up: metadata, producer id, every leader
		lat = lat[:0]
		b.SetBytes(benchChunk * benchRecordSize)
		b.ReportAllocs()
		before := readUsage()
		var st0 raftStats
		if env.stats != nil {
			st0 = env.stats()
		}
		for b.Loop() {
			produceChunk(b, cl, values, benchChunk, &lat)
		}
		produced := int64(b.N) * benchChunk * benchRecordSize
		readUsage().report(b, before, produced)
		if env.stats != nil {
			env.stats().report(b, st0, produced)
		}
		reportLatency(b, lat)
	})
}

// report adds what moved since before: leader changes (elections and
// transfers; they stall produce), snapshots, and the mean Raft entry size
// (how well produce batches were aggregated; bigger entries mean fewer
// fsyncs per byte).
func (st raftStats) report(b *testing.B, before raftStats, produced int64) {
	b.ReportMetric(float64(st.epochs-before.epochs), "leader-changes")
	b.ReportMetric(float64(st.snapshots-before.snapshots), "snapshots")
	if n := st.applied - before.applied; n > 0 {
		b.ReportMetric(float64(produced)/float64(n)/1024, "KiB/entry")
	}
}

// usage is what the whole process (client and every broker) has used so
// far: CPU time, wall-clock time, and bytes sent to the storage layer.
type usage struct {
	cpu  time.Duration
	wall time.Time
	disk int64 // /proc/self/io write_bytes; -1 where unavailable
	busy int64 // the busiest block device's io_ticks (ms); -1 where unavailable
	// faults counts minor page faults: first touches of memory the
	// process had not used yet (or had given back), which cost more than
	// a copy of the same bytes on this VM.
	faults int64
}

func readUsage() usage {
	u := usage{wall: time.Now(), disk: procWriteBytes(), busy: diskBusyMs()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		u.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		u.faults = ru.Minflt
	}
	return u
}

// procWriteBytes is the bytes this process caused to be written to
// storage (counted when pages are dirtied, so page-cache writes that a
// later fsync or writeback sends to the disk count once).
func procWriteBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// diskBusyMs is the largest io_ticks (milliseconds with I/O in flight)
// over the machine's block devices: machine-wide, so it counts other jobs'
// I/O too, but on a calm machine it says whether the disk was the limit.
func diskBusyMs() int64 {
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return -1
	}
	var most int64 = -1
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 13 {
			continue
		}
		if n, err := strconv.ParseInt(f[12], 10, 64); err == nil && n > most {
			most = n
		}
	}
	return most
}

// report adds, since before: the CPU ms per MB produced (on a machine
// whose cores are all busy, throughput is about the CPU the process gets
// divided by this, so two targets' ratio of it predicts their throughput
// ratio); the share of the time the busiest disk had I/O in flight; the
// cores used on average (below the machine's count, the
// target waited on something other than CPU); and the bytes written to
// storage per byte produced (RF=3 on one disk: each replica's WAL and
// segment).
func (u usage) report(b *testing.B, before usage, produced int64) {
	if produced <= 0 {
		return
	}
	if u.cpu > 0 {
		b.ReportMetric(float64(u.cpu-before.cpu)/float64(time.Millisecond)/(float64(produced)/1e6), "cpu-ms/MB")
	}
	if wall := u.wall.Sub(before.wall); wall > 0 {
		b.ReportMetric(float64(u.cpu-before.cpu)/float64(wall), "cores")
		if u.busy >= 0 && before.busy >= 0 {
			b.ReportMetric(float64(u.busy-before.busy)/float64(wall.Milliseconds()), "disk-busy")
		}
	}
	if u.disk >= 0 && before.disk >= 0 {
		b.ReportMetric(float64(u.disk-before.disk)/float64(produced), "disk-B/B")
	}
	b.ReportMetric(float64(u.faults-before.faults)/(float64(produced)/1e6), "faults/MB")
}

// BenchmarkProduceLatency produces one record at a time and waits for its
// acknowledgement (one in flight): the latency of an acks=all write with
// no queueing, which for Varve at default durability includes the
// leader's fdatasync, a round trip and a follower's fdatasync. The
// client's 10 ms linger is turned off, since it would dominate.
func BenchmarkProduceLatency(b *testing.B) {
	values := newBenchValues()
	forEachTarget(b, func(b *testing.B, env benchEnv) {
		cl := benchClient(b, env.addrs, kgo.ProducerLinger(0))
		var lat []time.Duration
		produceChunk(b, cl, values, 2000, &lat) // warm up
		lat = lat[:0]
		ctx := context.Background()
		i := 0
		b.SetBytes(benchRecordSize)
		for b.Loop() {
			r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: values.next()}
			i++
			start := time.Now()
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
}

func BenchmarkConsume(b *testing.B) {
	const total = 50_000
	values := newBenchValues()
	forEachTarget(b, func(b *testing.B, env benchEnv) {
		cl := benchClient(b, env.addrs)
		var lat []time.Duration
		produceChunk(b, cl, values, total, &lat)
		cl.Close()
		b.SetBytes(total * benchRecordSize)
		b.ReportAllocs()
		for b.Loop() {
			consumeN(b, env.addrs, total)
		}
	})
}

func consumeN(b *testing.B, addrs []string, n int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(benchTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			b.Fatalf("consumed %d of %d", got, n)
		}
		fs.EachError(func(t string, p int32, err error) { b.Fatalf("fetch %s/%d: %v", t, p, err) })
		got += fs.NumRecords()
	}
}
