package checker

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition/vfs"
)

// Hand-built histories: a clean one every check passes, and for each check
// a change that breaks exactly its promise. Each must be caught, with the
// evidence in the message.

const topic = "t"

// scenario is a history in plain data; build records it in order.
type scenario struct {
	writes   []Write          // Outcome, AckPartition and AckOffset as completed
	steps    []func(*History) // consumer events, in clock order
	drain    map[int32][]Record
	ends     map[int32]int64                 // high watermarks; default: one past the last record
	replicas map[string]map[int32][][]Record // replica -> partition -> batches
	liveness []Liveness
	mutFS    func(name string, m *vfs.Mem) // damage a replica's files
}

func w(producer string, seq int64, idem bool, key string, out Outcome, p int32, off int64) Write {
	return Write{Producer: producer, Seq: seq, Idempotent: idem, Topic: topic, Key: key,
		Value: fmt.Sprintf("%s-%d", producer, seq), Partition: -1, Outcome: out, AckPartition: p, AckOffset: off}
}

func rec(off int64, key, value string) Record { return Record{Offset: off, Key: key, Value: value} }

func poll(consumer string, p int32, off int64, key, value string) func(*History) {
	return func(h *History) {
		h.AddPoll(Poll{Consumer: consumer, Topic: topic, Partition: p, Offset: off, Key: key, Value: value})
	}
}

func rebalance(consumer, group string, kind RebalanceKind, ps ...int32) func(*History) {
	return func(h *History) {
		h.AddRebalance(Rebalance{Consumer: consumer, Group: group, Kind: kind, Topic: topic, Partitions: ps})
	}
}

func commit(consumer, group string, p int32, off int64, out Outcome) func(*History) {
	return func(h *History) {
		id := h.InvokeCommit(Commit{Consumer: consumer, Group: group, Topic: topic, Partition: p, Offset: off})
		var err error
		if out != OK {
			err = kerr.RequestTimedOut
		}
		h.CompleteCommit(id, out, err)
	}
}

// clean: two producers (one idempotent), a group of two members that hand
// partition 0 over at the committed offset, a direct consumer, a drain,
// two identical replicas.
func clean() *scenario {
	s := &scenario{
		writes: []Write{
			w("p1", 0, true, "a", OK, 0, 0),
			w("p1", 1, true, "b", OK, 0, 1),
			w("p1", 2, true, "c", OK, 1, 0),
			w("p2", 0, false, "", OK, 0, 2),
			w("p2", 1, false, "", Indeterminate, -1, -1),
			w("p2", 2, false, "", Failed, -1, -1),
		},
		drain: map[int32][]Record{
			0: {rec(0, "a", "p1-0"), rec(1, "b", "p1-1"), rec(2, "", "p2-0")},
			1: {rec(0, "c", "p1-2")},
		},
		liveness: []Liveness{{What: "drain", Bound: time.Second, Took: time.Millisecond, OK: true}},
	}
	s.steps = []func(*History){
		func(h *History) { h.AddConsumer("c1", "g"); h.AddConsumer("c2", "g"); h.AddConsumer("d1", "") },
		rebalance("c1", "g", Assigned, 0, 1),
		poll("c1", 0, 0, "a", "p1-0"),
		poll("c1", 0, 1, "b", "p1-1"),
		poll("c1", 1, 0, "c", "p1-2"),
		poll("d1", 0, 0, "a", "p1-0"),
		commit("c1", "g", 0, 2, OK),
		commit("c1", "g", 1, 1, OK),
		rebalance("c1", "g", Revoked, 0),
		rebalance("c2", "g", Assigned, 0),
		poll("c2", 0, 2, "", "p2-0"),
		poll("d1", 0, 1, "b", "p1-1"),
		poll("d1", 0, 2, "", "p2-0"),
		commit("c2", "g", 0, 3, OK),
	}
	batches := map[int32][][]Record{
		0: {{rec(0, "a", "p1-0"), rec(1, "b", "p1-1")}, {rec(2, "", "p2-0")}},
		1: {{rec(0, "c", "p1-2")}},
	}
	s.replicas = map[string]map[int32][][]Record{"r1": batches, "r2": batches}
	return s
}

