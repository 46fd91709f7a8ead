package integration

// Disk faults on one broker of the in-process cluster (TESTPLAN rows 12
// and 13): corrupted or truncated bytes at the tail of a replica's segment,
// index or Raft WAL while the broker is down, and a disk that fails writes
// (ENOSPC) or fsyncs (EIO) while it runs.

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/integration/checker"
	"github.com/varvelog/varve/partition/vfs"
)

// victimLogs sends broker slot i's log to a ring from its next start on
// (the others keep the cluster's logger) and returns the ring.
func victimLogs(c *Cluster, i int) *logRing {
	r := &logRing{max: 50_000}
	logger := slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug})).With("broker", c.ID(i))
	c.SetBrokerConfig(i, func(cfg *broker.Config) { cfg.Logger = logger })
	return r
}

// ringLogs is brokerLogs that also returns the ring every broker logs to
// (lines carry node_id), for tests that look for what a broker logged.
// VARVE_FAULT_LOGS=dir writes the ring to dir/<test>.log, as brokerLogs
// does.
func ringLogs(t *testing.T) (Option, *logRing) {
	r := &logRing{max: 100_000}
	t.Cleanup(func() {
		lines := r.snapshot()
		if dir := os.Getenv("VARVE_FAULT_LOGS"); dir != "" {
			name := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log")
			if err := os.WriteFile(name, []byte(strings.Join(lines, "")), 0o644); err == nil {
				t.Logf("broker logs: %s", name)
			}
		}
		if t.Failed() {
			t.Logf("broker logs, last %d lines:\n%s", min(len(lines), 300), strings.Join(lines[max(0, len(lines)-300):], ""))
		}
	})
	logger := slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return WithConfig(func(cfg *broker.Config) { cfg.Logger = logger }), r
}

