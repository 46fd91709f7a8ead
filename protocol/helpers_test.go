package protocol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testTable is the version table the tests serve: a few keys with Kafka 4's
// floors, some flexible versions and some not.
var testTable = map[int16]VersionRange{
	0:  {0, 11}, // Produce (flexible from 9)
	1:  {4, 12}, // Fetch (flexible from 12)
	3:  {0, 12}, // Metadata (flexible from 9)
	12: {0, 4},  // Heartbeat (flexible from 4)
	18: {0, 4},  // ApiVersions (flexible from 3, response header always v0)
}

func testVersions(k int16) (VersionRange, bool) {
	vr, ok := testTable[k]
	return vr, ok
}

// fakeHandler answers just enough to observe the server's behaviour. What it
// does is chosen by fields of the request:
//   - Metadata: echoes the client id as ClusterID and the correlation id as
//     ControllerID.
//   - Produce acks=0: no response; with TransactionID "fail", an error.
//   - Heartbeat group "slow": signals entered, waits for release (or ctx).
//     "block": waits for ctx and reports its error on ctxErr. "panic": panics.
//     "wrong": answers with a Metadata response.
type fakeHandler struct {
	entered chan *Request
	release chan struct{}
	ctxErr  chan error
	conns   chan *ConnInfo // if set, receives every request's ConnInfo
}

func newFakeHandler() *fakeHandler {
	return &fakeHandler{
		entered: make(chan *Request, 16),
		release: make(chan struct{}),
		ctxErr:  make(chan error, 16),
	}
}

func (h *fakeHandler) Handle(ctx context.Context, req *Request) (kmsg.Response, error) {
	if h.conns != nil {
		h.conns <- req.Conn
	}
	switch body := req.Body.(type) {
	case *kmsg.ApiVersionsRequest:
		resp := body.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.ApiKeys = tableKeys()
		return resp, nil
	case *kmsg.MetadataRequest:
		resp := body.ResponseKind().(*kmsg.MetadataResponse)
		resp.ClusterID = kmsg.StringPtr(req.ClientID)
		resp.ControllerID = req.CorrelationID
		return resp, nil
	case *kmsg.ProduceRequest:
		if body.Acks == 0 {
			if body.TransactionID != nil && *body.TransactionID == "fail" {
				return nil, errors.New("not leader")
			}
			return nil, nil
		}
		return body.ResponseKind(), nil
	case *kmsg.HeartbeatRequest:
		switch body.Group {
		case "slow":
			h.entered <- req
			select {
			case <-h.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case "block":
			h.entered <- req
			<-ctx.Done()
			h.ctxErr <- ctx.Err()
			return nil, ctx.Err()
		case "panic":
			panic("fake handler panic")
		case "wrong":
			return kmsg.NewPtrMetadataResponse(), nil
		}
		return body.ResponseKind(), nil
	}
	return req.Body.ResponseKind(), nil
}

// tableKeys is testTable as an ApiVersions key list, in key order.
func tableKeys() []kmsg.ApiVersionsResponseApiKey {
	var keys []kmsg.ApiVersionsResponseApiKey
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		if vr, ok := testTable[k]; ok {
			keys = append(keys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: vr.Min, MaxVersion: vr.Max})
		}
	}
	return keys
}

type testServer struct {
	*Server
	addr      string
	serveDone chan struct{}
	serveErr  error
}

// startServer serves h on 127.0.0.1:0. Cleanup shuts the server down, checks
// that Serve returned nil and that every goroutine it started has exited.
func startServer(t *testing.T, cfg Config, h Handler) *testServer {
	t.Helper()
	if cfg.Versions == nil {
		cfg.Versions = testVersions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	baseline := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), serveDone: make(chan struct{})}
	go func() {
		defer close(ts.serveDone)
		ts.serveErr = s.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-ts.serveDone
		if ts.serveErr != nil {
			t.Errorf("Serve returned %v, want nil", ts.serveErr)
		}
		waitGoroutines(t, baseline)
	})
	return ts
}

