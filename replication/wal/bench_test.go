package wal

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Benchmarks on the real filesystem (b.TempDir()). StoreLogs writes batches
// of 16 KiB entries, as raft does with aggregated produce batches, with the
// default fdatasync per call and with NoSync (write caching); MB/s counts
// entry data. The log is compacted as raft would (a prefix DeleteRange) so
// a long run stays within ~256 MiB of disk; that cost is included.
//
//	go test -run XXX -bench . -benchtime 2s ./replication/wal/

const benchEntry = 16 << 10

func BenchmarkStoreLogs(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		for _, batch := range []int{1, 16, 64} {
			name := fmt.Sprintf("fsync=%v/size=16KiB/batch=%d", !noSync, batch)
			b.Run(name, func(b *testing.B) {
				l := mustOpen(b, Options{Dir: b.TempDir(), NoSync: noSync})
				defer l.Close()
				data := make([]byte, benchEntry)
				for i := range data {
					data[i] = byte(i * 7)
				}
				logs := make([]*raft.Log, batch)
				for i := range logs {
					logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
				}
				const keep = 256 << 20 / benchEntry // entries
				next := uint64(1)
				b.SetBytes(int64(batch * benchEntry))
				b.ReportAllocs()
				for b.Loop() {
					for i, e := range logs {
						e.Index = next + uint64(i)
					}
					if err := l.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
					next += uint64(batch)
					if first, _ := l.FirstIndex(); next-first > keep {
						if err := l.DeleteRange(first, next-keep/2); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkGetLog reads random 16 KiB entries (from the page cache).
func BenchmarkGetLog(b *testing.B) {
	l := mustOpen(b, Options{Dir: b.TempDir(), NoSync: true})
	defer l.Close()
	const n = 4096
	data := make([]byte, benchEntry)
	for i := uint64(1); i <= n; i += 64 {
		var logs []*raft.Log
		for j := i; j < i+64; j++ {
			logs = append(logs, &raft.Log{Index: j, Term: 1, Data: data, AppendedAt: time.Now()})
		}
		if err := l.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	rng := newRand(1)
	var e raft.Log
	b.SetBytes(benchEntry)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.GetLog(1+rng.Uint64N(n), &e); err != nil {
			b.Fatal(err)
		}
	}
}
