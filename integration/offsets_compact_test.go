package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
)

// TestOffsetsCompaction: committing over and over does not grow
// __consumer_offsets without bound. With a 256 KiB compaction threshold,
// 12 groups commit 4 KiB of metadata per partition, 40 rounds each (~7.5
// MiB written); one group also has (had) a real member, so its group record
// is live too. The offsets partition's log start moves past most of what
// was written, and what remains is near the live state. Every committed
// offset reads back exactly as last committed. Then every broker's offset
// store is rebuilt from the compacted log (the in-process brokers keep it
// in memory, so a restart rebuilds it) and a broker that rebuilt it becomes
// the coordinator: the commits and the real group's metadata are all
// still there.
func TestOffsetsCompaction(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) {
		cfg.GroupInitialRebalanceDelay = -1
		cfg.OffsetsTopicPartitions = 1 // every group on one partition
		cfg.OffsetsCompactBytes = 256 << 10
		cfg.RetentionCheckInterval = 200 * time.Millisecond // followers delete segments below the start
	}))
	const topic, partitions, groups, rounds = "cmp", 4, 12, 40
	createReplicated(t, c, topic, partitions, 3)
	produceValues(t, c, topic, "v", 40)

	// A group with a real member: it consumes everything, commits and
	// leaves, so the group is Empty with a "consumer" protocol type.
	member := c.Client(t, kgo.ConsumerGroup("real"), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	got := 0
	ctx := testContext(t, 60*time.Second)
	for got < 40 {
		fs := member.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll: %v", err)
		}
		got += fs.NumRecords()
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	member.Close()

	adm := c.Admin(t)
	want := map[string]kadm.Offsets{}
	meta := func(g string, r, p int) string {
		return fmt.Sprintf("%s/%d/%d/", g, r, p) + strings.Repeat("m", 4000)
	}
	for r := range rounds {
		for gi := range groups {
			g := fmt.Sprintf("g%02d", gi)
			offs := kadm.Offsets{}
			for p := range int32(partitions) {
				offs.Add(kadm.Offset{Topic: topic, Partition: p, At: int64(r*10 + int(p)), LeaderEpoch: -1, Metadata: meta(g, r, int(p))})
			}
			resp, err := adm.CommitOffsets(testContext(t, 20*time.Second), g, offs)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				t.Fatalf("round %d: commit %s: %v", r, g, err)
			}
			want[g] = offs
		}
	}

	// The log start of __consumer_offsets-0 moved: compaction deleted the
	// history; what is left is about the live state (12 groups × 4 × 4 KiB
	// ≈ 200 KiB) plus what came after the last compaction, far below the
	// ~7.5 MiB written.
	var start, end int64
	eventually(t, 60*time.Second, "__consumer_offsets-0 compacted", func() bool {
		s, err1 := adm.ListStartOffsets(testContext(t, 10*time.Second), "__consumer_offsets")
		e, err2 := adm.ListEndOffsets(testContext(t, 10*time.Second), "__consumer_offsets")
		if err1 != nil || err2 != nil {
			return false
		}
		so, ok1 := s.Lookup("__consumer_offsets", 0)
		eo, ok2 := e.Lookup("__consumer_offsets", 0)
		if !ok1 || !ok2 || so.Err != nil || eo.Err != nil {
			return false
		}
		start, end = so.Offset, eo.Offset
		return start > 0
	})
	written := int64(rounds*groups*partitions) + 1 // commit records, plus the real group's
	if end < written {
		t.Fatalf("log end %d, below the %d commit records written", end, written)
	}
	if kept := end - start; kept > written/2 {
		t.Fatalf("log keeps %d of %d records (start %d, end %d): not compacted", kept, end, start, end)
	}
	t.Logf("__consumer_offsets-0: start %d, end %d (%d records kept)", start, end, end-start)
	for i := range 3 {
		eventually(t, 30*time.Second, fmt.Sprintf("broker %d deletes the compacted segments", i), func() bool {
			size := c.Broker(i).PartitionSize("__consumer_offsets", 0)
			if size >= 2<<20 {
				t.Logf("broker %d: %d bytes", i, size)
			}
			return size >= 0 && size < 2<<20
		})
	}

	// fetch retries what fails to reach a coordinator (one just stopped).
	fetch := func(g string) kadm.OffsetResponses {
		t.Helper()
		var out kadm.OffsetResponses
		eventually(t, 30*time.Second, "fetch offsets of "+g, func() bool {
			var err error
			out, err = adm.FetchOffsets(testContext(t, 10*time.Second), g)
			if err != nil {
				t.Logf("fetch offsets of %s: %v", g, err)
			}
			return err == nil
		})
		return out
	}
	check := func(when string) {
		t.Helper()
		for g, offs := range want {
			fetched := fetch(g)
			offs.Each(func(o kadm.Offset) {
				r, ok := fetched.Lookup(topic, o.Partition)
				if !ok || r.Err != nil || r.At != o.At || r.Metadata != o.Metadata {
					t.Fatalf("%s: %s %s-%d: got %+v (ok %v), want offset %d metadata %.20q...", when, g, topic, o.Partition, r, ok, o.At, o.Metadata)
				}
			})
		}
		real := fetch("real")
		total := int64(0)
		real.Each(func(r kadm.OffsetResponse) { total += r.At })
		if total != 40 {
			t.Fatalf("%s: the real group's commits sum to %d, want 40 (every record consumed)", when, total)
		}
		described, err := adm.DescribeGroups(testContext(t, 20*time.Second), "real")
		if err != nil {
			t.Fatalf("%s: describe: %v", when, err)
		}
		d := described["real"]
		if d.Err != nil || d.State != "Empty" || d.ProtocolType != "consumer" {
			t.Fatalf("%s: real group %+v", when, d)
		}
	}
	check("after compaction")

	// Rebuild every store from the compacted log: restart the two
	// followers (each rebuilds on open), then stop the coordinator so one
	// of them takes over.
	lead := c.WaitLeader("__consumer_offsets", 0)
	for i := range 3 {
		if i != lead {
			c.Restart(i)
		}
	}
	waitConverged(t, c, "__consumer_offsets", 1)
	c.Stop(lead)
	eventually(t, 60*time.Second, "a new coordinator", func() bool {
		l := c.WaitLeader("__consumer_offsets", 0)
		return l != lead
	})
	// A new client: franz-go keeps dialing a cached coordinator that is
	// gone rather than asking for the new one.
	adm = c.Admin(t)
	check("after rebuilding from the compacted log")
}
