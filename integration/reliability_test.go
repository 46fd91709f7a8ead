package integration

// The reliability suite on the in-process cluster (TESTPLAN rows 1-4, with
// row 8 at the end of each): the same workload and the history checker
// (integration/checker) under a leader killed again and again, the whole
// cluster crashed, power loss on a minority and then on every broker
// (crashed again while recovering), and a leader cut off from its peers
// but not from its clients.
//
// The workload: an idempotent and a plain (non-idempotent) producer
// writing unique values with keys, two members of a consumer group and a
// direct consumer reading, all logged. At the end the cluster is healed,
// the group's lag must reach 0 and every partition must be drained from
// offset 0 within a bound, the brokers are stopped and every replica's
// segment files read offline; the checker then holds the history to
// checks (a)-(h) and row 8's replica agreement.
//
// Each test has a fixed seed; VARVE_SEED=random picks one (printed), and
// VARVE_SEED=<n> replays it: the seed decides the fault schedule (which
// broker, when, for how long) and the crash images' torn tails (what was
// unsynced at the moment of a kill still depends on timing). The schedule
// is logged as it happens and is part of the checker's report.
// VARVE_SOAK=1 runs rows 1 and 2 for 20 rounds instead of 3, VARVE_ROUNDS=<n>
// for n.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/integration/checker"
)

// every check the reliability tests require to have examined something.
var allChecks = []string{"a", "b", "c", "d", "e", "f", "g", "h", "r"}

// TestReliabilityLeaderKill (row 1): the leader of a partition picked at
// random loses power every few seconds under load and comes back after a
// random downtime. All checks.
func TestReliabilityLeaderKill(t *testing.T) {
	rng, seed := testSeed(t, 1)
	c := reliabilityCluster(t, seed)
	w := startWorkload(t, c, rng, "leader-kill", 3)
	for round := range rounds(t, 3) {
		w.sleep(1500, 3000)
		p := int32(rng.IntN(int(w.partitions)))
		victim := c.WaitLeader(w.topic, p)
		w.fault("round %d: kill broker slot %d, the leader of %s-%d", round, victim, w.topic, p)
		c.Kill(victim)
		w.fault("round %d: slot %d leads %s-%d", round, readyLeaderAmong(t, c, w.topic, p, others(c, victim)), w.topic, p)
		w.sleep(500, 2000)
		w.fault("round %d: start broker slot %d", round, victim)
		c.Start(victim)
		w.waitProgress(200)
	}
	w.finish().Require(t, allChecks...)
}

// TestReliabilityClusterCrash (row 2): every broker loses power at once
// (their Raft links cut first, so no broker outlives the others), mid-load,
// and all restart on their crash images; three rounds. No acknowledged
// write may be lost, and all the other checks hold.
func TestReliabilityClusterCrash(t *testing.T) {
	rng, seed := testSeed(t, 2)
	c := reliabilityCluster(t, seed)
	w := startWorkload(t, c, rng, "cluster-crash", 3)
	for round := range rounds(t, 3) {
		w.sleep(1000, 2500)
		w.fault("round %d: cut every broker's power", round)
		killAll(c)
		w.sleep(200, 1000)
		w.fault("round %d: start every broker", round)
		for i := range c.Size() {
			c.Start(i)
		}
		w.waitProgress(200)
	}
	w.finish().Require(t, allChecks...)
}

// TestReliabilityPowerLoss (row 3): power loss drops everything a broker
// had not fsynced (unsynced tails torn at random). First one broker picked
// at random, then every broker, and each time once more within moments of
// restarting, while it recovers and catches up. Every restart must boot
// (Start fails the test otherwise), no acknowledged write may be lost and
// every offset holds one value everywhere ((a), (c)); the other checks
// must hold too.
func TestReliabilityPowerLoss(t *testing.T) {
	rng, seed := testSeed(t, 3)
	c := reliabilityCluster(t, seed)
	w := startWorkload(t, c, rng, "power-loss", 3)

	w.sleep(1000, 2500)
	victim := rng.IntN(c.Size())
	w.fault("minority: cut the power of broker slot %d", victim)
	c.Kill(victim)
	w.sleep(300, 1000)
	w.fault("minority: start broker slot %d", victim)
	c.Start(victim)
	w.sleep(0, 300)
	w.fault("minority: cut the power of broker slot %d again while it recovers", victim)
	c.Kill(victim)
	w.sleep(200, 600)
	w.fault("minority: start broker slot %d", victim)
	c.Start(victim)
	w.waitProgress(200)

	w.sleep(1000, 2500)
	w.fault("all: cut every broker's power")
	killAll(c)
	w.fault("all: start every broker")
	for i := range c.Size() {
		c.Start(i)
	}
	w.sleep(0, 300)
	w.fault("all: cut every broker's power again while they recover")
	killAll(c)
	w.sleep(200, 600)
	w.fault("all: start every broker")
	for i := range c.Size() {
		c.Start(i)
	}
	w.waitProgress(200)
	w.finish().Require(t, allChecks...)
}

