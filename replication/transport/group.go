package transport

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// errGroupGone answers RPCs that reach a group after it was detached (raft shut down or removed).
var errGroupGone = errors.New("transport: group closed")

// errGroupBusy answers an RPC that would push a group's inbound queue past its byte cap: a
// well-behaved leader never gets there (its pipeline is capped at MaxInflightBytes), so it means
// several leaders or a misbehaving peer; raft retries.
var errGroupBusy = errors.New("transport: group inbound queue full")

// inboundCapFactor times MaxInflightBytes is a group's inbound queue cap.
const inboundCapFactor = 4

// GroupTransport is the raft.Transport of one raft group on a Mux. It also implements
// raft.WithPreVote (without it hashicorp/raft silently disables pre-vote) and raft.WithClose, whose
// Close only detaches the group: the Mux and its connections stay up for the other groups.
type GroupTransport struct {
	m         *Mux
	id        string
	consumeCh chan raft.RPC
	hbFn      atomic.Pointer[func(raft.RPC)]
	voteGate  atomic.Pointer[func() bool] // see votegate.go
	closed    chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	queue   []*inbound // requests waiting for raft, in arrival order
	qBytes  int
	running bool // a dispatch goroutine is draining queue
	pipes   map[*pipeline]struct{}

	ackMu sync.Mutex
	acks  map[raft.ServerAddress]ackState

	// appendAt is when the group last received an AppendEntries with a log position (not a
	// heartbeat), in Unix nanoseconds; 0 for never. See LastAppend.
	appendAt atomic.Int64
}

type ackState struct {
	index uint64
	at    time.Time
}

var (
	_ raft.Transport   = (*GroupTransport)(nil)
	_ raft.WithPreVote = (*GroupTransport)(nil)
	_ raft.WithClose   = (*GroupTransport)(nil)
)

func newGroup(m *Mux, id string) *GroupTransport {
	return &GroupTransport{
		m:         m,
		id:        id,
		consumeCh: make(chan raft.RPC),
		closed:    make(chan struct{}),
		pipes:     make(map[*pipeline]struct{}),
		acks:      make(map[raft.ServerAddress]ackState),
	}
}

// Consumer implements raft.Transport.
func (g *GroupTransport) Consumer() <-chan raft.RPC { return g.consumeCh }

// LocalAddr implements raft.Transport.
func (g *GroupTransport) LocalAddr() raft.ServerAddress { return g.m.cfg.LocalAddr }

