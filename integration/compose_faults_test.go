package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/integration/checker"
	"github.com/varvelog/varve/partition/vfs"
)

// Rows 1, 4 and 6 of TESTPLAN.md at T3, and row 8 (replica agreement)
// over every subtest's topic at the end. Each fault runs under the
// workload of compose_load_test.go and ends with the checker.

// composeSeed is the seed of the randomized fault schedule: the
// VARVE_COMPOSE_SEED environment variable replays one, else a new one is
// drawn and logged.
func composeSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("VARVE_COMPOSE_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("VARVE_COMPOSE_SEED=%q: %v", s, err)
		}
		return seed
	}
	return rand.Uint64()
}

// composeLeaderOf is the broker leading partition p in leads.
func composeLeaderOf(leads map[int32][]int32, p int32) int32 {
	for id, ps := range leads {
		if slices.Contains(ps, p) {
			return id
		}
	}
	return -1
}

// testComposeLeaderKill is row 1 at T3: docker kill (SIGKILL) the leader of
// a randomly chosen partition, keep producing and consuming through the
// other two brokers, start it again and wait until it is healthy; two
// rounds (getting its leadership back is the rolling restart's to
// check: under load the balancer can take tens of seconds). Each round asserts that the partitions the victim led
// get live leaders on the other brokers and take acknowledged writes, and
// that the consumer keeps receiving records, while it is down; at the end
// the checker's (a)-(f) and (h): nothing acknowledged lost, one value per
// offset, no duplicates from the idempotent producer.
func testComposeLeaderKill(t *testing.T, cc *composeCluster) *composeRun {
	cc.heal()
	const topic, rounds = "t3-leader-kill", 2
	seed := composeSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("fault schedule seed %d (replay with VARVE_COMPOSE_SEED=%d)", seed, seed)
	l := startComposeLoad(t, topic)
	l.h.Note("leader kill: seed %d, %d rounds", seed, rounds)
	l.waitAcked(50, 60*time.Second)
	var leaderless []time.Duration
	last := composeBrokers[0]
	for round := 1; round <= rounds; round++ {
		p := int32(rng.IntN(composePartitions))
		hold := time.Duration(2000+rng.IntN(4000)) * time.Millisecond
		// The last victim is healthy, which means its leaders replicate
		// to it again (broker/ready_replicas.go), not that it has caught
		// up; before readiness waited for that, a kill here left some
		// partitions 10-25 s without an acknowledged write while the
		// last victim waited out the leaders' raft replication backoff.
		// Row 1 bounds no availability; it checks that nothing
		// acknowledged is lost or duplicated.
		leads, err := composeLeaders(testContext(t, 10*time.Second), l.admin, topic)
		if err != nil {
			t.Fatal(err)
		}
		victim := composeLeaderOf(leads, p)
		if victim < 0 {
			t.Fatalf("partition %d has no leader: %v", p, leads)
		}
		last = victim
		from := time.Now()
		cc.docker(30*time.Second, "kill", cc.container(victim))
		killed := time.Now()
		l.watch.waitLive(killed, victim, leads[victim], 60*time.Second)
		failover := time.Since(killed)
		l.waitAcked(20, 60*time.Second, leads[victim]...)
		time.Sleep(time.Until(killed.Add(failover + hold)))
		if n := l.polledSince(killed); n == 0 {
			t.Fatalf("round %d: the consumer received nothing in the %v broker %d was down", round, time.Since(killed).Round(time.Millisecond), victim)
		}
		downFor := time.Since(killed)
		cc.docker(60*time.Second, "start", cc.container(victim))
		cc.waitHealthy(90*time.Second, victim)
		l.waitAcked(20, 60*time.Second)
		to := time.Now()
		gaps := composeMaxGaps(l.watch.leaderless(from, to))
		leaderless = append(leaderless, composeValues(gaps)...)
		line := fmt.Sprintf("round %d: killed broker %d (leader of partition %d; led %v), its partitions live elsewhere after %v, down %v, healthy again after %v; leaderless per partition %v, longest ack wait per partition %v",
			round, victim, p, leads[victim], failover.Round(time.Millisecond), downFor.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond),
			composeRound(gaps), composeRound(l.ackGaps(from, to)))
		t.Log(line)
		l.h.Note("%s", line)
	}
	l.finish(composeExternal[last])
	t.Logf("leader kill: leaderless time per partition and round: %s; %v", composeDist(leaderless), l.h.Counts())
	return &composeRun{name: "LeaderKill", topic: topic, partitions: composePartitions, h: l.h}
}

