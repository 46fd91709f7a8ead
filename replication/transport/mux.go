package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults for the zero values of Config. They are sized for data groups running with
// HeartbeatTimeout = ElectionTimeout = 2 s (DESIGN.md "Timeouts").
const (
	// DefaultDialTimeout bounds a dial plus the handshake.
	DefaultDialTimeout = 2 * time.Second
	// DefaultRPCTimeout is how long an RPC may go unanswered before it fails (raft then retries or
	// backs off). It also bounds a blocked socket write and a stalled snapshot chunk.
	DefaultRPCTimeout = 5 * time.Second
	// DefaultMaxFrameSize caps one frame, and so one AppendEntries: MaxAppendEntries times the largest
	// entry must fit, or that entry can never be replicated.
	DefaultMaxFrameSize = 64 << 20
	// DefaultMaxInflightBytes caps the encoded AppendEntries bytes in one group's pipeline to one
	// follower (a single larger request is still sent when nothing else is in flight).
	DefaultMaxInflightBytes = 8 << 20
	// DefaultPipelineDepth is how many AppendEntries one group's pipeline to one follower may have
	// sent and not yet handed back to raft. Chosen by BenchmarkReplication (see doc.go).
	DefaultPipelineDepth = 8
	// DefaultHeartbeatWindow is how long the first queued heartbeat waits for others to the same peer,
	// so that heartbeats of many groups share one frame and one syscall. Against 2 s (data) and
	// 500 ms (metadata) heartbeat timeouts 5 ms is noise; at 1,000 idle groups it packs ~7 per frame.
	DefaultHeartbeatWindow = 5 * time.Millisecond
)

// Config configures a Mux. Zero durations and sizes take the defaults above.
type Config struct {
	// LocalAddr is the advertised address of this node's raft listener: what peers dial, what raft
	// puts in RPC headers, and what the handshake names as the dialer.
	LocalAddr raft.ServerAddress
	// ClusterID is checked in the handshake; a peer from another cluster is refused.
	ClusterID string
	// Dial opens a connection to a peer. Nil means a net.Dialer; tests wrap it to inject faults.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Logger receives connection-level events. Nil discards.
	Logger *slog.Logger
	// Handler serves Calls from peers. Nil refuses every Call with an error. It runs on a goroutine
	// of its own per Call (at most 64 at once per peer connection; beyond that Calls are refused at
	// once), so it may block, but it must return when ctx ends: ctx is cancelled when the
	// connection to the caller dies or the Mux closes, Mux.Close waits for running handlers, and
	// what a handler returns after its ctx ended is not sent (the caller's connection fails). A
	// caller giving up does not cancel ctx (there is no cancel message on the wire); the answer
	// is then dropped. from is the caller's advertised address as it named itself in the handshake
	// (checked only by cluster id). body belongs to the handler. A non-nil error is the answer,
	// whatever the returned bytes: the caller gets a *RemoteError with its text (truncated to
	// 4 KiB). An answer that would exceed MaxFrameSize is replaced by such an error.
	Handler func(ctx context.Context, from raft.ServerAddress, method string, body []byte) ([]byte, error)
	// PeerLost, if set, is told when a control connection to or from a peer fails (not when this
	// Mux closes it): the peer's process died, or the path to it broke. A raft follower otherwise
	// learns that its leader is gone only by hearing nothing for a whole heartbeat timeout; the
	// replication layer uses this to look sooner (see replication's suspectLeader). It runs on a
	// goroutine of its own, at most once per peer per PeerLostInterval, and must not block long.
	PeerLost func(addr raft.ServerAddress, at time.Time)
	// Resolve, if set, maps the (ServerID, ServerAddress) that raft names in an outbound RPC to the
	// address actually dialed: raft configurations live in every group's log and snapshots and keep
	// the address a server had when it was added, so a peer that restarts on a new address would
	// be unreachable under it. The broker resolves by broker id (its metadata registration, or the
	// address the peer last announced, see Announce). Nil is the identity, and so is an empty
	// answer. It is called for every outbound RPC (heartbeats included), concurrently and on raft's
	// replication goroutines, so it must be cheap and must not block: read an atomically published
	// map, take no lock that I/O can hold. Everything the Mux keys by peer address uses its result: connections, Acked,
	// PeerLost (doc.go, "Peer addresses").
	Resolve func(id raft.ServerID, addr raft.ServerAddress) raft.ServerAddress
	// Announce, if set, is told the ServerID and address a peer names itself with in the RPCHeader
	// of the raft requests it sends here: the address of its running process, which raft itself
	// trusts to learn a leader's address. It is how a peer that moved is found before anything
	// else knows its new address (doc.go, "Peer addresses"). It runs on the connection's reader
	// goroutine, shared by every group, so it must be cheap and must not block. It is called for
	// every RequestVote, RequestPreVote and TimeoutNow (rare, and a campaigning peer that is
	// not reached keeps sending them), and for other requests when the pair differs from the
	// previous one on the same connection.
	Announce func(id raft.ServerID, addr raft.ServerAddress)

	DialTimeout      time.Duration // dial + handshake; default DefaultDialTimeout
	RPCTimeout       time.Duration // default DefaultRPCTimeout
	MaxFrameSize     int           // default DefaultMaxFrameSize; at least 64 KiB
	MaxInflightBytes int           // default DefaultMaxInflightBytes
	PipelineDepth    int           // default DefaultPipelineDepth; 1 disables pipelining
	HeartbeatWindow  time.Duration // default DefaultHeartbeatWindow; negative writes at once
}

