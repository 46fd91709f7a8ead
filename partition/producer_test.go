package partition

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

func idemBatch(pid int64, epoch int16, seq int32, n int, tag string) []byte {
	spec := batchSpec{idempotent: true, producerID: pid, producerEpoch: epoch, baseSequence: seq}
	for i := range n {
		spec.records = append(spec.records, testRecord{value: []byte(fmt.Sprintf("%s-%d", tag, i))})
	}
	return makeBatch(spec)
}

func TestIdempotentProducerRules(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l := openTest(t, Options{Dir: dir, FS: fsys})
		steps := []struct {
			name     string
			batch    []byte
			wantErr  error
			wantBase int64
			wantDup  bool
		}{
			{"unknown producer on an empty log must start at 0", idemBatch(7, 0, 5, 1, "x"), ErrUnknownProducerID, 0, false},
			{"first batch", idemBatch(7, 0, 0, 3, "a"), nil, 0, false},
			{"next batch", idemBatch(7, 0, 3, 2, "b"), nil, 3, false},
			{"retry of the first batch", idemBatch(7, 0, 0, 3, "a"), nil, 0, true},
			{"retry of the latest batch", idemBatch(7, 0, 3, 2, "b"), nil, 3, true},
			{"gap", idemBatch(7, 0, 6, 1, "gap"), ErrOutOfOrderSequence, 0, false},
			{"overlap that is no retry", idemBatch(7, 0, 4, 1, "c"), ErrOutOfOrderSequence, 0, false},
			{"another producer interleaves", idemBatch(8, 2, 0, 1, "other"), nil, 5, false},
			{"unknown producer on a non-empty log may start anywhere", idemBatch(9, 0, 1000, 1, "late"), nil, 6, false},
			{"continue", idemBatch(7, 0, 5, 1, "d"), nil, 7, false},
			{"continue again", idemBatch(7, 0, 6, 1, "e"), nil, 8, false},
			{"new epoch must start at 0", idemBatch(7, 1, 7, 1, "f"), ErrOutOfOrderSequence, 0, false},
			{"new epoch at 0", idemBatch(7, 1, 0, 1, "g"), nil, 9, false},
			{"old epoch after the new one", idemBatch(7, 0, 7, 1, "h"), ErrInvalidProducerEpoch, 0, false},
			{"non-idempotent batches never dedupe", valueBatch("plain"), nil, 10, false},
			{"non-idempotent again", valueBatch("plain"), nil, 11, false},
		}
		for _, s := range steps {
			end := l.LogEndOffset()
			r, err := l.Append(s.batch, 0)
			if s.wantErr != nil {
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("%s: got %v, want %v", s.name, err, s.wantErr)
				}
				if l.LogEndOffset() != end {
					t.Fatalf("%s: a refused batch moved the log end", s.name)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if r.BaseOffset != s.wantBase || r.Duplicate != s.wantDup {
				t.Fatalf("%s: got base %d duplicate %v, want base %d duplicate %v", s.name, r.BaseOffset, r.Duplicate, s.wantBase, s.wantDup)
			}
			if s.wantDup && l.LogEndOffset() != end {
				t.Fatalf("%s: a duplicate wrote something", s.name)
			}
		}
		// The duplicate of the first batch wrote nothing: offsets 0..2 hold a-0..a-2 once.
		recs := readAll(t, l, 0)
		want := []string{"a-0", "a-1", "a-2", "b-0", "b-1", "other-0", "late-0", "d-0", "e-0", "g-0", "plain", "plain"}
		if len(recs) != len(want) {
			t.Fatalf("%d records, want %d", len(recs), len(want))
		}
		for i, r := range recs {
			if string(r.value) != want[i] || r.offset != int64(i) {
				t.Fatalf("record %d: %q at %d, want %q", i, r.value, r.offset, want[i])
			}
		}
		p, ok := l.Producer(7)
		if !ok || p.Epoch != 1 || p.LastSequence != 0 || p.LastOffset != 9 {
			t.Fatalf("producer 7 state %+v %v", p, ok)
		}
	})
}

func TestProducerWindowIsFive(t *testing.T) {
	l := openTest(t, Options{Dir: "/p", FS: vfs.NewMem()})
	for i := range 7 {
		mustAppend(t, l, idemBatch(1, 0, int32(i), 1, fmt.Sprint(i)), 0)
	}
	// Batches 2..6 are remembered, 0 and 1 are not.
	for i := 2; i < 7; i++ {
		r, err := l.Append(idemBatch(1, 0, int32(i), 1, fmt.Sprint(i)), 0)
		if err != nil || !r.Duplicate || r.BaseOffset != int64(i) {
			t.Fatalf("retry of batch %d: %+v %v", i, r, err)
		}
	}
	if _, err := l.Append(idemBatch(1, 0, 1, 1, "1"), 0); !errors.Is(err, ErrOutOfOrderSequence) {
		t.Fatalf("retry older than the window: %v, want out of order", err)
	}
}

func TestProducerStateSurvivesReopenAndExpires(t *testing.T) {
	fsys := vfs.NewMem()
	// Expiry measures from the append time (the log's clock), not from the
	// batches' timestamps, which the client chose: these carry 1000 while
	// the clock says 5,000,000.
	clock := time.UnixMilli(5_000_000)
	opts := Options{Dir: "/p", FS: fsys, Now: func() time.Time { return clock }}
	l := openTest(t, opts)
	mustAppend(t, l, idemBatch(3, 2, 0, 2, "a"), 0)
	if err := l.Checkpoint(0); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, idemBatch(3, 2, 2, 2, "b"), 0) // after the checkpoint: rebuilt from the header
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	l = openTest(t, opts)
	for _, c := range []struct {
		seq  int32
		base int64
	}{{0, 0}, {2, 2}} {
		r, err := l.Append(idemBatch(3, 2, c.seq, 2, "retry"), 0)
		if err != nil || !r.Duplicate || r.BaseOffset != c.base {
			t.Fatalf("retry of seq %d after reopen: %+v %v", c.seq, r, err)
		}
	}
	if _, err := l.Append(idemBatch(3, 1, 4, 1, "old"), 0); !errors.Is(err, ErrInvalidProducerEpoch) {
		t.Fatalf("old epoch after reopen: %v", err)
	}
	exp := l.Config().ProducerExpiration.Milliseconds()
	if n := l.ExpireProducers(1001 + exp); n != 0 {
		t.Fatalf("expired %d producers by their client timestamps", n)
	}
	if p, _ := l.Producer(3); p.LastTimestamp != 5_000_000 {
		t.Fatalf("producer's last timestamp %d, want the append time 5000000", p.LastTimestamp)
	}
	if n := l.ExpireProducers(5_000_000 + exp); n != 0 {
		t.Fatalf("expired %d producers at the boundary", n)
	}
	if n := l.ExpireProducers(5_000_001 + exp); n != 1 {
		t.Fatalf("expired %d producers, want 1", n)
	}
	if _, ok := l.Producer(3); ok {
		t.Fatal("producer 3 still known after expiry")
	}
	// Unknown again, on a non-empty log: any sequence is accepted.
	if r := mustAppend(t, l, idemBatch(3, 2, 50, 1, "c"), 0); r.BaseOffset != 4 || r.Duplicate {
		t.Fatalf("append after expiry: %+v", r)
	}
}
