package integration

// Row 16 of TESTPLAN.md: slow and idle clients, and connection floods, on a
// running broker with short timeouts. Hundreds of connections trickle a
// request one byte a second (a frame that never completes) and are closed
// FrameTimeout after their first byte, however steadily they trickle;
// idle connections, silent from the start or after one request, are closed
// IdleTimeout after their last request; the per-IP and total caps refuse
// the connections past them by closing them at once; a churn of
// connections opened and dropped leaves nothing behind. A franz-go producer
// and consumer on their own connections carry on throughout, checked record
// by record.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

const (
	slowFrameTimeout = 4 * time.Second
	slowIdleTimeout  = 6 * time.Second
	slowPerIP        = 120
	slowMaxConns     = 1200
	// slowTarget is how many slow and idle connections the test aims for
	// (half trickling, half idle); fewer when the file descriptor limit
	// cannot be raised to hold them (each costs two descriptors here:
	// client and broker share the process).
	slowTarget = 1000
	// slowSlack is how late past its timeout a close may come on a loaded
	// machine; the test asserts correctness (closed, and never early), not
	// promptness.
	slowSlack = 15 * time.Second
	// slowConnBudget is the resident memory one open connection may cost
	// a broker process (measured: 16-19 KiB).
	slowConnBudget = 48 << 10
)

func TestSlowAndIdleClients(t *testing.T) {
	n := raiseFileLimit(t, 4*slowMaxConns+1024, slowTarget)
	logs := &warnLog{}
	c := NewCluster(t, WithConfig(func(cfg *broker.Config) {
		cfg.FrameTimeout = slowFrameTimeout
		cfg.IdleTimeout = slowIdleTimeout
		cfg.MaxConnectionsPerIP = slowPerIP
		cfg.MaxConnections = slowMaxConns
		cfg.Logger = slog.New(logs)
	}))
	createTopic(t, c.Admin(t), "healthy", 3, nil)
	slowAndIdleClients(t, slowBroker{addr: c.Addr(), clients: c, logged: logs.has}, n)
}

// TestProcSlowAndIdleClients is row 16 at T2: the same connections, flood
// and churn against a `varve serve` process, whose resident memory is
// sampled before and at the height of it.
func TestProcSlowAndIdleClients(t *testing.T) {
	n := raiseFileLimit(t, 2*slowMaxConns+1024, slowTarget)
	c := NewProcs(t, varveBinary(t), 1,
		"--frame-timeout", slowFrameTimeout.String(), "--idle-timeout", slowIdleTimeout.String(),
		"--max-connections-per-ip", fmt.Sprint(slowPerIP), "--max-connections", fmt.Sprint(slowMaxConns))
	adm := kadm.NewClient(c.Client(t))
	resp, err := adm.CreateTopic(testContext(t, 30*time.Second), 3, 1, nil, "healthy")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	rss := func() int64 { return procRSS(t, c.PID(0)) }
	logged := func(msg string) bool { return strings.Contains(c.LogSince(0, 0), msg) }
	slowAndIdleClients(t, slowBroker{addr: c.KafkaAddr(0), clients: c, logged: logged, rss: rss}, n)
}

// slowBroker is the broker row 16 runs against: its Kafka address, where
// healthy clients come from, whether it logged a message, and (for a
// process) its resident memory.
type slowBroker struct {
	addr    string
	clients clientSource
	logged  func(msg string) bool
	rss     func() int64 // bytes; nil for an in-process broker
}

// clientSource makes franz-go clients for a cluster: *Cluster and *Procs.
type clientSource interface {
	Client(t testing.TB, opts ...kgo.Opt) *kgo.Client
}

