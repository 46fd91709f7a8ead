// Package netfault injects network faults into the real TCP connections
// between in-process nodes (Varve's Raft transport between brokers of one
// test binary): per directed link (from node -> to node) a partition, a
// reset, delay with jitter, packet loss and random connection resets.
//
// # What the faults model
//
// TCP hides packet loss behind retransmission, so dropping bytes of a
// stream would only model a broken TCP stack (the receiver's framing would
// see garbage). The faults therefore act as a network under TCP would:
//
//   - Blackhole (a partition): nothing crosses. Writes queue up to a send
//     buffer's worth (256 KiB) and then block until the write deadline,
//     reads see nothing, a new dial hangs until its context ends (its SYN
//     is lost). When the link heals, the held bytes flow, in order, as
//     TCP's retransmissions would deliver them.
//   - Refuse (a cut): every connection between the two nodes is reset
//     (RST) and new dials fail at once with ECONNREFUSED.
//   - Delay and Jitter: each write arrives Delay plus a uniform
//     [0, Jitter) later, never before an earlier write (TCP keeps order).
//   - Loss: each write is lost with this probability and retransmitted
//     after an RTO (200 ms, doubling while it keeps being lost, as
//     Linux's minimum RTO does), delaying it and everything behind it.
//   - Reset: each write resets the connection with this probability (a
//     middlebox dropping the flow, a peer's RST).
//
// A link's fault is read when bytes enter it: a write already queued when a
// delay changes keeps the delay it got; blackholes apply to queued bytes too.
//
// # Where faults apply
//
// Only on the dialing side: Dialer wraps every connection a node dials.
// Its writes travel the link dialer -> listener, its reads carry the link
// listener -> dialer, so both directions of every connection are faulted
// without knowing who dialed an accepted connection. Listener only tracks
// accepted connections (Isolate closes them) and refuses connections to an
// isolated node.
//
// Randomness (loss, reset, jitter) comes from a per-connection generator
// seeded from the Network's seed, the link and the connection's serial
// number: a schedule of link faults replays exactly; which write of a
// connection is lost depends on how the traffic was cut into writes.
package netfault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Fault is what happens to the bytes of one direction of a link. The zero
// Fault is a healthy link.
type Fault struct {
	// Blackhole holds every byte (and every dial) until the link heals.
	Blackhole bool
	// Refuse resets every connection between the two nodes and refuses
	// new dials both ways (a cut link is cut in both directions: a TCP
	// connection carries both).
	Refuse bool
	// Delay is added to every write; Jitter adds a uniform [0, Jitter).
	Delay, Jitter time.Duration
	// Loss is the probability that a write is lost and retransmitted
	// after an RTO (200 ms, doubling while lost again).
	Loss float64
	// Reset is the probability that a write resets its connection.
	Reset float64
}

// String describes a fault for the schedule log.
func (f Fault) String() string {
	var parts []string
	if f.Blackhole {
		parts = append(parts, "blackhole")
	}
	if f.Refuse {
		parts = append(parts, "refuse")
	}
	if f.Delay > 0 || f.Jitter > 0 {
		parts = append(parts, fmt.Sprintf("delay=%v+%v", f.Delay, f.Jitter))
	}
	if f.Loss > 0 {
		parts = append(parts, fmt.Sprintf("loss=%g", f.Loss))
	}
	if f.Reset > 0 {
		parts = append(parts, fmt.Sprintf("reset=%g", f.Reset))
	}
	if len(parts) == 0 {
		return "healthy"
	}
	return strings.Join(parts, ",")
}

// Link is one direction between two nodes.
type Link struct{ From, To int32 }

// Stats count what the network did.
type Stats struct {
	Dials        int64 // connections established
	DialsRefused int64 // dials refused (Refuse or Isolate)
	DialsHung    int64 // dials that waited on a blackhole until their context ended
	Resets       int64 // connections reset (Refuse, Isolate, Reset)
	Retransmits  int64 // writes lost and retransmitted (Loss)
}

const (
	// bufSize is the bytes a direction holds before writes block (the
	// dialer's send buffer) or reads stop (its receive buffer).
	bufSize = 256 << 10
	minRTO  = 200 * time.Millisecond
	maxRTO  = 3200 * time.Millisecond
)

