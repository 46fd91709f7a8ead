package partition

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

func TestAppendReadRoundTrip(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l := openTest(t, Options{Dir: dir, FS: fsys})
		var want []string
		for i := range 50 {
			n := 1 + i%4
			spec := batchSpec{baseTimestamp: int64(10_000 + i)}
			for j := range n {
				v := fmt.Sprintf("v%d-%d", i, j)
				want = append(want, v)
				spec.records = append(spec.records, testRecord{key: []byte("k" + v), value: []byte(v), tsDelta: int64(j)})
			}
			wantBase := int64(len(want) - n)
			r := mustAppend(t, l, makeBatch(spec), 3)
			if r.BaseOffset != wantBase || r.LastOffset != wantBase+int64(n-1) || r.Duplicate {
				t.Fatalf("batch %d: got %+v, want base %d last %d", i, r, wantBase, wantBase+int64(n-1))
			}
		}
		if got := l.LogEndOffset(); got != int64(len(want)) {
			t.Fatalf("log end %d, want %d", got, len(want))
		}
		recs := readAll(t, l, 0)
		if len(recs) != len(want) {
			t.Fatalf("read %d records, want %d", len(recs), len(want))
		}
		for i, r := range recs {
			if r.offset != int64(i) || string(r.value) != want[i] || string(r.key) != "k"+want[i] {
				t.Fatalf("record %d: offset %d key %q value %q, want value %q", i, r.offset, r.key, r.value, want[i])
			}
		}
		// A read from the middle of a batch starts with that whole batch.
		data, err := l.Read(2, 1, l.LogEndOffset())
		if err != nil {
			t.Fatal(err)
		}
		got := decodeBatches(t, data)
		if got[0].offset != 1 || got[len(got)-1].offset != 2 {
			t.Fatalf("read at 2 returned offsets %d..%d, want the batch 1..2", got[0].offset, got[len(got)-1].offset)
		}
		h, _ := ParseBatchHeader(data)
		if h.PartitionLeaderEpoch != 3 {
			t.Fatalf("leader epoch %d, want 3", h.PartitionLeaderEpoch)
		}
	})
}

func TestReadLimits(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l := openTest(t, Options{Dir: dir, FS: fsys})
		sizes := []int{200, 300, 5000, 100, 100}
		var bounds []int64 // byte size of each batch
		for i, n := range sizes {
			b := sizedBatch(fmt.Sprintf("b%d", i), n)
			bounds = append(bounds, int64(len(b)))
			mustAppend(t, l, b, 0)
		}
		end := l.LogEndOffset()
		cases := []struct {
			name          string
			offset        int64
			maxBytes      int
			upTo          int64
			wantOffsets   []int64
			wantByteTotal int64
		}{
			{"all", 0, 1 << 20, end, []int64{0, 1, 2, 3, 4}, bounds[0] + bounds[1] + bounds[2] + bounds[3] + bounds[4]},
			{"first batch even when over max", 0, 10, end, []int64{0}, bounds[0]},
			{"whole batches only", 0, int(bounds[0] + bounds[1] + 10), end, []int64{0, 1}, bounds[0] + bounds[1]},
			{"large first batch", 2, 100, end, []int64{2}, bounds[2]},
			{"stops at upTo", 1, 1 << 20, 3, []int64{1, 2}, bounds[1] + bounds[2]},
			{"upTo at offset", 3, 1 << 20, 3, nil, 0},
			{"at end", end, 1 << 20, end, nil, 0},
		}
		for _, c := range cases {
			data, err := l.Read(c.offset, c.maxBytes, c.upTo)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if data == nil {
				t.Fatalf("%s: nil result; an empty read must be non-nil", c.name)
			}
			var offs []int64
			for _, r := range decodeBatches(t, data) {
				offs = append(offs, r.offset)
			}
			if fmt.Sprint(offs) != fmt.Sprint(c.wantOffsets) || int64(len(data)) != c.wantByteTotal {
				t.Fatalf("%s: offsets %v (%d bytes), want %v (%d bytes)", c.name, offs, len(data), c.wantOffsets, c.wantByteTotal)
			}
		}
		for _, off := range []int64{-1, end + 1} {
			_, err := l.Read(off, 100, end)
			var oor *OffsetOutOfRangeError
			if !errors.As(err, &oor) || !errors.Is(err, ErrOffsetOutOfRange) || oor.LogStart != 0 || oor.LogEnd != end {
				t.Fatalf("read at %d: %v, want OffsetOutOfRangeError [0,%d)", off, err, end)
			}
		}
	})
}

