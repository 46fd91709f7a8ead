//go:build linux

package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Process-level clusters (TESTPLAN tier T2): the real varve binary, one
// process per broker on 127.0.0.1, started as children of the test and
// signalled by pid (kill -9, SIGSTOP/SIGCONT, SIGTERM). Every broker
// dials each peer's Raft address through a Proxy of its own for that link
// (varve serve --raft-dial-override), so a test can blackhole, delay or
// cut any directed link between two brokers while their clients still
// reach them. Kafka clients talk to the brokers directly.

// BuildVarve builds ./cmd/varve into dir with the go that runs the test
// and returns the binary's path. Run it once per test binary: it takes a
// while on a cold build cache.
func BuildVarve(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "varve")
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", bin, "github.com/varvelog/varve/cmd/varve")
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/varve: %v\n%s", err, out)
	}
	return bin, nil
}

// Procs is a cluster of broker processes.
type Procs struct {
	t     testing.TB
	bin   string
	dir   string
	peers string
	args  []string
	nodes []*procNode
	links map[[2]int]*Proxy // (from slot, to slot): from's dials to to's Raft address
}

// procNode is one broker slot: its fixed addresses and data directory,
// and the process running it, if any.
type procNode struct {
	slot                           int
	id                             int32
	dataDir, logPath               string
	kafkaAddr, raftAddr, adminAddr string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	state   *os.ProcessState
	paused  bool
	starts  int
	logFile *os.File
}

// NewProcs starts n brokers of bin (ids 1..n) with every Raft link behind
// a proxy, waits until each answers /readyz, and stops everything in
// t.Cleanup (kill -9 by pid, proxies closed; the data directories live in
// t.TempDir). extra is appended to every broker's command line. On failure
// the last lines of every broker's log are printed.
func NewProcs(t testing.TB, bin string, n int, extra ...string) *Procs {
	t.Helper()
	c := &Procs{t: t, bin: bin, dir: t.TempDir(), args: extra, links: map[[2]int]*Proxy{}}
	var peers []string
	for i := range n {
		nd := &procNode{
			slot:      i,
			id:        int32(i + 1),
			dataDir:   filepath.Join(c.dir, fmt.Sprintf("broker-%d", i+1)),
			logPath:   filepath.Join(c.dir, fmt.Sprintf("broker-%d.log", i+1)),
			kafkaAddr: freeAddr(t),
			raftAddr:  freeAddr(t),
			adminAddr: freeAddr(t),
		}
		c.nodes = append(c.nodes, nd)
		peers = append(peers, fmt.Sprintf("%d@%s", nd.id, nd.raftAddr))
	}
	c.peers = strings.Join(peers, ",")
	t.Cleanup(c.cleanup)
	for i := range n {
		for j := range n {
			if i == j {
				continue
			}
			p, err := NewProxy(c.nodes[j].raftAddr)
			if err != nil {
				t.Fatalf("proxy for link %d->%d: %v", i+1, j+1, err)
			}
			c.links[[2]int{i, j}] = p
		}
	}
	for i := range n {
		c.Start(i)
	}
	for i := range n {
		c.WaitReady(i, 60*time.Second)
	}
	return c
}

// cleanup kills every process still running, closes the proxies, and
// prints the brokers' logs if the test failed.
func (c *Procs) cleanup() {
	for _, nd := range c.nodes {
		nd.mu.Lock()
		cmd, exited := nd.cmd, nd.exited
		nd.mu.Unlock()
		if cmd != nil && !isClosed(exited) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				c.t.Errorf("broker %d (pid %d) did not exit after SIGKILL", nd.id, cmd.Process.Pid)
			}
		}
		if nd.logFile != nil {
			_ = nd.logFile.Close()
		}
	}
	for _, p := range c.links {
		p.Close()
	}
	if c.t.Failed() {
		for _, nd := range c.nodes {
			c.t.Logf("broker %d log (%s), last 80 lines:\n%s", nd.id, nd.logPath, c.LogTail(nd.slot, 80))
		}
	}
}

// Size is the number of broker slots.
func (c *Procs) Size() int { return len(c.nodes) }

// ID is slot i's broker id (i+1).
func (c *Procs) ID(i int) int32 { return c.nodes[i].id }

// Slot is the slot of broker id, -1 if none.
func (c *Procs) Slot(id int32) int {
	for _, nd := range c.nodes {
		if nd.id == id {
			return nd.slot
		}
	}
	return -1
}

// KafkaAddr is slot i's Kafka listener.
func (c *Procs) KafkaAddr(i int) string { return c.nodes[i].kafkaAddr }

// Addrs are every slot's Kafka address.
func (c *Procs) Addrs() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.kafkaAddr)
	}
	return out
}

// AdminAddr is slot i's admin HTTP address.
func (c *Procs) AdminAddr(i int) string { return c.nodes[i].adminAddr }

// DataDir is slot i's data directory.
func (c *Procs) DataDir(i int) string { return c.nodes[i].dataDir }

// PartitionDir is where slot i keeps its replica of a partition
// (broker/replica.go's partitionDir).
func (c *Procs) PartitionDir(i int, topic string, p int32) string {
	return filepath.Join(c.nodes[i].dataDir, "logs", topic+"-"+strconv.Itoa(int(p)))
}