// Network is the fault state of a set of nodes and their connections. It
// is safe for concurrent use. Lock order: a connection's mu before the
// Network's mu is never taken; the Network releases its mu before it
// touches connections.
type Network struct {
	mu       sync.Mutex
	seed     uint64
	serial   uint64
	links    map[Link]Fault
	isolated map[int32]bool
	nodes    map[int32]bool
	conns    map[*conn]struct{}
	accepted map[int32]map[net.Conn]struct{}
	dialed   map[dialKey]int
	changed  chan struct{} // closed and replaced on every fault change
	logf     func(format string, args ...any)

	dials, dialsRefused, dialsHung, resets, retransmits atomic.Int64
}

type dialKey struct {
	from int32
	addr string
}

// New returns a healthy network whose randomness derives from seed.
func New(seed uint64) *Network {
	return &Network{
		seed:     seed,
		links:    map[Link]Fault{},
		isolated: map[int32]bool{},
		nodes:    map[int32]bool{},
		conns:    map[*conn]struct{}{},
		accepted: map[int32]map[net.Conn]struct{}{},
		dialed:   map[dialKey]int{},
		changed:  make(chan struct{}),
	}
}

// Seed is the seed the network was made with.
func (nw *Network) Seed() uint64 { return nw.seed }

// SetLogf makes every fault change logged through logf (t.Logf), so a
// failing run's schedule can be read and replayed. Nil stops logging.
func (nw *Network) SetLogf(logf func(format string, args ...any)) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.logf = logf
}

// Stats returns the counters so far.
func (nw *Network) Stats() Stats {
	return Stats{Dials: nw.dials.Load(), DialsRefused: nw.dialsRefused.Load(), DialsHung: nw.dialsHung.Load(),
		Resets: nw.resets.Load(), Retransmits: nw.retransmits.Load()}
}

// Nodes are the ids the network has seen (through Dialer, Listener or a
// fault), sorted.
func (nw *Network) Nodes() []int32 {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.nodesLocked()
}