// logged counts the lines of r that contain every one of parts.
func logged(r *logRing, parts ...string) int {
	n := 0
	for _, l := range r.snapshot() {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// lastFileWith is the name, in dir, of the highest-sorting file ending in ext.
func lastFileWith(t testing.TB, fsys vfs.FS, dir, ext string) string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	var last string
	for _, n := range names {
		if strings.HasSuffix(n, ext) {
			last = n
		}
	}
	if last == "" {
		t.Fatalf("no %s file in %s (%v)", ext, dir, names)
	}
	return path.Join(dir, last)
}

// rewriteFile replaces a file's contents durably with f(old), in place (hard
// links see the change, as they see a disk's damage).
func rewriteFile(t testing.TB, fsys vfs.FS, name string, f func([]byte) []byte) {
	t.Helper()
	old, err := vfs.ReadFile(fsys, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	data := f(slices.Clone(old))
	w, err := fsys.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := w.Sync(); err != nil {
		t.Fatalf("sync %s: %v", name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// lastBatchAt is the byte position of the last whole record batch in a
// segment's bytes.
func lastBatchAt(t testing.TB, data []byte) int {
	t.Helper()
	pos, last := 0, -1
	for pos+12 <= len(data) {
		size := 12 + int(binary.BigEndian.Uint32(data[pos+8:]))
		if pos+size > len(data) {
			break
		}
		last, pos = pos, pos+size
	}
	if last < 0 {
		t.Fatal("no batch in the segment")
	}
	return last
}

// produceToPartition sends n records with values prefix%06d to one partition and
// returns them acknowledged.
func produceToPartition(t testing.TB, cl *kgo.Client, topic string, p int32, prefix string, first, n int) []acked {
	t.Helper()
	var log ackLog
	for i := first; i < first+n; i++ {
		r := &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%s%06d-%s", prefix, i, strings.Repeat("x", 150))}
		cl.Produce(context.Background(), r, log.promise)
	}
	if err := cl.Flush(testContext(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	recs, errs := log.snapshot()
	if errs != 0 || len(recs) != n {
		t.Fatalf("partition %d: %d acknowledged, %d failed, of %d", p, len(recs), errs, n)
	}
	return recs
}

// TestCorruptTailRecovered (row 12): with one broker down, the tails of
// its replicas are damaged, one kind per partition: a flipped byte in the
// last batch of the active segment (below the checkpoint: the data was
// fsynced, so only a CRC finds it), the segment cut in the middle of its
// last batch, flipped bytes in the last entry of its offset index, a
// flipped byte in the last record of its Raft WAL. Restarted, the broker
// must notice each (its log says so), serve none of the damage, and end
// with replicas byte-identical to the others' after new writes; every
// acknowledged record is read back at its offset through every broker
// (franz-go checks each batch's CRC). Then the broker loses power right
// after more writes, and the last batch of every partition on its crash
// image is damaged too, wherever the checkpoint stood: the same again.
func TestCorruptTailRecovered(t *testing.T) {
	c := NewCluster(t, brokerLogs(t), Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.LeaderBalanceInterval = -1 }))
	const topic = "corrupt"
	const partitions = 4
	createReplicated(t, c, topic, partitions, 3)
	// Small batches, so the segments hold many and the offset indexes
	// (an entry per 4 KiB) several entries.
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(2048))
	var acks []acked
	produce := func(round string, first, n int) {
		for p := range int32(partitions) {
			acks = append(acks, produceToPartition(t, cl, topic, p, fmt.Sprintf("%s%d-", round, p), first, n)...)
		}
	}
	produce("a", 0, 200)
	waitConverged(t, c, topic, partitions)
	victim := 2
	dirs := make([]string, partitions)
	for p := range int32(partitions) {
		dirs[p] = c.Broker(victim).PartitionDir(topic, p)
	}
	id := topicID(t, c, topic)
	walDir := path.Join(c.DataDir(victim), "raft", base64.RawURLEncoding.EncodeToString(id[:])+"-3", "wal")
	ring := victimLogs(c, victim)
	c.Stop(victim)
	fsys := c.FS(victim)

	// p0: one byte of the last batch's records flipped.
	rewriteFile(t, fsys, lastFileWith(t, fsys, dirs[0], ".log"), func(b []byte) []byte {
		b[lastBatchAt(t, b)+80] ^= 0xff
		return b
	})
	// p1: the segment cut in the middle of its last batch.
	rewriteFile(t, fsys, lastFileWith(t, fsys, dirs[1], ".log"), func(b []byte) []byte { return b[:lastBatchAt(t, b)+40] })
	// p2: the last offset index entry garbled.
	idx2 := lastFileWith(t, fsys, dirs[2], ".index")
	rewriteFile(t, fsys, idx2, func(b []byte) []byte {
		if len(b) < 8 {
			t.Fatalf("index %s holds %d bytes", idx2, len(b))
		}
		for i := len(b) - 8; i < len(b); i++ {
			b[i] ^= 0x5a
		}
		return b
	})
	// p3: a byte of the last WAL record's data flipped (its last 8 bytes
	// are the extension length and the append time's tail).
	rewriteFile(t, fsys, lastFileWith(t, fsys, walDir, ".wal"), func(b []byte) []byte {
		b[len(b)-12] ^= 0xff
		return b
	})

	c.Start(victim)
	for p := range int32(partitions) {
		c.WaitLeader(topic, p)
	}
	produce("b", 200, 50)
	for i := range c.Size() {
		checkExactlyOnce(t, c, c.BrokerAddr(i), topic, acks)
	}
	waitConverged(t, c, topic, partitions)
	for p, want := range []string{
		`damage="partition: corrupt record batch: crc32c`,
		"checkpoint does not match the segments",
		"rebuilding the indexes of the recovery segment",
		"truncating a torn or corrupt tail",
	} {
		if logged(ring, want, fmt.Sprintf("partition=%d", p)) == 0 {
			t.Errorf("partition %d: the restarted broker never logged %q", p, want)
		}
	}

	// Power loss right after writes, and every partition's last batch on
	// the crash image damaged.
	produce("c", 250, 50)
	c.Kill(victim)
	damaged := 0
	for p := range int32(partitions) {
		rewriteFile(t, c.FS(victim), lastFileWith(t, c.FS(victim), dirs[p], ".log"), func(b []byte) []byte {
			if len(b) > 200 {
				b[lastBatchAt(t, b)+80] ^= 0xff
				damaged++
			}
			return b
		})
	}
	t.Logf("damaged the last batch of %d partitions on the crash image", damaged)
	c.Start(victim)
	for p := range int32(partitions) {
		c.WaitLeader(topic, p)
	}
	produce("d", 300, 50)
	for i := range c.Size() {
		checkExactlyOnce(t, c, c.BrokerAddr(i), topic, acks)
	}
	all := replicaDirs(c, topic, partitions)
	ends := checkReplicasIdentical(t, c, topic, partitions)
	for p, n := range acksPerPartition(acks) {
		if ends[p] != n {
			t.Errorf("partition %d: replicas end at %d, %d records were acknowledged", p, ends[p], n)
		}
	}
	requireReplicasValid(t, c, topic, all)
}

// diskFault fails one kind of operation on the files of one replica, for
// good (a full or failing disk does not heal by itself), and records what
// the replica did about it.
type diskFault struct {
	name   string
	p      int32
	slot   int
	op     vfs.Op
	prefix string // every file of the replica's WAL or partition directory
	err    error

	mu      sync.Mutex
	first   time.Time       // the first failure
	failed  map[string]bool // files whose op failed
	retries int             // the same op on a file after it failed there
	after   int             // any op under prefix after the first failure
}

// check is the replica's broker's fault function for this fault.
func (f *diskFault) check(op vfs.Op, name string) error {
	if !strings.HasPrefix(name, f.prefix) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.first.IsZero() {
		f.after++
	}
	if op != f.op {
		return nil
	}
	if f.failed[name] {
		f.retries++
	}
	if f.first.IsZero() {
		f.first = time.Now()
	}
	f.failed[name] = true
	return f.err
}

func (f *diskFault) firstFailure() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

// ackTimes records, per (broker, partition), when kgo saw a produce batch
// acknowledged.
type ackTimes struct {
	mu  sync.Mutex
	ats map[[2]int32][]time.Time
}

func (a *ackTimes) OnProduceBatchWritten(meta kgo.BrokerMetadata, _ string, p int32, _ kgo.ProduceBatchMetrics) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := [2]int32{meta.NodeID, p}
	a.ats[k] = append(a.ats[k], time.Now())
}

// since counts the acknowledgements broker id gave for partition p after t.
func (a *ackTimes) since(id, p int32, t time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.ats[[2]int32{id, p}] {
		if at.After(t) {
			n++
		}
	}
	return n
}

// TestDiskFailuresFailClosed (row 13): each of four partitions gets one
// disk fault on one replica while producers write: ENOSPC on writes to the
// leader's Raft WAL, EIO on fsyncs of the leader's partition files, ENOSPC
// on writes to a follower's partition segment, EIO on fsyncs of a
// follower's WAL. (TestFsyncFailureMovesLeadership covers EIO on the
// leader's WAL fsync.) Each replica stops at its first failure and never
// repeats the failed operation on that file; it answers
// KAFKA_STORAGE_ERROR, logs the failure, acknowledges nothing once
// stopped, and leadership moves to a healthy replica; every acknowledged
// record is read back exactly once. Once the disks are healthy and the
// brokers restart, the replicas catch up and end byte-identical.
func TestDiskFailuresFailClosed(t *testing.T) {
	logs, ring := ringLogs(t)
	c := NewCluster(t, logs, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.LeaderBalanceInterval = -1 }))
	const topic = "disk-faults"
	const partitions = 4
	createReplicated(t, c, topic, partitions, 3)
	acksAt := &ackTimes{ats: map[[2]int32][]time.Time{}}
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordDeliveryTimeout(2*time.Minute), kgo.WithHooks(acksAt))
	var acks []acked
	produce := func(round string, first, n int) {
		for p := range int32(partitions) {
			acks = append(acks, produceToPartition(t, cl, topic, p, fmt.Sprintf("%s%d-", round, p), first, n)...)
		}
	}
	produce("a", 0, 100)
	waitConverged(t, c, topic, partitions)

	id := topicID(t, c, topic)
	raftDir := func(slot int, p int32) string {
		return path.Join(c.DataDir(slot), "raft", base64.RawURLEncoding.EncodeToString(id[:])+"-"+fmt.Sprint(p)) + "/"
	}
	logDir := func(slot int, p int32) string { return c.Broker(slot).PartitionDir(topic, p) + "/" }
	leaders := make([]int, partitions)
	for p := range int32(partitions) {
		leaders[p] = c.WaitLeader(topic, p)
	}
	follower := func(p int32) int { return (leaders[p] + 1) % c.Size() }
	enospc, eio := syscall.ENOSPC, syscall.EIO
	faults := []*diskFault{
		{name: "ENOSPC on the leader's WAL writes", p: 0, slot: leaders[0], op: vfs.OpWrite, prefix: raftDir(leaders[0], 0), err: enospc},
		{name: "EIO on the leader's partition fsyncs", p: 1, slot: leaders[1], op: vfs.OpSync, prefix: logDir(leaders[1], 1), err: eio},
		{name: "ENOSPC on a follower's partition writes", p: 2, slot: follower(2), op: vfs.OpWrite, prefix: logDir(follower(2), 2), err: enospc},
		{name: "EIO on a follower's WAL fsyncs", p: 3, slot: follower(3), op: vfs.OpSync, prefix: raftDir(follower(3), 3), err: eio},
	}
	bySlot := map[int][]*diskFault{}
	for _, f := range faults {
		f.failed = map[string]bool{}
		bySlot[f.slot] = append(bySlot[f.slot], f)
		t.Logf("partition %d: %s, broker slot %d (%s)", f.p, f.name, f.slot, f.prefix)
	}
	for slot, fs := range bySlot {
		c.FS(slot).(*vfs.Mem).SetFault(func(op vfs.Op, name string) error {
			for _, f := range fs {
				if err := f.check(op, name); err != nil {
					return err
				}
			}
			return nil
		})
	}
	produce("b", 100, 400)

	stopped := map[*diskFault]time.Time{}
	eventually(t, 30*time.Second, "every faulty replica to stop", func() bool {
		for _, f := range faults {
			if _, ok := stopped[f]; ok {
				continue
			}
			if f.firstFailure().IsZero() {
				return false
			}
			if storageError(t, c, f.slot, topic, f.p) {
				stopped[f] = time.Now()
			}
		}
		return len(stopped) == len(faults)
	})
	produce("c", 500, 100)
	for _, f := range faults {
		f.mu.Lock()
		t.Logf("partition %d, %s: failed %d files, %d repeats of the failed operation, %d other operations on the replica's files after",
			f.p, f.name, len(f.failed), f.retries, f.after)
		if f.retries != 0 {
			t.Errorf("partition %d, %s: the replica repeated the failed operation %d times", f.p, f.name, f.retries)
		}
		f.mu.Unlock()
		if n := acksAt.since(c.ID(f.slot), f.p, stopped[f]); n != 0 {
			t.Errorf("partition %d, %s: the stopped replica's broker acknowledged %d batches after it reported KAFKA_STORAGE_ERROR", f.p, f.name, n)
		}
		if l := c.WaitLeader(topic, f.p); l == f.slot {
			t.Errorf("partition %d, %s: the failed replica still leads", f.p, f.name)
		}
		if off := offlineReplicas(t, c, f.slot, topic, f.p); !slices.Contains(off, c.ID(f.slot)) {
			t.Errorf("partition %d, %s: the failed replica's broker reports offline replicas %v in Metadata", f.p, f.name, off)
		}
		if logged(ring, "replica stopped after a storage failure", fmt.Sprintf("node_id=%d", c.ID(f.slot)), fmt.Sprintf("partition=%d", f.p)) == 0 {
			t.Errorf("partition %d, %s: the broker never logged the failure", f.p, f.name)
		}
	}
	for i := range c.Size() {
		checkExactlyOnce(t, c, c.BrokerAddr(i), topic, acks)
	}

	// The disks are replaced: restarted, the replicas catch up.
	for slot := range bySlot {
		c.FS(slot).(*vfs.Mem).SetFault(nil)
		c.Restart(slot)
	}
	for p := range int32(partitions) {
		c.WaitLeader(topic, p)
	}
	produce("d", 600, 50)
	checkExactlyOnce(t, c, c.Addr(), topic, acks)
	all := replicaDirs(c, topic, partitions)
	ends := checkReplicasIdentical(t, c, topic, partitions)
	for p, n := range acksPerPartition(acks) {
		if ends[p] != n {
			t.Errorf("partition %d: replicas end at %d, %d records were acknowledged", p, ends[p], n)
		}
	}
	requireReplicasValid(t, c, topic, all)
}

