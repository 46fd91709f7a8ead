package protocol

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// readBufferSize lets pipelined small requests be read with one syscall.
	readBufferSize = 16 << 10
	// eagerBodyBytes is the largest body allocated in one go; larger ones
	// grow with the bytes received, so a size field alone cannot make the
	// server allocate (or reserve in its RequestBudget) more than this:
	// a client that announces a large frame and sends nothing holds 64 KiB.
	// A 1 MiB produce request costs two extra copies (320 KiB) for it.
	eagerBodyBytes = 64 << 10
	// coalesceBytes stops adding queued responses to one write.
	coalesceBytes = 256 << 10
	// maxRetainedWriteBuf is the largest write buffer kept between writes;
	// a larger one (a big Fetch) is dropped so idle connections stay small.
	maxRetainedWriteBuf = 1 << 20
)

// errShutdown ends a read loop that noticed Shutdown between frames.
var errShutdown = errors.New("protocol: server shutting down")

// outgoing is one response queued from the read to the write goroutine.
type outgoing struct {
	corr int32
	resp kmsg.Response // version already set
}

// conn is one client connection: a read goroutine (readLoop) and a write
// goroutine (writeLoop) joined by out. The writer owns closing nc: the reader
// only stops and closes out, so that queued responses are still written.
type conn struct {
	srv  *Server
	nc   net.Conn
	br   *bufio.Reader // read goroutine only
	info ConnInfo
	ip   string // the client IP counted by the server's ConnLimits
	log  *slog.Logger

	// ctx is given to Handle. It is cancelled when the writer exits (the
	// client can no longer get a response) or when Shutdown's deadline
	// passes (through the server's base context).
	ctx    context.Context
	cancel context.CancelFunc

	out        chan outgoing // capacity MaxInFlight; closed by the reader
	writerDone chan struct{} // closed when the writer exits, so the reader never blocks on out
	live       atomic.Int32  // goroutines still running; the last one unregisters
}

// newConn is called with s.mu held; it must not block.
func newConn(s *Server, nc net.Conn, id uint64) *conn {
	ctx, cancel := context.WithCancel(s.baseCtx)
	c := &conn{
		srv: s,
		nc:  nc,
		br:  bufio.NewReaderSize(nc, readBufferSize),
		info: ConnInfo{
			Listener:   s.cfg.Listener,
			LocalAddr:  nc.LocalAddr(),
			RemoteAddr: nc.RemoteAddr(),
			ID:         id,
		},
		log:        s.log.With("conn_id", id, "remote", nc.RemoteAddr().String()),
		ctx:        ctx,
		cancel:     cancel,
		out:        make(chan outgoing, s.cfg.MaxInFlight),
		writerDone: make(chan struct{}),
	}
	c.live.Store(2)
	return c
}

// exit is deferred by both goroutines; the last one out unregisters.
func (c *conn) exit() {
	if c.live.Add(-1) == 0 {
		c.cancel()
		c.srv.removeConn(c)
		c.log.Debug("connection closed")
	}
}

// stopReading makes a read goroutine that waits for a frame return at once.
// Called by Shutdown with s.mu held, after the closing flag is set; see
// setReadDeadline for why the order matters.
func (c *conn) stopReading() {
	_ = c.nc.SetReadDeadline(time.Now())
}

// readLoop reads, parses and handles one frame at a time, and queues the
// responses in order. Any return closes the connection once the writer has
// flushed what is queued.
func (c *conn) readLoop() {
	defer c.exit()
	defer close(c.out)
	c.log.Debug("connection opened")
	for {
		frame, held, err := c.readFrame()
		if err != nil {
			c.logReadError(err)
			return
		}
		keep := c.serveFrame(frame)
		c.srv.requests.release(held)
		if !keep {
			return
		}
	}
}

// readDeadline sets the read deadline d from now, then reports errShutdown if
// Shutdown has begun. Checking after setting closes the race with
// stopReading: either this check sees the flag, or Shutdown's deadline (now)
// was set after ours and wins.
func (c *conn) readDeadline(d time.Duration) error {
	if err := c.nc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	if c.srv.closing.Load() {
		return errShutdown
	}
	return nil
}

// frameError is a read error after the first byte of a frame arrived, which
// is a client fault, unlike an error while idle.
type frameError struct{ err error }

func (e *frameError) Error() string { return "protocol: incomplete frame: " + e.err.Error() }
func (e *frameError) Unwrap() error { return e.err }