// composePauseHold is how long a paused leader stays frozen: past the data
// groups' election (a follower campaigns 2-4 s after the last heartbeat)
// and past the producer's request deadline (compose_load_test.go), so the
// producer retries elsewhere what it sent to the frozen broker, and the
// frozen broker finds those requests waiting when it thaws.
const composePauseHold = 8 * time.Second

// testComposeLeaderPause is row 6 at T3: docker pause (the cgroup freezer,
// SIGSTOP for every process of the container) the broker leading the most
// partitions for composePauseHold, then unpause it. The kernel keeps its
// connections open while it is frozen, so requests queue up on it: the
// producer's batches (which the producer retries on the new leaders once
// they time out) and the consumer's fetches. When it thaws it must neither
// acknowledge nor serve anything it did not commit: the checker's (c)
// compares every record the consumer polled with the final log, (d)
// rules out duplicates of the retried batches, and (a) losses.
func testComposeLeaderPause(t *testing.T, cc *composeCluster) *composeRun {
	cc.heal()
	const topic = "t3-leader-pause"
	l := startComposeLoad(t, topic)
	l.waitAcked(50, 60*time.Second)
	victim, led := composeMostLeader(t, l.admin, topic)
	from := time.Now()
	cc.docker(30*time.Second, "pause", cc.container(victim))
	paused := time.Now()
	l.watch.waitLive(paused, victim, led, 60*time.Second)
	failover := time.Since(paused)
	// Not waited for: the producer's writes to those partitions. kgo
	// keeps retrying a batch on the connection to the frozen broker
	// (each attempt times out) and may move it to the new leader only
	// once the frozen broker answers again; the longest ack wait below
	// shows how long that took. The other partitions' writes carry on.
	others := slices.DeleteFunc([]int32{0, 1, 2, 3, 4, 5}, func(p int32) bool { return slices.Contains(led, p) })
	if len(others) > 0 {
		l.waitAcked(20, 60*time.Second, others...)
	}
	time.Sleep(time.Until(paused.Add(max(composePauseHold, failover+2*time.Second))))
	if n := l.polledSince(paused); n == 0 {
		t.Fatalf("the consumer received nothing in the %v broker %d was paused", time.Since(paused).Round(time.Millisecond), victim)
	}
	pausedFor := time.Since(paused)
	cc.docker(30*time.Second, "unpause", cc.container(victim))
	cc.waitHealthy(90*time.Second, victim)
	l.waitAcked(20, 60*time.Second)
	to := time.Now()
	gaps := composeMaxGaps(l.watch.leaderless(from, to))
	line := fmt.Sprintf("paused broker %d (led %v) for %v: its partitions live elsewhere after %v, healthy %v after the unpause; leaderless per partition %v, longest ack wait per partition %v",
		victim, led, pausedFor.Round(time.Millisecond), failover.Round(time.Millisecond), time.Since(paused.Add(pausedFor)).Round(time.Millisecond),
		composeRound(gaps), composeRound(l.ackGaps(from, to)))
	t.Log(line)
	l.h.Note("%s", line)
	l.finish(composeExternal[victim])
	t.Logf("leader pause: %v", l.h.Counts())
	return &composeRun{name: "LeaderPause", topic: topic, partitions: composePartitions, h: l.h}
}

