package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/varvelog/varve/integration/netfault"
)

// TestReliabilityPartitions (row 5, random partitions): the reliability
// workload (reliability_test.go) while the Raft links between the three
// brokers are cut in the shapes Jepsen uses, each drawn from the seed:
// the leader of a random partition blackholed into a minority (the
// majority must elect a new one), a random majority/minority split, a
// bridge (one broker reaches both others, which cannot reach each other),
// every link slow and lossy, and a random majority/minority split flapping
// on and off (every 1-2 s here; every 5-10 s with VARVE_SOAK=1). Kafka
// clients reach every broker throughout. After the heal every check,
// (a)-(h) and row 8's replica agreement, must hold and have examined
// something.
//
// The seed is 5 by default; VARVE_SEED=random|<n> as for the other rows.
// Every network change is logged (the fault network's own log) and the
// schedule is in the checker's report. VARVE_SOAK=1 runs 20 rounds of the
// five shapes instead of 1 (VARVE_ROUNDS=<n> for n).
func TestReliabilityPartitions(t *testing.T) {
	rng, seed := testSeed(t, 5)
	c := reliabilityCluster(t, seed)
	c.LogFaults()
	w := startWorkload(t, c, rng, "partitions", 3)
	flapEvery, flapFor := [2]int{1000, 2000}, [2]int{4000, 6000}
	if procSoak() {
		flapEvery, flapFor = [2]int{5000, 10000}, [2]int{20000, 40000}
	}
	for round := range rounds(t, 1) {
		partitionRound(t, c, w, round, flapEvery, flapFor)
	}
	w.finish().Require(t, allChecks...)
}

// partitionRound runs row 5's five network shapes once, each held for a
// time drawn from the workload's seed, healing after each and waiting for
// the workload to make progress again. flapEvery and flapFor are the
// flapping's period and length in milliseconds (lo, hi).
func partitionRound(t *testing.T, c *Cluster, w *workload, round int, flapEvery, flapFor [2]int) {
	t.Helper()
	rng := w.rng
	slots := []int{0, 1, 2}

	p := int32(rng.IntN(int(w.partitions)))
	leader := c.WaitLeader(w.topic, p)
	rest := others(c, leader)
	w.fault("round %d: blackhole slot %d, the leader of %s-%d, into a minority", round, leader, w.topic, p)
	c.Partition([]int{leader}, rest)
	w.fault("round %d: slot %d leads %s-%d from the majority", round, readyLeaderAmong(t, c, w.topic, p, rest), w.topic, p)
	w.sleep(1000, 2500)
	w.fault("round %d: heal", round)
	c.Heal()
	w.waitProgress(100)

	perm := slices.Clone(slots)
	rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	w.fault("round %d: split majority %v / minority %v", round, perm[:2], perm[2:])
	c.Partition(perm[:2], perm[2:])
	w.sleep(1500, 3000)
	w.fault("round %d: heal", round)
	c.Heal()
	w.waitProgress(100)

	b := rng.IntN(3)
	br := others(c, b)
	w.fault("round %d: bridge: slot %d reaches %d and %d, which cannot reach each other", round, b, br[0], br[1])
	c.Bridge(b, br[:1], br[1:])
	w.sleep(1500, 3000)
	w.fault("round %d: heal", round)
	c.Heal()
	w.waitProgress(100)

	w.fault("round %d: every link slow (5 ms +- 5 ms) and lossy (2%%)", round)
	c.Net().SetAll(netfault.Fault{Delay: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.02})
	w.sleep(1500, 3000)
	w.fault("round %d: heal", round)
	c.Heal()
	w.waitProgress(100)

	every := time.Duration(flapEvery[0]+rng.IntN(flapEvery[1]-flapEvery[0]+1)) * time.Millisecond
	length := time.Duration(flapFor[0]+rng.IntN(flapFor[1]-flapFor[0]+1)) * time.Millisecond
	w.fault("round %d: a random majority/minority split flapping every %v for %v", round, every, length)
	fctx, stop := context.WithTimeout(context.Background(), length)
	// Flap calls this from its goroutine while this one waits: the rng is
	// never used by two at once.
	<-c.Net().Flap(fctx, every, func() {
		maj, mino := netfault.Split(rng, c.IDs(slots...))
		w.fault("round %d: flap: split broker ids %v / %v", round, maj, mino)
		c.Net().Partition(maj, mino)
	})
	stop()
	w.fault("round %d: healed after flapping", round)
	for p := range w.partitions {
		c.WaitLeader(w.topic, p)
	}
	w.waitProgress(100)
}
