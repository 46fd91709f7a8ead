package wal

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// The conformance suite: every test runs on the real filesystem (a temp dir)
// and on vfs.Mem, and asserts the log's contents, not just its errors.

func TestEmptyLog(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		l := mustOpen(t, opts)
		checkBounds(t, l, 0, 0)
		var got raft.Log
		for _, i := range []uint64{0, 1, 100} {
			if err := l.GetLog(i, &got); err != raft.ErrLogNotFound {
				t.Fatalf("GetLog(%d) on an empty log = %v, want raft.ErrLogNotFound itself", i, err)
			}
		}
		mustDelete(t, l, 1, 10) // nothing to delete is not an error
		if err := l.StoreLogs(nil); err != nil {
			t.Fatal(err)
		}
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkBounds(t, l, 0, 0)
		if segs := segmentFiles(t, opts.FS, opts.Dir); len(segs) != 0 {
			t.Fatalf("an empty log has segments %v", segs)
		}
		mustClose(t, l)
	})
}

// TestRoundTrip: every raft.Log field survives a store, a read and a reopen,
// including the corners (nil and empty slices, zero time, extreme values).
func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891011, time.UTC)
	cases := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("hello"), AppendedAt: at},
		{Index: 2, Term: 1, Type: raft.LogNoop},
		{Index: 3, Term: 2, Type: raft.LogConfiguration, Data: []byte{0}, Extensions: []byte("chunk:1/3")},
		{Index: 4, Term: math.MaxUint64, Type: raft.LogType(255), Data: make([]byte, 70_000), AppendedAt: time.Unix(0, 1)},
		{Index: 5, Term: 3, Type: raft.LogBarrier, Extensions: []byte{1, 2, 3}, AppendedAt: time.Unix(-5, 0)},
		{Index: 6, Term: 3, Type: raft.LogCommand, Data: []byte{}, Extensions: []byte{}}, // empty reads back as nil
	}
	forEachFS(t, func(t *testing.T, opts Options) {
		l := mustOpen(t, opts)
		mustStore(t, l, cases[:1])
		if err := l.StoreLog(cases[1]); err != nil {
			t.Fatal(err)
		}
		mustStore(t, l, cases[2:])
		checkEntries(t, l, cases)
		var got raft.Log
		if err := l.GetLog(6, &got); err != nil || got.Data != nil || got.Extensions != nil {
			t.Fatalf("empty slices read back as %v %v (%v), want nil", got.Data, got.Extensions, err)
		}
		if err := l.GetLog(2, &got); err != nil || !got.AppendedAt.IsZero() {
			t.Fatalf("zero AppendedAt read back as %v (%v)", got.AppendedAt, err)
		}
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, cases)
		mustClose(t, l)
	})
}

func TestStoreLogsBatches(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		l := mustOpen(t, opts)
		var all []*raft.Log
		next := uint64(1)
		for _, n := range []uint64{1, 16, 64, 3, 1, 100} {
			batch := entries(next, next+n-1, 1+next/50, int(next%200))
			mustStore(t, l, batch)
			all = append(all, batch...)
			next += n
			checkBounds(t, l, 1, next-1)
		}
		checkEntries(t, l, all)
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, all)
		mustClose(t, l)
	})
}

// TestNotContiguous: StoreLogs refuses anything but last+1 (any index on an
// empty log), writes nothing when it refuses, and the refusal is not sticky.
func TestNotContiguous(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		l := mustOpen(t, opts)
		if err := l.StoreLog(entry(0, 1, 1)); !errors.Is(err, ErrNotContiguous) {
			t.Fatalf("index 0 on an empty log: %v, want ErrNotContiguous", err)
		}
		mustStore(t, l, entries(1, 3, 1, 10))
		bad := map[string][]*raft.Log{
			"gap":              {entry(5, 1, 1)},
			"repeat last":      {entry(3, 1, 1)},
			"behind":           {entry(1, 1, 1)},
			"gap inside batch": {entry(4, 1, 1), entry(6, 1, 1)},
			"backwards inside": {entry(4, 1, 1), entry(4, 1, 1)},
			"nil entry":        {entry(4, 1, 1), nil},
		}
		for name, logs := range bad {
			if err := l.StoreLogs(logs); !errors.Is(err, ErrNotContiguous) {
				t.Fatalf("%s: StoreLogs = %v, want ErrNotContiguous", name, err)
			}
			checkEntries(t, l, entries(1, 3, 1, 10))
		}
		all := append(entries(1, 3, 1, 10), entry(4, 2, 5))
		mustStore(t, l, all[3:])
		checkEntries(t, l, all)
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, all)
		mustClose(t, l)
	})
}

