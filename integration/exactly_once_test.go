package integration

// TESTPLAN row 7, exactly-once produce, on the in-process cluster (T1):
// idempotent producers send unique values through a Kafka-aware proxy in
// front of every broker (kafkaproxy_test.go), which loses produce
// responses after the broker wrote the batch, resets connections in place
// of a response, cuts connections in the middle of a request, and holds
// every response of a partition leader while that leader is killed or
// stopped, so the client retries batches already in the log at the next
// leader. Nothing may be written twice (check (d)), each producer's acks
// on a partition keep its order (f), no acknowledged write is lost (a),
// and the replicas agree (r); every other check of the history checker
// holds too. The proxies' ledger shows that the faults did what they are
// for: retries of batches already written reached a broker and were
// answered with their original offset, by the leader that wrote them and
// by a new one.
//
// Default: 24,000 sends, 3 leader changes, about 30 s under -race on two
// loaded cores. VARVE_SOAK=1 sends 100,000 with 20 leader changes
// (VARVE_ROUNDS=<n> for n); VARVE_SEED=random|<n> varies or replays the
// schedule:
//
//	VARVE_SOAK=1 go test -count=1 -timeout 30m -run '^TestExactlyOnceProduce$' -v ./integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/integration/checker"
)

// TestExactlyOnceProduce is row 7 (see the file's comment).
func TestExactlyOnceProduce(t *testing.T) {
	rng, seed := testSeed(t, 7)
	sends, burst := 24_000, 4
	if os.Getenv("VARVE_SOAK") == "1" {
		sends, burst = 100_000, 2 // a slower pace: 20 leader changes fit in
	}
	leaderChanges := rounds(t, 3)
	const (
		topic      = "exactly-once"
		partitions = 3
		producers  = 4
	)
	c := reliabilityCluster(t, seed)
	createReplicated(t, c, topic, partitions, 3)
	h := checker.New()
	start := time.Now()
	fault := func(format string, args ...any) {
		msg := fmt.Sprintf("+%.1fs ", time.Since(start).Seconds()) + fmt.Sprintf(format, args...)
		t.Log("fault " + msg)
		h.Note("%s", msg)
	}
	t.Logf("%d sends by %d idempotent producers, %d leader changes", sends, producers, leaderChanges)

	ledger := newProduceLedger()
	if md, err := c.Admin(t).Metadata(testContext(t, 10*time.Second), topic); err == nil {
		ledger.nameTopic(topic, md.Topics[topic].ID)
	}
	proxies := make([]*kafkaProxy, c.Size())
	byAddr := map[string]*kafkaProxy{}
	for i := range c.Size() {
		p, err := newKafkaProxy(c.ID(i), c.BrokerAddr(i), seed+uint64(i), ledger, fault)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		proxies[i] = p
		byAddr[c.BrokerAddr(i)] = p
	}
	// Every client connection goes through the proxy of the broker it is
	// for: the seeds and the addresses Metadata advertises alike.
	var d net.Dialer
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		if p, ok := byAddr[host]; ok {
			host = p.Addr()
		}
		return d.DialContext(ctx, network, host)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Addrs()...), kgo.Dialer(dial), kgo.MetadataMinAge(200 * time.Millisecond),
		// A lost response costs the client 3 s (the produce timeout plus
		// the overhead, its read deadline) before it retries.
		kgo.ProduceRequestTimeout(2 * time.Second), kgo.RequestTimeoutOverhead(time.Second)}

	// Idempotent producers with kgo's defaults otherwise: unlimited
	// retries, no delivery timeout, so no record is ever failed and
	// renumbered.
	var ps []*checker.Producer
	for range producers {
		ps = append(ps, h.NewProducer(newClient(t, opts...), true))
	}
	direct, err := h.NewConsumer("direct", "", append(opts, kgo.ConsumeTopics(topic), kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	readCtx, stopRead := context.WithCancel(context.Background())
	var reading sync.WaitGroup
	reading.Go(func() { direct.Run(readCtx, 200*time.Millisecond) })
	var closeDirect sync.Once
	stopDirect := func() {
		closeDirect.Do(func() {
			stopRead()
			reading.Wait()
			direct.Client().Close()
		})
	}
	t.Cleanup(stopDirect)

	// The load: each producer sends its share in bursts, keyed over 16
	// keys (so over every partition), at a steady pace the cluster keeps
	// up with.
	var sent atomic.Int64
	var loading sync.WaitGroup
	per := sends / producers
	for _, p := range ps {
		loading.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for n := 0; n < per; {
				for b := 0; b < burst && n < per; b, n = b+1, n+1 {
					p.Send(context.Background(), topic, -1, fmt.Appendf(nil, "k%d", n%16))
					sent.Add(1)
				}
				<-tick.C
			}
		})
	}
	loaded := make(chan struct{})
	go func() { loading.Wait(); close(loaded) }()
	done := func() bool {
		select {
		case <-loaded:
			return true
		default:
			return false
		}
	}
	waitAcked := func(n int) {
		t.Helper()
		want := h.Counts().OK + n
		eventually(t, 60*time.Second, fmt.Sprintf("%d more acknowledged writes", n), func() bool {
			return h.Counts().OK >= want || done()
		})
	}
	waitAcked(500)

	// The schedule: a fault armed on a random proxy every 100-400 ms,
	// every client connection of a broker cut now and then, and the
	// leader changes spread over the sends.
	kinds := []kfault{kfaultCutRequest, kfaultLoseResponse, kfaultResetAfter}
	round := 0
	for !done() {
		if round < leaderChanges && sent.Load() >= int64(sends*(round+1)/(leaderChanges+1)) {
			exactlyOnceLeaderChange(t, c, proxies, ledger, rng, fault, round, topic, partitions)
			round++
			waitAcked(200)
			continue
		}
		time.Sleep(time.Duration(100+rng.IntN(301)) * time.Millisecond)
		i := rng.IntN(c.Size())
		if rng.IntN(12) == 0 {
			fault("cut every client connection to broker %d: %d reset", c.ID(i), proxies[i].CutAll())
			continue
		}
		k := kinds[rng.IntN(len(kinds))]
		if c.Broker(i) != nil && proxies[i].Armed() < 2 {
			fault("arm broker %d's proxy: %s of its next produce request", c.ID(i), k)
			proxies[i].Arm(k)
		}
	}
	fault("heal: every broker up, nothing armed; %d sends issued, %d of %d leader changes done", sent.Load(), round, leaderChanges)
	for _, p := range proxies {
		for p.Armed() > 0 {
			p.fault() // disarm what no request took
		}
	}

	const bound = 60 * time.Second
	for _, p := range ps {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		began := time.Now()
		err := p.Flush(ctx)
		cancel()
		l := checker.Liveness{What: "producer " + p.Name() + " flushed", Bound: bound, Took: time.Since(began), OK: err == nil}
		if err != nil {
			l.Detail = err.Error()
		}
		h.AddLiveness(l)
	}
	stopDirect()
	for _, p := range ps {
		p.Client().Close()
	}
	sum := ledger.summary()
	for _, p := range proxies {
		p.Close()
	}
	if err := h.Drain(context.Background(), c.BrokerAddr(rng.IntN(c.Size())), []string{topic}, bound); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, c, topic, partitions)
	dirs := make([][]checker.Replica, partitions)
	for p := range int32(partitions) {
		for i := range c.Size() {
			dirs[p] = append(dirs[p], checker.Replica{Name: fmt.Sprintf("broker-%d", c.ID(i)), Dir: c.Broker(i).PartitionDir(topic, p)})
		}
	}
	c.stopAll()
	for p := range int32(partitions) {
		for i := range dirs[p] {
			dirs[p][i].FS = c.FS(i)
		}
		h.ReadReplicas(topic, p, dirs[p])
	}
	rep := h.Check()
	t.Logf("proxies: %v", sum)
	t.Logf("counts for RELIABILITY.md: %s; %s; took %v", rep.Counts(), h.Counts(), time.Since(start).Round(time.Second))
	for _, s := range sum.twice {
		t.Errorf("a batch written twice: %s", s)
	}
	// The faults must have done what they are for, or the test proved
	// nothing about retries.
	if sum.cuts == 0 {
		t.Errorf("no produce request was cut mid-request")
	}
	if sum.lostWrites == 0 {
		t.Errorf("no response to a written batch was lost")
	}
	if sum.dedup == 0 {
		t.Errorf("no retry of a written batch was answered with its original offset")
	}
	if sum.dedupElsewhere == 0 {
		t.Errorf("no retry of a written batch reached a new leader and was deduplicated there")
	}
	if n := h.Counts(); n.Writes != sends {
		t.Errorf("%d writes in the history, %d sent", n.Writes, sends)
	}
	rep.Require(t, "a", "b", "c", "d", "e", "f", "h", "r")
}

