package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/integration/checker"
	"github.com/varvelog/varve/integration/netfault"
)

// TestClusterNetFaults drives the fault network's patterns through a real
// three-broker cluster under load (TESTPLAN row 5's shapes, short): the
// leader of a partition blackholed into a minority (the majority elects a
// new one), a bridge (one broker reaches both others, which cannot reach
// each other), every link slow and lossy, and a random majority/minority
// split flapping every second. After the heal the history checker must
// find every check satisfied: no acknowledged write lost, offsets dense,
// one value per offset, no duplicates, consumers in order, the partition
// readable to its end, replicas identical offline.
func TestClusterNetFaults(t *testing.T) {
	logs, _ := ringLogs(t)
	c := NewCluster(t, logs, Brokers(3), Seed(5))
	c.LogFaults()
	const topic = "net-faults"
	const partitions = 3
	createReplicated(t, c, topic, partitions, 3)
	h := checker.New()
	prod := h.NewProducer(c.Client(t, kgo.RecordDeliveryTimeout(2*time.Minute)), true)
	cons, err := h.NewConsumer("c1", "", kgo.SeedBrokers(c.Addrs()...), kgo.ConsumeTopics(topic), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Client().Close)
	pctx, stopProducing := context.WithCancel(context.Background())
	cctx, stopConsuming := context.WithCancel(context.Background())
	defer stopProducing()
	defer stopConsuming()
	var wg sync.WaitGroup
	wg.Go(func() { prod.Run(pctx, topic, 5*time.Millisecond, 16) })
	wg.Go(func() { cons.Run(cctx, 0) })

	rng := rand.New(rand.NewPCG(5, 0))
	slots := []int{0, 1, 2}
	step := func(what string, hold time.Duration, apply func()) {
		h.Note("%s %s for %v", time.Now().Format("15:04:05.000"), what, hold)
		apply()
		time.Sleep(hold)
		c.Heal()
	}

	leader := c.WaitLeader(topic, 0)
	others := slices.DeleteFunc(slices.Clone(slots), func(i int) bool { return i == leader })
	step(fmt.Sprintf("blackhole the leader of %s-0 (slot %d) into a minority", topic, leader), 3*time.Second, func() {
		c.Partition([]int{leader}, others)
		if l := waitLeaderAmong(t, c, topic, 0, others...); l == leader {
			t.Errorf("slot %d still leads from the minority", leader)
		}
	})
	b := rng.IntN(3)
	rest := slices.DeleteFunc(slices.Clone(slots), func(i int) bool { return i == b })
	step(fmt.Sprintf("bridge: slot %d between %d and %d", b, rest[0], rest[1]), 3*time.Second, func() {
		c.Bridge(b, rest[:1], rest[1:])
	})
	step("every link slow and lossy", 3*time.Second, func() {
		c.Net().SetAll(netfault.Fault{Delay: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.02})
	})
	step("a random majority/minority split flapping every second", 0, func() {
		fctx, stop := context.WithTimeout(context.Background(), 4*time.Second)
		defer stop()
		<-c.Net().Flap(fctx, time.Second, func() {
			maj, mino := netfault.Split(rng, c.IDs(slots...))
			c.Net().Partition(maj, mino)
		})
	})

	for p := range int32(partitions) {
		c.WaitLeader(topic, p)
	}
	stopProducing()
	if err := prod.Flush(testContext(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The consumer reads to the end before it stops, so its polls cover
	// the whole log.
	eventually(t, 60*time.Second, "the consumer to read every acknowledged record", func() bool {
		return len(h.Polls()) >= h.Counts().OK
	})
	stopConsuming()
	wg.Wait()
	cons.Close(testContext(t, 10*time.Second))
	if err := h.Drain(testContext(t, 90*time.Second), c.Addr(), []string{topic}, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("network: %+v", c.Net().Stats())
	dirs := replicaDirs(c, topic, partitions)
	waitConverged(t, c, topic, partitions)
	c.stopAll()
	for p := range int32(partitions) {
		var reps []checker.Replica
		for i := range c.Size() {
			reps = append(reps, checker.Replica{Name: fmt.Sprintf("broker-%d", c.ID(i)), FS: c.FS(i), Dir: dirs[p][i]})
		}
		h.ReadReplicas(topic, p, reps)
	}
	h.Check().Require(t, "a", "b", "c", "d", "e", "f", "h", "r")
}
