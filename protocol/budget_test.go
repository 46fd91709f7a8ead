package protocol

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRequestBudgetOrder: reservations are granted in arrival order (a
// small one that would fit waits behind a large one), a reservation larger
// than the budget takes all of it, and a waiter that gives up lets the ones
// behind it through.
func TestRequestBudgetOrder(t *testing.T) {
	b := NewRequestBudget(100)
	ctx := context.Background()
	if n, err := b.acquire(ctx, nil, 60); n != 60 || err != nil {
		t.Fatalf("first: %d %v", n, err)
	}
	type res struct {
		n   int64
		err error
	}
	big, small := make(chan res, 1), make(chan res, 1)
	go func() { n, err := b.acquire(ctx, nil, 50); big <- res{n, err} }()
	waitFor(t, func() bool { return b.Waits() == 1 })
	go func() { n, err := b.acquire(ctx, nil, 10); small <- res{n, err} }()
	waitFor(t, func() bool { return b.Waits() == 2 })
	select {
	case r := <-small:
		t.Fatalf("the small reservation jumped the queue: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(60)
	if r := <-big; r.n != 50 || r.err != nil {
		t.Fatalf("big: %+v", r)
	}
	if r := <-small; r.n != 10 || r.err != nil {
		t.Fatalf("small: %+v", r)
	}
	if held := b.Held(); held != 60 {
		t.Fatalf("held %d, want 60", held)
	}

	// Larger than the budget: takes the whole of it once it is free.
	whole := make(chan res, 1)
	go func() { n, err := b.acquire(ctx, nil, 1000); whole <- res{n, err} }()
	waitFor(t, func() bool { return b.Waits() == 3 })
	// A waiter behind it that gives up does not stay in the way.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := b.acquire(cctx, nil, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("abandoned wait: %v", err)
	}
	b.release(50)
	b.release(10)
	if r := <-whole; r.n != 100 || r.err != nil {
		t.Fatalf("whole: %+v", r)
	}
	stop := make(chan struct{})
	close(stop)
	if _, err := b.acquire(ctx, stop, 1); !errors.Is(err, errShutdown) {
		t.Fatalf("wait during shutdown: %v", err)
	}
	b.release(100)
	if held := b.Held(); held != 0 {
		t.Fatalf("held %d after every release", held)
	}
}

// TestRequestBudgetPushesBack: with a 1,000-byte budget, a client that has
// sent 900 bytes of a frame holds them, and another connection's 300-byte
// request waits (no answer) until the first frame completes and is served;
// then it is answered. A partial frame that never completes gives the
// budget back at its frame timeout. A slow client announcing a frame of
// 100 MiB holds only what it has sent.
func TestRequestBudgetPushesBack(t *testing.T) {
	const frameTimeout = 600 * time.Millisecond
	ts := startServer(t, Config{QueuedMaxRequestBytes: 1000, FrameTimeout: frameTimeout}, newFakeHandler())

	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "budget-test-" + strings.Repeat("x", 250)
	req.ClientSoftwareVersion = "1"
	b := dial(t, ts.addr)
	frame, _ := b.frame(req, 3)
	if len(frame) < 260 || len(frame) > 400 {
		t.Fatalf("request frame of %d bytes", len(frame))
	}

	for _, complete := range []bool{true, false} {
		a := dial(t, ts.addr)
		// 900 bytes of an unknown api key: refused and closed once
		// complete; held in the budget while it arrives.
		garbage := append(sizeOnly(900), bytes.Repeat([]byte{0xff}, 900)...)
		aStart := time.Now()
		a.write(garbage[:len(garbage)-10])
		waitFor(t, func() bool { return ts.Server.requests.Held() == 900 })
		if !complete {
			// b's frame waits for a's to time out, and b's own frame
			// timeout runs meanwhile: started right after a's, it
			// expired together with it (the test raced itself). Start
			// b's half a timeout later, so it has that much to spare.
			time.Sleep(frameTimeout / 2)
		}

		b.write(frame)
		b.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var one [1]byte
		if n, err := b.nc.Read(one[:]); n > 0 || err == nil {
			t.Fatalf("answered while the budget was held (%d bytes)", n)
		}
		if complete {
			a.write(garbage[len(garbage)-10:])
		}
		a.expectClosed(5 * time.Second) // refused once complete, or its frame timed out
		got, resp := b.recv(req)
		if got == 0 || resp.(*kmsg.ApiVersionsResponse).ErrorCode != 0 {
			t.Fatalf("answer %d %+v", got, resp)
		}
		if !complete && time.Since(aStart) < frameTimeout-50*time.Millisecond {
			t.Fatalf("answered %v after the partial frame began; it held the budget until its timeout (%v)", time.Since(aStart), frameTimeout)
		}
		waitFor(t, func() bool { return ts.Server.requests.Held() == 0 })
	}

	// With a 1 MiB budget, a client announcing 100 MiB and sending 100
	// bytes holds the first allocation only, and others are served.
	ts2 := startServer(t, Config{QueuedMaxRequestBytes: 1 << 20}, newFakeHandler())
	slow := dial(t, ts2.addr)
	slow.write(append(sizeOnly(100<<20), make([]byte, 100)...))
	waitFor(t, func() bool { return ts2.Server.requests.Held() == eagerBodyBytes })
	c := dial(t, ts2.addr)
	if resp := c.roundTrip(req, 3).(*kmsg.ApiVersionsResponse); resp.ErrorCode != 0 {
		t.Fatalf("beside a slow client: %+v", resp)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
