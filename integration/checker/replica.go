package checker

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
)

// Replica names one replica's partition directory on its broker's disk,
// for an offline read once the broker is stopped.
type Replica struct {
	Name string // e.g. "broker-2"
	FS   vfs.FS
	Dir  string // the partition directory (broker.PartitionDir)
}

// Batch is one record batch as a replica's segment files hold it.
type Batch struct {
	BaseOffset, LastOffset int64
	Control                bool
	Segment                string // the file it is in
	Raw                    []byte // the whole batch, as stored
}

// ReplicaLog is what a replica's segment files hold, read offline.
type ReplicaLog struct {
	Name      string
	Topic     string
	Partition int32
	Dir       string
	// Start is the first batch's base offset, End the offset after the
	// last whole valid batch (both 0 when there is none).
	Start, End int64
	Batches    []Batch
	Records    []Record
	// Problems are what makes the files other than a clean, dense chain of
	// valid batches: an unreadable file, a torn tail, a bad CRC or magic,
	// a batch that does not continue the previous one, records that do not
	// decode. Each is a row 8 violation.
	Problems []string
}

// castagnoli is the CRC-32C table of the batch checksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ReadReplicas reads every replica of topic-p offline (see ReadReplica) and
// records them for the checks.
func (h *History) ReadReplicas(topic string, p int32, replicas []Replica) {
	for _, r := range replicas {
		l := ReadReplica(r.FS, r.Dir)
		l.Name, l.Topic, l.Partition = r.Name, topic, p
		h.AddReplica(l)
	}
}

// ReadReplica reads the segment files (*.log) of a partition directory
// through fsys, opened read-only, and parses them independently of the
// partition package's recovery: every batch's framing, magic and CRC-32C
// are checked, base offsets must chain from file to file, and each batch's
// records are decoded (kmsg, with kgo's decompressor). It never fails: what
// it cannot read becomes a Problem.
func ReadReplica(fsys vfs.FS, dir string) *ReplicaLog {
	l := &ReplicaLog{Dir: dir}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		l.Problems = append(l.Problems, fmt.Sprintf("list %s: %v", dir, err))
		return l
	}
	var segs []string
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ".log")
		if _, err := strconv.ParseInt(base, 10, 64); ok && err == nil && len(base) == 20 {
			segs = append(segs, n) // names sort in offset order
		}
	}
	next := int64(-1)
	for _, seg := range segs {
		base, _ := strconv.ParseInt(strings.TrimSuffix(seg, ".log"), 10, 64)
		b, err := readFile(fsys, path.Join(dir, seg))
		if err != nil {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: %v", seg, err))
			continue
		}
		if len(b) == 0 {
			continue // an empty active segment
		}
		if next >= 0 && base != next {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: segment base %d does not continue the previous segment's end %d", seg, base, next))
		}
		next = l.parseSegment(seg, base, b, next)
	}
	if len(l.Batches) > 0 {
		l.Start = l.Batches[0].BaseOffset
		l.End = l.Batches[len(l.Batches)-1].LastOffset + 1
	}
	return l
}

func readFile(fsys vfs.FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		return nil, fmt.Errorf("read %d of %d bytes: %w", n, len(b), err)
	}
	return b, nil
}

// parseSegment parses the batches of one segment file whose name says base;
// next is the offset after the previous segment's last batch. It returns
// the offset after this segment's last batch.
func (l *ReplicaLog) parseSegment(seg string, base int64, b []byte, next int64) int64 {
	pos := 0
	for pos < len(b) {
		rest := b[pos:]
		h, err := partition.ParseBatchHeader(rest)
		if err != nil || h.Size() > int64(len(rest)) || h.Length < partition.BatchHeaderSize-12 {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: torn or garbled tail: %d bytes at position %d after offset %d", seg, len(rest), pos, next))
			return next
		}
		raw := rest[:h.Size()]
		where := fmt.Sprintf("%s: batch at offset %d (position %d)", seg, h.BaseOffset, pos)
		first := pos == 0
		pos += int(h.Size())
		// The segment's own name is checked against the previous segment
		// by the caller; its first batch must sit at that name.
		if first && h.BaseOffset != base {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: the first batch of segment %d", where, base))
		}
		if !first && h.BaseOffset != next {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: does not continue the previous batch, which ends at %d", where, next))
		}
		next = h.NextOffset()
		if h.Magic != 2 {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: magic %d", where, h.Magic))
			continue
		}
		if crc := crc32.Checksum(raw[21:], castagnoli); crc != h.CRC {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: CRC %08x, the batch says %08x", where, crc, h.CRC))
			continue
		}
		bt := Batch{BaseOffset: h.BaseOffset, LastOffset: h.LastOffset(), Control: h.Control(), Segment: seg, Raw: raw}
		l.Batches = append(l.Batches, bt)
		recs, err := decodeBatch(raw, h.Control())
		if err != nil {
			l.Problems = append(l.Problems, fmt.Sprintf("%s: records: %v", where, err))
		}
		l.Records = append(l.Records, recs...)
	}
	return next
}

// decodeBatch decodes a batch's records with kmsg (and kgo's decompressor
// for compressed batches). A control batch yields one Control record per
// offset.
func decodeBatch(raw []byte, control bool) ([]Record, error) {
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(raw); err != nil {
		return nil, err
	}
	src := rb.Records
	if codec := kgo.CompressionCodecType(rb.Attributes & 0x07); codec != kgo.CodecNone {
		var err error
		if src, err = kgo.DefaultDecompressor().Decompress(src, codec); err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
	}
	var out []Record
	for i := range rb.NumRecords {
		length, n := binary.Varint(src)
		if n <= 0 || length < 0 || int64(len(src)-n) < length {
			return out, fmt.Errorf("record %d: bad length", i)
		}
		var r kmsg.Record
		if err := r.ReadFrom(src[:n+int(length)]); err != nil {
			return out, fmt.Errorf("record %d: %w", i, err)
		}
		src = src[n+int(length):]
		if r.OffsetDelta != i {
			return out, fmt.Errorf("record %d has offset delta %d", i, r.OffsetDelta)
		}
		rec := Record{Offset: rb.FirstOffset + int64(r.OffsetDelta), Control: control}
		if !control {
			rec.Key, rec.Value = string(r.Key), string(r.Value)
		}
		out = append(out, rec)
	}
	if len(src) != 0 {
		return out, fmt.Errorf("%d bytes after the last of %d records", len(src), rb.NumRecords)
	}
	return out, nil
}
