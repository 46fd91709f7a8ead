package transport

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// AppendEntriesPipeline implements raft.Transport. The pipeline is bound to the data connection
// that is current when it is made: if that connection fails, the pipeline fails and raft falls back
// to synchronous AppendEntries, which finds the follower's next index again. Binding to one
// connection is what makes the pipeline's order the wire's order. The target is resolved once,
// here (Mux.Resolve): a peer that moves while a pipeline is open fails it by going away, and
// raft's next pipeline resolves again.
func (g *GroupTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if g.m.cfg.PipelineDepth < 2 {
		return nil, raft.ErrPipelineReplicationNotSupported
	}
	target = g.m.Resolve(id, target)
	cc, _, err := g.prepare(target, connData)
	if err != nil {
		return nil, err
	}
	p := &pipeline{
		g:       g,
		target:  target,
		cc:      cc,
		space:   make(chan struct{}, 1),
		ready:   make(chan struct{}, 1),
		closeCh: make(chan struct{}),
		doneCh:  make(chan raft.AppendFuture),
	}
	g.mu.Lock()
	if g.isClosed() {
		g.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	g.pipes[p] = struct{}{}
	g.mu.Unlock()
	if !g.m.goFunc(p.run) {
		_ = p.Close()
		return nil, raft.ErrTransportShutdown
	}
	return p, nil
}

// pipeline is one group's AppendEntries pipeline to one follower.
//
// Flow control: at most PipelineDepth requests, and at most MaxInflightBytes of encoded requests
// (one larger request may go alone), are sent and not yet handed back to raft. A slot is freed when
// raft receives the future from Consumer, which is unbuffered.
//
// Failure: after handing raft a future that failed, was rejected or carries a newer term, the
// pipeline closes itself. raft's decoder stops reading at exactly that future, and closing is what
// unblocks raft's sender if it waits for a slot (otherwise the two would wait on each other).
type pipeline struct {
	g      *GroupTransport
	target raft.ServerAddress
	cc     *clientConn

	mu       sync.Mutex // before wire.mu
	inflight []*appendFuture
	bytes    int
	closed   bool

	space   chan struct{} // a slot was freed
	ready   chan struct{} // a request was added
	closeCh chan struct{}
	doneCh  chan raft.AppendFuture
}

// appendFuture implements raft.AppendFuture.
type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	call  *call
	size  int
	err   error
	done  chan struct{}
}

func (f *appendFuture) Error() error {
	<-f.done
	return f.err
}

func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// AppendEntries queues a request on the pipeline's connection, blocking while the pipeline is full.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	cfg := &p.g.m.cfg
	id := p.g.m.reqID.Add(1)
	frame, err := encodeRequest(id, p.g.id, args, cfg.MaxFrameSize)
	if err != nil {
		return nil, err
	}
	size := len(*frame)

	p.mu.Lock()
	for !p.closed && len(p.inflight) > 0 &&
		(len(p.inflight) >= cfg.PipelineDepth || p.bytes+size > cfg.MaxInflightBytes) {
		p.mu.Unlock()
		select {
		case <-p.space:
		case <-p.closeCh:
		case <-p.g.closed:
		case <-p.cc.done:
		}
		p.mu.Lock()
		if p.g.isClosed() || p.cc.isClosed() {
			break
		}
	}
	if p.closed || p.g.isClosed() {
		p.mu.Unlock()
		putBuf(frame)
		return nil, raft.ErrPipelineShutdown
	}
	f := &appendFuture{start: time.Now(), args: args, resp: resp, size: size, done: make(chan struct{})}
	f.call = newCall(id, rpcAppendEntries, resp)
	// Sent under p.mu so that the order of inflight is the order on the wire.
	if err := p.cc.send(f.call, frame); err != nil {
		p.mu.Unlock()
		_ = p.Close()
		return nil, err
	}
	p.inflight = append(p.inflight, f)
	p.bytes += size
	p.mu.Unlock()
	select {
	case p.ready <- struct{}{}:
	default:
	}
	return f, nil
}

// Consumer implements raft.AppendPipeline: futures in send order.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close implements raft.AppendPipeline; calls still on the wire are abandoned.
func (p *pipeline) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	calls := make([]*call, 0, len(p.inflight))
	for _, f := range p.inflight {
		calls = append(calls, f.call)
	}
	p.mu.Unlock()
	close(p.closeCh)
	// Taking a call out of the pending map makes us its owner, who must complete it: run may be
	// in abandon for the same call (its timer fired as we closed), waiting on done.
	for _, c := range calls {
		if p.cc.forget(c.id) {
			c.complete(raft.ErrPipelineShutdown)
		}
	}
	p.g.mu.Lock()
	delete(p.g.pipes, p)
	p.g.mu.Unlock()
	return nil
}

// run waits for the oldest request's answer (or its timeout), hands the future to raft, frees its
// slot, and repeats.
func (p *pipeline) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		for len(p.inflight) == 0 && !p.closed {
			p.mu.Unlock()
			select {
			case <-p.ready:
			case <-p.closeCh:
			}
			p.mu.Lock()
		}
		if p.closed {
			p.mu.Unlock()
			return
		}
		f := p.inflight[0]
		p.mu.Unlock()

		timer.Reset(time.Until(f.start.Add(p.g.m.cfg.RPCTimeout)))
		select {
		case <-f.call.done:
			f.err = f.call.err
		case <-timer.C:
			f.err = p.cc.abandon(f.call, errTimeout)
		case <-p.closeCh:
			return
		}
		timer.Stop()
		if f.err != nil {
			// A half-decoded answer must not look like a newer term to raft.
			*f.resp = raft.AppendEntriesResponse{}
		}
		ok := f.err == nil && f.resp.Success && f.resp.Term <= f.args.Term
		if ok {
			p.g.recordAck(p.target, matchIndex(f.args))
		}
		close(f.done)
		select {
		case p.doneCh <- f:
		case <-p.closeCh:
			return
		}
		p.mu.Lock()
		p.inflight[0] = nil
		p.inflight = p.inflight[1:]
		p.bytes -= f.size
		p.mu.Unlock()
		select {
		case p.space <- struct{}{}:
		default:
		}
		if !ok {
			_ = p.Close()
			return
		}
	}
}