func (c *Config) withDefaults() Config {
	out := *c
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&out.DialTimeout, DefaultDialTimeout)
	def(&out.RPCTimeout, DefaultRPCTimeout)
	def(&out.HeartbeatWindow, DefaultHeartbeatWindow)
	if out.MaxFrameSize == 0 {
		out.MaxFrameSize = DefaultMaxFrameSize
	}
	if out.MaxInflightBytes == 0 {
		out.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if out.PipelineDepth == 0 {
		out.PipelineDepth = DefaultPipelineDepth
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.Dial == nil {
		out.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return out
}

// Validate reports every problem with the configuration (after defaults are applied).
func (c *Config) Validate() error {
	cfg := c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("transport: "+format, args...)) }
	if cfg.LocalAddr == "" || len(cfg.LocalAddr) > maxAddrLen {
		bad("LocalAddr must be 1-%d bytes", maxAddrLen)
	}
	if cfg.ClusterID == "" || len(cfg.ClusterID) > maxClusterIDLen {
		bad("ClusterID must be 1-%d bytes", maxClusterIDLen)
	}
	if cfg.DialTimeout < 0 || cfg.RPCTimeout < 0 {
		bad("timeouts must not be negative")
	}
	if cfg.MaxFrameSize < 64<<10 || cfg.MaxFrameSize > 1<<30 {
		bad("MaxFrameSize %d outside [64 KiB, 1 GiB]", cfg.MaxFrameSize)
	}
	if cfg.MaxInflightBytes < 0 || cfg.PipelineDepth < 0 {
		bad("MaxInflightBytes and PipelineDepth must not be negative")
	}
	return errors.Join(errs...)
}

// Stats are counters since New; the replication layer exports them as metrics.
type Stats struct {
	Dials, DialFailures         uint64 // outbound connection attempts and failures (dial or handshake)
	Refused                     uint64 // inbound handshakes refused (cluster id, version, garbage)
	Requests                    uint64 // request frames sent (heartbeats not included)
	Heartbeats                  uint64 // heartbeats sent
	HeartbeatFrames             uint64 // heartbeat batch frames written: Heartbeats/HeartbeatFrames is the batching
	Timeouts                    uint64 // RPCs that failed for want of an answer
	SnapshotsSent               uint64 // InstallSnapshot RPCs answered successfully by the follower
	SnapshotsReceived           uint64 // InstallSnapshot RPCs a local group answered without error
	UnknownGroup                uint64 // inbound RPCs for a group not registered here
	ProtocolErrors              uint64 // connections closed because of a malformed or oversized frame
	PeersLost                   uint64 // Config.PeerLost calls
	VotesRefused                uint64 // vote requests refused by a group's vote gate
	InboundConns, OutboundConns int64  // connections open now
}

