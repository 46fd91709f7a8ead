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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
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
	ends := checkReplicasIdentical(t, c, topic, partitions)
	for p, n := range acksPerPartition(acks) {
		if ends[p] != n {
			t.Errorf("partition %d: replicas end at %d, %d records were acknowledged", p, ends[p], n)
		}
	}
}