// Link is the proxy on from's Raft connections to to.
func (c *Procs) Link(from, to int) *Proxy { return c.links[[2]int{from, to}] }

// IsolatePeers blackholes (on) or heals every Raft link to and from slot
// i; its Kafka clients still reach it.
func (c *Procs) IsolatePeers(i int, on bool) {
	for k, p := range c.links {
		if k[0] == i || k[1] == i {
			p.Blackhole(on)
		}
	}
}

// CutPeers resets every Raft connection to and from slot i and returns
// how many it reset.
func (c *Procs) CutPeers(i int) int {
	n := 0
	for k, p := range c.links {
		if k[0] == i || k[1] == i {
			n += p.Cut()
		}
	}
	return n
}

// Start starts slot i's process (it must not be running) without waiting
// for it to be ready.
func (c *Procs) Start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil && !isClosed(nd.exited) {
		c.t.Fatalf("broker %d is already running (pid %d)", nd.id, nd.cmd.Process.Pid)
	}
	var overrides []string
	for j, other := range c.nodes {
		if j != i {
			overrides = append(overrides, other.raftAddr+"="+c.Link(i, j).Addr())
		}
	}
	args := []string{"serve",
		"--id", strconv.Itoa(int(nd.id)),
		"--data", nd.dataDir,
		"--kafka-addr", nd.kafkaAddr,
		"--raft-addr", nd.raftAddr,
		"--admin-addr", nd.adminAddr,
		"--peers", c.peers,
		"--raft-dial-override", strings.Join(overrides, ","),
		"--log-level", "info",
	}
	args = append(args, c.args...)
	if nd.logFile == nil {
		f, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			c.t.Fatal(err)
		}
		nd.logFile = f
	}
	nd.starts++
	fmt.Fprintf(nd.logFile, "=== start %d of broker %d at %s: %s %s\n", nd.starts, nd.id,
		time.Now().Format("15:04:05.000"), c.bin, strings.Join(args, " "))
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = nd.logFile, nd.logFile
	cmd.Env = procEnv()
	// A test binary that dies without its cleanups (a panic, a kill)
	// must not leave brokers holding ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start broker %d: %v", nd.id, err)
	}
	exited := make(chan struct{})
	nd.cmd, nd.exited, nd.state, nd.paused = cmd, exited, nil, false
	go func() {
		_ = cmd.Wait()
		nd.mu.Lock()
		nd.state = cmd.ProcessState
		nd.mu.Unlock()
		close(exited)
	}()
}

// procEnv is the test's environment without VARVE_* variables: varve serve
// reads its settings from them, and a developer's shell must not change
// the brokers under test.
func procEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VARVE_") {
			env = append(env, kv)
		}
	}
	return env
}

// PID is slot i's process id, 0 when it is not running.
func (c *Procs) PID(i int) int {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil || isClosed(nd.exited) {
		return 0
	}
	return nd.cmd.Process.Pid
}

// Running reports whether slot i's process is alive (paused counts).
func (c *Procs) Running(i int) bool { return c.PID(i) != 0 }

// WaitReady waits until slot i answers /readyz with 200, failing early if
// its process exits.
func (c *Procs) WaitReady(i int, timeout time.Duration) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	exited := nd.exited
	nd.mu.Unlock()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		resp, err := hc.Get("http://" + nd.adminAddr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if exited != nil && isClosed(exited) {
			c.t.Fatalf("broker %d exited (%v) before it was ready; log:\n%s", nd.id, c.exitState(i), c.LogTail(i, 40))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("broker %d not ready after %v: %s", nd.id, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Procs) exitState(i int) *os.ProcessState {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.state
}

// signal sends sig to slot i's running process.
func (c *Procs) signal(i int, sig syscall.Signal) (*procNode, chan struct{}) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.mu.Unlock()
	if cmd == nil || isClosed(exited) {
		c.t.Fatalf("broker %d is not running", nd.id)
	}
	if err := syscall.Kill(cmd.Process.Pid, sig); err != nil {
		c.t.Fatalf("kill -%d %d (broker %d): %v", sig, cmd.Process.Pid, nd.id, err)
	}
	return nd, exited
}

// Kill sends SIGKILL to slot i's process and waits until it is gone: no
// flush, no handoff, nothing after the last write that reached the kernel.
func (c *Procs) Kill(i int) {
	c.t.Helper()
	_, exited := c.signal(i, syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("broker %d did not exit within 10 s of SIGKILL", c.nodes[i].id)
	}
}

// KillAll sends SIGKILL to every running process at once, then waits for
// all of them. Every Raft link is blackholed first, so that no broker
// hears from another that is already dead (as with a power cut of the
// whole cluster), and healed once they are gone.
func (c *Procs) KillAll() {
	c.t.Helper()
	for _, p := range c.links {
		p.Blackhole(true)
	}
	defer func() {
		for _, p := range c.links {
			p.Blackhole(false)
		}
	}()
	var waits []chan struct{}
	for i := range c.nodes {
		if c.Running(i) {
			_, exited := c.signal(i, syscall.SIGKILL)
			waits = append(waits, exited)
		}
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-time.After(10 * time.Second):
			c.t.Fatal("a broker did not exit within 10 s of SIGKILL")
		}
	}
}