// waitGoroutines polls until the goroutine count is back to baseline.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > baseline {
			return fmt.Errorf("%d goroutines, want at most %d", n, baseline)
		}
		return nil
	})
}

// eventually polls fn until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after %v: %v\n%s", timeout, err, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client speaks the Kafka framing over a raw connection, encoding with kmsg.
type client struct {
	t    *testing.T
	nc   net.Conn
	f    *kmsg.RequestFormatter
	corr int32
}

func dial(t *testing.T, addr string, opts ...kmsg.RequestFormatterOpt) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, f: kmsg.NewRequestFormatter(opts...), corr: 100}
}

// frame encodes req at version v with a fresh correlation id.
func (c *client) frame(req kmsg.Request, v int16) ([]byte, int32) {
	req.SetVersion(v)
	c.corr++
	return c.f.AppendRequest(nil, req, c.corr), c.corr
}

func (c *client) send(req kmsg.Request, v int16) int32 {
	c.t.Helper()
	b, corr := c.frame(req, v)
	c.write(b)
	return corr
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readFrame reads one response frame (without its size).
func (c *client) readFrame() []byte {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c.nc, size[:]); err != nil {
		c.t.Fatalf("read response size: %v", err)
	}
	frame := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.nc, frame); err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	return frame
}

// recv reads one response to a request of key and version like req, checks
// the response header shape (v1 with an empty tag section when flexible,
// except ApiVersions) and decodes the body.
func (c *client) recv(req kmsg.Request) (int32, kmsg.Response) {
	c.t.Helper()
	frame := c.readFrame()
	if len(frame) < 4 {
		c.t.Fatalf("response frame of %d bytes", len(frame))
	}
	corr := int32(binary.BigEndian.Uint32(frame))
	body := frame[4:]
	if req.IsFlexible() && req.Key() != apiVersionsKey {
		if len(body) == 0 || body[0] != 0 {
			c.t.Fatalf("key %d v%d: response header v1 should start with an empty tag section, got % x", req.Key(), req.GetVersion(), body[:min(len(body), 4)])
		}
		body = body[1:]
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		c.t.Fatalf("key %d v%d: decode response: %v", req.Key(), req.GetVersion(), err)
	}
	return corr, resp
}

// roundTrip sends req at version v and returns its decoded response,
// checking the correlation id.
func (c *client) roundTrip(req kmsg.Request, v int16) kmsg.Response {
	c.t.Helper()
	want := c.send(req, v)
	got, resp := c.recv(req)
	if got != want {
		c.t.Fatalf("correlation id %d, want %d", got, want)
	}
	return resp
}

// expectClosed asserts that the server closes the connection within timeout
// without sending anything more, and returns how long that took. A reset
// counts as closed: the server closing with unread input sends RST.
func (c *client) expectClosed(timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.nc.SetReadDeadline(start.Add(timeout))
	var buf [64]byte
	n, err := c.nc.Read(buf[:])
	switch {
	case n > 0:
		c.t.Fatalf("expected close, read % x", buf[:n])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return time.Since(start)
	default:
		c.t.Fatalf("expected close within %v, got %v", timeout, err)
	}
	return 0
}

// checkHealthy asserts that a fresh connection to ts still gets answers.
func checkHealthy(t *testing.T, addr string) {
	t.Helper()
	c := dial(t, addr)
	c.roundTrip(kmsg.NewPtrMetadataRequest(), 1)
	c.nc.Close()
}

func metadataReq() *kmsg.MetadataRequest { return kmsg.NewPtrMetadataRequest() }

func heartbeat(group string) *kmsg.HeartbeatRequest {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Group = group
	return r
}

func produceAcks0(txnID string) *kmsg.ProduceRequest {
	r := kmsg.NewPtrProduceRequest()
	r.Acks = 0
	if txnID != "" {
		r.TransactionID = &txnID
	}
	return r
}