// exactlyOnceLeaderChange holds every produce response of a partition's
// leader until it has written batches whose answers were lost, then kills
// it (even rounds) or stops it gracefully, which hands its leadership off
// (odd rounds), so the client retries those batches at the new leader;
// then starts it again.
func exactlyOnceLeaderChange(t *testing.T, c *Cluster, proxies []*kafkaProxy, ledger *produceLedger, rng *rand.Rand,
	fault func(string, ...any), round int, topic string, partitions int32) {
	t.Helper()
	p := int32(rng.IntN(int(partitions)))
	victim := readyLeaderAmong(t, c, topic, p, others(c, -1))
	id := c.ID(victim)
	before := ledger.lostWritesBy(id)
	fault("round %d: hold every produce response of broker %d, the leader of %s-%d", round, id, topic, p)
	proxies[victim].Hold(true)
	held := time.Now()
	minHold := time.Duration(300+rng.IntN(500)) * time.Millisecond
	for time.Since(held) < minHold || ledger.lostWritesBy(id) == before {
		if time.Since(held) > 15*time.Second {
			fault("round %d: broker %d wrote nothing in 15 s of held responses", round, id)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lost := ledger.lostWritesBy(id) - before
	if round%2 == 0 {
		fault("round %d: kill broker %d (%d written batches' answers lost)", round, id, lost)
		c.Kill(victim)
	} else {
		fault("round %d: stop broker %d gracefully, handing leadership off (%d written batches' answers lost)", round, id, lost)
		c.Stop(victim)
	}
	proxies[victim].Hold(false)
	now := readyLeaderAmong(t, c, topic, p, others(c, victim))
	fault("round %d: broker %d leads %s-%d", round, c.ID(now), topic, p)
	time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
	fault("round %d: start broker %d", round, id)
	c.Start(victim)
}
