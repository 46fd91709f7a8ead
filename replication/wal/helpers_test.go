package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// fsCase is one filesystem the conformance suite runs on.
type fsCase struct {
	name string
	// open returns a filesystem and a directory in it for one test.
	open func(t testing.TB) (vfs.FS, string)
}

func fsCases() []fsCase {
	return []fsCase{
		{"os", func(t testing.TB) (vfs.FS, string) { return vfs.OS{}, t.TempDir() + "/wal" }},
		{"mem", func(t testing.TB) (vfs.FS, string) { return vfs.NewMem(), "/data/wal" }},
	}
}

// forEachFS runs body once per filesystem as a subtest.
func forEachFS(t *testing.T, body func(t *testing.T, opts Options)) {
	for _, c := range fsCases() {
		t.Run(c.name, func(t *testing.T) {
			fsys, dir := c.open(t)
			body(t, Options{Dir: dir, FS: fsys})
		})
	}
}

func mustOpen(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func mustClose(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// entry builds a deterministic entry whose contents depend on index, term
// and size, so a record with the wrong contents cannot pass as the right one.
func entry(index, term uint64, size int) *raft.Log {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(index*31 + term*7 + uint64(i))
	}
	e := &raft.Log{
		Index:      index,
		Term:       term,
		Type:       raft.LogType(index % 6),
		Data:       data,
		AppendedAt: time.Unix(1_700_000_000, int64(index)*1_000_003),
	}
	if size == 0 {
		e.Data = nil
	}
	if index%3 == 0 {
		e.Extensions = []byte(fmt.Sprintf("ext-%d-%d", index, term))
	}
	return e
}

// entries builds [from, to] with term and size.
func entries(from, to, term uint64, size int) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(i, term, size))
	}
	return out
}

// sameLog reports whether two entries are equal field by field (times with
// Equal: the WAL returns them in the local zone).
func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func describe(e *raft.Log) string {
	return fmt.Sprintf("{index %d term %d type %d data %d bytes ext %q at %v}",
		e.Index, e.Term, e.Type, len(e.Data), e.Extensions, e.AppendedAt)
}

// checkBounds asserts FirstIndex and LastIndex.
func checkBounds(t testing.TB, l *Log, first, last uint64) {
	t.Helper()
	f, err1 := l.FirstIndex()
	g, err2 := l.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if f != first || g != last {
		t.Fatalf("bounds [%d, %d], want [%d, %d]", f, g, first, last)
	}
}

// checkEntries asserts that l holds exactly want (contiguous, in order) and
// nothing next to it.
func checkEntries(t testing.TB, l *Log, want []*raft.Log) {
	t.Helper()
	if len(want) == 0 {
		checkBounds(t, l, 0, 0)
		return
	}
	first, last := want[0].Index, want[len(want)-1].Index
	checkBounds(t, l, first, last)
	for _, w := range want {
		var got raft.Log
		if err := l.GetLog(w.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", w.Index, err)
		}
		if !sameLog(&got, w) {
			t.Fatalf("GetLog(%d) = %s, want %s", w.Index, describe(&got), describe(w))
		}
	}
	for _, i := range []uint64{first - 1, last + 1} {
		var got raft.Log
		if err := l.GetLog(i, &got); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) outside [%d, %d] = %v, want raft.ErrLogNotFound", i, first, last, err)
		}
	}
}

func mustStore(t testing.TB, l *Log, logs []*raft.Log) {
	t.Helper()
	if err := l.StoreLogs(logs); err != nil {
		t.Fatalf("StoreLogs [%d, %d]: %v", logs[0].Index, logs[len(logs)-1].Index, err)
	}
}

func mustDelete(t testing.TB, l *Log, from, to uint64) {
	t.Helper()
	if err := l.DeleteRange(from, to); err != nil {
		t.Fatalf("DeleteRange(%d, %d): %v", from, to, err)
	}
}

// segmentFiles lists the segment files in dir.
func segmentFiles(t testing.TB, fsys vfs.FS, dir string) []string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if strings.HasSuffix(n, segExt) {
			segs = append(segs, n)
		}
	}
	return segs
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x3a1)) }
