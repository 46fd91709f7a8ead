package records

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
)

const (
	baseTs     = int64(1_700_000_000_000)
	baseOffset = int64(1000)
)

// sample is a batch's worth of records that covers the layout: null and
// empty keys and values, headers with null and empty parts, a value larger
// than the streaming window, and timestamps out of order.
func sample() []kmsg.Record {
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000/16)
	return []kmsg.Record{
		{OffsetDelta: 0, TimestampDelta64: 0, Key: []byte("k0"), Value: []byte("v0")},
		{OffsetDelta: 1, TimestampDelta64: 5, Value: []byte("hello"), Headers: []kmsg.Header{{Key: "h1", Value: []byte("x")}, {Key: "h2"}}},
		{OffsetDelta: 2, TimestampDelta64: -3, Key: []byte{}},
		{OffsetDelta: 3, TimestampDelta64: 10, Key: bytes.Repeat([]byte("K"), 300), Value: big},
		{OffsetDelta: 4, TimestampDelta64: 10, Key: []byte("k4"), Value: []byte{}, Headers: []kmsg.Header{{Key: "", Value: []byte{}}}},
	}
}

func sampleBatch(tb testing.TB, c codec) []byte {
	raw := encodeRecords(sample())
	return makeBatch(int16(c.id), baseOffset, baseTs, baseTs+10, 5, c.compress(tb, raw))
}

func TestCheckAcceptsEveryCodec(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			batch := sampleBatch(t, c)
			before := bytes.Clone(batch)
			h := validated(t, batch)
			if err := Check(batch, &h, Limits{}); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !bytes.Equal(batch, before) {
				t.Fatal("Check modified the batch")
			}
			want := sample()
			i := 0
			err := Records(batch, Limits{}, func(r Record) error {
				w := want[i]
				if r.OffsetDelta != w.OffsetDelta || r.TimestampDelta != w.TimestampDelta64 {
					t.Errorf("record %d: deltas %d/%d, want %d/%d", i, r.OffsetDelta, r.TimestampDelta, w.OffsetDelta, w.TimestampDelta64)
				}
				sameBytes(t, fmt.Sprintf("record %d key", i), r.Key, w.Key)
				sameBytes(t, fmt.Sprintf("record %d value", i), r.Value, w.Value)
				if len(r.Headers) != len(w.Headers) {
					t.Fatalf("record %d: %d headers, want %d", i, len(r.Headers), len(w.Headers))
				}
				for j, h := range r.Headers {
					if h.Key != w.Headers[j].Key {
						t.Errorf("record %d header %d key %q, want %q", i, j, h.Key, w.Headers[j].Key)
					}
					sameBytes(t, fmt.Sprintf("record %d header %d value", i, j), h.Value, w.Headers[j].Value)
				}
				i++
				return nil
			})
			if err != nil || i != len(want) {
				t.Fatalf("Records: %v after %d records", err, i)
			}
		})
	}
}

// sameBytes compares including the difference between null and empty.
func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
		t.Errorf("%s = %q (nil %v), want %q (nil %v)", what, trim(got), got == nil, trim(want), want == nil)
	}
}

func trim(b []byte) []byte { return b[:min(len(b), 16)] }

func TestFindTimestamp(t *testing.T) {
	// Record timestamps by offset: 1000 base, 1001 base+5, 1002 base-3,
	// 1003 base+10, 1004 base+10.
	cases := []struct {
		target     int64
		off, ts    int64
		notInBatch bool
	}{
		{target: baseTs - 100, off: 1000, ts: baseTs},
		{target: baseTs - 3, off: 1000, ts: baseTs},
		{target: baseTs, off: 1000, ts: baseTs},
		{target: baseTs + 1, off: 1001, ts: baseTs + 5},
		{target: baseTs + 5, off: 1001, ts: baseTs + 5},
		{target: baseTs + 6, off: 1003, ts: baseTs + 10},
		{target: baseTs + 10, off: 1003, ts: baseTs + 10},
		{target: baseTs + 11, notInBatch: true},
	}
	for _, c := range codecs {
		batch := sampleBatch(t, c)
		for _, tc := range cases {
			off, ts, err := FindTimestamp(batch, tc.target)
			if tc.notInBatch {
				if !errors.Is(err, ErrTimestampNotFound) {
					t.Errorf("%s: target %d: err %v, want ErrTimestampNotFound", c.name, tc.target, err)
				}
				continue
			}
			if err != nil || off != tc.off || ts != tc.ts {
				t.Errorf("%s: target %d: (%d, %d, %v), want (%d, %d)", c.name, tc.target, off, ts, err, tc.off, tc.ts)
			}
		}
	}
}

