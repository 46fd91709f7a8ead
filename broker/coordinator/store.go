// # Committed offsets and group metadata: formats
//
// (To be merged into doc.go.)
//
// ## __consumer_offsets records (records.go)
//
// Each offsets partition is a Raft group whose log holds Kafka v2 record
// batches in exactly Kafka's __consumer_offsets format, so Kafka tooling
// reads them. Batches Varve writes (OffsetBatch) are uncompressed, magic 2,
// attributes 0 (CreateTime), producer id/epoch/base sequence -1, base offset
// 0 and partition leader epoch -1 until the log stamps both; every record
// has timestamp delta 0 from the leader's clock and no headers. Keys and
// values (all integers big-endian, strings int16 length + UTF-8, "compact"
// = uvarint length+1 in flexible versions; these are kmsg's types):
//
//	OffsetCommitKey     version int16 (0 or 1; Varve writes 1), group string, topic string, partition int32
//	OffsetCommitValue   version int16, offset int64,
//	                    leader_epoch int32 (v3+), metadata string, commit_timestamp int64,
//	                    expire_timestamp int64 (v1 only), tagged fields (v4+: topic id tag 0)
//	                    Varve writes v3, or v1 when the commit carries an explicit expire timestamp
//	                    (Kafka's rule). A null value is a tombstone deleting the commit.
//	GroupMetadataKey    version int16 (= 2), group string
//	GroupMetadataValue  version int16 (Varve writes 3 or 4; v4 is flexible), protocol_type string,
//	                    generation int32, protocol nullable string, leader nullable string,
//	                    current_state_timestamp int64 (v2+), members array of
//	                    {member_id, group_instance_id nullable (v3+), client_id, client_host,
//	                     rebalance_timeout int32 (v1+), session_timeout int32, subscription bytes,
//	                     assignment bytes}
//	                    A null value is a group tombstone: it deletes the metadata, not the commits.
//
// Decoding reads key versions 0-2 and value versions 0-4 of both values;
// records with other key versions (Kafka 3.x/4.x write more record types
// into the topic) or unknown value versions are skipped with an error the
// caller logs (ErrOffsetRecordSkipped), never a panic. Control batches are
// skipped, transactional ones refused.
//
// The partition of group G is Kafka's: Utils.abs(G.hashCode()) mod N, where
// hashCode is Java's String.hashCode over UTF-16 code units and Utils.abs
// maps Integer.MIN_VALUE to 0 (OffsetsPartition).
//
// ## Badger materialisation (store.go)
//
// Each broker materialises the offsets partitions it replicates in one
// badger database (OffsetStore), written only by the partitions' FSM Apply.
// Badger holds nothing that cannot be rebuilt from Raft: DropPartition and
// re-applying the partition's log rebuilds it. Every key starts with the
// layout version "v1/" and a one-letter table; integers are big-endian,
// strings a uint16 length then the bytes (group ids may contain "/", so
// separators cannot delimit them):
//
//	v1/a/<partition u32>                                   applied Raft index (u64)
//	v1/o/<partition u32><group str><topic str><p u32>      committed offset, value layout v1 below
//	v1/g/<partition u32><group str>                        Kafka's GroupMetadataValue bytes (self-versioned)
//	v1/d/<partition u32>                                   marker: a DropPartition in progress (empty value)
//
//	offset value v1: offset i64 | leader_epoch i32 | commit_ms i64 | expire_ms i64 | metadata (the rest)
//
// Data is keyed by the partition whose log held the record, so dropping a
// partition is a prefix delete, and read by the group's partition under
// the cluster's partition count.
//
// Apply writes one Raft entry's events and the partition's applied index in
// one transaction with SyncWrites, so a restart neither loses nor doubles
// an entry: Raft re-applies entries after its last snapshot, and every index
// at or below the stored one is skipped. Only an entry whose writes exceed
// badger's transaction limit (~13,000 keys with the settings below) is
// split across transactions, with the index in the last; that is safe
// because every event writes an absolute state (a put or a delete), so
// re-applying the whole entry after a crash between them ends in the same
// state.
//
// DropPartition first writes the v1/d marker and deletes the applied
// index in one transaction, then deletes the partition's keys in batches,
// then the marker; OpenOffsetStore finishes any drop it finds interrupted.

