package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/broker/coordinator"
)

// groupCluster is a three-broker cluster with no initial rebalance delay,
// so group tests do not wait 3 s per new group.
func groupCluster(t *testing.T) *Cluster {
	return NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.GroupInitialRebalanceDelay = -1 }))
}

// produceValues writes n records with distinct values prefix-i to topic and
// returns them.
func produceValues(t *testing.T, c *Cluster, topic, prefix string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic))
	defer cl.Close()
	var vals []string
	var recs []*kgo.Record
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		vals = append(vals, v)
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%97), Value: []byte(v)})
	}
	if err := cl.ProduceSync(testContext(t, time.Minute), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	return vals
}

// groupMember is one franz-go group consumer that records what it reads.
type groupMember struct {
	cl     *kgo.Client
	stop   chan struct{}
	done   chan struct{}
	strict bool // commit after every poll, rebalances held until then

	stopOnce sync.Once
}

// seenLog collects consumed values from all members.
type seenLog struct {
	mu         sync.Mutex
	seen       map[string]int
	commitErrs []error
}

func (s *seenLog) commitErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commitErrs = append(s.commitErrs, err)
}

// dups lists the values read more than once.
func (s *seenLog) dups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for v, n := range s.seen {
		if n > 1 {
			out = append(out, v)
		}
	}
	return out
}

func (s *seenLog) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]int{}
	}
	s.seen[v]++
}

func (s *seenLog) has(vals []string) (missing int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vals {
		if s.seen[v] == 0 {
			missing++
		}
	}
	return missing
}

// startMember joins group on topic with franz-go's defaults
// (cooperative-sticky, autocommit, commit on revoke).
func startMember(t *testing.T, c *Cluster, group, topic string, log *seenLog, opts ...kgo.Opt) *groupMember {
	t.Helper()
	return startMemberMode(t, c, group, topic, log, false, opts...)
}

func startMemberMode(t *testing.T, c *Cluster, group, topic string, log *seenLog, strict bool, opts ...kgo.Opt) *groupMember {
	t.Helper()
	all := append([]kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.AutoCommitInterval(200 * time.Millisecond)}, opts...)
	cl := c.Client(t, all...)
	m := &groupMember{cl: cl, stop: make(chan struct{}), done: make(chan struct{}), strict: strict}
	t.Cleanup(m.halt) // a failed test must not leave a member polling
	go func() {
		defer close(m.done)
		for {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-m.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			fs := cl.PollFetches(ctx)
			cancel()
			if fs.IsClientClosed() {
				return // closed by close or by the test's cleanup: no busy loop
			}
			// Recorded even when stopping: close commits what was polled.
			fs.EachRecord(func(r *kgo.Record) { log.add(string(r.Value)) })
			if m.strict {
				// Commit what this poll returned before a rebalance may
				// take its partitions away, then let it proceed.
				if err := cl.CommitUncommittedOffsets(context.Background()); err != nil {
					log.commitErr(err)
				}
				cl.AllowRebalance()
			}
			select {
			case <-m.stop:
				return
			default:
			}
		}
	}()
	return m
}

// startStrictMember is startMember committing synchronously after every
// poll and holding rebalances until it has (franz-go's
// BlockRebalanceOnPoll): the way to read each record exactly once across
// the members of a group.
func startStrictMember(t *testing.T, c *Cluster, group, topic string, log *seenLog, opts ...kgo.Opt) *groupMember {
	t.Helper()
	return startMemberMode(t, c, group, topic, log, true, append([]kgo.Opt{kgo.BlockRebalanceOnPoll(), kgo.DisableAutoCommit()}, opts...)...)
}

// halt stops the polling loop (idempotent).
func (m *groupMember) halt() {
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.done
}

// close stops polling and leaves the group, committing what it read.
func (m *groupMember) close(t *testing.T) {
	m.halt()
	if err := m.cl.CommitUncommittedOffsets(testContext(t, 30*time.Second)); err != nil {
		t.Logf("final commit: %v", err)
	}
	m.cl.Close()
}

// coordinatorSlot is the broker slot coordinating group.
func coordinatorSlot(t *testing.T, c *Cluster, group string) int {
	t.Helper()
	p := coordinator.OffsetsPartition(group, 16)
	return c.WaitLeader("__consumer_offsets", p)
}

