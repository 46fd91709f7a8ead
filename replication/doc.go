// Package replication makes a partition.Log a replicated state machine:
// every partition replica is a Group, one hashicorp/raft instance whose FSM
// is the partition itself; the cluster metadata is a Machine, one more
// raft instance over a small in-memory state. It knows no Kafka API.
//
// # Pieces
//
//   - Log store: replication/wal, an append-only segmented WAL per group
//     (fdatasync before an entry is acknowledged unless write caching is
//     on; term and vote always fsynced), with a cache of recent entries in
//     front (logCache: bounded by bytes as well as count, unlike raft's
//     LogCache, whose 64 large entries per replica swelled the heap).
//   - Transport: replication/transport, one multiplexed raft.Transport per
//     broker for every group (WithPreVote, WithClose).
//   - Snapshots: replication/snapstore over the vfs seam. A partition's
//     snapshot is virtual: FSM.Snapshot pins the log's own files at the
//     applied index (partition.Log.Snapshot, which checkpoints there) and
//     the store records only a reference; streaming one to a far-behind
//     follower sends those files; the follower writes the stream to its
//     store, then partition.Restore swaps it in atomically.
//
// # Invariants (DESIGN.md, "Raft invariants that are easy to get wrong")
//
//   - Restart replay. The partition's checkpoint records the Raft index of
//     the last entry it holds (its position). A group opens its log with
//     TruncateUncheckpointed, so the log holds exactly the entries up to
//     that index, and Apply skips every entry at or below it: raft replays
//     everything after its last snapshot at start. Checkpoints are written
//     on the FSM goroutine (the only appender) between entries, at most
//     CheckpointInterval apart, at every snapshot and at Close. raft
//     compacts the WAL only up to a snapshot's index minus TrailingLogs,
//     and a snapshot is a checkpoint, so the WAL always holds every entry
//     after the checkpoint. NoSnapshotRestoreOnStart is set for partitions
//     (the log is newer than any snapshot); a Machine, which keeps nothing
//     on disk, restores its latest snapshot at start and replays the rest.
//   - New-leader readiness. On winning an election the leader proposes an
//     epoch-start entry (which also starts the epoch in the partition's
//     leader-epoch table); only once it has applied, so every entry of
//     earlier terms is applied too, is the replica Ready and its
//     leadership published (GroupConfig.OnLeader). Before that every
//     request gets *NotLeaderError.
//   - Epochs. The Kafka leader epoch of an entry is EpochBase plus the
//     entry's own term (never CurrentTerm()); EpochBase comes from the
//     metadata so a re-created topic starts above every epoch seen.
//   - Determinism. Everything time-dependent is in the entry: the leader
//     stamps its append time into each produce entry (producer expiry
//     uses it, once per minute of entry time); LogAppendTime is stamped
//     into the batch bytes by the broker before Append.
//   - Fail closed. A failed write or fsync in Apply stops the replica
//     (raft is shut down, every request answers the storage error) so
//     leadership moves to a healthy replica; nothing is retried.
//
// # Entries of a partition group, version 1
//
// Every entry starts with type:byte, version:byte. A replica that meets an
// unknown type or version stops rather than skip a command the others
// applied.
//
//	type 1 produce         appendTimeMs:int64 BE, count:uvarint, count x (len:uvarint, record batch)
//	type 2 epoch start     (no body; the epoch is the entry's term)
//	type 3 delete records  offset:int64 BE (the new log start, as DeleteRecords asks)
//
// Concurrent Appends share entries: up to maxInflightEntries entries are in
// raft at once per group, and batches arriving meanwhile go together into
// the next one (up to MaxEntryBytes), so one WAL fsync carries many
// produce requests.
//
// # On disk (per group, under GroupConfig.RaftDir)
//
//	wal/        the raft log and stable store (replication/wal/doc.go)
//	snapshots/  the snapshot store (replication/snapstore/doc.go)
//
// The partition itself lives in GroupConfig.Log.Dir (partition/doc.go); its
// pinned snapshot files under snapshots/ there.
//
// # Timing
//
// Data groups: heartbeat and election 2 s, lease 1 s, commit 1 s
// (DataTiming; measured stable at 1,000 groups x 3 replicas on 2 cores).
// The metadata group: 500 ms (MetadataTiming). A group whose only voter is
// this node uses 20 ms: it has no one to hear from, and the first
// self-election would otherwise delay a new topic by seconds.
// SnapshotEntries 256 and TrailingLogs 128 per partition, plus a snapshot
// after SnapshotBytes (64 MiB) of entries: raft's defaults (8,192 /
// 10,240) would keep gigabytes of WAL per partition with large entries.
//
// A follower whose leader's broker drops its raft connections (the
// transport's PeerLost) looks for a new leader a lease after the loss
// instead of a heartbeat timeout: a follower's check runs at a random
// 2-4 s otherwise, and that detection was most of a failover (suspect.go).
package replication