func TestDeletePrefix(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		opts.SegmentBytes = 1024
		l := mustOpen(t, opts)
		all := entries(1, 100, 1, 60) // about 10 per segment
		mustStore(t, l, all)
		before := len(segmentFiles(t, opts.FS, opts.Dir))
		mustDelete(t, l, 1, 37)
		checkEntries(t, l, all[37:])
		after := len(segmentFiles(t, opts.FS, opts.Dir))
		if after >= before || after < before-4 {
			t.Fatalf("deleting 37 of 100 entries left %d of %d segments", after, before)
		}
		mustDelete(t, l, 0, 37) // already gone: no-op
		mustDelete(t, l, 38, 38)
		checkEntries(t, l, all[38:])
		mustClose(t, l)
		l = mustOpen(t, opts) // the first index is durable, not the segment's
		checkEntries(t, l, all[38:])
		mustStore(t, l, entries(101, 105, 2, 60))
		all = append(all, entries(101, 105, 2, 60)...)
		checkEntries(t, l, all[38:])
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, all[38:])
		mustClose(t, l)
	})
}

// TestDeleteSuffixThenStore is raft's conflict resolution: delete a tail,
// then store the leader's entries (another term) from the same index.
func TestDeleteSuffixThenStore(t *testing.T) {
	cases := []struct {
		name   string
		from   uint64
		newEnd uint64
	}{
		{"last entry", 100, 100},
		{"inside the last segment", 97, 110},
		{"across segments", 41, 60},
		{"at a segment start", 0, 80}, // from is found below
		{"all but the first", 2, 50},
	}
	forEachFS(t, func(t *testing.T, opts Options) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				opts := opts
				opts.Dir = fmt.Sprintf("%s/%d", opts.Dir, c.from)
				opts.SegmentBytes = 1024
				l := mustOpen(t, opts)
				all := entries(1, 100, 1, 60)
				mustStore(t, l, all)
				from := c.from
				if from == 0 {
					from = l.segs[3].first
				}
				mustDelete(t, l, from, 100)
				checkEntries(t, l, all[:from-1])
				mustDelete(t, l, 1000, 2000) // past the end: no-op
				repl := entries(from, c.newEnd, 2, 80)
				mustStore(t, l, repl)
				want := append(all[:from-1:from-1], repl...)
				checkEntries(t, l, want)
				mustClose(t, l)
				l = mustOpen(t, opts)
				checkEntries(t, l, want)
				mustClose(t, l)
			})
		}
	})
}

// TestDeleteAll: deleting everything (raft does after restoring a snapshot
// into a monotonic store) empties the log, and the next store may start at
// any index, above or below the old first index.
func TestDeleteAll(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		opts.SegmentBytes = 1024
		l := mustOpen(t, opts)
		mustStore(t, l, entries(1, 50, 1, 60))
		mustDelete(t, l, 1, 20) // meta now says 21
		mustDelete(t, l, 21, 50)
		checkEntries(t, l, nil)
		if segs := segmentFiles(t, opts.FS, opts.Dir); len(segs) != 0 {
			t.Fatalf("an emptied log kept segments %v", segs)
		}
		mustStore(t, l, entries(500, 510, 3, 60)) // snapshot at 499
		checkEntries(t, l, entries(500, 510, 3, 60))
		mustDelete(t, l, 0, math.MaxUint64)
		mustStore(t, l, entries(7, 9, 4, 60)) // below the meta file's first index
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, entries(7, 9, 4, 60))
		mustClose(t, l)
	})
}

func TestDeleteMiddleRefused(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		l := mustOpen(t, opts)
		mustStore(t, l, entries(1, 10, 1, 5))
		if err := l.DeleteRange(3, 7); !errors.Is(err, ErrRange) {
			t.Fatalf("DeleteRange(3, 7) = %v, want ErrRange", err)
		}
		checkEntries(t, l, entries(1, 10, 1, 5))
		mustStore(t, l, entries(11, 11, 1, 5)) // not sticky
		mustClose(t, l)
	})
}

