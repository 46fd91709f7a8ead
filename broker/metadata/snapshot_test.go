package metadata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// richHarness builds a state that exercises every field.
func richHarness(t testing.TB) *harness {
	h := newHarness(t, 3)
	h.ok(RegisterBroker{Broker: Broker{ID: 7, RaftAddr: "b7:9093", Rack: "rack-b", Listeners: []Listener{{"PLAINTEXT", "b7", 9092}, {"SSL", "b7", 9094}}}})
	h.ok(RegisterBroker{Broker: Broker{ID: 0, RaftAddr: "b0:9093"}})
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 6, ReplicationFactor: 3, Configs: map[string]string{"retention.ms": "1", "cleanup.policy": "compact"}, CreatedMs: 99})
	h.ok(CreateTopic{Name: "__consumer_offsets", ID: tid(2), Partitions: 4, ReplicationFactor: 2})
	h.ok(CreateTopic{Name: "gone", ID: tid(3), Partitions: 1, ReplicationFactor: 1})
	h.ok(CreateTopic{Name: "pinned", ID: tid(4), Partitions: 1, Assignment: [][]int32{{7, 0}}})
	h.ok(DeleteTopic{Name: "gone"})
	h.ok(CreatePartitions{Name: "orders", Total: 8})
	h.ok(SetLeader{Topic: tid(1), Partition: 7, Leader: h.topic("orders").Partitions[7].Replicas[2], Epoch: 12})
	h.ok(SetLeader{Topic: tid(4), Partition: 0, Leader: 0, Epoch: 1})
	h.ok(AllocateProducerIDs{Count: 1000})
	h.fails(CreateTopic{Name: "orders", ID: tid(5), Partitions: 1, ReplicationFactor: 1}, ErrTopicExists)
	return h
}

// sameState checks b is exactly a, through reflection and through lookups.
func sameState(t testing.TB, a, b *State) {
	t.Helper()
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("states differ:\n%+v\n%+v", a, b)
	}
	for name, tp := range a.Topics {
		if got := b.TopicByID(tp.ID); got == nil || got.Name != name || !reflect.DeepEqual(got, tp) {
			t.Fatalf("TopicByID(%s) = %+v, want %+v", tp.ID, got, tp)
		}
	}
	if len(a.byID) != len(b.byID) {
		t.Fatalf("by-id index sizes %d and %d", len(a.byID), len(b.byID))
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := richHarness(t)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(snap, []byte("VMDS\x01{")) {
		t.Fatalf("snapshot starts %q", snap[:min(len(snap), 8)])
	}
	g := NewFSM()
	if err := g.Restore(snap); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	sameState(t, h.f.State(), g.State())
	again, _ := g.Snapshot()
	if !bytes.Equal(snap, again) {
		t.Fatal("snapshot of the restored state differs")
	}

	// Restore replaces a non-empty state, and both continue alike.
	other := newHarness(t, 1)
	other.ok(CreateTopic{Name: "elsewhere", ID: tid(9), Partitions: 1, ReplicationFactor: 1})
	if err := other.f.Restore(snap); err != nil {
		t.Fatal(err)
	}
	sameState(t, h.f.State(), other.f.State())
	if other.f.State().TopicByID(tid(9)) != nil {
		t.Fatal("the old state's by-id index survived Restore")
	}
	cmd := mustEncode(t, CreateTopic{Name: "later", ID: tid(10), Partitions: 3, ReplicationFactor: 2})
	r1, r2 := h.f.Apply(h.index+1, 2, cmd), other.f.Apply(h.index+1, 2, cmd)
	if r1 != r2 {
		t.Fatalf("results differ after restore: %+v %+v", r1, r2)
	}
	sameState(t, h.f.State(), other.f.State())
}

