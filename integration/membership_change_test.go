package integration

// TESTPLAN row 18, membership change under load, on the in-process
// cluster (T1): the reliability workload (an idempotent and a plain
// producer, two members of a consumer group, a direct consumer; see
// reliability_test.go) runs while a fourth broker joins, replicas move onto
// it with AlterPartitionReassignments (one partition's preferred leader is
// replaced by the new broker, so leadership moves onto it too), and one of
// the original brokers, picked by the seed (the metadata group's leader one
// time in three, else a follower of it), is decommissioned: every
// replica it holds, of the workload's topic and of __consumer_offsets (so
// the group's coordinator may move), is moved to the broker that lacks
// one, UnregisterBroker removes it from the metadata and its Raft group,
// and it is stopped. Nothing may get stuck: each reassignment finishes
// within a bound (recorded for check (h)), the removed replicas are
// deleted, and at the end no reassignment is in progress anywhere and the
// metadata lists the three remaining brokers. Then every check of the
// history checker, on the replicas where they now are.
//
// VARVE_SEED=random|<n> varies or replays the choices (which partitions
// move, which broker leaves, the pauses between steps). The default seed
// decommissions a follower of the metadata group; VARVE_SEED=9 the leader.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/integration/checker"
	"github.com/varvelog/varve/replication"
)

// reassignBound is how long one reassignment may take before it counts as
// stuck.
const reassignBound = 60 * time.Second

// TestMembershipChange is row 18 (see the file's comment).
func TestMembershipChange(t *testing.T) {
	rng, seed := testSeed(t, 18)
	c := reliabilityCluster(t, seed)
	w := startWorkload(t, c, rng, "membership", 3)
	adm := c.Admin(t)

	w.sleep(500, 1500)
	w.fault("add a broker")
	ni := c.AddBroker()
	newID := c.ID(ni)
	w.fault("broker %d joined (slot %d); registered: %v", newID, ni, c.Broker(0).RegisteredBrokers())
	w.waitProgress(200)

	// Onto the new broker: one partition's preferred leader is replaced
	// by it, another partition's follower.
	md := metadataOf(t, adm)
	p0 := int32(rng.IntN(int(w.partitions)))
	p1 := (p0 + 1 + int32(rng.IntN(int(w.partitions)-1))) % w.partitions
	onto := map[string]map[int32][]int32{w.topic: {}}
	reps := md[w.topic][p0]
	onto[w.topic][p0] = append([]int32{newID}, reps[1:]...)
	reps = slices.Clone(md[w.topic][p1])
	reps[1+rng.IntN(len(reps)-1)] = newID
	onto[w.topic][p1] = reps
	moveReplicas(t, w, adm, md, onto)
	eventually(t, 30*time.Second, fmt.Sprintf("broker %d, now the preferred replica of %s-%d, to lead it", newID, w.topic, p0), func() bool {
		return c.Broker(ni).IsReadyLeader(w.topic, p0)
	})
	w.fault("broker %d leads %s-%d", newID, w.topic, p0)
	w.waitProgress(200)

	// Decommission one of the original brokers, the metadata group's
	// leader (the controller Metadata names) one time in three: each
	// replica it holds goes to the broker of the four that holds none of
	// that partition.
	controller := controllerOf(t, adm)
	var leaving int
	role := "the metadata leader"
	if rng.IntN(3) == 0 && c.Index(controller) >= 0 && c.Index(controller) < ni {
		leaving = c.Index(controller)
	} else {
		rest := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return c.ID(i) == controller })
		leaving = rest[rng.IntN(len(rest))]
		role = fmt.Sprintf("a follower of the metadata group, which broker %d leads", controller)
	}
	goneID := c.ID(leaving)
	md = metadataOf(t, adm)
	off := replaceEverywhere(t, md, goneID, []int32{c.ID(0), c.ID(1), c.ID(2), newID})
	if len(off["__consumer_offsets"]) == 0 {
		t.Logf("broker %d held no replica of __consumer_offsets", goneID)
	}
	w.fault("decommission broker %d (slot %d), %s", goneID, leaving, role)
	if err := unregister(t, c, ni, goneID); !errors.Is(err, kerr.InvalidRequest) {
		t.Fatalf("unregistering broker %d while it holds replicas: %v, want INVALID_REQUEST", goneID, err)
	}
	moveReplicas(t, w, adm, md, off)
	for topic, ps := range off {
		for p := range ps {
			eventually(t, 30*time.Second, fmt.Sprintf("broker %d to delete its replica of %s-%d", goneID, topic, p), func() bool {
				_, ok := c.Broker(leaving).ReplicaStats(topic, p)
				return !ok
			})
		}
	}
	survivors := others(c, leaving)
	if err := unregister(t, c, survivors[rng.IntN(len(survivors))], goneID); err != nil {
		t.Fatalf("unregister broker %d: %v", goneID, err)
	}
	wantIDs := c.IDs(survivors...)
	slices.Sort(wantIDs)
	for _, i := range survivors {
		eventually(t, 15*time.Second, fmt.Sprintf("broker %d's metadata to list brokers %v", c.ID(i), wantIDs), func() bool {
			return slices.Equal(c.Broker(i).RegisteredBrokers(), wantIDs)
		})
	}
	eventually(t, 15*time.Second, fmt.Sprintf("broker %d to leave the metadata group", goneID), func() bool {
		return !slices.ContainsFunc(c.Broker(survivors[0]).MetadataMembers(), func(m replication.Member) bool { return m.ID == goneID })
	})
	// The decommissioned broker was one of the --peers voters: the broker
	// added above takes its seat, so the metadata group keeps three
	// voters and can lose one again.
	eventually(t, 30*time.Second, fmt.Sprintf("broker %d a metadata voter in broker %d's seat", newID, goneID), func() bool {
		var voters []int32
		for _, m := range c.Broker(survivors[0]).MetadataMembers() {
			if m.Voter {
				voters = append(voters, m.ID)
			}
		}
		return len(voters) == 3 && slices.Contains(voters, newID)
	})
	w.fault("broker %d unregistered, out of the metadata group %v; stop it", goneID, c.Broker(survivors[0]).MetadataMembers())
	c.Stop(leaving)
	w.waitProgress(300)

	rep := w.finishWithout(adm, leaving)
	rep.Require(t, allChecks...)
}

