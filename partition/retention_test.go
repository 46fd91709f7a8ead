package partition

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

// fillSegments appends n one-record batches (value "r<i>", timestamp
// 1000+i*100) into a log rolling every ~1 KiB, and checkpoints.
func fillSegments(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		b := makeBatch(batchSpec{baseTimestamp: int64(1000 + i*100), records: []testRecord{{value: []byte(fmt.Sprintf("r%d-%0200d", i, 0))}}})
		mustAppend(t, l, b, 0)
	}
	if err := l.Checkpoint(0); err != nil {
		t.Fatal(err)
	}
}

func smallSegments() Config {
	c := DefaultConfig()
	c.SegmentBytes = 1024
	c.IndexIntervalBytes = 256
	return c
}

func TestDeleteRecords(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		opts := Options{Dir: dir, FS: fsys, Config: smallSegments()}
		l := openTest(t, opts)
		fillSegments(t, l, 40)
		segsBefore := l.Segments()
		start, err := l.DeleteRecords(17)
		if err != nil || start != 17 {
			t.Fatalf("delete records: %d %v", start, err)
		}
		if _, err := l.Read(16, 100, 40); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("read below the new start: %v", err)
		}
		recs := readAll(t, l, 17)
		if len(recs) != 23 || recs[0].offset != 17 || string(recs[0].value[:3]) != "r17" {
			t.Fatalf("after delete: %d records from %d", len(recs), recs[0].offset)
		}
		segsAfter := l.Segments()
		if len(segsAfter) >= len(segsBefore) || segsAfter[0] > 17 {
			t.Fatalf("segments %v -> %v: expected the ones below 17 gone, the one holding 17 kept", segsBefore, segsAfter)
		}
		if s, err := l.DeleteRecords(5); err != nil || s != 17 {
			t.Fatalf("delete below the start: %d %v", s, err)
		}
		if _, err := l.DeleteRecords(41); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("delete past the end: %v", err)
		}
		_ = l.Close()
		l = openTest(t, opts)
		if l.LogStartOffset() != 17 || l.LogEndOffset() != 40 {
			t.Fatalf("after reopen [%d, %d)", l.LogStartOffset(), l.LogEndOffset())
		}
		// Deleting everything leaves an empty log that continues at 40.
		if s, err := l.DeleteRecords(40); err != nil || s != 40 {
			t.Fatalf("delete all: %d %v", s, err)
		}
		if r := mustAppend(t, l, valueBatch("next"), 0); r.BaseOffset != 40 || r.LogStartOffset != 40 {
			t.Fatalf("append after deleting all: %+v", r)
		}
	})
}

func TestRetention(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		cfg := smallSegments()
		l := openTest(t, Options{Dir: dir, FS: fsys, Config: cfg})
		fillSegments(t, l, 40)
		total := l.Size()
		// Default retention (7 days, unlimited bytes) at a time just after
		// the records: nothing goes.
		if n, err := l.Retain(1000 + 40*100); err != nil || n != 0 {
			t.Fatalf("retain with defaults deleted %d (%v)", n, err)
		}
		cfg.RetentionAge = -1
		cfg.RetentionBytes = total / 2
		if err := l.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		n, err := l.Retain(0)
		if err != nil || n == 0 {
			t.Fatalf("retention by bytes deleted %d (%v)", n, err)
		}
		if l.Size() < cfg.RetentionBytes {
			t.Fatalf("size %d fell below retention.bytes %d", l.Size(), cfg.RetentionBytes)
		}
		start := l.LogStartOffset()
		if start != l.Segments()[0] || start == 0 {
			t.Fatalf("log start %d, first segment %d", start, l.Segments()[0])
		}
		// By time: records at 1000+i*100; retention 1s at now=1000+30*100+1000
		// removes segments whose newest record is below offset 30.
		cfg.RetentionBytes = -1
		cfg.RetentionAge = time.Second
		if err := l.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		now := int64(1000 + 30*100 + 1000)
		if _, err := l.Retain(now); err != nil {
			t.Fatal(err)
		}
		start = l.LogStartOffset()
		recs := readAll(t, l, start)
		// The first remaining segment holds the cutoff record (offset 30,
		// timestamp now-1000) or a later one that shares its segment; every
		// deleted one was entirely older.
		first := l.Segments()[0]
		if start != first || start > 30 {
			t.Fatalf("time retention left the log starting at %d (first segment %d), want the segment holding 30", start, first)
		}
		if prev := recs[0].offset; prev != start {
			t.Fatalf("first record read at %d, want %d", prev, start)
		}
		last := recs[len(recs)-1]
		if last.offset != 39 || string(last.value[:3]) != "r39" {
			t.Fatalf("last record %d %q", last.offset, last.value[:3])
		}
		// The active segment is never deleted, even when everything expired.
		if _, err := l.Retain(1 << 50); err != nil {
			t.Fatal(err)
		}
		if l.LogEndOffset() != 40 || len(l.Segments()) != 1 {
			t.Fatalf("after expiring everything: end %d segments %v", l.LogEndOffset(), l.Segments())
		}
	})
}