// sizeError is a frame size the server refuses to read.
type sizeError struct{ size int32 }

func (e *sizeError) Error() string { return "protocol: invalid frame size" }

// readFrame returns the next frame without its size prefix, in a new buffer
// that is never reused (the decoded request may alias it), and the bytes of
// the server's RequestBudget it holds, to be released once it is handled.
func (c *conn) readFrame() ([]byte, int64, error) {
	cfg := &c.srv.cfg
	if err := c.readDeadline(cfg.IdleTimeout); err != nil {
		return nil, 0, err
	}
	first, err := c.br.ReadByte()
	if err != nil {
		return nil, 0, err
	}
	deadline := time.Now().Add(cfg.FrameTimeout)
	if err := c.readDeadline(cfg.FrameTimeout); err != nil {
		return nil, 0, err
	}
	var hdr [4]byte
	hdr[0] = first
	if _, err := io.ReadFull(c.br, hdr[1:]); err != nil {
		return nil, 0, &frameError{err}
	}
	size := int32(binary.BigEndian.Uint32(hdr[:]))
	if size < minFrameSize || size > cfg.MaxRequestBytes {
		return nil, 0, &sizeError{size}
	}
	// The frame's buffer is reserved in the budget as it grows, so what
	// a connection holds is what its client has sent (a slow client that
	// announces 100 MiB holds only what has arrived). The wait for budget
	// counts against the frame's deadline: partial frames that hold the
	// budget between them never wait on each other for longer than that.
	var held int64
	reserve := func(n int) error {
		want := min(int64(n), c.srv.requests.max-held) // one frame never waits on itself
		if want <= 0 {
			return nil
		}
		ctx, cancel := context.WithDeadline(c.ctx, deadline)
		defer cancel()
		got, err := c.srv.requests.acquire(ctx, c.srv.closed, want)
		held += got
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return os.ErrDeadlineExceeded
		case err != nil:
			return errShutdown
		}
		return nil
	}
	frame, err := readBody(c.br, int(size), reserve)
	if err != nil {
		c.srv.requests.release(held)
		if errors.Is(err, errShutdown) {
			return nil, 0, err
		}
		return nil, 0, &frameError{err}
	}
	return frame, held, nil
}

