package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

const (
	readBufSize  = 64 << 10
	writeBufSize = 64 << 10
	// maxHeartbeatBatch is the size at which a heartbeat batch is written without waiting for the
	// window: a frame stays far below any MaxFrameSize.
	maxHeartbeatBatch = 32 << 10
	// Redial backoff after a failed dial or handshake; reset by a successful handshake.
	minRedial = 20 * time.Millisecond
	maxRedial = time.Second
)

// errPeerSilent closes a connection on which an RPC timed out and nothing at all arrived since the
// RPC was sent: the peer or the path is gone (a blackhole never fails a write).
var errPeerSilent = errors.New("transport: peer silent past the rpc timeout")

// errTimeout is what an RPC returns when no answer came within Config.RPCTimeout.
var errTimeout = errors.New("transport: rpc timed out")

// RemoteError is an error the peer answered instead of a result: its raft's, its Call handler's,
// or its transport's refusal ("unknown group", no Call handler, too many concurrent Calls). A
// failure to reach the peer (dial, handshake, cut connection, timeout) is an ordinary error, never
// a RemoteError, so a caller can tell "the peer said no" from "the peer did not answer". The sender
// truncates Message to 4 KiB.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return "remote: " + e.Message }

// wire is one live TCP connection in either direction: a write queue drained by one writer goroutine
// and one reader goroutine. Frames are queued already encoded; the writer batches everything queued
// into one flush, which is what coalesces many groups' traffic into few syscalls.
type wire struct {
	m    *Mux
	nc   net.Conn
	br   *bufio.Reader
	peer raft.ServerAddress
	kind byte
	log  *slog.Logger

	mu      sync.Mutex
	queue   []*[]byte
	hb      *[]byte // heartbeat batch items not yet written (outbound control connections)
	hbCount int
	hbFirst time.Time
	closed  bool
	err     error

	wake     chan struct{}
	done     chan struct{}
	lastRecv atomic.Int64 // unix nanos of the last frame read
	onClose  func(err error)
}

func (w *wire) init(m *Mux, nc net.Conn, br *bufio.Reader, peer raft.ServerAddress, kind byte, dir string) {
	w.m, w.nc, w.br, w.peer, w.kind = m, nc, br, peer, kind
	w.log = m.log.With("peer", string(peer), "conn", kindName(kind), "dir", dir)
	w.wake = make(chan struct{}, 1)
	w.done = make(chan struct{})
	w.lastRecv.Store(time.Now().UnixNano())
}

func kindName(k byte) string {
	if k == connControl {
		return "control"
	}
	return "data"
}

func (w *wire) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// enqueue hands an encoded frame to the writer; the buffer belongs to the wire from then on.
func (w *wire) enqueue(b *[]byte) error {
	w.mu.Lock()
	if w.closed {
		err := w.err
		w.mu.Unlock()
		putBuf(b)
		return err
	}
	w.queue = append(w.queue, b)
	w.mu.Unlock()
	w.signal()
	return nil
}

func (w *wire) isClosed() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// close closes the connection once; onClose then fails whatever depends on it.
func (w *wire) close(err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed, w.err = true, err
	q, hb := w.queue, w.hb
	w.queue, w.hb, w.hbCount = nil, nil, 0
	w.mu.Unlock()
	close(w.done)
	_ = w.nc.Close()
	for _, b := range q {
		putBuf(b)
	}
	putBuf(hb)
	if !errors.Is(err, raft.ErrTransportShutdown) {
		w.log.Debug("raft connection closed", "error", err)
	}
	if w.kind == connControl {
		w.m.peerLost(w.peer, err)
	}
	if w.onClose != nil {
		w.onClose(err)
	}
}