// testComposeLeaderIsolation is row 4 at T3: cut the leader from its peers
// but not from clients. In compose, docker network disconnect takes the
// container off the project network, and with it the published port
// (docker-proxy forwards to the container's address on that network), so
// clients on the host lose it too. The clients it keeps are those in its
// own network namespace, like a sidecar started with --network
// container:<id>: this test runs one (a second, non-idempotent producer
// whose connections are dialed inside the container's namespace, at
// 127.0.0.1 on the broker's EXTERNAL port, which is also the address the
// broker advertises for itself there). It writes to the partitions the
// victim leads before, during and after the cut. The test asserts that:
//
//   - that producer's writes are acknowledged before the cut (the path
//     works) and that it keeps sending while cut off;
//   - no write it sent after the cut is acknowledged: the old leader
//     cannot reach a quorum, so anything it acknowledged would be a lie;
//   - the other brokers elect new leaders and the host producer's writes
//     to those partitions are acknowledged while the victim is cut off;
//   - after the reconnect, the checker's (a)-(f) and (h) over both
//     producers: every acknowledged write (the sidecar's included) is in
//     the log at its offset, no duplicates from the idempotent producer;
//     and none of the sidecar's writes sent after the cut is in the log
//     (nor, in ReplicasAgree, in any replica's files).
func testComposeLeaderIsolation(t *testing.T, cc *composeCluster) *composeRun {
	cc.heal()
	const topic = "t3-leader-isolation"
	l := startComposeLoad(t, topic)
	l.waitAcked(50, 60*time.Second)
	victim, led := composeMostLeader(t, l.admin, topic)
	st := cc.state(victim)
	cc.requireNetns(st.pid)

	reqs := &composeProduceHook{}
	// The sidecar producer. Short timeouts: while the victim is cut off
	// its writes must fail (and be recorded) rather than wait for the
	// reconnect; kgo may retry them within the delivery timeout.
	side := composeClient(t, []string{fmt.Sprintf("127.0.0.1:1909%d", victim)},
		kgo.Dialer(composeNetnsDialer(st.pid)),
		kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProduceRequestTimeout(2*time.Second), kgo.RequestTimeoutOverhead(time.Second),
		kgo.RecordDeliveryTimeout(5*time.Second), kgo.MetadataMinAge(250*time.Millisecond),
		kgo.DialTimeout(time.Second), kgo.AlwaysRetryEOF(), kgo.WithHooks(reqs))
	sp := l.h.NewProducer(side, false)
	sctx, stopSide := context.WithCancel(context.Background())
	var sideWG sync.WaitGroup
	sideWG.Add(1)
	go func() {
		defer sideWG.Done()
		rctx := context.WithoutCancel(sctx)
		for n := 0; sctx.Err() == nil; n++ {
			sp.Send(rctx, topic, led[n%len(led)], fmt.Appendf(nil, "side%d", n%7))
			select {
			case <-sctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stopSide(); sideWG.Wait() })
	sideOK := func(after time.Time) (ok, sent int) {
		for _, w := range l.h.Writes() {
			if w.Producer == sp.Name() && w.InvokedAt.After(after) {
				sent++
				if w.Outcome == checker.OK {
					ok++
				}
			}
		}
		return ok, sent
	}
	began := time.Now()
	eventually(t, 30*time.Second, "the sidecar producer's writes acknowledged before the cut", func() bool {
		ok, _ := sideOK(began)
		return ok >= 10
	})

	from := time.Now()
	cc.docker(30*time.Second, "network", "disconnect", composeNetwork, cc.container(victim))
	cut := time.Now() // the container is off the network from here on
	reqs.count(cut)
	l.watch.waitLive(cut, victim, led, 60*time.Second)
	failover := time.Since(cut)
	l.waitAcked(20, 60*time.Second, led...)
	// Keep the sidecar writing to the deposed leader a while longer.
	time.Sleep(time.Until(cut.Add(failover + 3*time.Second)))
	stopSide()
	sideWG.Wait()
	if err := sp.Flush(testContext(t, 30*time.Second)); err != nil {
		t.Fatalf("flush the sidecar producer: %v", err)
	}
	isolated := time.Since(cut)
	ackedAfter, sentAfter := sideOK(cut)
	errs := map[string]int{}
	for _, w := range l.h.Writes() {
		if w.Producer == sp.Name() && w.InvokedAt.After(cut) && w.Outcome != checker.OK {
			errs[w.Err]++
		}
	}
	written, answered := reqs.counts()
	t.Logf("sidecar producer in broker %d's network namespace: %d writes sent after the cut, %d acknowledged, in %d produce requests written to the broker (%d answered); errors: %v",
		victim, sentAfter, ackedAfter, written, answered, errs)
	if sentAfter == 0 || written == 0 {
		t.Fatalf("the sidecar producer sent %d writes in %d produce requests after the cut: the test proves nothing", sentAfter, written)
	}
	if ackedAfter > 0 {
		var acked []string
		for _, w := range l.h.Writes() {
			if w.Producer == sp.Name() && w.InvokedAt.After(cut) && w.Outcome == checker.OK {
				acked = append(acked, fmt.Sprintf("%s at %d@%d (sent %v after the cut)", w.Value, w.AckPartition, w.AckOffset, w.InvokedAt.Sub(cut).Round(time.Millisecond)))
			}
		}
		t.Errorf("broker %d, cut off from its peers, acknowledged %d writes sent after the cut: %s", victim, ackedAfter, strings.Join(acked[:min(len(acked), 10)], "; "))
	}

	cc.connect(victim)
	reconnected := time.Now()
	cc.waitHealthy(90*time.Second, victim)
	l.waitAcked(20, 60*time.Second)
	to := time.Now()
	gaps := composeMaxGaps(l.watch.leaderless(from, to))
	line := fmt.Sprintf("cut broker %d (led %v) off the network for %v: its partitions live elsewhere after %v, healthy %v after the reconnect; leaderless per partition %v, longest ack wait per partition %v; sidecar: %d writes sent after the cut, %d acknowledged, %d produce requests written to the cut-off broker after the cut, %d answered",
		victim, led, isolated.Round(time.Millisecond), failover.Round(time.Millisecond), time.Since(reconnected).Round(time.Millisecond),
		composeRound(gaps), composeRound(l.ackGaps(from, to)), sentAfter, ackedAfter, written, answered)
	t.Log(line)
	l.h.Note("%s", line)
	l.finish(composeExternal[victim])
	// Nothing the sidecar sent after the cut can have been committed: the
	// deposed leader could not reach a quorum, and the new leaders
	// overwrote whatever it had appended.
	var absent []string
	for _, w := range l.h.Writes() {
		if w.Producer == sp.Name() && w.InvokedAt.After(cut) {
			absent = append(absent, w.Value)
		}
	}
	composeRequireAbsent(t, l.h, absent)
	t.Logf("leader isolation: %v; none of the %d writes the sidecar sent after the cut is in the log", l.h.Counts(), len(absent))
	return &composeRun{name: "LeaderIsolation", topic: topic, partitions: composePartitions, h: l.h, absent: absent}
}

// testComposeReplicasAgree is row 8 at T3 over every topic the other
// subtests wrote: once every follower has caught up, stop every broker
// (gracefully), copy each container's data directory out (docker cp works
// on stopped containers and their volumes), and read every replica's
// segment files offline with the checker: a clean chain of valid batches,
// byte-identical across the three replicas, ending at the high watermark
// the subtest's drain read, and holding what its history expects ((b),
// (c), (d) over the files too).
func testComposeReplicasAgree(t *testing.T, cc *composeCluster, runs []*composeRun) {
	if len(runs) == 0 {
		t.Skip("no subtest left a history to compare the replicas with (run the whole TestCompose)")
	}
	cc.heal()
	cc.requireNetns(cc.state(composeBrokers[0]).pid)
	cc.waitConverged(90 * time.Second)
	start := time.Now()
	stop := []string{"stop", "-t", composeStopGrace}
	for _, id := range composeBrokers {
		stop = append(stop, cc.container(id))
	}
	cc.docker(3*time.Minute, stop...)
	t.Logf("stopped every broker in %v", time.Since(start).Round(time.Millisecond))
	dirs := map[int32]string{}
	for _, id := range composeBrokers {
		if st := cc.state(id); st.status != "exited" || st.exitCode != 0 {
			t.Errorf("broker %d after SIGTERM: %s with exit code %d", id, st.status, st.exitCode)
		}
		dir := t.TempDir()
		cc.docker(2*time.Minute, "cp", cc.container(id)+":/data", dir)
		dirs[id] = filepath.Join(dir, "data")
	}
	var lines []string
	for _, r := range runs {
		for p := range r.partitions {
			var reps []checker.Replica
			for _, id := range composeBrokers {
				reps = append(reps, checker.Replica{Name: fmt.Sprintf("broker-%d", id), FS: vfs.OS{},
					Dir: filepath.Join(dirs[id], "logs", fmt.Sprintf("%s-%d", r.topic, p))})
			}
			r.h.ReadReplicas(r.topic, p, reps)
		}
		rep := r.h.Check()
		rep.Require(t, "a", "b", "c", "d", "r")
		composeRequireAbsent(t, r.h, r.absent)
		lines = append(lines, fmt.Sprintf("%s (%s): %s", r.name, r.topic, rep.Counts()))
	}
	sort.Strings(lines)
	t.Logf("replicas read offline (examined/violations):\n  %s", strings.Join(lines, "\n  "))
}

// waitConverged waits until every broker has applied the same Raft
// entries in its partition groups: the three report the same
// varve_raft_applied_index_sum (RF 3 on three brokers: each runs every
// group, and a group's entries have the same indexes everywhere) in two
// scrapes half a second apart. The Metadata ISR cannot tell: it is
// lag-time based (30 s), and a follower whose leaders' replication still
// backs off after a restart or a network cut counts as in sync while its
// files end below the high watermark. The admin listener is not
// published, so the scrape goes through each container's own network
// namespace (composeNetnsDialer).
func (cc *composeCluster) waitConverged(within time.Duration) {
	cc.t.Helper()
	start := time.Now()
	var prev, sums []string
	for {
		sums = sums[:0]
		for _, id := range composeBrokers {
			v, err := composeMetric(cc.state(id).pid, "varve_raft_applied_index_sum")
			if err != nil {
				v = err.Error()
			}
			sums = append(sums, v)
		}
		same := !slices.ContainsFunc(sums, func(v string) bool { return v != sums[0] })
		if same && slices.Equal(sums, prev) {
			cc.t.Logf("every broker applied the same Raft entries (applied index sum %s) after %v", sums[0], time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			cc.t.Fatalf("the brokers' applied index sums differ after %v: %v", within, sums)
		}
		prev = slices.Clone(sums)
		time.Sleep(500 * time.Millisecond)
	}
}

// requireNetns checks that this process can dial inside the network
// namespace of pid (it takes CAP_SYS_ADMIN: root on the Docker host). If it
// cannot, the subtest fails in CI and skips elsewhere, saying why.
func (cc *composeCluster) requireNetns(pid int) {
	cc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := composeNetnsDialer(pid)(ctx, "tcp", "127.0.0.1:9644")
	if err == nil {
		c.Close()
		return
	}
	msg := fmt.Sprintf("this subtest dials inside a container's network namespace (the admin listener is not published, and a client cut off with its broker lives there), which needs root on the Docker host: %v", err)
	if os.Getenv("CI") != "" {
		cc.t.Fatal(msg + " (CI is set: the compose tests must run)")
	}
	cc.t.Skip(msg)
}

// composeMetric scrapes the admin listener (port 9644) of the broker whose
// process is pid, from inside its network namespace, and returns the value
// of the unlabelled metric name.
func composeMetric(pid int, name string) (string, error) {
	dial := composeNetnsDialer(pid)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) },
	}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://127.0.0.1:9644/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /metrics of pid %d", name, pid)
}

// composeProduceHook counts the produce requests a client wrote, and the
// responses it read, from a moment on (kgo's broker write and read hooks).
type composeProduceHook struct {
	mu                sync.Mutex
	since             time.Time // zero: not counting yet
	written, answered int
}

func (h *composeProduceHook) count(since time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.since = since
}

func (h *composeProduceHook) counts() (written, answered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.written, h.answered
}

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (h *composeProduceHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if key == 0 && err == nil && !h.since.IsZero() && time.Now().After(h.since) {
		h.written++
	}
}

// OnBrokerRead implements kgo.HookBrokerRead.
func (h *composeProduceHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if key == 0 && err == nil && !h.since.IsZero() && time.Now().After(h.since) {
		h.answered++
	}
}

// composeRequireAbsent fails t if any of values is in a drain or a replica
// of h.
func composeRequireAbsent(t *testing.T, h *checker.History, values []string) {
	t.Helper()
	var found []string
	for _, v := range values {
		for _, at := range h.Locate(v) {
			found = append(found, v+" in "+at)
		}
	}
	if len(found) > 0 {
		t.Errorf("%d writes that cannot have been committed are in the log: %s", len(found), strings.Join(found[:min(len(found), 10)], "; "))
	}
}
