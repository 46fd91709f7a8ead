package coordinator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"iter"
	"math"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
)

// The __consumer_offsets record formats are Kafka's, so that Kafka tooling
// (kafka-console-consumer with the offsets formatters, kcat, franz-go's kmsg)
// reads Varve's offsets partitions. The layouts are kmsg's OffsetCommitKey,
// OffsetCommitValue, GroupMetadataKey and GroupMetadataValue; the format
// block at the top of store.go lists them.

// CommitKey names one committed offset: Kafka's OffsetCommitKey.
type CommitKey struct {
	Group     string
	Topic     string
	Partition int32
}

// OffsetValue is one committed offset: Kafka's OffsetCommitValue.
type OffsetValue struct {
	Offset int64
	// LeaderEpoch is the committed leader epoch (KIP-320); -1 when unknown,
	// and always -1 for a commit with an explicit expire timestamp (value
	// version 1 has no epoch).
	LeaderEpoch int32
	// Metadata is the client's commit metadata; Kafka stores a null one as
	// "".
	Metadata string
	// CommitMs is the commit timestamp, stamped by the leader before the
	// commit is proposed.
	CommitMs int64
	// ExpireMs is an explicit expire timestamp (OffsetCommit v2-v4
	// retention_time): above 0 the commit is written as value version 1, as
	// Kafka does; 0 or less means none, and decoding answers -1.
	ExpireMs int64
}

// OffsetEventKind says what one __consumer_offsets record does.
type OffsetEventKind uint8

// The kinds of record in __consumer_offsets.
const (
	// OffsetEventCommit sets a committed offset (OffsetCommitKey and value).
	OffsetEventCommit OffsetEventKind = iota + 1
	// OffsetEventCommitTombstone deletes one committed offset (offset
	// expiry, OffsetDelete, DeleteGroups): OffsetCommitKey, null value.
	OffsetEventCommitTombstone
	// OffsetEventGroup sets a group's metadata (GroupMetadataKey and value).
	OffsetEventGroup
	// OffsetEventGroupTombstone deletes a group's metadata (the group is
	// dead): GroupMetadataKey, null value. The group's commits stay until
	// their own tombstones, as in Kafka.
	OffsetEventGroupTombstone
)

func (k OffsetEventKind) String() string {
	switch k {
	case OffsetEventCommit:
		return "commit"
	case OffsetEventCommitTombstone:
		return "commit_tombstone"
	case OffsetEventGroup:
		return "group"
	case OffsetEventGroupTombstone:
		return "group_tombstone"
	}
	return fmt.Sprintf("OffsetEventKind(%d)", uint8(k))
}

// OffsetEvent is one record of __consumer_offsets, decoded (OffsetEvents)
// or to be encoded (OffsetBatch).
type OffsetEvent struct {
	Kind OffsetEventKind
	// Group is the record's group. Decoding fills it for every kind (for
	// commits it equals Commit.Group); encoding reads it only for the group
	// kinds.
	Group string
	// Commit is the key of a commit or commit tombstone.
	Commit CommitKey
	// Offset is the value of a commit.
	Offset OffsetValue
	// Metadata is the value of a group record. Encoding takes its Version,
	// which must be 3 or 4. A decoded value owns its bytes.
	Metadata *kmsg.GroupMetadataValue
	// LogOffset is the record's offset in the partition log (decoding
	// only): the batch's base offset plus the record's offset delta.
	LogOffset int64
}

// ErrOffsetRecordSkipped marks an error OffsetEvents yields for one record
// it skipped (an unknown key or value version, such as the records of
// Kafka's KIP-848 consumer groups, or bytes that do not decode): the caller
// logs it and iteration goes on. Any other yielded error concerns the whole
// batch and ends the iteration.
var ErrOffsetRecordSkipped = errors.New("coordinator: __consumer_offsets record skipped")

// Versions Varve writes, and the highest it reads.
const (
	recordsCommitKeyVersion         = 1 // 0 and 1 are the same layout; Kafka writes 1
	recordsGroupKeyVersion          = 2
	recordsCommitValueVersion       = 3 // with leader epoch, no expire timestamp
	recordsCommitValueVersionExpire = 1 // with expire timestamp, no leader epoch
	recordsMaxCommitValueVersion    = 4
	recordsMaxGroupValueVersion     = 4
)