func TestRollAndReopen(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		cfg := DefaultConfig()
		cfg.SegmentBytes = 4096
		cfg.IndexIntervalBytes = 512
		opts := Options{Dir: dir, FS: fsys, Config: cfg, FindTimestamp: testSearcher}
		l := openTest(t, opts)
		var want [][]byte
		for i := range 200 {
			b := makeBatch(batchSpec{baseTimestamp: int64(1000 + i*10), records: []testRecord{{value: []byte(fmt.Sprintf("value-%03d", i))}, {value: []byte(fmt.Sprintf("second-%03d", i)), tsDelta: 5}}})
			want = append(want, append([]byte(nil), b...))
			mustAppend(t, l, b, int32(i/50))
		}
		if n := len(l.Segments()); n < 5 {
			t.Fatalf("%d segments, want several with 4 KiB segments", n)
		}
		check := func(l *Log) {
			t.Helper()
			recs := readAll(t, l, 0)
			if len(recs) != 400 {
				t.Fatalf("%d records, want 400", len(recs))
			}
			for i, r := range recs {
				wantV := fmt.Sprintf("value-%03d", i/2)
				if i%2 == 1 {
					wantV = fmt.Sprintf("second-%03d", i/2)
				}
				if r.offset != int64(i) || string(r.value) != wantV {
					t.Fatalf("record %d: offset %d value %q, want %q", i, r.offset, r.value, wantV)
				}
			}
			// Every batch reads back byte for byte but for the stamped header.
			for i := range 200 {
				data, err := l.Read(int64(2*i), 1, l.LogEndOffset())
				if err != nil {
					t.Fatal(err)
				}
				exp := append([]byte(nil), want[i]...)
				stampBatch(exp, int64(2*i), int32(i/50))
				if !bytes.Equal(data, exp) {
					t.Fatalf("batch %d differs after read", i)
				}
			}
			got, ok, err := l.OffsetForTimestamp(1000+77*10+3, l.LogEndOffset())
			if err != nil || !ok || got.Offset != 2*77+1 || got.Timestamp != 1000+77*10+5 {
				t.Fatalf("offset for timestamp: %+v %v %v, want offset %d", got, ok, err, 2*77+1)
			}
			if e, end := l.OffsetForLeaderEpoch(1); e != 1 || end != 200 {
				t.Fatalf("epoch 1 ends at (%d, %d), want (1, 200)", e, end)
			}
			if e, end := l.OffsetForLeaderEpoch(3); e != 3 || end != 400 {
				t.Fatalf("epoch 3 ends at (%d, %d), want (3, 400)", e, end)
			}
		}
		check(l)
		if err := l.Checkpoint(42); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2 := openTest(t, opts)
		if pos, rp := l2.Checkpointed(); pos != 42 || rp != 400 {
			t.Fatalf("checkpointed (%d, %d), want (42, 400)", pos, rp)
		}
		check(l2)
		// More appends after reopening continue the offsets.
		r := mustAppend(t, l2, valueBatch("after"), 4)
		if r.BaseOffset != 400 {
			t.Fatalf("append after reopen at %d, want 400", r.BaseOffset)
		}
		recs := readAll(t, l2, 398)
		if len(recs) != 3 || string(recs[0].value) != "value-199" || string(recs[2].value) != "after" || recs[2].offset != 400 {
			t.Fatalf("tail after reopen: %+v", recs)
		}
		// And once more without a fresh checkpoint: the tail is validated
		// and the next append lands after it, not over it.
		if err := l2.Close(); err != nil {
			t.Fatal(err)
		}
		l3 := openTest(t, opts)
		mustAppend(t, l3, valueBatch("again"), 4)
		recs = readAll(t, l3, 0)
		if len(recs) != 402 || string(recs[400].value) != "after" || string(recs[401].value) != "again" || string(recs[0].value) != "value-000" {
			t.Fatalf("after a second reopen: %d records", len(recs))
		}
	})
}

func TestWaitAndChanged(t *testing.T) {
	l := openTest(t, Options{Dir: "/w", FS: vfs.NewMem()})
	ch := l.Changed()
	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background(), 0) }()
	select {
	case err := <-done:
		t.Fatalf("wait returned %v before any append", err)
	case <-time.After(20 * time.Millisecond):
	}
	mustAppend(t, l, valueBatch("x"), 0)
	if err := <-done; err != nil {
		t.Fatalf("wait: %v", err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed channel not closed by an append")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context: %v", err)
	}
	go func() { done <- l.Wait(context.Background(), 5) }()
	time.Sleep(10 * time.Millisecond)
	_ = l.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("wait across close: %v, want ErrClosed", err)
	}
}