// metadataOf is every topic's replica lists (internal topics included), by
// topic and partition, as the cluster's metadata has them now.
func metadataOf(t *testing.T, adm *kadm.Client) map[string]map[int32][]int32 {
	t.Helper()
	var md kadm.Metadata
	eventually(t, 30*time.Second, "metadata", func() bool {
		var err error
		md, err = adm.Metadata(testContext(t, 10*time.Second))
		return err == nil
	})
	out := map[string]map[int32][]int32{}
	for name, td := range md.Topics {
		out[name] = map[int32][]int32{}
		for p, pd := range td.Partitions {
			out[name][p] = slices.Clone(pd.Replicas)
		}
	}
	return out
}

// replaceEverywhere is, for every partition with a replica on broker gone,
// its replica list with gone replaced by the broker of all that holds none
// of the partition.
func replaceEverywhere(t *testing.T, md map[string]map[int32][]int32, gone int32, all []int32) map[string]map[int32][]int32 {
	t.Helper()
	out := map[string]map[int32][]int32{}
	for _, topic := range sortedKeys(md) {
		for _, p := range sortedKeys(md[topic]) {
			reps := md[topic][p]
			i := slices.Index(reps, gone)
			if i < 0 {
				continue
			}
			spare := slices.DeleteFunc(slices.Clone(all), func(id int32) bool { return slices.Contains(reps, id) })
			if len(spare) == 0 {
				t.Fatalf("no broker to take %s-%d's replica from broker %d: replicas %v", topic, p, gone, reps)
			}
			tgt := slices.Clone(reps)
			tgt[i] = spare[0]
			if out[topic] == nil {
				out[topic] = map[int32][]int32{}
			}
			out[topic][p] = tgt
		}
	}
	return out
}

// controllerOf is the broker Metadata names as the controller: the
// metadata group's leader.
func controllerOf(t *testing.T, adm *kadm.Client) int32 {
	t.Helper()
	var md kadm.Metadata
	eventually(t, 30*time.Second, "metadata naming a controller", func() bool {
		var err error
		md, err = adm.BrokerMetadata(testContext(t, 10*time.Second))
		return err == nil && md.Controller >= 0
	})
	return md.Controller
}