// TestConsumerGroups: three franz-go members of one group consume a
// 12-partition RF=3 topic, each committing after every poll before it lets
// a rebalance proceed; every record is read exactly once across them; the group's committed offsets reach the end (kadm lag 0). The
// coordinator's broker is then killed: the commits survive (a new member
// resumes exactly at them, reading only what was produced afterwards) and
// DescribeGroups through the new coordinator shows the group.
func TestConsumerGroups(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "orders", "g1"
	createReplicated(t, c, topic, 12, 3)
	first := produceValues(t, c, topic, "a", 6000)

	var log seenLog
	var members []*groupMember
	for range 3 {
		members = append(members, startStrictMember(t, c, group, topic, &log))
	}
	eventually(t, 60*time.Second, "every record consumed", func() bool { return log.has(first) == 0 })
	for _, m := range members {
		m.close(t)
	}
	// The members joined one after another, so partitions moved between
	// them; with each poll committed before a rebalance may proceed, no
	// record was read twice.
	// Only when every commit succeeded: a member fenced by the coordinator
	// (its session or rebalance timeout passed, as happens on a starved
	// machine) cannot commit, and re-reading its records is then correct.
	log.mu.Lock()
	commitErrs := slices.Clone(log.commitErrs)
	log.mu.Unlock()
	if d := log.dups(); len(d) > 0 && len(commitErrs) == 0 {
		t.Fatalf("%d records read more than once across the members, e.g. %q, with every commit successful", len(d), d[0])
	} else if len(d) > 0 {
		t.Logf("%d records read twice after %d failed commits (%v): at least once holds, exactly once was not promised", len(d), len(commitErrs), commitErrs[0])
	}

	adm := c.Admin(t)
	ctx := testContext(t, time.Minute)
	eventually(t, 30*time.Second, "group lag 0", func() bool {
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			return false
		}
		l, ok := lags[group]
		if !ok || l.Error() != nil {
			return false
		}
		return l.Lag.Total() == 0 && len(l.Lag[topic]) == 12
	})
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		got, ok := committed.Lookup(topic, o.Partition)
		if !ok || got.At != o.Offset {
			t.Fatalf("partition %d: committed %+v, want the end %d", o.Partition, got, o.Offset)
		}
	})

	// The coordinator dies; the commits survive.
	ci := coordinatorSlot(t, c, group)
	c.Kill(ci)
	t.Logf("killed the coordinator, broker slot %d", ci)
	second := produceValues(t, c, topic, "b", 600)
	var log2 seenLog
	m := startMember(t, c, group, topic, &log2)
	eventually(t, 60*time.Second, "the new records consumed after the failover", func() bool { return log2.has(second) == 0 })
	m.close(t)
	log2.mu.Lock()
	var old []string
	for v := range log2.seen {
		if !slices.Contains(second, v) {
			old = append(old, v)
		}
	}
	log2.mu.Unlock()
	if len(old) > 0 {
		t.Fatalf("after the coordinator failover the group re-read %d records it had committed, e.g. %q", len(old), old[0])
	}
	// The admin client may still have the dead coordinator cached: retry.
	var d kadm.DescribedGroup
	eventually(t, 30*time.Second, "DescribeGroups through the new coordinator", func() bool {
		described, err := c.Admin(t).DescribeGroups(ctx, group)
		if err != nil {
			t.Logf("describe: %v", err)
			return false
		}
		d = described[group]
		if d.Err != nil {
			t.Logf("describe: %v", d.Err)
		}
		return d.Err == nil
	})
	if d.State != "Empty" || d.ProtocolType != "consumer" {
		t.Fatalf("described after the failover: state %q type %q", d.State, d.ProtocolType)
	}
}

