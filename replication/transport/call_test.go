package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// echoHandler answers "echo" with the body and "fail" with an error naming it; any other method is
// an error too.
func echoHandler(_ context.Context, from raft.ServerAddress, method string, body []byte) ([]byte, error) {
	switch method {
	case "echo":
		return body, nil
	case "from":
		return []byte(from), nil
	case "fail":
		return []byte("ignored"), fmt.Errorf("metadata: %s", body)
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

// blockingHandler serves "block" by waiting until release is closed or its ctx ends, and passes
// everything else to echoHandler. started receives once per blocked call; cancelled counts the
// handlers that returned because their ctx ended.
type blockingHandler struct {
	release   chan struct{}
	started   chan string
	running   atomic.Int32
	cancelled atomic.Int32
}

func newBlockingHandler() *blockingHandler {
	return &blockingHandler{release: make(chan struct{}), started: make(chan string, 1024)}
}

func (h *blockingHandler) serve(ctx context.Context, from raft.ServerAddress, method string, body []byte) ([]byte, error) {
	if method != "block" {
		return echoHandler(ctx, from, method, body)
	}
	h.running.Add(1)
	defer h.running.Add(-1)
	h.started <- string(body)
	select {
	case <-h.release:
		return append([]byte("released "), body...), nil
	case <-ctx.Done():
		h.cancelled.Add(1)
		return nil, ctx.Err()
	}
}

func (h *blockingHandler) waitStarted(t *testing.T) string {
	t.Helper()
	select {
	case s := <-h.started:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not start")
		return ""
	}
}

func withHandler(h func(context.Context, raft.ServerAddress, string, []byte) ([]byte, error)) func(*Config) {
	return func(c *Config) { c.Handler = h }
}

func TestCallRoundTrip(t *testing.T) {
	a := newTestMux(t, withHandler(echoHandler))
	b := newTestMux(t, withHandler(echoHandler))
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: the reader's owned-buffer path
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"text", []byte("create topic orders")},
		{"empty", []byte{}},
		{"nil", nil},
		{"binary", []byte{0, 1, 2, 0xff}},
		{"1MiB", big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Call(ctx, b.cfg.LocalAddr, "echo", tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.body) || (got == nil) != (tc.body == nil) {
				t.Fatalf("echo of %d bytes (nil %v) = %d bytes (nil %v)", len(tc.body), tc.body == nil, len(got), got == nil)
			}
		})
	}
	// The handler sees the caller's advertised address; a call to self goes over the network.
	if got, err := a.Call(ctx, b.cfg.LocalAddr, "from", nil); err != nil || string(got) != string(a.cfg.LocalAddr) {
		t.Fatalf("from = %q, %v; want %q", got, err, a.cfg.LocalAddr)
	}
	if got, err := a.Call(ctx, a.cfg.LocalAddr, "echo", []byte("self")); err != nil || string(got) != "self" {
		t.Fatalf("call to self = %q, %v", got, err)
	}
	if _, err := a.Call(ctx, b.cfg.LocalAddr, "", nil); err == nil || !strings.Contains(err.Error(), `unknown method ""`) {
		t.Fatalf("empty method = %v", err)
	}
	if s := b.Stats(); s.InboundConns != 1 {
		t.Fatalf("calls used %d inbound connections on b, want the control connection only", s.InboundConns)
	}
}

func TestCallRemoteError(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, withHandler(echoHandler))
	got, err := a.Call(context.Background(), b.cfg.LocalAddr, "fail", []byte("topic exists"))
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Message != "metadata: topic exists" {
		t.Fatalf("Call = %v (%T), want *RemoteError with the handler's message", err, err)
	}
	if got != nil {
		t.Fatalf("an error answer returned a body: %q", got)
	}
	if !strings.Contains(err.Error(), "remote") {
		t.Fatalf("Error() = %q does not say the error is remote", err)
	}
	// A long error is truncated, not refused.
	_, err = a.Call(context.Background(), b.cfg.LocalAddr, "fail", bytes.Repeat([]byte("x"), 3*maxErrLen))
	if !errors.As(err, &remote) || len(remote.Message) != maxErrLen {
		t.Fatalf("long error: %v", err)
	}
}

func TestCallNoHandler(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	_, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", nil)
	var remote *RemoteError
	if !errors.As(err, &remote) || !strings.Contains(err.Error(), "no call handler") {
		t.Fatalf("Call to a Mux without a handler = %v", err)
	}
}