package coordinator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf16"

	"github.com/dgraph-io/badger/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Badger settings for a broker: the offsets store is small (a key per
// committed partition and one per group) and shares a 2-core machine with
// the brokers' logs, so it trades badger's throughput defaults for a small
// memory footprint: about 30 MiB (two memtable arenas of ~10 MiB and the
// block cache) plus the tables' indexes and bloom filters, which grow with
// the data.
const (
	// storeMemTableSize is 8 MiB (badger: 64 MiB). Each memtable's arena
	// is allocated whole, and a transaction may hold 15% of it (~1.2 MiB,
	// ~13,000 keys).
	storeMemTableSize = 8 << 20
	// storeNumMemtables is 2 (badger: 5): one filling, one flushing.
	storeNumMemtables = 2
	// storeValueLogFileSize is 16 MiB (badger: 1 GiB, mapped whole). Only
	// values over storeValueThreshold go there.
	storeValueLogFileSize = 16 << 20
	// storeValueThreshold is 1 MiB, badger's default and upper bound, made
	// explicit: offset values and nearly all group values stay in the LSM
	// tree, so the value log needs no garbage collection in practice.
	storeValueThreshold = 1 << 20
	// storeBlockCacheSize is 8 MiB (badger: 256 MiB). Needed because
	// tables are snappy-compressed (badger's default).
	storeBlockCacheSize = 8 << 20
	// storeNumCompactors is 2 (badger: 4), the fewest badger allows
	// besides none.
	storeNumCompactors = 2
	// storeDropChunk bounds the keys DropPartition holds at once.
	storeDropChunk = 4096
)

// Key layout, version 1: see the format block above.
const (
	storeVersion     = "v1/"
	storeTableApply  = 'a'
	storeTableOffset = 'o'
	storeTableGroup  = 'g'
	storeTableDrop   = 'd'
	storeOffsetValue = 8 + 4 + 8 + 8 // fixed fields of an offset value
)

// ErrOffsetStoreClosed: the store was used after Close.
var ErrOffsetStoreClosed = errors.New("coordinator: offset store closed")

// OffsetStore is the badger materialisation of the offsets partitions one
// broker replicates: committed offsets and group metadata by group, and each
// partition's applied Raft index.
//
// Concurrency: Apply and DropPartition for one partition must be called from
// one goroutine at a time (the partition's FSM); different partitions may be
// written concurrently, and reads may run at any time. Reads see whole Raft
// entries (but see the format notes on very large entries). Close must be
// called after every user has stopped.
//
// Failure: an error committing to badger (a failed write or fsync) is
// sticky: every later Apply and DropPartition returns it, so a replica that
// may have lost a write stops rather than diverges. Read errors are logged
// and answered as "not found".
type OffsetStore struct {
	db         *badger.DB
	log        *slog.Logger
	partitions int32
	failed     atomic.Pointer[error]
}

// OpenOffsetStore opens, creating it if needed, the offset store in dir, or
// an in-memory one when inMemory is set (dir must then be ""; for tests).
// partitions is the cluster's offsets partition count (fixed when the
// cluster is formatted): reads find a group's data under
// OffsetsPartition(group, partitions). logger receives badger's own
// messages too (its info messages at debug); nil discards.
//
// Opening finishes any DropPartition a crash interrupted.
func OpenOffsetStore(dir string, inMemory bool, partitions int32, logger *slog.Logger) (*OffsetStore, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case partitions <= 0:
		return nil, fmt.Errorf("coordinator: offsets partition count %d is not positive", partitions)
	case inMemory && dir != "":
		return nil, errors.New("coordinator: an in-memory offset store takes no directory")
	case !inMemory && dir == "":
		return nil, errors.New("coordinator: the offset store needs a directory")
	}
	opts := badger.DefaultOptions(dir).
		WithInMemory(inMemory).
		WithSyncWrites(true).
		WithMemTableSize(storeMemTableSize).
		WithNumMemtables(storeNumMemtables).
		WithValueLogFileSize(storeValueLogFileSize).
		WithValueThreshold(storeValueThreshold).
		WithBlockCacheSize(storeBlockCacheSize).
		WithNumCompactors(storeNumCompactors).
		WithMetricsEnabled(false). // badger's metrics are process-global expvars
		WithLogger(storeBadgerLogger{logger})
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("coordinator: open offset store: %w", err)
	}
	s := &OffsetStore{db: db, log: logger, partitions: partitions}
	if err := s.finishDrops(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database, flushing what it holds in memory. Writes were
// already durable (SyncWrites).
func (s *OffsetStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("coordinator: close offset store: %w", err)
	}
	return nil
}

