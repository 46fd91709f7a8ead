package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/replication"
)

// listenerNode is one broker of a cluster with two named Kafka listeners:
// INTERNAL (what other containers would use) and EXTERNAL (the host's
// port mapping). Cluster serves one PLAINTEXT listener per broker, so
// these tests start their brokers themselves.
type listenerNode struct {
	id      int32
	dataDir string
	b       *broker.Broker
	serving chan error
	// advertised is each listener's advertised host:port. INTERNAL
	// advertises "127.0.0.1:<port>" and EXTERNAL "localhost:<port>": both
	// reach this process, yet a client can tell from an address which
	// listener's Metadata it came from.
	advertised map[string]string
}

var listenerNames = []string{"INTERNAL", "EXTERNAL"}

// startListenerCluster boots n brokers on the real filesystem, each
// serving INTERNAL and EXTERNAL on its own 127.0.0.1:0 listener, and stops
// them when the test ends.
func startListenerCluster(t *testing.T, n int) []*listenerNode {
	t.Helper()
	nodes := make([]*listenerNode, n)
	raftLns := make([]net.Listener, n)
	kafkaLns := make([]map[string]net.Listener, n)
	var peers []replication.Peer
	for i := range n {
		nd := &listenerNode{id: int32(i + 1), serving: make(chan error, len(listenerNames)), advertised: map[string]string{}}
		// Made before the cleanup below is registered, so the directory
		// outlives the brokers' shutdown (cleanups run last-in first-out).
		nd.dataDir = path.Join(t.TempDir(), fmt.Sprintf("broker-%d", nd.id))
		raftLns[i] = listen(t)
		kafkaLns[i] = map[string]net.Listener{}
		for _, name := range listenerNames {
			ln := listen(t)
			kafkaLns[i][name] = ln
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			host := "127.0.0.1"
			if name == "EXTERNAL" {
				host = "localhost"
			}
			nd.advertised[name] = net.JoinHostPort(host, port)
		}
		peers = append(peers, replication.Peer{ID: nd.id, Addr: raftLns[i].Addr().String()})
		nodes[i] = nd
	}
	t.Cleanup(func() { stopListenerCluster(t, nodes) })
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, nd := range nodes {
		cfg := broker.Config{
			NodeID:       nd.id,
			DataDir:      nd.dataDir,
			RaftListener: raftLns[i],
			Peers:        peers,
		}
		testTimings(&cfg)
		for _, name := range listenerNames {
			cfg.Listeners = append(cfg.Listeners, broker.Listener{Name: name, Advertise: nd.advertised[name]})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := broker.New(cfg)
			if err != nil {
				errs[i] = fmt.Errorf("broker %d: %w", nd.id, err)
				_ = raftLns[i].Close()
				for _, ln := range kafkaLns[i] {
					_ = ln.Close()
				}
				return
			}
			nd.b = b
			for _, name := range listenerNames {
				go func() { nd.serving <- b.Serve(name, kafkaLns[i][name]) }()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "brokers to register", func() bool {
		for _, nd := range nodes {
			if len(nd.b.RegisteredBrokers()) < n {
				return false
			}
		}
		return true
	})
	return nodes
}

func stopListenerCluster(t *testing.T, nodes []*listenerNode) {
	var wg sync.WaitGroup
	for _, nd := range nodes {
		if nd.b == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := nd.b.Shutdown(ctx); err != nil {
				t.Errorf("shutdown broker %d: %v", nd.id, err)
			}
			for range listenerNames {
				if err := <-nd.serving; err != nil && !errors.Is(err, net.ErrClosed) {
					t.Errorf("serve broker %d: %v", nd.id, err)
				}
			}
		}()
	}
	wg.Wait()
}

// listenerClient is a franz-go client seeded with one address only, so
// every other broker it reaches it learned from that listener's Metadata.
func listenerClient(t *testing.T, seed string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed)}, opts...)...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// metadataBrokers asks the client's seed broker (not whichever broker kgo
// would pick) for Metadata and returns its brokers as id@host:port, by id.
func metadataBrokers(ctx context.Context, cl *kgo.Client) ([]string, error) {
	resp, err := cl.SeedBrokers()[0].Request(ctx, kmsg.NewPtrMetadataRequest())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
		out = append(out, fmt.Sprintf("%d@%s", b.NodeID, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))))
	}
	slices.Sort(out)
	return out, nil
}