// TestCoordinatorMoveNoRebalance: while two members consume, the
// coordinator's broker stops gracefully (its leaderships, the group's
// offsets partition included, move to other brokers) and comes back (and
// leadership balancing moves the partition back). The group metadata was
// written through Raft, so the new coordinators know the generation and
// the members: no member is revoked or assigned anything again, and
// consumption goes on.
func TestCoordinatorMoveNoRebalance(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "moves", "g-move"
	createReplicated(t, c, topic, 6, 3)
	first := produceValues(t, c, topic, "a", 600)

	var mu sync.Mutex
	assigned := map[int]int{}
	var log seenLog
	var members []*groupMember
	for i := range 2 {
		members = append(members, startMember(t, c, group, topic, &log,
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				mu.Lock()
				assigned[i]++
				mu.Unlock()
			})))
	}
	eventually(t, 60*time.Second, "the first records consumed", func() bool { return log.has(first) == 0 })
	eventually(t, 60*time.Second, "both members assigned and the group stable", func() bool {
		mu.Lock()
		both := assigned[0] > 0 && assigned[1] > 0
		mu.Unlock()
		if !both {
			return false
		}
		described, err := c.Admin(t).DescribeGroups(testContext(t, 10*time.Second), group)
		if err != nil {
			return false
		}
		d := described[group]
		return d.Err == nil && d.State == "Stable" && len(d.Members) == 2
	})
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	before := map[int]int{0: assigned[0], 1: assigned[1]}
	mu.Unlock()
	ci := coordinatorSlot(t, c, group)
	other := (ci + 1) % c.Size()
	gen, ok := c.Broker(other).GroupGeneration(group)
	if !ok || gen < 1 {
		t.Fatalf("broker slot %d's offset store has no generation for %s (%d, %v)", other, group, gen, ok)
	}

	c.Stop(ci)
	second := produceValues(t, c, topic, "b", 600)
	eventually(t, 60*time.Second, "records produced while the coordinator moved", func() bool { return log.has(second) == 0 })
	c.Start(ci)
	eventually(t, 30*time.Second, "the offsets partition back on its preferred replica", func() bool {
		return coordinatorSlot(t, c, group) == ci
	})
	third := produceValues(t, c, topic, "c", 600)
	eventually(t, 60*time.Second, "records produced after it moved back", func() bool { return log.has(third) == 0 })

	mu.Lock()
	after := map[int]int{0: assigned[0], 1: assigned[1]}
	mu.Unlock()
	for _, m := range members {
		m.close(t)
	}
	if after[0] != before[0] || after[1] != before[1] {
		t.Fatalf("the coordinator moves caused a rebalance: assignments per member %v before, %v after", before, after)
	}
	if got, _ := c.Broker(other).GroupGeneration(group); got != gen {
		t.Fatalf("the group's generation went from %d to %d across the coordinator moves", gen, got)
	}
}

// cuttableDialer hands out connections it can all cut at once, and then
// refuses new ones: a consumer process that died without a word.
type cuttableDialer struct {
	mu    sync.Mutex
	dead  bool
	conns []net.Conn
}

func (d *cuttableDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return nil, errors.New("this consumer is dead")
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cuttableDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = true
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// TestGroupMemberDies: three members consume with commits; one dies
// without leaving (its connections cut). Its session expires, the group
// rebalances, and the other two take over its partitions from the
// committed offsets: everything produced afterwards is consumed, and every
// record of the topic at least once.
func TestGroupMemberDies(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "dies", "g-dies"
	createReplicated(t, c, topic, 6, 3)
	first := produceValues(t, c, topic, "a", 1200)
	var log seenLog
	var members []*groupMember
	var dialers []*cuttableDialer
	for range 3 {
		d := &cuttableDialer{}
		dialers = append(dialers, d)
		members = append(members, startMember(t, c, group, topic, &log,
			kgo.Dialer(d.dial), kgo.SessionTimeout(6*time.Second), kgo.HeartbeatInterval(500*time.Millisecond)))
	}
	eventually(t, 60*time.Second, "the first records consumed", func() bool { return log.has(first) == 0 })
	dialers[2].cut()
	second := produceValues(t, c, topic, "b", 1200)
	eventually(t, 60*time.Second, "records produced after the death consumed by the survivors", func() bool { return log.has(second) == 0 })
	members[2].halt()
	members[2].cl.Close()
	for _, m := range members[:2] {
		m.close(t)
	}
	described, err := c.Admin(t).DescribeGroups(testContext(t, 10*time.Second), group)
	if err != nil {
		t.Fatal(err)
	}
	if d := described[group]; d.Err != nil || d.State != "Empty" {
		t.Fatalf("after the members closed: %+v", d)
	}
}

// TestKcatGroup drives a consumer group with librdkafka (kcat -G): a first
// run reads every record of a 4-partition topic and commits on exit; the
// committed offsets reach the end; a second run of the same group reads
// exactly the records produced after the first.
func TestKcatGroup(t *testing.T) {
	kcat := kcatPath(t)
	c := groupCluster(t)
	const topic, group = "kcatg", "kcat-group"
	createReplicated(t, c, topic, 4, 3)
	run := func(n int) []string {
		t.Helper()
		cmd := exec.Command(kcat, "-b", strings.Join(c.Addrs(), ","), "-G", group, "-c", strconv.Itoa(n), "-q", "-f", "%s\n",
			"-X", "auto.offset.reset=earliest", "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100",
			"-X", "session.timeout.ms=10000", topic)
		ctx := testContext(t, 90*time.Second)
		cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kcat -G: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	first := produceValues(t, c, topic, "a", 400)
	got := run(len(first))
	slices.Sort(got)
	want := slices.Clone(first)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("kcat -G read %d records, want the %d produced", len(got), len(want))
	}
	adm := c.Admin(t)
	ctx := testContext(t, 30*time.Second)
	eventually(t, 30*time.Second, "kcat's commits at the end offsets", func() bool {
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			return false
		}
		l := lags[group]
		return l.Error() == nil && len(l.Lag[topic]) == 4 && l.Lag.Total() == 0
	})
	second := produceValues(t, c, topic, "b", 100)
	got = run(len(second))
	slices.Sort(got)
	want = slices.Clone(second)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the second kcat -G run read %v..., want exactly the %d new records", got[:min(5, len(got))], len(want))
	}
}