// TestCallTransportErrors: failures to reach the peer are ordinary errors, not RemoteErrors.
func TestCallTransportErrors(t *testing.T) {
	a := newTestMux(t, nil)
	other := newTestMux(t, func(c *Config) { c.ClusterID = "other"; c.Handler = echoHandler })
	var remote *RemoteError
	_, err := a.Call(context.Background(), other.cfg.LocalAddr, "echo", nil)
	if err == nil || errors.As(err, &remote) || !strings.Contains(err.Error(), "cluster id mismatch") {
		t.Fatalf("Call across clusters = %v, want a transport error naming the cluster id", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := raft.ServerAddress(ln.Addr().String())
	_ = ln.Close()
	if _, err := a.Call(context.Background(), gone, "echo", nil); err == nil || errors.As(err, &remote) {
		t.Fatalf("Call to a closed port = %v", err)
	}
}

// TestCallSizeLimits: a request too large for a frame is refused before it is sent, and an answer
// too large becomes an error instead of a frame that would make the caller drop the connection.
func TestCallSizeLimits(t *testing.T) {
	huge := make([]byte, 64<<10)
	small := func(c *Config) {
		c.MaxFrameSize = 64 << 10
		c.Handler = func(ctx context.Context, from raft.ServerAddress, method string, body []byte) ([]byte, error) {
			if method == "huge" {
				return huge, nil
			}
			return echoHandler(ctx, from, method, body)
		}
	}
	a, b := newTestMux(t, small), newTestMux(t, small)
	var remote *RemoteError
	if _, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", huge); err == nil || errors.As(err, &remote) ||
		!strings.Contains(err.Error(), "MaxFrameSize") {
		t.Fatalf("oversized request = %v", err)
	}
	if a.Stats().Dials != 0 {
		t.Fatal("an oversized request dialed the peer")
	}
	if _, err := a.Call(context.Background(), b.cfg.LocalAddr, "huge", nil); !errors.As(err, &remote) ||
		!strings.Contains(err.Error(), "exceeds MaxFrameSize") {
		t.Fatalf("oversized answer = %v", err)
	}
	if got, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", []byte("still up")); err != nil || string(got) != "still up" {
		t.Fatalf("after an oversized answer: %q, %v", got, err)
	}
	if a.Stats().ProtocolErrors != 0 || b.Stats().ProtocolErrors != 0 || a.Stats().Dials != 1 {
		t.Fatalf("want one connection and no protocol errors: a %+v b %+v", a.Stats(), b.Stats())
	}
}

// TestCallContext: a caller whose ctx ends while the handler blocks returns promptly with ctx's
// error; without a deadline RPCTimeout applies, with one the deadline alone; the connection and the
// Mux stay usable, and late answers are dropped.
func TestCallContext(t *testing.T) {
	h := newBlockingHandler()
	a, b := newTestMux(t, nil), newTestMux(t, withHandler(h.serve))
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(h.release) }) }
	t.Cleanup(release)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, b.cfg.LocalAddr, "block", []byte("cancelled"))
		errc <- err
	}()
	h.waitStarted(t)
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != context.Canceled {
			t.Fatalf("cancelled Call = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("cancelled Call returned after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled Call did not return")
	}
	if _, err := a.Call(ctx, b.cfg.LocalAddr, "echo", nil); err != context.Canceled {
		t.Fatalf("Call with a cancelled ctx = %v", err)
	}

	// A deadline shorter than RPCTimeout ends the wait with DeadlineExceeded.
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	if _, err := a.Call(dctx, b.cfg.LocalAddr, "block", []byte("deadline")); err != context.DeadlineExceeded {
		t.Fatalf("Call past its deadline = %v", err)
	}
	h.waitStarted(t)

	// A deadline longer than RPCTimeout (300 ms here) is honoured: a caller may wait for a slow
	// command.
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	type result struct {
		body []byte
		err  error
	}
	long := make(chan result, 1)
	go func() {
		body, err := a.Call(lctx, b.cfg.LocalAddr, "block", []byte("long"))
		long <- result{body, err}
	}()
	h.waitStarted(t)

	// Without a deadline, RPCTimeout bounds the wait, and the slow handler does not get the
	// connection closed as silent.
	start = time.Now()
	if _, err := a.Call(context.Background(), b.cfg.LocalAddr, "block", []byte("timeout")); !errors.Is(err, errTimeout) {
		t.Fatalf("Call without a deadline = %v, want a timeout", err)
	} else if d := time.Since(start); d < a.cfg.RPCTimeout || d > 5*a.cfg.RPCTimeout {
		t.Fatalf("timed out after %v, RPCTimeout %v", d, a.cfg.RPCTimeout)
	}
	h.waitStarted(t)
	select {
	case r := <-long:
		t.Fatalf("Call with a 10 s deadline returned after RPCTimeout: %q, %v", r.body, r.err)
	default:
	}
	if got, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", []byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("Call after cancellations = %q, %v", got, err)
	}

	// Release the blocked handlers: the long call gets its answer, the late answers to the
	// abandoned calls are dropped, and the connection carries on.
	release()
	r := <-long
	if r.err != nil || string(r.body) != "released long" {
		t.Fatalf("long Call = %q, %v", r.body, r.err)
	}
	eventually(t, 5*time.Second, func() error {
		if n := h.running.Load(); n != 0 {
			return fmt.Errorf("%d handlers still running", n)
		}
		return nil
	})
	if got, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", []byte("late")); err != nil || string(got) != "late" {
		t.Fatalf("Call after late answers = %q, %v", got, err)
	}
	if s := a.Stats(); s.OutboundConns != 1 || s.Dials != 1 || s.ProtocolErrors != 0 {
		t.Fatalf("caller stats %+v: want one connection throughout", s)
	}
	if h.cancelled.Load() != 0 {
		t.Fatal("a caller giving up cancelled the remote handler's ctx")
	}
}

