package integration

// TESTPLAN row 19, clock jumps: one broker's wall clock (broker.Config.Now)
// jumps an hour ahead, then an hour behind, then back, under load. What
// reads that clock: retention (segments whose newest record is older than
// retention.ms by this broker's clock go), LogAppendTime stamps of the
// partitions it leads, the commit times of the groups it coordinates and
// their expiry (offsets.retention), group session and rebalance deadlines,
// segment age, and the append time a leader stamps into each Raft entry
// (idempotent-producer expiry). Nothing Raft does reads it.
//
// The jumped clock is the real time plus an offset. Unlike a real jump of
// the system clock, which Go's monotonic readings hide from time.Since and
// Sub, this one is seen by every comparison of two readings of
// broker.Config.Now: it is the harsher test (a Java broker, comparing
// currentTimeMillis readings, sees real jumps this way). In particular a
// forward jump expires every session of the groups the jumped broker
// coordinates at its next tick (the members rejoin: checks (e) and (g)
// cover it); a real jump would not, the coordinator's deadlines being
// time.Time values with monotonic readings.

import (
	"context"
	"fmt"
	"path"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/integration/checker"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication"
)

// jumpClock is a wall clock that a test can jump: the real time plus an
// offset.
type jumpClock struct{ off atomic.Int64 }

func (c *jumpClock) Now() time.Time         { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *jumpClock) Set(d time.Duration)    { c.off.Store(int64(d)) }
func (c *jumpClock) Offset() time.Duration  { return time.Duration(c.off.Load()) }
func firstSegment(dir string) string        { return path.Join(dir, fmt.Sprintf("%020d.log", 0)) }
func hasFile(fsys vfs.FS, name string) bool { _, err := fsys.Stat(name); return err == nil }

// clockPhase is a period during which the jumped clock had one offset.
type clockPhase struct {
	off        time.Duration
	start, end time.Time
}

func (p clockPhase) String() string {
	return fmt.Sprintf("%+v from %s to %s", p.off, p.start.Format("15:04:05.000"), p.end.Format("15:04:05.000"))
}

