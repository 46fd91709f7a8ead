package netfault

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// chunk is one write on its way: its bytes and when they may arrive.
type chunk struct {
	b  []byte
	at time.Time
}

// dir is one direction of a connection: its link's fault and the bytes in
// flight.
type dir struct {
	fault Fault
	q     []chunk
	bytes int
	last  time.Time // arrival time of the newest chunk: nothing arrives before it
}

// conn is a dialed connection with the faults of its two links applied.
//
// While both links are healthy it passes reads and writes straight to the
// real connection (benchmarks run through it). The first fault on either
// link switches it to pumped mode for good: writes go to out, which
// writePump drains into the real connection once each chunk's time has
// come and the link is not blackholed; readPump fills in from the real
// connection, and Read takes from it under the same rules for the link the
// other way. rmu and wmu give the real connection one reader and one
// writer: a direct call or, from the switch on, the pump. All other state
// is under mu; the pumps and blocked callers wait on kick, which every
// change closes and replaces.
type conn struct {
	nc       net.Conn
	nw       *Network
	from, to int32
	onClose  func()

	pumped   atomic.Bool
	rmu, wmu sync.Mutex

	mu       sync.Mutex
	rng      *rand.Rand
	kick     chan struct{}
	closed   bool
	err      error // why it closed; nil after Close
	out, in  dir
	inErr    error // the real connection's read error, delivered after the queued bytes
	rdl, wdl time.Time
}

func (c *conn) broadcastLocked() {
	close(c.kick)
	c.kick = make(chan struct{})
}

// waitLocked releases mu until something changes, the deadline passes or
// wake comes (zero times are ignored).
func (c *conn) waitLocked(deadline, wake time.Time) {
	ch := c.kick
	c.mu.Unlock()
	defer c.mu.Lock()
	when := deadline
	if when.IsZero() || (!wake.IsZero() && wake.Before(when)) {
		when = wake
	}
	if when.IsZero() {
		<-ch
		return
	}
	t := time.NewTimer(time.Until(when))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// arrivalLocked is when bytes entering d now may arrive: after the delay,
// jitter and any retransmissions, and never before earlier bytes.
func (c *conn) arrivalLocked(d *dir) time.Time {
	f := d.fault
	at := time.Now().Add(f.Delay)
	if f.Jitter > 0 {
		at = at.Add(time.Duration(c.rng.Int64N(int64(f.Jitter))))
	}
	for rto := minRTO; f.Loss > 0 && rto <= maxRTO && c.rng.Float64() < f.Loss; rto *= 2 {
		at = at.Add(rto)
		c.nw.retransmits.Add(1)
	}
	if at.Before(d.last) {
		at = d.last
	}
	d.last = at
	return at
}

// resetDrawLocked decides whether bytes entering d reset the connection.
func (c *conn) resetDrawLocked(d *dir) bool {
	return d.fault.Reset > 0 && c.rng.Float64() < d.fault.Reset
}

func (c *conn) errLocked(op string) error {
	if c.err != nil {
		return &net.OpError{Op: op, Net: "tcp", Source: c.nc.LocalAddr(), Addr: c.nc.RemoteAddr(), Err: c.err}
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.nc.LocalAddr(), Addr: c.nc.RemoteAddr(), Err: net.ErrClosed}
}

func timeoutErr(op string) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.ErrDeadlineExceeded}
}

var errReset = os.NewSyscallError("read", syscall.ECONNRESET)

// Write queues p on the outgoing link; it blocks while a send buffer's
// worth is already queued (the link is slow or blackholed).
func (c *conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !c.pumped.Load() {
		c.wmu.Lock()
		if !c.pumped.Load() {
			n, err := c.nc.Write(p)
			c.wmu.Unlock()
			return n, c.directErr("write", err)
		}
		c.wmu.Unlock()
	}
	c.mu.Lock()
	for {
		if c.closed {
			err := c.errLocked("write")
			c.mu.Unlock()
			return 0, err
		}
		if !c.wdl.IsZero() && !time.Now().Before(c.wdl) {
			c.mu.Unlock()
			return 0, timeoutErr("write")
		}
		if c.out.bytes == 0 || c.out.bytes+len(p) <= bufSize {
			break
		}
		c.waitLocked(c.wdl, time.Time{})
	}
	if c.resetDrawLocked(&c.out) {
		c.mu.Unlock()
		c.nw.resets.Add(1)
		c.reset()
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: errReset}
	}
	c.out.q = append(c.out.q, chunk{b: bytes.Clone(p), at: c.arrivalLocked(&c.out)})
	c.out.bytes += len(p)
	c.broadcastLocked()
	c.mu.Unlock()
	return len(p), nil
}