// TestCallConcurrent: many calls from several goroutines at once each get their own answer.
func TestCallConcurrent(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, withHandler(echoHandler))
	const goroutines, perG = 8, 25
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*perG)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				want := fmt.Sprintf("g%d-call%d-%s", g, i, strings.Repeat("x", (g*perG+i)%300))
				method := "echo"
				if i%5 == 4 {
					method = "fail"
				}
				got, err := a.Call(ctx, b.cfg.LocalAddr, method, []byte(want))
				var remote *RemoteError
				switch {
				case method == "fail" && (!errors.As(err, &remote) || remote.Message != "metadata: "+want):
					errs <- fmt.Errorf("fail %s: got %v", want, err)
				case method == "echo" && (err != nil || string(got) != want):
					errs <- fmt.Errorf("echo %s: got %q, %v", want, got, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCallConcurrencyLimit: at most maxCalls handlers run per connection; one more Call is refused
// at once, and the slots come back when handlers return.
func TestCallConcurrencyLimit(t *testing.T) {
	h := newBlockingHandler()
	a, b := newTestMux(t, nil), newTestMux(t, withHandler(h.serve))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, maxCalls)
	for i := range maxCalls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("c%d", i)
			if got, err := a.Call(ctx, b.cfg.LocalAddr, "block", []byte(want)); err != nil || string(got) != "released "+want {
				errs <- fmt.Errorf("blocked call %s = %q, %v", want, got, err)
			}
		}()
	}
	for range maxCalls {
		h.waitStarted(t)
	}
	start := time.Now()
	_, err := a.Call(ctx, b.cfg.LocalAddr, "echo", nil)
	var remote *RemoteError
	if !errors.As(err, &remote) || !strings.Contains(err.Error(), "too many concurrent calls") {
		t.Fatalf("Call beyond the limit = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v", d)
	}
	close(h.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, err := a.Call(ctx, b.cfg.LocalAddr, "echo", []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("Call after the handlers returned = %q, %v", got, err)
	}
}