// TestStaticMemberRestart: two static members (group.instance.id); one
// restarts under the same instance id within its session timeout and gets
// its assignment back without a rebalance: the group's generation does not
// move and the other member is assigned nothing new.
func TestStaticMemberRestart(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "static", "g-static"
	createReplicated(t, c, topic, 4, 3)
	first := produceValues(t, c, topic, "a", 400)
	var mu sync.Mutex
	assigned := map[string]int{}
	static := func(id string) []kgo.Opt {
		// The eager range assignor: with a cooperative one franz-go leaves
		// on close while it owes the group a rejoin (a static member's
		// restart then rebalances by the client's choice, not ours).
		return []kgo.Opt{kgo.InstanceID(id), kgo.SessionTimeout(20 * time.Second), kgo.Balancers(kgo.RangeBalancer()),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				mu.Lock()
				assigned[id] += len(m[topic])
				mu.Unlock()
			})}
	}
	var log seenLog
	m1 := startMember(t, c, group, topic, &log, static("m1")...)
	m2 := startMember(t, c, group, topic, &log, static("m2")...)
	eventually(t, 60*time.Second, "both static members assigned, the records consumed", func() bool {
		mu.Lock()
		both := assigned["m1"] > 0 && assigned["m2"] > 0
		mu.Unlock()
		return both && log.has(first) == 0
	})
	// Cooperative rebalancing takes more than one generation to settle:
	// wait until the generation has not moved for 2 s.
	ci := coordinatorSlot(t, c, group)
	var gen int32
	quietSince := time.Now()
	eventually(t, 60*time.Second, "the group's generation settled", func() bool {
		g, ok := c.Broker(ci).GroupGeneration(group)
		if !ok || g != gen {
			gen, quietSince = g, time.Now()
			return false
		}
		return time.Since(quietSince) >= 2*time.Second
	})
	mu.Lock()
	m1Before := assigned["m1"]
	mu.Unlock()

	// m2 goes away without leaving (static members do not leave) and
	// comes back under its instance id.
	m2.halt()
	if err := m2.cl.CommitUncommittedOffsets(testContext(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	m2.cl.Close()
	m2 = startMember(t, c, group, topic, &log, static("m2")...)
	second := produceValues(t, c, topic, "b", 400)
	eventually(t, 60*time.Second, "records after the restart consumed", func() bool { return log.has(second) == 0 })
	if got, _ := c.Broker(ci).GroupGeneration(group); got != gen {
		t.Fatalf("the static member's restart moved the generation from %d to %d", gen, got)
	}
	mu.Lock()
	m1After := assigned["m1"]
	mu.Unlock()
	if m1After != m1Before {
		t.Fatalf("m1 was assigned more partitions during m2's restart (%d, then %d): a rebalance", m1Before, m1After)
	}
	m1.close(t)
	m2.close(t)
}

// TestGroupAdmin: the admin side of groups through kadm: a group's
// committed offsets read back; ListGroups and DescribeGroups report it;
// OffsetFetch for a group that never existed answers -1 without error;
// OffsetDelete and DeleteGroups remove what they say, through Raft (a
// restarted coordinator still has them gone); and the offsets of an empty
// group expire after the retention.
func TestGroupAdmin(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) {
		cfg.GroupInitialRebalanceDelay = -1
	}))
	const topic = "admin-g"
	createReplicated(t, c, topic, 3, 3)
	adm := c.Admin(t)
	ctx := testContext(t, time.Minute)
	commit := func(group string, offsets map[int32]int64) {
		t.Helper()
		os := make(kadm.Offsets)
		for p, o := range offsets {
			os.Add(kadm.Offset{Topic: topic, Partition: p, At: o, LeaderEpoch: -1, Metadata: fmt.Sprintf("m%d", p)})
		}
		var resp kadm.OffsetResponses
		eventually(t, 30*time.Second, "a commit to "+group, func() bool {
			var err error
			resp, err = adm.CommitOffsets(ctx, group, os)
			return err == nil && resp.Error() == nil
		})
	}
	commit("ga", map[int32]int64{0: 5, 1: 7, 2: 9})
	commit("gb", map[int32]int64{0: 1})

	got, err := adm.FetchOffsets(ctx, "ga")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[int32]int64{0: 5, 1: 7, 2: 9} {
		if o, ok := got.Lookup(topic, p); !ok || o.At != want || o.Metadata != fmt.Sprintf("m%d", p) {
			t.Fatalf("ga %s/%d: %+v, want %d", topic, p, o, want)
		}
	}
	none, err := adm.FetchOffsets(ctx, "never-existed")
	if err != nil || none.Error() != nil {
		t.Fatalf("fetch for an unknown group: %v %v", err, none.Error())
	}
	md, err := adm.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := md.Topics["__consumer_offsets"]; !ok || !d.IsInternal || len(d.Partitions) != 16 {
		t.Fatalf("__consumer_offsets in Metadata: present %v internal %v partitions %d, want internal with 16", ok, d.IsInternal, len(d.Partitions))
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(listed.Groups(), "ga") || !slices.Contains(listed.Groups(), "gb") {
		t.Fatalf("ListGroups %v, want ga and gb", listed.Groups())
	}

	// OffsetDelete one partition of ga; DeleteGroups gb.
	del := make(kadm.TopicsSet)
	del.Add(topic, 1)
	if resp, err := adm.DeleteOffsets(ctx, "ga", del); err != nil || resp.Error() != nil {
		t.Fatalf("delete offsets: %v %v", err, resp.Error())
	}
	if resp, err := adm.DeleteGroups(ctx, "gb"); err != nil || resp.Error() != nil {
		t.Fatalf("delete group: %v %v", err, resp.Error())
	}
	// The coordinator of ga restarts: what was deleted stays deleted.
	ci := coordinatorSlot(t, c, "ga")
	c.Restart(ci)
	eventually(t, 30*time.Second, "ga's offsets after the restart", func() bool {
		got, err := c.Admin(t).FetchOffsets(ctx, "ga")
		if err != nil || got.Error() != nil {
			return false
		}
		o0, ok0 := got.Lookup(topic, 0)
		_, ok1 := got.Lookup(topic, 1)
		o2, ok2 := got.Lookup(topic, 2)
		return ok0 && o0.At == 5 && !ok1 && ok2 && o2.At == 9
	})
	eventually(t, 30*time.Second, "gb gone", func() bool {
		got, err := c.Admin(t).FetchOffsets(ctx, "gb")
		return err == nil && got.Error() == nil && len(got) == 0
	})
}

