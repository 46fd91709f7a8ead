package metadata

import (
	"errors"
	"testing"
)

// harness applies commands to one FSM at consecutive indexes.
type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
}

// newHarness returns a harness whose FSM has brokers 1..n registered.
func newHarness(t testing.TB, n int) *harness {
	t.Helper()
	h := &harness{t: t, f: NewFSM()}
	for id := int32(1); id <= int32(n); id++ {
		h.ok(RegisterBroker{Broker: testBroker(id)})
	}
	return h
}

func testBroker(id int32) Broker {
	return Broker{ID: id, RaftAddr: "127.0.0.1:9093", Listeners: []Listener{{Name: "PLAINTEXT", Host: "127.0.0.1", Port: 9092}}}
}

// tid is a recognisable, non-zero topic id.
func tid(n byte) TopicID { return TopicID{0: 0xee, 15: n} }

func mustEncode(t testing.TB, cmd any) []byte {
	t.Helper()
	b, err := Encode(cmd)
	if err != nil {
		t.Fatalf("Encode(%#v): %v", cmd, err)
	}
	return b
}

// apply applies cmd at the next index and checks that the index was recorded.
func (h *harness) apply(cmd any) Result {
	h.t.Helper()
	h.index++
	res := h.f.Apply(h.index, 1, mustEncode(h.t, cmd))
	if got := h.f.State().Index; got != h.index {
		h.t.Fatalf("after applying %T at %d, State().Index = %d", cmd, h.index, got)
	}
	return res
}

// ok applies cmd and fails the test unless it succeeded.
func (h *harness) ok(cmd any) Result {
	h.t.Helper()
	res := h.apply(cmd)
	if res.Err != nil {
		h.t.Fatalf("apply %#v: %v", cmd, res.Err)
	}
	return res
}

// fails applies cmd and checks it failed with want and left the content alone.
func (h *harness) fails(cmd any, want error) Result {
	h.t.Helper()
	before := h.f.State()
	res := h.apply(cmd)
	if !errors.Is(res.Err, want) {
		h.t.Fatalf("apply %#v: err = %v, want %v", cmd, res.Err, want)
	}
	if res.Changed {
		h.t.Fatalf("apply %#v failed but reports Changed", cmd)
	}
	sameContent(h.t, before, h.f.State())
	return res
}

// sameContent checks two states are equal apart from Index.
func sameContent(t testing.TB, a, b *State) {
	t.Helper()
	a2, b2 := a.clone(), b.clone()
	a2.Index, b2.Index = 0, 0
	ea, err := encodeSnapshot(a2)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := encodeSnapshot(b2)
	if err != nil {
		t.Fatal(err)
	}
	if string(ea) != string(eb) {
		t.Fatalf("state content changed:\n%s\n%s", ea, eb)
	}
}

// topic returns the named topic or fails.
func (h *harness) topic(name string) *Topic {
	h.t.Helper()
	tp := h.f.State().Topics[name]
	if tp == nil {
		h.t.Fatalf("topic %q missing", name)
	}
	return tp
}