// TestSegmentRoll: segments roll at SegmentBytes, are named by their first
// index, an entry larger than a segment gets one of its own, and a batch
// spanning several segments reads back whole.
func TestSegmentRoll(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		opts.SegmentBytes = 1024
		l := mustOpen(t, opts)
		all := entries(1, 30, 1, 100)
		all = append(all, entry(31, 1, 5000), entry(32, 1, 10))
		all = append(all, entries(33, 60, 1, 200)...)
		mustStore(t, l, all[:10])
		mustStore(t, l, all[10:])
		checkEntries(t, l, all)
		names := segmentFiles(t, opts.FS, opts.Dir)
		if len(names) != len(l.segs) || len(names) < 8 {
			t.Fatalf("segments %v, log has %d", names, len(l.segs))
		}
		for i, s := range l.segs {
			if names[i] != segName(s.first) {
				t.Fatalf("segment %d is %s, holds %d first", i, names[i], s.first)
			}
			if i > 0 && s.first != l.segs[i-1].first+l.segs[i-1].count() {
				t.Fatalf("segment %d starts at %d after %d+%d", i, s.first, l.segs[i-1].first, l.segs[i-1].count())
			}
			if i < len(l.segs)-1 && s.size() > opts.SegmentBytes && s.count() != 1 {
				t.Fatalf("segment %s has %d bytes in %d entries", s.path, s.size(), s.count())
			}
			if s.first == 31 && s.count() != 1 {
				t.Fatalf("the 5000-byte entry shares its segment with %d others", s.count()-1)
			}
		}
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, all)
		// A different segment size on reopen applies from the active segment on.
		mustClose(t, l)
		opts.SegmentBytes = 64 << 10
		l = mustOpen(t, opts)
		mustStore(t, l, entries(61, 200, 1, 100))
		all = append(all, entries(61, 200, 1, 100)...)
		checkEntries(t, l, all)
		mustClose(t, l)
	})
}

// TestStableStore: missing keys answer as raft expects, values survive a
// reopen, and Get returns a copy.
func TestStableStore(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		l := mustOpen(t, opts)
		if v, err := l.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" || v != nil {
			t.Fatalf("Get of a missing key = %v, %v; raft needs an error reading exactly \"not found\"", v, err)
		}
		if v, err := l.GetUint64([]byte("CurrentTerm")); !errors.Is(err, ErrKeyNotFound) || v != 0 {
			t.Fatalf("GetUint64 of a missing key = %d, %v", v, err)
		}
		if ok, err := raft.HasExistingState(l, l, raft.NewInmemSnapshotStore()); ok || err != nil {
			t.Fatalf("HasExistingState of a new store = %v, %v", ok, err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(l.SetUint64([]byte("CurrentTerm"), 7))
		must(l.Set([]byte("LastVoteCand"), []byte("node-2")))
		must(l.SetUint64([]byte("LastVoteTerm"), 7))
		must(l.Set([]byte("empty"), nil))
		must(l.SetUint64([]byte("CurrentTerm"), 8))
		v, err := l.Get([]byte("LastVoteCand"))
		must(err)
		v[0] = 'X' // must not reach the store
		check := func(l *Log) {
			t.Helper()
			if n, err := l.GetUint64([]byte("CurrentTerm")); n != 8 || err != nil {
				t.Fatalf("CurrentTerm = %d, %v", n, err)
			}
			if n, err := l.GetUint64([]byte("LastVoteTerm")); n != 7 || err != nil {
				t.Fatalf("LastVoteTerm = %d, %v", n, err)
			}
			if v, err := l.Get([]byte("LastVoteCand")); string(v) != "node-2" || err != nil {
				t.Fatalf("LastVoteCand = %q, %v", v, err)
			}
			if v, err := l.Get([]byte("empty")); v == nil || len(v) != 0 || err != nil {
				t.Fatalf("empty value = %v, %v", v, err)
			}
			if _, err := l.GetUint64([]byte("LastVoteCand")); err == nil {
				t.Fatal("GetUint64 of a 6-byte value succeeded")
			}
		}
		check(l)
		mustClose(t, l)
		l = mustOpen(t, opts)
		check(l)
		if ok, err := raft.HasExistingState(l, l, raft.NewInmemSnapshotStore()); !ok || err != nil {
			t.Fatalf("HasExistingState with a term = %v, %v", ok, err)
		}
		mustClose(t, l)
	})
}