func (nw *Network) nodesLocked() []int32 {
	var ids []int32
	for id := range nw.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Link is the fault set on one direction.
func (nw *Network) Link(from, to int32) Fault {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.links[Link{from, to}]
}

// Set sets the fault of the direction from -> to (the zero Fault heals it).
func (nw *Network) Set(from, to int32, f Fault) {
	nw.apply(fmt.Sprintf("link %d->%d: %v", from, to, f), func() {
		nw.setLocked(from, to, f)
	})
}

// SetBoth sets f on both directions between a and b.
func (nw *Network) SetBoth(a, b int32, f Fault) {
	nw.apply(fmt.Sprintf("links %d<->%d: %v", a, b, f), func() {
		nw.setLocked(a, b, f)
		nw.setLocked(b, a, f)
	})
}

// SetAll sets f on every direction between the nodes the network knows
// (a lossy, slow network everywhere).
func (nw *Network) SetAll(f Fault) {
	nw.apply(fmt.Sprintf("every link: %v", f), func() {
		ids := nw.nodesLocked()
		for _, a := range ids {
			for _, b := range ids {
				if a != b {
					nw.setLocked(a, b, f)
				}
			}
		}
	})
}

func (nw *Network) setLocked(from, to int32, f Fault) {
	nw.nodes[from], nw.nodes[to] = true, true
	if f == (Fault{}) {
		delete(nw.links, Link{from, to})
		return
	}
	nw.links[Link{from, to}] = f
}

// Heal clears every link fault and every isolation.
func (nw *Network) Heal() {
	nw.apply("heal everything", func() {
		clear(nw.links)
		clear(nw.isolated)
	})
}

// Partition splits the nodes into sides that cannot reach each other
// (every link between two sides blackholed, both ways); links within a
// side, and of nodes in no side, are left as they are. With a majority
// and a minority side it is the classic quorum split.
func (nw *Network) Partition(sides ...[]int32) {
	nw.PartitionWith(Fault{Blackhole: true}, sides...)
}

// PartitionWith is Partition with another fault between the sides (a cut:
// Fault{Refuse: true}).
func (nw *Network) PartitionWith(f Fault, sides ...[]int32) {
	nw.apply(fmt.Sprintf("partition %v: %v", sides, f), func() {
		for i, s := range sides {
			for _, t := range sides[i+1:] {
				for _, a := range s {
					for _, b := range t {
						nw.setLocked(a, b, f)
						nw.setLocked(b, a, f)
					}
				}
			}
		}
	})
}

// Bridge splits left from right while bridge, in neither, still reaches
// both sides: each side alone may be a minority, and with the bridge a
// majority (Jepsen's "bridge" nemesis).
func (nw *Network) Bridge(bridge int32, left, right []int32) {
	if slices.Contains(left, bridge) || slices.Contains(right, bridge) {
		panic("netfault: the bridge must be on neither side")
	}
	nw.Partition(left, right)
}

// Blackhole blackholes every link to and from id (both ways, to every
// known node): the node is partitioned from everyone, silently.
func (nw *Network) Blackhole(id int32) {
	nw.apply(fmt.Sprintf("blackhole node %d", id), func() {
		for _, o := range nw.nodesLocked() {
			if o != id {
				nw.setLocked(id, o, Fault{Blackhole: true})
				nw.setLocked(o, id, Fault{Blackhole: true})
			}
		}
	})
}

// Isolate cuts (cut=true: resets every connection of id and refuses every
// new one, dialed or accepted) or heals node id. Link faults are kept.
func (nw *Network) Isolate(id int32, cut bool) {
	nw.apply(fmt.Sprintf("isolate node %d: %v", id, cut), func() {
		nw.nodes[id] = true
		if cut {
			nw.isolated[id] = true
		} else {
			delete(nw.isolated, id)
		}
	})
}

// Split shuffles ids with rng and returns a majority and a minority.
func Split(rng *rand.Rand, ids []int32) (majority, minority []int32) {
	s := slices.Clone(ids)
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	k := len(s)/2 + 1
	return s[:k], s[k:]
}

// Flap runs apply, waits every, heals, waits every, and again, until ctx
// ends; then it heals and closes the returned channel. apply chooses the
// fault each time (the same partition, or a new random one).
func (nw *Network) Flap(ctx context.Context, every time.Duration, apply func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer nw.Heal()
		t := time.NewTimer(every)
		defer t.Stop()
		for on := true; ; on = !on {
			if on {
				apply()
			} else {
				nw.Heal()
			}
			t.Reset(every)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return done
}

// DialsTo counts the connections from has dialed to addr (closed ones
// included).
func (nw *Network) DialsTo(from int32, addr string) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.dialed[dialKey{from, addr}]
}

// apply changes the fault state under the lock, logs it, then brings
// every connection in line: refused links reset, others re-read their
// faults, waiters wake.
func (nw *Network) apply(what string, change func()) {
	nw.mu.Lock()
	change()
	if nw.logf != nil {
		nw.logf("netfault %s: %s", time.Now().Format("15:04:05.000"), what)
	}
	close(nw.changed)
	nw.changed = make(chan struct{})
	type update struct {
		c       *conn
		out, in Fault
		refused bool
	}
	var ups []update
	for c := range nw.conns {
		u := update{c: c, out: nw.faultLocked(c.from, c.to), in: nw.faultLocked(c.to, c.from), refused: nw.refusedLocked(c.from, c.to)}
		if u.refused {
			delete(nw.conns, c)
			nw.resets.Add(1)
		}
		ups = append(ups, u)
	}
	var doomed []net.Conn
	for id := range nw.isolated {
		for nc := range nw.accepted[id] {
			doomed = append(doomed, nc)
		}
		delete(nw.accepted, id)
	}
	nw.mu.Unlock()
	for _, u := range ups {
		if u.refused {
			u.c.reset()
		} else {
			u.c.setFaults(u.out, u.in)
		}
	}
	for _, nc := range doomed {
		resetConn(nc)
	}
}

func (nw *Network) faultLocked(from, to int32) Fault { return nw.links[Link{from, to}] }

func (nw *Network) refusedLocked(a, b int32) bool {
	return nw.isolated[a] || nw.isolated[b] || nw.links[Link{a, b}].Refuse || nw.links[Link{b, a}].Refuse
}

func (nw *Network) holeLocked(a, b int32) bool {
	return nw.links[Link{a, b}].Blackhole || nw.links[Link{b, a}].Blackhole
}

// Dialer returns node from's dial function: idOf maps an address to the
// node listening there (0 when unknown: no faults apply).
func (nw *Network) Dialer(from int32, idOf func(addr string) int32) func(ctx context.Context, addr string) (net.Conn, error) {
	nw.mu.Lock()
	nw.nodes[from] = true
	nw.mu.Unlock()
	return func(ctx context.Context, addr string) (net.Conn, error) {
		to := idOf(addr)
		if err := nw.waitDialable(ctx, from, to, addr); err != nil {
			return nil, err
		}
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		nw.mu.Lock()
		if nw.refusedLocked(from, to) {
			nw.dialsRefused.Add(1)
			nw.mu.Unlock()
			_ = nc.Close()
			return nil, refusedErr(addr)
		}
		nw.serial++
		c := &conn{nc: nc, nw: nw, from: from, to: to, kick: make(chan struct{}),
			rng: rand.New(rand.NewPCG(nw.seed, nw.serial<<32|uint64(uint16(from))<<16|uint64(uint16(to)))),
			out: dir{fault: nw.faultLocked(from, to)}, in: dir{fault: nw.faultLocked(to, from)}}
		c.onClose = func() {
			nw.mu.Lock()
			delete(nw.conns, c)
			nw.mu.Unlock()
		}
		nw.conns[c] = struct{}{}
		nw.dialed[dialKey{from, addr}]++
		nw.dials.Add(1)
		nw.mu.Unlock()
		if c.out.fault != (Fault{}) || c.in.fault != (Fault{}) {
			c.mu.Lock()
			c.startPumpsLocked()
			c.mu.Unlock()
		}
		return c, nil
	}
}

// waitDialable refuses a dial on a refused link, holds it while the link
// is blackholed either way (no SYN or SYN-ACK crosses), and adds the
// link's round-trip delay.
func (nw *Network) waitDialable(ctx context.Context, from, to int32, addr string) error {
	hung := false
	for {
		nw.mu.Lock()
		refused, hole, ch := nw.refusedLocked(from, to), nw.holeLocked(from, to), nw.changed
		rtt := nw.faultLocked(from, to).Delay + nw.faultLocked(to, from).Delay
		if refused {
			nw.dialsRefused.Add(1)
		}
		if hole && !hung {
			hung = true
			nw.dialsHung.Add(1)
		}
		nw.mu.Unlock()
		switch {
		case refused:
			return refusedErr(addr)
		case !hole:
			return sleepCtx(ctx, rtt)
		}
		select {
		case <-ctx.Done():
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
		case <-ch:
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	case <-t.C:
		return nil
	}
}

func refusedErr(addr string) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: stringAddr(addr), Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// Listener wraps node id's listener: accepted connections are tracked (an
// Isolate resets them) and refused while id is isolated.
func (nw *Network) Listener(id int32, ln net.Listener) net.Listener {
	nw.mu.Lock()
	nw.nodes[id] = true
	nw.mu.Unlock()
	return &listener{Listener: ln, nw: nw, id: id}
}

type listener struct {
	net.Listener
	nw *Network
	id int32
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.nw.mu.Lock()
		if l.nw.isolated[l.id] {
			l.nw.mu.Unlock()
			resetConn(nc)
			continue
		}
		if l.nw.accepted[l.id] == nil {
			l.nw.accepted[l.id] = map[net.Conn]struct{}{}
		}
		l.nw.accepted[l.id][nc] = struct{}{}
		l.nw.mu.Unlock()
		return &acceptedConn{Conn: nc, forget: func() {
			l.nw.mu.Lock()
			delete(l.nw.accepted[l.id], nc)
			l.nw.mu.Unlock()
		}}, nil
	}
}

// acceptedConn forgets itself when closed, so long tests do not keep
// every connection ever accepted.
type acceptedConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *acceptedConn) Close() error {
	c.once.Do(c.forget)
	return c.Conn.Close()
}

// resetConn closes nc with an RST rather than a FIN, as a cut path or a
// dead peer's kernel would.
func resetConn(nc net.Conn) {
	if tc, ok := nc.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}

// Describe lists the faulty links and isolated nodes (for failure
// messages).
func (nw *Network) Describe() string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var parts []string
	for l, f := range nw.links {
		parts = append(parts, fmt.Sprintf("%d->%d %v", l.From, l.To, f))
	}
	for id := range nw.isolated {
		parts = append(parts, fmt.Sprintf("%d isolated", id))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "healthy"
	}
	return strings.Join(parts, "; ")
}
