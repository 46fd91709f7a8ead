package replication

import (
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of each replica's cache of recent Raft entries.
const (
	logCacheEntries = 64
	// logCacheBytes bounds the entries' data. raft.LogCache bounds only
	// the count: 64 entries of up to MaxEntryBytes (1 MiB) each is 64 MiB
	// per replica, and under produce load every replica's cache filled
	// with ~600 KiB entries (1.3 GiB in the RF=3 benchmark's process).
	// The heap grew the whole run, so nearly every new entry landed on
	// freshly faulted pages; on this VM minor faults made system time 2.5x
	// user time and halved throughput (BENCHMARKS.md). 4 MiB still holds
	// the entries in flight: up to maxInflightEntries being replicated
	// and applied.
	logCacheBytes = 4 << 20
)

// logCache keeps the most recent entries of a replica's log in memory, in
// front of the WAL, for the two readers that want them right after they
// were stored: the leader's replication to followers and the apply of
// committed entries. It holds a contiguous range of indexes [lo, hi],
// at most logCacheEntries of them holding at most logCacheBytes of data
// (the newest entry stays even when it alone is larger); older entries
// are read from the WAL.
type logCache struct {
	raft.LogStore

	mu     sync.RWMutex
	ring   [logCacheEntries]*raft.Log // entry i at i % logCacheEntries
	lo, hi uint64                     // cached range; empty when hi < lo
	bytes  int
}

func newLogCache(store raft.LogStore) *logCache {
	return &logCache{LogStore: store, lo: 1}
}

// IsMonotonic implements raft.MonotonicLogStore as the store below does.
// It matters: raft clears a monotonic log when it installs a snapshot,
// where it would otherwise leave a gap that the WAL refuses.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// GetLog implements raft.LogStore.
func (c *logCache) GetLog(idx uint64, out *raft.Log) error {
	c.mu.RLock()
	var e *raft.Log
	if idx >= c.lo && idx <= c.hi {
		e = c.ring[idx%logCacheEntries]
	}
	c.mu.RUnlock()
	if e != nil {
		*out = *e
		return nil
	}
	return c.LogStore.GetLog(idx, out)
}

// StoreLog implements raft.LogStore.
func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: the entries are cached only once
// the WAL holds them.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	if len(logs) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hi < c.lo || logs[0].Index != c.hi+1 {
		// Not a continuation (first store, or the log restarted after a
		// snapshot): start over rather than keep a range with a gap.
		c.clearLocked()
		c.lo, c.hi = logs[0].Index, logs[0].Index-1
	}
	for _, l := range logs {
		if l.Index-c.lo+1 > logCacheEntries {
			c.evictOldestLocked() // it holds the slot l goes into
		}
		c.ring[l.Index%logCacheEntries] = l
		c.hi = l.Index
		c.bytes += len(l.Data)
	}
	for c.lo < c.hi && c.bytes > logCacheBytes {
		c.evictOldestLocked()
	}
	return nil
}

// DeleteRange implements raft.LogStore: deleted entries leave the cache
// before the WAL drops them, so a reader never finds one in the cache that
// the log no longer has.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	switch {
	case c.hi < c.lo || max < c.lo || min > c.hi:
	case min <= c.lo && max >= c.hi:
		c.clearLocked()
	case min <= c.lo: // a prefix (compaction)
		for c.lo <= max {
			c.evictOldestLocked()
		}
	case max >= c.hi: // a suffix (a conflicting tail)
		for c.hi >= min {
			e := c.ring[c.hi%logCacheEntries]
			c.bytes -= len(e.Data)
			c.ring[c.hi%logCacheEntries] = nil
			c.hi--
		}
	default: // the middle: raft never asks for it
		c.clearLocked()
	}
	c.mu.Unlock()
	return c.LogStore.DeleteRange(min, max)
}

func (c *logCache) evictOldestLocked() {
	e := c.ring[c.lo%logCacheEntries]
	c.bytes -= len(e.Data)
	c.ring[c.lo%logCacheEntries] = nil
	c.lo++
}

func (c *logCache) clearLocked() {
	c.ring = [logCacheEntries]*raft.Log{}
	c.lo, c.hi, c.bytes = 1, 0, 0
}
