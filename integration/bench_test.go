package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
)

// The produce and consume benchmarks run the same franz-go workload (12
// partitions, 1 KiB records, the default idempotent producer) against a
// Varve broker on loopback and against franz-go's in-memory fake broker
// (kfake) in the same run, so the two compare as a ratio on one machine.
// Varve writes every acknowledged batch to its segment file before
// answering; kfake keeps everything in memory.

const (
	benchPartitions = 12
	benchRecordSize = 1024
	benchChunk      = 2000 // records per iteration
)

type benchTarget struct {
	name  string
	start func(b *testing.B) string // returns a seed address, topic created
}

func benchTargets() []benchTarget {
	return []benchTarget{
		{"varve", func(b *testing.B) string {
			// The broker's own flush interval, as a user runs it (tests
			// use a shorter one).
			c := NewCluster(b, WithConfig(func(cfg *broker.Config) { cfg.FlushInterval = time.Second }))
			adm := c.Admin(b)
			if _, err := adm.CreateTopic(context.Background(), benchPartitions, 1, nil, "bench"); err != nil {
				b.Fatal(err)
			}
			return c.Addr()
		}},
		{"kfake", func(b *testing.B) string {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(benchPartitions, "bench"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			return c.ListenAddrs()[0]
		}},
	}
}

// produceChunk produces n records and waits for every acknowledgement,
// appending each record's produce-to-ack latency to lat.
func produceChunk(b *testing.B, cl *kgo.Client, value []byte, n int, lat *[]time.Duration) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	wg.Add(n)
	for i := range n {
		start := time.Now()
		r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: value}
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			d := time.Since(start)
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			*lat = append(*lat, d)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkProduce(b *testing.B) {
	value := make([]byte, benchRecordSize)
	for _, tgt := range benchTargets() {
		b.Run("broker="+tgt.name, func(b *testing.B) {
			addr := tgt.start(b)
			cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("bench"))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			var lat []time.Duration
			produceChunk(b, cl, value, 100, &lat) // warm up: metadata, producer id
			lat = lat[:0]
			b.SetBytes(benchChunk * benchRecordSize)
			b.ReportAllocs()
			for b.Loop() {
				produceChunk(b, cl, value, benchChunk, &lat)
			}
			reportLatency(b, lat)
		})
	}
}

func BenchmarkConsume(b *testing.B) {
	const total = 50_000
	value := make([]byte, benchRecordSize)
	for _, tgt := range benchTargets() {
		b.Run("broker="+tgt.name, func(b *testing.B) {
			addr := tgt.start(b)
			cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("bench"))
			if err != nil {
				b.Fatal(err)
			}
			var lat []time.Duration
			produceChunk(b, cl, value, total, &lat)
			cl.Close()
			b.SetBytes(total * benchRecordSize)
			b.ReportAllocs()
			for b.Loop() {
				consumeN(b, addr, total)
			}
		})
	}
}

func consumeN(b *testing.B, addr string, n int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("bench"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			b.Fatalf("consumed %d of %d", got, n)
		}
		fs.EachError(func(t string, p int32, err error) { b.Fatalf("fetch %s/%d: %v", t, p, err) })
		got += fs.NumRecords()
	}
}
