package integration

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

// The broker's MaxFetchBytes (fetch.max.bytes) bounds a fetch response
// whatever the client asks, in whole batches from the fetch offset; a
// client asking less gets less; and, as KIP-74 has it, a single batch
// larger than the cap still comes back alone, so a consumer never stalls on
// it.
func TestMaxFetchBytes(t *testing.T) {
	const capBytes = 64 << 10
	c := NewCluster(t, WithConfig(func(cfg *broker.Config) { cfg.MaxFetchBytes = capBytes }))
	createTopic(t, c.Admin(t), "capped", 2, nil)
	cl := c.Client(t, kgo.DefaultProduceTopic("capped"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx := testContext(t, 60*time.Second)
	value := func(p int32, i int, size int) []byte {
		v := bytes.Repeat([]byte{'.'}, size)
		copy(v, fmt.Sprintf("p%d-%d", p, i))
		return v
	}
	const n, size = 40, 4 << 10 // 160 KiB per partition, one batch per record
	for p := range int32(2) {
		for i := range n {
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: p, Value: value(p, i, size)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	big := value(1, n, 100<<10) // one batch over the cap, at offset n of partition 1
	if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: big}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	fetch := func(maxBytes int32, offsets ...int64) *kmsg.FetchResponse {
		req := kmsg.NewPtrFetchRequest()
		req.Version, req.MaxBytes, req.MaxWaitMillis = 12, maxBytes, 0
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "capped"
		for p, off := range offsets {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = int32(p), off, 100<<20
			rp.CurrentLeaderEpoch, rp.LastFetchedEpoch = -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		return rawRequest(t, c.Addr(), req).(*kmsg.FetchResponse)
	}
	// check decodes a partition's batches: one record each, at offsets
	// from..., holding the values produced; it returns how many.
	check := func(sp kmsg.FetchResponseTopicPartition, from int64, size int) int {
		t.Helper()
		if sp.ErrorCode != 0 {
			t.Fatalf("partition %d: error %d", sp.Partition, sp.ErrorCode)
		}
		got, raw := 0, sp.RecordBatches
		for len(raw) > 0 {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(raw); err != nil {
				t.Fatalf("partition %d: batch %d: %v", sp.Partition, got, err)
			}
			raw = raw[12+b.Length:]
			var r kmsg.Record
			if err := r.ReadFrom(b.Records); err != nil {
				t.Fatalf("partition %d: record at %d: %v", sp.Partition, b.FirstOffset, err)
			}
			off := from + int64(got)
			if b.FirstOffset != off || !bytes.Equal(r.Value, value(sp.Partition, int(off), size)) {
				t.Fatalf("partition %d: batch at %d holds %.12q, want offset %d's value", sp.Partition, b.FirstOffset, r.Value, off)
			}
			got++
		}
		return got
	}
	total := func(resp *kmsg.FetchResponse) int {
		n := 0
		for _, sp := range resp.Topics[0].Partitions {
			n += len(sp.RecordBatches)
		}
		return n
	}

	// The client asks for 100 MiB: the broker's cap holds, whole batches.
	resp := fetch(100<<20, 0, 0)
	got0 := check(resp.Topics[0].Partitions[0], 0, size)
	check(resp.Topics[0].Partitions[1], 0, size)
	if sum := total(resp); sum > capBytes || got0 < capBytes/(size+200) {
		t.Fatalf("fetch under a %d-byte cap answered %d bytes, %d batches of partition 0", capBytes, sum, got0)
	}
	// Asking for less gets less.
	resp = fetch(16<<10, 0, 0)
	if sum := total(resp); sum > 16<<10 || check(resp.Topics[0].Partitions[0], 0, size) == 0 {
		t.Fatalf("fetch of 16 KiB answered %d bytes", sum)
	}
	// KIP-74: the batch over the cap comes back alone.
	resp = fetch(100<<20, n, n)
	sp := resp.Topics[0].Partitions[1]
	if len(sp.RecordBatches) <= capBytes || check(sp, n, len(big)) != 1 {
		t.Fatalf("the %d-byte batch came back as %d bytes", len(big), len(sp.RecordBatches))
	}
	t.Logf("cap %d bytes: a 100 MiB fetch got %d batches (%d bytes); a 100 KiB batch came back whole", capBytes, got0, total(fetch(100<<20, 0, 0)))
}
