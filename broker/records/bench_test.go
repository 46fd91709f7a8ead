package records

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// benchSection is a 16 KiB records section of ~100-byte records with
// JSON-like values, so the codecs compress something realistic.
func benchSection() ([]byte, int32) {
	rng := rand.New(rand.NewPCG(1, 2))
	var rs []kmsg.Record
	for size := 0; size < 16<<10; {
		i := len(rs)
		v := fmt.Sprintf(`{"id":%d,"user":"u%04d","event":"click","v":%d}`, i, rng.IntN(10000), rng.Uint32())
		r := kmsg.Record{OffsetDelta: int32(i), TimestampDelta64: int64(i), Key: fmt.Appendf(nil, "key-%06d", i), Value: fmt.Appendf(nil, "%-84s", v)}
		rs = append(rs, r)
		size += len(encodeRecords(rs[i:]))
	}
	return encodeRecords(rs), int32(len(rs))
}

// BenchmarkCheck reports throughput in uncompressed records bytes, so the
// codecs compare directly.
func BenchmarkCheck(b *testing.B) {
	raw, n := benchSection()
	for _, c := range codecs {
		if c.name == "lz4-64k" {
			continue
		}
		batch := makeBatch(int16(c.id), 0, baseTs, baseTs+int64(n)-1, n, c.compress(b, raw))
		h := validated(b, batch)
		b.Run(fmt.Sprintf("codec=%s/size=16KiB/records=%d", c.name, n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := Check(batch, &h, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFindTimestamp(b *testing.B) {
	raw, n := benchSection()
	for _, c := range []codec{codecs[0], codecs[2]} {
		batch := makeBatch(int16(c.id), 0, baseTs, baseTs+int64(n)-1, n, c.compress(b, raw))
		b.Run(fmt.Sprintf("codec=%s/size=16KiB/target=last", c.name), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, _, err := FindTimestamp(batch, baseTs+int64(n)-1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRecords(b *testing.B) {
	raw, n := benchSection()
	for _, c := range []codec{codecs[0], codecs[2]} {
		batch := makeBatch(int16(c.id), 0, baseTs, baseTs+int64(n)-1, n, c.compress(b, raw))
		b.Run(fmt.Sprintf("codec=%s/size=16KiB", c.name), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := Records(batch, Limits{}, func(Record) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