// readBody reads exactly size bytes. Up to eagerBodyBytes it allocates once;
// beyond, the buffer quadruples as bytes arrive (few copies for a large
// produce request), so memory tracks what the client actually sent (at most
// four times it), not what it announced. reserve is called with the size of
// every allocation before it is made.
func readBody(r io.Reader, size int, reserve func(int) error) ([]byte, error) {
	if size <= eagerBodyBytes {
		if err := reserve(size); err != nil {
			return nil, err
		}
		b := make([]byte, size)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	if err := reserve(eagerBodyBytes); err != nil {
		return nil, err
	}
	b := make([]byte, 0, eagerBodyBytes)
	for len(b) < size {
		if len(b) == cap(b) {
			grown := min(4*cap(b), size)
			if err := reserve(grown); err != nil {
				return nil, err
			}
			nb := make([]byte, len(b), grown)
			copy(nb, b)
			b = nb
		}
		n, err := io.ReadFull(r, b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// logReadError logs why the read loop stopped, at a level that matches whose
// fault it was: ordinary closes are debug, client faults are warnings.
func (c *conn) logReadError(err error) {
	var fe *frameError
	var se *sizeError
	switch {
	case errors.As(err, &se):
		c.log.Warn("invalid frame size, closing connection",
			"size", se.size, "min", minFrameSize, "max", c.srv.cfg.MaxRequestBytes)
	case errors.Is(err, errShutdown) || c.srv.closing.Load():
		c.log.Debug("connection closing for shutdown")
	case errors.As(err, &fe) && errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Warn("frame not received in time, closing connection",
			"frame_timeout", c.srv.cfg.FrameTimeout)
	case errors.As(err, &fe):
		c.log.Info("connection lost mid-frame", "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("closing idle connection", "idle_timeout", c.srv.cfg.IdleTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug("connection closed by client")
	default:
		c.log.Info("read failed, closing connection", "err", err)
	}
}

// serveFrame parses and handles one frame and queues its response. It returns
// false when the connection must close. A panic anywhere in parsing or in the
// Handler closes only this connection.
func (c *conn) serveFrame(frame []byte) (keep bool) {
	var key, version int16 = -1, -1
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic serving request, closing connection",
				"api_key", key, "version", version, "panic", r, "stack", string(debug.Stack()))
			keep = false
		}
	}()
	req, err := parseRequest(frame, c.srv.cfg.Versions)
	if err != nil {
		return c.refuse(err)
	}
	key, version = req.Key, req.Version
	req.Conn = &c.info
	if limit := c.srv.cfg.MaxPartitionsPerRequest; limit > 0 {
		if n := countPartitions(req.Body, c.srv.counters[key], limit); n > limit {
			c.log.Warn("too many partitions in one request, closing connection",
				"api_key", key, "version", version, "correlation_id", req.CorrelationID,
				"max_partitions_per_request", limit)
			return false
		}
	}

	resp, err := c.srv.h.Handle(c.ctx, req)
	switch {
	case err != nil && c.ctx.Err() != nil: // connection or server going away
		c.log.Debug("handler stopped, closing connection", "api_key", key, "version", version, "err", err)
		return false
	case err != nil:
		c.log.Info("handler failed, closing connection", "api_key", key, "version", version, "err", err)
		return false
	case resp == nil:
		return true // acks=0 produce: no response
	case resp.Key() != key:
		c.log.Error("handler returned a response for another api key, closing connection",
			"api_key", key, "version", version, "response_key", resp.Key())
		return false
	}
	resp.SetVersion(version)
	return c.queue(outgoing{corr: req.CorrelationID, resp: resp})
}

// refuse answers an ApiVersions request of unknown version per KIP-511 and
// keeps the connection; every other parse failure closes it, because the
// rest of the stream cannot be trusted.
func (c *conn) refuse(err error) bool {
	var pe *parseError
	if !errors.As(err, &pe) { // cannot happen: parseRequest returns *parseError
		c.log.Error("refusing request, closing connection", "err", err)
		return false
	}
	if pe.Key == apiVersionsKey && errors.Is(err, errUnsupportedVersion) {
		c.log.Debug("answering unsupported api versions version per kip-511", "version", pe.Version)
		return c.queue(outgoing{corr: pe.CorrelationID, resp: unsupportedVersionResponse(c.srv.cfg.Versions)})
	}
	c.log.Warn("refusing request, closing connection",
		"api_key", pe.Key, "version", pe.Version, "correlation_id", pe.CorrelationID, "err", pe.Err)
	return false
}

// queue hands o to the writer, blocking while MaxInFlight responses wait. It
// returns false when the writer has gone (the connection is dead).
func (c *conn) queue(o outgoing) bool {
	select {
	case c.out <- o:
		return true
	case <-c.writerDone:
		return false
	}
}

// writeLoop writes queued responses in order until the reader closes out or a
// write fails, then closes the connection.
func (c *conn) writeLoop() {
	defer c.exit()
	defer c.cancel()
	defer close(c.writerDone)
	defer c.nc.Close()
	var buf []byte
	for {
		o, ok := <-c.out
		if !ok {
			return
		}
		var more bool
		buf, more = c.collect(buf[:0], o)
		if len(buf) > 0 {
			if err := c.write(buf); err != nil {
				return
			}
		}
		if !more {
			return
		}
		if cap(buf) > maxRetainedWriteBuf {
			buf = nil
		}
	}
}

// collect encodes o and then whatever is already queued, up to coalesceBytes,
// so that pipelined responses leave in one write. more is false when the
// writer must stop after writing buf (out closed, or a response could not be
// encoded).
func (c *conn) collect(buf []byte, o outgoing) (_ []byte, more bool) {
	for {
		var err error
		if buf, err = appendResponse(buf, o.corr, o.resp); err != nil {
			c.log.Error("response encoding failed, closing connection",
				"api_key", o.resp.Key(), "version", o.resp.GetVersion(), "err", err)
			return buf, false
		}
		if len(buf) >= coalesceBytes {
			return buf, true
		}
		var ok bool
		select {
		case o, ok = <-c.out:
			if !ok {
				return buf, false
			}
		default:
			return buf, true
		}
	}
}

// write writes buf with a deadline of IdleTimeout, so a client that stops
// reading cannot hold the connection (and, through MaxInFlight, its read
// goroutine) forever.
func (c *conn) write(buf []byte) error {
	err := c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.IdleTimeout))
	if err == nil {
		_, err = c.nc.Write(buf)
	}
	if err != nil {
		if c.srv.closing.Load() || errors.Is(err, net.ErrClosed) {
			c.log.Debug("write failed", "err", err)
		} else {
			c.log.Info("write failed, closing connection", "err", err)
		}
	}
	return err
}
