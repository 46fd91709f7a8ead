package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// Fault tests on vfs.Mem: one failed filesystem operation makes the log
// refuse every later write with the same *StorageError, reads of what was
// stored keep working, and a reopen recovers.

var errInjected = errors.New("injected fault")

func TestStickyFailure(t *testing.T) {
	cases := []struct {
		name string
		op   vfs.Op
		// do is the write the fault hits; setup ran before.
		do func(l *Log) error
	}{
		{"sync in StoreLogs", vfs.OpSync, func(l *Log) error { return l.StoreLogs(entries(21, 24, 1, 100)) }},
		{"write in StoreLogs", vfs.OpWrite, func(l *Log) error { return l.StoreLogs(entries(21, 24, 1, 100)) }},
		{"create in a roll", vfs.OpOpen, func(l *Log) error { return l.StoreLogs(entries(21, 40, 1, 100)) }},
		{"syncdir in a roll", vfs.OpSyncDir, func(l *Log) error { return l.StoreLogs(entries(21, 40, 1, 100)) }},
		{"truncate in DeleteRange", vfs.OpTruncate, func(l *Log) error { return l.DeleteRange(20, 20) }},
		{"remove in DeleteRange", vfs.OpRemove, func(l *Log) error { return l.DeleteRange(1, 15) }},
		{"rename in a prefix DeleteRange", vfs.OpRename, func(l *Log) error { return l.DeleteRange(1, 15) }},
		{"sync in Set", vfs.OpSync, func(l *Log) error { return l.SetUint64([]byte("CurrentTerm"), 2) }},
		{"syncdir in Set", vfs.OpSyncDir, func(l *Log) error { return l.SetUint64([]byte("CurrentTerm"), 2) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewMem()
			opts := Options{Dir: "/wal", FS: mem, SegmentBytes: 1024}
			l := mustOpen(t, opts)
			stored := entries(1, 20, 1, 100)
			mustStore(t, l, stored)
			if err := l.SetUint64([]byte("CurrentTerm"), 1); err != nil {
				t.Fatal(err)
			}
			first, last := uint64(1), uint64(20)
			mem.FailNext(c.op, errInjected)
			err := c.do(l)
			var se *StorageError
			if !errors.As(err, &se) || !errors.Is(err, ErrStorage) || !errors.Is(err, errInjected) {
				t.Fatalf("the faulted call returned %v, want a *StorageError wrapping the fault", err)
			}
			// Sticky: every later write fails with the same error, and no
			// fsync is retried.
			for i, err := range []error{
				l.StoreLogs(entries(last+1, last+1, 1, 10)),
				l.StoreLogs(entries(21, 21, 1, 10)),
				l.DeleteRange(1, 1),
				l.Set([]byte("LastVoteCand"), []byte("x")),
				l.Sync(),
			} {
				if err != error(se) {
					t.Fatalf("write %d after the failure = %v, want the sticky %v", i, err, se)
				}
			}
			// Reads still work. A failed deletion may already have hidden
			// what it was deleting; a failed store shows nothing.
			f, _ := l.FirstIndex()
			g, _ := l.LastIndex()
			if f < first || g > last || g < f {
				t.Fatalf("bounds after the failure [%d, %d], started [%d, %d]", f, g, first, last)
			}
			checkEntries(t, l, stored[f-1:g])
			if n, err := l.GetUint64([]byte("CurrentTerm")); n != 1 || err != nil {
				t.Fatalf("term after a failed Set = %d, %v", n, err)
			}
			_ = l.Close()
			// A fresh open (the process restarted, the disk is fine again)
			// recovers a consistent log holding what was acknowledged.
			l = mustOpen(t, opts)
			f2, _ := l.FirstIndex()
			g2, _ := l.LastIndex()
			if f2 < first || f2 > f || g2 < g {
				t.Fatalf("reopened bounds [%d, %d], before reopen [%d, %d]", f2, g2, f, g)
			}
			for i := f2; i <= g2; i++ {
				var got raft.Log
				if err := l.GetLog(i, &got); err != nil || !sameLog(&got, entry(i, 1, 100)) {
					t.Fatalf("GetLog(%d) = %s, %v", i, describe(&got), err)
				}
			}
			mustStore(t, l, entries(g2+1, g2+3, 2, 10))
			mustClose(t, l)
		})
	}
}