// dialLog records every broker address a client connects to.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
	ids   []int32
}

func (d *dialLog) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = append(d.addrs, net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))))
	d.ids = append(d.ids, meta.NodeID)
}

// TestListenersNamedPerRequest boots three brokers with INTERNAL and
// EXTERNAL listeners advertised under different addresses, checks that
// Metadata on each listener of each broker lists every broker as that
// listener advertises it, and that a client that only knows one EXTERNAL
// address produces and consumes through EXTERNAL addresses alone.
func TestListenersNamedPerRequest(t *testing.T) {
	nodes := startListenerCluster(t, 3)
	want := map[string][]string{}
	for _, name := range listenerNames {
		for _, nd := range nodes {
			want[name] = append(want[name], fmt.Sprintf("%d@%s", nd.id, nd.advertised[name]))
		}
		slices.Sort(want[name])
	}
	if slices.Equal(want["INTERNAL"], want["EXTERNAL"]) {
		t.Fatal("the listeners must advertise different addresses for this test to mean anything")
	}

	t.Run("metadata", func(t *testing.T) {
		for _, nd := range nodes {
			for _, name := range listenerNames {
				cl := listenerClient(t, nd.advertised[name])
				var got []string
				var err error
				// Registration of the other brokers' second listener may
				// still be on its way through the metadata group.
				ctx := testContext(t, 30*time.Second)
				for {
					got, err = metadataBrokers(ctx, cl)
					if (err == nil && slices.Equal(got, want[name])) || ctx.Err() != nil {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err != nil || !slices.Equal(got, want[name]) {
					t.Fatalf("Metadata on broker %d's %s listener: brokers %v (err %v), want %v", nd.id, name, got, err, want[name])
				}
			}
		}
	})

	t.Run("produce and consume through EXTERNAL", func(t *testing.T) {
		const topic = "listeners-external"
		adm := kadm.NewClient(listenerClient(t, nodes[0].advertised["INTERNAL"]))
		ctx := testContext(t, 60*time.Second)
		resp, err := adm.CreateTopic(ctx, 3, 3, nil, topic)
		if err != nil || resp.Err != nil {
			t.Fatalf("create topic: %v %v", err, resp.Err)
		}

		external := map[string]bool{}
		for _, nd := range nodes {
			external[nd.advertised["EXTERNAL"]] = true
		}
		var dials dialLog
		seed := nodes[1].advertised["EXTERNAL"]
		pcl := listenerClient(t, seed, kgo.DefaultProduceTopic(topic), kgo.WithHooks(&dials))
		const n = 30
		var recs []*kgo.Record
		for i := range n {
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "key-%02d", i), Value: fmt.Appendf(nil, "value-%02d-via-external", i)})
		}
		if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}

		ccl := listenerClient(t, seed, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxWait(200*time.Millisecond), kgo.WithHooks(&dials))
		got := map[string]string{}
		for len(got) < n {
			fs := ccl.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
			}
			fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
			fs.EachRecord(func(r *kgo.Record) {
				if prev, dup := got[string(r.Key)]; dup {
					t.Fatalf("key %s read twice (%s, %s)", r.Key, prev, r.Value)
				}
				got[string(r.Key)] = string(r.Value)
			})
		}
		for i := range n {
			k, v := fmt.Sprintf("key-%02d", i), fmt.Sprintf("value-%02d-via-external", i)
			if got[k] != v {
				t.Errorf("key %s: value %q, want %q", k, got[k], v)
			}
		}

		dials.mu.Lock()
		defer dials.mu.Unlock()
		learned := 0
		for i, addr := range dials.addrs {
			if !external[addr] {
				t.Errorf("a client on EXTERNAL dialed %s, not an EXTERNAL address (%v)", addr, external)
			}
			if dials.ids[i] >= 0 {
				learned++ // a broker named by Metadata, not the seed
			}
		}
		if learned == 0 {
			t.Errorf("the clients only dialed their seed (%v): Metadata's addresses were never used", dials.addrs)
		}
	})
}