// writeLoop writes queued frames until the connection closes. A write that blocks longer than
// RPCTimeout (peer not reading, path gone) fails the connection rather than stalling every group.
func (w *wire) writeLoop() {
	bw := bufio.NewWriterSize(w.nc, writeBufSize)
	var batch []*[]byte
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-w.wake:
		case <-w.done:
			return
		}
	again:
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		if len(w.queue) == 0 && w.hbCount > 0 && len(*w.hb) < maxHeartbeatBatch {
			if wait := w.m.cfg.HeartbeatWindow - time.Since(w.hbFirst); wait > 0 {
				// Only heartbeats are waiting: give other groups' heartbeats a moment to join.
				w.mu.Unlock()
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-w.wake:
					timer.Stop()
				case <-w.done:
					return
				}
				goto again
			}
		}
		batch, w.queue = w.queue, batch[:0]
		hb, hbCount := w.hb, w.hbCount
		w.hb, w.hbCount = nil, 0
		w.mu.Unlock()

		err := w.nc.SetWriteDeadline(time.Now().Add(w.m.cfg.RPCTimeout))
		if hbCount > 0 {
			// Heartbeats first: they are small and the followers' election timers wait on them.
			var hdr [frameHeaderLen + binary.MaxVarintLen64]byte
			n := binary.PutUvarint(hdr[frameHeaderLen:], uint64(hbCount))
			binary.BigEndian.PutUint32(hdr[:], uint32(1+n+len(*hb)))
			hdr[4] = frameHeartbeats
			if err == nil {
				_, err = bw.Write(hdr[:frameHeaderLen+n])
			}
			if err == nil {
				_, err = bw.Write(*hb)
			}
			putBuf(hb)
			w.m.stats.heartbeatFrames.Add(1)
		}
		for i, b := range batch {
			if err == nil {
				_, err = bw.Write(*b)
			}
			putBuf(b)
			batch[i] = nil
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			w.close(fmt.Errorf("transport: write: %w", err))
			return
		}
	}
}

// aliasMin is the body size above which a frame is read into a buffer of its own that is never
// reused, so the decoder can point entries' Data into it instead of copying each one.
const aliasMin = 64 << 10

// readLoop reads frames and hands each to handle until the connection fails. Waiting for the first
// byte of a frame has no deadline (an idle connection is fine); the rest of a frame must arrive
// within RPCTimeout, so a peer that stops mid-frame cannot hold the connection forever.
func (w *wire) readLoop(handle func(typ byte, body []byte, owned bool) error) {
	var buf []byte // reused for frames up to aliasMin
	for {
		if _, err := w.br.Peek(1); err != nil {
			w.close(fmt.Errorf("transport: read: %w", err))
			return
		}
		armed := false
		if n := w.br.Buffered(); n < frameHeaderLen || n < 4+int(binary.BigEndian.Uint32(mustPeek(w.br))) {
			_ = w.nc.SetReadDeadline(time.Now().Add(w.m.cfg.RPCTimeout))
			armed = true
		}
		typ, body, err := readFrame(w.br, w.m.cfg.MaxFrameSize, buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				w.m.stats.protoErrs.Add(1)
			}
			w.close(fmt.Errorf("transport: read: %w", err))
			return
		}
		if armed {
			_ = w.nc.SetReadDeadline(time.Time{})
		}
		w.lastRecv.Store(time.Now().UnixNano())
		owned := len(body) > aliasMin
		if err := handle(typ, body, owned); err != nil {
			w.m.stats.protoErrs.Add(1)
			w.log.Warn("raft connection protocol error", "frame_type", typ, "error", err)
			w.close(err)
			return
		}
		if !owned {
			buf = body[:0]
		}
	}
}

// mustPeek returns the 4 length bytes already known to be buffered.
func mustPeek(br *bufio.Reader) []byte {
	b, _ := br.Peek(4)
	return b
}

// call is one outstanding request on a client connection. Whoever removes it from the pending map
// (the reader with an answer, a failing connection, or the caller giving up) owns it and completes
// it; the others wait on done. That rule keeps a late answer from writing into a response struct
// raft has already reused.
type call struct {
	id   uint64
	kind byte
	resp any
	sent int64 // unix nanos
	err  error
	done chan struct{}
	// handlerPaced marks a Call: its answer waits on the peer's handler, which may legitimately take
	// longer than RPCTimeout, so its timing out does not prove the peer silent.
	handlerPaced bool
}

func newCall(id uint64, kind byte, resp any) *call {
	return &call{id: id, kind: kind, resp: resp, sent: time.Now().UnixNano(), done: make(chan struct{})}
}

func (c *call) complete(err error) {
	c.err = err
	close(c.done)
}

// clientConn is an outbound connection: it sends requests and matches answers by request id.
type clientConn struct {
	wire
	link    *peerLink
	pending map[uint64]*call
	sends   map[uint64]*snapSend
}

func newClientConn(l *peerLink, nc net.Conn, br *bufio.Reader) *clientConn {
	c := &clientConn{link: l, pending: make(map[uint64]*call), sends: make(map[uint64]*snapSend)}
	c.init(l.m, nc, br, l.addr, l.kind, "out")
	c.onClose = c.failAll
	return c
}

// send registers c and queues its request frame in one step, so an answer can never beat the
// registration.
func (cc *clientConn) send(c *call, frame *[]byte) error {
	cc.mu.Lock()
	if cc.closed {
		err := cc.err
		cc.mu.Unlock()
		putBuf(frame)
		return err
	}
	cc.pending[c.id] = c
	cc.queue = append(cc.queue, frame)
	cc.mu.Unlock()
	cc.signal()
	cc.m.stats.requests.Add(1)
	return nil
}

