package partition

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"
)

func TestValidateBatch(t *testing.T) {
	good := makeBatch(batchSpec{records: []testRecord{{value: []byte("a")}, {value: []byte("b"), tsDelta: 7}}})
	recrc := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
		return b
	}
	edit := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	cases := []struct {
		name string
		b    []byte
		max  int
		want error
	}{
		{"good", good, 0, nil},
		{"good under limit", good, len(good), nil},
		{"empty", nil, 0, ErrCorruptBatch},
		{"short header", good[:BatchHeaderSize-1], 0, ErrCorruptBatch},
		{"truncated body", good[:len(good)-1], 0, ErrCorruptBatch},
		{"trailing bytes", append(append([]byte(nil), good...), 0), 0, ErrCorruptBatch},
		{"two batches", append(append([]byte(nil), good...), good...), 0, ErrInvalidRecord},
		{"negative length", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offBatchLength:], math.MaxUint32); return b }), 0, ErrCorruptBatch},
		{"length below header", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offBatchLength:], 10); return b }), 0, ErrCorruptBatch},
		{"over limit", good, len(good) - 1, ErrMessageTooLarge},
		{"magic 1", edit(func(b []byte) []byte { b[offMagic] = 1; return b }), 0, ErrInvalidRecord},
		{"magic 0", edit(func(b []byte) []byte { b[offMagic] = 0; return b }), 0, ErrInvalidRecord},
		{"magic 7", edit(func(b []byte) []byte { b[offMagic] = 7; return b }), 0, ErrCorruptBatch},
		{"bad crc", edit(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }), 0, ErrCorruptBatch},
		{"crc field flipped", edit(func(b []byte) []byte { b[offCRC] ^= 1; return b }), 0, ErrCorruptBatch},
		{"zero records", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[offRecordCount:], 0)
			return recrc(b)
		}), 0, ErrInvalidRecord},
		{"count mismatch", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[offRecordCount:], 3)
			return recrc(b)
		}), 0, ErrInvalidRecord},
		{"negative delta", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[offLastOffsetDelta:], math.MaxUint32)
			binary.BigEndian.PutUint32(b[offRecordCount:], 0)
			return recrc(b)
		}), 0, ErrInvalidRecord},
		{"idempotent negative sequence", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[offProducerID:], 9)
			binary.BigEndian.PutUint16(b[offProducerEpoch:], 0)
			binary.BigEndian.PutUint32(b[offBaseSequence:], math.MaxUint32)
			return recrc(b)
		}), 0, ErrInvalidRecord},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := ValidateBatch(c.b, c.max)
			if c.want == nil {
				if err != nil {
					t.Fatalf("rejected a good batch: %v", err)
				}
				if h.NumRecords != 2 || h.LastOffsetDelta != 1 || h.MaxTimestamp != 1007 || h.BaseTimestamp != 1000 || h.Size() != int64(len(c.b)) {
					t.Fatalf("header decoded wrong: %+v", h)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestStampKeepsCRC(t *testing.T) {
	b := makeBatch(batchSpec{})
	stampBatch(b, 1<<40, 77)
	h, err := ValidateBatch(b, 0)
	if err != nil {
		t.Fatalf("stamped batch no longer valid: %v", err)
	}
	if h.BaseOffset != 1<<40 || h.PartitionLeaderEpoch != 77 {
		t.Fatalf("stamp wrote base %d epoch %d", h.BaseOffset, h.PartitionLeaderEpoch)
	}
}

func TestWrapSequence(t *testing.T) {
	cases := []struct{ seq, delta, want int32 }{
		{0, 0, 0},
		{5, 4, 9},
		{math.MaxInt32, 1, 0},
		{math.MaxInt32 - 1, 3, 1},
	}
	for _, c := range cases {
		if got := wrapSequence(c.seq, c.delta); got != c.want {
			t.Errorf("wrapSequence(%d, %d) = %d, want %d", c.seq, c.delta, got, c.want)
		}
	}
}
