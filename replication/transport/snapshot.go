package transport

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Snapshot streaming constants; both are part of the protocol (doc.go). The receiver grants
// snapshotWindow bytes when raft starts reading the stream and re-grants each chunk as raft consumes
// it, so a stream buffers at most snapshotWindow bytes on the receiver, and none before raft reads.
const (
	snapshotChunkSize = 128 << 10
	snapshotWindow    = 1 << 20
	// snapshotRestoreRate scales the wait for the final answer: the follower spills the snapshot to
	// its store and restores the FSM before it answers.
	snapshotRestoreRate = 16 << 20 // bytes per second
)

var errSnapshotStalled = errors.New("transport: snapshot stream stalled")

// InstallSnapshot implements raft.Transport: the request goes on the data connection, then the
// snapshot bytes in chunks under the receiver's credit, then the answer comes back. It goes to
// Mux.Resolve(peer, target), and the acknowledgement is recorded under that address.
func (g *GroupTransport) InstallSnapshot(peer raft.ServerID, target raft.ServerAddress,
	args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	target = g.m.Resolve(peer, target)
	cc, id, err := g.prepare(target, connData)
	if err != nil {
		return err
	}
	if args.Size < 0 {
		return fmt.Errorf("transport: negative snapshot size %d", args.Size)
	}
	frame, err := encodeRequest(id, g.id, args, g.m.cfg.MaxFrameSize)
	if err != nil {
		return err
	}
	c := newCall(id, rpcInstallSnapshot, resp)
	s := &snapSend{notify: make(chan struct{}, 1)}
	cc.mu.Lock()
	if !cc.closed {
		cc.sends[id] = s
	}
	cc.mu.Unlock()
	defer func() {
		cc.mu.Lock()
		delete(cc.sends, id)
		cc.mu.Unlock()
	}()
	if err := cc.send(c, frame); err != nil {
		return err
	}
	if err := g.streamSnapshot(cc, c, s, args.Size, data); err != nil {
		if errors.Is(err, errAnsweredEarly) {
			// The receiver answered before taking every byte (a rejection): tell it to drop the rest.
			g.abortSnapshot(cc, id, "answered before the stream ended")
			<-c.done
			return c.err
		}
		g.abortSnapshot(cc, id, err.Error())
		return cc.abandon(c, err)
	}
	timeout := g.m.cfg.RPCTimeout + time.Duration(args.Size)*time.Second/snapshotRestoreRate
	if err := cc.wait(c, timeout, g.closed); err != nil {
		return err
	}
	if resp.Success {
		g.m.stats.snapshotsSent.Add(1)
		g.recordAck(target, args.LastLogIndex)
	}
	return nil
}

var errAnsweredEarly = errors.New("transport: snapshot answered early")

// streamSnapshot sends size bytes of data as chunk frames, each once the receiver has granted room.
func (g *GroupTransport) streamSnapshot(cc *clientConn, c *call, s *snapSend, size int64, data io.Reader) error {
	timer := time.NewTimer(g.m.cfg.RPCTimeout)
	defer timer.Stop()
	for sent := int64(0); sent < size; {
		n := int(min(snapshotChunkSize, size-sent))
		timer.Reset(g.m.cfg.RPCTimeout)
		for !s.take(n) {
			select {
			case <-s.notify:
			case <-c.done:
				return errAnsweredEarly
			case <-cc.done:
				return fmt.Errorf("transport: connection lost mid-snapshot: %w", cc.err)
			case <-g.closed:
				return raft.ErrTransportShutdown
			case <-g.m.done:
				return raft.ErrTransportShutdown
			case <-timer.C:
				return errSnapshotStalled
			}
		}
		b := getBuf(n + 16)
		*b = appendChunkHeader(*b, c.id, n)
		hdr := len(*b)
		*b = slices.Grow(*b, n)[:hdr+n]
		if _, err := io.ReadFull(data, (*b)[hdr:]); err != nil {
			putBuf(b)
			return fmt.Errorf("transport: reading snapshot: %w", err)
		}
		if err := cc.enqueue(b); err != nil {
			return err
		}
		sent += int64(n)
	}
	return nil
}