func TestRetentionKeepsUncheckpointedSegments(t *testing.T) {
	cfg := smallSegments()
	cfg.RetentionAge = -1
	cfg.RetentionBytes = 0
	l := openTest(t, Options{Dir: "/r", FS: vfs.NewMem(), Config: cfg})
	for i := range 20 {
		mustAppend(t, l, sizedBatch(fmt.Sprint(i), 400), 0)
	}
	// No checkpoint yet: the recovery point is 0, so nothing may go.
	if n, err := l.Retain(0); err != nil || n != 0 {
		t.Fatalf("retention before any checkpoint deleted %d (%v)", n, err)
	}
	if err := l.Checkpoint(1); err != nil {
		t.Fatal(err)
	}
	before := len(l.Segments())
	n, err := l.Retain(0)
	if err != nil || n != before-1 || len(l.Segments()) != 1 {
		t.Fatalf("retention after the checkpoint deleted %d of %d (%v), segments now %v", n, before, err, l.Segments())
	}
	if recs := readAll(t, l, l.LogStartOffset()); len(recs) == 0 || recs[len(recs)-1].offset != 19 {
		t.Fatalf("the active segment lost records: %+v", recs)
	}
}

func TestTruncateTo(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		opts := Options{Dir: dir, FS: fsys, Config: smallSegments()}
		l := openTest(t, opts)
		for i := range 30 {
			b := makeBatch(batchSpec{idempotent: true, producerID: 5, baseSequence: int32(i * 2), records: []testRecord{{value: []byte(fmt.Sprintf("t%d-a-%0100d", i, 0))}, {value: []byte(fmt.Sprintf("t%d-b", i))}}})
			mustAppend(t, l, b, int32(i/10))
		}
		if err := l.Checkpoint(7); err != nil {
			t.Fatal(err)
		}
		if err := l.TruncateTo(31); err == nil {
			t.Fatal("truncation inside a batch accepted")
		}
		if err := l.TruncateTo(24); err != nil { // batch 12, epoch 1
			t.Fatal(err)
		}
		if l.LogEndOffset() != 24 {
			t.Fatalf("end %d after truncation", l.LogEndOffset())
		}
		if e, end := l.OffsetForLeaderEpoch(1); e != 1 || end != 24 {
			t.Fatalf("epoch 1 after truncation: (%d, %d)", e, end)
		}
		if e, end := l.OffsetForLeaderEpoch(2); e != -1 || end != -1 {
			t.Fatalf("epoch 2 survived truncation: (%d, %d)", e, end)
		}
		// The producer's state is back at batch 11 (sequences 22-23).
		if _, err := l.Append(idemBatch(5, 0, 26, 1, "skip"), 1); !errors.Is(err, ErrOutOfOrderSequence) {
			t.Fatalf("sequence past the truncated state: %v", err)
		}
		if r := mustAppend(t, l, idemBatch(5, 0, 24, 2, "new"), 3); r.BaseOffset != 24 || r.Duplicate {
			t.Fatalf("append after truncation: %+v", r)
		}
		check := func(l *Log) {
			t.Helper()
			recs := readAll(t, l, 0)
			if len(recs) != 26 {
				t.Fatalf("%d records, want 26", len(recs))
			}
			for i, r := range recs[:24] {
				want := fmt.Sprintf("t%d-b", i/2)
				if i%2 == 0 {
					want = fmt.Sprintf("t%d-a-%0100d", i/2, 0)
				}
				if string(r.value) != want || r.offset != int64(i) {
					t.Fatalf("record %d: %q", i, r.value)
				}
			}
			if string(recs[24].value) != "new-0" || string(recs[25].value) != "new-1" {
				t.Fatalf("tail %q %q", recs[24].value, recs[25].value)
			}
		}
		check(l)
		if err := l.Checkpoint(8); err != nil {
			t.Fatal(err)
		}
		_ = l.Close()
		check(openTest(t, opts))
	})
}