// procRSS is a process's resident set size in bytes (VmRSS).
func procRSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("rss of pid %d: %v", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// slowAndIdleClients runs row 16 against b with n slow and idle
// connections (see the file comment).
func slowAndIdleClients(t *testing.T, b slowBroker, n int) {
	addr := b.addr
	w := startHealthy(t, b.clients, "healthy")
	w.waitAcks(t, 50)
	var rssBase int64
	if b.rss != nil {
		rssBase = b.rss()
	}

	// Slow and idle connections, 100 from each client IP, opened 16 at a
	// time.
	began := time.Now()
	watched := make([]*watchedConn, n)
	parallel(n, 16, func(i int) {
		ip := fmt.Sprintf("127.0.1.%d", 1+i/100)
		kind := [...]connKind{trickling, trickling, silent, idleAfterRequest}[i%4]
		watched[i] = openWatched(t, addr, ip, kind)
	})
	stopTrickle := trickle(watched)
	defer stopTrickle()
	acksBefore := w.acks.Load()

	// The flood, while the slow ones hold their slots. Per IP first, far
	// below the total cap: one fresh client IP gets exactly slowPerIP
	// connections, and its next one is closed unanswered.
	if got, refused := openUntilRefused(t, addr, []string{"127.0.2.1"}, slowPerIP+5); len(got) != slowPerIP || !refused {
		t.Errorf("client IP 127.0.2.1 got %d connections (refused: %v), want the per-IP cap %d", len(got), refused, slowPerIP)
	}
	// Then from 40 IPs at once, until the total cap refuses one. No IP
	// comes near its own cap (slowMaxConns/40 < slowPerIP), so a refusal
	// can only be the total cap's.
	flood, refused := floodUntilRefused(t, addr, 40, slowMaxConns)
	if !refused {
		t.Fatalf("%d connections past the slow ones and nothing refused: the total cap %d does not hold", len(flood), slowMaxConns)
	}
	t.Logf("%v to open the slow ones and flood", time.Since(began))
	if b.rss != nil {
		// What an open connection costs the broker: its goroutines, its
		// buffers and a trickling one's partial frame. The bound is a
		// budget per connection (a broker at rest is too small, ~20 MiB,
		// for "twice its baseline" to mean anything): it fails if a
		// connection cost, say, a 64 KiB eager buffer or more.
		peak := b.rss()
		open := countOpen(watched) + len(flood) + slowPerIP
		per := (peak - rssBase) / int64(open)
		t.Logf("broker RSS %d MiB before, %d MiB with %d connections open (slow, idle and the flood): %d KiB per connection",
			rssBase>>20, peak>>20, open, per>>10)
		if per > slowConnBudget {
			t.Errorf("broker RSS grew by %d KiB per open connection, over the budget of %d KiB", per>>10, slowConnBudget>>10)
		}
	}
	t.Logf("flood: %d connections from one IP (per-IP cap %d), then %d from 40 IPs until the total cap (%d) refused one; %d slow and idle ones still open",
		slowPerIP, slowPerIP, len(flood), slowMaxConns, countOpen(watched))
	// A slot freed is a slot taken again.
	flood[len(flood)-1].nc.Close()
	eventually(t, 10*time.Second, "a connection accepted again under the total cap", func() bool {
		rc := dialRaw(t, addr, "127.0.3.99")
		if rc.tryApiVersions() {
			return true
		}
		rc.nc.Close()
		return false
	})

	// Every slow and idle connection is closed on its timeout, never
	// before.
	eventually(t, slowIdleTimeout+slowSlack+10*time.Second, "every slow and idle connection closed", func() bool {
		return countOpen(watched) == 0
	})
	stopTrickle()
	worst := map[connKind]time.Duration{}
	for _, wc := range watched {
		timeout := slowIdleTimeout
		if wc.kind == trickling {
			timeout = slowFrameTimeout
		}
		took := wc.closedAt.Sub(wc.from)
		if wc.err != nil {
			t.Errorf("%s connection from %s: %v", wc.kind, wc.ip, wc.err)
		} else if took < timeout-50*time.Millisecond || took > timeout+slowSlack {
			t.Errorf("%s connection from %s closed %v after its last request byte, want its timeout %v", wc.kind, wc.ip, took, timeout)
		}
		worst[wc.kind] = max(worst[wc.kind], took)
	}
	t.Logf("%d slow and idle connections closed; latest close after %v (trickling, frame timeout %v), %v (silent), %v (idle after a request; idle timeout %v)",
		len(watched), worst[trickling], slowFrameTimeout, worst[silent], worst[idleAfterRequest], slowIdleTimeout)
	acksDuring := w.acks.Load() - acksBefore

	// A churn of connections opened and dropped at once, some mid-frame.
	churn(t, addr, 2000)
	// Nothing was left behind: a churned IP gets its full cap again.
	eventually(t, 20*time.Second, "slots of the churned connections released", func() bool {
		got, _ := openUntilRefused(t, addr, []string{"127.0.4.1"}, slowPerIP)
		for _, rc := range got {
			rc.nc.Close()
		}
		return len(got) == slowPerIP
	})

	w.waitAcks(t, w.acks.Load()+50)
	w.stopAndCheck(t)
	if acksDuring == 0 {
		t.Error("the healthy producer made no progress while the slow clients and the flood held the broker")
	}
	for _, want := range []string{"frame not received in time, closing connection", "connection limit reached, closing new connection"} {
		if !b.logged(want) {
			t.Errorf("no warning %q was logged", want)
		}
	}
}

// raiseFileLimit raises the soft descriptor limit towards need when the
// hard limit allows, and returns how many slow connections fit (want, or
// fewer under a low hard limit).
func raiseFileLimit(t *testing.T, need uint64, want int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < need && lim.Max > lim.Cur {
		raised := lim
		raised.Cur = min(need, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
			lim = raised
		}
	}
	if lim.Cur >= need {
		return want
	}
	// Keep 1024 descriptors for the broker's files and the clients; two per
	// connection, and the flood's share.
	fit := int(lim.Cur-1024)/4 - slowPerIP
	if fit < 100 {
		t.Fatalf("descriptor limit %d holds too few connections for this test", lim.Cur)
	}
	t.Logf("descriptor limit %d (hard %d): %d slow connections instead of %d", lim.Cur, lim.Max, fit, want)
	return fit
}

type connKind int

const (
	trickling        connKind = iota // one byte a second of a frame that never completes
	silent                           // never sends anything
	idleAfterRequest                 // one request answered, then nothing
)

func (k connKind) String() string {
	return [...]string{"trickling", "silent", "idle-after-request"}[k]
}

// watchedConn is one slow or idle connection and when the broker closed it.
type watchedConn struct {
	kind connKind
	ip   string
	nc   net.Conn
	from time.Time // its timeout counts from here: last request byte or response

	mu       sync.Mutex
	next     int // trickling: bytes of the frame sent
	closedAt time.Time
	err      error // anything but a close (a response to a partial frame, say)
	done     chan struct{}
}

// slowFrame is what a trickling connection sends, one byte at a time: a
// frame announcing 1,000 bytes, which never all arrive.
var slowFrame = append([]byte{0, 0, 0x03, 0xe8}, make([]byte, 1000)...)

// openWatched opens one slow or idle connection. Its from is taken before
// the event the broker's timer starts at can have happened (before the
// dial, the request, the first byte), so a close is never early by the
// client's clock merely because the client ran late.
func openWatched(t *testing.T, addr, ip string, kind connKind) *watchedConn {
	from := time.Now()
	wc := &watchedConn{kind: kind, ip: ip, from: from, done: make(chan struct{})}
	rc, err := dialRawFrom(t, addr, ip)
	if err != nil { // reported as this connection's failure
		wc.err = err
		close(wc.done)
		return wc
	}
	wc.nc = rc.nc
	switch kind {
	case idleAfterRequest:
		wc.from = time.Now()
		if !rc.tryApiVersions() {
			wc.err = errors.New("ApiVersions unanswered")
		}
	case trickling:
		wc.from = time.Now()
		wc.sendByte()
	}
	_ = wc.nc.SetReadDeadline(time.Time{})
	go wc.watch()
	return wc
}

// watch waits for the broker to close the connection.
func (wc *watchedConn) watch() {
	defer close(wc.done)
	var buf [64]byte
	n, err := wc.nc.Read(buf[:])
	wc.mu.Lock()
	defer wc.mu.Unlock()
	wc.closedAt = time.Now()
	switch {
	case n > 0:
		wc.err = fmt.Errorf("broker sent % x instead of closing", buf[:n])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		wc.err = fmt.Errorf("read: %w", err)
	}
}

func (wc *watchedConn) closed() bool {
	select {
	case <-wc.done:
		return true
	default:
		return false
	}
}

// sendByte writes the next byte of slowFrame; a write error means the
// broker has closed, which watch records.
func (wc *watchedConn) sendByte() {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.next >= len(slowFrame) {
		return
	}
	_ = wc.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := wc.nc.Write(slowFrame[wc.next : wc.next+1]); err == nil {
		wc.next++
	}
}

// trickle sends every trickling connection its next byte each second until
// stopped (stop may be called more than once).
func trickle(conns []*watchedConn) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			for _, wc := range conns {
				if wc.kind == trickling && !wc.closed() {
					wc.sendByte()
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func countOpen(conns []*watchedConn) int {
	n := 0
	for _, wc := range conns {
		if !wc.closed() {
			n++
		}
	}
	return n
}

// openUntilRefused opens connections from ips in turn, filling each to
// slowPerIP before the next, and checks each with an ApiVersions round
// trip, until one is refused (closed unanswered) or limit are open. It
// returns the accepted ones, open until the test ends.
func openUntilRefused(t *testing.T, addr string, ips []string, limit int) (accepted []*rawConn, refused bool) {
	t.Helper()
	for len(accepted) < limit {
		ip := ips[(len(accepted)/slowPerIP)%len(ips)]
		if len(ips) == 1 {
			ip = ips[0]
		}
		rc := dialRaw(t, addr, ip)
		if !rc.tryApiVersions() {
			rc.nc.Close()
			return accepted, true
		}
		accepted = append(accepted, rc)
	}
	return accepted, false
}

// floodUntilRefused opens connections from 127.0.3.1 to 127.0.3.<ips>,
// 16 at a time, checking each with an ApiVersions round trip, until one is
// refused or limit are open, and returns the accepted ones.
func floodUntilRefused(t *testing.T, addr string, ips, limit int) (accepted []*rawConn, refused bool) {
	var mu sync.Mutex
	parallel(limit, 16, func(i int) {
		mu.Lock()
		stop := refused
		mu.Unlock()
		if stop {
			return
		}
		rc, err := dialRawFrom(t, addr, fmt.Sprintf("127.0.3.%d", 1+i%ips))
		if err != nil {
			t.Errorf("flood: %v", err) // a refusal is a close after accept, never a failed dial
			return
		}
		ok := rc.tryApiVersions()
		mu.Lock()
		defer mu.Unlock()
		if ok {
			accepted = append(accepted, rc)
		} else {
			rc.nc.Close()
			refused = true
		}
	})
	return accepted, refused
}

// dialRawFrom is dialRaw for goroutines other than the test's: it returns
// the error instead of failing the test.
func dialRawFrom(t testing.TB, addr, fromIP string) (*rawConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, fromIP, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, addr: addr, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))}, nil
}

// parallel runs fn(0..n-1) on width goroutines.
func parallel(n, width int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range width {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// churn opens n connections from a few IPs, eight at a time, and drops each
// at once: some without a byte, some mid-frame, some after a request.
func churn(t *testing.T, addr string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	f := slowFrame[:10]
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.4.%d", 1+i%4))}, Timeout: 10 * time.Second}
			nc, err := d.Dial("tcp", addr)
			if err != nil {
				return // refused under a cap while the churn runs: fine
			}
			defer nc.Close()
			switch i % 3 {
			case 1:
				_, _ = nc.Write(f)
			case 2:
				rc := &rawConn{t: t, nc: nc, addr: addr, f: kmsg.NewRequestFormatter()}
				rc.tryApiVersions()
			}
		}()
	}
	wg.Wait()
}
