package records

import (
	"errors"
	"runtime"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
)

// bombSize is what each bomb decompresses to; the limit is a small part of
// it, so a refused bomb shows that decoding stopped at the limit and that
// what was allocated did not follow the claimed or the real size.
const (
	bombSize  = 32 << 20
	bombLimit = 1 << 20
)

// bombCodecs are the worst cases an attacker can pick: the largest lz4
// blocks and the largest zstd window accepted.
// Each comes with what a check of it may allocate: the decoder's fixed
// state, never a share of the bomb.
var bombCodecs = []struct {
	codec
	bound uint64
}{
	{codec{"gzip", codecGzip, gzipCompress}, 256 << 10},
	{codec{"snappy-xerial", codecSnappy, codecs[3].compress}, 256 << 10},
	{codec{"snappy", codecSnappy, codecs[2].compress}, 256 << 10},
	{codec{"lz4-4m", codecLz4, codecs[4].compress}, 9 << 20},
	{codec{"zstd-8m-window", codecZstd, func(tb testing.TB, raw []byte) []byte { return zstdStream(tb, raw, zstdMaxWindow) }}, 9 << 20},
	{codec{"zstd-encodeall", codecZstd, func(tb testing.TB, raw []byte) []byte { return zstdEncodeAll(tb, raw, 8<<20) }}, 9 << 20},
}

// TestCompressionBombs: 32 MiB of zeros in one record (4 KB to 1.6 MB
// compressed) and 8 MiB of 32-byte records, against a 1 MiB limit: each is
// refused with MESSAGE_TOO_LARGE, having allocated no more than its
// decoder's fixed state (an 8 MiB zstd window or 4 MiB lz4 blocks at
// worst, see the package doc), cold or with warm pools.
func TestCompressionBombs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 64 MiB bombs")
	}
	oneValue := encodeRecords([]kmsg.Record{{Value: make([]byte, bombSize)}})
	manyRecords, n := smallRecords(bombSize / 4)
	for _, shape := range []struct {
		name string
		n    int32
		raw  []byte
	}{{"one-value", 1, oneValue}, {"many-records", n, manyRecords}} {
		for _, c := range bombCodecs {
			t.Run(shape.name+"/"+c.name, func(t *testing.T) {
				batch := makeBatch(int16(c.id), 0, baseTs, baseTs, shape.n, c.compress(t, shape.raw))
				h := validated(t, batch)
				lim := Limits{MaxDecompressedBytes: bombLimit, MaxRecords: 1 << 30}
				worst := uint64(0)
				for range 2 { // cold, then with the pools warm
					alloc := allocated(func() {
						if err := Check(batch, &h, lim); !errors.Is(err, partition.ErrMessageTooLarge) {
							t.Fatalf("Check = %v, want ErrMessageTooLarge", err)
						}
					})
					worst = max(worst, alloc)
				}
				t.Logf("compressed %d bytes, allocated at most %d bytes", len(batch), worst)
				if worst > c.bound {
					t.Fatalf("allocated %d bytes, over %d", worst, c.bound)
				}
			})
		}
	}
}

// smallRecords is about size bytes of records with 24-byte values, built
// directly: kmsg is too slow for a million records under the race detector.
func smallRecords(size int) ([]byte, int32) {
	out := make([]byte, 0, size+64)
	var n int32
	for ; len(out) < size; n++ {
		body := cat([]byte{0}, vi(0), vi(int64(n)), vi(-1), vi(24), make([]byte, 24), vi(0))
		out = append(append(out, vi(int64(len(body)))...), body...)
	}
	return out, n
}

// allocated is how many bytes fn allocates on the heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestStreamedCheckAllocatesLittle: checking a valid compressed batch with
// warm pools costs a few small allocations, not the decompressed size.
func TestStreamedCheckAllocatesLittle(t *testing.T) {
	for _, c := range codecs {
		batch := sampleBatch(t, c)
		h := validated(t, batch)
		allocs := testing.AllocsPerRun(20, func() {
			if err := Check(batch, &h, Limits{}); err != nil {
				t.Fatal(err)
			}
		})
		bytes := allocated(func() { _ = Check(batch, &h, Limits{}) })
		t.Logf("%s: %.0f allocations, %d bytes per Check", c.name, allocs, bytes)
		if allocs > 10 {
			t.Errorf("%s: %.0f allocations per Check", c.name, allocs)
		}
	}
}