type counters struct {
	dials, dialFailures, refused, requests, heartbeats, heartbeatFrames atomic.Uint64
	timeouts, snapshotsSent, snapshotsReceived, unknownGroup, protoErrs atomic.Uint64
	peersLost, votesRefused                                             atomic.Uint64
	inbound, outbound                                                   atomic.Int64
}

// Mux is one node's raft transport: it serves ln and dials peers, and carries every local raft
// group's RPCs over a control and a data connection per peer (see doc.go).
//
// Lock order: Mux.mu, then peerLink.mu, then wire.mu; GroupTransport.mu is never held while taking
// another lock except wire.mu (when it answers an RPC).
type Mux struct {
	cfg Config
	ln  net.Listener
	log *slog.Logger

	ctx    context.Context // cancelled by Close: aborts dials
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
	reqID  atomic.Uint64
	stats  counters

	lostMu sync.Mutex
	lostAt map[raft.ServerAddress]time.Time // last PeerLost call per peer

	gmu    sync.RWMutex
	groups map[string]*GroupTransport

	mu          sync.Mutex
	closed      bool
	peers       map[raft.ServerAddress]*peer
	inbound     map[inboundKey]*serverConn
	handshaking map[net.Conn]struct{} // accepted, handshake not done: Close closes them
}

type inboundKey struct {
	addr string
	kind byte
}

// peer holds the two outbound links to one peer address.
type peer struct{ control, data *peerLink }

// New starts a Mux serving ln until Close. ln's lifetime passes to the Mux.
func New(cfg Config, ln net.Listener) (*Mux, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		cfg:     c,
		ln:      ln,
		log:     c.Logger.With("raft_addr", string(c.LocalAddr)),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		groups:  make(map[string]*GroupTransport),
		peers:   make(map[raft.ServerAddress]*peer),
		inbound: make(map[inboundKey]*serverConn),
		lostAt:  make(map[raft.ServerAddress]time.Time),

		handshaking: make(map[net.Conn]struct{}),
	}
	m.goFunc(m.acceptLoop)
	return m, nil
}

// errReplaced closes an inbound connection that a newer one from the same peer replaced: the peer
// is alive, so it is not a lost peer.
var errReplaced = errors.New("transport: replaced by a newer connection")

// PeerLostInterval is the least time between two PeerLost calls for one peer: both control
// connections of a dead peer fail at once, and a flapping path should not flood the callee.
const PeerLostInterval = 500 * time.Millisecond

// peerLost reports a failed control connection to Config.PeerLost.
func (m *Mux) peerLost(addr raft.ServerAddress, err error) {
	if m.cfg.PeerLost == nil || errors.Is(err, raft.ErrTransportShutdown) || errors.Is(err, errReplaced) || m.isClosed() {
		return
	}
	now := time.Now()
	m.lostMu.Lock()
	if last, ok := m.lostAt[addr]; ok && now.Sub(last) < PeerLostInterval {
		m.lostMu.Unlock()
		return
	}
	m.lostAt[addr] = now
	m.lostMu.Unlock()
	m.stats.peersLost.Add(1)
	m.goFunc(func() { m.cfg.PeerLost(addr, now) })
}

// goFunc runs fn on a tracked goroutine, or reports false after Close: every long-lived goroutine
// starts here so that Close can wait for all of them.
func (m *Mux) goFunc(fn func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
	return true
}

