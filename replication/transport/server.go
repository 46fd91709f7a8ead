package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// errUnknownGroup answers an RPC for a group this node does not serve (not created yet, or removed).
var errUnknownGroup = errors.New("transport: unknown group")

// serverConn is an inbound connection: it decodes requests, hands them to the local groups, and
// writes their answers. Its reader never blocks on a group: requests go into the group's queue (see
// GroupTransport.enqueue), so one slow group cannot stall the others sharing the connection.
type serverConn struct {
	wire
	streams map[uint64]*snapRecv // InstallSnapshot streams by request id, under wire.mu

	// Call handlers (control connections only, see call.go): callCtx is cancelled when the
	// connection closes or the Mux does; calls counts the handlers running, capped at maxCalls.
	callCtx    context.Context
	cancelCall context.CancelFunc
	calls      atomic.Int32

	// The RPCHeader last passed to Config.Announce from this connection; reader goroutine only.
	annID, annAddr string
}

func newServerConn(m *Mux, nc net.Conn, br *bufio.Reader, peer raft.ServerAddress, kind byte) *serverConn {
	sc := &serverConn{streams: make(map[uint64]*snapRecv)}
	sc.init(m, nc, br, peer, kind, "in")
	sc.callCtx, sc.cancelCall = context.WithCancel(m.ctx)
	sc.onClose = func(err error) {
		sc.cancelCall()
		sc.abortStreams(err)
	}
	return sc
}

// respond queues the answer to request id. A closed connection drops it: the dialer has already
// failed the call.
func (sc *serverConn) respond(id uint64, kind byte, resp any, err error) {
	b := getBuf(0)
	*b = appendResponse(*b, id, kind, resp, err)
	_ = sc.enqueue(b)
}

// handle serves one frame; owned means body is this frame's own buffer, which decoded requests and
// snapshot chunks may keep.
func (sc *serverConn) handle(typ byte, body []byte, owned bool) error {
	d := decoder{b: body, alias: owned}
	switch typ {
	case frameRequest:
		return sc.handleRequest(&d, len(body))
	case frameHeartbeats:
		return sc.handleHeartbeats(&d)
	case frameSnapshotChunk:
		id := d.uvarint()
		if d.err != nil {
			return d.err
		}
		return sc.chunk(id, d.b, owned)
	case frameSnapshotAbort:
		id := d.uvarint()
		reason := d.string(maxErrLen)
		if err := d.finish(); err != nil {
			return err
		}
		if s := sc.takeStream(id); s != nil {
			s.fail(&RemoteError{Message: "transport: snapshot aborted by sender: " + reason})
		}
		return nil
	}
	return fmt.Errorf("transport: unexpected frame type %d on an inbound connection", typ)
}

func (sc *serverConn) handleRequest(d *decoder, size int) error {
	id, group, kind := d.requestHead()
	msg := d.request(kind)
	if err := d.finish(); err != nil {
		return err
	}
	if req, ok := msg.(*callRequest); ok {
		if sc.kind != connControl || group != "" {
			return errors.New("transport: Call on a data connection or naming a group")
		}
		sc.serveCall(id, req)
		return nil
	}
	sc.announce(msg, kind == rpcRequestVote || kind == rpcRequestPreVote || kind == rpcTimeoutNow)
	g := sc.m.group(group)
	if g == nil {
		sc.m.stats.unknownGroup.Add(1)
		sc.respond(id, kind, nil, fmt.Errorf("%w %q on %s", errUnknownGroup, group, sc.m.cfg.LocalAddr))
		return nil
	}
	if g.refuseVote(sc, id, kind, msg) {
		return nil
	}
	in := &inbound{sc: sc, id: id, kind: kind, cmd: msg, size: size}
	if req, ok := msg.(*raft.InstallSnapshotRequest); ok {
		if sc.kind != connData {
			return errors.New("transport: InstallSnapshot on a control connection")
		}
		in.stream = sc.openStream(id, req.Size)
		if in.stream == nil {
			return fmt.Errorf("transport: duplicate snapshot stream %d", id)
		}
	}
	if err := g.enqueue(in); err != nil {
		if in.stream != nil {
			sc.takeStream(id)
		}
		sc.respond(id, kind, nil, err)
	}
	return nil
}