func (s *scenario) build(t *testing.T) *History {
	t.Helper()
	h := New()
	for _, wr := range s.writes {
		id := h.Invoke(wr)
		if wr.Outcome == Pending {
			continue
		}
		var err error
		if wr.Outcome != OK {
			err = kerr.NotLeaderForPartition
		}
		h.Complete(id, wr.Outcome, wr.AckPartition, wr.AckOffset, err)
	}
	for _, step := range s.steps {
		step(h)
	}
	d := &Drain{Source: "drain", Topic: topic, Partitions: map[int32]*DrainedPartition{}}
	for p, recs := range s.drain {
		end := int64(0)
		if len(recs) > 0 {
			end = recs[len(recs)-1].Offset + 1
		}
		if e, ok := s.ends[p]; ok {
			end = e
		}
		d.Partitions[p] = &DrainedPartition{Start: 0, End: end, Records: recs}
	}
	h.AddDrain(d)
	for _, l := range s.liveness {
		h.AddLiveness(l)
	}
	for _, name := range []string{"r1", "r2"} {
		parts, ok := s.replicas[name]
		if !ok {
			continue
		}
		m := vfs.NewMem()
		var reps []Replica
		for p, batches := range parts {
			dir := fmt.Sprintf("/%s/%s-%d", name, topic, p)
			writeSegment(t, m, dir, batches)
			reps = append(reps, Replica{Name: name, FS: m, Dir: dir})
		}
		if s.mutFS != nil {
			s.mutFS(name, m)
		}
		for _, r := range reps {
			p := int32(r.Dir[len(r.Dir)-1] - '0')
			h.ReadReplicas(topic, p, []Replica{r})
		}
	}
	return h
}

// writeSegment writes batches into one segment file named after the first
// batch's base offset.
func writeSegment(t *testing.T, m *vfs.Mem, dir string, batches [][]Record) {
	t.Helper()
	if err := m.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, recs := range batches {
		b = append(b, encodeBatch(recs)...)
	}
	name := path.Join(dir, fmt.Sprintf("%020d.log", batches[0][0].Offset))
	f, err := m.OpenFile(name, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
}

// encodeBatch encodes an uncompressed v2 batch with kmsg, with its length
// and CRC-32C filled in.
func encodeBatch(recs []Record) []byte {
	var body []byte
	for i, r := range recs {
		kr := kmsg.Record{OffsetDelta: int32(i), Key: []byte(r.Key), Value: []byte(r.Value)}
		if r.Key == "" {
			kr.Key = nil
		}
		kr.Length = int32(len(kr.AppendTo(nil)) - 1) // the zero length took one byte
		body = kr.AppendTo(body)
	}
	rb := kmsg.RecordBatch{FirstOffset: recs[0].Offset, Magic: 2, LastOffsetDelta: int32(len(recs) - 1),
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: int32(len(recs)), Records: body}
	raw := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

func TestCleanHistoryPasses(t *testing.T) {
	rep := clean().build(t).Check()
	if !rep.OK() {
		t.Fatalf("a clean history has violations:\n%s", rep)
	}
	for _, c := range rep.Checks {
		if c.Examined == 0 {
			t.Errorf("check (%s) examined nothing in the clean history:\n%s", c.ID, rep)
		}
	}
	rep.Require(t, "a", "b", "c", "d", "e", "f", "g", "h", "r")
}

// expect checks that exactly check id found violations, one of which
// mentions every string in want.
func expect(t *testing.T, s *scenario, id string, want ...string) {
	t.Helper()
	rep := s.build(t).Check()
	for _, c := range rep.Checks {
		if c.ID != id && len(c.Violations) > 0 {
			t.Errorf("check (%s) found violations too:\n%s", c.ID, rep)
		}
	}
	c := rep.Get(id)
	for _, v := range c.Violations {
		text := v.String()
		found := true
		for _, s := range want {
			if !strings.Contains(text, s) {
				found = false
			}
		}
		if found {
			t.Logf("caught: %s", text)
			return
		}
	}
	t.Fatalf("check (%s) did not report %q:\n%s", id, want, rep)
}

func TestCheckerCatchesLostAck(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		s := clean()
		s.writes = append(s.writes, w("p1", 3, true, "d", OK, 1, 1)) // acked at 1@1, which nothing holds
		expect(t, s, "a", "p1-3", "is lost", "t-1@1")
	})
	t.Run("another value there", func(t *testing.T) {
		s := clean()
		s.writes[3].AckOffset = 1 // p2-0 acknowledged where p1-1 is...
		s.writes[3].AckPartition = 0
		// ... which also makes two values at 0@1 and two acks out of
		// order: (a), (c) and (f) all fire; (a) must say what is there.
		rep := s.build(t).Check()
		found := false
		for _, v := range rep.Get("a").Violations {
			found = found || strings.Contains(v.What, `holds "p1-1" there`)
		}
		if !found {
			t.Fatalf("(a) did not report the value at the acknowledged offset:\n%s", rep)
		}
	})
	t.Run("never drained", func(t *testing.T) {
		s := clean()
		s.writes = append(s.writes, Write{Producer: "p9", Value: "p9-0", Topic: "other", Outcome: OK})
		expect(t, s, "a", "topic other was never drained")
	})
}

