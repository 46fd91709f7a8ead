package netfault

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is node 1 dialing node 2's listener through a Network.
type pair struct {
	nw   *Network
	addr string
	dial func(context.Context, string) (net.Conn, error)
	acc  chan net.Conn
}

func newPair(t *testing.T) *pair {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{nw: New(1), addr: ln.Addr().String(), acc: make(chan net.Conn, 16)}
	p.nw.SetLogf(t.Logf)
	wl := p.nw.Listener(2, ln)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := wl.Accept()
			if err != nil {
				return
			}
			p.acc <- c
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		close(p.acc)
		for c := range p.acc {
			_ = c.Close()
		}
	})
	p.dial = p.nw.Dialer(1, func(a string) int32 {
		if a == p.addr {
			return 2
		}
		return 0
	})
	return p
}

// connect dials and returns both ends.
func (p *pair) connect(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.dial(ctx, p.addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	select {
	case s := <-p.acc:
		t.Cleanup(func() { _ = s.Close() })
		return c, s
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	return nil, nil
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// writeChunks writes data in writes of 1..4096 bytes.
func writeChunks(t *testing.T, w io.Writer, data []byte) {
	rng := rand.New(rand.NewPCG(9, 9))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(4096))
		if _, err := w.Write(data[:n]); err != nil {
			t.Errorf("write: %v", err)
			return
		}
		data = data[n:]
	}
}

// roundTrip sends data both ways at once and checks each side reads
// exactly it, in order.
func roundTrip(t *testing.T, client, server net.Conn, data []byte) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() { writeChunks(t, client, data) })
	wg.Go(func() { writeChunks(t, server, data) })
	for _, r := range []net.Conn{server, client} {
		_ = r.SetReadDeadline(time.Now().Add(20 * time.Second))
		got := make([]byte, len(data))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("bytes differ after the round trip")
		}
		_ = r.SetReadDeadline(time.Time{})
	}
	wg.Wait()
}

func TestHealthyStream(t *testing.T) {
	p := newPair(t)
	c, s := p.connect(t)
	roundTrip(t, c, s, randomBytes(1, 1<<20))
	if st := p.nw.Stats(); st.Dials != 1 || st.Resets != 0 {
		t.Fatalf("stats %+v", st)
	}
	if n := p.nw.DialsTo(1, p.addr); n != 1 {
		t.Fatalf("DialsTo = %d", n)
	}
}

// TestDelayJitterLossKeepOrder: delay, jitter and retransmissions slow the
// stream but deliver every byte once, in order.
func TestDelayJitterLossKeepOrder(t *testing.T) {
	p := newPair(t)
	c, s := p.connect(t)
	f := Fault{Delay: 20 * time.Millisecond, Jitter: 30 * time.Millisecond, Loss: 0.05}
	p.nw.SetBoth(1, 2, f)
	start := time.Now()
	roundTrip(t, c, s, randomBytes(2, 256<<10))
	if el := time.Since(start); el < f.Delay {
		t.Fatalf("a delayed round trip took %v, under the delay %v", el, f.Delay)
	}
	if st := p.nw.Stats(); st.Retransmits == 0 {
		t.Fatalf("no write was lost at loss %g: %+v", f.Loss, st)
	}
}

// TestBlackholeHoldsThenDelivers: a blackholed link delivers nothing, a
// writer blocks once a send buffer is full (until its deadline), a new
// dial hangs; healed, the held bytes arrive in order and dials work.
func TestBlackholeHoldsThenDelivers(t *testing.T) {
	p := newPair(t)
	c, s := p.connect(t)
	p.nw.Partition([]int32{1}, []int32{2})

	held := []byte("held while partitioned")
	if _, err := c.Write(held); err != nil {
		t.Fatalf("a write into a blackhole fails at once: %v", err)
	}
	_ = s.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := s.Read(make([]byte, 64)); n != 0 || !isTimeout(err) {
		t.Fatalf("read across a blackhole: %d bytes, %v", n, err)
	}
	_ = c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	big := make([]byte, 64<<10)
	var werr error
	for range 2 * bufSize / len(big) {
		if _, werr = c.Write(big); werr != nil {
			break
		}
	}
	if !isTimeout(werr) {
		t.Fatalf("writing more than a send buffer into a blackhole: %v, want a timeout", werr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.dial(ctx, p.addr); !isTimeout(err) {
		t.Fatalf("dial across a blackhole: %v, want a timeout", err)
	}

	p.nw.Heal()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(held))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, held) {
		t.Fatalf("after healing read %q, %v; want %q", got, err, held)
	}
	c2, s2 := p.connect(t)
	roundTrip(t, c2, s2, []byte("after the heal"))
	if st := p.nw.Stats(); st.DialsHung != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOneWayBlackhole: only 2 -> 1 is blackholed: node 2 hears node 1,
// node 1 hears nothing back until it heals.
func TestOneWayBlackhole(t *testing.T) {
	p := newPair(t)
	c, s := p.connect(t)
	p.nw.Set(2, 1, Fault{Blackhole: true})
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "ping" {
		t.Fatalf("1 -> 2 is open: read %q, %v", got, err)
	}
	if _, err := s.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(got); n != 0 || !isTimeout(err) {
		t.Fatalf("read across the blackholed direction: %d, %v", n, err)
	}
	p.nw.Set(2, 1, Fault{})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
		t.Fatalf("after healing read %q, %v", got, err)
	}
}

