package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func newTestMux(t *testing.T, mod func(*Config)) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{LocalAddr: raft.ServerAddress(ln.Addr().String()), ClusterID: "c1", Logger: testLogger(),
		RPCTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// serveGroup answers g's RPCs with fn until the test ends.
func serveGroup(t *testing.T, g *GroupTransport, fn func(rpc raft.RPC)) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case rpc := <-g.Consumer():
				fn(rpc)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

func okAppend(rpc raft.RPC) {
	req := rpc.Command.(*raft.AppendEntriesRequest)
	rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: matchIndex(req), Success: true}, nil)
}

func appendReq(prev uint64, n int) *raft.AppendEntriesRequest {
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("leader")}, Term: 1,
		PrevLogEntry: prev, PrevLogTerm: 1, LeaderCommitIndex: prev}
	for i := 1; i <= n; i++ {
		req.Entries = append(req.Entries, &raft.Log{Index: prev + uint64(i), Term: 1, Data: []byte("x")})
	}
	return req
}

func TestConfigValidate(t *testing.T) {
	err := (&Config{MaxFrameSize: 10, PipelineDepth: -1}).Validate()
	for _, want := range []string{"LocalAddr", "ClusterID", "MaxFrameSize", "PipelineDepth"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a complaint about %s", err, want)
		}
	}
	if err := (&Config{LocalAddr: "a:1", ClusterID: "c"}).Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}

func TestHandshakeRefusesOtherCluster(t *testing.T) {
	a := newTestMux(t, nil)
	b := newTestMux(t, func(c *Config) { c.ClusterID = "other" })
	b.Group("g")
	err := a.Group("g").RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
	if err == nil || !strings.Contains(err.Error(), "cluster id mismatch") {
		t.Fatalf("RequestVote across clusters = %v, want a cluster id refusal", err)
	}
	if b.Stats().Refused == 0 || a.Stats().DialFailures == 0 {
		t.Fatalf("stats: a %+v b %+v", a.Stats(), b.Stats())
	}
}

func TestUnknownAndRemovedGroup(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	var remote *RemoteError
	err := a.Group("g").RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
	if !errors.As(err, &remote) || !strings.Contains(err.Error(), "unknown group") {
		t.Fatalf("RPC to an unknown group = %v", err)
	}
	gb := b.Group("g")
	if b.Group("g") != gb {
		t.Fatal("Group is not idempotent")
	}
	serveGroup(t, gb, func(rpc raft.RPC) { rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil) })
	resp := new(raft.RequestVoteResponse)
	if err := a.Group("g").RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 1}, resp); err != nil || !resp.Granted {
		t.Fatalf("RequestVote = %v, %+v", err, resp)
	}
	b.RemoveGroup("g")
	err = a.Group("g").RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 1}, resp)
	if !errors.As(err, &remote) {
		t.Fatalf("RPC to a removed group = %v", err)
	}
	// A closed GroupTransport is replaced, and the old one's Close does not detach the new one.
	old := a.Group("x")
	_ = old.Close()
	fresh := a.Group("x")
	if fresh == old {
		t.Fatal("Group returned a closed transport")
	}
	_ = old.Close()
	if a.group("x") != fresh {
		t.Fatal("closing the old transport detached its replacement")
	}
	if err := old.RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{}, resp); !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("RPC on a closed group transport = %v", err)
	}
}

// TestHostileInput sends garbage and an oversized frame: each closes only its own connection, and
// the Mux keeps serving a healthy peer.
func TestHostileInput(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, func(c *Config) { c.MaxFrameSize = 64 << 10 })
	serveGroup(t, b.Group("g"), func(rpc raft.RPC) { rpc.Respond(&raft.TimeoutNowResponse{}, nil) })

	raw := func(t *testing.T) net.Conn {
		nc, err := net.Dial("tcp", string(b.cfg.LocalAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
		return nc
	}
	nc := raw(t)
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("garbage: connection not closed cleanly: %v", err)
	}

	nc = raw(t)
	_, _ = nc.Write(appendHello(nil, hello{MinVersion: 1, MaxVersion: 1, Kind: connData, ClusterID: "c1", Addr: "evil:1"}))
	br := bufio.NewReader(nc)
	if typ, body, err := readFrame(br, maxHelloLen, nil); err != nil || typ != frameHelloAck {
		t.Fatalf("handshake: %v", err)
	} else if ack, _ := decodeHelloAck(body); ack.Version != wireVersion {
		t.Fatalf("handshake refused: %+v", ack)
	}
	_, _ = nc.Write([]byte{0x10, 0, 0, 0, frameRequest}) // 256 MiB frame header
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("oversized frame: connection not closed cleanly: %v", err)
	}
	eventually(t, time.Second, func() error {
		if b.Stats().ProtocolErrors == 0 || b.Stats().Refused == 0 {
			return errors.New("not counted")
		}
		return nil
	})
	if err := a.Group("g").TimeoutNow("b", b.cfg.LocalAddr, &raft.TimeoutNowRequest{}, new(raft.TimeoutNowResponse)); err != nil {
		t.Fatalf("healthy peer affected: %v", err)
	}
}