func TestCheckerCatchesGap(t *testing.T) {
	s := clean()
	s.drain[1] = []Record{rec(0, "c", "p1-2"), rec(2, "", "x")}
	s.writes = append(s.writes, w("p3", 0, false, "", OK, 1, 2))
	s.writes[len(s.writes)-1].Value = "x"
	s.replicas = nil // the replicas would disagree too
	expect(t, s, "b", "offsets [1, 2) missing")

	// The same gap at a control record is fine.
	s.drain[1] = []Record{rec(0, "c", "p1-2"), {Offset: 1, Control: true}, rec(2, "", "x")}
	if rep := s.build(t).Check(); !rep.OK() {
		t.Fatalf("a gap at a control record was reported:\n%s", rep)
	}

	// Records ending below the high watermark.
	s = clean()
	s.ends = map[int32]int64{1: 3}
	s.replicas = nil
	expect(t, s, "b", "records end at 1, below the end offset 3")
}

func TestCheckerCatchesTwoValuesAtOneOffset(t *testing.T) {
	t.Run("poll disagrees", func(t *testing.T) {
		s := clean()
		s.steps = append(s.steps, poll("d2", 1, 0, "b", "p1-1"))
		expect(t, s, "c", `t-1@0 holds two values: "p1-2"`, `"p1-1" (poll by d2`)
	})
	t.Run("replica disagrees", func(t *testing.T) {
		s := clean()
		s.replicas["r2"] = map[int32][][]Record{
			0: {{rec(0, "a", "p1-0"), rec(1, "", "p2-0")}, {rec(2, "b", "p1-1")}},
			1: {{rec(0, "c", "p1-2")}},
		}
		rep := s.build(t).Check()
		if !strings.Contains(fmt.Sprint(rep.Get("c").Violations), `t-0@1 holds two values: "p1-1"`) ||
			!strings.Contains(fmt.Sprint(rep.Get("c").Violations), "replica r2") {
			t.Fatalf("replicas holding different values at one offset passed (c):\n%s", rep)
		}
		if len(rep.Get("r").Violations) == 0 {
			t.Fatalf("replicas holding different batches passed (r):\n%s", rep)
		}
	})
	t.Run("phantom", func(t *testing.T) {
		s := clean()
		s.drain[1] = append(s.drain[1], rec(1, "", "ghost"))
		s.replicas = nil
		expect(t, s, "c", `"ghost", which no producer wrote`)
	})
	t.Run("wrong key", func(t *testing.T) {
		s := clean()
		s.drain[1][0].Key = "zz"
		s.replicas = nil
		expect(t, s, "c", `with key "zz", written with key "c"`)
	})
}

func TestCheckerCatchesDuplicate(t *testing.T) {
	s := clean()
	s.drain[1] = append(s.drain[1], rec(1, "a", "p1-0")) // idempotent p1-0 twice
	s.replicas = nil
	rep := s.build(t).Check()
	if v := rep.Get("d").Violations; len(v) != 1 || !strings.Contains(v[0].What, `"p1-0" twice in t: at 0@0 and 1@1`) {
		t.Fatalf("an idempotent producer's duplicate passed:\n%s", rep)
	}

	// A non-idempotent producer's duplicate in one partition is allowed.
	s = clean()
	s.drain[0] = append(s.drain[0], rec(3, "", "p2-0"))
	s.replicas = nil
	rep = s.build(t).Check()
	if v := rep.Get("d").Violations; len(v) != 0 || !strings.Contains(rep.Get("d").Name, "1 duplicates from non-idempotent") {
		t.Fatalf("a non-idempotent duplicate: %s", rep)
	}
}

func TestCheckerCatchesConsumerGoingBack(t *testing.T) {
	s := clean()
	s.steps = append(s.steps, poll("d1", 0, 1, "b", "p1-1"))
	expect(t, s, "e", "d1 went back on t-0: offset 1")
}

func TestCheckerCatchesConsumerSkip(t *testing.T) {
	s := clean()
	// d1 reads 0 then 2: it skipped p1-1 at offset 1.
	s.steps = []func(*History){
		func(h *History) { h.AddConsumer("d1", "") },
		poll("d1", 0, 0, "a", "p1-0"),
		poll("d1", 0, 2, "", "p2-0"),
	}
	expect(t, s, "e", "d1 skipped on t-0", "over data at 1")

	// A direct consumer that starts above the log start skipped too.
	s.steps = []func(*History){func(h *History) { h.AddConsumer("d1", "") }, poll("d1", 0, 1, "b", "p1-1")}
	expect(t, s, "e", "d1 started t-0 at 1")

	// A member polling a partition it was never assigned.
	s.steps = []func(*History){func(h *History) { h.AddConsumer("c1", "g") }, poll("c1", 0, 0, "a", "p1-0")}
	expect(t, s, "e", "while it owned no such partition")
}