// TestNoSync: write caching leaves StoreLogs unsynced, and Sync and Close
// make it durable; the stable store and deletions sync regardless.
func TestNoSync(t *testing.T) {
	mem := vfs.NewMem()
	opts := Options{Dir: "/wal", FS: mem, NoSync: true}
	l := mustOpen(t, opts)
	mustStore(t, l, entries(1, 10, 1, 100))
	seg := segPath(opts.Dir, 1)
	synced := func() int64 {
		n, err := mem.SyncedSize(seg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if synced() != segHeaderSize {
		t.Fatalf("NoSync StoreLogs synced %d bytes", synced())
	}
	if err := l.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if want := l.segs[0].size(); synced() != want {
		t.Fatalf("after Sync %d bytes are synced, want %d", synced(), want)
	}
	mustStore(t, l, entries(11, 20, 1, 100))
	mem.Crash(nil) // lose everything unsynced
	l = mustOpen(t, opts)
	checkEntries(t, l, entries(1, 10, 1, 100))
	if n, err := l.GetUint64([]byte("CurrentTerm")); n != 3 || err != nil {
		t.Fatalf("term after a crash = %d, %v", n, err)
	}
	mustStore(t, l, entries(11, 20, 1, 100))
	mustClose(t, l) // Close syncs
	mem.Crash(nil)
	l = mustOpen(t, opts)
	checkEntries(t, l, entries(1, 20, 1, 100))
	mustClose(t, l)
}

// TestClosed: every method answers ErrClosed after Close.
func TestClosed(t *testing.T) {
	l := mustOpen(t, Options{Dir: "/w", FS: vfs.NewMem()})
	mustStore(t, l, entries(1, 2, 1, 1))
	mustClose(t, l)
	var got raft.Log
	_, err1 := l.FirstIndex()
	_, err2 := l.LastIndex()
	for i, err := range []error{
		err1, err2, l.GetLog(1, &got), l.StoreLog(entry(3, 1, 1)), l.DeleteRange(1, 1),
		l.Set([]byte("k"), nil), l.Sync(), l.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("call %d after Close = %v, want ErrClosed", i, err)
		}
	}
}

func TestOptions(t *testing.T) {
	mem := vfs.NewMem()
	for _, opts := range []Options{
		{FS: mem},
		{Dir: "/w", FS: mem, SegmentBytes: 100},
		{Dir: "/w", FS: mem, SegmentBytes: MaxSegmentBytes + 1},
	} {
		if _, err := Open(opts); err == nil {
			t.Fatalf("Open(%+v) succeeded", opts)
		}
	}
}

// TestConcurrentReaders runs readers against a writer that appends and
// compacts (run with -race): every read either finds the entry with the
// right contents or reports raft.ErrLogNotFound for a compacted index.
func TestConcurrentReaders(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		// NoSync keeps the real filesystem's fsyncs out of a test about
		// locking; rolls and deletions still sync.
		opts.SegmentBytes, opts.NoSync = 4096, true
		l := mustOpen(t, opts)
		mustStore(t, l, entries(1, 10, 1, 50))
		var wg sync.WaitGroup
		done := make(chan struct{})
		errs := make(chan error, 4)
		for r := range 3 {
			wg.Go(func() {
				rng := newRand(uint64(r))
				for {
					select {
					case <-done:
						return
					default:
					}
					first, _ := l.FirstIndex()
					last, _ := l.LastIndex()
					if last < first {
						errs <- fmt.Errorf("bounds [%d, %d]", first, last)
						return
					}
					i := first + rng.Uint64N(last-first+1)
					var got raft.Log
					err := l.GetLog(i, &got)
					if errors.Is(err, raft.ErrLogNotFound) {
						continue
					}
					if err != nil || !sameLog(&got, entry(i, 1, 50)) {
						errs <- fmt.Errorf("GetLog(%d) = %s, %v", i, describe(&got), err)
						return
					}
				}
			})
		}
		for next := uint64(11); next < 1500; next += 7 {
			mustStore(t, l, entries(next, next+6, 1, 50))
			if next%70 == 4 {
				first, _ := l.FirstIndex()
				mustDelete(t, l, first, next-20)
			}
		}
		close(done)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		mustClose(t, l)
	})
}
