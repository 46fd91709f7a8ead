package protocol

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// dialFrom connects to addr from the loopback address ip (any 127.0.0.0/8
// address is local on Linux), so that one test can be many client hosts.
func dialFrom(t *testing.T, addr, ip string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, f: kmsg.NewRequestFormatter(), corr: 100}
}

// One client IP gets MaxConnectionsPerIP connections; the next is closed
// at once, other IPs are unaffected, and a slot frees when one closes.
func TestMaxConnectionsPerIP(t *testing.T) {
	ts := startServer(t, Config{MaxConnectionsPerIP: 2}, newFakeHandler())
	a, b := dialFrom(t, ts.addr, "127.0.0.2"), dialFrom(t, ts.addr, "127.0.0.2")
	a.roundTrip(metadataReq(), 1) // both registered once answered
	b.roundTrip(metadataReq(), 1)

	extra := dialFrom(t, ts.addr, "127.0.0.2")
	extra.send(metadataReq(), 1)
	extra.expectClosed(5 * time.Second)

	other := dialFrom(t, ts.addr, "127.0.0.3")
	other.roundTrip(metadataReq(), 1)
	a.roundTrip(metadataReq(), 1)
	if n := ts.limits.Open(); n != 3 {
		t.Fatalf("%d connections counted, want 3", n)
	}

	b.nc.Close()
	eventually(t, 5*time.Second, func() error {
		c := dialFrom(t, ts.addr, "127.0.0.2")
		defer c.nc.Close()
		c.send(metadataReq(), 1)
		c.nc.SetReadDeadline(time.Now().Add(time.Second))
		var size [4]byte
		_, err := c.nc.Read(size[:])
		return err
	})
}

// Servers that share a ConnLimits share its caps, as a broker's listeners
// do; closed connections give their slots back to both.
func TestSharedConnLimits(t *testing.T) {
	shared := NewConnLimits(2, 0)
	s1 := startServer(t, Config{Conns: shared}, newFakeHandler())
	s2 := startServer(t, Config{Conns: shared}, newFakeHandler())
	a, b := dial(t, s1.addr), dial(t, s2.addr)
	a.roundTrip(metadataReq(), 1)
	b.roundTrip(metadataReq(), 1)
	for _, addr := range []string{s1.addr, s2.addr} {
		extra := dial(t, addr)
		extra.send(metadataReq(), 1)
		extra.expectClosed(5 * time.Second)
	}
	a.nc.Close()
	b.nc.Close()
	eventually(t, 5*time.Second, func() error {
		if n := shared.Open(); n != 0 {
			return fmt.Errorf("%d connections still counted", n)
		}
		return nil
	})
	dial(t, s2.addr).roundTrip(metadataReq(), 1)
}

func TestClientIP(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5}, "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 5}, "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 5}, "::1"},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, "/tmp/s"},
	} {
		if got := clientIP(tc.addr); got != tc.want {
			t.Errorf("clientIP(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