// TestCallDoesNotBlockRaft: while a handler blocks, another Call, votes and heartbeats on the same
// control connection are answered at once.
func TestCallDoesNotBlockRaft(t *testing.T) {
	h := newBlockingHandler()
	a, b := newTestMux(t, nil), newTestMux(t, withHandler(h.serve))
	gb := b.Group("g")
	gb.SetHeartbeatHandler(okAppend)
	serveGroup(t, gb, func(rpc raft.RPC) { rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil) })

	// The blocked Call's deadline outlives the rounds below however slow the machine is (without
	// one, RPCTimeout would end it after 300 ms).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	blocked := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, b.cfg.LocalAddr, "block", []byte("slow"))
		blocked <- err
	}()
	h.waitStarted(t)
	hb := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}, Term: 1}
	for i := range 10 {
		start := time.Now()
		want := fmt.Sprintf("fast %d", i)
		if got, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", []byte(want)); err != nil || string(got) != want {
			t.Fatalf("Call while another blocks = %q, %v", got, err)
		}
		vote := new(raft.RequestVoteResponse)
		if err := a.Group("g").RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 1}, vote); err != nil || !vote.Granted {
			t.Fatalf("RequestVote while a Call blocks = %v, %+v", err, vote)
		}
		if err := a.Group("g").AppendEntries("b", b.cfg.LocalAddr, hb, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatalf("heartbeat while a Call blocks = %v", err)
		}
		if d := time.Since(start); d > 250*time.Millisecond {
			t.Fatalf("round %d took %v while a Call blocks", i, d)
		}
	}
	if a.Stats().OutboundConns != 1 {
		t.Fatalf("outbound connections %d: votes, heartbeats and Calls share the control connection", a.Stats().OutboundConns)
	}
	select {
	case err := <-blocked:
		t.Fatalf("blocked Call returned early: %v", err)
	default:
	}
	close(h.release)
	if err := <-blocked; err != nil {
		t.Fatalf("blocked Call after release = %v", err)
	}
}

// TestCallClose: closing the callee fails outstanding Calls with a transport error and cancels its
// handlers' contexts (Close waits for them); closing the caller fails its Calls with
// raft.ErrTransportShutdown, and the callee's handlers see the connection die.
func TestCallClose(t *testing.T) {
	t.Run("callee", func(t *testing.T) {
		h := newBlockingHandler()
		a, b := newTestMux(t, nil), newTestMux(t, withHandler(h.serve))
		const n = 3
		errc := make(chan error, n)
		for i := range n {
			go func() {
				_, err := a.Call(context.Background(), b.cfg.LocalAddr, "block", []byte{byte(i)})
				errc <- err
			}()
		}
		for range n {
			h.waitStarted(t)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if c := h.cancelled.Load(); c != n {
			t.Fatalf("%d of %d handler contexts cancelled when Close returned", c, n)
		}
		for range n {
			err := <-errc
			var remote *RemoteError
			if err == nil || errors.As(err, &remote) {
				t.Fatalf("Call to a closing peer = %v, want a transport error", err)
			}
		}
		if _, err := b.Call(context.Background(), a.cfg.LocalAddr, "echo", nil); !errors.Is(err, raft.ErrTransportShutdown) {
			t.Fatalf("Call on a closed Mux = %v", err)
		}
	})
	t.Run("caller", func(t *testing.T) {
		h := newBlockingHandler()
		a, b := newTestMux(t, nil), newTestMux(t, withHandler(h.serve))
		errc := make(chan error, 1)
		go func() {
			_, err := a.Call(context.Background(), b.cfg.LocalAddr, "block", nil)
			errc <- err
		}()
		h.waitStarted(t)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, raft.ErrTransportShutdown) {
			t.Fatalf("outstanding Call on Close = %v", err)
		}
		eventually(t, 5*time.Second, func() error {
			if h.cancelled.Load() != 1 {
				return errors.New("handler ctx not cancelled after the caller's connection died")
			}
			return nil
		})
	})
}

// TestCallHostile: a Call naming a group, or sent on a data connection, closes that connection.
func TestCallHostile(t *testing.T) {
	b := newTestMux(t, withHandler(echoHandler))
	for _, tc := range []struct {
		name  string
		kind  byte
		group string
	}{
		{"data connection", connData, ""},
		{"group named", connControl, "g"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats().ProtocolErrors
			nc, err := net.Dial("tcp", string(b.cfg.LocalAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = nc.Write(appendHello(nil, hello{MinVersion: 1, MaxVersion: 1, Kind: tc.kind, ClusterID: "c1", Addr: "evil:1"}))
			br := bufio.NewReader(nc)
			if typ, _, err := readFrame(br, maxHelloLen, nil); err != nil || typ != frameHelloAck {
				t.Fatalf("handshake: %v", err)
			}
			req, _ := appendRequest(nil, 1, tc.group, &callRequest{Method: "echo", Body: []byte("x")})
			_, _ = nc.Write(req)
			if n, err := io.Copy(io.Discard, br); err != nil || n != 0 {
				t.Fatalf("connection not closed without an answer: %d bytes, %v", n, err)
			}
			eventually(t, time.Second, func() error {
				if b.Stats().ProtocolErrors == before {
					return errors.New("not counted as a protocol error")
				}
				return nil
			})
		})
	}
}
