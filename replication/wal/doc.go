// Package wal is the Raft log store: an append-only, segmented write-ahead
// log with an in-memory index that implements raft.LogStore,
// raft.MonotonicLogStore and raft.StableStore for one hashicorp/raft group.
// It reaches files only through the vfs seam, so tests can fail operations
// and cut the power. Put a raft.LogCache in front of it; it has no cache of
// its own.
//
// # Directory layout
//
// One directory per raft group:
//
//	00000000000000000001.wal   segment: raft entries from index 1
//	00000000000000004711.wal   next segment, first index 4711
//	...
//	meta                       durable first index after compaction (optional)
//	stable                     the StableStore (term, vote)
//	meta.tmp, stable.tmp       a replacement being written (removed on open)
//
// Segment file names are the index of the segment's first entry as 20
// zero-padded decimal digits, so they sort in index order. The last segment
// is the active one; all others are sealed: they were fsynced before the
// next was created and never change except by deletion. The log is dense:
// each segment's first index is the previous segment's last index + 1.
//
// # Format version 1
//
// All integers are big-endian; CRCs are CRC-32C (Castagnoli). Every file
// carries the format version; a file with a version this build does not know
// is refused (ErrUnsupportedVersion), never guessed at.
//
// A segment starts with a 20-byte header:
//
//	magic "VWAL" | version uint16 (1) | reserved uint16 (0) | first index uint64 | crc32c uint32 of the 16 bytes before
//
// followed by records back to back, one per raft entry:
//
//	length uint32          bytes after the crc field (the body)
//	crc32c uint32          of the body
//	body:
//	  index uint64
//	  term uint64
//	  type uint8           raft.LogType
//	  appendedAt int64     unix nanoseconds; math.MinInt64 for the zero time
//	  data length uint32, data
//	  extensions length uint32, extensions
//
// A record is 41 bytes plus data and extensions, at most MaxRecordBytes
// (1 GiB); a segment is rolled before a record would take it past
// Options.SegmentBytes (at most 1 GiB), so a record's end offset always fits
// the in-memory index's uint32 (4 bytes per entry: 1M entries cost 4 MiB).
// AppendedAt round-trips to the nanosecond as a time.Time in the local zone
// (compare with Equal); times outside 1678-2262 do not survive. Empty Data
// and Extensions read back as nil.
//
// The meta file (20 bytes) holds the first index after a prefix deletion:
//
//	magic "VWMT" | version uint16 (1) | reserved uint16 (0) | first index uint64 | crc32c uint32 of the 16 bytes before
//
// The log's first index is the larger of the meta file's and the first
// segment's: compaction removes only whole segments, so the first segment
// may still hold entries below it, which are never read. An empty log has no
// segments; storing into it at an index below the meta file's first rewrites
// the meta file first (raft empties a monotonic store after installing a
// snapshot, then stores from the snapshot's index + 1).
//
// The stable file holds every StableStore key, sorted:
//
//	magic "VWST" | version uint16 (1) | reserved uint16 (0) | count uint32
//	count x (key length uint32, key, value length uint32, value)
//	crc32c uint32 of everything before
//
// # Durability
//
// StoreLogs encodes the batch into one buffer, writes it with one Write per
// segment it touches and, by default, fdatasyncs before it returns; readers
// see the entries only after that. A roll fsyncs the sealed segment, then
// creates the new file, writes and fsyncs its header, and fsyncs the
// directory before any entry goes into it. Options.NoSync (write caching)
// skips the fdatasync in StoreLogs only; Sync, a roll or Close makes the
// entries durable. Every DeleteRange is durable before it returns, and every
// StableStore Set rewrites the stable file atomically (write .tmp, fsync,
// rename, fsync the directory), NoSync or not: a forgotten vote or a
// truncation that comes undone breaks raft's safety, not just its
// durability. A prefix deletion writes the meta file before removing any
// segment; a suffix deletion removes later segments (highest first, then
// fsyncs the directory) before it truncates and fsyncs the segment holding
// the new end, so every intermediate state is a prefix of the log.
//
// A failed write, fsync or file operation is sticky: the log refuses every
// later write (StoreLogs, DeleteRange, Set, Sync) with a *StorageError and
// never retries the fsync, because after a failed fsync the kernel may have
// dropped the dirty pages and a later success would lie. Reads of entries
// already stored keep working.
//
// # Recovery on open
//
//  1. The directory is created durably if missing; *.tmp files are removed.
//  2. The meta file is read. An unreadable one is ignored with a warning
//     (the first index then comes from the first segment: at worst compacted,
//     committed entries come back). The stable file is read; an unreadable
//     one is refused with ErrCorrupt, since it is replaced atomically and
//     guessing could forget a vote.
//  3. Every segment is opened and scanned in index order, every record
//     checked: framing, CRC and an index one past the previous. Scanning all
//     of them builds the in-memory index; trailing logs are short (raft
//     compacts after each snapshot), so this stays cheap.
//  4. A segment that does not continue the previous one is removed with
//     every later one (only a suffix deletion interrupted by a crash, its
//     removals made durable out of order, leaves that). The last segment's
//     header may be torn (created, but never fsynced with an entry in it):
//     the file is removed. A bad record in the last segment is a torn tail:
//     the segment is truncated there and fsynced, with a warning. A bad
//     record or header in a sealed segment was fsynced whole, so it is
//     damage, not a crash: Open fails with ErrCorrupt rather than silently
//     drop entries raft acknowledged.
//  5. The first index is max(meta, first segment); segments holding only
//     entries below it (an interrupted compaction) are removed. If no entry
//     is left at or above it, every segment is removed and the log is empty.
//
// Entries whose StoreLogs returned nil (without NoSync) always survive, and
// what is recovered is a prefix of what was written since the last durable
// deletion.
//
// # Concurrency
//
// One writer at a time (StoreLogs, DeleteRange, Sync and Close take writeMu;
// Set takes stableMu) and any number of readers. The writer holds no lock
// that readers need while it writes or fsyncs: it publishes new entries into
// the index under mu afterwards, in a few instructions. GetLog holds mu
// shared for its one ReadAt, so a deleted segment is closed only once no
// reader can be in it. Lock order: writeMu, then stableMu, then mu, then
// kvMu; Close is the only holder of more than two.
package wal