// handleHeartbeats serves one batch: heartbeats of groups with a heartbeat handler are answered
// inline and together in one frame; the rest go through the groups' queues like any request.
func (sc *serverConn) handleHeartbeats(d *decoder) error {
	n := d.count(minHBItem)
	out := getBuf(0)
	defer putBuf(out)
	answered := 0
	for i := 0; i < n; i++ {
		id := d.uvarint()
		group := d.string(maxGroupIDLen)
		req := new(raft.AppendEntriesRequest)
		d.decodeInto(req)
		if d.err != nil {
			return d.err
		}
		sc.announce(req, false)
		g := sc.m.group(group)
		if g == nil {
			sc.m.stats.unknownGroup.Add(1)
			*out = appendResponseItem(*out, id, rpcAppendEntries, nil,
				fmt.Errorf("%w %q on %s", errUnknownGroup, group, sc.m.cfg.LocalAddr))
			answered++
			continue
		}
		// Re-check the shape: only a real heartbeat may take raft's fast path, which runs outside
		// raft's main goroutine.
		if isHeartbeat(req) {
			if resp, err, ok := g.fastHeartbeat(req); ok {
				*out = appendResponseItem(*out, id, rpcAppendEntries, resp, err)
				answered++
				continue
			}
		}
		if err := g.enqueue(&inbound{sc: sc, id: id, kind: rpcAppendEntries, cmd: req, size: 128}); err != nil {
			*out = appendResponseItem(*out, id, rpcAppendEntries, nil, err)
			answered++
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	if answered > 0 {
		b := getBuf(len(*out) + 16)
		*b = appendBatchFrame(*b, frameHeartbeatResponses, answered, *out)
		_ = sc.enqueue(b)
	}
	return nil
}

// announce tells Config.Announce who sent a raft request and from which address, as its RPCHeader
// says: for votes, pre-votes and TimeoutNow always (they are rare, and a candidate nobody reaches
// keeps sending them, so a receiver that lost the address learns it again), else only when the
// header differs from the previous one on this connection, which keeps the per-request cost of
// AppendEntries and heartbeats to two string comparisons.
func (sc *serverConn) announce(msg any, always bool) {
	fn := sc.m.cfg.Announce
	if fn == nil {
		return
	}
	w, ok := msg.(raft.WithRPCHeader)
	if !ok {
		return
	}
	h := w.GetRPCHeader()
	if len(h.ID) == 0 || len(h.Addr) == 0 {
		return
	}
	if !always && string(h.ID) == sc.annID && string(h.Addr) == sc.annAddr {
		return
	}
	sc.annID, sc.annAddr = string(h.ID), string(h.Addr)
	fn(raft.ServerID(sc.annID), raft.ServerAddress(sc.annAddr))
}

// openStream registers the receiving end of an InstallSnapshot stream; nil if the id is taken.
func (sc *serverConn) openStream(id uint64, size int64) *snapRecv {
	s := newSnapRecv(sc, id, size)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		s.err = sc.err
		return s
	}
	if sc.streams[id] != nil {
		return nil
	}
	sc.streams[id] = s
	return s
}

func (sc *serverConn) takeStream(id uint64) *snapRecv {
	sc.mu.Lock()
	s := sc.streams[id]
	delete(sc.streams, id)
	sc.mu.Unlock()
	return s
}

// chunk delivers snapshot bytes to their stream. Chunks for an unknown id belong to a stream that was
// already answered and dropped; they are ignored (the sender stops when it sees the answer).
func (sc *serverConn) chunk(id uint64, data []byte, owned bool) error {
	sc.mu.Lock()
	s := sc.streams[id]
	sc.mu.Unlock()
	if s == nil {
		return nil
	}
	done, err := s.push(data, owned)
	if done {
		sc.takeStream(id)
	}
	return err
}

// finishStream is called once raft has answered the InstallSnapshot: the stream stops buffering, and
// is dropped now if it is complete or later when its remaining chunks or the sender's abort arrive.
func (sc *serverConn) finishStream(s *snapRecv) {
	if s.finish() {
		sc.mu.Lock()
		if sc.streams[s.id] == s {
			delete(sc.streams, s.id)
		}
		sc.mu.Unlock()
	}
}

func (sc *serverConn) sendCredit(id uint64, n int64) {
	b := getBuf(0)
	*b = appendCredit(*b, id, uint64(n))
	_ = sc.enqueue(b)
}

func (sc *serverConn) abortStreams(err error) {
	sc.mu.Lock()
	streams := sc.streams
	sc.streams = map[uint64]*snapRecv{}
	sc.mu.Unlock()
	for _, s := range streams {
		s.fail(err)
	}
}

// inbound is one request waiting in a group's queue.
type inbound struct {
	sc     *serverConn
	id     uint64
	kind   byte
	cmd    any
	stream *snapRecv
	size   int // approximate memory held, for the queue's byte cap
}

// respChPool recycles the one-slot channels the heartbeat fast path answers on.
var respChPool = sync.Pool{New: func() any { return make(chan raft.RPCResponse, 1) }}
