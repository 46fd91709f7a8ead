package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/integration/checker"
)

// The workload of the compose subtests: one idempotent producer writing
// to every partition in turn, one direct consumer reading from the start,
// and a watcher that asks every broker for the topic's leaders ten times a
// second. The producer and consumer are the checker's, so every write, ack
// and poll is in the history the subtest checks at the end.

const (
	// composePartitions and composeRF shape each subtest's topic.
	composePartitions = 6
	composeRF         = 3
	// composeSendEvery paces the producer: one record to the next
	// partition every 4 ms, 250 records/s over the topic (~40 per
	// partition per second), enough that a stall of one partition
	// shows within tens of milliseconds, light enough for two cores.
	composeSendEvery = 4 * time.Millisecond
	// composeWatchEvery is the watcher's sampling period.
	composeWatchEvery = 100 * time.Millisecond
	// composeLeaderlessMax is issue 7's bound on how long a partition may
	// be without a leader during a rolling restart.
	composeLeaderlessMax = 5 * time.Second
)

// composeLoad is a running workload on one topic.
type composeLoad struct {
	t          *testing.T
	topic      string
	partitions int32
	h          *checker.History
	prod       *checker.Producer
	cons       *checker.Consumer
	watch      *composeWatch
	admin      *kgo.Client

	stopProduce, stopConsume, stopWatch context.CancelFunc
	produced, consumed, watched         chan struct{}
}