// storageError reports whether broker slot i answers KAFKA_STORAGE_ERROR
// for a partition (ListOffsets straight to it: the replica stopped).
func storageError(t testing.TB, c *Cluster, i int, topic string, p int32) bool {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	req.Version = 4
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition = p
	rp.Timestamp = -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.BrokerAddr(i), req).(*kmsg.ListOffsetsResponse)
	return resp.Topics[0].Partitions[0].ErrorCode == kerr.KafkaStorageError.Code
}

// replicaDirs are the partition directories of every broker slot, by
// partition (taken while the brokers run).
func replicaDirs(c *Cluster, topic string, partitions int32) [][]string {
	dirs := make([][]string, partitions)
	for p := range partitions {
		for i := range c.Size() {
			dirs[p] = append(dirs[p], c.Broker(i).PartitionDir(topic, p))
		}
	}
	return dirs
}

// requireReplicasValid reads every replica's segment files offline with the
// history checker, which, unlike the broker's recovery, hides nothing: every
// batch's CRC must be valid, the offsets must chain, and the replicas
// agree (check "r"). The brokers must be stopped.
func requireReplicasValid(t *testing.T, c *Cluster, topic string, dirs [][]string) {
	t.Helper()
	h := checker.New()
	for p := range dirs {
		var reps []checker.Replica
		for i := range c.Size() {
			reps = append(reps, checker.Replica{Name: fmt.Sprintf("broker-%d", c.ID(i)), FS: c.FS(i), Dir: dirs[p][i]})
		}
		h.ReadReplicas(topic, int32(p), reps)
	}
	// Only "r": this history has no writes, so the other checks would
	// take every record for one nobody wrote.
	r := h.Check().Get("r")
	if r == nil || r.Examined == 0 {
		t.Fatalf("the replica check examined nothing: %+v", r)
	}
	for _, v := range r.Violations {
		t.Errorf("replica check: %s", v)
	}
	t.Logf("replica check: %d batches compared offline, %d violations", r.Examined, len(r.Violations))
}

// offlineReplicas is what broker slot i's Metadata says about a
// partition's offline replicas.
func offlineReplicas(t testing.TB, c *Cluster, i int, topic string, p int32) []int32 {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 9
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.BrokerAddr(i), req).(*kmsg.MetadataResponse)
	for _, tp := range resp.Topics {
		for _, mp := range tp.Partitions {
			if mp.Partition == p {
				return mp.OfflineReplicas
			}
		}
	}
	t.Fatalf("broker slot %d: no metadata for %s-%d", i, topic, p)
	return nil
}