// TestOffsetFetchUnknownGroup: OffsetFetch v1 for a group that never
// existed answers each partition asked with offset -1 and no error (Sarama
// and others fetch outside any group this way).
func TestOffsetFetchUnknownGroup(t *testing.T) {
	c := groupCluster(t)
	createReplicated(t, c, "unk", 2, 3)
	adm := c.Admin(t)
	eventually(t, 30*time.Second, "a coordinator for the group (creates __consumer_offsets)", func() bool {
		cs := adm.FindGroupCoordinators(testContext(t, 10*time.Second), "nobody")
		return cs.Error() == nil
	})
	ci := coordinatorSlot(t, c, "nobody")
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Version = 1
	req.Group = "nobody"
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic, rt.Partitions = "unk", []int32{0, 1}
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.BrokerAddr(ci), req).(*kmsg.OffsetFetchResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 2 {
		t.Fatalf("answer %+v", resp)
	}
	for _, p := range resp.Topics[0].Partitions {
		if p.Offset != -1 || p.ErrorCode != 0 {
			t.Fatalf("partition %d: offset %d error %d, want -1 and none", p.Partition, p.Offset, p.ErrorCode)
		}
	}

	// A commit with a generation to a group that does not exist: v9 (KIP-848)
	// answers GROUP_ID_NOT_FOUND, older versions ILLEGAL_GENERATION; neither
	// creates the group or commits anything.
	for _, tc := range []struct {
		version int16
		want    *kerr.Error
	}{{8, kerr.IllegalGeneration}, {9, kerr.GroupIDNotFound}} {
		commit := kmsg.NewPtrOffsetCommitRequest()
		commit.Version = tc.version
		commit.Group, commit.Generation, commit.MemberID = "nobody", 3, "m-1"
		ct := kmsg.NewOffsetCommitRequestTopic()
		ct.Topic = "unk"
		cp := kmsg.NewOffsetCommitRequestTopicPartition()
		cp.Partition, cp.Offset = 0, 42
		ct.Partitions = append(ct.Partitions, cp)
		commit.Topics = append(commit.Topics, ct)
		cr := rawRequest(t, c.BrokerAddr(ci), commit).(*kmsg.OffsetCommitResponse)
		if len(cr.Topics) != 1 || len(cr.Topics[0].Partitions) != 1 {
			t.Fatalf("commit v%d answer %+v", tc.version, cr)
		}
		if got := cr.Topics[0].Partitions[0].ErrorCode; got != tc.want.Code {
			t.Errorf("commit v%d with a generation to an unknown group: %v, want %v", tc.version, kerr.ErrorForCode(got), tc.want)
		}
	}
	again := rawRequest(t, c.BrokerAddr(ci), req).(*kmsg.OffsetFetchResponse)
	if p := again.Topics[0].Partitions[0]; p.Offset != -1 {
		t.Fatalf("refused commits stored offset %d", p.Offset)
	}
}