// Partitions is the offsets partition count the store was opened with.
func (s *OffsetStore) Partitions() int32 { return s.partitions }

// Apply materialises the Raft entry at index (a Raft log index, so at
// least 1) of offsets partition partition, whose batches are the record
// batches the entry appended to the partition log. Every event of every batch, and index as the partition's
// applied index, are written in one transaction (see the format notes for
// the one exception). An index at or below the applied one is a replay and
// is skipped entirely.
//
// Records that do not decode are skipped and logged, never returned: the
// same bytes are applied on every replica, so skipping is deterministic,
// and an error here would stall the partition forever on a record that will
// never decode. A batch that fails as a whole (framing, CRC, decompression)
// is skipped whole. A record whose group belongs to another partition is
// stored under partition all the same (as Kafka loads it) and logged.
//
// It returns an error for a partition outside [0, Partitions) and for a
// badger failure (sticky: see OffsetStore).
func (s *OffsetStore) Apply(partition int32, index uint64, batches [][]byte) error {
	return s.apply(partition, index, batches)
}

// Replay applies batches to partition without recording an applied index:
// a rebuild from the log goes through it a piece at a time (so the log is
// never held in memory at once) and ends with Apply at the log's index.
// Until then AppliedIndex stays 0, so a crash part way rebuilds again.
func (s *OffsetStore) Replay(partition int32, batches [][]byte) error {
	return s.apply(partition, 0, batches)
}

// apply applies batches at index; index 0 records none (Replay).
func (s *OffsetStore) apply(partition int32, index uint64, batches [][]byte) error {
	if err := s.writable(partition); err != nil {
		return err
	}
	w := storeWriter{db: s.db, txn: s.db.NewTransaction(true)}
	defer func() { w.txn.Discard() }()
	if index > 0 {
		applied, err := storeGetIndex(w.txn, storeAppliedKey(partition))
		if err != nil {
			return s.readFailed(partition, err)
		}
		if index <= applied {
			return nil
		}
	}
	events := s.decode(partition, index, batches)
	for i := range events {
		if err := s.applyEvent(&w, partition, &events[i]); err != nil {
			return s.fail(partition, "apply", err)
		}
	}
	if index > 0 {
		if err := w.set(storeAppliedKey(partition), binary.BigEndian.AppendUint64(nil, index)); err != nil {
			return s.fail(partition, "apply", err)
		}
	}
	if err := w.txn.Commit(); err != nil {
		return s.fail(partition, "apply", err)
	}
	return nil
}

// decode collects the events of every batch, logging what it skips. A batch
// that fails as a whole contributes nothing.
func (s *OffsetStore) decode(partition int32, index uint64, batches [][]byte) []OffsetEvent {
	var events []OffsetEvent
	for i, b := range batches {
		start := len(events)
		for ev, err := range OffsetEvents(b) {
			if errors.Is(err, ErrOffsetRecordSkipped) {
				s.log.Warn("skipped offsets record", "offsets_partition", partition, "raft_index", index, "batch", i, "error", err)
				continue
			}
			if err != nil {
				s.log.Error("skipped offsets batch", "offsets_partition", partition, "raft_index", index, "batch", i, "error", err)
				events = events[:start]
				break
			}
			if p := OffsetsPartition(ev.Group, s.partitions); p != partition {
				s.log.Warn("offsets record for a group of another partition", "offsets_partition", partition,
					"raft_index", index, "group", ev.Group, "group_partition", p)
			}
			events = append(events, ev)
		}
	}
	return events
}

