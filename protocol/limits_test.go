package protocol

import (
	"encoding/binary"
	"testing"
	"time"
)

func sizeOnly(size uint32) []byte { return binary.BigEndian.AppendUint32(nil, size) }

// Bad sizes close the connection before any body is read; a healthy
// connection opened before keeps working.
func TestBadFrameSizeCloses(t *testing.T) {
	const max = 1024
	ts := startServer(t, Config{MaxRequestBytes: max}, newFakeHandler())
	healthy := dial(t, ts.addr)
	healthy.roundTrip(metadataReq(), 1)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"oversized", append(sizeOnly(max+1), make([]byte, 64)...)},
		{"huge", sizeOnly(1 << 30)},
		{"negative", sizeOnly(0xffffffff)},
		{"zero", sizeOnly(0)},
		{"three", append(sizeOnly(3), 0, 3, 0)},
		{"seven", append(sizeOnly(7), 0, 3, 0, 1, 0, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.write(tc.b)
			c.expectClosed(5 * time.Second)
			healthy.roundTrip(metadataReq(), 1)
		})
	}
}

// A frame of exactly MaxRequestBytes is accepted (trailing bytes after the
// body are ignored, as in Kafka).
func TestFrameAtMaxRequestBytes(t *testing.T) {
	const max = 4096
	ts := startServer(t, Config{MaxRequestBytes: max}, newFakeHandler())
	c := dial(t, ts.addr)
	req := metadataReq()
	b, corr := c.frame(req, 1)
	b = append(b, make([]byte, max+4-len(b))...)
	binary.BigEndian.PutUint32(b, max)
	c.write(b)
	if got, _ := c.recv(req); got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
}

// A body above the eager allocation size still arrives whole when the client
// sends it in pieces.
func TestLargeFrameInPieces(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	c := dial(t, ts.addr)
	req := metadataReq()
	b, corr := c.frame(req, 1)
	size := 3*eagerBodyBytes + 12345
	b = append(b, make([]byte, size+4-len(b))...)
	binary.BigEndian.PutUint32(b, uint32(size))
	for len(b) > 0 {
		n := min(len(b), 300_000)
		c.write(b[:n])
		b = b[n:]
	}
	if got, _ := c.recv(req); got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
}

// Non-Kafka traffic reads as a huge size and is closed without reading on.
func TestGarbageCloses(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	clientHello := []byte{
		0x16, 0x03, 0x01, 0x02, 0x00, // TLS record: handshake, TLS 1.0, 512 bytes
		0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, // ClientHello, length, TLS 1.2
	}
	clientHello = append(clientHello, make([]byte, 505)...)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")},
		{"tls_client_hello", clientHello},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.write(tc.b)
			c.expectClosed(5 * time.Second)
			checkHealthy(t, ts.addr)
		})
	}
}

func TestFrameTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, Config{FrameTimeout: timeout}, newFakeHandler())
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"half_body", append(sizeOnly(100), make([]byte, 50)...)},
		{"half_size", []byte{0, 0}},
		{"size_only", sizeOnly(100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.write(tc.b)
			took := c.expectClosed(5 * time.Second)
			if took < timeout/2 {
				t.Errorf("closed after %v, before the frame timeout %v", took, timeout)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, Config{IdleTimeout: timeout}, newFakeHandler())

	idle := dial(t, ts.addr)
	idle.roundTrip(metadataReq(), 1)
	if took := idle.expectClosed(5 * time.Second); took < timeout/2 {
		t.Errorf("closed after %v, before the idle timeout %v", took, timeout)
	}

	silent := dial(t, ts.addr) // never sends anything
	silent.expectClosed(5 * time.Second)
}

// Time inside Handle is not idle time: a handler slower than IdleTimeout
// still gets its response out.
func TestSlowHandlerIsNotIdle(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h := newFakeHandler()
	ts := startServer(t, Config{IdleTimeout: timeout}, h)
	c := dial(t, ts.addr)
	req := heartbeat("slow")
	corr := c.send(req, 4)
	<-h.entered
	time.Sleep(3 * timeout) // the point of the test: outlast the idle timeout
	close(h.release)
	if got, _ := c.recv(req); got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
}

func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Config{MaxConnections: 2}, newFakeHandler())
	a, b := dial(t, ts.addr), dial(t, ts.addr)
	a.roundTrip(metadataReq(), 1) // both registered once answered
	b.roundTrip(metadataReq(), 1)

	extra := dial(t, ts.addr)
	extra.send(metadataReq(), 1)
	extra.expectClosed(5 * time.Second)
	a.roundTrip(metadataReq(), 1)

	// A slot frees once a connection goes away.
	b.nc.Close()
	eventually(t, 5*time.Second, func() error {
		c := dial(t, ts.addr)
		defer c.nc.Close()
		c.send(metadataReq(), 1)
		c.nc.SetReadDeadline(time.Now().Add(time.Second))
		var size [4]byte
		_, err := c.nc.Read(size[:])
		return err
	})
}

// Responses never mix: a pipeline far larger than MaxInFlight from a client
// that reads slowly comes back complete and in order.
func TestBackPressure(t *testing.T) {
	ts := startServer(t, Config{MaxInFlight: 2}, newFakeHandler())
	c := dial(t, ts.addr)
	const n = 500
	var buf []byte
	corrs := make([]int32, n)
	for i := range n {
		var b []byte
		b, corrs[i] = c.frame(metadataReq(), 12)
		buf = append(buf, b...)
	}
	done := make(chan struct{})
	go func() { // write concurrently: the server stops reading while we do not read
		defer close(done)
		c.nc.Write(buf)
	}()
	req := metadataReq()
	req.SetVersion(12)
	for i := range n {
		if got, _ := c.recv(req); got != corrs[i] {
			t.Fatalf("response %d: correlation id %d, want %d", i, got, corrs[i])
		}
	}
	<-done
}