// TestClockJumpOneBroker (row 19): with retention.ms = 2 h and 4 KiB
// segments, one broker's clock jumps +1 h, then -1 h, then back, while an
// idempotent and a plain producer write to a CreateTime and a
// LogAppendTime topic and a group (coordinated by that broker) consumes.
// No replica deletes a segment (its first segment file stays on every
// broker), an empty group's offsets (offsets.retention 2 h, coordinated
// by the jumped broker) survive, every LogAppendTime timestamp is the
// leader's clock at the time, and the history checker finds every check
// satisfied. Then, as a control that retention and expiry do run on that
// clock, it jumps +3 h: the broker's replicas drop their old segments and
// the empty group's offsets expire, while the other brokers keep theirs.
func TestClockJumpOneBroker(t *testing.T) {
	logs, _ := ringLogs(t)
	c := NewCluster(t, logs, Brokers(3), WithConfig(func(cfg *broker.Config) {
		// Production's data timing: this test is about clocks, not
		// failover, and the tests' 250 ms lease let leadership churn
		// under -race on a loaded machine (the LogAppendTime check wants
		// the jumped broker to lead while its clock is off).
		cfg.DataTiming = replication.DataTiming()
		cfg.RetentionCheckInterval = 100 * time.Millisecond
		cfg.OffsetsRetention = 2 * time.Hour
		cfg.OffsetsRetentionCheckInterval = 100 * time.Millisecond
		cfg.GroupInitialRebalanceDelay = -1
	}))
	const victim = 0
	clk := &jumpClock{}
	c.SetBrokerConfig(victim, func(cfg *broker.Config) { cfg.Now = clk.Now })
	c.Restart(victim)

	const topic, lat = "clock", "clock-lat"
	topics := []string{topic, lat}
	const partitions = 3
	adm := c.Admin(t)
	for _, name := range topics {
		cfg := map[string]*string{"retention.ms": kadm.StringPtr("7200000"), "segment.bytes": kadm.StringPtr("4096")}
		if name == lat {
			cfg["message.timestamp.type"] = kadm.StringPtr("LogAppendTime")
		}
		resp, err := adm.CreateTopic(testContext(t, 30*time.Second), partitions, 3, cfg, name)
		if err != nil || resp.Err != nil {
			t.Fatalf("create %s: %v %v", name, err, resp.Err)
		}
	}
	eventually(t, 60*time.Second, "a coordinator (creates __consumer_offsets)", func() bool {
		cs := adm.FindGroupCoordinators(testContext(t, 10*time.Second), "nobody")
		return cs.Error() == nil
	})
	waitPreferredLeaders(t, c, "__consumer_offsets", 16)
	for _, name := range topics {
		waitPreferredLeaders(t, c, name, partitions)
	}
	// Two groups the jumped broker coordinates: one consumes throughout,
	// one only has offsets (an empty group's offsets can expire).
	var groups []string
	for i := 0; len(groups) < 2 && i < 1000; i++ {
		g := fmt.Sprintf("clock-g%d", i)
		if c.WaitLeader("__consumer_offsets", coordinator.OffsetsPartition(g, 16)) == victim {
			groups = append(groups, g)
		}
	}
	if len(groups) < 2 {
		t.Fatal("no group names the jumped broker coordinates")
	}
	live, idle := groups[0], groups[1]
	leaders := map[string][]int{}
	for _, name := range topics {
		for p := range int32(partitions) {
			leaders[name] = append(leaders[name], c.WaitLeader(name, p))
		}
	}
	t.Logf("jumped broker slot %d; leaders %v; groups %s (consuming) and %s (offsets only)", victim, leaders, live, idle)
	idleOffsets := kadm.Offsets{}
	for p := range int32(partitions) {
		idleOffsets.Add(kadm.Offset{Topic: topic, Partition: p, At: 0, LeaderEpoch: -1})
	}
	if err := adm.CommitAllOffsets(testContext(t, 10*time.Second), idle, idleOffsets); err != nil {
		t.Fatalf("commit %s: %v", idle, err)
	}

	h := checker.New()
	idem := h.NewProducer(c.Client(t, kgo.RecordDeliveryTimeout(2*time.Minute)), true)
	plain := h.NewProducer(c.Client(t, kgo.DisableIdempotentWrite(), kgo.RecordDeliveryTimeout(2*time.Minute)), false)
	cons, err := h.NewConsumer("c1", live, kgo.SeedBrokers(c.Addrs()...), kgo.ConsumeTopics(topics...), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Client().Close)
	pctx, stopProducing := context.WithCancel(context.Background())
	cctx, stopConsuming := context.WithCancel(context.Background())
	defer stopProducing()
	defer stopConsuming()
	var wg sync.WaitGroup
	for _, p := range []*checker.Producer{idem, plain} {
		for _, name := range topics {
			wg.Go(func() { p.Run(pctx, name, 5*time.Millisecond, 16) })
		}
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		cons.Run(cctx, 200*time.Millisecond)
	}()

	// nothingDeleted requires every replica's first segment file on
	// every broker, and the idle group's offsets.
	nothingDeleted := func(when string) {
		t.Helper()
		for i := range c.Size() {
			for _, name := range topics {
				for p := range int32(partitions) {
					if f := firstSegment(c.Broker(i).PartitionDir(name, p)); !hasFile(c.FS(i), f) {
						t.Errorf("%s: broker slot %d deleted %s", when, i, f)
					}
				}
			}
		}
		// Retried: the coordinator may be moving (NOT_COORDINATOR); an
		// expired offset never comes back.
		var got kadm.OffsetResponses
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			got, err = adm.FetchOffsets(testContext(t, 10*time.Second), idle)
			if err == nil {
				err = got.Error()
			}
			if err == nil && len(got[topic]) == partitions || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || len(got[topic]) != partitions {
			t.Errorf("%s: the empty group %s's offsets: %v, %v", when, idle, got, err)
		}
	}
	var phases []clockPhase
	for _, off := range []time.Duration{0, time.Hour, -time.Hour, 0} {
		clk.Set(off)
		ph := clockPhase{off: off, start: time.Now()}
		t.Logf("jumped broker's clock at %+v", off)
		time.Sleep(4 * time.Second)
		ph.end = time.Now()
		phases = append(phases, ph)
		nothingDeleted(fmt.Sprintf("clock %+v", off))
	}
	stopProducing()
	wg.Wait()
	for _, p := range []*checker.Producer{idem, plain} {
		if err := p.Flush(testContext(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	counts := h.Counts()
	if counts.OK != counts.Writes {
		t.Errorf("%d of %d writes acknowledged with no faults but the clock: %v", counts.OK, counts.Writes, counts)
	}
	h.WaitLag(testContext(t, 90*time.Second), adm, live, topics, 60*time.Second)
	stopConsuming()
	<-consumed
	cons.Close(testContext(t, 10*time.Second))
	if err := h.Drain(testContext(t, 90*time.Second), c.Addr(), topics, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	checkAppendTimes(t, c, h, lat, leaders[lat], phases)
	for _, name := range topics {
		for p := range int32(partitions) {
			if l := c.WaitLeader(name, p); l != leaders[name][p] {
				t.Logf("%s-%d: leader moved from slot %d to %d during the test", name, p, leaders[name][p], l)
			}
		}
	}

	// The control: retention and offsets expiry do run on the jumped
	// clock, on its broker only.
	clk.Set(3 * time.Hour)
	eventually(t, 30*time.Second, "the +3 h broker to apply retention and offsets expiry", func() bool {
		for _, name := range topics {
			for p := range int32(partitions) {
				if hasFile(c.FS(victim), firstSegment(c.Broker(victim).PartitionDir(name, p))) {
					return false
				}
			}
		}
		got, err := adm.FetchOffsets(testContext(t, 10*time.Second), idle)
		return err == nil && got.Error() == nil && len(got[topic]) == 0
	})
	for i := range c.Size() {
		for _, name := range topics {
			for p := range int32(partitions) {
				if f := firstSegment(c.Broker(i).PartitionDir(name, p)); i != victim && !hasFile(c.FS(i), f) {
					t.Errorf("broker slot %d, on the real clock, deleted %s", i, f)
				}
			}
		}
	}

	dirs := map[string][][]string{}
	for _, name := range topics {
		for p := range int32(partitions) {
			var ds []string
			for i := range c.Size() {
				ds = append(ds, c.Broker(i).PartitionDir(name, p))
			}
			dirs[name] = append(dirs[name], ds)
		}
	}
	for _, name := range topics {
		waitConverged(t, c, name, partitions)
	}
	c.stopAll()
	for _, name := range topics {
		for p := range int32(partitions) {
			var reps []checker.Replica
			for i := range c.Size() {
				reps = append(reps, checker.Replica{Name: fmt.Sprintf("broker-%d", c.ID(i)), FS: c.FS(i), Dir: dirs[name][p][i]})
			}
			h.ReadReplicas(name, p, reps)
		}
	}
	h.Note("clock phases (offset of broker slot %d): %v", victim, phases)
	h.Check().Require(t, "a", "b", "c", "d", "e", "f", "g", "h", "r")
}

// checkAppendTimes reads the LogAppendTime topic and requires each
// record's timestamp to be a leader's clock when it was written: the
// jumped broker's (offset by the phase's jump) or a real one, and some to
// be the jumped one's. Writes that straddle a jump are skipped.
func checkAppendTimes(t *testing.T, c *Cluster, h *checker.History, topic string, leaders []int, phases []clockPhase) {
	t.Helper()
	writes := map[string]checker.Write{}
	for _, w := range h.Writes() {
		if w.Topic == topic && w.Outcome == checker.OK {
			writes[w.Value] = w
		}
	}
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	ctx := testContext(t, 60*time.Second)
	seen, checked, jumped := 0, 0, 0
	for seen < len(writes) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", seen, len(writes), topic)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch %s-%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			w, ok := writes[string(r.Value)]
			if !ok {
				return
			}
			seen++
			var off time.Duration
			var in bool
			for _, ph := range phases {
				if !w.InvokedAt.Before(ph.start) && !w.CompletedAt.After(ph.end) {
					off, in = ph.off, true
				}
			}
			if !in {
				return
			}
			// The leader's clock: the jumped one or a real one (a
			// leadership change under load may have moved the partition).
			within := func(off time.Duration) bool {
				lo, hi := w.InvokedAt.Add(off-time.Second), w.CompletedAt.Add(off+time.Second)
				return !r.Timestamp.Before(lo) && !r.Timestamp.After(hi)
			}
			switch {
			case off != 0 && within(off):
				jumped++
			case within(0):
			default:
				t.Errorf("%s at %s-%d/%d: LogAppendTime %s, written between %s and %s with the jumped clock at %+v (slot %d led at the start)",
					r.Value, topic, r.Partition, r.Offset, r.Timestamp.Format(time.RFC3339Nano), w.InvokedAt.Format(time.RFC3339Nano),
					w.CompletedAt.Format(time.RFC3339Nano), off, leaders[r.Partition])
			}
			checked++
		})
	}
	t.Logf("%s: %d LogAppendTime stamps checked, %d of them from the jumped clock", topic, checked, jumped)
	if jumped == 0 {
		t.Errorf("no record of %s was stamped by the jumped broker during a jump", topic)
	}
}
