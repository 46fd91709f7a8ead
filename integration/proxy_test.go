package integration

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every connection on 127.0.0.1 until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dialProxy(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads len(msg) bytes back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	b := make([]byte, len(msg))
	_, err := io.ReadFull(c, b)
	return string(b), err
}

// TestProxyBlackholeHoldsThenDelivers: a blackholed proxy passes nothing
// either way, on open connections and on ones accepted meanwhile; healed,
// it delivers what it held, in order.
func TestProxyBlackholeHoldsThenDelivers(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c := dialProxy(t, p)
	if got, err := roundTrip(c, "hello", 5*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q %v", got, err)
	}
	p.Blackhole(true)
	late := dialProxy(t, p) // accepted, never forwarded while blackholed
	for _, conn := range []net.Conn{c, late} {
		if got, err := roundTrip(conn, "held", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blackholed: read %q, error %v; want a timeout", got, err)
		}
	}
	before := p.Stats().Bytes
	time.Sleep(100 * time.Millisecond)
	if after := p.Stats().Bytes; after != before {
		t.Fatalf("%d bytes crossed a blackholed proxy", after-before)
	}
	p.Blackhole(false)
	for _, conn := range []net.Conn{c, late} {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4)
		if _, err := io.ReadFull(conn, b); err != nil || string(b) != "held" {
			t.Fatalf("after healing: %q %v, want the held bytes", b, err)
		}
		if got, err := roundTrip(conn, "again", 5*time.Second); err != nil || got != "again" {
			t.Fatalf("after healing: %q %v", got, err)
		}
	}
}

// TestProxyDelay: each direction waits at least the delay.
func TestProxyDelay(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c := dialProxy(t, p)
	if _, err := roundTrip(c, "warm", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	const d = 150 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	if got, err := roundTrip(c, "slow", 5*time.Second); err != nil || got != "slow" {
		t.Fatalf("delayed: %q %v", got, err)
	}
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip %v through a proxy delaying each direction by %v", rtt, d)
	}
}

// TestProxyCutResets: Cut resets open connections (the client sees a
// reset, not a clean end of stream) and new ones still pass.
func TestProxyCutResets(t *testing.T) {
	p := newTestProxy(t, echoServer(t))
	c := dialProxy(t, p)
	if _, err := roundTrip(c, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut reset %d connections, want 1", n)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a cut: %v, want ECONNRESET", err)
	}
	if got, err := roundTrip(dialProxy(t, p), "new", 5*time.Second); err != nil || got != "new" {
		t.Fatalf("a new connection after the cut: %q %v", got, err)
	}
	if st := p.Stats(); st.Cut != 1 || st.Accepted != 2 {
		t.Fatalf("stats %+v", st)
	}
}
