package partition

import (
	"encoding/binary"
	"sort"
)

// indexEntry maps the base offset of a batch, relative to the segment's base
// offset, to the batch's byte position in the segment. On disk: 4 bytes
// relative offset, 4 bytes position, big-endian (Kafka's .index layout).
type indexEntry struct {
	rel uint32
	pos uint32
}

const indexEntrySize = 8

// timeEntry records that the largest timestamp in the segment up to and
// including the batch at rel is ts. On disk: 8 bytes timestamp, 4 bytes
// relative offset, big-endian (Kafka's .timeindex layout).
type timeEntry struct {
	ts  int64
	rel uint32
}

const timeEntrySize = 12

// floorIndex returns the position of the last entry whose offset is at or
// below rel, or 0 (the segment start) when there is none.
func floorIndex(idx []indexEntry, rel uint32) int64 {
	i := sort.Search(len(idx), func(i int) bool { return idx[i].rel > rel })
	if i == 0 {
		return 0
	}
	return int64(idx[i-1].pos)
}

// lastBelowTime returns the relative offset of the last time entry whose
// timestamp is strictly below ts. Every batch up to and including that one
// has timestamps below ts, so a search for the first record at or after ts
// may start there. ok is false when no entry qualifies.
func lastBelowTime(times []timeEntry, ts int64) (rel uint32, ok bool) {
	i := sort.Search(len(times), func(i int) bool { return times[i].ts >= ts })
	if i == 0 {
		return 0, false
	}
	return times[i-1].rel, true
}

func appendIndexEntries(dst []byte, es []indexEntry) []byte {
	for _, e := range es {
		dst = binary.BigEndian.AppendUint32(dst, e.rel)
		dst = binary.BigEndian.AppendUint32(dst, e.pos)
	}
	return dst
}

func appendTimeEntries(dst []byte, es []timeEntry) []byte {
	for _, e := range es {
		dst = binary.BigEndian.AppendUint64(dst, uint64(e.ts))
		dst = binary.BigEndian.AppendUint32(dst, e.rel)
	}
	return dst
}

// decodeIndex parses an index file's bytes and keeps the longest prefix of
// entries that is consistent: strictly increasing offsets and positions, each
// position inside the segment's valid size and offset below its next offset.
// A torn or stale tail is dropped, never trusted. It reports whether the
// whole file was consistent.
func decodeIndex(b []byte, validSize int64, nextRel uint64) ([]indexEntry, bool) {
	n := len(b) / indexEntrySize
	es := make([]indexEntry, 0, n)
	for i := range n {
		e := indexEntry{
			rel: binary.BigEndian.Uint32(b[i*indexEntrySize:]),
			pos: binary.BigEndian.Uint32(b[i*indexEntrySize+4:]),
		}
		if int64(e.pos) >= validSize || uint64(e.rel) >= nextRel {
			return es, false
		}
		if len(es) > 0 {
			if last := es[len(es)-1]; e.rel <= last.rel || e.pos <= last.pos {
				return es, false
			}
		}
		es = append(es, e)
	}
	return es, len(b)%indexEntrySize == 0
}

// decodeTimeIndex is decodeIndex for the time index: timestamps never go
// down and offsets strictly increase.
func decodeTimeIndex(b []byte, nextRel uint64) ([]timeEntry, bool) {
	n := len(b) / timeEntrySize
	es := make([]timeEntry, 0, n)
	for i := range n {
		e := timeEntry{
			ts:  int64(binary.BigEndian.Uint64(b[i*timeEntrySize:])),
			rel: binary.BigEndian.Uint32(b[i*timeEntrySize+8:]),
		}
		if uint64(e.rel) >= nextRel {
			return es, false
		}
		if len(es) > 0 {
			if last := es[len(es)-1]; e.ts < last.ts || e.rel <= last.rel {
				return es, false
			}
		}
		es = append(es, e)
	}
	return es, len(b)%timeEntrySize == 0
}