func (s *OffsetStore) applyEvent(w *storeWriter, partition int32, ev *OffsetEvent) error {
	switch ev.Kind {
	case OffsetEventCommit:
		return w.set(storeOffsetKey(partition, ev.Commit), storeEncodeOffset(ev.Offset))
	case OffsetEventCommitTombstone:
		return w.delete(storeOffsetKey(partition, ev.Commit))
	case OffsetEventGroup:
		return w.set(storeGroupKey(partition, ev.Group), ev.Metadata.AppendTo(nil))
	case OffsetEventGroupTombstone:
		return w.delete(storeGroupKey(partition, ev.Group))
	}
	return fmt.Errorf("unknown event kind %d", uint8(ev.Kind))
}

// AppliedIndex is the Raft index of the last entry applied to partition; 0
// when none (or after DropPartition).
func (s *OffsetStore) AppliedIndex(partition int32) uint64 {
	var idx uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		idx, err = storeGetIndex(txn, storeAppliedKey(partition))
		return err
	})
	if err != nil {
		s.readError("applied index", err, "offsets_partition", partition)
		return 0
	}
	return idx
}

// Offset is the committed offset of group for topic partition p.
func (s *OffsetStore) Offset(group, topic string, p int32) (OffsetValue, bool) {
	key := storeOffsetKey(OffsetsPartition(group, s.partitions), CommitKey{Group: group, Topic: topic, Partition: p})
	var v OffsetValue
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		b, err := storeGet(txn, key)
		if err != nil || b == nil {
			return err
		}
		v, err = storeDecodeOffset(b)
		found = err == nil
		return err
	})
	if err != nil {
		s.readError("offset", err, "group", group, "topic", topic, "partition", p)
		return OffsetValue{}, false
	}
	return v, found
}

// GroupOffsets is every committed offset of group, by topic and partition;
// nil when it has none.
func (s *OffsetStore) GroupOffsets(group string) map[string]map[int32]OffsetValue {
	prefix := storeGroupPrefix(storeTableOffset, OffsetsPartition(group, s.partitions), group)
	var out map[string]map[int32]OffsetValue
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			topic, p, ok := storeParseTopicPartition(it.Item().Key()[len(prefix):])
			if !ok {
				s.log.Error("malformed offset store key", "key", fmt.Sprintf("%q", it.Item().Key()))
				continue
			}
			var v OffsetValue
			err := it.Item().Value(func(b []byte) error {
				var err error
				v, err = storeDecodeOffset(b)
				return err
			})
			if err != nil {
				return err
			}
			if out == nil {
				out = make(map[string]map[int32]OffsetValue)
			}
			if out[topic] == nil {
				out[topic] = make(map[int32]OffsetValue)
			}
			out[topic][p] = v
		}
		return nil
	})
	if err != nil {
		s.readError("group offsets", err, "group", group)
		return nil
	}
	return out
}

// GroupMetadata is the last group metadata written for group, decoded; the
// caller owns it.
func (s *OffsetStore) GroupMetadata(group string) (*kmsg.GroupMetadataValue, bool) {
	md, err := s.groupMetadata(OffsetsPartition(group, s.partitions), group)
	if err != nil {
		s.readError("group metadata", err, "group", group)
		return nil, false
	}
	return md, md != nil
}

func (s *OffsetStore) groupMetadata(partition int32, group string) (*kmsg.GroupMetadataValue, error) {
	var md *kmsg.GroupMetadataValue
	err := s.db.View(func(txn *badger.Txn) error {
		b, err := storeGet(txn, storeGroupKey(partition, group))
		if err != nil || b == nil {
			return err
		}
		md = new(kmsg.GroupMetadataValue)
		return md.ReadFrom(b) // b is a copy: md may keep it
	})
	if err != nil {
		return nil, err
	}
	return md, nil
}

