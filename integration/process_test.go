//go:build linux

package integration

// Process-level fault tests (TESTPLAN tier T2): three real varve broker
// processes on 127.0.0.1 (the binary built once per test run), a TCP
// proxy on every directed Raft link (blackhole, delay, cut), and kill -9,
// SIGSTOP/SIGCONT and SIGTERM by pid (procs.go, proxy.go). Rows 1, 2, 4,
// 6, 10 and 17 of the plan.
//
// Every test runs the same kind of workload through the history checker
// (integration/checker): idempotent producers writing globally unique
// values, a direct consumer reading everything, group members where the
// row is about groups, every invocation and completion logged. At the end
// (procWorkload.finish) the load stops, every group's lag must reach 0 and
// every partition must be drained from offset 0 within a bound, the
// brokers get SIGTERM, every replica's segment files are read offline,
// and the checker holds the history to checks (a)-(h) and row 8.
//
// Besides kill -9, SIGSTOP and SIGTERM, the proxies blackhole a broker's
// links (row 4) and reset them (row 1, between kills); the soak variants
// also delay every link by a random 0-20 ms (rows 1 and 2).
//
// The default runs are short (fixed seed 1, a few faults each); the long,
// randomized variants run with:
//
//	VARVE_SOAK=1 go test -count=1 -timeout 90m -run 'TestProc' -v ./integration/
//
// VARVE_SEED=<n> replays a schedule, VARVE_SEED=random draws one; the seed
// is always logged, and the fault schedule is in the test log and the
// checker's report. A failing test prints the last lines of every
// broker's log.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/integration/checker"
)

// procChecks are the checks a process test without consumer groups must
// have examined something in; procGroupChecks adds (g).
var (
	procChecks      = []string{"a", "b", "c", "d", "e", "f", "h", "r"}
	procGroupChecks = []string{"a", "b", "c", "d", "e", "f", "g", "h", "r"}
)

// TestProcLeaderKill is row 1: under a steady load, the leader of a
// partition picked at random is killed with kill -9 (the first time once
// the load runs, then every 10-20 s) and restarted 1-4 s later. The others agree on a new leader with a
// higher epoch while it is down; all checks hold.
func TestProcLeaderKill(t *testing.T) {
	rng := procRand(t)
	const topic, partitions = "leader-kill", 3
	rounds := 2
	if procSoak() {
		rounds = 20
	}
	c := newProcs(t, topic, partitions)
	w := startProcWorkload(t, c, topic, partitions, 1000)
	soakDelays(w, rng)
	for round := range rounds {
		if round > 0 {
			time.Sleep(between(rng, 10*time.Second, 20*time.Second))
		}
		p := int32(rng.IntN(partitions))
		leaders := waitProcLeaders(t, c, topic, partitions, nil, 30*time.Second)
		victim := c.Slot(leaders[p])
		epoch := procEpoch(t, c, topic, p, (victim+1)%3)
		w.fault("round %d: kill -9 broker %d (pid %d), the leader of %s-%d at epoch %d", round, c.ID(victim), c.PID(victim), topic, p, epoch)
		killed := time.Now()
		c.Kill(victim)
		after := waitProcLeaders(t, c, topic, partitions, []int{victim}, 30*time.Second)
		newEpoch := procEpoch(t, c, topic, p, c.Slot(after[p]))
		w.fault("round %d: the others agree on leaders %v (%s-%d at epoch %d) %v after the kill",
			round, after, topic, p, newEpoch, time.Since(killed).Round(time.Millisecond))
		if newEpoch <= epoch {
			t.Errorf("round %d: %s-%d's new leader %d has epoch %d, the killed one had %d", round, topic, p, after[p], newEpoch, epoch)
		}
		w.waitProgress(300, 60*time.Second) // writes go on while it is down
		time.Sleep(between(rng, time.Second, 4*time.Second))
		w.fault("round %d: start broker %d", round, c.ID(victim))
		c.Start(victim)
		c.WaitReady(victim, 60*time.Second)
		// And a lesser fault: every raft connection of a broker reset.
		x := rng.IntN(c.Size())
		n := c.CutPeers(x)
		w.fault("round %d: reset (RST) the %d raft connections to and from broker %d", round, n, c.ID(x))
		w.waitProgress(300, 60*time.Second)
	}
	w.finish().Require(t, procChecks...)
}

