package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// maxCalls caps the Call handlers running at once for one inbound connection, that is for one
// peer: a peer cannot make us start goroutines without bound. Forwarded metadata commands come
// from a handful of request handlers per broker, far fewer than this.
const maxCalls = 64

var (
	// errNoHandler answers a Call on a Mux whose Config.Handler is nil.
	errNoHandler = errors.New("transport: no call handler")
	// errCallsBusy answers a Call while maxCalls handlers of the same connection are running.
	errCallsBusy = errors.New("transport: too many concurrent calls")
)

// callRequest is the message of a Call request (RPC kind rpcCall); callResponse is its answer. They
// are not raft's messages, so they carry no RPCHeader (see doc.go for the encoding).
type callRequest struct {
	Method string
	Body   []byte
}

type callResponse struct {
	Body []byte
}

// Call sends method and body to the peer at addr and returns its Config.Handler's answer. The
// broker uses it to forward commands to the metadata Raft leader.
//
// It travels on the control connection, so it never queues behind megabytes of AppendEntries, and
// the peer runs the handler on a goroutine of its own, so a slow handler delays neither the peer's
// votes and heartbeats nor other Calls. ctx bounds the wait; without a deadline on ctx,
// Config.RPCTimeout does too. A dial in progress is bounded by Config.DialTimeout, not ctx. When
// ctx ends first Call returns ctx.Err() and a late answer is dropped; the remote handler is not
// told and may still carry the command out, so a caller that retries must make its commands
// idempotent. An error returned by the remote handler, or the peer's refusal to run one, comes
// back as a *RemoteError; failing to reach the peer or to get an answer is an ordinary error
// (raft.ErrTransportShutdown once the Mux is closed). The encoded request must fit in
// Config.MaxFrameSize. Calls to this node's own address go over the network like any other.
func (m *Mux) Call(ctx context.Context, addr raft.ServerAddress, method string, body []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.isClosed() {
		return nil, raft.ErrTransportShutdown
	}
	id := m.reqID.Add(1)
	frame, err := encodeRequest(id, "", &callRequest{Method: method, Body: body}, m.cfg.MaxFrameSize)
	if err != nil {
		return nil, err
	}
	cc, err := m.link(addr, connControl).get(ctx.Done())
	if err != nil {
		putBuf(frame)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	resp := new(callResponse)
	c := newCall(id, rpcCall, resp)
	c.handlerPaced = true
	if err := cc.send(c, frame); err != nil {
		return nil, err
	}
	if err := cc.waitCtx(ctx, c); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// waitCtx is wait for a Call: ctx ends it early with ctx.Err(), and RPCTimeout applies only when ctx
// has no deadline (a caller may knowingly wait longer for a slow command). Neither closes the
// connection as silent (see call.handlerPaced): the handler may simply be slow, and raft's RPCs on
// the same connection still detect a dead peer.
func (cc *clientConn) waitCtx(ctx context.Context, c *call) error {
	var expired <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(cc.m.cfg.RPCTimeout)
		defer t.Stop()
		expired = t.C
	}
	var reason error
	select {
	case <-c.done:
		return c.err
	case <-expired:
		reason = errTimeout
	case <-ctx.Done():
		reason = ctx.Err()
	case <-cc.m.done:
		reason = raft.ErrTransportShutdown
	}
	return cc.abandon(c, reason)
}

// serveCall runs the Call handler for request id on a tracked goroutine of its own, or refuses at
// once (no handler, maxCalls running, Mux closed). It is called on the connection's reader and
// never blocks: the reader also carries the peer's votes and heartbeats.
func (sc *serverConn) serveCall(id uint64, req *callRequest) {
	h := sc.m.cfg.Handler
	if h == nil {
		sc.answerCall(id, nil, fmt.Errorf("%w on %s", errNoHandler, sc.m.cfg.LocalAddr))
		return
	}
	if sc.calls.Add(1) > maxCalls {
		sc.calls.Add(-1)
		sc.log.Warn("raft call refused", "method", req.Method, "reason", "too many concurrent calls",
			"limit", maxCalls)
		sc.answerCall(id, nil, fmt.Errorf("%w from %s on %s (limit %d)", errCallsBusy, sc.peer,
			sc.m.cfg.LocalAddr, maxCalls))
		return
	}
	ok := sc.m.goFunc(func() {
		body, err := h(sc.callCtx, sc.peer, req.Method, req.Body)
		// Free the slot before answering, so a caller that sends its next Call as soon as it has
		// this answer never finds the slot still taken.
		sc.calls.Add(-1)
		if sc.callCtx.Err() != nil {
			// The connection or the Mux is closing (Close cancels the Mux before it closes the
			// connections): the caller is failed by the closing connection. Answering would
			// hand it the handler's "context canceled" as if the handler had refused the command.
			return
		}
		sc.answerCall(id, body, err)
	})
	if !ok {
		sc.calls.Add(-1)
		sc.answerCall(id, nil, raft.ErrTransportShutdown)
	}
}

// answerCall queues the answer to Call id; a closed connection drops it (the caller has already
// failed). An answer too large for a frame is replaced by an error rather than sent: the peer would
// close the control connection, failing every group's votes and heartbeats on it.
func (sc *serverConn) answerCall(id uint64, body []byte, err error) {
	b := getBuf(sizeHint(&callResponse{Body: body}))
	*b = appendResponse(*b, id, rpcCall, &callResponse{Body: body}, err)
	if len(*b) > sc.m.cfg.MaxFrameSize {
		n := len(*b)
		*b = appendResponse((*b)[:0], id, rpcCall, nil,
			fmt.Errorf("transport: call answer of %d bytes exceeds MaxFrameSize %d", n, sc.m.cfg.MaxFrameSize))
	}
	_ = sc.enqueue(b)
}