// Group returns the raft.Transport for one group, creating it on first use. It returns the same value
// until the group is removed or its transport closed; after that a new one is made.
func (m *Mux) Group(groupID string) *GroupTransport {
	m.gmu.Lock()
	if g := m.groups[groupID]; g != nil {
		m.gmu.Unlock()
		return g
	}
	g := newGroup(m, groupID)
	closed := m.isClosed()
	if !closed {
		m.groups[groupID] = g
	}
	m.gmu.Unlock()
	if closed {
		g.detach() // after Close every RPC of a new group fails at once
	}
	return g
}

// RemoveGroup detaches a group: its RPCs in either direction fail, and peers get "unknown group".
func (m *Mux) RemoveGroup(groupID string) {
	m.gmu.Lock()
	g := m.groups[groupID]
	delete(m.groups, groupID)
	m.gmu.Unlock()
	if g != nil {
		g.detach()
	}
}

// removeGroup detaches g only if it is still the registered transport for its id, so that the
// Close of an old raft instance does not detach its replacement.
func (m *Mux) removeGroup(g *GroupTransport) {
	m.gmu.Lock()
	if m.groups[g.id] == g {
		delete(m.groups, g.id)
	}
	m.gmu.Unlock()
	g.detach()
}

func (m *Mux) group(id string) *GroupTransport {
	m.gmu.RLock()
	g := m.groups[id]
	m.gmu.RUnlock()
	return g
}

// Resolve returns the address an RPC that raft addresses to (id, addr) is sent to: Config.Resolve's
// answer, or addr without one. Callers that key things by peer address (Acked, Call, comparing with
// PeerLost's address) use it so that they name the peer as the transport does.
func (m *Mux) Resolve(id raft.ServerID, addr raft.ServerAddress) raft.ServerAddress {
	if m.cfg.Resolve == nil {
		return addr
	}
	if r := m.cfg.Resolve(id, addr); r != "" {
		return r
	}
	return addr
}

// Acked returns the last log index that peer acknowledged for the group (the match index implied by
// its last successful AppendEntries or InstallSnapshot from this node) and when. Zero values mean
// no acknowledgement since the group's transport was created. peer is the resolved address (see
// Resolve), the one the RPCs were sent to, not necessarily the one in raft's configuration.
func (m *Mux) Acked(groupID string, peer raft.ServerAddress) (index uint64, at time.Time) {
	if g := m.group(groupID); g != nil {
		return g.acked(peer)
	}
	return 0, time.Time{}
}

// Stats returns a snapshot of the counters.
func (m *Mux) Stats() Stats {
	s := &m.stats
	return Stats{
		Dials: s.dials.Load(), DialFailures: s.dialFailures.Load(), Refused: s.refused.Load(),
		Requests: s.requests.Load(), Heartbeats: s.heartbeats.Load(), HeartbeatFrames: s.heartbeatFrames.Load(),
		Timeouts: s.timeouts.Load(), SnapshotsSent: s.snapshotsSent.Load(),
		SnapshotsReceived: s.snapshotsReceived.Load(), UnknownGroup: s.unknownGroup.Load(),
		ProtocolErrors: s.protoErrs.Load(), PeersLost: s.peersLost.Load(), VotesRefused: s.votesRefused.Load(), InboundConns: s.inbound.Load(), OutboundConns: s.outbound.Load(),
	}
}

func (m *Mux) isClosed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Close stops the listener, closes every connection, fails every outstanding RPC with
// raft.ErrTransportShutdown, detaches every group and waits for all goroutines.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.cancel()
	peers := m.peers
	inbound := m.inbound
	m.inbound = nil
	for nc := range m.handshaking {
		_ = nc.Close()
	}
	m.mu.Unlock()

	err := m.ln.Close()
	for _, p := range peers {
		p.control.close()
		p.data.close()
	}
	for _, sc := range inbound {
		sc.close(raft.ErrTransportShutdown)
	}
	m.gmu.Lock()
	groups := m.groups
	m.groups = map[string]*GroupTransport{}
	m.gmu.Unlock()
	for _, g := range groups {
		g.detach()
	}
	m.wg.Wait()
	return err
}