// EncodePeer implements raft.Transport.
func (g *GroupTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer implements raft.Transport.
func (g *GroupTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler implements raft.Transport. The handler runs on the reader goroutine of the
// control connection, inline with the other groups' heartbeats of the same batch: raft's handler
// does no disk I/O except persisting a newer term.
func (g *GroupTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		g.hbFn.Store(nil)
		return
	}
	g.hbFn.Store(&cb)
}

// Close implements raft.WithClose: it detaches the group from the Mux (raft calls it on Shutdown).
func (g *GroupTransport) Close() error {
	g.m.removeGroup(g)
	return nil
}

func (g *GroupTransport) isClosed() bool {
	select {
	case <-g.closed:
		return true
	default:
		return false
	}
}

// detach fails the group's outstanding and future RPCs and closes its pipelines.
func (g *GroupTransport) detach() {
	g.closeOnce.Do(func() {
		close(g.closed)
		g.mu.Lock()
		pipes := g.pipes
		g.pipes = map[*pipeline]struct{}{}
		g.mu.Unlock()
		for p := range pipes {
			_ = p.Close()
		}
	})
}

// AppendEntries implements raft.Transport. Heartbeats (no log position) go on the control
// connection, batched with other groups'; every other AppendEntries, empty ones included, goes on
// the data connection so that it stays in order with the group's pipelined data. Like every
// outbound RPC it goes to Mux.Resolve(id, target), and the acknowledgement is recorded under that
// address.
func (g *GroupTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress,
	args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	target = g.m.Resolve(id, target)
	if isHeartbeat(args) {
		err := g.call(target, connControl, rpcAppendEntries, args, resp)
		if err == nil && resp.Success {
			g.recordContact(target)
		}
		return err
	}
	if err := g.call(target, connData, rpcAppendEntries, args, resp); err != nil {
		return err
	}
	if resp.Success {
		g.recordAck(target, matchIndex(args))
	}
	return nil
}

// RequestVote implements raft.Transport (control connection).
func (g *GroupTransport) RequestVote(id raft.ServerID, target raft.ServerAddress,
	args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return g.call(g.m.Resolve(id, target), connControl, rpcRequestVote, args, resp)
}

// RequestPreVote implements raft.WithPreVote (control connection).
func (g *GroupTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress,
	args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return g.call(g.m.Resolve(id, target), connControl, rpcRequestPreVote, args, resp)
}

// TimeoutNow implements raft.Transport (control connection).
func (g *GroupTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress,
	args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return g.call(g.m.Resolve(id, target), connControl, rpcTimeoutNow, args, resp)
}

// prepare checks the group can send and returns a live connection and a fresh request id. target
// is already resolved.
func (g *GroupTransport) prepare(target raft.ServerAddress, kind byte) (*clientConn, uint64, error) {
	if g.isClosed() {
		return nil, 0, raft.ErrTransportShutdown
	}
	if len(g.id) > maxGroupIDLen {
		return nil, 0, fmt.Errorf("transport: group id longer than %d bytes", maxGroupIDLen)
	}
	cc, err := g.m.link(target, kind).get(g.closed)
	if err != nil {
		return nil, 0, err
	}
	return cc, g.m.reqID.Add(1), nil
}

// call sends one request and waits up to RPCTimeout for its answer, decoded into resp.
func (g *GroupTransport) call(target raft.ServerAddress, connKind, kind byte, args, resp any) error {
	cc, id, err := g.prepare(target, connKind)
	if err != nil {
		return err
	}
	c := newCall(id, kind, resp)
	if hb, ok := args.(*raft.AppendEntriesRequest); ok && connKind == connControl {
		err = cc.sendHeartbeat(c, g.id, hb)
	} else {
		var frame *[]byte
		if frame, err = encodeRequest(id, g.id, args, g.m.cfg.MaxFrameSize); err != nil {
			return err
		}
		err = cc.send(c, frame)
	}
	if err != nil {
		return err
	}
	return cc.wait(c, g.m.cfg.RPCTimeout, g.closed)
}

// matchIndex is the follower log index a successful AppendEntries proves: the request's last entry,
// or its PrevLogEntry when it carries none. resp.LastLog is not used: on success it may include a
// stale tail the request never checked.
func matchIndex(a *raft.AppendEntriesRequest) uint64 {
	if n := len(a.Entries); n > 0 {
		return a.Entries[n-1].Index
	}
	return a.PrevLogEntry
}

func (g *GroupTransport) recordAck(peer raft.ServerAddress, index uint64) {
	g.ackMu.Lock()
	g.acks[peer] = ackState{index: index, at: time.Now()}
	g.ackMu.Unlock()
}

// recordContact notes a successful heartbeat: the follower is alive and
// follows this leader, so its acknowledgement is fresh even while the
// group writes nothing (its index stays what entries last proved).
func (g *GroupTransport) recordContact(peer raft.ServerAddress) {
	g.ackMu.Lock()
	a := g.acks[peer]
	a.at = time.Now()
	g.acks[peer] = a
	g.ackMu.Unlock()
}

func (g *GroupTransport) acked(peer raft.ServerAddress) (uint64, time.Time) {
	g.ackMu.Lock()
	defer g.ackMu.Unlock()
	a := g.acks[peer]
	return a.index, a.at
}

// fastHeartbeat runs raft's heartbeat handler inline; ok is false when none is set.
func (g *GroupTransport) fastHeartbeat(req *raft.AppendEntriesRequest) (resp any, err error, ok bool) {
	fn := g.hbFn.Load()
	if fn == nil || g.isClosed() {
		return nil, nil, false
	}
	ch := respChPool.Get().(chan raft.RPCResponse)
	(*fn)(raft.RPC{Command: req, RespChan: ch})
	select {
	case r := <-ch:
		respChPool.Put(ch)
		return r.Response, r.Error, true
	default:
		// raft drops heartbeats while it shuts down; the channel is not reused in case it answers late.
		return nil, errGroupGone, true
	}
}

// LastAppend is when the group last received an AppendEntries that carries a log position (entries,
// or an empty append that tells the commit index) from a leader; zero if none since the group was
// created. Heartbeats do not count: a leader keeps them going while its replication to this node
// backs off after failures (hashicorp/raft: exponentially, up to 10 s), so only an append shows
// that the leader replicates to this node again, for example after a restart.
func (g *GroupTransport) LastAppend() time.Time {
	if ns := g.appendAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// enqueue adds an inbound request to the group's queue and makes sure a dispatch goroutine drains it.
// It never blocks: the caller is a connection's reader shared by every group.
func (g *GroupTransport) enqueue(in *inbound) error {
	if req, ok := in.cmd.(*raft.AppendEntriesRequest); ok && in.kind == rpcAppendEntries && !isHeartbeat(req) {
		g.appendAt.Store(time.Now().UnixNano())
	}
	g.mu.Lock()
	if g.isClosed() {
		g.mu.Unlock()
		return errGroupGone
	}
	if len(g.queue) > 0 && g.qBytes+in.size > inboundCapFactor*g.m.cfg.MaxInflightBytes {
		g.mu.Unlock()
		return errGroupBusy
	}
	g.queue = append(g.queue, in)
	g.qBytes += in.size
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start && !g.m.goFunc(g.dispatch) {
		g.mu.Lock()
		g.queue, g.qBytes, g.running = nil, 0, false
		g.mu.Unlock()
		return raft.ErrTransportShutdown
	}
	return nil
}

// dispatch hands queued requests to raft one at a time, in arrival order, and writes each answer
// before taking the next (raft processes a group's RPCs serially anyway). It exits when the queue is
// empty, so an idle group costs no goroutine.
func (g *GroupTransport) dispatch() {
	respCh := make(chan raft.RPCResponse, 1)
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.queue, g.running = nil, false
			g.mu.Unlock()
			return
		}
		in := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		g.qBytes -= in.size
		g.mu.Unlock()

		if in.sc.isClosed() {
			continue // nobody to answer; the dialer already failed the call
		}
		rpc := raft.RPC{Command: in.cmd, RespChan: respCh}
		if in.stream != nil {
			rpc.Reader = in.stream
		}
		var r raft.RPCResponse
		select {
		case g.consumeCh <- rpc:
			select {
			case r = <-respCh:
			case <-g.closed:
				r.Error = errGroupGone
				respCh = make(chan raft.RPCResponse, 1) // raft may still answer into the old one
			case <-g.m.done:
				return
			}
		case <-g.closed:
			r.Error = errGroupGone
		case <-g.m.done:
			return
		}
		if in.stream != nil {
			in.sc.finishStream(in.stream)
			if r.Error == nil {
				g.m.stats.snapshotsReceived.Add(1)
			}
		}
		in.sc.respond(in.id, in.kind, r.Response, r.Error)
	}
}