// sendHeartbeat adds a heartbeat to the batch the writer sends next.
func (cc *clientConn) sendHeartbeat(c *call, group string, req *raft.AppendEntriesRequest) error {
	cc.mu.Lock()
	if cc.closed {
		err := cc.err
		cc.mu.Unlock()
		return err
	}
	cc.pending[c.id] = c
	if cc.hb == nil {
		cc.hb = getBuf(0)
	}
	*cc.hb = appendHeartbeatItem(*cc.hb, c.id, group, req)
	cc.hbCount++
	first := cc.hbCount == 1
	if first {
		cc.hbFirst = time.Now()
	}
	full := len(*cc.hb) >= maxHeartbeatBatch
	cc.mu.Unlock()
	// Later heartbeats do not wake the writer: it is already waiting out the window for them.
	if first || full || cc.m.cfg.HeartbeatWindow < 0 {
		cc.signal()
	}
	cc.m.stats.heartbeats.Add(1)
	return nil
}

// forget removes c from the pending map; false means the reader or failAll already owns it.
func (cc *clientConn) forget(id uint64) bool {
	cc.mu.Lock()
	_, ok := cc.pending[id]
	delete(cc.pending, id)
	cc.mu.Unlock()
	return ok
}

// wait blocks until c is answered, the timeout passes, or cancel/the Mux closes.
func (cc *clientConn) wait(c *call, timeout time.Duration, cancel <-chan struct{}) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	var reason error
	select {
	case <-c.done:
		return c.err
	case <-t.C:
		reason = errTimeout
	case <-cancel:
		reason = raft.ErrTransportShutdown
	case <-cc.m.done:
		reason = raft.ErrTransportShutdown
	}
	return cc.abandon(c, reason)
}

// abandon gives up on c with reason unless an answer is already being delivered.
func (cc *clientConn) abandon(c *call, reason error) error {
	if !cc.forget(c.id) {
		<-c.done
		return c.err
	}
	if reason == errTimeout {
		cc.m.stats.timeouts.Add(1)
		if cc.lastRecv.Load() < c.sent && !c.handlerPaced {
			cc.close(errPeerSilent)
		}
	}
	return reason
}

// failAll completes every pending call with the connection's error.
func (cc *clientConn) failAll(err error) {
	cc.mu.Lock()
	pending := cc.pending
	cc.pending = map[uint64]*call{}
	sends := cc.sends
	cc.sends = map[uint64]*snapSend{}
	cc.mu.Unlock()
	for _, c := range pending {
		c.complete(err)
	}
	for _, s := range sends {
		s.signal()
	}
	cc.m.stats.outbound.Add(-1)
}

// handle processes one frame from the peer: answers and snapshot credit.
func (cc *clientConn) handle(typ byte, body []byte, _ bool) error {
	d := decoder{b: body}
	switch typ {
	case frameResponse:
		cc.handleResponse(&d)
	case frameHeartbeatResponses:
		n := d.count(minHBItem)
		for i := 0; i < n && d.err == nil; i++ {
			cc.handleResponse(&d)
		}
	case frameSnapshotCredit:
		id, n := d.uvarint(), d.uvarint()
		if d.err == nil {
			cc.mu.Lock()
			s := cc.sends[id]
			cc.mu.Unlock()
			if s != nil {
				s.addCredit(n)
			}
		}
	default:
		return fmt.Errorf("transport: unexpected frame type %d on an outbound connection", typ)
	}
	return d.finish()
}

// handleResponse decodes one answer straight into the response struct of its call.
func (cc *clientConn) handleResponse(d *decoder) {
	id, status := d.responseHead()
	if d.err != nil {
		return
	}
	cc.mu.Lock()
	c := cc.pending[id]
	delete(cc.pending, id)
	cc.mu.Unlock()
	if status == statusError {
		msg := d.string(maxErrLen)
		if c != nil {
			c.complete(&RemoteError{Message: msg})
		}
		return
	}
	kind := d.byte1()
	if c == nil {
		// A late answer to an abandoned call: decode it to skip it.
		if msg, err := newMessage(kind, true); err == nil {
			d.decodeInto(msg)
		} else {
			d.fail()
		}
		return
	}
	if kind != c.kind {
		d.fail()
	} else {
		d.decodeInto(c.resp)
	}
	if d.err != nil {
		c.complete(d.err)
		return
	}
	c.complete(nil)
}