// blackhole accepts raft connections, completes the handshake, then never answers.
func blackhole(t *testing.T) raft.ServerAddress {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(nc)
				if _, _, err := readFrame(br, maxHelloLen, nil); err != nil {
					return
				}
				_, _ = nc.Write(appendHelloAck(nil, helloAck{Version: wireVersion}))
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return raft.ServerAddress(ln.Addr().String())
}

// TestDeadPeerIsolation: RPCs to a peer that never answers fail after RPCTimeout, while heartbeats
// and votes to a healthy peer, from the same and other groups, keep flowing; the silent connection
// is dropped; Close returns promptly with RPCs outstanding.
func TestDeadPeerIsolation(t *testing.T) {
	a, b := newTestMux(t, func(c *Config) { c.RPCTimeout = time.Second }), newTestMux(t, nil)
	dead := blackhole(t)
	for _, g := range []string{"g1", "g2"} {
		gb := b.Group(g)
		gb.SetHeartbeatHandler(okAppend)
		serveGroup(t, gb, func(rpc raft.RPC) { rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil) })
	}
	hb := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}, Term: 1}

	var wg sync.WaitGroup
	deadErrs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := a.Group("g1").AppendEntries("d", dead, hb, new(raft.AppendEntriesResponse))
			if err == nil || time.Since(start) > 3*time.Second {
				err = errors.New("blackholed heartbeat did not time out in time")
			} else {
				err = nil
			}
			deadErrs <- err
		}()
	}
	// While those hang, the healthy peer answers within milliseconds.
	for i := 0; i < 20; i++ {
		start := time.Now()
		g := []string{"g1", "g2"}[i%2]
		if err := a.Group(g).AppendEntries("b", b.cfg.LocalAddr, hb, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
		if err := a.Group(g).RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 250*time.Millisecond {
			t.Fatalf("healthy peer RPCs took %v while another peer is dead (RPC timeout 1 s)", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	close(deadErrs)
	for err := range deadErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats(); s.Timeouts == 0 {
		t.Fatalf("timeouts not counted: %+v", s)
	}
	eventually(t, 2*time.Second, func() error {
		l := a.link(dead, connControl)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.cur != nil && !l.cur.isClosed() {
			return errors.New("silent connection still open")
		}
		return nil
	})

	// Close with an RPC outstanding: it returns ErrTransportShutdown promptly.
	errc := make(chan error, 1)
	go func() {
		errc <- a.Group("g2").RequestVote("d", dead, &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	_ = a.Close()
	if err := <-errc; !errors.Is(err, raft.ErrTransportShutdown) && !errors.Is(err, errTimeout) {
		t.Fatalf("outstanding RPC after Close = %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %v with an RPC outstanding (RPC timeout 1 s)", d)
	}
}

func TestHeartbeatPaths(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	var fast, slow atomic.Int32
	gFast := b.Group("fast")
	gFast.SetHeartbeatHandler(func(rpc raft.RPC) { fast.Add(1); okAppend(rpc) })
	serveGroup(t, gFast, func(rpc raft.RPC) { slow.Add(1); okAppend(rpc) })
	serveGroup(t, b.Group("plain"), func(rpc raft.RPC) { slow.Add(1); okAppend(rpc) })
	hb := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}, Term: 3}
	for _, g := range []string{"fast", "plain"} {
		resp := new(raft.AppendEntriesResponse)
		if err := a.Group(g).AppendEntries("b", b.cfg.LocalAddr, hb, resp); err != nil || !resp.Success || resp.Term != 3 {
			t.Fatalf("%s heartbeat: %v %+v", g, err, resp)
		}
	}
	if fast.Load() != 1 || slow.Load() != 1 {
		t.Fatalf("fast path %d, consumer %d; want 1 and 1", fast.Load(), slow.Load())
	}
	// A non-heartbeat AppendEntries never takes the fast path, and is recorded by Acked.
	resp := new(raft.AppendEntriesResponse)
	if err := a.Group("fast").AppendEntries("b", b.cfg.LocalAddr, appendReq(10, 2), resp); err != nil || !resp.Success {
		t.Fatal(err)
	}
	if fast.Load() != 1 || slow.Load() != 2 {
		t.Fatalf("data AppendEntries took the fast path")
	}
	idx, at := a.Acked("fast", b.cfg.LocalAddr)
	if idx != 12 || at.IsZero() {
		t.Fatalf("Acked = %d at %v, want 12", idx, at)
	}
	// A successful heartbeat later refreshes the time, never the index.
	time.Sleep(10 * time.Millisecond)
	if err := a.Group("fast").AppendEntries("b", b.cfg.LocalAddr, hb, new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	if idx2, at2 := a.Acked("fast", b.cfg.LocalAddr); idx2 != 12 || !at2.After(at) {
		t.Fatalf("after a heartbeat Acked = %d at %v, want 12 after %v", idx2, at2, at)
	}
}

// TestPipeline checks order, the depth bound (back-pressure), Acked, and that a rejected request
// closes the pipeline so raft can fall back.
func TestPipeline(t *testing.T) {
	const depth = 3
	a, b := newTestMux(t, func(c *Config) { c.PipelineDepth = depth; c.RPCTimeout = 2 * time.Second }), newTestMux(t, nil)
	release := make(chan struct{})
	var received atomic.Int32
	serveGroup(t, b.Group("g"), func(rpc raft.RPC) {
		received.Add(1)
		<-release
		req := rpc.Command.(*raft.AppendEntriesRequest)
		ok := req.PrevLogEntry != 100
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, LastLog: matchIndex(req), Success: ok}, nil)
	})
	p, err := a.Group("g").AppendEntriesPipeline("b", b.cfg.LocalAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sent := make(chan int, 10)
	go func() {
		for i := 0; i < 6; i++ {
			if _, err := p.AppendEntries(appendReq(uint64(i*10), 10), new(raft.AppendEntriesResponse)); err != nil {
				t.Error(err)
				return
			}
			sent <- i
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if n := len(sent); n != depth {
		t.Fatalf("%d requests accepted with nothing answered, want the depth %d", n, depth)
	}
	close(release)
	for i := 0; i < 6; i++ {
		f := <-p.Consumer()
		if f.Error() != nil || f.Request().PrevLogEntry != uint64(i*10) || f.Response().LastLog != uint64(i*10+10) {
			t.Fatalf("future %d out of order or failed: %v %+v", i, f.Error(), f.Response())
		}
	}
	if idx, _ := a.Acked("g", b.cfg.LocalAddr); idx != 60 {
		t.Fatalf("Acked = %d, want 60", idx)
	}
	// A rejection: raft's decoder stops there, so the pipeline must close itself.
	if _, err := p.AppendEntries(appendReq(100, 1), new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	if f := <-p.Consumer(); f.Response().Success {
		t.Fatal("rejection reported as success")
	}
	eventually(t, time.Second, func() error {
		if _, err := p.AppendEntries(appendReq(110, 1), new(raft.AppendEntriesResponse)); !errors.Is(err, raft.ErrPipelineShutdown) {
			return errors.New("pipeline still open after a rejection")
		}
		return nil
	})
}

func TestPipelineConnectionLoss(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	serveGroup(t, b.Group("g"), func(rpc raft.RPC) {}) // never answers
	p, err := a.Group("g").AppendEntriesPipeline("b", b.cfg.LocalAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.AppendEntries(appendReq(0, 1), new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	l := a.link(b.cfg.LocalAddr, connData)
	l.mu.Lock()
	cur := l.cur
	l.mu.Unlock()
	cur.close(errors.New("test: cut"))
	select {
	case f := <-p.Consumer():
		if f.Error() == nil || f.Response().Success {
			t.Fatalf("future after connection loss: %v %+v", f.Error(), f.Response())
		}
	case <-time.After(time.Second):
		t.Fatal("no future after connection loss")
	}
}

// TestInstallSnapshotStream sends a 3 MiB snapshot (many chunks, beyond the 1 MiB window) and checks
// the bytes; then a receiver that answers without reading, which must not hang the sender or the
// connection.
func TestInstallSnapshotStream(t *testing.T) {
	a, b := newTestMux(t, func(c *Config) { c.RPCTimeout = 2 * time.Second }), newTestMux(t, nil)
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	var mu sync.Mutex // the network is no happens-before edge for the race detector
	var got []byte
	var readErr error
	read := true
	serveGroup(t, b.Group("g"), func(rpc raft.RPC) {
		req, ok := rpc.Command.(*raft.InstallSnapshotRequest)
		if !ok {
			okAppend(rpc)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if read {
			got, readErr = io.ReadAll(rpc.Reader)
		}
		rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: read}, nil)
	})
	setRead := func(v bool) { mu.Lock(); read = v; mu.Unlock() }
	req := &raft.InstallSnapshotRequest{Term: 2, LastLogIndex: 99, Size: int64(len(data))}
	resp := new(raft.InstallSnapshotResponse)
	if err := a.Group("g").InstallSnapshot("b", b.cfg.LocalAddr, req, resp, bytes.NewReader(data)); err != nil || !resp.Success {
		t.Fatalf("InstallSnapshot = %v, %+v", err, resp)
	}
	mu.Lock()
	if readErr != nil || !bytes.Equal(got, data) {
		t.Fatalf("snapshot bytes differ (read error %v, %d of %d bytes)", readErr, len(got), len(data))
	}
	mu.Unlock()
	if idx, _ := a.Acked("g", b.cfg.LocalAddr); idx != 99 || a.Stats().SnapshotsSent != 1 || b.Stats().SnapshotsReceived != 1 {
		t.Fatalf("Acked %d, stats a %+v b %+v", idx, a.Stats(), b.Stats())
	}

	setRead(false)
	start := time.Now()
	resp = new(raft.InstallSnapshotResponse)
	if err := a.Group("g").InstallSnapshot("b", b.cfg.LocalAddr, req, resp, bytes.NewReader(data)); err != nil || resp.Success {
		t.Fatalf("unread snapshot: %v %+v", err, resp)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("unread snapshot took %v", d)
	}
	if err := a.Group("g").AppendEntries("b", b.cfg.LocalAddr, appendReq(1, 1), new(raft.AppendEntriesResponse)); err != nil {
		t.Fatalf("data connection unusable after an early answer: %v", err)
	}
	// A sender whose snapshot reader fails aborts the stream; the receiver's Read fails promptly.
	setRead(true)
	short := io.MultiReader(bytes.NewReader(data[:1<<20]), iotestErrReader{})
	if err := a.Group("g").InstallSnapshot("b", b.cfg.LocalAddr, req, new(raft.InstallSnapshotResponse), short); err == nil {
		t.Fatal("InstallSnapshot with a failing reader succeeded")
	}
	eventually(t, time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if readErr == nil {
			return errors.New("receiver did not see the abort")
		}
		return nil
	})
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestPeerLost: when a peer's Mux goes away, the failed control connection
// is reported once (per PeerLostInterval) with the peer's address; a Mux
// closing its own connections reports nothing.
func TestPeerLost(t *testing.T) {
	type lost struct {
		addr raft.ServerAddress
		at   time.Time
	}
	var mu sync.Mutex
	var aLost, bLost []lost
	a := newTestMux(t, func(c *Config) {
		c.Handler = echoHandler
		c.PeerLost = func(addr raft.ServerAddress, at time.Time) {
			mu.Lock()
			aLost = append(aLost, lost{addr, at})
			mu.Unlock()
		}
	})
	b := newTestMux(t, func(c *Config) {
		c.Handler = echoHandler
		c.PeerLost = func(addr raft.ServerAddress, at time.Time) {
			mu.Lock()
			bLost = append(bLost, lost{addr, at})
			mu.Unlock()
		}
	})
	// Control connections both ways: a's to b and b's to a.
	if _, err := a.Call(context.Background(), b.cfg.LocalAddr, "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Call(context.Background(), a.cfg.LocalAddr, "echo", []byte("y")); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(aLost) == 0 {
			return errors.New("a was not told that b went away")
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // the second connection's failure, if it were reported
	mu.Lock()
	defer mu.Unlock()
	if len(aLost) != 1 || aLost[0].addr != b.cfg.LocalAddr || aLost[0].at.Before(before) {
		t.Fatalf("a was told %+v, want one report of %s after %v", aLost, b.cfg.LocalAddr, before)
	}
	if len(bLost) != 0 {
		t.Fatalf("b closed itself and was told of lost peers: %+v", bLost)
	}
	if s := a.Stats(); s.PeersLost != 1 {
		t.Fatalf("a.Stats().PeersLost = %d, want 1", s.PeersLost)
	}
}