// Fixed batch fields Varve writes: no producer (the coordinator is not an
// idempotent producer) and no leader epoch (the log stamps it).
const (
	recordsNoProducerID  = -1
	recordsNoEpoch       = -1
	recordsNoSequence    = -1
	recordsCRCOffset     = 17 // crc: covers attributes..end
	recordsAttrsOffset   = 21
	recordsLengthAfter   = 12 // baseOffset + batchLength precede what batchLength counts
	recordsMaxStringSize = math.MaxInt16
)

var recordsCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// errRecordsStop ends a records walk when the consumer of OffsetEvents
// stops early.
var errRecordsStop = errors.New("coordinator: stop")

// OffsetBatch encodes events as one uncompressed Kafka v2 record batch for
// an offsets partition: magic 2, attributes 0 (no compression, CreateTime),
// base offset 0 and partition leader epoch -1 (the log assigns both),
// producer id, epoch and base sequence -1, every record stamped nowMs (the
// leader's clock: Raft replicas must apply identical bytes), CRC-32C over
// attributes..end. The batch passes partition.ValidateBatch and
// records.Check.
//
// A commit is written with key version 1 and value version 3 (offset,
// leader epoch, metadata, commit timestamp), or value version 1 when it has
// an expire timestamp, exactly as Kafka chooses. Group metadata is written
// with key version 2 and the value version its Metadata.Version names (3 or
// 4). Tombstones are keys with a null value.
//
// It fails on no events, an unknown kind, a nowMs below -1, a nil or
// unsupported Metadata, or a string too long for Kafka's int16-length
// strings (group, topic, commit metadata, and the strings of a version-3
// group value).
func OffsetBatch(nowMs int64, events ...OffsetEvent) ([]byte, error) {
	if len(events) == 0 {
		return nil, errors.New("coordinator: an offsets batch needs at least one record")
	}
	if nowMs < -1 {
		return nil, fmt.Errorf("coordinator: offsets batch timestamp %d is negative", nowMs)
	}
	if len(events) > math.MaxInt32 {
		return nil, fmt.Errorf("coordinator: %d records do not fit one batch", len(events))
	}
	var recs, scratch []byte
	for i, ev := range events {
		key, value, err := recordsEncode(&ev)
		if err != nil {
			return nil, fmt.Errorf("coordinator: offsets record %d (%s): %w", i, ev.Kind, err)
		}
		recs, scratch = recordsAppend(recs, scratch, int32(i), key, value)
	}
	if len(recs) > math.MaxInt32-partition.BatchHeaderSize {
		return nil, fmt.Errorf("coordinator: offsets batch of %d bytes is too large", len(recs))
	}
	return recordsFrame(nowMs, int32(len(events)), recs), nil
}

// recordsFrame puts the batch header described at OffsetBatch in front of
// n encoded records, all stamped nowMs.
func recordsFrame(nowMs int64, n int32, recs []byte) []byte {
	rb := kmsg.RecordBatch{
		FirstOffset:          0,
		Length:               int32(partition.BatchHeaderSize - recordsLengthAfter + len(recs)),
		PartitionLeaderEpoch: recordsNoEpoch,
		Magic:                2,
		Attributes:           0,
		LastOffsetDelta:      n - 1,
		FirstTimestamp:       nowMs,
		MaxTimestamp:         nowMs,
		ProducerID:           recordsNoProducerID,
		ProducerEpoch:        recordsNoEpoch,
		FirstSequence:        recordsNoSequence,
		NumRecords:           n,
		Records:              recs,
	}
	b := rb.AppendTo(make([]byte, 0, partition.BatchHeaderSize+len(recs)))
	binary.BigEndian.PutUint32(b[recordsCRCOffset:], crc32.Checksum(b[recordsAttrsOffset:], recordsCastagnoli))
	return b
}

// recordsAppend appends one v2 record (timestamp delta 0, no headers) to
// dst. kmsg encodes the body; its length, a varint of what follows it, is
// only known once the body is encoded, so the body is encoded into scratch
// with a zero length (one byte) that is then replaced.
func recordsAppend(dst, scratch []byte, delta int32, key, value []byte) ([]byte, []byte) {
	r := kmsg.Record{OffsetDelta: delta, Key: key, Value: value}
	scratch = r.AppendTo(scratch[:0])
	body := scratch[1:] // Length 0 is the single byte 0x00
	dst = binary.AppendVarint(dst, int64(len(body)))
	return append(dst, body...), scratch
}

