package protocol

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Handler serves decoded requests. The server calls Handle for one
// connection's requests one at a time, in arrival order (as Kafka does: a
// long-poll Fetch delays later requests on the same connection; clients use
// separate connections). Handle is called concurrently for different
// connections.
//
// Returning (nil, nil) sends no response (acks=0 produce). A non-nil error
// closes that connection after the responses already queued are written
// (Kafka closes the connection on a failed acks=0 produce).
//
// The response should come from req.Body.ResponseKind(); the server sets its
// version to req.Version before encoding, and closes the connection if its key
// is not the request's. Once returned, the response belongs to the server: it
// is modified (SetVersion) and encoded later on the connection's write
// goroutine, so it must not be shared between requests or touched again.
// Handle must return soon after ctx is done: ctx is
// cancelled when the connection dies or Shutdown's deadline passes, and
// Shutdown waits for Handle to return. A panic in Handle is recovered, logged
// and closes the connection.
type Handler interface {
	Handle(ctx context.Context, req *Request) (kmsg.Response, error)
}

// Request is one decoded request. The server never reuses a Request or the
// frame behind it, so the Handler may keep any part of it (byte fields such as
// Produce records alias the frame, which then stays in memory).
type Request struct {
	Key, Version  int16
	CorrelationID int32
	ClientID      string       // null is ""
	Body          kmsg.Request // decoded, version set
	Conn          *ConnInfo    // shared by all requests of the connection; read-only
}

// ConnInfo describes the connection a request arrived on.
type ConnInfo struct {
	Listener   string // the listener name from Config
	LocalAddr  net.Addr
	RemoteAddr net.Addr
	ID         uint64 // unique per server, from 1
}

// ErrServerClosed is returned by Serve when it is called after Shutdown.
var ErrServerClosed = errors.New("protocol: server closed")

// Server accepts Kafka connections on any number of listeners and serves them
// with one Handler. Create it with NewServer.
//
// Lock order: Server.mu is the only lock; it guards listeners, conns and the
// start of tracked goroutines, and is never held while blocking on I/O.
type Server struct {
	cfg Config
	h   Handler
	log *slog.Logger

	baseCtx context.Context    // parent of every connection's context
	cancel  context.CancelFunc // cancels baseCtx when Shutdown's ctx expires
	closed  chan struct{}      // closed when Shutdown begins
	closing atomic.Bool        // set under mu when Shutdown begins; read lock-free by connections
	nextID  atomic.Uint64

	limits   *ConnLimits           // Config.Conns, or the Server's own
	requests *RequestBudget        // Config.Requests, or the Server's own
	counters map[int16][]countPath // partition lists per served key; read-only

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // every goroutine of the server, and each Serve call
	// refusals rate-limits the log of connections refused by the caps: a
	// flood is logged once a second with a count, not once per connection.
	refusedLogged time.Time
	refusedQuiet  int
}

// NewServer applies defaults to the zero fields of cfg, validates it and
// returns a Server that serves h. It starts nothing: call Serve.
func NewServer(cfg Config, h Handler) (*Server, error) {
	cfg = cfg.withDefaults()
	err := cfg.Validate()
	if h == nil {
		err = errors.Join(err, errors.New("protocol: Handler is required"))
	}
	if err != nil {
		return nil, err
	}
	limits := cfg.Conns
	if limits == nil {
		limits = NewConnLimits(cfg.MaxConnections, cfg.MaxConnectionsPerIP)
	}
	requests := cfg.Requests
	if requests == nil {
		requests = NewRequestBudget(cfg.QueuedMaxRequestBytes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		requests: requests,
		cfg:      cfg,
		h:        h,
		log:      cfg.Logger.With("listener", cfg.Listener),
		baseCtx:  ctx,
		cancel:   cancel,
		closed:   make(chan struct{}),
		conns:    make(map[*conn]struct{}),
		limits:   limits,
		counters: partitionCounters(cfg.Versions),
	}, nil
}

// Serve accepts connections on ln until Shutdown, then returns nil. It blocks,
// owns ln (closes it on return) and may be called for several listeners, each
// from its own goroutine. It returns ErrServerClosed if Shutdown has already
// begun, and the accept error if ln fails for another reason.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners = append(s.listeners, ln)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer s.removeListener(ln)

	log := s.log.With("addr", ln.Addr().String())
	log.Info("serving")
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			var ne net.Error
			if (errors.As(err, &ne) && ne.Timeout()) || isTemporary(err) {
				// Out of file descriptors and the like: wait and
				// retry rather than spin or give up on the listener.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed, retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-s.closed:
					return nil
				}
			}
			log.Error("accept failed", "err", err)
			return err
		}
		backoff = 0
		s.startConn(nc)
	}
}

// isTemporary reports accept errors worth retrying. net.Error.Temporary is
// deprecated but still the only signal for EMFILE/ENFILE/ECONNABORTED.
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

func (s *Server) removeListener(ln net.Listener) {
	ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.listeners {
		if l == ln {
			s.listeners = append(s.listeners[:i], s.listeners[i+1:]...)
			break
		}
	}
}

// startConn registers nc and starts its two goroutines, or closes it when the
// server is shutting down or a connection cap is reached. Both goroutines
// start under one lock acquisition, so a connection never runs with only one
// of them.
func (s *Server) startConn(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		nc.Close()
		return
	}
	ip, err := s.limits.acquire(nc.RemoteAddr())
	if err != nil {
		nc.Close()
		s.logRefusedLocked(nc.RemoteAddr(), err)
		return
	}
	c := newConn(s, nc, s.nextID.Add(1))
	c.ip = ip
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); c.readLoop() }()
	go func() { defer s.wg.Done(); c.writeLoop() }()
}

// refusedLogInterval is the least time between two logs of refused
// connections.
const refusedLogInterval = time.Second

// logRefusedLocked logs a connection refused by a cap: the first at once,
// then at most one line per refusedLogInterval counting those in between.
// Called with s.mu held.
func (s *Server) logRefusedLocked(remote net.Addr, err error) {
	now := time.Now()
	if now.Sub(s.refusedLogged) < refusedLogInterval {
		s.refusedQuiet++
		return
	}
	var le *limitError
	errors.As(err, &le)
	s.log.Warn("connection limit reached, closing new connection",
		"remote", remote.String(), "limit", le.cap, "max", le.max,
		"refused_since_last_log", s.refusedQuiet)
	s.refusedLogged, s.refusedQuiet = now, 0
}

// removeConn is called by the last of a connection's goroutines to exit.
func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.limits.release(c.ip)
}

// Shutdown stops accepting, lets each connection finish the request in
// progress (one whose frame was fully read) and write its queued responses,
// then closes it. Idle connections are closed at once, and so are partly
// received frames. When ctx expires first, Shutdown cancels every Handler's
// context and closes every connection, then still waits for all goroutines and
// returns ctx.Err(). It may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing.Load() {
		s.closing.Store(true)
		close(s.closed)
		for _, ln := range s.listeners {
			ln.Close() // Serve returns nil once Accept fails
		}
		for c := range s.conns {
			c.stopReading()
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.log.Warn("shutdown deadline passed, closing connections", "err", ctx.Err())
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// Addrs returns the addresses of the listeners currently being served.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, 0, len(s.listeners))
	for _, ln := range s.listeners {
		addrs = append(addrs, ln.Addr())
	}
	return addrs
}
