package replication

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication/wal"
)

// countingStore counts the reads that reach the WAL, so a test can tell a
// cache hit from a miss.
type countingStore struct {
	*wal.Log
	reads int
}

func (s *countingStore) GetLog(idx uint64, out *raft.Log) error {
	s.reads++
	return s.Log.GetLog(idx, out)
}

func newTestLogCache(t *testing.T) (*logCache, *countingStore) {
	t.Helper()
	w, err := wal.Open(wal.Options{Dir: t.TempDir(), FS: vfs.OS{}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	cs := &countingStore{Log: w}
	return newLogCache(cs), cs
}

func cacheEntry(i uint64, size int) *raft.Log {
	data := bytes.Repeat([]byte{byte(i)}, size)
	copy(data, fmt.Sprintf("entry-%d", i))
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data}
}

func storeEntries(t *testing.T, c *logCache, from, to uint64, size int) {
	t.Helper()
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, cacheEntry(i, size))
	}
	if err := c.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

// checkRead reads idx through the cache and reports whether the WAL was
// read; the entry's contents are checked either way.
func checkRead(t *testing.T, c *logCache, cs *countingStore, idx uint64, size int) (fromWAL bool) {
	t.Helper()
	before := cs.reads
	var got raft.Log
	if err := c.GetLog(idx, &got); err != nil {
		t.Fatalf("GetLog(%d): %v", idx, err)
	}
	want := cacheEntry(idx, size)
	if got.Index != idx || got.Term != 1 || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("GetLog(%d) = index %d term %d data %q..., want %q...", idx, got.Index, got.Term, got.Data[:min(12, len(got.Data))], want.Data[:12])
	}
	return cs.reads > before
}

// The WAL is monotonic, and raft must see that through the cache (it
// changes how raft installs a snapshot).
func TestLogCacheMonotonic(t *testing.T) {
	c, _ := newTestLogCache(t)
	var store raft.LogStore = c
	if m, ok := store.(raft.MonotonicLogStore); !ok || !m.IsMonotonic() {
		t.Fatal("the cache hides the WAL's IsMonotonic")
	}
}

func TestLogCacheBoundedByCount(t *testing.T) {
	c, cs := newTestLogCache(t)
	storeEntries(t, c, 1, 100, 64)
	for i := uint64(1); i <= 100; i++ {
		fromWAL := checkRead(t, c, cs, i, 64)
		if cached := i > 100-logCacheEntries; cached == fromWAL {
			t.Fatalf("entry %d: read from the WAL %v, want %v", i, fromWAL, !cached)
		}
	}
}

func TestLogCacheBoundedByBytes(t *testing.T) {
	c, cs := newTestLogCache(t)
	const size = 600 << 10 // a produce entry under load
	keep := uint64(logCacheBytes / size)
	for i := uint64(1); i <= 20; i++ {
		storeEntries(t, c, i, i, size) // one per call, as raft stores under load
	}
	if c.bytes > logCacheBytes {
		t.Fatalf("cache holds %d bytes, over its bound %d", c.bytes, logCacheBytes)
	}
	for i := uint64(1); i <= 20; i++ {
		fromWAL := checkRead(t, c, cs, i, size)
		if cached := i > 20-keep; cached == fromWAL {
			t.Fatalf("entry %d: read from the WAL %v, want %v (the newest %d stay cached)", i, fromWAL, !cached, keep)
		}
	}

	// One entry larger than the whole bound still stays: it is the one
	// the followers and the apply want next.
	storeEntries(t, c, 21, 21, logCacheBytes+1)
	if checkRead(t, c, cs, 21, logCacheBytes+1) {
		t.Fatal("the newest entry was not cached")
	}
	if checkRead(t, c, cs, 20, size) == false {
		t.Fatal("entry 20 still cached beside an entry of more than the bound")
	}
}

func TestLogCacheDeleteRange(t *testing.T) {
	c, cs := newTestLogCache(t)
	storeEntries(t, c, 1, 10, 100)

	// Compaction removes a prefix: what is left stays cached.
	if err := c.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	for i := uint64(5); i <= 10; i++ {
		if checkRead(t, c, cs, i, 100) {
			t.Fatalf("entry %d left the cache with the compacted prefix", i)
		}
	}
	var l raft.Log
	if err := c.GetLog(3, &l); err == nil {
		t.Fatal("entry 3 still readable after DeleteRange(1, 4)")
	}

	// A conflicting tail is removed and rewritten with other contents: the
	// cache must answer with the new entries, never the old.
	if err := c.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	if err := c.GetLog(9, &l); err == nil {
		t.Fatal("entry 9 still readable after DeleteRange(8, 10)")
	}
	var logs []*raft.Log
	for i := uint64(8); i <= 10; i++ {
		e := cacheEntry(i, 100)
		e.Term = 2
		logs = append(logs, e)
	}
	if err := c.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	before := cs.reads
	for i := uint64(5); i <= 10; i++ {
		if err := c.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if wantTerm := map[bool]uint64{true: 2, false: 1}[i >= 8]; l.Index != i || l.Term != wantTerm {
			t.Fatalf("entry %d: index %d term %d, want term %d", i, l.Index, l.Term, wantTerm)
		}
	}
	if cs.reads != before {
		t.Fatalf("%d reads reached the WAL, want none", cs.reads-before)
	}

	// Everything deleted (a snapshot installed past the log), then the log
	// restarts further on: only the new range is cached.
	if err := c.DeleteRange(5, 10); err != nil {
		t.Fatal(err)
	}
	storeEntries(t, c, 50, 52, 100)
	for i := uint64(50); i <= 52; i++ {
		if checkRead(t, c, cs, i, 100) {
			t.Fatalf("entry %d not cached after the restart of the log", i)
		}
	}
	if c.lo != 50 || c.hi != 52 || c.bytes != 300 {
		t.Fatalf("cache range [%d, %d] with %d bytes, want [50, 52] with 300", c.lo, c.hi, c.bytes)
	}
}

// A write the WAL refuses is not cached: raft would otherwise read back an
// entry the log does not hold.
func TestLogCacheFailedStore(t *testing.T) {
	c, cs := newTestLogCache(t)
	storeEntries(t, c, 1, 3, 10)
	if err := c.StoreLogs([]*raft.Log{cacheEntry(7, 10)}); err == nil {
		t.Fatal("the WAL accepted a gap")
	}
	var l raft.Log
	if err := c.GetLog(7, &l); err == nil {
		t.Fatal("entry 7 readable after its store failed")
	}
	for i := uint64(1); i <= 3; i++ {
		if checkRead(t, c, cs, i, 10) {
			t.Fatalf("entry %d left the cache after a failed store", i)
		}
	}
}