// Terminate sends SIGTERM to slot i and waits up to timeout for it to
// exit; it fails the test unless the exit status is 0. It returns how long
// the broker took to exit.
func (c *Procs) Terminate(i int, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	nd, exited := c.signal(i, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		c.t.Fatalf("broker %d did not exit within %v of SIGTERM", nd.id, timeout)
	}
	if st := c.exitState(i); st == nil || !st.Success() {
		c.t.Fatalf("broker %d exited with %v after SIGTERM; log:\n%s", nd.id, st, c.LogTail(i, 40))
	}
	return time.Since(start)
}

// Pause sends SIGSTOP to slot i: the process keeps its sockets but runs
// nothing until Resume.
func (c *Procs) Pause(i int) {
	c.t.Helper()
	nd, _ := c.signal(i, syscall.SIGSTOP)
	nd.mu.Lock()
	nd.paused = true
	nd.mu.Unlock()
}

// Resume sends SIGCONT to slot i.
func (c *Procs) Resume(i int) {
	c.t.Helper()
	nd, _ := c.signal(i, syscall.SIGCONT)
	nd.mu.Lock()
	nd.paused = false
	nd.mu.Unlock()
}

// LogTail returns the last n lines of slot i's log (every start appends).
func (c *Procs) LogTail(i, n int) string {
	f, err := os.Open(c.nodes[i].logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// LogOffset is the size of slot i's log now, to read what follows with
// LogSince.
func (c *Procs) LogOffset(i int) int64 {
	st, err := os.Stat(c.nodes[i].logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// LogSince returns slot i's log from byte off on.
func (c *Procs) LogSince(i int, off int64) string {
	f, err := os.Open(c.nodes[i].logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// Client is a franz-go client seeded with every broker, closed at the end
// of the test.
func (c *Procs) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Metric reads one unlabelled sample of slot i's /metrics.
func (c *Procs) Metric(i int, name string) (float64, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + c.nodes[i].adminAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("broker %d: no metric %s", c.nodes[i].id, name)
}

// KafkaRequest sends one request to addr on a fresh connection and
// decodes the answer. It bypasses every client-side choice of broker,
// version rewrite or retry: what that broker answers is what comes back.
func KafkaRequest(ctx context.Context, addr string, req kmsg.Request) (kmsg.Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if req.GetVersion() < 0 || req.GetVersion() > req.MaxVersion() {
		req.SetVersion(req.MaxVersion())
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("procs"))
	if _, err := conn.Write(f.AppendRequest(nil, req, 1)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > 64<<20 {
		return nil, fmt.Errorf("response of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, err
	}
	if corr := int32(binary.BigEndian.Uint32(body)); corr != 1 {
		return nil, fmt.Errorf("correlation id %d, want 1", corr)
	}
	body = body[4:]
	resp := req.ResponseKind()
	if resp.IsFlexible() && req.Key() != 18 {
		if len(body) == 0 {
			return nil, errors.New("empty response")
		}
		body = body[1:] // empty tagged fields of response header v1
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode %T: %w", resp, err)
	}
	return resp, nil
}

// PartitionState is one partition as a broker's Metadata answer has it.
type PartitionState struct {
	Leader   int32 // -1: none
	Epoch    int32
	Replicas []int32
	ISR      []int32
	Err      int16
}

// TopicState asks the broker at addr for topic's partitions, as that
// broker's metadata has them.
func TopicState(ctx context.Context, addr, topic string) (map[int32]PartitionState, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Version = min(12, req.MaxVersion()) // leader epochs from v7; Varve answers 0-12
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := KafkaRequest(ctx, addr, req)
	if err != nil {
		return nil, err
	}
	md := resp.(*kmsg.MetadataResponse)
	if len(md.Topics) != 1 {
		return nil, fmt.Errorf("metadata names %d topics", len(md.Topics))
	}
	if code := md.Topics[0].ErrorCode; code != 0 {
		return nil, fmt.Errorf("metadata of %s: error %d", topic, code)
	}
	out := map[int32]PartitionState{}
	for _, p := range md.Topics[0].Partitions {
		st := PartitionState{Leader: p.Leader, Epoch: p.LeaderEpoch, Replicas: p.Replicas, ISR: p.ISR, Err: p.ErrorCode}
		if p.ErrorCode != 0 {
			st.Leader = -1
		}
		out[p.Partition] = st
	}
	return out, nil
}

// Leaders is TopicState's leaders and leader epochs by partition.
func Leaders(ctx context.Context, addr, topic string) (leaders map[int32]int32, epochs map[int32]int32, err error) {
	st, err := TopicState(ctx, addr, topic)
	if err != nil {
		return nil, nil, err
	}
	leaders, epochs = map[int32]int32{}, map[int32]int32{}
	for p, ps := range st {
		leaders[p], epochs[p] = ps.Leader, ps.Epoch
	}
	return leaders, epochs, nil
}
