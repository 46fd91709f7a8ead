package wal

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// FuzzRecover appends arbitrary bytes to the last segment of a WAL and
// reopens it: Open never panics or fails, every entry stored before is kept
// with its contents, anything it accepts past them reads back without error
// and with consecutive indexes, the file is cut to what it accepted, and the
// log takes appends afterwards. Seeds are here and in the committed corpus
// under testdata/fuzz/FuzzRecover; a plain `go test` replays both.
func FuzzRecover(f *testing.F) {
	next := entry(fuzzEntries+1, 2, 40)
	valid := appendRecord(nil, next)
	f.Add([]byte{})
	f.Add([]byte("garbage after the last record"))
	f.Add(valid)                                         // a whole valid record: kept
	f.Add(valid[:len(valid)-1])                          // torn
	f.Add(append(append([]byte{}, valid...), 0))         // valid, then a torn prefix
	f.Add(appendRecord(nil, entry(fuzzEntries+2, 2, 5))) // valid CRC, wrong index
	bad := append([]byte{}, valid...)
	bad[len(bad)-1] ^= 1
	f.Add(bad)                                        // CRC mismatch
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) // length past MaxRecordBytes
	f.Add(make([]byte, 4096))                         // zeros, as a filesystem may leave
	f.Fuzz(func(t *testing.T, tail []byte) {
		mem := vfs.NewMem()
		opts := Options{Dir: "/wal", FS: mem, SegmentBytes: 512}
		l := mustOpen(t, opts)
		stored := entries(1, fuzzEntries, 1, 90)
		mustStore(t, l, stored)
		lastSeg := l.segs[len(l.segs)-1].path
		mustClose(t, l)
		f, err := mem.OpenFile(lastSeg, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(tail); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()

		l, err = Open(opts)
		if err != nil {
			t.Fatalf("Open after appending %d bytes: %v", len(tail), err)
		}
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		if first != 1 || last < fuzzEntries {
			t.Fatalf("recovered [%d, %d], stored [1, %d]", first, last, fuzzEntries)
		}
		for _, w := range stored {
			var got raft.Log
			if err := l.GetLog(w.Index, &got); err != nil || !sameLog(&got, w) {
				t.Fatalf("GetLog(%d) = %s, %v; want %s", w.Index, describe(&got), err, describe(w))
			}
		}
		for i := uint64(fuzzEntries + 1); i <= last; i++ {
			var got raft.Log
			if err := l.GetLog(i, &got); err != nil || got.Index != i {
				t.Fatalf("accepted index %d reads back as %d, %v", i, got.Index, err)
			}
		}
		var got raft.Log
		if err := l.GetLog(last+1, &got); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog past the end = %v", err)
		}
		s := l.segs[len(l.segs)-1]
		if st, _ := mem.Stat(s.path); st.Size != s.size() {
			t.Fatalf("segment has %d bytes, its records end at %d", st.Size, s.size())
		}
		want := append(slices.Clone(stored), mustRead(t, l, fuzzEntries+1, last)...)
		more := entries(last+1, last+3, 3, 100)
		mustStore(t, l, more)
		mustClose(t, l)
		l = mustOpen(t, opts)
		checkEntries(t, l, append(want, more...))
		mustClose(t, l)
	})
}

// TestRecoverTailRecords pins what FuzzRecover only bounds: a whole valid
// record for the next index at the tail is kept, one with the wrong index
// (its CRC fine) is cut.
func TestRecoverTailRecords(t *testing.T) {
	for _, c := range []struct {
		name string
		tail *raft.Log
		keep bool
	}{
		{"next index", entry(4, 2, 10), true},
		{"wrong index", entry(5, 2, 10), false},
		{"repeated index", entry(3, 2, 10), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewMem()
			opts := Options{Dir: "/wal", FS: mem}
			l := mustOpen(t, opts)
			stored := entries(1, 3, 1, 10)
			mustStore(t, l, stored)
			mustClose(t, l)
			f, err := mem.OpenFile(segPath(opts.Dir, 1), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(appendRecord(nil, c.tail)); err != nil {
				t.Fatal(err)
			}
			l = mustOpen(t, opts)
			if c.keep {
				stored = append(stored, c.tail)
			}
			checkEntries(t, l, stored)
			mustClose(t, l)
		})
	}
}

// fuzzEntries is how many entries FuzzRecover stores before the tail.
const fuzzEntries = 12

func mustRead(t *testing.T, l *Log, from, to uint64) []*raft.Log {
	t.Helper()
	var out []*raft.Log
	for i := from; i <= to; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		out = append(out, &e)
	}
	return out
}