// Groups lists, sorted, the groups offsets partition partition holds
// metadata or commits for.
func (s *OffsetStore) Groups(partition int32) []string {
	seen := make(map[string]struct{})
	err := s.db.View(func(txn *badger.Txn) error {
		for _, table := range []byte{storeTableGroup, storeTableOffset} {
			prefix := storePartitionPrefix(table, partition)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Seek(prefix); it.ValidForPrefix(prefix); {
				group, _, ok := storeParseString(it.Item().Key()[len(prefix):])
				if !ok {
					s.log.Error("malformed offset store key", "key", fmt.Sprintf("%q", it.Item().Key()))
					it.Next()
					continue
				}
				seen[group] = struct{}{}
				// Skip the group's other commits.
				next := storePrefixEnd(storeGroupPrefix(table, partition, group))
				if next == nil {
					break
				}
				it.Seek(next)
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		s.readError("groups", err, "offsets_partition", partition)
		return nil
	}
	groups := make([]string, 0, len(seen))
	for g := range seen {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	return groups
}

// DropPartition forgets everything of offsets partition partition: its
// commits, group metadata and applied index. The broker calls it when it no
// longer replicates the partition, or before rebuilding it from the log. A
// crash part way is finished by the next OpenOffsetStore; until then the
// applied index is already gone, so nothing mistakes the partial state for
// an applied one.
func (s *OffsetStore) DropPartition(partition int32) error {
	if err := s.writable(partition); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(storeDropKey(partition), nil); err != nil {
			return err
		}
		return txn.Delete(storeAppliedKey(partition))
	})
	if err != nil {
		return s.fail(partition, "drop", err)
	}
	return s.drop(partition)
}

// drop deletes a partition's keys in bounded batches, then its drop marker.
func (s *OffsetStore) drop(partition int32) error {
	for _, table := range []byte{storeTableOffset, storeTableGroup} {
		prefix := storePartitionPrefix(table, partition)
		for {
			keys, err := s.keys(prefix, storeDropChunk)
			if err != nil {
				return s.readFailed(partition, err)
			}
			if len(keys) == 0 {
				break
			}
			w := storeWriter{db: s.db, txn: s.db.NewTransaction(true)}
			for _, k := range keys {
				if err = w.delete(k); err != nil {
					break
				}
			}
			if err == nil {
				err = w.txn.Commit()
			}
			w.txn.Discard()
			if err != nil {
				return s.fail(partition, "drop", err)
			}
		}
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(storeDropKey(partition)) }); err != nil {
		return s.fail(partition, "drop", err)
	}
	return nil
}

// finishDrops completes the drops a crash interrupted.
func (s *OffsetStore) finishDrops() error {
	keys, err := s.keys([]byte(storeVersion+string(storeTableDrop)+"/"), 0)
	if err != nil {
		return fmt.Errorf("coordinator: offset store: list interrupted drops: %w", err)
	}
	for _, k := range keys {
		partition, ok := storeParsePartition(k)
		if !ok {
			return fmt.Errorf("coordinator: offset store: malformed drop marker %q", k)
		}
		s.log.Info("finishing interrupted offsets partition drop", "offsets_partition", partition)
		if err := s.drop(partition); err != nil {
			return err
		}
	}
	return nil
}

// keys lists up to limit (0: all) keys under prefix.
func (s *OffsetStore) keys(prefix []byte, limit int) ([][]byte, error) {
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix) && (limit == 0 || len(keys) < limit); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, err
}

