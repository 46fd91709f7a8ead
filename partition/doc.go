// Package partition is one Kafka partition's log on disk: the storage engine
// under every replica. It uses the standard library only, and reaches files
// only through the vfs seam so tests can fail operations and cut the power.
//
// # Directory layout
//
// A partition is one directory (the broker names it <topic>-<partition>):
//
//	00000000000000000000.log        segment: record batches
//	00000000000000000000.index      sparse offset index of that segment
//	00000000000000000000.timeindex  sparse time index of that segment
//	00000000000000004711.log        next segment, base offset 4711
//	...
//	checkpoint                      durable state, see below
//	checkpoint.tmp                  a checkpoint being written (ignored)
//
// Segment file names are the segment's base offset (the offset of its first
// batch) as 20 zero-padded decimal digits, so they sort in offset order. The
// last segment is the active one; all others are sealed and never change
// except by deletion.
//
// # Formats and versions
//
// Every file here has a version: segments carry Kafka's own (each batch's
// magic byte, 2; any other is refused on append and ends recovery), the
// index files are Kafka's fixed layouts (version 1 of this package; a new
// layout would need new file extensions, so an old build never misreads
// one), the checkpoint and the snapshot manifest start with a magic and a
// uint16 version (1). A build refuses a version it does not know rather
// than guess, and a new version is written only once the cluster's feature
// level allows it (broker/metadata/features.go).
//
// # Segment (.log)
//
// A segment is a sequence of Kafka v2 record batches, back to back, exactly
// as the producer sent them except for two header fields the log owns:
// baseOffset (bytes 0-7) is the offset assigned at append, and
// partitionLeaderEpoch (bytes 12-15) is the leader epoch given to Append.
// Neither is covered by the batch CRC, so the producer's CRC-32C stays valid
// and a Fetch returns the segment bytes as they are. Offsets are dense: each
// batch's baseOffset is the previous batch's baseOffset + lastOffsetDelta +
// 1. All integers are big-endian. A segment is at most 2^31-1 bytes
// (segment.bytes is capped there) and spans at most 2^32 offsets, so both fit
// the index's 32-bit fields.
//
// # Offset index (.index)
//
// Entries of 8 bytes: relative offset (uint32, the batch's baseOffset minus
// the segment base) and byte position (uint32) of a batch. An entry is made
// for the first batch after index.interval.bytes (default 4096) have been
// appended since the previous entry; position 0 is implied. Relative offsets
// and positions strictly increase. A read looks up the last entry at or below
// the offset wanted and scans batch headers from there.
//
// # Time index (.timeindex)
//
// Entries of 12 bytes: timestamp (int64) and relative offset (uint32).
// Written together with an offset index entry when the segment's largest
// batch MaxTimestamp grew since the previous time entry, and once more when
// the segment is sealed. An entry (ts, rel) means: every batch up to the
// point it was written has MaxTimestamp <= ts, and the batch at rel reached
// ts. Timestamps never decrease; relative offsets strictly increase.
//
// The index files are written from memory, and fsynced, by every checkpoint
// (and at Close), outside the append lock; a checkpoint never records a
// recovery point past a segment whose index files it has not completed, so
// every sealed segment below the recovery point has complete indexes. Rolling
// a segment fsyncs its data but leaves its index files to the next
// checkpoint. They are derived data: recovery trusts only what it can check,
// and rebuilds the rest from batch headers.
//
// # Checkpoint
//
// The file "checkpoint" holds the log's durable state as of its recovery
// point. Layout (big-endian):
//
//	magic "VCKP" | version uint16 (1) | crc32c uint32 of body | body length uint32
//	body:
//	  logStart int64
//	  recovery int64         recovery point: offset after the last fsynced batch
//	  recoverySegment int64  base offset of the segment that holds it
//	  recoveryPos int64      its byte position in that segment
//	  position uint64        caller's opaque applied position (Raft index)
//	  indexCount uint32      index entries of the recovery segment (fsynced)
//	  timeCount uint32       time index entries of the recovery segment (fsynced)
//	  sinceIndex int64       bytes appended since the last index entry
//	  maxTs int64            largest MaxTimestamp in the recovery segment, -1 if none
//	  maxTsOffset int64      base offset of the batch that set it, -1 if none
//	  epochs uint32 count, then per entry: epoch int32, start offset int64
//	  producers uint32 count, then per producer (ascending id):
//	    producer id int64, epoch int16, last timestamp int64, batches uint8 (<= 5),
//	    per batch: first sequence int32, last sequence int32, first offset int64, last offset int64
//
// It is replaced durably: write checkpoint.tmp, fsync it, rename it over
// checkpoint, fsync the directory. Checkpoint(position) fsyncs every segment
// and index file first, so everything below the recovery point is on disk
// before the checkpoint says so. A change of log start alone (DeleteRecords,
// retention) rewrites the last checkpoint with only logStart changed, before
// any segment file is deleted.
//
// # Durability
//
// Append writes to the page cache. Sync fsyncs (fdatasync) the segments
// written since the last Sync. Checkpoint also writes the index files and the
// checkpoint. Both hold the append lock only to copy what they will make
// durable, so appends never wait for an fsync. New segment files are
// created and the directory fsynced before any batch goes into them;
// deletions and truncations are followed by a directory fsync.
// A failed write, fsync or file operation is sticky: the log refuses every
// later write with a *StorageError (Kafka's KAFKA_STORAGE_ERROR) and never
// retries the fsync, because after a failed fsync the kernel may have
// dropped the dirty pages and a later success would lie. Reads of data
// already appended keep working.
//
// # Recovery on open
//
//  1. Index files without a segment are removed; checkpoint.tmp is ignored.
//  2. The checkpoint is read. An unreadable one (bad magic, version, length
//     or CRC) or one that does not match the segments (its recovery segment
//     is missing or shorter than its recovery position, or the batches it
//     counted since that segment's last index entry, the checkpointed tail,
//     fail complete validation, CRC-32C included) is ignored with a
//     warning: the whole log is then validated, and the producer and epoch
//     tables are rebuilt from batch headers alone.
//  3. Sealed segments below the recovery segment are trusted: their index
//     files are read and checked (entries in order, inside the segment); a
//     missing or inconsistent index is rebuilt from the batch headers, and a
//     segment whose headers do not chain is truncated there.
//  4. The recovery segment is restored to its checkpointed state (size, next
//     offset, index entries and tracking), so validation of what follows
//     recreates exactly the index entries the appender made.
//  5. Every batch after the recovery point is validated completely: framing,
//     magic, CRC-32C, record counts, and a baseOffset that continues the
//     previous batch. Each good batch updates the indexes, the producer table
//     and the epoch table (from its partitionLeaderEpoch). The first bad or
//     torn batch ends the log: its segment is truncated there (and fsynced),
//     every later segment is deleted, the directory is fsynced.
//  6. With Options.TruncateUncheckpointed the log is instead cut at the
//     recovery point (and emptied when there is no checkpoint): Raft
//     re-applies every entry after the checkpointed position, so keeping
//     those batches would append them twice.
//  7. The log start becomes the larger of the checkpoint's and the first
//     segment's base; the epoch table is trimmed to [log start, log end].
//     A durable log start past the recovered end (DeleteRecords made it
//     durable; the batches below it were never synced) empties the log and
//     starts it over at the log start, as Kafka does, so no offset is handed
//     out twice. With TruncateUncheckpointed the log start is clamped to the
//     end instead: the caller re-applies that DeleteRecords at the original
//     offsets.
//
// Retention and DeleteRecords never delete the segment that holds the
// recovery point or any after it, so steps 4-6 always find their segment.
// TruncateTo below the recovery point writes its new checkpoint (state
// rebuilt for the shorter log) before it changes any file, so a crash in
// between never leaves a checkpoint that points past the segments.
//
// # Snapshots
//
// Log.Snapshot(name, position) checkpoints the log and pins its files by hard
// link in snapshots/<name>/ with a manifest, so a Raft snapshot costs no copy
// of the data. The manifest and the stream share one header (big-endian):
//
//	magic "VSNP" | version uint16 (1) | body length uint32 | body crc32c uint32
//	body: position uint64 | files uint32 | per file: name length uint16, name, size int64
//
// The files are every segment up to the recovery segment and their index
// files, at their sizes as of the checkpoint, and the checkpoint itself. The
// stream (Snapshot.WriteTo) is the header followed by each file's recorded
// prefix and its crc32c (uint32). Restore writes a stream into <dir>.restore,
// checks every checksum and name (only segment file names and "checkpoint"
// are accepted), fsyncs each file, then checks every batch of every segment
// in full (CRC-32C included: the stream's checksums are the sender's, over
// what it read, so they would carry rot from below the sender's checkpoint
// along), writes a restore-complete marker, moves the
// old directory to <dir>.old, renames the staging directory into place and
// syncs the parent. Open first completes a restore whose marker is present
// and removes an incomplete one and any <dir>.old, so a crash leaves either
// the old log or the new one.
//
// # Idempotent producers and leader epochs
//
// The producer table remembers, per producer id, the epoch and the last five
// batches (sequences and offsets), as Kafka does; a batch that repeats one of
// them returns its original offsets and writes nothing. The epoch table maps
// each leader epoch to its first offset, for OffsetForLeaderEpoch. Both are
// part of the durable state (checkpoint plus the batch headers after it), so
// every replica that applies the same batches deduplicates and answers the
// same way.
//
// # Concurrency
//
// One appender and many readers; see Log. Readers hold no lock while they
// read file bytes, never wait for a write or fsync, and pin the segment they
// read so retention cannot close it under them.
package partition