// TestReliabilityLeaderIsolation (row 4): the leader of a partition is cut
// off from its peers but not from its clients. A producer that can reach
// only that broker keeps sending to the partition: nothing it sends after
// the cut may be acknowledged (the old leader cannot commit, and must not
// answer as if it had), the other two elect a new leader and the main
// workload carries on. After healing, all checks.
func TestReliabilityLeaderIsolation(t *testing.T) {
	rng, seed := testSeed(t, 4)
	c := reliabilityCluster(t, seed)
	w := startWorkload(t, c, rng, "leader-isolation", 3)
	p := int32(rng.IntN(int(w.partitions)))
	// Its preferred replica, where balancing leaves it: no transfer may
	// race the cut.
	old := waitPreferredLeader(t, c, w.topic, p)
	_, oldEpoch := c.Broker(old).PartitionLeader(w.topic, p)

	// Confined to the old leader, which it reaches before the cut too: it
	// must get acknowledgements then, so it is known to work. (Its short
	// delivery timeout can fail a write on a loaded machine: those before
	// the cut are retried.)
	staleCl := newClient(t, append(confinedTo(c.BrokerAddr(old)),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(3*time.Second),
		kgo.ProduceRequestTimeout(time.Second),
		kgo.RequestTimeoutOverhead(500*time.Millisecond),
		kgo.RetryTimeout(3*time.Second))...)
	stale := w.h.NewProducer(staleCl, true)
	for ok, deadline := 0, time.Now().Add(30*time.Second); ok < 5; {
		r := stale.SendSync(testContext(t, 30*time.Second), w.topic, p, nil)
		if r.Outcome == checker.OK {
			ok++
		} else if time.Now().After(deadline) {
			t.Fatalf("before the cut, the old leader did not acknowledge %s: %v %s", r.Value, r.Outcome, r.Err)
		}
	}

	w.sleep(500, 1500)
	w.fault("cut broker slot %d, the leader of %s-%d (epoch %d), from its peers", old, w.topic, p, oldEpoch)
	c.Isolate(old, true)
	cutAt := len(w.h.Writes())
	ctx, stop := context.WithCancel(context.Background())
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		for ctx.Err() == nil {
			stale.Send(context.Background(), w.topic, p, nil)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	eventually(t, 15*time.Second, "the isolated leader to step down", func() bool {
		return !c.Broker(old).IsReadyLeader(w.topic, p)
	})
	now := readyLeaderAmong(t, c, w.topic, p, others(c, old))
	// The metadata names a new leader with it, a little later.
	var epoch int32
	eventually(t, 30*time.Second, "the metadata to name a new leader with a higher epoch", func() bool {
		var id int32
		id, epoch = c.Broker(now).PartitionLeader(w.topic, p)
		return c.Index(id) != old && epoch > oldEpoch
	})
	w.fault("broker slot %d stepped down; slot %d leads %s-%d, epoch %d in the metadata", old, now, w.topic, p, epoch)
	w.sleep(1500, 3000)
	stop()
	<-sending
	// Every write to the isolated leader completes (fails) before the
	// heal: afterwards balancing may hand it leadership back, and it could
	// then rightly acknowledge a retry.
	if err := stale.Flush(testContext(t, 30*time.Second)); err != nil {
		t.Fatalf("the isolated leader's producer did not finish: %v", err)
	}
	staleCl.Close()
	var sent []checker.Write
	acked := 0
	for _, wr := range w.h.Writes()[cutAt:] {
		if wr.Producer != stale.Name() {
			continue
		}
		sent = append(sent, wr)
		if wr.Outcome == checker.OK {
			acked++
			t.Errorf("the isolated leader acknowledged %s at %s-%d@%d, sent after the cut", wr.Value, wr.Topic, wr.AckPartition, wr.AckOffset)
		}
	}
	if len(sent) == 0 {
		t.Fatal("nothing was sent to the isolated leader")
	}
	w.fault("heal broker slot %d; it acknowledged %d of the %d writes sent to it after the cut", old, acked, len(sent))
	c.Isolate(old, false)
	w.waitProgress(200)
	rep := w.finish()
	// What only the isolated leader took in never committed: its log was
	// truncated to the new leader's, nowhere holds those writes.
	for _, wr := range sent {
		if at := w.h.Locate(wr.Value); len(at) > 0 {
			t.Errorf("%s, sent only to the isolated leader after the cut (%v), is in the log: %v", wr.Value, wr.Outcome, at)
		}
	}
	rep.Require(t, allChecks...)
}

// --- the workload ---

// testSeed is the test's seed: def, or VARVE_SEED (a number, or "random"
// for a new one). It is logged with the command that replays it.
func testSeed(t *testing.T, def uint64) (*rand.Rand, uint64) {
	seed := def
	switch v := os.Getenv("VARVE_SEED"); v {
	case "":
	case "random":
		seed = uint64(time.Now().UnixNano())
	default:
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("VARVE_SEED=%q: want a number or \"random\"", v)
		}
		seed = n
	}
	t.Logf("seed %d; replay with VARVE_SEED=%d go test -race -run '^%s$' ./integration", seed, seed, t.Name())
	return rand.New(rand.NewPCG(seed, 0x5eed)), seed
}

