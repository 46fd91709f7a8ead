package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTiming keeps elections fast but calm under -race on two busy cores.
// A single voter ignores it (soloTiming). With a 100 ms lease (heartbeat
// 200 ms) leaders stepped down in about one run in eight under -race at a
// load average of 10, failing appends with NotLeaderError; 400 ms holds.
var testTiming = Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, Lease: 400 * time.Millisecond, Commit: 50 * time.Millisecond}

// testLogger discards unless VARVE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("VARVE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// eventually polls fn every 10 ms until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- record batches ---------------------------------------------------------

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// batchTimestamp is every test batch's first timestamp.
const batchTimestamp = int64(1_700_000_000_000)

// makeBatch encodes a real, uncompressed Kafka v2 record batch with one
// record per value (key "k<i>"), base offset 0, leader epoch -1 and a valid
// CRC-32C. It is not idempotent.
func makeBatch(values ...string) []byte {
	return makeIdempotentBatch(-1, -1, -1, values...)
}

// makeIdempotentBatch is makeBatch with producer id, epoch and first
// sequence set (pid -1: not idempotent).
func makeIdempotentBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	var recs []byte
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), TimestampDelta64: int64(i), Key: []byte("k" + strconv.Itoa(i)), Value: []byte(v)}
		r.Length = int32(len(r.AppendTo(nil)) - 1) // a zero Length is one varint byte
		recs = r.AppendTo(recs)
	}
	rb := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      int32(len(values) - 1),
		FirstTimestamp:       batchTimestamp,
		MaxTimestamp:         batchTimestamp + int64(len(values)-1),
		ProducerID:           pid,
		ProducerEpoch:        epoch,
		FirstSequence:        seq,
		NumRecords:           int32(len(values)),
		Records:              recs,
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}

// stamped is what the log should hold for batch b: a copy with the base
// offset and partition leader epoch (outside the CRC) rewritten.
func stamped(b []byte, base int64, epoch int32) []byte {
	out := bytes.Clone(b)
	binary.BigEndian.PutUint64(out[0:], uint64(base))
	binary.BigEndian.PutUint32(out[12:], uint32(epoch))
	return out
}

// splitBatches cuts log bytes into batches.
func splitBatches(t testing.TB, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(data) > 0 {
		if len(data) < partition.BatchHeaderSize {
			t.Fatalf("%d trailing bytes", len(data))
		}
		size := int(binary.BigEndian.Uint32(data[8:])) + 12
		if size > len(data) {
			t.Fatalf("batch of %d bytes with %d left", size, len(data))
		}
		if _, err := partition.ValidateBatch(data[:size], 0); err != nil {
			t.Fatalf("batch at %d: %v", len(out), err)
		}
		out = append(out, data[:size])
		data = data[size:]
	}
	return out
}

// batchValues decodes the record values of one uncompressed batch.
func batchValues(t testing.TB, b []byte) []string {
	t.Helper()
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		t.Fatalf("decode batch: %v", err)
	}
	var out []string
	recs := rb.Records
	for range rb.NumRecords {
		n, k := binary.Varint(recs)
		if k <= 0 || int64(len(recs)-k) < n {
			t.Fatalf("bad record length")
		}
		var r kmsg.Record
		if err := r.ReadFrom(recs[:k+int(n)]); err != nil {
			t.Fatalf("decode record: %v", err)
		}
		out = append(out, string(r.Value))
		recs = recs[k+int(n):]
	}
	return out
}

// readAll returns every byte of the log from its start to its end.
func readAll(t testing.TB, l *partition.Log) []byte {
	t.Helper()
	data, err := tryReadAll(l)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func tryReadAll(l *partition.Log) ([]byte, error) {
	var out []byte
	off, end := l.LogStartOffset(), l.LogEndOffset()
	for off < end {
		b, err := l.Read(off, 1<<20, end)
		if err != nil {
			return nil, fmt.Errorf("read at %d: %w", off, err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("empty read at %d below end %d", off, end)
		}
		out = append(out, b...)
		for len(b) > 0 {
			h, err := partition.ParseBatchHeader(b)
			if err != nil {
				return nil, err
			}
			off = h.NextOffset()
			b = b[h.Size():]
		}
	}
	return out, nil
}

// --- simulated brokers ------------------------------------------------------

// testBroker is one simulated broker: its own disk and raft Mux.
type testBroker struct {
	id   int32
	fs   *vfs.Mem
	mux  *transport.Mux
	addr string
}

func newBroker(t testing.TB, id int32) *testBroker {
	t.Helper()
	return newBrokerLost(t, id, nil)
}

// newBrokerLost is newBroker with the transport's PeerLost callback set.
func newBrokerLost(t testing.TB, id int32, lost func(raft.ServerAddress, time.Time)) *testBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	mux, err := transport.New(transport.Config{LocalAddr: raft.ServerAddress(addr), ClusterID: "test-cluster", Logger: testLogger(), PeerLost: lost}, ln)
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	return &testBroker{id: id, fs: vfs.NewMem(), mux: mux, addr: addr}
}

// leaderLog records the epochs OnLeader reported, per broker.
type leaderLog struct {
	mu     sync.Mutex
	epochs map[int32][]int32
}

func (l *leaderLog) add(id, epoch int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epochs == nil {
		l.epochs = map[int32][]int32{}
	}
	l.epochs[id] = append(l.epochs[id], epoch)
}

func (l *leaderLog) of(id int32) []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int32(nil), l.epochs[id]...)
}