// moveReplicas reassigns every partition in targets at once, logs the
// moves in the fault schedule and waits until none is in progress and the
// metadata shows each on its target with a leader among it. Each wait is
// recorded as a Liveness entry (check (h)); a reassignment still under way
// after reassignBound fails the test.
func moveReplicas(t *testing.T, w *workload, adm *kadm.Client, before, targets map[string]map[int32][]int32) {
	t.Helper()
	req := kadm.AlterPartitionAssignmentsReq{}
	set := kadm.TopicsSet{}
	var desc []string
	for _, topic := range sortedKeys(targets) {
		for _, p := range sortedKeys(targets[topic]) {
			req.Assign(topic, p, targets[topic][p])
			set.Add(topic, p)
			desc = append(desc, fmt.Sprintf("%s-%d %v -> %v", topic, p, before[topic][p], targets[topic][p]))
		}
	}
	what := "reassign " + strings.Join(desc, ", ")
	w.fault("%s", what)
	start := time.Now()
	rs, err := adm.AlterPartitionAssignments(testContext(t, 30*time.Second), req)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	rs.Each(func(r kadm.AlterPartitionAssignmentsResponse) {
		if r.Err != nil {
			t.Fatalf("reassign %s-%d: %v", r.Topic, r.Partition, r.Err)
		}
	})
	var pending string
	done := func() bool {
		ctx := testContext(t, 10*time.Second)
		l, err := adm.ListPartitionReassignments(ctx, set)
		if err != nil {
			pending = err.Error()
			return false
		}
		var in []string
		l.Each(func(r kadm.ListPartitionReassignmentsResponse) {
			in = append(in, fmt.Sprintf("%s-%d adding %v removing %v", r.Topic, r.Partition, r.AddingReplicas, r.RemovingReplicas))
		})
		if len(in) > 0 {
			sort.Strings(in)
			pending = "in progress: " + strings.Join(in, ", ")
			return false
		}
		md, err := adm.Metadata(ctx)
		if err != nil {
			pending = err.Error()
			return false
		}
		for topic, ps := range targets {
			for p, tgt := range ps {
				pd := md.Topics[topic].Partitions[p]
				if !slices.Equal(pd.Replicas, tgt) || !slices.Contains(tgt, pd.Leader) {
					pending = fmt.Sprintf("%s-%d: metadata says replicas %v leader %d", topic, p, pd.Replicas, pd.Leader)
					return false
				}
			}
		}
		return true
	}
	ok := false
	for deadline := time.Now().Add(reassignBound); ; time.Sleep(100 * time.Millisecond) {
		if ok = done(); ok || time.Now().After(deadline) {
			break
		}
	}
	l := checker.Liveness{What: what, Bound: reassignBound, Took: time.Since(start), OK: ok}
	if !ok {
		l.Detail = pending
	}
	w.h.AddLiveness(l)
	if !ok {
		t.Fatalf("stuck: %s not done within %v: %s (%s)", what, reassignBound, pending, w.c)
	}
	w.fault("reassignment done in %v", l.Took.Round(time.Millisecond))
}

// finishWithout is the workload's finish (reliability_test.go) for a
// cluster where broker slot gone has left: the load stops, the group's lag
// must reach 0, every partition is drained, no reassignment may be in
// progress anywhere, the replicas converge, and every replica the
// metadata now lists is read offline and compared.
func (w *workload) finishWithout(adm *kadm.Client, gone int) *checker.Report {
	t, c := w.t, w.c
	t.Helper()
	w.fault("heal: nothing to heal; stopping the load")
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
	w.h.WaitLag(context.Background(), adm, w.group, []string{w.topic}, bound)
	w.stopRead()
	w.reading.Wait()
	w.stop()
	survivors := others(c, gone)
	if err := w.h.Drain(context.Background(), c.BrokerAddr(survivors[w.rng.IntN(len(survivors))]), []string{w.topic}, bound); err != nil {
		t.Fatal(err)
	}

	// Nothing stuck: no reassignment anywhere (a null topic list asks
	// for every partition), every partition on survivors only.
	req := kmsg.NewPtrListPartitionReassignmentsRequest()
	resp, err := req.RequestWith(testContext(t, 10*time.Second), newClient(t, kgo.SeedBrokers(c.BrokerAddr(survivors[0]))))
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("list every reassignment: %v", err)
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			t.Errorf("still reassigning %s-%d at the end: replicas %v adding %v removing %v", rt.Topic, rp.Partition, rp.Replicas, rp.AddingReplicas, rp.RemovingReplicas)
		}
	}
	md := metadataOf(t, adm)
	goneID := c.ID(gone)
	for _, topic := range sortedKeys(md) {
		for _, p := range sortedKeys(md[topic]) {
			if slices.Contains(md[topic][p], goneID) {
				t.Errorf("%s-%d still lists the decommissioned broker %d: %v", topic, p, goneID, md[topic][p])
			}
		}
	}

	waitConverged(t, c, w.topic, w.partitions)
	dirs := make([][]checker.Replica, w.partitions)
	slots := make([][]int, w.partitions)
	for p := range w.partitions {
		for _, id := range md[w.topic][p] {
			i := c.Index(id)
			slots[p] = append(slots[p], i)
			dirs[p] = append(dirs[p], checker.Replica{Name: fmt.Sprintf("broker-%d", id), Dir: c.Broker(i).PartitionDir(w.topic, p)})
		}
	}
	c.stopAll()
	for p := range w.partitions {
		for k, i := range slots[p] {
			dirs[p][k].FS = c.FS(i)
		}
		w.h.ReadReplicas(w.topic, p, dirs[p])
	}
	rep := w.h.Check()
	t.Logf("counts for RELIABILITY.md: %s; %s; took %v", rep.Counts(), w.h.Counts(), time.Since(w.start).Round(time.Second))
	return rep
}

func sortedKeys[K string | int32, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
