package integration

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestDefaultProducerRoundTrip writes 100k keyed records with headers with
// franz-go's default producer (idempotent, snappy, murmur2), reads them back
// twice and after a restart, and compares every field record by record.
func TestDefaultProducerRoundTrip(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "orders", 6, nil)
	cl := c.Client(t, kgo.DefaultProduceTopic("orders"))

	type sent struct {
		key, value string
		header     string
		partition  int32
		offset     int64
		ts         time.Time
	}
	results := make([]sent, n)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	ctx := testContext(t, 5*time.Minute)
	for i := range n {
		k := "user-" + strconv.Itoa(i%997)
		v := fmt.Sprintf("order-%06d-%s", i, bytes.Repeat([]byte{'x'}, i%50))
		rec := &kgo.Record{Key: []byte(k), Value: []byte(v), Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}}
		wg.Add(1)
		cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			results[i] = sent{key: k, value: v, header: strconv.Itoa(i), partition: r.Partition, offset: r.Offset, ts: r.Timestamp}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("produce: %v", firstErr)
	}
	byPos := map[string]sent{}
	keyPartition := map[string]int32{}
	for _, s := range results {
		pos := fmt.Sprintf("%d/%d", s.partition, s.offset)
		if _, dup := byPos[pos]; dup {
			t.Fatalf("two records acknowledged at %s", pos)
		}
		byPos[pos] = s
		if p, ok := keyPartition[s.key]; ok && p != s.partition {
			t.Fatalf("key %s went to partitions %d and %d", s.key, p, s.partition)
		}
		keyPartition[s.key] = s.partition
	}
	check := func(label string) {
		t.Helper()
		recs := consumeAll(t, c, "orders")
		if len(recs) != n {
			t.Fatalf("%s: consumed %d records, want %d", label, len(recs), n)
		}
		for _, r := range recs {
			s, ok := byPos[key(r)]
			if !ok {
				t.Fatalf("%s: record at %s was never acknowledged there", label, key(r))
			}
			if string(r.Key) != s.key || string(r.Value) != s.value || len(r.Headers) != 1 ||
				r.Headers[0].Key != "seq" || string(r.Headers[0].Value) != s.header ||
				!r.Timestamp.Equal(s.ts) {
				t.Fatalf("%s: record at %s = key %q value %q headers %v ts %v, want key %q value %q seq %s ts %v",
					label, key(r), r.Key, r.Value, r.Headers, r.Timestamp, s.key, s.value, s.header, s.ts)
			}
		}
	}
	check("first read")
	check("second read")
	c.Restart(0)
	check("after restart")
}