func TestRollByAge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := DefaultConfig()
	cfg.SegmentAge = time.Hour
	l := openTest(t, Options{Dir: "/age", FS: vfs.NewMem(), Config: cfg, Now: func() time.Time { return now }})
	mustAppend(t, l, valueBatch("a"), 0)
	now = now.Add(59 * time.Minute)
	mustAppend(t, l, valueBatch("b"), 0)
	if n := len(l.Segments()); n != 1 {
		t.Fatalf("%d segments before the age passed", n)
	}
	now = now.Add(time.Minute)
	mustAppend(t, l, valueBatch("c"), 0)
	if got := l.Segments(); len(got) != 2 || got[1] != 2 {
		t.Fatalf("segments %v, want a roll at offset 2", got)
	}
}

func TestTimestampLookups(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		cfg := smallSegments()
		l := openTest(t, Options{Dir: dir, FS: fsys, Config: cfg, FindTimestamp: testSearcher})
		// Timestamps out of order across batches: 5000, 3000, 9000, 9000, 7000, ...
		stamps := []int64{5000, 3000, 9000, 9000, 7000, 2000, 8000}
		for i, ts := range stamps {
			spec := batchSpec{baseTimestamp: ts, records: []testRecord{{value: []byte(fmt.Sprintf("s%d-%0300d", i, 0))}, {value: []byte(fmt.Sprintf("s%d-late", i)), tsDelta: 50}}}
			mustAppend(t, l, makeBatch(spec), 0)
		}
		end := l.LogEndOffset()
		cases := []struct {
			ts         int64
			upTo       int64
			wantOffset int64
			wantTs     int64
			found      bool
		}{
			{0, end, 0, 5000, true},
			{5000, end, 0, 5000, true},
			{5001, end, 1, 5050, true}, // the second record of batch 0
			{5051, end, 4, 9000, true}, // batch 2
			{9050, end, 5, 9050, true}, // first record reaching 9050
			{9051, end, 0, 0, false},   // nothing that late
			{5051, 4, 0, 0, false},     // the only match lies past upTo
			{7060, end, 4, 9000, true}, // first in log order, not the closest
		}
		for _, c := range cases {
			got, ok, err := l.OffsetForTimestamp(c.ts, c.upTo)
			if err != nil || ok != c.found || (ok && (got.Offset != c.wantOffset || got.Timestamp != c.wantTs)) {
				t.Errorf("OffsetForTimestamp(%d, %d) = %+v %v %v, want %d@%d %v", c.ts, c.upTo, got, ok, err, c.wantOffset, c.wantTs, c.found)
			}
		}
		got, ok, err := l.MaxTimestamp(end)
		if err != nil || !ok || got.Offset != 5 || got.Timestamp != 9050 {
			t.Fatalf("MaxTimestamp = %+v %v %v, want offset 5 at 9050", got, ok, err)
		}
		got, ok, err = l.MaxTimestamp(4)
		if err != nil || !ok || got.Offset != 1 || got.Timestamp != 5050 {
			t.Fatalf("MaxTimestamp below 4 = %+v %v %v, want offset 1 at 5050", got, ok, err)
		}
	})
}

func TestLogAppendTimeLookupNeedsNoDecoder(t *testing.T) {
	l := openTest(t, Options{Dir: "/lat", FS: vfs.NewMem()})
	for i := range 5 {
		spec := batchSpec{logAppendTime: true, baseTimestamp: int64(100 * (i + 1)), records: []testRecord{{value: []byte("x")}, {value: []byte("y"), tsDelta: 10}}}
		mustAppend(t, l, makeBatch(spec), 0)
	}
	got, ok, err := l.OffsetForTimestamp(305, l.LogEndOffset())
	if err != nil || !ok || got.Offset != 4 || got.Timestamp != 310 {
		t.Fatalf("LogAppendTime lookup = %+v %v %v, want offset 4 at 310", got, ok, err)
	}
}