// recordsEncode encodes one event's key and value (nil for a tombstone).
func recordsEncode(ev *OffsetEvent) (key, value []byte, err error) {
	switch ev.Kind {
	case OffsetEventCommit, OffsetEventCommitTombstone:
		c := ev.Commit
		if err := recordsCheckStrings(c.Group, c.Topic); err != nil {
			return nil, nil, err
		}
		k := kmsg.OffsetCommitKey{Version: recordsCommitKeyVersion, Group: c.Group, Topic: c.Topic, Partition: c.Partition}
		key = k.AppendTo(nil)
		if ev.Kind == OffsetEventCommitTombstone {
			return key, nil, nil
		}
		o := ev.Offset
		if err := recordsCheckStrings(o.Metadata); err != nil {
			return nil, nil, err
		}
		v := kmsg.OffsetCommitValue{
			Version:         recordsCommitValueVersion,
			Offset:          o.Offset,
			LeaderEpoch:     o.LeaderEpoch,
			Metadata:        o.Metadata,
			CommitTimestamp: o.CommitMs,
		}
		if o.ExpireMs > 0 {
			v.Version, v.LeaderEpoch, v.ExpireTimestamp = recordsCommitValueVersionExpire, 0, o.ExpireMs
		}
		return key, v.AppendTo(nil), nil
	case OffsetEventGroup, OffsetEventGroupTombstone:
		if err := recordsCheckStrings(ev.Group); err != nil {
			return nil, nil, err
		}
		k := kmsg.GroupMetadataKey{Version: recordsGroupKeyVersion, Group: ev.Group}
		key = k.AppendTo(nil)
		if ev.Kind == OffsetEventGroupTombstone {
			return key, nil, nil
		}
		md := ev.Metadata
		switch {
		case md == nil:
			return nil, nil, errors.New("no group metadata value")
		case md.Version != 3 && md.Version != 4:
			return nil, nil, fmt.Errorf("group metadata value version %d: Varve writes 3 or 4", md.Version)
		case md.Version == 3:
			if err := recordsCheckGroupStrings(md); err != nil {
				return nil, nil, err
			}
		}
		return key, md.AppendTo(nil), nil
	}
	return nil, nil, fmt.Errorf("unknown event kind %d", uint8(ev.Kind))
}

// recordsCheckStrings refuses strings too long for an int16 length.
func recordsCheckStrings(ss ...string) error {
	for _, s := range ss {
		if len(s) > recordsMaxStringSize {
			return fmt.Errorf("string of %d bytes is longer than Kafka's %d", len(s), recordsMaxStringSize)
		}
	}
	return nil
}

// recordsCheckGroupStrings checks the strings of a non-flexible group
// metadata value.
func recordsCheckGroupStrings(md *kmsg.GroupMetadataValue) error {
	if err := recordsCheckStrings(md.ProtocolType, recordsDeref(md.Protocol), recordsDeref(md.Leader)); err != nil {
		return err
	}
	for i := range md.Members {
		m := &md.Members[i]
		if err := recordsCheckStrings(m.MemberID, recordsDeref(m.InstanceID), m.ClientID, m.ClientHost); err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
	}
	return nil
}

func recordsDeref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// OffsetEvents decodes one record batch of an offsets partition, as stored
// in the partition log, and yields its records in order.
//
// The batch must be one well-formed v2 batch (partition.ValidateBatch:
// framing, magic, CRC-32C, counts); a compressed one is decompressed by
// broker/records under its default limits. A control batch yields nothing
// (Kafka's loader skips them too). A transactional batch is refused: Varve
// writes none, and its commits would be pending until a marker Varve does
// not implement.
//
// Yielded errors are of two sorts. One wrapping ErrOffsetRecordSkipped
// concerns one record, which is skipped: a key shorter than its version, a
// key version other than 0-2 (Kafka 3.x and 4.x write more record types
// into __consumer_offsets; Kafka's loader skips unknown ones as well), a
// value version above what kmsg reads (4 for both values), or a key or
// value that does not decode. Iteration goes on after it. Any other error
// concerns the whole batch (framing, CRC, decompression, record layout) and
// is the last thing yielded; events yielded before it came from the same
// batch, so a caller that wants a batch all or nothing collects first.
// Nothing panics on any input.
func OffsetEvents(batch []byte) iter.Seq2[OffsetEvent, error] {
	return func(yield func(OffsetEvent, error) bool) {
		h, err := partition.ValidateBatch(batch, 0)
		if err != nil {
			yield(OffsetEvent{}, fmt.Errorf("coordinator: offsets batch: %w", err))
			return
		}
		switch {
		case h.Control():
			return
		case h.Transactional():
			yield(OffsetEvent{}, fmt.Errorf("coordinator: offsets batch at offset %d: transactional batches are not supported", h.BaseOffset))
			return
		}
		stopped := false
		err = records.Records(batch, records.Limits{}, func(r records.Record) error {
			at := h.BaseOffset + int64(r.OffsetDelta)
			ev, err := recordsDecode(r.Key, r.Value)
			ev.LogOffset = at
			if err != nil {
				ev = OffsetEvent{LogOffset: at}
				err = fmt.Errorf("%w: offset %d: %v", ErrOffsetRecordSkipped, at, err)
			}
			if !yield(ev, err) {
				stopped = true
				return errRecordsStop
			}
			return nil
		})
		if err != nil && !stopped {
			yield(OffsetEvent{}, fmt.Errorf("coordinator: offsets batch at offset %d: %w", h.BaseOffset, err))
		}
	}
}