func TestListOffsetsByTimeAndDeleteRecords(t *testing.T) {
	c := NewCluster(t)
	adm := c.Admin(t)
	createTopic(t, adm, "times", 1, nil)
	cl := c.Client(t, kgo.DefaultProduceTopic("times"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx := testContext(t, 30*time.Second)
	base := time.UnixMilli(1_700_000_000_000)
	for i := range 20 {
		r := &kgo.Record{Value: []byte(strconv.Itoa(i)), Timestamp: base.Add(time.Duration(i) * time.Second)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		at     time.Time
		want   int64
		wantTs time.Time
	}{
		{base, 0, base},
		{base.Add(7500 * time.Millisecond), 8, base.Add(8 * time.Second)},
		{base.Add(19 * time.Second), 19, base.Add(19 * time.Second)},
		// Past every record the broker answers -1, which kadm turns into
		// the end offset.
		{base.Add(time.Hour), 20, time.Time{}},
	} {
		got, err := adm.ListOffsetsAfterMilli(ctx, c.at.UnixMilli(), "times")
		if err != nil {
			t.Fatal(err)
		}
		o, _ := got.Lookup("times", 0)
		if o.Err != nil || o.Offset != c.want {
			t.Fatalf("offset after %v: %d (%v), want %d", c.at, o.Offset, o.Err, c.want)
		}
		if !c.wantTs.IsZero() && o.Timestamp != c.wantTs.UnixMilli() {
			t.Fatalf("timestamp for %v: %d, want %d", c.at, o.Timestamp, c.wantTs.UnixMilli())
		}
	}
	// DeleteRecords moves the start: earliest becomes 12 and a read at 11 is
	// out of range.
	to := make(kadm.Offsets)
	to.Add(kadm.Offset{Topic: "times", Partition: 0, At: 12})
	resp, err := adm.DeleteRecords(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := resp.Lookup("times", 0); r.Err != nil || r.LowWatermark != 12 {
		t.Fatalf("delete records: %+v", r)
	}
	starts, err := adm.ListStartOffsets(ctx, "times")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := starts.Lookup("times", 0); o.Offset != 12 {
		t.Fatalf("start offset %d after deleting to 12", o.Offset)
	}
	got := consumeFrom(t, c, "times", 0, 11)
	if got.err == nil || !errors.Is(got.err, kerr.OffsetOutOfRange) {
		t.Fatalf("fetch below the start: %v", got.err)
	}
}

type fetchResult struct {
	batches []byte
	err     error
}

// consumeFrom issues one raw Fetch for a partition.
func consumeFrom(t testing.TB, c *Cluster, topic string, partition int32, offset int64) fetchResult {
	t.Helper()
	cl := c.Client(t)
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MaxBytes = 100, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, topicID(t, c, topic)
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LastFetchedEpoch = partition, offset, 1<<20, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testContext(t, 10*time.Second), cl)
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	return fetchResult{batches: p.RecordBatches, err: kerr.ErrorForCode(p.ErrorCode)}
}

func TestLargeValueAndMessageTooLarge(t *testing.T) {
	c := NewCluster(t)
	limit := "1100000"
	createTopic(t, c.Admin(t), "big", 1, map[string]*string{"max.message.bytes": &limit})
	cl := c.Client(t, kgo.DefaultProduceTopic("big"), kgo.ProducerBatchMaxBytes(4<<20), kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx := testContext(t, 30*time.Second)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	r, err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("big"), Value: big}).First()
	if err != nil {
		t.Fatalf("1 MiB value: %v", err)
	}
	tooBig := bytes.Repeat([]byte{'z'}, 1200_000)
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: tooBig}).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("value above max.message.bytes: %v, want MESSAGE_TOO_LARGE", err)
	}
	// The connection keeps working.
	small, err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("after")}).First()
	if err != nil || small.Offset != r.Offset+1 {
		t.Fatalf("produce after the refusal: %v at %d", err, small.Offset)
	}
	recs := consumeAll(t, c, "big")
	sort.Slice(recs, func(i, j int) bool { return recs[i].Offset < recs[j].Offset })
	if len(recs) != 2 || !bytes.Equal(recs[0].Value, big) || string(recs[1].Value) != "after" {
		t.Fatalf("read back %d records", len(recs))
	}
}

func TestIdempotentResendWritesNothing(t *testing.T) {
	c := NewCluster(t)
	id := createTopic(t, c.Admin(t), "idem", 1, nil).ID
	cl := c.Client(t)
	ctx := testContext(t, 30*time.Second)
	initReq := kmsg.NewPtrInitProducerIDRequest()
	initResp, err := initReq.RequestWith(ctx, cl)
	if err != nil || initResp.ErrorCode != 0 {
		t.Fatalf("init producer id: %v %d", err, initResp.ErrorCode)
	}
	produce := func(seq int32, value string) kmsg.ProduceResponseTopicPartition {
		t.Helper()
		batch := rawBatch(initResp.ProducerID, initResp.ProducerEpoch, seq, value)
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = "idem", id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = batch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].Partitions[0]
	}
	first := produce(0, "a")
	second := produce(1, "b")
	again := produce(0, "a")
	if first.ErrorCode != 0 || second.ErrorCode != 0 || again.ErrorCode != 0 {
		t.Fatalf("errors %d %d %d", first.ErrorCode, second.ErrorCode, again.ErrorCode)
	}
	if first.BaseOffset != 0 || second.BaseOffset != 1 || again.BaseOffset != 0 {
		t.Fatalf("offsets %d %d %d, want 0 1 0", first.BaseOffset, second.BaseOffset, again.BaseOffset)
	}
	gap := produce(5, "gap")
	if gap.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("sequence gap: code %d", gap.ErrorCode)
	}
	recs := consumeAll(t, c, "idem")
	if len(recs) != 2 || string(recs[0].Value) != "a" || string(recs[1].Value) != "b" {
		t.Fatalf("log holds %d records", len(recs))
	}
}

// rawBatch encodes a one-record idempotent v2 batch with kmsg.
func rawBatch(pid int64, epoch int16, seq int32, value string) []byte {
	rec := kmsg.NewRecord()
	rec.Value = []byte(value)
	rec.Key = []byte("k")
	rec.Length = int32(len(rec.AppendTo(nil)) - 1) // the body after a 1-byte zero length
	recBytes := rec.AppendTo(nil)
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = pid, epoch, seq
	b.FirstTimestamp, b.MaxTimestamp = time.Now().UnixMilli(), time.Now().UnixMilli()
	b.NumRecords = 1
	b.Records = recBytes
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	b.CRC = int32(crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b.AppendTo(nil)
}