func TestSnapshotEmpty(t *testing.T) {
	snap, err := NewFSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"index":0,"next_producer_id":0,"brokers":[],"topics":[]}`
	if body := string(snap[5 : len(snap)-4]); body != want {
		t.Fatalf("empty snapshot body %s, want %s", body, want)
	}
	g := NewFSM()
	if err := g.Restore(snap); err != nil {
		t.Fatal(err)
	}
	sameState(t, NewFSM().State(), g.State())
}

// withCRC frames a snapshot body with a valid header and checksum.
func withCRC(version byte, body string) []byte {
	b := append([]byte("VMDS"), version)
	b = append(b, body...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

func TestRestoreErrors(t *testing.T) {
	good, err := richHarness(t).f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x20
	const id1, id2 = `"7gAAAAAAAAAAAAAAAAAAAQ"`, `"7gAAAAAAAAAAAAAAAAAAAg"`
	broker := `{"id":1,"raft_addr":"a"}`
	topic := func(name, id, parts string) string {
		return `{"name":"` + name + `","id":` + id + `,"partitions":[` + parts + `],"created_ms":0}`
	}
	body := func(brokers, topics string) string {
		return `{"index":5,"next_producer_id":0,"brokers":[` + brokers + `],"topics":[` + topics + `]}`
	}
	okPart := `{"replicas":[1],"leader":-1,"leader_epoch":-1}`
	if err := NewFSM().Restore(withCRC(1, body(broker, topic("t", id1, okPart)))); err != nil {
		t.Fatalf("the hand-made baseline does not restore: %v", err)
	}

	tests := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"nil", nil, "header"},
		{"short", []byte("VMDS\x01"), "header"},
		{"bad magic", append([]byte("XMDS"), good[4:]...), "header"},
		{"version 2", withCRC(2, body("", "")), "version 2"},
		{"version 0", withCRC(0, body("", "")), "version 0"},
		{"flipped bit", flipped, "checksum"},
		{"truncated", good[:len(good)-10], "checksum"},
		{"empty body", withCRC(1, ""), "not a JSON object"},
		{"not json", withCRC(1, "hello"), "not a JSON object"},
		{"trailing", withCRC(1, body("", "")+"{}"), "trailing"},
		{"unknown field", withCRC(1, `{"index":1,"extra":2}`), "unknown field"},
		{"negative producer id", withCRC(1, `{"index":1,"next_producer_id":-1}`), "negative"},
		{"negative broker", withCRC(1, body(`{"id":-1}`, "")), "negative"},
		{"duplicate broker", withCRC(1, body(broker+","+broker, "")), "twice"},
		{"null topic", withCRC(1, body(broker, "null")), "null topic"},
		{"bad name", withCRC(1, body(broker, topic("a/b", id1, okPart))), "invalid"},
		{"duplicate name", withCRC(1, body(broker, topic("t", id1, okPart)+","+topic("t", id2, okPart))), "twice"},
		{"duplicate id", withCRC(1, body(broker, topic("t", id1, okPart)+","+topic("u", id1, okPart))), "share id"},
		{"zero id", withCRC(1, body(broker, topic("t", `"AAAAAAAAAAAAAAAAAAAAAA"`, okPart))), "zero id"},
		{"no partitions", withCRC(1, body(broker, topic("t", id1, ""))), "0 partitions"},
		{"no replicas", withCRC(1, body(broker, topic("t", id1, `{"replicas":[],"leader":-1,"leader_epoch":-1}`))), "no replicas"},
		{"unregistered replica", withCRC(1, body(broker, topic("t", id1, `{"replicas":[2],"leader":-1,"leader_epoch":-1}`))), "unknown broker"},
		{"learner not replica", withCRC(1, body(broker+`,{"id":2}`, topic("t", id1, `{"replicas":[1],"learners":[2],"leader":-1,"leader_epoch":-1}`))), "learners [2]"},
		{"target without original", withCRC(1, body(broker+`,{"id":2}`, topic("t", id1, `{"replicas":[1],"target":[2],"leader":-1,"leader_epoch":-1}`))), "target [2] original []"},
		{"target names unknown broker", withCRC(1, body(broker, topic("t", id1, `{"replicas":[1],"target":[7],"original":[1],"leader":-1,"leader_epoch":-1}`))), "unknown broker"},
		{"leader not replica", withCRC(1, body(broker, topic("t", id1, `{"replicas":[1],"leader":3,"leader_epoch":2}`))), "leader 3"},
		{"leader without epoch", withCRC(1, body(broker, topic("t", id1, `{"replicas":[1],"leader":1,"leader_epoch":-1}`))), "leader 1"},
		{"epoch below -1", withCRC(1, body(broker, topic("t", id1, `{"replicas":[1],"leader":-1,"leader_epoch":-2}`))), "epoch -2"},
	}
	h := richHarness(t)
	before := h.f.State()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.f.Restore(tt.in)
			if !errors.Is(err, ErrInvalidSnapshot) {
				t.Fatalf("Restore = %v, want ErrInvalidSnapshot", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Restore error %q does not mention %q", err, tt.msg)
			}
			if h.f.State() != before {
				t.Fatal("a failed Restore changed the state")
			}
		})
	}
}

// randomCommands returns n encoded commands drawn from a small universe of
// names, ids and brokers, so collisions, stale epochs and failures are
// common. Some are not commands at all.
func randomCommands(r *rand.Rand, n int) [][]byte {
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", ".."}
	out := make([][]byte, 0, n)
	for i := range n {
		var cmd any
		switch r.IntN(10) {
		case 0:
			b := Broker{ID: r.Int32N(7) - 1, RaftAddr: fmt.Sprintf("h%d:1", r.IntN(3)), Rack: []string{"", "r1", "r2"}[r.IntN(3)]}
			for range r.IntN(3) {
				b.Listeners = append(b.Listeners, Listener{Name: "L" + fmt.Sprint(r.IntN(3)), Host: "h", Port: r.Int32N(70000)})
			}
			cmd = RegisterBroker{Broker: b}
		case 1, 2:
			c := CreateTopic{Name: names[r.IntN(len(names))], ID: tid(byte(r.IntN(8))), Partitions: r.Int32N(8),
				ReplicationFactor: int16(r.IntN(4)), CreatedMs: r.Int64N(1e12)}
			if r.IntN(3) == 0 {
				c.Assignment = randomAssignment(r, int(c.Partitions)+r.IntN(4)/3)
			}
			c.Configs = randomConfigs(r)
			cmd = c
		case 3:
			if r.IntN(2) == 0 {
				cmd = AllocateProducerIDs{Count: 1 + r.Int64N(10)}
				break
			}
			cmd = DeleteTopic{Name: names[r.IntN(len(names))]}
		case 4:
			c := CreatePartitions{Name: names[r.IntN(len(names))], Total: r.Int32N(14)}
			if r.IntN(3) == 0 {
				c.Assignment = randomAssignment(r, r.IntN(4))
			}
			cmd = c
		case 5:
			cmd = AlterConfigs{Name: names[r.IntN(len(names))], Configs: randomConfigs(r)}
		case 6, 7, 9:
			// Epochs mostly grow, as terms do, with some stale and repeated ones.
			cmd = SetLeader{Topic: tid(byte(r.IntN(8))), Partition: r.Int32N(5) - 1, Leader: r.Int32N(6), Epoch: int32(i/20) + r.Int32N(4) - 2}
		case 8:
			if r.IntN(4) == 0 {
				out = append(out, []byte{byte(r.IntN(10)), byte(r.IntN(3)), '{', '}'})
				continue
			}
			cmd = AllocateProducerIDs{Count: r.Int64N(2000) - 100}
		}
		b, err := Encode(cmd)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

func randomAssignment(r *rand.Rand, n int) [][]int32 {
	rf := 1 + r.IntN(3)
	a := make([][]int32, n)
	for i := range a {
		perm := r.Perm(6)
		for _, p := range perm[:rf] {
			a[i] = append(a[i], int32(p))
		}
	}
	return a
}

func randomConfigs(r *rand.Rand) map[string]string {
	if r.IntN(2) == 0 {
		return nil
	}
	m := map[string]string{}
	for range r.IntN(6) {
		m[fmt.Sprintf("k%d", r.IntN(8))] = fmt.Sprint(r.IntN(100))
	}
	return m
}

// TestDeterminism applies one random sequence to two FSMs and, from a
// snapshot taken part way, to a third: all three end byte-identical, with
// identical results along the way.
func TestDeterminism(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			cmds := randomCommands(rand.New(rand.NewPCG(seed, 42)), 600)
			a, b, c := NewFSM(), NewFSM(), NewFSM()
			mid := len(cmds) / 2
			var changed, failed int
			for i, cmd := range cmds {
				idx := uint64(i + 1)
				ra, rb := a.Apply(idx, 1, cmd), b.Apply(idx, 1, cmd)
				if fmt.Sprint(ra) != fmt.Sprint(rb) {
					t.Fatalf("command %d %q: results %+v and %+v", i, cmd, ra, rb)
				}
				if ra.Changed {
					changed++
				}
				if ra.Err != nil {
					failed++
				}
				if i+1 == mid {
					snap, err := a.Snapshot()
					if err != nil {
						t.Fatal(err)
					}
					if err := c.Restore(snap); err != nil {
						t.Fatalf("restore mid-way: %v", err)
					}
				}
				if i+1 > mid {
					if rc := c.Apply(idx, 1, cmd); fmt.Sprint(rc) != fmt.Sprint(ra) {
						t.Fatalf("command %d after restore: %+v, want %+v", i, rc, ra)
					}
				}
			}
			if changed < 50 || failed < 50 {
				t.Fatalf("a weak sequence: %d changes, %d failures", changed, failed)
			}
			sa, _ := a.Snapshot()
			sb, _ := b.Snapshot()
			sc, _ := c.Snapshot()
			if !bytes.Equal(sa, sb) || !bytes.Equal(sa, sc) {
				t.Fatalf("snapshots differ:\n%s\n%s\n%s", sa, sb, sc)
			}
			sameState(t, a.State(), b.State())
			sameState(t, a.State(), c.State())
			if a.State().Index != uint64(len(cmds)) {
				t.Fatalf("Index %d after %d commands", a.State().Index, len(cmds))
			}
		})
	}
}

// FuzzRestore: Restore never panics, leaves the state alone on error, and a
// state it accepts snapshots to bytes that restore to the same state. With
// framed set, the input is a body given a valid header and checksum, so the
// fuzzer reaches the decoder and the invariant checks.
func FuzzRestore(f *testing.F) {
	// A small seed that still has every field: minimizing the inputs the
	// fuzzer finds interesting costs time in proportion to their length.
	h := newHarness(f, 0)
	h.ok(RegisterBroker{Broker: Broker{ID: 1, RaftAddr: "a:1", Rack: "r", Listeners: []Listener{{"P", "a", 9}}}})
	h.ok(RegisterBroker{Broker: Broker{ID: 2}})
	h.ok(CreateTopic{Name: "t", ID: tid(1), Partitions: 2, ReplicationFactor: 2, Configs: map[string]string{"k": "v"}, CreatedMs: 7})
	h.ok(SetLeader{Topic: tid(1), Partition: 1, Leader: 2, Epoch: 3})
	h.ok(AllocateProducerIDs{Count: 5})
	small, err := h.f.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	empty, _ := NewFSM().Snapshot()
	f.Add(small, false)
	f.Add(empty, false)
	f.Add(small[5:len(small)-4], true)
	f.Add([]byte(`{"index":1,"brokers":[{"id":1}],"topics":[{"name":"t","id":"7gAAAAAAAAAAAAAAAAAAAQ","partitions":[{"replicas":[1],"leader":1,"leader_epoch":0}]}]}`), true)
	f.Add([]byte("VMDS\x02"), false)
	base := h.f.State()
	zz := mustEncode(f, CreateTopic{Name: "zz", ID: tid(200), Partitions: 3, ReplicationFactor: 1})
	f.Fuzz(func(t *testing.T, data []byte, framed bool) {
		if framed {
			data = withCRC(1, string(data))
		}
		fsm := NewFSM()
		fsm.state.Store(base)
		if err := fsm.Restore(data); err != nil {
			if !errors.Is(err, ErrInvalidSnapshot) {
				t.Fatalf("Restore error %v does not wrap ErrInvalidSnapshot", err)
			}
			if fsm.State() != base {
				t.Fatal("a failed Restore changed the state")
			}
			return
		}
		snap, err := fsm.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		g := NewFSM()
		if err := g.Restore(snap); err != nil {
			t.Fatalf("re-restore: %v", err)
		}
		sameState(t, fsm.State(), g.State())
		// The restored state accepts commands like any other.
		g.Apply(g.State().Index+1, 1, zz)
	})
}