// Expired lists the commits of offsets partition partition that retention
// has expired, for the coordinator to delete through Raft with tombstones.
// nowMs is the leader's clock.
//
// What it implements of Kafka's offsets.retention.minutes (KIP-211, 2.1+):
//   - Only groups that are Empty expire: no group metadata, or metadata
//     with no members. A group whose stored metadata lists members keeps
//     its commits (Kafka's KIP-496 expiry of topics a Stable consumer
//     group no longer subscribes to is not implemented). The store sees
//     the state last written through Raft, not the coordinator's in-memory
//     state: a group that is rebalancing is judged by its last metadata.
//   - A commit with an explicit expire timestamp (value v1) expires when
//     nowMs reaches it.
//   - Otherwise retention counts from when the group became Empty, the
//     metadata's current_state_timestamp, when the metadata has a protocol
//     type and that timestamp (v2+, not -1); else (a group that only
//     commits, or old metadata) from the commit timestamp. A commit expires
//     when nowMs - base >= retention.
//
// Kafka then writes a tombstone for an Empty group with no commits left;
// that decision is the coordinator's. Read errors are logged and end the
// scan with what was found; a group whose stored metadata does not decode
// keeps its commits.
func (s *OffsetStore) Expired(partition int32, nowMs int64, retention time.Duration) []CommitKey {
	retentionMs := retention.Milliseconds()
	prefix := storePartitionPrefix(storeTableOffset, partition)
	var expired []CommitKey
	var (
		group    string
		groupMd  *kmsg.GroupMetadataValue
		haveName bool
		keep     bool // the group's commits cannot expire now
	)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			g, rest, ok := storeParseString(it.Item().Key()[len(prefix):])
			topic, p, ok2 := storeParseTopicPartition(rest)
			if !ok || !ok2 {
				s.log.Error("malformed offset store key", "key", fmt.Sprintf("%q", it.Item().Key()))
				continue
			}
			if !haveName || g != group {
				group, haveName = g, true
				b, err := storeGet(txn, storeGroupKey(partition, g))
				if err != nil {
					return err
				}
				groupMd = nil
				if b != nil {
					groupMd = new(kmsg.GroupMetadataValue)
					if err := groupMd.ReadFrom(b); err != nil {
						// Its state is unknown: expire nothing of it.
						s.log.Error("malformed group metadata in the offset store", "group", g, "error", err)
						groupMd = &kmsg.GroupMetadataValue{Members: make([]kmsg.GroupMetadataValueMember, 1)}
					}
				}
				keep = groupMd != nil && len(groupMd.Members) > 0
			}
			if keep {
				continue
			}
			var v OffsetValue
			if err := it.Item().Value(func(b []byte) error {
				var err error
				v, err = storeDecodeOffset(b)
				return err
			}); err != nil {
				return err
			}
			if storeOffsetExpired(v, groupMd, nowMs, retentionMs) {
				expired = append(expired, CommitKey{Group: g, Topic: topic, Partition: p})
			}
		}
		return nil
	})
	if err != nil {
		s.readError("expired offsets", err, "offsets_partition", partition)
	}
	return expired
}

// storeOffsetExpired applies the retention rule of Expired to one commit of
// an Empty group (md nil or without members).
func storeOffsetExpired(v OffsetValue, md *kmsg.GroupMetadataValue, nowMs, retentionMs int64) bool {
	if v.ExpireMs > 0 {
		return nowMs >= v.ExpireMs
	}
	base := v.CommitMs
	if md != nil && md.ProtocolType != "" && md.CurrentStateTimestamp >= 0 {
		base = md.CurrentStateTimestamp
	}
	return nowMs-base >= retentionMs
}

// OffsetsPartition is the offsets partition of group among n: Kafka's
// Utils.abs(group.hashCode()) % n. Java's String.hashCode is
// h = 31*h + c over the string's UTF-16 code units in int32 arithmetic, so
// a character outside the BMP counts as its two surrogates; Utils.abs maps
// Integer.MIN_VALUE (whose Math.abs is negative) to 0. Kafka decodes the
// group id from UTF-8: for valid UTF-8 the answer is Kafka's; invalid bytes
// become U+FFFD here one per byte, which Java's decoder may group
// differently. n <= 0 answers -1.
func OffsetsPartition(group string, n int32) int32 {
	if n <= 0 {
		return -1
	}
	var h int32
	for _, r := range group {
		if r >= 0x10000 {
			hi, lo := utf16.EncodeRune(r)
			h = 31*h + hi
			h = 31*h + lo
			continue
		}
		h = 31*h + r
	}
	if h == math.MinInt32 {
		h = 0
	} else if h < 0 {
		h = -h
	}
	return h % n
}

