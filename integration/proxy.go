package integration

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a userspace TCP proxy for one directed link between two broker
// processes: it listens on 127.0.0.1 and forwards every connection it
// accepts to its target. The kernel here has no tc netem, so the network
// faults of the process-level tests (TESTPLAN tier T2) happen here, as a
// network under TCP would show them:
//
//   - Blackhole: nothing crosses, in either direction of any connection.
//     Bytes already read stay held (at most one read per direction and
//     proxyQueue chunks), the rest backs up in the kernels' socket
//     buffers until the senders block; a connection accepted meanwhile is
//     not forwarded (its handshake is lost). Healing lets the held bytes
//     flow in order, as TCP's retransmissions would deliver them; nothing
//     is dropped, which would only model a broken TCP stack.
//   - Delay: every chunk read is written to the other side no earlier than
//     the delay after it was read, in order (throughput is kept: chunks
//     overlap in flight). A change applies to chunks read after it.
//   - Cut: every connection through the proxy is reset (RST to both
//     sides, what a rebooted middlebox or a dropped flow gives). New
//     connections are accepted as usual.
//
// Traffic of the Raft transport flows from the dialing broker to the
// listening one and its answers come back on the same connection (see
// replication/transport's doc), so one Proxy per (from, to) pair carries
// everything from's transport sends to to and the answers.
type Proxy struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	blackholed bool
	open       chan struct{} // closed while the link passes traffic
	delay      time.Duration
	pairs      map[*proxyPair]struct{}
	closed     bool
	done       chan struct{}
	wg         sync.WaitGroup

	accepted atomic.Int64
	cuts     atomic.Int64
	bytes    atomic.Int64
}

// proxyQueue bounds the chunks held per direction of a connection.
const proxyQueue = 64

// NewProxy listens on 127.0.0.1:0 and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, open: make(chan struct{}), pairs: map[*proxyPair]struct{}{}, done: make(chan struct{})}
	close(p.open)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is where the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Blackhole stops (on) or resumes (off) all traffic through the proxy.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.blackholed {
		return
	}
	p.blackholed = on
	if on {
		p.open = make(chan struct{})
	} else {
		close(p.open)
	}
}

// Blackholed reports whether the link is blackholed.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackholed
}

// SetDelay sets the one-way delay of chunks read from now on (0: none).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Cut resets every connection through the proxy and returns how many it
// reset.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	pairs := make([]*proxyPair, 0, len(p.pairs))
	for pp := range p.pairs {
		pairs = append(pairs, pp)
	}
	p.mu.Unlock()
	for _, pp := range pairs {
		pp.reset()
	}
	p.cuts.Add(int64(len(pairs)))
	return len(pairs)
}

// ProxyStats are a proxy's counters since it started.
type ProxyStats struct {
	Accepted int64 // connections accepted
	Cut      int64 // connections reset by Cut
	Bytes    int64 // bytes forwarded, both directions
	Open     int   // connections open now
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	n := len(p.pairs)
	p.mu.Unlock()
	return ProxyStats{Accepted: p.accepted.Load(), Cut: p.cuts.Load(), Bytes: p.bytes.Load(), Open: n}
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	pairs := make([]*proxyPair, 0, len(p.pairs))
	for pp := range p.pairs {
		pairs = append(pairs, pp)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, pp := range pairs {
		pp.close()
	}
	p.wg.Wait()
}

// waitOpen blocks while the link is blackholed; false when the proxy or
// the connection (stop) closed first.
func (p *Proxy) waitOpen(stop <-chan struct{}) bool {
	for {
		p.mu.Lock()
		ch := p.open
		p.mu.Unlock()
		select {
		case <-ch:
			// Re-check: a new blackhole may have begun since.
			p.mu.Lock()
			passing := !p.blackholed
			p.mu.Unlock()
			if passing {
				return true
			}
		case <-stop:
			return false
		case <-p.done:
			return false
		}
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.accepted.Add(1)
		pp := &proxyPair{p: p, client: c, stop: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.pairs[pp] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go pp.run()
	}
}

// proxyPair is one proxied connection: the accepted client side and the
// dialed server side.
type proxyPair struct {
	p      *Proxy
	client net.Conn

	mu     sync.Mutex
	server net.Conn
	once   sync.Once
	stop   chan struct{}
}

// run dials the target once the link passes traffic (a connection accepted
// during a blackhole waits, like a SYN that is not answered), then pumps
// both directions until either side ends.
func (pp *proxyPair) run() {
	defer pp.p.wg.Done()
	defer pp.forget()
	if !pp.p.waitOpen(pp.stop) {
		pp.close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", pp.p.target)
	cancel()
	if err != nil {
		// The target is down: what the dialer would have seen directly.
		pp.reset()
		return
	}
	pp.mu.Lock()
	pp.server = server
	stopped := isClosed(pp.stop)
	pp.mu.Unlock()
	if stopped {
		pp.close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { pp.pump(pp.client, server) })
	wg.Go(func() { pp.pump(server, pp.client) })
	wg.Wait()
}

// pump copies src to dst through a queue, so that a delay does not cost
// throughput: a reader stamps each chunk, the writer sends it once its
// time has come and the link is open. The first error on either side ends
// the whole connection (the queued bytes of a closed source are still
// delivered first).
func (pp *proxyPair) pump(src, dst net.Conn) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, proxyQueue)
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				pp.p.mu.Lock()
				due := time.Now().Add(pp.p.delay)
				pp.p.mu.Unlock()
				select {
				case q <- chunk{buf[:n], due}:
				case <-pp.stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		pp.close() // unblocks the reader
		<-read
	}()
	for c := range q {
		if wait := time.Until(c.due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-pp.stop:
				return
			}
		}
		if !pp.p.waitOpen(pp.stop) {
			return
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
		pp.p.bytes.Add(int64(len(c.b)))
	}
}

// reset closes both sides with an RST instead of a FIN.
func (pp *proxyPair) reset() {
	pp.mu.Lock()
	for _, c := range []net.Conn{pp.client, pp.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	pp.mu.Unlock()
	pp.close()
}

func (pp *proxyPair) close() {
	pp.once.Do(func() {
		pp.mu.Lock()
		close(pp.stop)
		server := pp.server
		pp.mu.Unlock()
		_ = pp.client.Close()
		if server != nil {
			_ = server.Close()
		}
	})
}

func (pp *proxyPair) forget() {
	pp.p.mu.Lock()
	delete(pp.p.pairs, pp)
	pp.p.mu.Unlock()
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