// TestProcKillAllBrokers is row 2: every broker is killed with kill -9 at
// once in the middle of a steady load, then all are restarted; three
// rounds. Not one acknowledged write is lost; all checks hold.
func TestProcKillAllBrokers(t *testing.T) {
	rng := procRand(t)
	const topic, partitions = "kill-all", 3
	rounds := 3
	if procSoak() {
		rounds = 25
	}
	c := newProcs(t, topic, partitions)
	w := startProcWorkload(t, c, topic, partitions, 1000)
	soakDelays(w, rng)
	for round := range rounds {
		w.waitProgress(500+rng.IntN(2500), 90*time.Second)
		w.fault("round %d: kill -9 every broker at once (%d writes acknowledged so far)", round, w.h.Counts().OK)
		c.KillAll()
		time.Sleep(between(rng, 200*time.Millisecond, 2*time.Second))
		restart := time.Now()
		for i := range c.Size() {
			c.Start(i)
		}
		for i := range c.Size() {
			c.WaitReady(i, 90*time.Second)
		}
		waitProcLeaders(t, c, topic, partitions, nil, 60*time.Second)
		w.fault("round %d: all three restarted, ready and agreeing on leaders in %v", round, time.Since(restart).Round(time.Millisecond))
	}
	w.waitProgress(500, 90*time.Second)
	w.finish().Require(t, procChecks...)
}