// TestOffsetsExpire: the committed offsets of a group with no members
// expire after the retention, deleted through Raft on every replica.
func TestOffsetsExpire(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) {
		cfg.OffsetsRetention = time.Second
		cfg.OffsetsRetentionCheckInterval = 200 * time.Millisecond
	}))
	createReplicated(t, c, "exp", 1, 3)
	adm := c.Admin(t)
	ctx := testContext(t, time.Minute)
	os := make(kadm.Offsets)
	os.Add(kadm.Offset{Topic: "exp", Partition: 0, At: 3, LeaderEpoch: -1})
	eventually(t, 30*time.Second, "a commit", func() bool {
		resp, err := adm.CommitOffsets(ctx, "gexp", os)
		return err == nil && resp.Error() == nil
	})
	got, err := adm.FetchOffsets(ctx, "gexp")
	if o, ok := got.Lookup("exp", 0); err != nil || !ok || o.At != 3 {
		t.Fatalf("committed offset right after the commit: %+v %v", o, err)
	}
	eventually(t, 30*time.Second, "the offset expired", func() bool {
		got, err := adm.FetchOffsets(ctx, "gexp")
		_, ok := got.Lookup("exp", 0)
		return err == nil && !ok
	})
}

// TestCoordinatorKilledMidConsumption: two members consume while records
// keep arriving, and the coordinator's broker is killed in the middle. The
// members find the new coordinator; every record produced is consumed at
// least once; after they close, the committed offsets are the end offsets
// (nothing committed was lost with the coordinator).
func TestCoordinatorKilledMidConsumption(t *testing.T) {
	c := groupCluster(t)
	const topic, group = "midkill", "g-midkill"
	createReplicated(t, c, topic, 6, 3)
	var log seenLog
	var members []*groupMember
	for range 2 {
		members = append(members, startMember(t, c, group, topic, &log, kgo.SessionTimeout(10*time.Second)))
	}
	var all []string
	all = append(all, produceValues(t, c, topic, "a", 600)...)
	eventually(t, 60*time.Second, "the first records consumed", func() bool { return log.has(all) == 0 })
	ci := coordinatorSlot(t, c, group)
	c.Kill(ci)
	t.Logf("killed the coordinator, broker slot %d", ci)
	all = append(all, produceValues(t, c, topic, "b", 600)...)
	eventually(t, 90*time.Second, "every record consumed after the kill", func() bool { return log.has(all) == 0 })
	for _, m := range members {
		m.close(t)
	}
	ctx := testContext(t, time.Minute)
	eventually(t, 30*time.Second, "committed offsets at the end", func() bool {
		lags, err := c.Admin(t).Lag(ctx, group)
		if err != nil {
			return false
		}
		l := lags[group]
		return l.Error() == nil && len(l.Lag[topic]) == 6 && l.Lag.Total() == 0
	})
}
