package records

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy/xerial"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
)

// codec is one way a client compresses a records section: franz-go's
// encoders and settings where it has them, the Java client's framing where
// it differs (xerial snappy, 64 KiB lz4 blocks, streamed zstd frames).
type codec struct {
	name     string
	id       int8
	compress func(tb testing.TB, raw []byte) []byte
}

var codecs = []codec{
	{"none", codecNone, func(_ testing.TB, raw []byte) []byte { return raw }},
	{"gzip", codecGzip, gzipCompress},
	{"snappy", codecSnappy, func(_ testing.TB, raw []byte) []byte { return s2.EncodeSnappy(nil, raw) }},
	{"snappy-xerial", codecSnappy, func(_ testing.TB, raw []byte) []byte { return xerial.Encode(nil, raw) }},
	{"lz4", codecLz4, func(tb testing.TB, raw []byte) []byte { return lz4Compress(tb, raw, lz4.Block4Mb) }},
	{"lz4-64k", codecLz4, func(tb testing.TB, raw []byte) []byte { return lz4Compress(tb, raw, lz4.Block64Kb) }},
	{"zstd", codecZstd, func(tb testing.TB, raw []byte) []byte { return zstdEncodeAll(tb, raw, 64<<10) }},
	{"zstd-stream", codecZstd, func(tb testing.TB, raw []byte) []byte { return zstdStream(tb, raw, 2<<20) }},
}

func gzipCompress(tb testing.TB, raw []byte) []byte {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func lz4Compress(tb testing.TB, raw []byte, block lz4.BlockSize) []byte {
	var b bytes.Buffer
	w := lz4.NewWriter(&b)
	if err := w.Apply(lz4.BlockSizeOption(block)); err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// zstdEncoders caches EncodeAll encoders by window (EncodeAll may be
// called concurrently): making one costs more than a fuzz iteration.
var zstdEncoders sync.Map

// zstdEncodeAll is franz-go's zstd: one EncodeAll with a 64 KiB window.
func zstdEncodeAll(tb testing.TB, raw []byte, window int) []byte {
	e, ok := zstdEncoders.Load(window)
	if !ok {
		enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
		if err != nil {
			tb.Fatal(err)
		}
		e, _ = zstdEncoders.LoadOrStore(window, enc)
	}
	return e.(*zstd.Encoder).EncodeAll(raw, nil)
}

// zstdStream writes a streamed frame, as the Java client does: no content
// size, so the frame declares its whole window (2 MiB is what zstd level 3,
// Kafka's default, uses).
func zstdStream(tb testing.TB, raw []byte, window int) []byte {
	var b bytes.Buffer
	e, err := zstd.NewWriter(&b, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.Write(raw); err != nil {
		tb.Fatal(err)
	}
	// Flush before Close: otherwise a small input becomes one final block
	// and the encoder shrinks the window to the content size.
	if err := e.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := e.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// encodeRecords encodes records with kmsg, filling in each Length (and
// leaving OffsetDelta as given, so tests can break it).
func encodeRecords(recs []kmsg.Record) []byte {
	var out []byte
	for i := range recs {
		r := recs[i]
		r.Length = 0
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		out = r.AppendTo(out)
	}
	return out
}

// makeBatch frames a records section as a v2 batch with kmsg, computing
// Length and the CRC. attrs carries the codec and any other bits.
func makeBatch(attrs int16, baseOffset, baseTs, maxTs int64, n int32, section []byte) []byte {
	rb := kmsg.RecordBatch{
		FirstOffset:          baseOffset,
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           attrs,
		LastOffsetDelta:      n - 1,
		FirstTimestamp:       baseTs,
		MaxTimestamp:         maxTs,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           n,
		Records:              section,
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// validated runs partition.ValidateBatch, as the broker does before Check.
func validated(tb testing.TB, batch []byte) partition.BatchHeader {
	tb.Helper()
	h, err := partition.ValidateBatch(batch, 0)
	if err != nil {
		tb.Fatalf("ValidateBatch: %v", err)
	}
	return h
}

// Hand-built record pieces, for layouts kmsg will not write.

// vi is a zigzag varint (varlong for values outside int32).
func vi(v int64) []byte { return binary.AppendVarint(nil, v) }

// rawRecord joins a record's fields and prefixes their length.
func rawRecord(fields ...[]byte) []byte {
	body := bytes.Join(fields, nil)
	return append(vi(int64(len(body))), body...)
}

// withLength is rawRecord with a chosen length.
func withLength(length int64, fields ...[]byte) []byte {
	return append(vi(length), bytes.Join(fields, nil)...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