// TestProcIsolatedLeader is row 4: the leader of a partition is cut off
// from its peers (every Raft link to and from it blackholed in the
// proxies) but not from its clients. A producer that can reach only it
// gets no acknowledgement for anything sent after the cut, the other two
// agree on a leader with a higher epoch, and the main workload carries on.
// After healing nothing sent only to the old leader is in any replica, and
// all checks hold.
func TestProcIsolatedLeader(t *testing.T) {
	const topic, partitions = "isolated", 3
	const p = 0
	c := newProcs(t, topic, partitions)
	// Balancing must not move the leader during the test.
	old, oldEpoch := waitProcPreferredLeader(t, c, topic, p)
	w := startProcWorkload(t, c, topic, partitions, 500)

	// Confined to the old leader, which it reaches before the cut too:
	// those writes must succeed, so the producer is known to work.
	staleCl := newClient(t, append(confinedTo(c.KafkaAddr(old)),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(3*time.Second),
		kgo.ProduceRequestTimeout(time.Second),
		kgo.RequestTimeoutOverhead(500*time.Millisecond),
		kgo.RetryTimeout(3*time.Second))...)
	stale := w.h.NewProducer(staleCl, true)
	for range 10 {
		if r := stale.SendSync(testContext(t, 30*time.Second), topic, p, nil); r.Outcome != checker.OK {
			t.Fatalf("before the cut, the old leader did not acknowledge %s: %v %s", r.Value, r.Outcome, r.Err)
		}
	}

	w.fault("blackhole every raft link of broker %d, the leader of %s-%d at epoch %d", c.ID(old), topic, p, oldEpoch)
	c.IsolatePeers(old, true)
	cut := time.Now()
	cutAt := len(w.h.Writes())
	ctx, stop := context.WithCancel(context.Background())
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		for ctx.Err() == nil {
			stale.Send(context.Background(), topic, p, nil)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	now := waitProcLeaders(t, c, topic, partitions, []int{old}, 30*time.Second)
	epoch := procEpoch(t, c, topic, p, c.Slot(now[p]))
	w.fault("brokers %d and %d agree on leader %d of %s-%d at epoch %d, %v after the cut",
		c.ID((old+1)%3), c.ID((old+2)%3), now[p], topic, p, epoch, time.Since(cut).Round(time.Millisecond))
	if epoch <= oldEpoch {
		t.Errorf("the new leader's epoch %d is not above the isolated leader's %d", epoch, oldEpoch)
	}
	w.waitProgress(300, 60*time.Second) // the majority side takes writes
	time.Sleep(2 * time.Second)
	stop()
	<-sending
	// Every write to the isolated leader completes (fails) before the
	// heal: afterwards balancing may hand it leadership back, and it could
	// then rightly acknowledge a retry.
	if err := stale.Flush(testContext(t, 30*time.Second)); err != nil {
		t.Fatalf("the isolated leader's producer did not finish: %v", err)
	}
	staleCl.Close()
	var sentAfter []string
	acked := 0
	errs := map[string]int{}
	for _, wr := range w.h.Writes()[cutAt:] {
		if wr.Producer != stale.Name() {
			continue
		}
		sentAfter = append(sentAfter, wr.Value)
		if wr.Outcome == checker.OK {
			acked++
			t.Errorf("the isolated leader acknowledged %s at %s-%d@%d, sent after the cut", wr.Value, wr.Topic, wr.AckPartition, wr.AckOffset)
		} else {
			errs[wr.Err]++
		}
	}
	if len(sentAfter) == 0 {
		t.Fatal("nothing was sent to the isolated leader")
	}
	w.fault("heal broker %d; it acknowledged %d of the %d writes sent to it after the cut (errors: %v)", c.ID(old), acked, len(sentAfter), errs)
	c.IsolatePeers(old, false)
	w.waitProgress(300, 60*time.Second)
	rep := w.finish()
	for _, v := range sentAfter {
		if at := w.inReplicas(v); at != "" {
			t.Errorf("%s, sent only to the isolated leader after the cut, is in a replica: %s", v, at)
		}
	}
	rep.Require(t, procChecks...)
}

// TestProcPausedLeader is row 6: the leader of a partition is stopped
// with SIGSTOP for longer than the election timeout (2 s), then resumed
// with SIGCONT; it still believes it leads until it hears otherwise. A
// producer and a consumer that can reach only that broker run throughout:
// their requests wait in its sockets while it is stopped and are answered
// when it resumes. The main workload and its consumer run on the whole
// cluster. No consumer may read anything at an offset other than what the
// final log holds there (no stale read past the commit), offsets only move
// forward, nothing is duplicated: all checks hold.
func TestProcPausedLeader(t *testing.T) {
	rng := procRand(t)
	const topic, partitions = "paused", 3
	rounds, lo, hi := 1, 5*time.Second, 5*time.Second+time.Millisecond
	if procSoak() {
		rounds, lo, hi = 8, 3*time.Second, 12*time.Second
	}
	c := newProcs(t, topic, partitions)
	w := startProcWorkload(t, c, topic, partitions, 1000)
	for round := range rounds {
		p := int32(rng.IntN(partitions))
		leaders := waitProcLeaders(t, c, topic, partitions, nil, 60*time.Second)
		victim := c.Slot(leaders[p])
		epoch := procEpoch(t, c, topic, p, victim)
		pause := between(rng, lo, hi)
		// Its records must outlive the pause: the point is what the
		// resumed broker answers to what waited in its sockets.
		staleCl := newClient(t, append(confinedTo(c.KafkaAddr(victim)),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordDeliveryTimeout(pause+3*time.Second))...)
		stale := w.h.NewProducer(staleCl, true)
		reader := w.addConsumer(fmt.Sprintf("reader-of-broker-%d-round-%d", c.ID(victim), round), "",
			append(confinedTo(c.KafkaAddr(victim)), kgo.FetchMaxWait(200*time.Millisecond),
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().AtStart()}}))...)
		ctx, stop := context.WithCancel(context.Background())
		sending := make(chan struct{})
		go func() {
			defer close(sending)
			for ctx.Err() == nil {
				stale.Send(context.Background(), topic, p, nil)
				time.Sleep(20 * time.Millisecond)
			}
		}()
		w.waitPolls(reader.Name(), 1, 30*time.Second)

		w.fault("round %d: SIGSTOP broker %d (pid %d), the leader of %s-%d at epoch %d, for %v", round, c.ID(victim), c.PID(victim), topic, p, epoch, pause.Round(time.Millisecond))
		c.Pause(victim)
		paused := time.Now()
		after := waitProcLeaders(t, c, topic, partitions, []int{victim}, 30*time.Second)
		w.fault("round %d: the others agree on leaders %v (%s-%d at epoch %d) %v after the SIGSTOP",
			round, after, topic, p, procEpoch(t, c, topic, p, c.Slot(after[p])), time.Since(paused).Round(time.Millisecond))
		if left := pause - time.Since(paused); left > 0 {
			time.Sleep(left)
		}
		c.Resume(victim)
		resumed := time.Now()
		w.fault("round %d: SIGCONT broker %d after %v", round, c.ID(victim), time.Since(paused).Round(time.Millisecond))
		w.waitProgress(300, 60*time.Second)
		c.WaitReady(victim, 60*time.Second)
		time.Sleep(time.Second) // its own clients' queued requests are answered
		stop()
		<-sending
		if err := stale.Flush(testContext(t, 60*time.Second)); err != nil {
			t.Fatalf("flush the producer confined to broker %d: %v", c.ID(victim), err)
		}
		staleCl.Close()
		reader.halt()
		sent, ok, okAfter := 0, 0, 0
		for _, wr := range w.h.Writes() {
			if wr.Producer == stale.Name() {
				sent++
				if wr.Outcome == checker.OK {
					ok++
					if wr.CompletedAt.After(resumed) {
						okAfter++
					}
				}
			}
		}
		read := 0
		for _, p := range w.h.Polls() {
			if p.Consumer == reader.Name() {
				read++
			}
		}
		w.fault("round %d: broker %d's own producer: %d sent, %d acknowledged (%d after the SIGCONT); its own reader read %d records, fetch errors %v",
			round, c.ID(victim), sent, ok, okAfter, read, reader.FetchErrors())
	}
	w.waitProgress(300, 60*time.Second)
	w.finish().Require(t, procChecks...)
}