// TestTornTail cuts the last segment at every byte of its last two records:
// reopen keeps every whole record and logs the truncation.
func TestTornTail(t *testing.T) {
	mem := vfs.NewMem()
	opts := Options{Dir: "/wal", FS: mem}
	l := mustOpen(t, opts)
	all := entries(1, 5, 1, 30)
	mustStore(t, l, all)
	offs := l.segs[0].offs // offs[k] is where record k+1 starts, offs[5] the end
	mustClose(t, l)
	full, err := mem.ReadFile(segPath(opts.Dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	for cut := int64(offs[3]); cut <= int64(offs[5]); cut++ {
		writeFile(t, mem, segPath(opts.Dir, 1), full[:cut])
		l := mustOpen(t, opts)
		want := 3
		for want < 5 && int64(offs[want+1]) <= cut {
			want++
		}
		checkEntries(t, l, all[:want])
		if size, _ := mem.Stat(segPath(opts.Dir, 1)); size.Size != int64(offs[want]) {
			t.Fatalf("cut at %d: file has %d bytes after recovery, want %d", cut, size.Size, offs[want])
		}
		mustClose(t, l)
	}
}

// TestCorruptSealedSegment: a bad record in a segment that was fsynced
// whole is damage, not a crash; Open refuses instead of dropping entries.
func TestCorruptSealedSegment(t *testing.T) {
	mem := vfs.NewMem()
	opts := Options{Dir: "/wal", FS: mem, SegmentBytes: 1024}
	l := mustOpen(t, opts)
	mustStore(t, l, entries(1, 40, 1, 100))
	if len(l.segs) < 3 {
		t.Fatalf("want several segments, have %d", len(l.segs))
	}
	sealed := l.segs[0]
	mustClose(t, l)
	b, _ := mem.ReadFile(sealed.path)
	b[sealed.offs[1]+20] ^= 1
	writeFile(t, mem, sealed.path, b)
	if _, err := Open(opts); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a corrupt sealed segment = %v, want ErrCorrupt", err)
	}
}

// TestReadCorruption: a record damaged after it was stored fails GetLog with
// ErrCorrupt, never returns wrong contents.
func TestReadCorruption(t *testing.T) {
	mem := vfs.NewMem()
	l := mustOpen(t, Options{Dir: "/wal", FS: mem})
	mustStore(t, l, entries(1, 3, 1, 100))
	f, err := mem.OpenFile(l.segs[0].path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := mem.ReadFile(l.segs[0].path)
	b[l.segs[0].offs[1]+50] ^= 0x80
	if _, err := f.Write(b); err != nil { // rewrite from offset 0
		t.Fatal(err)
	}
	var got raft.Log
	if err := l.GetLog(2, &got); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetLog of a damaged record = %v, want ErrCorrupt", err)
	}
	if err := l.GetLog(3, &got); err != nil {
		t.Fatal(err)
	}
}

// TestUnsupportedVersion: a segment, meta or stable file from a newer format
// is refused, not guessed at.
func TestUnsupportedVersion(t *testing.T) {
	for _, name := range []string{"segment", metaFile, stableFile} {
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewMem()
			opts := Options{Dir: "/wal", FS: mem}
			l := mustOpen(t, opts)
			mustStore(t, l, entries(1, 3, 1, 10))
			mustDelete(t, l, 1, 1)
			if err := l.SetUint64([]byte("CurrentTerm"), 1); err != nil {
				t.Fatal(err)
			}
			mustClose(t, l)
			p := opts.Dir + "/" + name
			if name == "segment" {
				p = segPath(opts.Dir, 1)
			}
			b, _ := mem.ReadFile(p)
			binary.BigEndian.PutUint16(b[4:], formatVersion+1)
			switch name {
			case stableFile:
				binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
			default:
				binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
			}
			writeFile(t, mem, p, b)
			if _, err := Open(opts); !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Open = %v, want ErrUnsupportedVersion", err)
			}
		})
	}
}

// TestCorruptStable: a damaged stable file is refused; a damaged meta file is
// ignored (the first index falls back to the first segment's).
func TestCorruptStableAndMeta(t *testing.T) {
	mem := vfs.NewMem()
	opts := Options{Dir: "/wal", FS: mem}
	l := mustOpen(t, opts)
	mustStore(t, l, entries(1, 5, 1, 10))
	mustDelete(t, l, 1, 2)
	if err := l.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	meta, _ := mem.ReadFile("/wal/meta")
	writeFile(t, mem, "/wal/meta", meta[:7])
	l = mustOpen(t, opts)
	checkEntries(t, l, entries(1, 5, 1, 10)) // compacted entries came back
	mustClose(t, l)
	stable, _ := mem.ReadFile("/wal/stable")
	stable[13] ^= 1
	writeFile(t, mem, "/wal/stable", stable)
	if _, err := Open(opts); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a damaged stable file = %v, want ErrCorrupt", err)
	}
}

// writeFile replaces name's contents durably.
func writeFile(t testing.TB, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