// cluster is one partition group replicated over n simulated brokers.
type cluster struct {
	t       *testing.T
	gid     string
	brokers []*testBroker
	peers   []Peer
	cfgs    []GroupConfig
	groups  []*Group // nil while closed
	leaders leaderLog
}

const testEpochBase = 100

// newCluster opens the group on n brokers (ids 1..n); mod adjusts every
// member's config.
func newCluster(t *testing.T, n int, mod func(*GroupConfig)) *cluster {
	t.Helper()
	c := &cluster{t: t, gid: "4f1d3c2a-0000-4000-8000-000000000001-0"}
	for i := range n {
		b := newBroker(t, int32(i+1))
		c.brokers = append(c.brokers, b)
		c.peers = append(c.peers, Peer{ID: b.id, Addr: b.addr})
	}
	for _, b := range c.brokers {
		id := b.id
		cfg := GroupConfig{
			ID:        c.gid,
			LocalID:   id,
			Peers:     c.peers,
			EpochBase: testEpochBase,
			RaftDir:   "/data/raft/" + c.gid,
			Log:       partition.Options{Dir: "/data/topic-0", FS: b.fs},
			Mux:       b.mux,
			Timing:    testTiming,
			Logger:    testLogger().With("broker", id),
			OnLeader:  func(epoch int32) { c.leaders.add(id, epoch) },
		}
		if mod != nil {
			mod(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
		c.groups = append(c.groups, nil)
	}
	for i := range c.brokers {
		c.open(i)
	}
	return c
}

// open (re)opens member i with its config.
func (c *cluster) open(i int) *Group {
	c.t.Helper()
	g, err := OpenGroup(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("open group on broker %d: %v", c.brokers[i].id, err)
	}
	c.groups[i] = g
	c.t.Cleanup(func() { _ = g.Close() })
	return g
}

// close stops member i.
func (c *cluster) close(i int) {
	c.t.Helper()
	if err := c.groups[i].Close(); err != nil {
		c.t.Fatalf("close group on broker %d: %v", c.brokers[i].id, err)
	}
	c.groups[i] = nil
}

// waitLeader waits until exactly one open member is the ready leader and
// every open member names it; it returns its index and epoch.
func (c *cluster) waitLeader(timeout time.Duration) (int, int32) {
	c.t.Helper()
	leader, epoch := -1, int32(-1)
	eventually(c.t, timeout, func() error {
		leader, epoch = -1, -1
		for i, g := range c.groups {
			if g == nil {
				continue
			}
			if e, err := g.Ready(); err == nil {
				if leader >= 0 {
					return fmt.Errorf("brokers %d and %d both ready", c.brokers[leader].id, c.brokers[i].id)
				}
				leader, epoch = i, e
			}
		}
		if leader < 0 {
			return errors.New("no ready leader")
		}
		for i, g := range c.groups {
			if g == nil || i == leader {
				continue
			}
			if id, _ := g.Leader(); id != c.brokers[leader].id {
				return fmt.Errorf("broker %d believes %d leads, not %d", c.brokers[i].id, id, c.brokers[leader].id)
			}
		}
		return nil
	})
	return leader, epoch
}

// converged waits until every open member holds byte-identical logs with
// the same start and end, and returns those bytes.
func (c *cluster) converged(timeout time.Duration) []byte {
	c.t.Helper()
	var want []byte
	eventually(c.t, timeout, func() error {
		want = nil
		var first *Group
		for i, g := range c.groups {
			if g == nil {
				continue
			}
			l := g.Log()
			data, err := tryReadAll(l)
			if err != nil {
				return fmt.Errorf("broker %d: %w", c.brokers[i].id, err)
			}
			if first == nil {
				first, want = g, data
				continue
			}
			fl := first.Log()
			if l.LogStartOffset() != fl.LogStartOffset() || l.LogEndOffset() != fl.LogEndOffset() {
				return fmt.Errorf("broker %d holds [%d, %d), another [%d, %d)", c.brokers[i].id,
					l.LogStartOffset(), l.LogEndOffset(), fl.LogStartOffset(), fl.LogEndOffset())
			}
			if !bytes.Equal(data, want) {
				return fmt.Errorf("broker %d: log bytes differ (%d vs %d bytes)", c.brokers[i].id, len(data), len(want))
			}
		}
		return nil
	})
	return want
}

// appendOK appends b through g and fails the test on error.
func appendOK(t testing.TB, g *Group, b []byte) partition.AppendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := g.Append(ctx, b)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return res
}

// expectLog checks that data is exactly want[i] stamped at offs[i] with
// epochs[i], in order.
func expectLog(t testing.TB, data []byte, want [][]byte, offs []int64, epochs []int32) {
	t.Helper()
	got := splitBatches(t, data)
	if len(got) != len(want) {
		t.Fatalf("log holds %d batches, want %d", len(got), len(want))
	}
	for i := range want {
		if exp := stamped(want[i], offs[i], epochs[i]); !bytes.Equal(got[i], exp) {
			h, _ := partition.ParseBatchHeader(got[i])
			t.Fatalf("batch %d: got base %d epoch %d values %q, want base %d epoch %d values %q",
				i, h.BaseOffset, h.PartitionLeaderEpoch, batchValues(t, got[i]), offs[i], epochs[i], batchValues(t, want[i]))
		}
	}
}