// TestProcRollingRestart is row 17: under a steady load each broker in
// turn gets SIGTERM, exits 0, and is started again once the others lead
// everything; the next goes once it is back in every partition's ISR.
// SIGTERM hands the leadership of each partition the broker leads to a
// caught-up follower before it exits: when it has exited, the survivors'
// Metadata already names a live leader for every partition. A watcher
// asks the survivors' Metadata every 100 ms; a partition is leaderless
// from the moment its leader gets SIGTERM (or from any sample that names
// no live leader everyone agrees on) until every survivor names a live
// one, and that must stay under 5 s. All checks hold.
func TestProcRollingRestart(t *testing.T) {
	const topic, partitions = "rolling", 3
	rounds := 1
	if procSoak() {
		rounds = 5
	}
	c := newProcs(t, topic, partitions)
	w := startProcWorkload(t, c, topic, partitions, 1000)
	lw := startLeaderWatch(t, c, topic, partitions)
	started := time.Now()
	for round := range rounds {
		for victim := range c.Size() {
			waitFullISR(t, c, topic, partitions, 60*time.Second)
			led := lw.markDown(victim, true)
			logAt := c.LogOffset(victim)
			w.fault("round %d: SIGTERM broker %d (pid %d), leader of %v", round, c.ID(victim), c.PID(victim), led)
			took := c.Terminate(victim, 60*time.Second)
			// Right after the exit, every partition it led must have a
			// survivor naming a live leader: it moved before the exit
			// (the other survivor's copy of the metadata may lag).
			stale := namedOnlyDown(t, c, topic, partitions, victim)
			handoff := handoffLine(c.LogSince(victim, logAt))
			w.fault("round %d: broker %d exited 0 %v after SIGTERM; its log: %q; partitions no survivor names a live leader of at the exit: %v",
				round, c.ID(victim), took.Round(time.Millisecond), handoff, stale)
			if len(stale) > 0 {
				t.Errorf("round %d: broker %d exited before the leadership of %s %v moved; survivors' metadata: %s", round, c.ID(victim), topic, stale, survivorViews(t, c, topic, victim))
			}
			if m := handoffRE.FindStringSubmatch(handoff); m == nil || m[2] != "0" || m[3] != "0" || m[1] != m[4] {
				t.Errorf("round %d: broker %d's handoff did not move everything it led and publish it: %q", round, c.ID(victim), handoff)
			}
			waitProcLeaders(t, c, topic, partitions, []int{victim}, 30*time.Second)
			w.waitProgress(200, 60*time.Second)
			c.Start(victim)
			c.WaitReady(victim, 60*time.Second)
			lw.markDown(victim, false)
			w.fault("round %d: broker %d restarted and ready", round, c.ID(victim))
		}
	}
	waitFullISR(t, c, topic, partitions, 60*time.Second)
	worst := lw.finish()
	gaps := ackGaps(w.h.Writes(), started)
	for p := range int32(partitions) {
		w.fault("%s-%d: longest leaderless time %v (the producer's longest gap between acknowledgements %v)",
			topic, p, worst[p].Round(time.Millisecond), gaps[p].Round(time.Millisecond))
		if worst[p] >= 5*time.Second {
			t.Errorf("%s-%d was leaderless for %v in a rolling restart; the bound is 5 s", topic, p, worst[p])
		}
	}
	t.Logf("%d Metadata samples", lw.samples())
	w.finish().Require(t, procChecks...)
}