// rounds is how many fault rounds a test runs: def, 20 with VARVE_SOAK=1
// (a longer run outside CI), or VARVE_ROUNDS.
func rounds(t *testing.T, def int) int {
	v := os.Getenv("VARVE_ROUNDS")
	if v == "" {
		if os.Getenv("VARVE_SOAK") == "1" {
			return 20
		}
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("VARVE_ROUNDS=%q: want a positive number", v)
	}
	return n
}

// reliabilityCluster is three brokers on the fault filesystem whose crash
// images are drawn from seed, with groups that rebalance at once and a
// small __consumer_offsets.
func reliabilityCluster(t *testing.T, seed uint64) *Cluster {
	return NewCluster(t, brokerLogs(t), Brokers(3),
		func(c *Cluster) { c.seed = seed << 8 }, // Kill draws each crash image from c.seed+1, +2, ...
		WithConfig(func(cfg *broker.Config) {
			cfg.GroupInitialRebalanceDelay = -1
			cfg.OffsetsTopicPartitions = 4
		}))
}

// killAll cuts every broker's Raft links first, so none commits anything
// after another lost power, then cuts each one's power.
func killAll(c *Cluster) {
	for i := range c.Size() {
		if c.Broker(i) != nil { // Kill heals only a running broker's links
			c.Isolate(i, true)
		}
	}
	for i := range c.Size() {
		c.Kill(i) // heals its links once it is down
	}
}

