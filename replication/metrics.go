package replication

import "time"

// Metrics hooks a group's measurements into the broker's metrics: this
// package imports no metrics library, the broker passes functions that
// update its own (per-broker) collectors. Every field may be nil. They run
// on hot paths and on raft's and the WAL's goroutines, so they must be
// cheap (an atomic add, a histogram observation), must not block and must
// not call back into the group.
type Metrics struct {
	// Committed is told, on the leader, how long a produce entry took from
	// its proposal (raft.Apply) until it had committed on a quorum and
	// applied here: the replication share of a produce's latency. Entries
	// that fail (leadership lost, timeout) are not observed.
	Committed func(time.Duration)
	// Leadership is told each time this replica's raft becomes leader
	// (true) or stops being leader (false), as raft notifies it: before
	// the epoch-start entry makes the replica ready.
	Leadership func(gained bool)
	// WALSync is told how long each fdatasync of the raft WAL took (see
	// wal.Options.OnSync).
	WALSync func(time.Duration)
}