func TestStartEpoch(t *testing.T) {
	fsys := vfs.NewMem()
	opts := Options{Dir: "/e", FS: fsys}
	l := openTest(t, opts)
	mustAppend(t, l, valueBatch("a"), 1)
	if err := l.StartEpoch(2); err != nil {
		t.Fatal(err)
	}
	if e, end := l.OffsetForLeaderEpoch(1); e != 1 || end != 1 {
		t.Fatalf("epoch 1: (%d, %d), want (1, 1)", e, end)
	}
	if e, end := l.OffsetForLeaderEpoch(2); e != 2 || end != 1 {
		t.Fatalf("epoch 2 before any write: (%d, %d), want (2, 1)", e, end)
	}
	if err := l.Checkpoint(0); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	l = openTest(t, opts)
	if l.LatestEpoch() != 2 {
		t.Fatalf("latest epoch after reopen %d", l.LatestEpoch())
	}
}

// TestRetentionNeverMovesTheLogStartBack: DeleteRecords can move the log
// start past segments it may not delete yet (recovery still needs them);
// retention later deletes them, and must not move the start back to a
// segment base below it.
func TestRetentionNeverMovesTheLogStartBack(t *testing.T) {
	cfg := smallSegments()
	l := openTest(t, Options{Dir: "/back", FS: vfs.NewMem(), Config: cfg})
	for i := range 40 {
		mustAppend(t, l, sizedBatch(fmt.Sprint(i), 300), 0)
	}
	if err := l.Checkpoint(1); err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 80; i++ { // past the checkpoint
		mustAppend(t, l, sizedBatch(fmt.Sprint(i), 300), 0)
	}
	if _, err := l.DeleteRecords(60); err != nil {
		t.Fatal(err)
	}
	if l.LogStartOffset() != 60 || l.Segments()[0] > 40 {
		t.Fatalf("log start %d, segments %v: segments past the checkpoint must stay", l.LogStartOffset(), l.Segments())
	}
	if err := l.Checkpoint(2); err != nil {
		t.Fatal(err)
	}
	// A size limit that deletes just the first segment: the old code set
	// the log start to the second segment's base, far below 60.
	cfg.RetentionBytes = l.Size() - 1000
	cfg.RetentionAge = -1
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Retain(0); err != nil || n == 0 {
		t.Fatalf("retention deleted %d segments (%v)", n, err)
	}
	if got := l.LogStartOffset(); got != 60 {
		t.Fatalf("log start %d after retention, want it to stay at 60", got)
	}
	if _, err := l.Read(59, 100, 80); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("read below the start after retention: %v", err)
	}
	// Segments wholly below the start go even without size or age limits.
	cfg.RetentionBytes = -1
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Retain(0); err != nil {
		t.Fatal(err)
	}
	if segs := l.Segments(); segs[0] > 60 || segs[1] <= 60 {
		t.Fatalf("segments %v: want the first to be the one holding 60", segs)
	}
}

func TestTimestampLookupNeverBelowTheLogStart(t *testing.T) {
	l := openTest(t, Options{Dir: "/clamp", FS: vfs.NewMem(), FindTimestamp: testSearcher})
	var recs []testRecord
	for i := range 5 {
		recs = append(recs, testRecord{value: []byte(fmt.Sprint(i)), tsDelta: int64(i)})
	}
	mustAppend(t, l, makeBatch(batchSpec{baseTimestamp: 100, records: recs}), 0) // offsets 0-4
	if _, err := l.DeleteRecords(3); err != nil {
		t.Fatal(err)
	}
	got, ok, err := l.OffsetForTimestamp(0, l.LogEndOffset())
	if err != nil || !ok || got.Offset != 3 {
		t.Fatalf("lookup inside a batch straddling the log start: %+v %v %v, want offset 3", got, ok, err)
	}
}