// writable checks the store may take a write for partition.
func (s *OffsetStore) writable(partition int32) error {
	if errp := s.failed.Load(); errp != nil {
		return fmt.Errorf("coordinator: offset store failed earlier: %w", *errp)
	}
	if s.db.IsClosed() {
		return ErrOffsetStoreClosed
	}
	if partition < 0 || partition >= s.partitions {
		return fmt.Errorf("coordinator: offsets partition %d outside [0, %d)", partition, s.partitions)
	}
	return nil
}

// fail records a write error. A conflict (two writers of one partition at
// once, which the contract forbids) and a closed database are returned
// without marking the store failed: nothing was written.
func (s *OffsetStore) fail(partition int32, op string, err error) error {
	err = fmt.Errorf("coordinator: offset store %s, offsets partition %d: %w", op, partition, err)
	if errors.Is(err, badger.ErrConflict) || errors.Is(err, badger.ErrDBClosed) {
		return err
	}
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error("offset store failed", "offsets_partition", partition, "error", err)
	}
	return err
}

// readFailed wraps a read error met on a write path.
func (s *OffsetStore) readFailed(partition int32, err error) error {
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrOffsetStoreClosed
	}
	return fmt.Errorf("coordinator: offset store read, offsets partition %d: %w", partition, err)
}

// readError logs a failed read (closed: not logged, answered as not found).
func (s *OffsetStore) readError(what string, err error, args ...any) {
	if errors.Is(err, badger.ErrDBClosed) {
		return
	}
	s.log.Error("offset store read failed", append([]any{"read", what, "error", err}, args...)...)
}

// storeWriter writes through a transaction, committing it and starting
// another when badger reports it too big (see the format notes: the caller
// writes the applied index last).
type storeWriter struct {
	db  *badger.DB
	txn *badger.Txn
}

func (w *storeWriter) set(k, v []byte) error {
	return w.do(func(txn *badger.Txn) error { return txn.Set(k, v) })
}

func (w *storeWriter) delete(k []byte) error {
	return w.do(func(txn *badger.Txn) error { return txn.Delete(k) })
}

func (w *storeWriter) do(op func(*badger.Txn) error) error {
	err := op(w.txn)
	if !errors.Is(err, badger.ErrTxnTooBig) {
		return err
	}
	if err := w.txn.Commit(); err != nil {
		return err
	}
	w.txn = w.db.NewTransaction(true)
	return op(w.txn)
}