func (g *GroupTransport) abortSnapshot(cc *clientConn, id uint64, reason string) {
	b := getBuf(0)
	*b = appendAbort(*b, id, reason)
	_ = cc.enqueue(b)
}

// snapSend is the sending side's credit for one stream.
type snapSend struct {
	mu     sync.Mutex
	credit int64
	notify chan struct{}
}

func (s *snapSend) addCredit(n uint64) {
	s.mu.Lock()
	s.credit += int64(min(n, snapshotWindow))
	s.mu.Unlock()
	s.signal()
}

func (s *snapSend) take(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.credit < int64(n) {
		return false
	}
	s.credit -= int64(n)
	return true
}

func (s *snapSend) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// snapRecv is the receiving end of one stream, handed to raft as RPC.Reader. It returns io.EOF after
// exactly size bytes, and an error if the connection fails, the sender aborts, or no data arrives
// for RPCTimeout while raft waits (raft's main goroutine is blocked in Read, so it must not hang).
type snapRecv struct {
	sc   *serverConn
	id   uint64
	size int64

	mu       sync.Mutex
	chunks   [][]byte
	head     []byte // unread rest of the current chunk
	headLen  int    // full length of the current chunk, re-granted once it is consumed
	received int64
	consumed int64
	credit   int64 // granted and not yet received
	started  bool
	done     bool // raft answered: drop whatever still arrives
	err      error
	notify   chan struct{}
}

func newSnapRecv(sc *serverConn, id uint64, size int64) *snapRecv {
	return &snapRecv{sc: sc, id: id, size: size, notify: make(chan struct{}, 1)}
}

func (s *snapRecv) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *snapRecv) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if s.consumed >= s.size {
			s.mu.Unlock()
			return 0, io.EOF
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		if !s.started {
			// Raft has started reading: open the window.
			s.started = true
			s.credit += snapshotWindow
			s.mu.Unlock()
			s.sc.sendCredit(s.id, snapshotWindow)
			continue
		}
		if len(s.head) == 0 && len(s.chunks) > 0 {
			s.head, s.headLen = s.chunks[0], len(s.chunks[0])
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
		}
		if len(s.head) > 0 {
			n := copy(p, s.head)
			s.head = s.head[n:]
			s.consumed += int64(n)
			var grant int64
			if len(s.head) == 0 && s.received < s.size {
				grant = int64(s.headLen)
				s.credit += grant
			}
			s.mu.Unlock()
			if grant > 0 {
				s.sc.sendCredit(s.id, grant)
			}
			return n, nil
		}
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(s.sc.m.cfg.RPCTimeout)
		}
		select {
		case <-s.notify:
		case <-timer.C:
			s.fail(errSnapshotStalled)
		}
	}
}

// push adds a chunk from the reader goroutine; data is kept if owned, else copied. It
// reports whether the stream is complete and can be dropped, and an error for a peer that sends
// beyond its credit or the declared size, which closes the connection.
func (s *snapRecv) push(data []byte, owned bool) (complete bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(len(data))
	if s.received+n > s.size {
		return true, fmt.Errorf("transport: snapshot stream %d exceeds its size %d", s.id, s.size)
	}
	s.received += n
	if s.done || s.err != nil {
		return s.received >= s.size, nil
	}
	if n > s.credit {
		return true, fmt.Errorf("transport: snapshot stream %d sent %d bytes beyond its credit", s.id, n-s.credit)
	}
	s.credit -= n
	if !owned {
		data = append([]byte(nil), data...)
	}
	s.chunks = append(s.chunks, data)
	s.signal()
	return false, nil
}

// finish marks the stream answered and frees its buffers; true if no more chunks will come.
func (s *snapRecv) finish() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	s.chunks, s.head = nil, nil
	return s.received >= s.size || s.err != nil
}

func (s *snapRecv) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.signal()
}
