package transport

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// peerLink is the outbound slot for one (peer, kind): it dials lazily, one dial at a time, and after
// a failure refuses fast until the backoff passes, so that callers to a dead peer do not each wait
// out a dial timeout.
type peerLink struct {
	m    *Mux
	addr raft.ServerAddress
	kind byte

	mu       sync.Mutex
	cur      *clientConn
	dialing  chan struct{}
	lastErr  error
	failures int
	retryAt  time.Time
	closed   bool
}

func newPeerLink(m *Mux, addr raft.ServerAddress, kind byte) *peerLink {
	return &peerLink{m: m, addr: addr, kind: kind}
}

// get returns a live connection, dialing if there is none.
func (l *peerLink) get(cancel <-chan struct{}) (*clientConn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, raft.ErrTransportShutdown
		}
		if c := l.cur; c != nil && !c.isClosed() {
			l.mu.Unlock()
			return c, nil
		}
		if ch := l.dialing; ch != nil {
			l.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-cancel:
				return nil, raft.ErrTransportShutdown
			case <-l.m.done:
				return nil, raft.ErrTransportShutdown
			}
		}
		if wait := time.Until(l.retryAt); wait > 0 {
			err := fmt.Errorf("transport: %s unreachable (retry in %v): %w", l.addr, wait.Round(time.Millisecond), l.lastErr)
			l.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{})
		l.dialing = ch
		l.mu.Unlock()

		c, err := l.dial()
		l.mu.Lock()
		l.dialing = nil
		close(ch)
		if err != nil {
			l.failures++
			l.lastErr = err
			l.retryAt = time.Now().Add(min(minRedial<<min(l.failures-1, 10), maxRedial))
		} else {
			l.failures = 0
			l.cur = c
			if l.closed {
				l.mu.Unlock()
				c.close(raft.ErrTransportShutdown)
				return nil, raft.ErrTransportShutdown
			}
		}
		l.mu.Unlock()
		return c, err
	}
}

// dial connects and runs the handshake; on success the connection's goroutines are running.
func (l *peerLink) dial() (*clientConn, error) {
	m := l.m
	m.stats.dials.Add(1)
	fail := func(err error) (*clientConn, error) {
		m.stats.dialFailures.Add(1)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.DialTimeout)
	defer cancel()
	nc, err := m.cfg.Dial(ctx, string(l.addr))
	if err != nil {
		return fail(fmt.Errorf("transport: dial %s: %w", l.addr, err))
	}
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	// Mux.Close cancels ctx: make that abort the handshake too, not only the dial.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	b := getBuf(0)
	*b = appendHello(*b, hello{MinVersion: minWireVersion, MaxVersion: wireVersion, Kind: l.kind,
		ClusterID: m.cfg.ClusterID, Addr: string(m.cfg.LocalAddr)})
	_, err = nc.Write(*b)
	putBuf(b)
	br := bufio.NewReaderSize(nc, readBufSize)
	var ack helloAck
	if err == nil {
		var typ byte
		var body []byte
		if typ, body, err = readFrame(br, maxHelloLen, nil); err == nil && typ != frameHelloAck {
			err = errMalformed
		}
		if err == nil {
			ack, err = decodeHelloAck(body)
		}
	}
	if err == nil && (ack.Version < minWireVersion || ack.Version > wireVersion) {
		err = fmt.Errorf("refused: %s", ack.Err)
	}
	if !stop() && err == nil {
		err = ctx.Err() // the connection was closed under us
	}
	if err != nil {
		_ = nc.Close()
		return fail(fmt.Errorf("transport: handshake with %s: %w", l.addr, err))
	}
	_ = nc.SetDeadline(time.Time{})
	c := newClientConn(l, nc, br)
	m.stats.outbound.Add(1)
	if !m.goFunc(c.writeLoop) || !m.goFunc(func() { c.readLoop(c.handle) }) {
		c.close(raft.ErrTransportShutdown)
		return nil, raft.ErrTransportShutdown
	}
	return c, nil
}

func (l *peerLink) close() {
	l.mu.Lock()
	l.closed = true
	c := l.cur
	l.mu.Unlock()
	if c != nil {
		c.close(raft.ErrTransportShutdown)
	}
}
