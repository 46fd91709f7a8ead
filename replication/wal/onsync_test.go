package wal

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestOnSync: Options.OnSync sees every fdatasync of a segment, with its
// duration: one per StoreLogs by default (after the new segment's own
// header sync), none for StoreLogs with NoSync until Sync.
func TestOnSync(t *testing.T) {
	forEachFS(t, func(t *testing.T, opts Options) {
		var n atomic.Int64
		var total atomic.Int64
		opts.OnSync = func(d time.Duration) {
			if d < 0 {
				t.Errorf("negative fsync duration %v", d)
			}
			n.Add(1)
			total.Add(int64(d))
		}
		l := mustOpen(t, opts)
		if err := l.StoreLogs(entries(1, 1, 1, 100)); err != nil {
			t.Fatal(err)
		}
		first := n.Load() // the new segment's header, then the entry
		if first < 1 {
			t.Fatalf("%d syncs reported after the first StoreLogs", first)
		}
		for i := uint64(2); i <= 4; i++ {
			if err := l.StoreLogs(entries(i, i, 1, 100)); err != nil {
				t.Fatal(err)
			}
		}
		if got := n.Load() - first; got != 3 {
			t.Fatalf("%d syncs reported for 3 StoreLogs, want 3", got)
		}
		mustClose(t, l)

		opts.Dir += "-nosync"
		opts.NoSync = true
		n.Store(0)
		l = mustOpen(t, opts)
		if err := l.StoreLogs(entries(1, 1, 1, 100)); err != nil {
			t.Fatal(err)
		}
		before := n.Load()
		for i := uint64(2); i <= 4; i++ {
			if err := l.StoreLogs(entries(i, i, 1, 100)); err != nil {
				t.Fatal(err)
			}
		}
		if got := n.Load() - before; got != 0 {
			t.Fatalf("%d syncs reported for StoreLogs with NoSync, want 0", got)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		if got := n.Load() - before; got != 1 {
			t.Fatalf("%d syncs reported for Sync with NoSync, want 1", got)
		}
		mustClose(t, l)
	})
}