func TestStampLogAppendTime(t *testing.T) {
	const now = baseTs + 60_000
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			batch := sampleBatch(t, c)
			orig := bytes.Clone(batch)
			if err := StampLogAppendTime(batch, now); err != nil {
				t.Fatal(err)
			}
			h := validated(t, batch)
			if !h.LogAppendTime() || h.MaxTimestamp != now || h.BaseTimestamp != baseTs || h.Compression() != c.id {
				t.Fatalf("header after stamping: %+v", h)
			}
			// Only attributes (21-22), maxTimestamp (35-42) and the CRC
			// (17-20) may change; the records are untouched.
			for i := range batch {
				inCRC, inAttrs, inMax := i >= 17 && i < 21, i >= 21 && i < 23, i >= 35 && i < 43
				if batch[i] != orig[i] && !inCRC && !inAttrs && !inMax {
					t.Fatalf("byte %d changed", i)
				}
			}
			off, ts, err := FindTimestamp(batch, baseTs-1)
			if err != nil || off != baseOffset || ts != now {
				t.Fatalf("FindTimestamp on a stamped batch: (%d, %d, %v)", off, ts, err)
			}
			if err := Records(batch, Limits{}, func(Record) error { return nil }); err != nil {
				t.Fatalf("Records on a stamped batch: %v", err)
			}
			// Stamped is the leader's form: a producer may not send it.
			if err := Check(batch, &h, Limits{}); !errors.Is(err, ErrInvalidTimestamp) {
				t.Fatalf("Check of a stamped batch: %v", err)
			}
		})
	}
	if err := StampLogAppendTime(make([]byte, 60), now); !errors.Is(err, partition.ErrCorruptBatch) {
		t.Errorf("short batch: %v", err)
	}
	batch := sampleBatch(t, codecs[0])
	batch[len(batch)-1] ^= 1
	if err := StampLogAppendTime(batch, now); !errors.Is(err, partition.ErrCorruptBatch) {
		t.Errorf("batch with a bad CRC: %v", err)
	}
}

func TestErrorSentinels(t *testing.T) {
	err := fmt.Errorf("x: %w", ErrInvalidTimestamp)
	if !errors.Is(err, ErrInvalidTimestamp) || !errors.Is(err, partition.ErrInvalidRecord) {
		t.Fatal("ErrInvalidTimestamp must match itself and partition.ErrInvalidRecord")
	}
	if errors.Is(fmt.Errorf("x: %w", partition.ErrInvalidRecord), ErrInvalidTimestamp) {
		t.Fatal("partition.ErrInvalidRecord must not match ErrInvalidTimestamp")
	}
	l := DefaultLimits(1048588)
	if l.MaxDecompressedBytes != DefaultMaxDecompressedBytes || l.MaxRecords != DefaultMaxRecords {
		t.Fatalf("DefaultLimits(1 MiB) = %+v", l)
	}
	if l := DefaultLimits(8 << 20); l.MaxDecompressedBytes != 128<<20 {
		t.Fatalf("DefaultLimits(8 MiB) = %+v", l)
	}
}

// TestConcurrentChecks shares the decoder pools between goroutines (run
// with -race), and checks that no decoder leaves a goroutine behind.
func TestConcurrentChecks(t *testing.T) {
	batches := make([][]byte, len(codecs))
	for i, c := range codecs {
		batches[i] = sampleBatch(t, c)
	}
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				batch := batches[(g+i)%len(batches)]
				h, err := partition.ParseBatchHeader(batch)
				if err == nil {
					err = Check(batch, &h, Limits{})
				}
				if err == nil {
					_, _, err = FindTimestamp(batch, baseTs+6)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Goroutines of earlier tests may still be exiting: poll.
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); after > before && time.Now().Before(deadline); after = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if after > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}
