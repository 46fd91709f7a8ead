package replication

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestProduceCommandRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		ts      int64
		batches [][]byte
	}{
		{"none", 0, nil},
		{"one", 1_700_000_000_123, [][]byte{makeBatch("a")}},
		{"several", -1, [][]byte{makeBatch("a"), makeBatch("b", "c"), {}, bytes.Repeat([]byte{0xee}, 300)}},
		{"extreme time", math.MinInt64, [][]byte{{1}}},
		{"max time", math.MaxInt64, [][]byte{{1}, {2, 3}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := encodeProduce(tc.ts, tc.batches)
			if data[0] != cmdProduce || data[1] != cmdVersion1 {
				t.Fatalf("entry starts %x, want type %d version %d", data[:2], cmdProduce, cmdVersion1)
			}
			ts, batches, err := decodeProduce(data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if ts != tc.ts {
				t.Fatalf("append time %d, want %d", ts, tc.ts)
			}
			if len(batches) != len(tc.batches) {
				t.Fatalf("%d batches, want %d", len(batches), len(tc.batches))
			}
			for i := range batches {
				if !bytes.Equal(batches[i], tc.batches[i]) {
					t.Fatalf("batch %d: %x, want %x", i, batches[i], tc.batches[i])
				}
			}
		})
	}
}

// TestDecodeProduceSharesEntry: decoded batches are sub-slices of the
// entry, not copies (the FSM stamps offsets into them in place).
func TestDecodeProduceSharesEntry(t *testing.T) {
	data := encodeProduce(5, [][]byte{makeBatch("a"), makeBatch("b")})
	_, batches, err := decodeProduce(data)
	if err != nil {
		t.Fatal(err)
	}
	batches[0][0] ^= 0xff
	if _, again, _ := decodeProduce(data); !bytes.Equal(again[0], batches[0]) {
		t.Fatalf("decoded batches are copies")
	}
}

func TestDecodeProduceRejects(t *testing.T) {
	valid := encodeProduce(42, [][]byte{makeBatch("a"), makeBatch("b", "c")})
	// Every strict prefix is refused.
	for n := range len(valid) {
		if _, _, err := decodeProduce(valid[:n]); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("prefix of %d/%d bytes: %v, want ErrBadCommand", n, len(valid), err)
		}
	}
	header := func(count uint64) []byte {
		b := []byte{cmdProduce, cmdVersion1}
		b = binary.BigEndian.AppendUint64(b, 42)
		return binary.AppendUvarint(b, count)
	}
	cases := map[string][]byte{
		"trailing byte":        append(bytes.Clone(valid), 0),
		"count past the data":  header(1 << 40),
		"count overflows":      append(header(0)[:10], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"batch past the data":  append(header(1), 5, 1, 2),
		"batch length huge":    append(header(1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"missing second batch": append(header(2), 1, 9),
		"no count":             header(0)[:10],
	}
	for name, data := range cases {
		if _, _, err := decodeProduce(data); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
}

func TestDeleteRecordsCommand(t *testing.T) {
	for _, off := range []int64{0, 1, 1 << 40, math.MaxInt64} {
		data := encodeDeleteRecords(off)
		if data[0] != cmdDeleteRecords || data[1] != cmdVersion1 {
			t.Fatalf("entry starts %x", data[:2])
		}
		got, err := decodeDeleteRecords(data)
		if err != nil || got != off {
			t.Fatalf("round trip of %d: %d, %v", off, got, err)
		}
	}
	good := encodeDeleteRecords(7)
	for _, bad := range [][]byte{good[:9], append(bytes.Clone(good), 0), good[:2], nil} {
		if _, err := decodeDeleteRecords(bad); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%x: %v, want ErrBadCommand", bad, err)
		}
	}
	if e := encodeEpochStart(); !bytes.Equal(e, []byte{cmdEpochStart, cmdVersion1}) {
		t.Fatalf("epoch start entry %x", e)
	}
}

// FuzzDecodeProduce: decoding never panics; whatever decodes re-encodes to
// an entry that decodes to the same thing.
func FuzzDecodeProduce(f *testing.F) {
	f.Add(encodeProduce(0, nil))
	f.Add(encodeProduce(1_700_000_000_000, [][]byte{makeBatch("seed")}))
	f.Add(encodeProduce(-5, [][]byte{{}, {1, 2, 3}, makeBatch("x", "y")}))
	f.Add([]byte{cmdProduce, cmdVersion1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, batches, err := decodeProduce(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v is not ErrBadCommand", err)
			}
			return
		}
		total := 0
		for _, b := range batches {
			total += len(b)
		}
		if total > len(data) {
			t.Fatalf("%d batch bytes from a %d-byte entry", total, len(data))
		}
		ts2, batches2, err := decodeProduce(encodeProduce(ts, batches))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if ts2 != ts || len(batches2) != len(batches) {
			t.Fatalf("round trip changed the entry")
		}
		for i := range batches {
			if !bytes.Equal(batches[i], batches2[i]) {
				t.Fatalf("round trip changed batch %d", i)
			}
		}
	})
}