// readyLeaderAmong waits until one of slots is the ready leader of a
// partition and returns it. Unlike waitLeaderAmong it does not wait for
// every broker's metadata to name it: on a loaded machine the metadata
// group's elections can take a while to settle, and clients find the
// leader by themselves.
func readyLeaderAmong(t *testing.T, c *Cluster, topic string, p int32, slots []int) int {
	t.Helper()
	leader := -1
	eventually(t, 30*time.Second, fmt.Sprintf("a ready leader of %s-%d among slots %v", topic, p, slots), func() bool {
		for _, i := range slots {
			if b := c.Broker(i); b != nil && b.IsReadyLeader(topic, p) {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// others are the broker slots other than i.
func others(c *Cluster, i int) []int {
	var out []int
	for j := range c.Size() {
		if j != i {
			out = append(out, j)
		}
	}
	return out
}

// workload is the producers and consumers of one reliability test.
type workload struct {
	t          *testing.T
	c          *Cluster
	rng        *rand.Rand
	h          *checker.History
	topic      string
	group      string
	partitions int32
	start      time.Time

	producers []*checker.Producer
	consumers []*checker.Consumer
	stopLoad  context.CancelFunc
	stopRead  context.CancelFunc
	loading   sync.WaitGroup
	reading   sync.WaitGroup
	stopOnce  sync.Once
}

// clientOpts are what every workload client uses: every broker as a seed,
// and metadata refreshed quickly after a leader moves.
func (w *workload) clientOpts() []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(w.c.Addrs()...), kgo.MetadataMinAge(200 * time.Millisecond)}
}

// startWorkload creates topic (RF 3) and starts the producers and
// consumers on it.
func startWorkload(t *testing.T, c *Cluster, rng *rand.Rand, topic string, partitions int32) *workload {
	t.Helper()
	createReplicated(t, c, topic, partitions, 3)
	w := &workload{t: t, c: c, rng: rng, h: checker.New(), topic: topic, group: topic + "-group",
		partitions: partitions, start: time.Now()}
	for _, idem := range []bool{true, false} {
		opts := w.clientOpts()
		if !idem {
			opts = append(opts, kgo.DisableIdempotentWrite())
		}
		cl := newClient(t, opts...)
		w.producers = append(w.producers, w.h.NewProducer(cl, idem))
	}
	for i, group := range []string{w.group, w.group, ""} {
		name := fmt.Sprintf("c%d", i+1)
		if group == "" {
			name = "direct"
		}
		opts := append(w.clientOpts(), kgo.ConsumeTopics(topic), kgo.FetchMaxWait(200*time.Millisecond),
			kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(500*time.Millisecond))
		cons, err := w.h.NewConsumer(name, group, opts...)
		if err != nil {
			t.Fatal(err)
		}
		w.consumers = append(w.consumers, cons)
	}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	readCtx, stopRead := context.WithCancel(context.Background())
	w.stopLoad, w.stopRead = stopLoad, stopRead
	for _, p := range w.producers {
		w.loading.Go(func() { p.Run(loadCtx, topic, 3*time.Millisecond, 16) })
	}
	for _, cons := range w.consumers {
		w.reading.Go(func() { cons.Run(readCtx, 200*time.Millisecond) })
	}
	t.Cleanup(w.stop) // a failed test must not leave clients running
	w.waitProgress(200)
	return w
}

// stop ends the load and the consumers and closes every client
// (idempotent).
func (w *workload) stop() {
	w.stopOnce.Do(func() {
		w.stopLoad()
		w.loading.Wait()
		w.stopRead()
		w.reading.Wait()
		for _, cons := range w.consumers {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cons.Close(ctx)
			cancel()
		}
		for _, p := range w.producers {
			p.Client().Close()
		}
	})
}

// fault logs one step of the fault schedule, in the test log and in the
// checker's report.
func (w *workload) fault(format string, args ...any) {
	msg := fmt.Sprintf("+%.1fs ", time.Since(w.start).Seconds()) + fmt.Sprintf(format, args...)
	w.t.Log("fault " + msg)
	w.h.Note("%s", msg)
}

// sleep waits a random time between lo and hi milliseconds (the seed's).
func (w *workload) sleep(lo, hi int) {
	time.Sleep(time.Duration(lo+w.rng.IntN(hi-lo+1)) * time.Millisecond)
}

// waitProgress waits for n more acknowledged writes: the cluster is
// serving again.
func (w *workload) waitProgress(n int) {
	w.t.Helper()
	want := w.h.Counts().OK + n
	deadline := time.Now().Add(60 * time.Second)
	for w.h.Counts().OK < want {
		if time.Now().After(deadline) {
			w.t.Fatalf("no progress: %v after 60 s, want %d acknowledged (%s)", w.h.Counts(), want, w.c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish heals nothing itself (the test has restarted and healed every
// broker): it stops the load, waits for the group's lag to reach 0 while
// the consumers still run, stops them, drains every partition through a
// broker picked by the seed, waits for the replicas to converge, stops the
// cluster, reads every replica offline and checks the history.
func (w *workload) finish() *checker.Report {
	t, c := w.t, w.c
	t.Helper()
	w.fault("heal: every broker up and connected; stopping the load")
	w.stopLoad()
	w.loading.Wait()
	const bound = 45 * time.Second
	for _, p := range w.producers {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		start := time.Now()
		err := p.Flush(ctx)
		cancel()
		l := checker.Liveness{What: "producer " + p.Name() + " flushed", Bound: bound, Took: time.Since(start), OK: err == nil}
		if err != nil {
			l.Detail = err.Error()
		}
		w.h.AddLiveness(l)
	}
	w.h.WaitLag(context.Background(), c.Admin(t), w.group, []string{w.topic}, bound)
	w.stopRead()
	w.reading.Wait()
	w.stop()
	seed := c.BrokerAddr(w.rng.IntN(c.Size()))
	if err := w.h.Drain(context.Background(), seed, []string{w.topic}, bound); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, c, w.topic, w.partitions)
	dirs := make([][]checker.Replica, w.partitions)
	for p := range w.partitions {
		for i := range c.Size() {
			dirs[p] = append(dirs[p], checker.Replica{Name: fmt.Sprintf("broker-slot-%d", i), Dir: c.Broker(i).PartitionDir(w.topic, p)})
		}
	}
	c.stopAll()
	for p := range w.partitions {
		for i := range dirs[p] {
			dirs[p][i].FS = c.FS(i) // the disk as the stopped broker left it
		}
		w.h.ReadReplicas(w.topic, p, dirs[p])
	}
	rep := w.h.Check()
	for _, cons := range w.consumers {
		if errs := cons.FetchErrors(); len(errs) > 0 {
			keys := make([]string, 0, len(errs))
			for k := range errs {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			t.Logf("consumer %s fetch errors: %v", cons.Name(), keys)
		}
	}
	t.Logf("counts for RELIABILITY.md: %s; %s", rep.Counts(), w.h.Counts())
	return rep
}