func TestCheckerCatchesAckOrder(t *testing.T) {
	s := clean()
	// p1 seq 0 and 1 acknowledged at 0@1 and 0@0 (the drain agrees).
	s.writes[0].AckOffset, s.writes[1].AckOffset = 1, 0
	s.drain[0][0], s.drain[0][1] = rec(0, "b", "p1-1"), rec(1, "a", "p1-0")
	s.replicas = nil
	s.steps = nil
	expect(t, s, "f", "p1-1 (seq 1) acknowledged at t-0@0, not after p1-0 (seq 0) at 1")
}

func TestCheckerCatchesCommitRegression(t *testing.T) {
	s := clean()
	s.steps = append(s.steps, commit("c2", "g", 0, 1, OK))
	expect(t, s, "g", "c2 committed 1", "below 3 committed by c2")

	// An indeterminate lower commit proves nothing.
	s = clean()
	s.steps = append(s.steps, commit("c2", "g", 0, 1, Indeterminate))
	if rep := s.build(t).Check(); !rep.OK() {
		t.Fatalf("an indeterminate commit was held to (g):\n%s", rep)
	}
}

func TestCheckerCatchesResumeAboveCommit(t *testing.T) {
	s := clean()
	// c1 commits only 1 on partition 0 before giving it up; c2 starts at 2.
	s.steps = []func(*History){
		func(h *History) { h.AddConsumer("c1", "g"); h.AddConsumer("c2", "g") },
		rebalance("c1", "g", Assigned, 0),
		poll("c1", 0, 0, "a", "p1-0"),
		commit("c1", "g", 0, 1, OK),
		rebalance("c1", "g", Revoked, 0),
		rebalance("c2", "g", Assigned, 0),
		poll("c2", 0, 2, "", "p2-0"),
	}
	expect(t, s, "g", "c2 resumed t-0 at 2", "above 1", "skipped data at 1")
}

func TestCheckerCatchesLiveness(t *testing.T) {
	s := clean()
	s.liveness = append(s.liveness, Liveness{What: "group g lag 0", Bound: time.Second, Took: time.Second, Detail: "lag t-0 committed 1 end 3"})
	expect(t, s, "h", "group g lag 0: not done within 1s", "committed 1 end 3")
}

func TestCheckerCatchesReplicaProblems(t *testing.T) {
	t.Run("bad CRC", func(t *testing.T) {
		s := clean()
		s.mutFS = func(name string, m *vfs.Mem) {
			if name == "r2" {
				flipLastByte(t, m, "/r2/t-1/00000000000000000000.log")
			}
		}
		rep := s.build(t).Check()
		if !strings.Contains(fmt.Sprint(rep.Get("r").Violations), "CRC") {
			t.Fatalf("a flipped byte passed:\n%s", rep)
		}
	})
	t.Run("torn tail", func(t *testing.T) {
		s := clean()
		s.mutFS = func(name string, m *vfs.Mem) {
			if name == "r1" {
				appendBytes(t, m, "/r1/t-0/00000000000000000000.log", []byte{0, 0, 0, 0, 0, 0, 0, 3, 0, 0})
			}
		}
		expect(t, s, "r", "replica r1 of t-0", "torn or garbled tail: 10 bytes")
	})
	t.Run("shorter replica", func(t *testing.T) {
		s := clean()
		s.replicas["r2"] = map[int32][][]Record{0: {{rec(0, "a", "p1-0"), rec(1, "b", "p1-1")}}, 1: {{rec(0, "c", "p1-2")}}}
		rep := s.build(t).Check()
		txt := fmt.Sprint(rep.Get("r").Violations)
		if !strings.Contains(txt, "replica r2 ends at 2, replica r1 at 3") || !strings.Contains(txt, "below the high watermark 3") {
			t.Fatalf("a replica missing committed data passed:\n%s", rep)
		}
	})
	t.Run("batch boundaries differ", func(t *testing.T) {
		s := clean()
		s.replicas["r2"] = map[int32][][]Record{
			0: {{rec(0, "a", "p1-0")}, {rec(1, "b", "p1-1"), rec(2, "", "p2-0")}},
			1: {{rec(0, "c", "p1-2")}},
		}
		expect(t, s, "r", "the batch at offset 0 differs")
	})
}

func flipLastByte(t *testing.T, m *vfs.Mem, name string) {
	t.Helper()
	b, err := m.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	f, err := m.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
}

func appendBytes(t *testing.T, m *vfs.Mem, name string, extra []byte) {
	t.Helper()
	f, err := m.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(extra); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{kerr.MessageTooLarge, Failed},
		{fmt.Errorf("wrapped: %w", kerr.InvalidRecord), Failed},
		{kerr.NotLeaderForPartition, Indeterminate},
		{kerr.RequestTimedOut, Indeterminate},
		{os.ErrDeadlineExceeded, Indeterminate},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
