package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// The benchmarks run on the real filesystem (vfs.OS in b.TempDir()), so
// they measure the disk and page cache under the temp dir as much as the
// code. Compare runs with benchstat; see BENCHMARKS.md for the commands and
// the dd figures they are judged against.

// benchSizes names the batch sizes the benchmarks use.
var benchSizes = map[string]int{"1KiB": 1 << 10, "16KiB": 16 << 10, "1MiB": 1 << 20}

// benchBatch is a non-idempotent, uncompressed one-record batch of exactly
// n bytes with a valid CRC.
func benchBatch(b testing.TB, n int) []byte {
	b.Helper()
	batch := sizedBatch("bench", n)
	batch = sizedBatch("bench", 2*n-len(batch)) // sizedBatch is approximate; the varint widths do not change by this much
	h, err := ValidateBatch(batch, 0)
	switch {
	case err != nil:
		b.Fatal(err)
	case len(batch) != n:
		b.Fatalf("bench batch is %d bytes, want %d", len(batch), n)
	case h.Idempotent():
		b.Fatal("bench batch is idempotent")
	}
	return batch
}

// openBench opens a log on the real filesystem and closes it when the
// benchmark ends (outside the timed loop).
func openBench(b testing.TB, dir string, cfg Config) *Log {
	b.Helper()
	l, err := Open(Options{Dir: dir, FS: vfs.OS{}, Config: cfg})
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

// benchNextOffset is the offset after the last batch in data, as Read
// returns it: the offset a sequential consumer asks for next.
func benchNextOffset(data []byte) int64 {
	var next int64
	for len(data) >= BatchHeaderSize {
		size := int(int32(binary.BigEndian.Uint32(data[offBatchLength:]))) + logOverhead
		base := int64(binary.BigEndian.Uint64(data[offBaseOffset:]))
		next = base + int64(int32(binary.BigEndian.Uint32(data[offLastOffsetDelta:]))) + 1
		data = data[min(size, len(data)):]
	}
	return next
}

// BenchmarkAppend appends one pre-built batch over and over (Append
// rewrites its base offset and leader epoch in place each time) to a log
// with the default 1 GiB segments; fsync=true calls Sync after every
// Append. A long run rolls segments, and the roll's fsync of the full
// segment is part of the measurement, as it is in production.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []string{"1KiB", "16KiB", "1MiB"} {
		for _, fsync := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%s/fsync=%t", size, fsync), func(b *testing.B) {
				cfg := DefaultConfig()
				l := openBench(b, b.TempDir(), cfg)
				batch := benchBatch(b, benchSizes[size])
				b.ReportAllocs()
				b.SetBytes(int64(len(batch)))
				var n int64
				for b.Loop() {
					if _, err := l.Append(batch, 1); err != nil {
						b.Fatal(err)
					}
					if fsync {
						if err := l.Sync(); err != nil {
							b.Fatal(err)
						}
					}
					n++
				}
				// Every batch landed, and the segments rolled where they
				// should: whole batches up to SegmentBytes each.
				perSegment := cfg.SegmentBytes / int64(len(batch))
				if got := l.LogEndOffset(); got != n {
					b.Fatalf("log end %d after %d appends", got, n)
				}
				if got, want := int64(len(l.Segments())), (n+perSegment-1)/perSegment; got != want {
					b.Fatalf("%d segments after %d appends of %d bytes, want %d", got, n, len(batch), want)
				}
			})
		}
	}
}

// BenchmarkAppendBatches appends groups of small batches with one call, as
// applying a Raft entry that aggregates produce requests does: one write
// per group instead of one per batch.
func BenchmarkAppendBatches(b *testing.B) {
	for _, g := range []struct {
		size  string
		count int
	}{{"1KiB", 64}, {"1KiB", 256}, {"16KiB", 16}} {
		b.Run(fmt.Sprintf("size=%s/batches=%d/fsync=false", g.size, g.count), func(b *testing.B) {
			l := openBench(b, b.TempDir(), DefaultConfig())
			batch := benchBatch(b, benchSizes[g.size])
			group := make([][]byte, g.count)
			for i := range group {
				group[i] = append([]byte(nil), batch...)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(batch) * g.count))
			var n int64
			for b.Loop() {
				_, errs, err := l.AppendBatches(group, 1, 0)
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range errs {
					if e != nil {
						b.Fatal(e)
					}
				}
				n += int64(g.count)
			}
			if got := l.LogEndOffset(); got != n {
				b.Fatalf("log end %d after %d batches", got, n)
			}
		})
	}
}