// startComposeLoad creates topic (6 partitions, RF 3), waits for its
// leaders, and starts the producer, the consumer and the watcher.
func startComposeLoad(t *testing.T, topic string) *composeLoad {
	t.Helper()
	seeds := composeSeeds()
	admin := composeClient(t, seeds)
	resp, err := kadm.NewClient(admin).CreateTopic(testContext(t, 30*time.Second), composePartitions, composeRF, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s (%d partitions, RF %d): %v", topic, composePartitions, composeRF, err)
	}
	// CreateTopics answers once the metadata has the topic; its
	// partitions' Raft groups elect leaders moments later.
	composeWaitLeaders(t, admin, topic, composePartitions, 30*time.Second)

	l := &composeLoad{t: t, topic: topic, partitions: composePartitions, h: checker.New(), admin: admin,
		produced: make(chan struct{}), consumed: make(chan struct{}), watched: make(chan struct{})}
	l.h.Note("compose topic %s: %d partitions, RF %d; one record every %v to the next partition", topic, composePartitions, composeRF, composeSendEvery)
	// A client that notices a leader change at once: kgo waits its
	// metadata min age (5 s by default) between refreshes, which would
	// show up as leaderless time that is the client's, not the cluster's.
	//
	// AlwaysRetryEOF: the host reaches each broker through docker's
	// userland proxy, which accepts a connection even while the broker
	// behind it is down (killed, starting) and then closes it at once.
	// kgo takes an EOF on a connection's first read for a TLS or SASL
	// misconfiguration and fails the records without retrying; this
	// configuration is known to be right, so such an EOF is what it looks
	// like from behind a proxy: the broker is not there yet.
	fast := []kgo.Opt{kgo.MetadataMinAge(250 * time.Millisecond), kgo.RetryBackoffFn(func(n int) time.Duration {
		return min(time.Duration(n)*100*time.Millisecond, time.Second)
	}), kgo.AlwaysRetryEOF()}
	if f := os.Getenv("VARVE_COMPOSE_KGOLOG"); f != "" {
		lf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lf.Close() })
		fast = append(fast, kgo.WithLogger(kgo.BasicLogger(lf, kgo.LogLevelDebug, func() string { return time.Now().Format("15:04:05.000 ") })))
	}
	prodCl := composeClient(t, seeds, append(fast,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// Idempotent (kgo's default) with acks=all; nothing may fail
		// within a subtest's faults, so the delivery timeout is generous.
		kgo.RecordDeliveryTimeout(3*time.Minute),
		// A request to a broker that stopped answering (paused, cut off)
		// is given up after 5 s and retried elsewhere, rather than kgo's
		// 10 s + 10 s: the retry of an indeterminate send is what check
		// (d) is about.
		kgo.ProduceRequestTimeout(3*time.Second), kgo.RequestTimeoutOverhead(2*time.Second))...)
	l.prod = l.h.NewProducer(prodCl, true)
	cons, err := l.h.NewConsumer("c1", "", append(fast, kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.FetchMaxWait(250*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	l.cons = cons
	t.Cleanup(cons.Client().Close)
	l.watch = newComposeWatch(t, topic, composePartitions)

	pctx, stopProduce := context.WithCancel(context.Background())
	cctx, stopConsume := context.WithCancel(context.Background())
	wctx, stopWatch := context.WithCancel(context.Background())
	l.stopProduce, l.stopConsume, l.stopWatch = stopProduce, stopConsume, stopWatch
	go func() {
		defer close(l.produced)
		tick := time.NewTicker(composeSendEvery)
		defer tick.Stop()
		// Records are not canceled with the load: stopping it must not
		// fail what is buffered (see finish).
		rctx := context.WithoutCancel(pctx)
		for n := 0; pctx.Err() == nil; n++ {
			p := int32(n % composePartitions)
			l.prod.Send(rctx, topic, p, fmt.Appendf(nil, "k%d", n%97))
			select {
			case <-pctx.Done():
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer close(l.consumed)
		l.cons.Run(cctx, 0)
	}()
	go func() {
		defer close(l.watched)
		l.watch.run(wctx)
	}()
	t.Cleanup(l.halt)
	return l
}

// halt stops the goroutines without checking anything (a failed subtest).
func (l *composeLoad) halt() {
	l.stopProduce()
	l.stopWatch()
	l.stopConsume()
	<-l.produced
	<-l.watched
	<-l.consumed
}

// waitAcked waits until n more writes than now have been acknowledged on
// each of partitions (every partition when none are named).
func (l *composeLoad) waitAcked(n int, within time.Duration, partitions ...int32) {
	l.t.Helper()
	if len(partitions) == 0 {
		for p := range l.partitions {
			partitions = append(partitions, p)
		}
	}
	base := l.ackedPer()
	start := time.Now()
	for {
		now := l.ackedPer()
		var behind []string
		for _, p := range partitions {
			if got := now[p] - base[p]; got < n {
				behind = append(behind, fmt.Sprintf("%d:%d", p, got))
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Since(start) > within {
			l.t.Fatalf("within %v, fewer than %d new acknowledgements on partitions (partition:acks) %s; %v",
				within, n, strings.Join(behind, " "), l.h.Counts())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ackedPer counts the producer's acknowledged writes per partition.
func (l *composeLoad) ackedPer() map[int32]int {
	out := map[int32]int{}
	for _, w := range l.h.Writes() {
		if w.Producer == l.prod.Name() && w.Outcome == checker.OK {
			out[w.AckPartition]++
		}
	}
	return out
}

// polledSince is how many records the consumer received since at.
func (l *composeLoad) polledSince(at time.Time) int {
	n := 0
	for _, p := range l.h.Polls() {
		if p.At.After(at) {
			n++
		}
	}
	return n
}

// finish stops the load (the producer first, waiting for every write to
// complete, then the watcher and the consumer), requires that every write
// of the idempotent producer was acknowledged, drains the topic from
// offset 0 through seed (after the final heal: check (h)), and runs the
// checker. It returns the report.
func (l *composeLoad) finish(seed string) *checker.Report {
	l.t.Helper()
	l.stopProduce()
	<-l.produced
	if err := l.prod.Flush(testContext(l.t, 4*time.Minute)); err != nil {
		l.t.Fatalf("flush the producer: %v (%v)", err, l.h.Counts())
	}
	// Let the consumer read to the end before it stops: its polls then
	// cover the whole log (check (e) sees every offset).
	ends := l.ackedPer()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[int32]int{}
		for _, p := range l.h.Polls() {
			got[p.Partition]++
		}
		done := true
		for p, n := range ends {
			if got[p] < n {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.stopWatch()
	<-l.watched
	l.stopConsume()
	<-l.consumed
	l.cons.Close(testContext(l.t, 10*time.Second))

	var bad []string
	for _, w := range l.h.Writes() {
		if w.Producer == l.prod.Name() && w.Outcome != checker.OK {
			bad = append(bad, fmt.Sprintf("%s to partition %d: %v %s", w.Value, w.Partition, w.Outcome, w.Err))
		}
	}
	if len(bad) > 0 {
		l.t.Errorf("%d writes of the idempotent producer (3 min delivery timeout) were not acknowledged; first: %s",
			len(bad), strings.Join(bad[:min(len(bad), 5)], "; "))
	}
	if errs := l.cons.FetchErrors(); len(errs) > 0 {
		l.t.Logf("the consumer's fetch errors (retried): %v", errs)
	}
	if err := l.h.Drain(testContext(l.t, 2*time.Minute), seed, []string{l.topic}, 90*time.Second); err != nil {
		l.t.Fatal(err)
	}
	r := l.h.Check()
	r.Require(l.t, "a", "b", "c", "d", "e", "f", "h")
	return r
}

// composeWatch asks every broker, every composeWatchEvery, for the leaders
// of the topic's partitions. A partition has a live leader in a sample
// when some broker answered and named itself its leader: a client that
// asks that broker is sent to it and it takes the write. Anything else (the
// leader named is down or not answering, no leader named, the named leader
// denies it) is leaderless time from a client's side.
type composeWatch struct {
	t          *testing.T
	topic      string
	partitions int32
	cl         *kgo.Client

	mu      sync.Mutex
	samples []composeSample
}

// composeSample is one round of Metadata requests.
type composeSample struct {
	at   time.Time
	live []int32           // per partition: a broker that answered and named itself leader, -1 none
	view map[int32][]int32 // per broker that answered: the leader it names per partition
}

func newComposeWatch(t *testing.T, topic string, partitions int32) *composeWatch {
	// RequestTimeoutOverhead bounds a request to a paused broker, whose
	// kernel still accepts the connection.
	cl := composeClient(t, composeSeeds(), kgo.RequestTimeoutOverhead(time.Second), kgo.DialTimeout(time.Second))
	// Learn the brokers' ids and addresses once; requests then go to each
	// broker by id (cl.Broker).
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(testContext(t, 30*time.Second), cl); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	return &composeWatch{t: t, topic: topic, partitions: partitions, cl: cl}
}

func (w *composeWatch) run(ctx context.Context) {
	for ctx.Err() == nil {
		at := time.Now()
		s := composeSample{at: at, live: slices.Repeat([]int32{-1}, int(w.partitions)), view: map[int32][]int32{}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, id := range composeBrokers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
				defer cancel()
				req := kmsg.NewPtrMetadataRequest()
				rt := kmsg.NewMetadataRequestTopic()
				rt.Topic = kmsg.StringPtr(w.topic)
				req.Topics = append(req.Topics, rt)
				resp, err := w.cl.Broker(int(id)).Request(rctx, req)
				if err != nil {
					return
				}
				mr := resp.(*kmsg.MetadataResponse)
				if len(mr.Topics) != 1 || mr.Topics[0].ErrorCode != 0 {
					return
				}
				leaders := slices.Repeat([]int32{-1}, int(w.partitions))
				for _, p := range mr.Topics[0].Partitions {
					if p.Partition >= 0 && p.Partition < w.partitions && p.ErrorCode == 0 {
						leaders[p.Partition] = p.Leader
					}
				}
				mu.Lock()
				defer mu.Unlock()
				s.view[id] = leaders
				for p, l := range leaders {
					if l == id {
						s.live[p] = id
					}
				}
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.samples = append(w.samples, s)
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(at.Add(composeWatchEvery))):
		}
	}
}

// waitLive waits until, in a sample taken after since, every partition in
// ps has a live leader other than not, and returns that sample.
func (w *composeWatch) waitLive(since time.Time, not int32, ps []int32, within time.Duration) composeSample {
	w.t.Helper()
	deadline := time.Now().Add(within)
	for {
		w.mu.Lock()
		var last composeSample
		if n := len(w.samples); n > 0 {
			last = w.samples[n-1]
		}
		w.mu.Unlock()
		if last.at.After(since) {
			ok := true
			for _, p := range ps {
				if l := last.live[p]; l < 0 || l == not {
					ok = false
				}
			}
			if ok {
				return last
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("within %v, partitions %v have no live leader other than broker %d; last sample at %v: live %v, views %v",
				within, ps, not, last.at.Format(time.StampMilli), last.live, last.view)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// composeGap is one stretch of one partition without a live leader.
type composeGap struct {
	partition int32
	from, to  time.Time // the last sample with a live leader, the next one
}

func (g composeGap) length() time.Duration { return g.to.Sub(g.from) }

// leaderless lists every stretch without a live leader in [from, to]. A
// stretch is measured from the last sample that had a live leader to the
// first that has one again, so it errs long by up to a sampling period; one
// still open at to ends there.
func (w *composeWatch) leaderless(from, to time.Time) []composeGap {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gaps []composeGap
	for p := range w.partitions {
		lastLive := from
		down := false
		for _, s := range w.samples {
			if s.at.Before(from) {
				if s.live[p] >= 0 {
					lastLive = s.at
				}
				continue
			}
			if s.at.After(to) {
				break
			}
			switch {
			case s.live[p] < 0:
				down = true
			case down:
				gaps = append(gaps, composeGap{p, lastLive, s.at})
				down = false
				lastLive = s.at
			default:
				lastLive = s.at
			}
		}
		if down {
			gaps = append(gaps, composeGap{p, lastLive, to})
		}
	}
	return gaps
}

// sampleCount is how many samples fell in [from, to].
func (w *composeWatch) sampleCount(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.samples {
		if !s.at.Before(from) && !s.at.After(to) {
			n++
		}
	}
	return n
}

// ackGaps is, per partition, the longest time in [from, to] between two
// consecutive acknowledgements of the producer (the stretch around from
// and to included): how long a producer writing steadily to that
// partition could not get a write acknowledged.
func (l *composeLoad) ackGaps(from, to time.Time) map[int32]time.Duration {
	acks := map[int32][]time.Time{}
	for _, w := range l.h.Writes() {
		if w.Producer == l.prod.Name() && w.Outcome == checker.OK {
			acks[w.AckPartition] = append(acks[w.AckPartition], w.CompletedAt)
		}
	}
	out := map[int32]time.Duration{}
	for p := range l.partitions {
		ts := acks[p]
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		prev := time.Time{}
		for _, at := range ts {
			if !prev.IsZero() && at.After(from) && prev.Before(to) {
				out[p] = max(out[p], at.Sub(prev))
			}
			prev = at
		}
		if !prev.IsZero() && prev.Before(to) {
			out[p] = max(out[p], to.Sub(prev)) // no ack since: still stalled
		}
	}
	return out
}

// composeDist is the max and median of ds ("n/a" when empty).
func composeDist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("max %v p50 %v (n=%d)", s[len(s)-1].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), len(s))
}

// composeMaxGaps is the longest leaderless stretch per partition.
func composeMaxGaps(gaps []composeGap) map[int32]time.Duration {
	out := map[int32]time.Duration{}
	for _, g := range gaps {
		out[g.partition] = max(out[g.partition], g.length())
	}
	return out
}

// composeValues are the values of m.
func composeValues(m map[int32]time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(m))
	for _, d := range m {
		out = append(out, d)
	}
	return out
}