func TestConcurrentReadersDuringAppends(t *testing.T) {
	l := openTest(t, Options{Dir: "/c", FS: vfs.NewMem(), Config: func() Config {
		c := DefaultConfig()
		c.SegmentBytes = 8192
		return c
	}()})
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 4 {
		wg.Go(func() {
			next := int64(0)
			for next < n {
				if err := l.Wait(context.Background(), next); err != nil {
					errs <- err
					return
				}
				data, err := l.Read(next, 4096, l.LogEndOffset())
				if err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", r, next, err)
					return
				}
				recs, err := decodeRecords(data)
				if err != nil {
					errs <- err
					return
				}
				for _, rec := range recs {
					if rec.offset != next || string(rec.value) != fmt.Sprintf("m%d", next) {
						errs <- fmt.Errorf("reader %d: offset %d value %q, want offset %d", r, rec.offset, rec.value, next)
						return
					}
					next++
				}
			}
		})
	}
	for i := range n {
		mustAppend(t, l, valueBatch(fmt.Sprintf("m%d", i)), 0)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestAppendsProceedDuringCheckpointFsync holds a checkpoint inside its
// segment fsync and appends meanwhile: appends and reads must not wait for
// an fsync, or every produce stalls while a partition is flushed.
func TestAppendsProceedDuringCheckpointFsync(t *testing.T) {
	mem := vfs.NewMem()
	l := openTest(t, Options{Dir: "/ck", FS: mem})
	mustAppend(t, l, valueBatch("before"), 0)
	inSync := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	mem.SetFault(func(op vfs.Op, name string) error {
		if op == vfs.OpSync && strings.HasSuffix(name, ".log") {
			once.Do(func() {
				close(inSync)
				<-release
			})
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- l.Checkpoint(1) }()
	<-inSync
	appended := make(chan error, 1)
	go func() {
		_, err := l.Append(valueBatch("during"), 0)
		if err == nil {
			_, err = l.Read(1, 1<<10, l.LogEndOffset())
		}
		appended <- err
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("an append waited for a checkpoint's fsync")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The checkpoint covers what was appended before it started; the
	// append made during it is past the recovery point.
	if _, rp := l.Checkpointed(); rp != 1 {
		t.Fatalf("recovery point %d, want 1", rp)
	}
	recs := readAll(t, l, 0)
	if len(recs) != 2 || string(recs[0].value) != "before" || string(recs[1].value) != "during" {
		t.Fatalf("records %+v", recs)
	}
}

func TestAppendBatches(t *testing.T) {
	mem := vfs.NewMem()
	cfg := DefaultConfig()
	cfg.SegmentBytes = 2048
	l := openTest(t, Options{Dir: "/group", FS: mem, Config: cfg})
	mustAppend(t, l, idemBatch(5, 0, 0, 1, "p5-0"), 2)
	var writes []string
	mem.SetFault(func(op vfs.Op, name string) error {
		if op == vfs.OpWrite && strings.HasSuffix(name, ".log") {
			writes = append(writes, name)
		}
		return nil
	})
	corrupt := valueBatch("bad")
	corrupt[len(corrupt)-1] ^= 1
	batches := [][]byte{
		valueBatch("a"),
		idemBatch(5, 0, 1, 2, "p5-1"), // follows the batch appended above
		idemBatch(5, 0, 3, 1, "p5-3"), // follows the previous batch of this call
		idemBatch(5, 0, 0, 1, "p5-0"), // a retry: duplicate of offset 0
		corrupt,
		idemBatch(5, 0, 9, 1, "gap"),
		sizedBatch("big", 1900), // does not fit: rolls first
		valueBatch("z"),
	}
	res, errs, err := l.AppendBatches(batches, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		base, last int64
		dup        bool
		err        error
	}
	wants := []want{
		{1, 1, false, nil}, {2, 3, false, nil}, {4, 4, false, nil}, {0, 0, true, nil},
		{0, 0, false, ErrCorruptBatch}, {0, 0, false, ErrOutOfOrderSequence},
		{5, 5, false, nil}, {6, 6, false, nil},
	}
	for i, w := range wants {
		if w.err != nil {
			if !errors.Is(errs[i], w.err) {
				t.Fatalf("batch %d: error %v, want %v", i, errs[i], w.err)
			}
			continue
		}
		if errs[i] != nil || res[i].BaseOffset != w.base || res[i].LastOffset != w.last || res[i].Duplicate != w.dup {
			t.Fatalf("batch %d: %+v %v, want %+v", i, res[i], errs[i], w)
		}
	}
	// One write before the roll, one after.
	if len(writes) != 2 || writes[0] == writes[1] {
		t.Fatalf("writes %v, want one per segment", writes)
	}
	if got := l.Segments(); len(got) != 2 || got[1] != 5 {
		t.Fatalf("segments %v, want a roll at 5", got)
	}
	recs := readAll(t, l, 0)
	wantVals := []string{"p5-0-0", "a", "p5-1-0", "p5-1-1", "p5-3-0"}
	for i, v := range wantVals {
		if recs[i].offset != int64(i) || string(recs[i].value) != v {
			t.Fatalf("record %d: %d %q, want %q", i, recs[i].offset, recs[i].value, v)
		}
	}
	if len(recs) != 7 || string(recs[6].value) != "z" || !strings.HasPrefix(string(recs[5].value), "big") {
		t.Fatalf("%d records; tail %q", len(recs), recs[len(recs)-1].value)
	}
	if e, end := l.OffsetForLeaderEpoch(2); e != 2 || end != 1 {
		t.Fatalf("epoch 2 ends at (%d, %d), want (2, 1)", e, end)
	}
}