// BenchmarkRead reads a ~256 MiB log, fsynced and in the page cache,
// sequentially from offset 0 to the end in reads of at most 1 MiB, and
// wraps around. The bytes per op are the average a read returns over one
// full pass.
func BenchmarkRead(b *testing.B) {
	const logBytes = 256 << 20
	for _, size := range []string{"1KiB", "16KiB"} {
		b.Run(fmt.Sprintf("size=%s/max=1MiB", size), func(b *testing.B) {
			l := openBench(b, b.TempDir(), DefaultConfig())
			batch := benchBatch(b, benchSizes[size])
			for range logBytes / len(batch) {
				if _, err := l.Append(batch, 1); err != nil {
					b.Fatal(err)
				}
			}
			// Writeback must not compete with the reads.
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
			end := l.LogEndOffset()
			read := func(off int64) int64 {
				data, err := l.Read(off, 1<<20, end)
				if err != nil {
					b.Fatalf("read at %d: %v", off, err)
				}
				if len(data) == 0 {
					b.Fatalf("read at %d returned nothing before the end %d", off, end)
				}
				return benchNextOffset(data)
			}
			// One untimed pass: checks the walk reaches the end and
			// measures the bytes a read returns.
			var reads int64
			for off := int64(0); off < end; reads++ {
				off = read(off)
			}
			b.ReportAllocs()
			b.SetBytes(l.Size() / reads)
			off := int64(0)
			for b.Loop() {
				if off = read(off); off >= end {
					off = 0
				}
			}
		})
	}
}

// BenchmarkRecover times Open of a 1 GiB log of 1 MiB batches, with the
// default 1 GiB segments and with 128 MiB ones. checkpoint=intact opens
// after Checkpoint and Close, so nothing is validated and the indexes are
// read from their files; checkpoint=deleted removes the checkpoint before
// each Open, so every batch is CRC-checked and every index rebuilt. The log
// is in the page cache either way. Close is not timed.
func BenchmarkRecover(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1 GiB log")
	}
	const (
		logBytes   = 1 << 30
		batchBytes = 1 << 20
		batches    = logBytes / batchBytes
	)
	for _, seg := range []struct {
		name  string
		bytes int64
	}{{"1GiB", 1 << 30}, {"128MiB", 128 << 20}} {
		b.Run("segment="+seg.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.SegmentBytes = seg.bytes
			// The log is built on first use, so only when -bench selects
			// a sub-benchmark below, and removed with this level's
			// TempDir when both are done.
			dir := b.TempDir()
			batch := benchBatch(b, batchBytes)
			build := sync.OnceValues(func() (string, error) {
				l, err := Open(Options{Dir: dir, FS: vfs.OS{}, Config: cfg})
				if err != nil {
					return "", err
				}
				for range batches {
					if _, err := l.Append(batch, 1); err != nil {
						_ = l.Close()
						return "", err
					}
				}
				if err := l.Checkpoint(0); err != nil {
					_ = l.Close()
					return "", err
				}
				return dir, l.Close()
			})
			open := func(b *testing.B, dir string) *Log {
				l, err := Open(Options{Dir: dir, FS: vfs.OS{}, Config: cfg})
				if err != nil {
					b.Fatalf("open: %v", err)
				}
				return l
			}
			check := func(b *testing.B, l *Log) {
				if got := l.LogEndOffset(); got != batches {
					b.Fatalf("log end %d after recovery, want %d", got, batches)
				}
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			}

			b.Run("checkpoint=intact", func(b *testing.B) {
				dir, err := build()
				if err != nil {
					b.Fatal(err)
				}
				// checkpoint=deleted may have run before: write one again.
				l := open(b, dir)
				if err := l.Checkpoint(0); err != nil {
					b.Fatal(err)
				}
				check(b, l)
				b.ReportAllocs()
				b.SetBytes(logBytes)
				for b.Loop() {
					l := open(b, dir)
					b.StopTimer()
					check(b, l)
					b.StartTimer()
				}
			})

			b.Run("checkpoint=deleted", func(b *testing.B) {
				dir, err := build()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.SetBytes(logBytes)
				for b.Loop() {
					b.StopTimer()
					if err := os.Remove(filepath.Join(dir, checkpointName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
						b.Fatal(err)
					}
					b.StartTimer()
					l := open(b, dir)
					b.StopTimer()
					check(b, l)
					b.StartTimer()
				}
			})
		})
	}
}
