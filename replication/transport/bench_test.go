package transport

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// countFSM only counts; the benchmarks measure the transport and raft, not an FSM.
type countFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *countFSM) Apply(*raft.Log) any                 { f.mu.Lock(); f.n++; f.mu.Unlock(); return nil }
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return &fsmSnap{}, nil }
func (f *countFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

// benchCluster is 3 nodes x groups rafts over either three Muxes or one NetworkTransport per group
// and node (what the stock transport needs).
type benchCluster struct {
	rafts  [][]*raft.Raft // [group][node]
	muxes  []*Mux
	stocks []*raft.NetworkTransport
}

func newBenchCluster(tb testing.TB, kind string, groups int, mod func(*raft.Config), muxMod func(*Config)) *benchCluster {
	tb.Helper()
	const nodes = 3
	bc := &benchCluster{}
	if kind == "mux" {
		for i := 0; i < nodes; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				tb.Fatal(err)
			}
			cfg := Config{LocalAddr: raft.ServerAddress(ln.Addr().String()), ClusterID: "bench", Logger: testLogger()}
			if muxMod != nil {
				muxMod(&cfg)
			}
			m, err := New(cfg, ln)
			if err != nil {
				tb.Fatal(err)
			}
			bc.muxes = append(bc.muxes, m)
		}
	}
	for g := 0; g < groups; g++ {
		gid := fmt.Sprintf("g%04d", g)
		trans := make([]raft.Transport, nodes)
		var servers []raft.Server
		for i := 0; i < nodes; i++ {
			if kind == "mux" {
				trans[i] = bc.muxes[i].Group(gid)
			} else {
				nt, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
				if err != nil {
					tb.Fatal(err)
				}
				bc.stocks = append(bc.stocks, nt)
				trans[i] = nt
			}
			servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: trans[i].LocalAddr()})
		}
		var rs []*raft.Raft
		for i := 0; i < nodes; i++ {
			conf := raft.DefaultConfig()
			conf.LocalID = servers[i].ID
			conf.Logger = hclog.NewNullLogger()
			if os.Getenv("VARVE_TEST_RAFTLOG") != "" {
				conf.Logger = hclog.New(&hclog.LoggerOptions{Name: gid + "/" + string(servers[i].ID), Level: hclog.Info, Output: os.Stderr})
			}
			// DESIGN.md's data-group timeouts: the bench saturates both cores, and the defaults
			// (1 s / 500 ms lease) lose leadership under that load with either transport.
			conf.HeartbeatTimeout = 2 * time.Second
			conf.ElectionTimeout = 2 * time.Second
			conf.LeaderLeaseTimeout = time.Second
			conf.BatchApplyCh = true
			conf.MaxAppendEntries = 256
			// Snapshots keep the in-memory logs (and the heap) bounded; TrailingLogs (128 MiB of
			// entries) is large enough that no follower needs an InstallSnapshot (checked below).
			conf.SnapshotThreshold = 4096
			conf.TrailingLogs = 8192
			conf.SnapshotInterval = 200 * time.Millisecond
			if mod != nil {
				mod(conf)
			}
			r, err := raft.NewRaft(conf, &countFSM{}, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), trans[i])
			if err != nil {
				tb.Fatal(err)
			}
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				tb.Fatal(err)
			}
			rs = append(rs, r)
		}
		bc.rafts = append(bc.rafts, rs)
	}
	tb.Cleanup(bc.close)
	eventually(tb, 60*time.Second, func() error {
		for g := range bc.rafts {
			if bc.leader(g) == nil {
				return fmt.Errorf("group %d has no leader", g)
			}
		}
		return nil
	})
	return bc
}

func (bc *benchCluster) leader(g int) *raft.Raft {
	for _, r := range bc.rafts[g] {
		if r.State() == raft.Leader {
			return r
		}
	}
	return nil
}