// TestRefuseResets: a cut link resets its connections on both ends and
// refuses dials; Isolate does the same to every link of a node and makes
// its listener refuse.
func TestRefuseResets(t *testing.T) {
	p := newPair(t)
	c, s := p.connect(t)
	p.nw.SetBoth(1, 2, Fault{Refuse: true})
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dialer end of a cut link reads %v, want ECONNRESET", err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("listener end of a cut link reads %v, want a reset", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.dial(ctx, p.addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial over a cut link: %v, want ECONNREFUSED", err)
	}
	p.nw.Heal()
	c, s = p.connect(t)
	roundTrip(t, c, s, []byte("healed"))

	p.nw.Isolate(2, true)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("isolated: dialer end reads %v", err)
	}
	if _, err := p.dial(ctx, p.addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to an isolated node: %v", err)
	}
	// Someone dialing around the Network is refused by the listener.
	// (The reset may come before the dial returns.)
	if raw, err := net.Dial("tcp", p.addr); err == nil {
		defer raw.Close()
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := raw.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("an isolated node's listener kept a connection: %v", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial around the network to an isolated node: %v", err)
	}
	p.nw.Isolate(2, false)
	c, s = p.connect(t)
	roundTrip(t, c, s, []byte("back"))
}

// TestRandomResets: with Reset set, a stream of writes ends in a reset.
func TestRandomResets(t *testing.T) {
	p := newPair(t)
	c, _ := p.connect(t)
	p.nw.Set(1, 2, Fault{Reset: 0.1})
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = c.Write([]byte("x"))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("1000 writes at reset probability 0.1 ended with %v", err)
	}
	if st := p.nw.Stats(); st.Resets != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestFlap: Flap alternates the fault and healing, and heals at the end.
func TestFlap(t *testing.T) {
	p := newPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	applied := 0
	done := p.nw.Flap(ctx, 20*time.Millisecond, func() {
		mu.Lock()
		applied++
		mu.Unlock()
		p.nw.Partition([]int32{1}, []int32{2})
	})
	time.Sleep(150 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if applied < 2 {
		t.Fatalf("applied %d times", applied)
	}
	if d := p.nw.Describe(); d != "healthy" {
		t.Fatalf("after Flap: %s", d)
	}
}

func TestSplit(t *testing.T) {
	maj, minr := Split(rand.New(rand.NewPCG(1, 2)), []int32{1, 2, 3, 4, 5})
	if len(maj) != 3 || len(minr) != 2 {
		t.Fatalf("split %v %v", maj, minr)
	}
}

// TestFaultMidStream: a fault set while a stream flows (and while a read
// is blocked on the real connection) switches the connection to its
// pumps without losing, duplicating or reordering a byte.
func TestFaultMidStream(t *testing.T) {
	p := newPair(t)
	c, s := p.connect(t)
	blocked := make(chan []byte)
	go func() {
		b := make([]byte, 5)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.ReadFull(c, b)
		if err != nil {
			t.Errorf("blocked read: %v", err)
		}
		blocked <- b[:n]
	}()
	time.Sleep(50 * time.Millisecond)
	p.nw.SetBoth(1, 2, Fault{Delay: time.Millisecond})
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if b := <-blocked; string(b) != "hello" {
		t.Fatalf("blocked read got %q", b)
	}
	p.nw.Heal()

	c, s = p.connect(t)
	go func() {
		time.Sleep(20 * time.Millisecond)
		p.nw.SetBoth(1, 2, Fault{Jitter: time.Millisecond, Loss: 0.01})
	}()
	roundTrip(t, c, s, randomBytes(3, 1<<20))
}
