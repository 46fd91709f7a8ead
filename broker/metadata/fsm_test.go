package metadata

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestNewFSM(t *testing.T) {
	s := NewFSM().State()
	if s.Index != 0 || s.NextProducerID != 0 || len(s.Brokers) != 0 || len(s.Topics) != 0 || s.TopicByID(tid(1)) != nil {
		t.Fatalf("new state = %+v", s)
	}
	if s.Brokers == nil || s.Topics == nil {
		t.Fatal("new state has nil maps")
	}
}

func TestChanged(t *testing.T) {
	h := newHarness(t, 2)
	h.ok(CreateTopic{Name: "t", ID: tid(1), Partitions: 1, Assignment: [][]int32{{1, 2}}})
	h.ok(SetLeader{Topic: tid(1), Leader: 1, Epoch: 3})

	ch := h.f.Changed()
	if closed(ch) {
		t.Fatal("Changed closed before any change")
	}
	h.fails(DeleteTopic{Name: "nope"}, ErrUnknownTopic)
	h.ok(SetLeader{Topic: tid(1), Leader: 2, Epoch: 3})          // stale
	h.ok(RegisterBroker{Broker: h.f.State().Brokers[1]})         // identical
	h.f.Apply(h.index, 1, mustEncode(t, AllocateProducerIDs{1})) // replay
	if closed(ch) {
		t.Fatal("Changed closed by commands that changed nothing")
	}
	if h.f.Changed() != ch {
		t.Fatal("Changed returned a new channel without a change")
	}
	h.ok(AllocateProducerIDs{Count: 1})
	if !closed(ch) {
		t.Fatal("Changed not closed by a change")
	}
	ch2 := h.f.Changed()
	if ch2 == ch || closed(ch2) {
		t.Fatal("no fresh channel after a change")
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.f.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if !closed(ch2) {
		t.Fatal("Restore did not close Changed")
	}
	ch3 := h.f.Changed()
	if err := h.f.Restore([]byte("junk")); err == nil || closed(ch3) {
		t.Fatalf("a failed Restore: err %v, Changed closed %v", err, closed(ch3))
	}
}

func TestWait(t *testing.T) {
	h := newHarness(t, 0)
	ctx := context.Background()
	if err := h.f.Wait(ctx, 0); err != nil {
		t.Fatalf("Wait(0) = %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- h.f.Wait(ctx, 3) }()
	h.ok(AllocateProducerIDs{Count: 1})
	h.ok(AllocateProducerIDs{Count: 1})
	select {
	case err := <-done:
		t.Fatalf("Wait(3) returned %v at index %d", err, h.f.State().Index)
	case <-time.After(20 * time.Millisecond):
	}
	h.fails(AllocateProducerIDs{Count: 0}, ErrInvalidCommand) // a failed command is index 3 too
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait(3) = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait(3) did not return after index 3 applied")
	}
	if err := h.f.Wait(ctx, 2); err != nil {
		t.Fatalf("Wait for a passed index = %v", err)
	}

	// Restore moves the index too.
	other := newHarness(t, 0)
	for range 10 {
		other.ok(AllocateProducerIDs{Count: 1})
	}
	snap, _ := other.f.Snapshot()
	go func() { done <- h.f.Wait(ctx, 10) }()
	if err := h.f.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait(10) across Restore = %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- h.f.Wait(cctx, 100) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context = %v", err)
	}
	dctx, cancel2 := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel2()
	if err := h.f.Wait(dctx, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline = %v", err)
	}
}

func TestApplySkipsReplayedIndexes(t *testing.T) {
	h := newHarness(t, 1)
	h.ok(AllocateProducerIDs{Count: 10})
	before := h.f.State()
	for _, idx := range []uint64{0, 1, h.index} {
		res := h.f.Apply(idx, 1, mustEncode(t, AllocateProducerIDs{Count: 10}))
		if res != (Result{}) {
			t.Fatalf("replayed index %d: %+v", idx, res)
		}
		if h.f.State() != before {
			t.Fatalf("replayed index %d published a state", idx)
		}
	}
	// Indexes may skip (Raft entries this FSM never sees, like no-ops).
	res := h.f.Apply(h.index+5, 2, mustEncode(t, AllocateProducerIDs{Count: 1}))
	if res.ProducerID != 10 || h.f.State().Index != h.index+5 {
		t.Fatalf("after a gap: %+v at index %d", res, h.f.State().Index)
	}
}

// TestConcurrentReaders runs readers against the apply goroutine under -race.
func TestConcurrentReaders(t *testing.T) {
	h := newHarness(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				ch := h.f.Changed()
				s := h.f.State()
				for _, name := range s.TopicNames() {
					tp := s.Topics[name]
					if s.TopicByID(tp.ID) != tp {
						t.Errorf("by-id index disagrees for %q", name)
						return
					}
					_ = len(tp.Partitions[0].Replicas)
				}
				_ = s.BrokerIDs()
				select {
				case <-ch:
				case <-ctx.Done():
				}
			}
		})
	}
	wg.Go(func() {
		_ = h.f.Wait(ctx, 1<<40) // returns at cancel
	})
	for i := range 200 {
		name := "t" + string(rune('a'+i%5))
		h.apply(CreateTopic{Name: name, ID: tid(byte(i)), Partitions: 2, ReplicationFactor: 2})
		h.apply(SetLeader{Topic: tid(byte(i)), Leader: 1, Epoch: int32(i)})
		h.apply(AlterConfigs{Name: name, Configs: map[string]string{"i": string(rune('a' + i%26))}})
		if i%3 == 0 {
			h.apply(DeleteTopic{Name: name})
		}
	}
	cancel()
	wg.Wait()
}