func (bc *benchCluster) close() {
	var wg sync.WaitGroup
	for _, rs := range bc.rafts {
		for _, r := range rs {
			wg.Add(1)
			go func() { defer wg.Done(); _ = r.Shutdown().Error() }()
		}
	}
	wg.Wait()
	for _, m := range bc.muxes {
		_ = m.Close()
	}
	for _, nt := range bc.stocks {
		_ = nt.Close()
	}
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplication applies 16 KiB commands to 3-node groups over the Mux (at several pipeline
// depths) and over hashicorp/raft's NetworkTransport, with raft.InmemStore so that no disk is in the
// way. Each op is one Apply; 32 applies per group are kept in flight. Reports MB/s and CPU per MB.
func BenchmarkReplication(b *testing.B) {
	const cmdSize = 16 << 10
	cmd := make([]byte, cmdSize)
	for _, groups := range []int{1, 12} {
		variants := []struct {
			name  string
			kind  string
			depth int
		}{{"net", "net", 0}, {"mux/depth=2", "mux", 2}, {"mux/depth=4", "mux", 4}, {"mux/depth=8", "mux", 8}}
		for _, v := range variants {
			b.Run(fmt.Sprintf("transport=%s/groups=%d", v.name, groups), func(b *testing.B) {
				bc := newBenchCluster(b, v.kind, groups, nil, func(c *Config) { c.PipelineDepth = v.depth })
				leaders := make([]*raft.Raft, groups)
				for g := range leaders {
					leaders[g] = bc.leader(g)
				}
				window := make([]raft.ApplyFuture, 32*groups)
				b.SetBytes(cmdSize)
				b.ReportAllocs()
				cpu0 := cpuTime()
				i := 0
				for b.Loop() {
					slot := i % len(window)
					if f := window[slot]; f != nil {
						if err := f.Error(); err != nil {
							b.Fatal(err)
						}
					}
					window[slot] = leaders[i%groups].Apply(cmd, 10*time.Second)
					i++
				}
				for _, f := range window {
					if f != nil {
						if err := f.Error(); err != nil {
							b.Fatal(err)
						}
					}
				}
				mb := float64(b.N) * cmdSize / (1 << 20)
				for i, m := range bc.muxes {
					if s := m.Stats(); s.SnapshotsSent > 0 || s.Timeouts > 0 {
						b.Logf("node %d: %+v", i, s)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/mb, "cpu-ms/MB")
			})
		}
	}
}

// TestIdleCPU measures the CPU an idle cluster burns: 300 groups x 3 nodes in this process with the
// data-group timeouts from DESIGN.md, measured over 10 s once every group has a leader. It is a
// measurement, not a check: run it with VARVE_IDLE_CPU=mux (or net for NetworkTransport).
func TestIdleCPU(t *testing.T) {
	kind := os.Getenv("VARVE_IDLE_CPU")
	if kind != "mux" && kind != "net" {
		t.Skip("set VARVE_IDLE_CPU=mux or =net to measure idle CPU")
	}
	groups := 300
	if n := os.Getenv("VARVE_IDLE_GROUPS"); n != "" {
		_, _ = fmt.Sscan(n, &groups)
	}
	var window time.Duration
	if w := os.Getenv("VARVE_IDLE_HBWINDOW"); w != "" {
		window, _ = time.ParseDuration(w)
	}
	bc := newBenchCluster(t, kind, groups, func(c *raft.Config) {
		c.HeartbeatTimeout = 2 * time.Second
		c.ElectionTimeout = 2 * time.Second
		c.LeaderLeaseTimeout = time.Second
		c.CommitTimeout = time.Second
	}, func(c *Config) { c.HeartbeatWindow = window })
	terms := func() (sum uint64) {
		for _, rs := range bc.rafts {
			for _, r := range rs {
				sum += r.CurrentTerm()
			}
		}
		return sum
	}
	time.Sleep(2 * time.Second) // let the post-election catch-up settle
	t0, c0, term0 := time.Now(), cpuTime(), terms()
	time.Sleep(10 * time.Second)
	wall, cpu := time.Since(t0), cpuTime()-c0
	cores := cpu.Seconds() / wall.Seconds()
	t.Logf("%s: %d groups x 3 nodes idle for %v: %.3f cores total, %.1f µs CPU per group per second, term changes %d",
		kind, groups, wall.Round(time.Millisecond), cores, cores*1e6/float64(groups), terms()-term0)
	if kind == "mux" {
		for i, m := range bc.muxes {
			t.Logf("node %d: %+v", i, m.Stats())
		}
	}
}

// BenchmarkRPCRoundTrip measures one synchronous RequestVote round trip (the shape of votes and
// heartbeats) over the Mux and over NetworkTransport, with a consumer answering at once.
func BenchmarkRPCRoundTrip(b *testing.B) {
	answer := func(ch <-chan raft.RPC, stop chan struct{}) {
		for {
			select {
			case rpc := <-ch:
				rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil)
			case <-stop:
				return
			}
		}
	}
	run := func(b *testing.B, client raft.Transport, target raft.ServerAddress, consumer <-chan raft.RPC) {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); answer(consumer, stop) }()
		defer func() { close(stop); <-done }()
		req := &raft.RequestVoteRequest{Term: 1, Candidate: []byte("c")}
		b.ReportAllocs()
		for b.Loop() {
			if err := client.RequestVote("x", target, req, new(raft.RequestVoteResponse)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("transport=mux", func(b *testing.B) {
		var ms []*Mux
		for i := 0; i < 2; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			m, err := New(Config{LocalAddr: raft.ServerAddress(ln.Addr().String()), ClusterID: "bench"}, ln)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ms = append(ms, m)
		}
		run(b, ms[0].Group("g"), ms[1].cfg.LocalAddr, ms[1].Group("g").Consumer())
	})
	b.Run("transport=net", func(b *testing.B) {
		var ts []*raft.NetworkTransport
		for i := 0; i < 2; i++ {
			nt, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			defer nt.Close()
			ts = append(ts, nt)
		}
		run(b, ts[0], ts[1].LocalAddr(), ts[1].Consumer())
	})
}