// recordsDecode decodes one record's key and value (nil: tombstone). key
// and value may be reused after it returns: everything kept is copied
// (kmsg's safe ReadFrom copies strings; byte fields alias their input, so
// a group value is cloned first).
func recordsDecode(key, value []byte) (OffsetEvent, error) {
	if len(key) < 2 {
		return OffsetEvent{}, fmt.Errorf("key of %d bytes holds no version", len(key))
	}
	switch kv := int16(binary.BigEndian.Uint16(key)); kv {
	case 0, 1:
		var k kmsg.OffsetCommitKey
		if err := k.ReadFrom(key); err != nil {
			return OffsetEvent{}, fmt.Errorf("offset commit key version %d: %w", kv, err)
		}
		ev := OffsetEvent{
			Kind:   OffsetEventCommitTombstone,
			Group:  k.Group,
			Commit: CommitKey{Group: k.Group, Topic: k.Topic, Partition: k.Partition},
		}
		if value == nil {
			return ev, nil
		}
		vv, err := recordsValueVersion(value, recordsMaxCommitValueVersion)
		if err != nil {
			return OffsetEvent{}, fmt.Errorf("offset commit value: %w", err)
		}
		var v kmsg.OffsetCommitValue
		if err := v.ReadFrom(value); err != nil {
			return OffsetEvent{}, fmt.Errorf("offset commit value version %d: %w", vv, err)
		}
		ev.Kind = OffsetEventCommit
		ev.Offset = OffsetValue{Offset: v.Offset, LeaderEpoch: -1, Metadata: v.Metadata, CommitMs: v.CommitTimestamp, ExpireMs: -1}
		if vv >= 3 {
			ev.Offset.LeaderEpoch = v.LeaderEpoch
		}
		if vv == 1 {
			ev.Offset.ExpireMs = v.ExpireTimestamp
		}
		return ev, nil
	case 2:
		var k kmsg.GroupMetadataKey
		if err := k.ReadFrom(key); err != nil {
			return OffsetEvent{}, fmt.Errorf("group metadata key: %w", err)
		}
		ev := OffsetEvent{Kind: OffsetEventGroupTombstone, Group: k.Group}
		if value == nil {
			return ev, nil
		}
		vv, err := recordsValueVersion(value, recordsMaxGroupValueVersion)
		if err != nil {
			return OffsetEvent{}, fmt.Errorf("group metadata value: %w", err)
		}
		md := new(kmsg.GroupMetadataValue)
		if err := md.ReadFrom(bytes.Clone(value)); err != nil {
			return OffsetEvent{}, fmt.Errorf("group metadata value version %d: %w", vv, err)
		}
		ev.Kind, ev.Metadata = OffsetEventGroup, md
		return ev, nil
	default:
		return OffsetEvent{}, fmt.Errorf("unknown key version %d", kv)
	}
}

// recordsValueVersion reads a value's int16 version and checks it is one
// kmsg decodes (0..maxVersion): kmsg would read a newer version with the
// newest layout it knows, which may be wrong.
func recordsValueVersion(value []byte, maxVersion int16) (int16, error) {
	if len(value) < 2 {
		return 0, fmt.Errorf("%d bytes hold no version", len(value))
	}
	v := int16(binary.BigEndian.Uint16(value))
	if v < 0 || v > maxVersion {
		return v, fmt.Errorf("unknown version %d", v)
	}
	return v, nil
}