// Read returns bytes whose time has come on the incoming link.
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !c.pumped.Load() {
		c.rmu.Lock()
		if !c.pumped.Load() {
			n, err := c.nc.Read(p)
			c.rmu.Unlock()
			// A timeout may be the switch to pumped mode kicking this
			// read out of the real connection: then read the queue.
			if n > 0 || err == nil || !isTimeout(err) || !c.pumped.Load() {
				return n, c.directErr("read", err)
			}
		} else {
			c.rmu.Unlock()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed {
			return 0, c.errLocked("read")
		}
		var wake time.Time
		if !c.in.fault.Blackhole {
			if len(c.in.q) > 0 {
				h := &c.in.q[0]
				if !time.Now().Before(h.at) {
					n := copy(p, h.b)
					h.b = h.b[n:]
					c.in.bytes -= n
					if len(h.b) == 0 {
						c.in.q[0] = chunk{}
						c.in.q = c.in.q[1:]
					}
					c.broadcastLocked()
					return n, nil
				}
				wake = h.at
			} else if c.inErr != nil {
				return 0, c.inErr
			}
		}
		if !c.rdl.IsZero() && !time.Now().Before(c.rdl) {
			return 0, timeoutErr("read")
		}
		c.waitLocked(c.rdl, wake)
	}
}

// directErr is what a direct read or write returns for err: the reset's
// error when the network reset the connection under it.
func (c *conn) directErr(op string, err error) error {
	if err == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed && c.err != nil {
		return c.errLocked(op)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// startPumpsLocked switches to pumped mode: the pumps take over the real
// connection (a direct read blocked in it is kicked out by a past
// deadline; the pumps clear the real deadlines, which from now on are
// kept here).
func (c *conn) startPumpsLocked() {
	if c.pumped.Swap(true) {
		return
	}
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	go c.writePump()
	go c.readPump()
}

// writePump moves queued writes into the real connection when they are
// due and the link is open.
func (c *conn) writePump() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Time{})
	for {
		c.mu.Lock()
		var b []byte
		for b == nil {
			if c.closed {
				c.mu.Unlock()
				return
			}
			var wake time.Time
			if len(c.out.q) > 0 && !c.out.fault.Blackhole {
				if h := c.out.q[0]; !time.Now().Before(h.at) {
					b = h.b
					c.out.q[0] = chunk{}
					c.out.q = c.out.q[1:]
					break
				} else {
					wake = h.at
				}
			}
			c.waitLocked(time.Time{}, wake)
		}
		c.mu.Unlock()
		_, err := c.nc.Write(b)
		c.mu.Lock()
		c.out.bytes -= len(b)
		c.broadcastLocked()
		c.mu.Unlock()
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// readPump reads the real connection into the incoming queue, stopping
// while a receive buffer's worth waits (so a blackholed reader pushes back
// on the sender, as TCP's window does).
func (c *conn) readPump() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	_ = c.nc.SetReadDeadline(time.Time{})
	buf := make([]byte, 64<<10)
	for {
		c.mu.Lock()
		for !c.closed && c.in.bytes >= bufSize {
			c.waitLocked(time.Time{}, time.Time{})
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		n, err := c.nc.Read(buf)
		c.mu.Lock()
		if n > 0 {
			if c.resetDrawLocked(&c.in) {
				c.mu.Unlock()
				c.nw.resets.Add(1)
				c.reset()
				return
			}
			c.in.q = append(c.in.q, chunk{b: bytes.Clone(buf[:n]), at: c.arrivalLocked(&c.in)})
			c.in.bytes += n
		}
		if err != nil && c.inErr == nil {
			c.inErr = err
		}
		c.broadcastLocked()
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// setFaults changes the link faults of both directions.
func (c *conn) setFaults(out, in Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.fault, c.in.fault = out, in
	if !c.closed && (out != Fault{} || in != Fault{}) {
		c.startPumpsLocked()
	}
	c.broadcastLocked()
}

// closeWith marks the connection closed for err (nil: closed by its
// owner) and wakes everyone; it reports whether this call closed it.
func (c *conn) closeWith(err error) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.closed, c.err = true, err
	c.out.q, c.in.q = nil, nil
	c.broadcastLocked()
	c.mu.Unlock()
	if c.onClose != nil {
		c.onClose()
	}
	return true
}

// reset closes the connection with an RST: both ends see ECONNRESET.
func (c *conn) reset() {
	if c.closeWith(errReset) {
		resetConn(c.nc)
	}
}

// fail closes the connection after the real connection failed.
func (c *conn) fail(err error) {
	if c.closeWith(err) {
		_ = c.nc.Close()
	}
}

// Close closes the connection; bytes still queued are dropped.
func (c *conn) Close() error {
	if !c.closeWith(nil) {
		return &net.OpError{Op: "close", Net: "tcp", Err: net.ErrClosed}
	}
	return c.nc.Close()
}

func (c *conn) LocalAddr() net.Addr  { return c.nc.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// The deadlines are kept here, and set on the real connection too while
// reads and writes go straight to it.

func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl, c.wdl = t, t
	if !c.pumped.Load() {
		_ = c.nc.SetDeadline(t)
	}
	c.broadcastLocked()
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	if !c.pumped.Load() {
		_ = c.nc.SetReadDeadline(t)
	}
	c.broadcastLocked()
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdl = t
	if !c.pumped.Load() {
		_ = c.nc.SetWriteDeadline(t)
	}
	c.broadcastLocked()
	return nil
}
