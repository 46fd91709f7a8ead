package records

import (
	"bytes"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
)

func recs(n int) []kmsg.Record {
	out := make([]kmsg.Record, n)
	for i := range out {
		out[i] = kmsg.Record{OffsetDelta: int32(i), Key: []byte{'k', byte('0' + i)}, Value: []byte("value")}
	}
	return out
}

// A well-formed record's fields, for hand-built variants:
// attributes, timestampDelta, offsetDelta.
func head(off int64) []byte { return cat([]byte{0}, vi(0), vi(off)) }

// TestCheckRefuses runs each broken records section through every codec:
// the walker is shared, so the answer must not depend on the codec.
func TestCheckRefuses(t *testing.T) {
	two := encodeRecords(recs(2))
	cases := []struct {
		name    string
		n       int32 // numRecords in the header
		maxTs   int64 // relative to baseTs
		section []byte
		want    error
	}{
		{"offset deltas 0,2", 2, 0, encodeRecords([]kmsg.Record{{OffsetDelta: 0}, {OffsetDelta: 2}}), partition.ErrInvalidRecord},
		{"offset deltas start at 1", 2, 0, encodeRecords([]kmsg.Record{{OffsetDelta: 1}, {OffsetDelta: 2}}), partition.ErrInvalidRecord},
		{"offset deltas repeat", 2, 0, encodeRecords([]kmsg.Record{{OffsetDelta: 0}, {OffsetDelta: 0}}), partition.ErrInvalidRecord},
		{"count larger than records", 3, 0, two, partition.ErrInvalidRecord},
		{"count smaller than records", 1, 0, two, partition.ErrInvalidRecord},
		{"trailing byte", 2, 0, cat(two, []byte{0}), partition.ErrInvalidRecord},
		{"empty section", 1, 0, nil, partition.ErrInvalidRecord},
		{"length one too long", 2, 0, cat(withLength(7, head(0), vi(-1), vi(-1), vi(0)), rawRecord(head(1), vi(-1), vi(-1), vi(0))), partition.ErrInvalidRecord},
		{"length one too short", 1, 0, withLength(7, head(0), vi(2), []byte("ab"), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"length below a record", 1, 0, withLength(5, head(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"length past the end", 1, 0, withLength(100, head(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"length negative", 1, 0, withLength(-1, head(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"length huge", 1, 0, withLength(1<<31-1, head(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"key length -2", 1, 0, rawRecord(head(0), vi(-2), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"key past the record", 1, 0, rawRecord(head(0), vi(50), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"value length -7", 1, 0, rawRecord(head(0), vi(-1), vi(-7), vi(0)), partition.ErrInvalidRecord},
		{"header count -1", 1, 0, rawRecord(head(0), vi(-1), vi(-1), vi(-1)), partition.ErrInvalidRecord},
		{"header count too large", 1, 0, rawRecord(head(0), vi(-1), vi(-1), vi(1000), vi(0), vi(0)), partition.ErrInvalidRecord},
		{"header count beyond headers", 1, 0, rawRecord(head(0), vi(-1), vi(-1), vi(2), vi(0), vi(0)), partition.ErrInvalidRecord},
		{"null header key", 1, 0, rawRecord(head(0), vi(-1), vi(-1), vi(1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"header value length -2", 1, 0, rawRecord(head(0), vi(-1), vi(-1), vi(1), vi(1), []byte("h"), vi(-2)), partition.ErrInvalidRecord},
		{"header value past the record", 1, 0, rawRecord(head(0), vi(-1), vi(-1), vi(1), vi(1), []byte("h"), vi(9)), partition.ErrInvalidRecord},
		{"truncated varint", 1, 0, []byte{0x80}, partition.ErrInvalidRecord},
		{"truncated inside a record", 1, 0, withLength(7, head(0), vi(-1), []byte{0x80}), partition.ErrInvalidRecord},
		{"varint32 of 6 bytes", 1, 0, []byte{0x8c, 0x80, 0x80, 0x80, 0x80, 0x00}, partition.ErrInvalidRecord},
		{"varint32 over 32 bits", 1, 0, []byte{0x8c, 0x80, 0x80, 0x80, 0x1f}, partition.ErrInvalidRecord},
		{"varlong of 11 bytes", 1, 0, rawRecord([]byte{0}, bytes.Repeat([]byte{0x80}, 10), []byte{0}, vi(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"record too short", 1, 0, withLength(2, []byte{0, 0}), partition.ErrInvalidRecord},
		{"timestamp after max", 1, 0, rawRecord([]byte{0}, vi(1), vi(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"max after every timestamp", 1, 5, rawRecord(head(0), vi(-1), vi(-1), vi(0)), partition.ErrInvalidRecord},
		{"timestamp below -1", 1, -baseTs - 2, rawRecord([]byte{0}, vi(-baseTs-2), vi(0), vi(-1), vi(-1), vi(0)), ErrInvalidTimestamp},
		{"timestamp overflows", 1, 0, rawRecord([]byte{0}, vi(1<<63-1), vi(0), vi(-1), vi(-1), vi(0)), ErrInvalidTimestamp},
	}
	for _, tc := range cases {
		for _, c := range codecs {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				batch := makeBatch(int16(c.id), 0, baseTs, baseTs+tc.maxTs, tc.n, c.compress(t, tc.section))
				h := validated(t, batch)
				err := Check(batch, &h, Limits{})
				if !errors.Is(err, tc.want) {
					t.Fatalf("Check = %v, want %v", err, tc.want)
				}
				if tc.want == partition.ErrInvalidRecord && errors.Is(err, ErrInvalidTimestamp) {
					t.Fatalf("Check = %v, want a layout error", err)
				}
			})
		}
	}
}

// TestCheckRefusesBatches covers what is wrong with the batch rather than
// its records: attributes, codecs, compressed bytes, limits.
func TestCheckRefusesBatches(t *testing.T) {
	raw := encodeRecords(recs(3))
	gz := gzipCompress(t, raw)
	zs := zstdEncodeAll(t, raw, 64<<10)
	lz := codecs[4].compress(t, raw)
	xr := codecs[3].compress(t, raw)
	cases := []struct {
		name    string
		attrs   int16
		section []byte
		lim     Limits
		want    error
	}{
		{"control batch", 0x20, raw, Limits{}, partition.ErrInvalidRecord},
		{"transactional batch", 0x10, raw, Limits{}, partition.ErrInvalidRecord},
		{"log append time from a producer", 0x08, raw, Limits{}, ErrInvalidTimestamp},
		{"codec 5", 5, raw, Limits{}, ErrUnsupportedCompression},
		{"codec 6", 6, raw, Limits{}, ErrUnsupportedCompression},
		{"codec 7", 7, raw, Limits{}, ErrUnsupportedCompression},
		{"gzip garbage", codecGzip, raw, Limits{}, partition.ErrCorruptBatch},
		{"gzip truncated", codecGzip, gz[:len(gz)-10], Limits{}, partition.ErrCorruptBatch},
		{"gzip bad checksum", codecGzip, flip(gz, len(gz)-6), Limits{}, partition.ErrCorruptBatch},
		{"gzip trailing garbage", codecGzip, cat(gz, []byte("junk")), Limits{}, partition.ErrCorruptBatch},
		{"snappy garbage", codecSnappy, []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2}, Limits{}, partition.ErrCorruptBatch},
		{"snappy claims more than it can hold", codecSnappy, cat(binaryUvarint(1000), []byte{0x00, 'a'}), Limits{}, partition.ErrCorruptBatch},
		{"snappy s2 extension", codecSnappy, s2Repeat, Limits{}, partition.ErrCorruptBatch},
		{"xerial short header", codecSnappy, xr[:10], Limits{}, partition.ErrCorruptBatch},
		{"xerial chunk past the end", codecSnappy, xr[:len(xr)-1], Limits{}, partition.ErrCorruptBatch},
		{"xerial partial chunk length", codecSnappy, cat(xr, []byte{0, 0}), Limits{}, partition.ErrCorruptBatch},
		{"lz4 garbage", codecLz4, raw, Limits{}, partition.ErrCorruptBatch},
		{"lz4 truncated", codecLz4, lz[:len(lz)-5], Limits{}, partition.ErrCorruptBatch},
		{"lz4 legacy frame", codecLz4, cat([]byte{0x02, 0x21, 0x4c, 0x18}, lz[4:]), Limits{}, partition.ErrCorruptBatch},
		{"zstd garbage", codecZstd, raw, Limits{}, partition.ErrCorruptBatch},
		{"zstd truncated", codecZstd, zs[:len(zs)-3], Limits{}, partition.ErrCorruptBatch},
		{"zstd window over 8 MiB", codecZstd, zstdStream(t, raw, 16<<20), Limits{}, partition.ErrMessageTooLarge},
		{"records over MaxRecords", 0, raw, Limits{MaxRecords: 2}, partition.ErrMessageTooLarge},
		{"section over the limit", 0, raw, Limits{MaxDecompressedBytes: int64(len(raw)) - 1}, partition.ErrMessageTooLarge},
		{"gzip over the limit", codecGzip, gz, Limits{MaxDecompressedBytes: int64(len(raw)) - 1}, partition.ErrMessageTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batch := makeBatch(tc.attrs, 0, baseTs, baseTs, 3, tc.section)
			h := validated(t, batch)
			if err := Check(batch, &h, tc.lim); !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
		})
	}
	// At the limit exactly is within it.
	batch := makeBatch(codecGzip, 0, baseTs, baseTs, 3, gz)
	h := validated(t, batch)
	if err := Check(batch, &h, Limits{MaxDecompressedBytes: int64(len(raw))}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
}

// s2Repeat is valid s2 but not snappy: 'a', a copy of offset 1, then a
// copy with offset 0, s2's "repeat the last offset".
var s2Repeat = []byte{0x09, 0x00, 'a', 0x01, 0x01, 0x01, 0x00}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0xff
	return b
}

func binaryUvarint(v uint64) []byte {
	var out []byte
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}

// TestZstdLargeStream checks that the 8 MiB window cap is not a cap on
// output: a stream far longer than its window decodes in full.
func TestZstdLargeStream(t *testing.T) {
	value := bytes.Repeat([]byte("a fairly compressible value "), 1<<10)
	rs := make([]kmsg.Record, 700) // ~20 MiB
	for i := range rs {
		rs[i] = kmsg.Record{OffsetDelta: int32(i), Value: value}
	}
	raw := encodeRecords(rs)
	for _, window := range []int{64 << 10, 8 << 20} {
		batch := makeBatch(codecZstd, 0, baseTs, baseTs, int32(len(rs)), zstdStream(t, raw, window))
		h := validated(t, batch)
		if err := Check(batch, &h, Limits{}); err != nil {
			t.Fatalf("window %d: %v", window, err)
		}
	}
}