// link returns the outbound link of the given kind to addr.
func (m *Mux) link(addr raft.ServerAddress, kind byte) *peerLink {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[addr]
	if p == nil {
		p = &peer{control: newPeerLink(m, addr, connControl), data: newPeerLink(m, addr, connData)}
		if !m.closed {
			m.peers[addr] = p
		}
	}
	if kind == connControl {
		return p.control
	}
	return p.data
}

func (m *Mux) acceptLoop() {
	var delay time.Duration
	for {
		nc, err := m.ln.Accept()
		if err != nil {
			if m.isClosed() {
				return
			}
			// Back off on persistent errors (EMFILE) as net/http does, instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("raft accept failed", "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.done:
				return
			}
		}
		delay = 0
		if !m.goFunc(func() { m.serve(nc) }) {
			_ = nc.Close()
			return
		}
	}
}

// serve runs the handshake on an accepted connection and then its read loop.
func (m *Mux) serve(nc net.Conn) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = nc.Close()
		return
	}
	m.handshaking[nc] = struct{}{}
	m.mu.Unlock()
	br := bufio.NewReaderSize(nc, readBufSize)
	_ = nc.SetDeadline(time.Now().Add(m.cfg.DialTimeout))
	h, err := m.readHello(br)
	ack := helloAck{Version: min(h.MaxVersion, wireVersion)}
	switch {
	case err != nil:
		ack = helloAck{Err: err.Error()}
	case h.Kind != connControl && h.Kind != connData:
		ack = helloAck{Err: fmt.Sprintf("unknown connection kind %d", h.Kind)}
	case h.MaxVersion < minWireVersion || h.MinVersion > wireVersion:
		ack = helloAck{Err: fmt.Sprintf("no common protocol version: peer %d-%d, ours %d-%d",
			h.MinVersion, h.MaxVersion, minWireVersion, wireVersion)}
	case h.ClusterID != m.cfg.ClusterID:
		ack = helloAck{Err: fmt.Sprintf("cluster id mismatch: peer %q, ours %q", h.ClusterID, m.cfg.ClusterID)}
	}
	b := getBuf(0)
	*b = appendHelloAck(*b, ack)
	_, werr := nc.Write(*b)
	putBuf(b)
	if ack.Version == 0 || werr != nil {
		m.mu.Lock()
		delete(m.handshaking, nc)
		m.mu.Unlock()
		m.stats.refused.Add(1)
		m.log.Warn("raft connection refused", "remote", nc.RemoteAddr().String(), "peer", h.Addr,
			"reason", ack.Err, "write_error", werr)
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	sc := newServerConn(m, nc, br, raft.ServerAddress(h.Addr), h.Kind)
	key := inboundKey{h.Addr, h.Kind}
	m.mu.Lock()
	delete(m.handshaking, nc)
	if m.closed {
		m.mu.Unlock()
		sc.close(raft.ErrTransportShutdown)
		return
	}
	// A peer dials a new connection of a kind only after giving up on the old one, so the newest
	// wins; closing the old one frees what it holds and keeps its stale requests from trickling in.
	old := m.inbound[key]
	m.inbound[key] = sc
	m.mu.Unlock()
	if old != nil {
		old.close(errReplaced)
	}
	m.stats.inbound.Add(1)
	defer m.stats.inbound.Add(-1)
	if !m.goFunc(sc.writeLoop) {
		sc.close(raft.ErrTransportShutdown)
	}
	sc.readLoop(sc.handle)
	m.mu.Lock()
	if m.inbound[key] == sc {
		delete(m.inbound, key)
	}
	m.mu.Unlock()
}

func (m *Mux) readHello(br *bufio.Reader) (hello, error) {
	typ, body, err := readFrame(br, maxHelloLen, nil)
	if err != nil {
		return hello{}, err
	}
	if typ != frameHello {
		return hello{}, errMalformed
	}
	return decodeHello(body)
}