// handoffRE reads the broker's summary of its shutdown handoff
// (broker/handoff.go): moved, failed, skipped, published.
var handoffRE = regexp.MustCompile(`msg="leadership handoff finished".* moved=(\d+) failed=(\d+) skipped=(\d+) .*published=(\d+) `)

// handoffLine is the handoff summary in a broker's log ("" if none).
func handoffLine(log string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="leadership handoff finished"`) {
			return l
		}
	}
	return ""
}

// namedOnlyDown lists the partitions for which no running broker other
// than down names a live leader in its Metadata.
func namedOnlyDown(t testing.TB, c *Procs, topic string, partitions int32, down int) []int32 {
	t.Helper()
	ok := map[int32]bool{}
	for i := range c.Size() {
		if i == down || !c.Running(i) {
			continue
		}
		leaders, _, err := Leaders(testContext(t, 5*time.Second), c.KafkaAddr(i), topic)
		if err != nil {
			continue
		}
		for p, l := range leaders {
			if s := c.Slot(l); s >= 0 && s != down && c.Running(s) {
				ok[p] = true
			}
		}
	}
	var out []int32
	for p := range partitions {
		if !ok[p] {
			out = append(out, p)
		}
	}
	return out
}

// survivorViews is what every running broker but down answers Metadata
// for topic with, for failure messages.
func survivorViews(t testing.TB, c *Procs, topic string, down int) string {
	var b strings.Builder
	for i := range c.Size() {
		if i == down || !c.Running(i) {
			continue
		}
		st, err := TopicState(testContext(t, 5*time.Second), c.KafkaAddr(i), topic)
		fmt.Fprintf(&b, "[broker %d: %+v %v] ", c.ID(i), st, err)
	}
	return b.String()
}

// ackGaps is, per partition, the longest time between two consecutive
// acknowledgements completed after from: what the producers saw of
// unavailability (their retry backoff and metadata refresh included).
func ackGaps(writes []checker.Write, from time.Time) map[int32]time.Duration {
	var oks []checker.Write
	for _, wr := range writes {
		if wr.Outcome == checker.OK && !wr.CompletedAt.Before(from) {
			oks = append(oks, wr)
		}
	}
	slices.SortFunc(oks, func(a, b checker.Write) int { return a.CompletedAt.Compare(b.CompletedAt) })
	last := map[int32]time.Time{}
	gaps := map[int32]time.Duration{}
	for _, wr := range oks {
		if prev, ok := last[wr.AckPartition]; ok {
			gaps[wr.AckPartition] = max(gaps[wr.AckPartition], wr.CompletedAt.Sub(prev))
		}
		last[wr.AckPartition] = wr.CompletedAt
	}
	return gaps
}

// soakDelays gives every raft link a random one-way delay of up to 20 ms
// in the soak variants (the default runs keep the links fast).
func soakDelays(w *procWorkload, rng *rand.Rand) {
	if !procSoak() {
		return
	}
	for i := range w.c.Size() {
		for j := range w.c.Size() {
			if i != j {
				d := between(rng, 0, 20*time.Millisecond)
				w.c.Link(i, j).SetDelay(d)
				w.fault("raft link %d->%d delayed by %v", w.c.ID(i), w.c.ID(j), d.Round(time.Microsecond))
			}
		}
	}
}

// procEpoch is partition p's leader epoch in slot i's Metadata.
func procEpoch(t testing.TB, c *Procs, topic string, p int32, i int) int32 {
	t.Helper()
	_, epochs, err := Leaders(testContext(t, 5*time.Second), c.KafkaAddr(i), topic)
	if err != nil {
		t.Fatalf("metadata of %s from broker %d: %v", topic, c.ID(i), err)
	}
	return epochs[p]
}

// waitProcPreferredLeader waits until a partition is led by its preferred
// replica (the first of its replica list), where leader balancing leaves
// it, on every broker's Metadata, and returns that slot and its epoch.
func waitProcPreferredLeader(t testing.TB, c *Procs, topic string, p int32) (int, int32) {
	t.Helper()
	slot, epoch := -1, int32(0)
	eventually(t, 60*time.Second, fmt.Sprintf("%s-%d led by its preferred replica", topic, p), func() bool {
		leaders, why := agreedLeaders(c, topic, p+1, nil)
		if why != "" {
			return false
		}
		st, err := TopicState(testContext(t, 5*time.Second), c.KafkaAddr(0), topic)
		if err != nil || len(st[p].Replicas) == 0 || st[p].Replicas[0] != leaders[p] {
			return false
		}
		slot, epoch = c.Slot(leaders[p]), st[p].Epoch
		return true
	})
	return slot, epoch
}

// waitFullISR waits until every running broker's Metadata has all three
// replicas in every partition's ISR.
func waitFullISR(t testing.TB, c *Procs, topic string, partitions int32, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("every replica of %s in the ISR", topic), func() bool {
		for i := range c.Size() {
			st, err := TopicState(testContext(t, 5*time.Second), c.KafkaAddr(i), topic)
			if err != nil {
				return false
			}
			for p := range partitions {
				if len(st[p].ISR) != c.Size() {
					return false
				}
			}
		}
		return true
	})
}

// leaderWatch samples the survivors' Metadata every 100 ms and measures,
// per partition, the longest time without a live leader every survivor
// agrees on (row 17's unavailability).
type leaderWatch struct {
	c          *Procs
	topic      string
	partitions int32

	mu       sync.Mutex
	down     map[int]bool
	last     map[int32]int32 // last agreed leader (broker id)
	badSince map[int32]time.Time
	worst    map[int32]time.Duration
	n        int
	gen      int // bumped by markDown: a sample taken across it is dropped

	halt, done chan struct{}
}

func startLeaderWatch(t testing.TB, c *Procs, topic string, partitions int32) *leaderWatch {
	w := &leaderWatch{c: c, topic: topic, partitions: partitions, down: map[int]bool{}, last: map[int32]int32{},
		badSince: map[int32]time.Time{}, worst: map[int32]time.Duration{}, halt: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { w.finish() })
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.halt:
				return
			case <-time.After(100 * time.Millisecond):
			}
			w.sample()
		}
	}()
	return w
}

func (w *leaderWatch) sample() {
	w.mu.Lock()
	var skip []int
	for i, d := range w.down {
		if d {
			skip = append(skip, i)
		}
	}
	gen := w.gen
	w.mu.Unlock()
	at := time.Now()
	leaders, why := agreedLeaders(w.c, w.topic, w.partitions, skip)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != gen {
		return
	}
	w.n++
	for p := range w.partitions {
		if why == "" {
			w.last[p] = leaders[p]
			if since, bad := w.badSince[p]; bad {
				w.worst[p] = max(w.worst[p], at.Sub(since))
				delete(w.badSince, p)
			}
			continue
		}
		if _, bad := w.badSince[p]; !bad {
			w.badSince[p] = at
		}
	}
}

// markDown marks slot i as going down (before its SIGTERM) or back up
// (once ready): the partitions it led are leaderless from now until the
// survivors agree on another leader. It returns those partitions.
func (w *leaderWatch) markDown(i int, down bool) []int32 {
	var fresh map[int32]int32
	if down {
		fresh, _ = agreedLeaders(w.c, w.topic, w.partitions, nil)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.down[i] = down
	w.gen++
	var led []int32
	if down {
		if fresh == nil {
			fresh = w.last
		}
		now := time.Now()
		for p, l := range fresh {
			if w.c.Slot(l) == i {
				led = append(led, p)
				if _, bad := w.badSince[p]; !bad {
					w.badSince[p] = now
				}
			}
		}
	}
	slices.Sort(led)
	return led
}

// finish stops the watcher and returns each partition's longest
// leaderless time (a window still open counts up to now).
func (w *leaderWatch) finish() map[int32]time.Duration {
	select {
	case <-w.halt:
	default:
		close(w.halt)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, since := range w.badSince {
		w.worst[p] = max(w.worst[p], time.Since(since))
	}
	w.badSince = map[int32]time.Time{}
	out := map[int32]time.Duration{}
	for p, d := range w.worst {
		out[p] = d
	}
	return out
}

func (w *leaderWatch) samples() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// TestProcCoordinatorFaults is row 10: the group coordinator's broker is
// killed with kill -9 while a member joins, stopped with SIGSTOP (past the
// election timeout) while a member leaves, and killed again while it is
// stopped and another member joins. The members (franz-go, committing
// what they polled every 200 ms and before they give partitions up) keep
// consuming throughout. Committed offsets never regress, every member
// resumes a partition at or below the last commit, each member's offsets
// move forward one by one between rebalances, and after the heal the
// group's lag reaches 0: all checks, (g) and (h) included.
func TestProcCoordinatorFaults(t *testing.T) {
	rng := procRand(t)
	const topic, partitions, group = "grouped", 3, "proc-group"
	rounds := 1
	if procSoak() {
		rounds = 6
	}
	c := newProcs(t, topic, partitions)
	w := startProcWorkload(t, c, topic, partitions, 300)
	opts := []kgo.Opt{kgo.ConsumeTopics(topic), kgo.FetchMaxWait(200 * time.Millisecond)}
	next := 1
	join := func() *procConsumer {
		m := w.addConsumer(fmt.Sprintf("m%d", next), group, opts...)
		next++
		return m
	}
	members := []*procConsumer{join()}
	w.waitPolls(members[0].Name(), 100, 60*time.Second) // the first join waits out group.initial.rebalance.delay.ms (3 s)
	for round := range rounds {
		// 1. kill -9 the coordinator while a member joins.
		co := procCoordinator(t, c, group, nil)
		m := join()
		members = append(members, m)
		time.Sleep(between(rng, 0, 500*time.Millisecond))
		w.fault("round %d: %s joins; kill -9 the coordinator, broker %d (pid %d)", round, m.Name(), c.ID(co), c.PID(co))
		c.Kill(co)
		now := procCoordinator(t, c, group, []int{co})
		w.fault("round %d: broker %d coordinates the group", round, c.ID(now))
		w.waitPolls(m.Name(), 50, 90*time.Second)
		time.Sleep(between(rng, 500*time.Millisecond, 2*time.Second))
		w.fault("round %d: start broker %d", round, c.ID(co))
		c.Start(co)
		c.WaitReady(co, 60*time.Second)

		// 2. SIGSTOP the coordinator while a member leaves.
		co = procCoordinator(t, c, group, nil)
		leaving := members[0]
		members = members[1:]
		w.fault("round %d: %s leaves; SIGSTOP the coordinator, broker %d (pid %d), for 5 s", round, leaving.Name(), c.ID(co), c.PID(co))
		left := make(chan struct{})
		go func() {
			defer close(left)
			leaving.halt()
		}()
		time.Sleep(between(rng, 0, 300*time.Millisecond))
		c.Pause(co)
		paused := time.Now()
		now = procCoordinator(t, c, group, []int{co})
		w.fault("round %d: broker %d coordinates the group, %v after the SIGSTOP", round, c.ID(now), time.Since(paused).Round(time.Millisecond))
		if rest := 5*time.Second - time.Since(paused); rest > 0 {
			time.Sleep(rest)
		}
		c.Resume(co)
		w.fault("round %d: SIGCONT broker %d", round, c.ID(co))
		<-left
		w.waitPolls(members[0].Name(), 50, 90*time.Second)

		// 3. SIGSTOP the coordinator, let a member join, and kill -9 the
		// stopped process.
		co = procCoordinator(t, c, group, nil)
		w.fault("round %d: SIGSTOP the coordinator, broker %d (pid %d)", round, c.ID(co), c.PID(co))
		c.Pause(co)
		m = join()
		members = append(members, m)
		w.fault("round %d: %s joins", round, m.Name())
		time.Sleep(between(rng, time.Second, 3*time.Second))
		w.fault("round %d: kill -9 the stopped broker %d", round, c.ID(co))
		c.Kill(co)
		now = procCoordinator(t, c, group, []int{co})
		w.fault("round %d: broker %d coordinates the group", round, c.ID(now))
		w.waitPolls(m.Name(), 50, 90*time.Second)
		w.fault("round %d: start broker %d", round, c.ID(co))
		c.Start(co)
		c.WaitReady(co, 60*time.Second)
	}
	w.waitProgress(300, 60*time.Second)
	for _, m := range members {
		w.waitPolls(m.Name(), 1, 60*time.Second)
	}
	w.finish().Require(t, procGroupChecks...)
}

// procCoordinator asks the running brokers outside skip (FindCoordinator)
// until they all name the same live broker outside skip as the group's
// coordinator, and returns its slot.
func procCoordinator(t testing.TB, c *Procs, group string, skip []int) int {
	t.Helper()
	slot := -1
	last := ""
	deadline := time.Now().Add(60 * time.Second)
	for {
		slot, last = -1, ""
		for i := range c.Size() {
			if slices.Contains(skip, i) || !c.Running(i) {
				continue
			}
			req := kmsg.NewPtrFindCoordinatorRequest()
			req.Version = 3
			req.CoordinatorKey = group
			resp, err := KafkaRequest(testContext(t, 2*time.Second), c.KafkaAddr(i), req)
			if err != nil {
				last = fmt.Sprintf("broker %d: %v", c.ID(i), err)
				break
			}
			fc := resp.(*kmsg.FindCoordinatorResponse)
			s := c.Slot(fc.NodeID)
			if fc.ErrorCode != 0 || s < 0 || slices.Contains(skip, s) || !c.Running(s) {
				last = fmt.Sprintf("broker %d names coordinator %d (error %d)", c.ID(i), fc.NodeID, fc.ErrorCode)
				break
			}
			if slot >= 0 && s != slot {
				last = fmt.Sprintf("brokers name coordinators %d and %d", c.ID(slot), fc.NodeID)
				break
			}
			slot = s
		}
		if last == "" && slot >= 0 {
			return slot
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreed live coordinator of group %s: %s", group, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