// storeGet is a copy of key's value; nil, nil when absent. (A present
// value is never nil: ValueCopy of an empty value is empty, not nil.)
func storeGet(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b, err := item.ValueCopy(nil)
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

func storeGetIndex(txn *badger.Txn, key []byte) (uint64, error) {
	b, err := storeGet(txn, key)
	if err != nil || b == nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("applied index of %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

func storePartitionPrefix(table byte, partition int32) []byte {
	b := make([]byte, 0, 64)
	b = append(b, storeVersion...)
	b = append(b, table, '/')
	return binary.BigEndian.AppendUint32(b, uint32(partition))
}

func storeAppendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func storeGroupPrefix(table byte, partition int32, group string) []byte {
	return storeAppendString(storePartitionPrefix(table, partition), group)
}

func storeOffsetKey(partition int32, k CommitKey) []byte {
	b := storeGroupPrefix(storeTableOffset, partition, k.Group)
	b = storeAppendString(b, k.Topic)
	return binary.BigEndian.AppendUint32(b, uint32(k.Partition))
}

func storeGroupKey(partition int32, group string) []byte {
	return storeGroupPrefix(storeTableGroup, partition, group)
}

func storeAppliedKey(partition int32) []byte { return storePartitionPrefix(storeTableApply, partition) }

func storeDropKey(partition int32) []byte { return storePartitionPrefix(storeTableDrop, partition) }

// storeParsePartition reads the partition of a v1/<table>/<partition> key.
func storeParsePartition(key []byte) (int32, bool) {
	n := len(storeVersion) + 2
	if len(key) != n+4 || !bytes.HasPrefix(key, []byte(storeVersion)) {
		return 0, false
	}
	return int32(binary.BigEndian.Uint32(key[n:])), true
}

// storeParseString reads a length-prefixed string and returns the rest.
func storeParseString(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// storeParseTopicPartition reads the <topic><p> end of an offset key.
func storeParseTopicPartition(b []byte) (string, int32, bool) {
	topic, rest, ok := storeParseString(b)
	if !ok || len(rest) != 4 {
		return "", 0, false
	}
	return topic, int32(binary.BigEndian.Uint32(rest)), true
}

// storePrefixEnd is the smallest key above every key with prefix; nil when
// there is none (the prefix is all 0xff).
func storePrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func storeEncodeOffset(v OffsetValue) []byte {
	b := make([]byte, 0, storeOffsetValue+len(v.Metadata))
	b = binary.BigEndian.AppendUint64(b, uint64(v.Offset))
	b = binary.BigEndian.AppendUint32(b, uint32(v.LeaderEpoch))
	b = binary.BigEndian.AppendUint64(b, uint64(v.CommitMs))
	b = binary.BigEndian.AppendUint64(b, uint64(v.ExpireMs))
	return append(b, v.Metadata...)
}

func storeDecodeOffset(b []byte) (OffsetValue, error) {
	if len(b) < storeOffsetValue {
		return OffsetValue{}, fmt.Errorf("offset value of %d bytes, want at least %d", len(b), storeOffsetValue)
	}
	be := binary.BigEndian
	return OffsetValue{
		Offset:      int64(be.Uint64(b)),
		LeaderEpoch: int32(be.Uint32(b[8:])),
		CommitMs:    int64(be.Uint64(b[12:])),
		ExpireMs:    int64(be.Uint64(b[20:])),
		Metadata:    string(b[storeOffsetValue:]),
	}, nil
}

// storeBadgerLogger adapts badger's logger to slog. Badger's info messages
// (tables opened, compactions, replay) are routine, so they go out at debug,
// and its debug messages below that.
type storeBadgerLogger struct{ l *slog.Logger }

func (b storeBadgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b storeBadgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b storeBadgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b storeBadgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug-4, f, a) }

func (b storeBadgerLogger) log(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, "badger", "detail", strings.TrimSpace(fmt.Sprintf(f, a...)))
}

// Live calls fn with every record offsets partition partition still needs:
// one group record per group with metadata and one commit per committed
// offset, read in one consistent view, groups first. Written back to the
// partition's log in this order, they rebuild exactly this state, so the
// log before them can be deleted (the broker's offsets compaction). fn
// must not call the store.
func (s *OffsetStore) Live(partition int32, fn func(OffsetEvent) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		err := storeScan(txn, storePartitionPrefix(storeTableGroup, partition), func(key []byte, item *badger.Item) error {
			group, rest, ok := storeParseString(key)
			if !ok || len(rest) != 0 {
				return fmt.Errorf("coordinator: malformed group key %q", key)
			}
			b, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			md := new(kmsg.GroupMetadataValue)
			if err := md.ReadFrom(b); err != nil {
				return fmt.Errorf("coordinator: group %q metadata: %w", group, err)
			}
			return fn(OffsetEvent{Kind: OffsetEventGroup, Group: group, Metadata: md})
		})
		if err != nil {
			return err
		}
		return storeScan(txn, storePartitionPrefix(storeTableOffset, partition), func(key []byte, item *badger.Item) error {
			group, rest, ok := storeParseString(key)
			topic, p, ok2 := storeParseTopicPartition(rest)
			if !ok || !ok2 {
				return fmt.Errorf("coordinator: malformed offset key %q", key)
			}
			var v OffsetValue
			err := item.Value(func(b []byte) error {
				var err error
				v, err = storeDecodeOffset(b)
				return err
			})
			if err != nil {
				return err
			}
			return fn(OffsetEvent{Kind: OffsetEventCommit, Group: group, Commit: CommitKey{Group: group, Topic: topic, Partition: p}, Offset: v})
		})
	})
}

// storeScan calls fn with every key under prefix (the prefix cut off) and
// its item, in key order.
func storeScan(txn *badger.Txn, prefix []byte, fn func(key []byte, item *badger.Item) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		if err := fn(it.Item().Key()[len(prefix):], it.Item()); err != nil {
			return err
		}
	}
	return nil
}
