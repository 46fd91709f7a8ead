package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// testRecord is one record of a test batch.
type testRecord struct {
	key, value []byte
	tsDelta    int64
}

// batchSpec describes a test batch; the zero value is a one-record,
// non-idempotent batch with timestamp 1000.
type batchSpec struct {
	records       []testRecord
	baseTimestamp int64
	producerID    int64 // 0 means -1 (not idempotent) unless idempotent is set
	idempotent    bool
	producerEpoch int16
	baseSequence  int32
	logAppendTime bool
}

// makeBatch encodes a real, uncompressed Kafka v2 record batch, records and
// all, with a valid CRC-32C. Base offset and leader epoch are 0.
func makeBatch(spec batchSpec) []byte {
	if len(spec.records) == 0 {
		spec.records = []testRecord{{key: []byte("k"), value: []byte("v")}}
	}
	if spec.baseTimestamp == 0 {
		spec.baseTimestamp = 1000
	}
	var recs []byte
	maxTs := spec.baseTimestamp
	for i, r := range spec.records {
		var body []byte
		body = append(body, 0) // attributes
		body = binary.AppendVarint(body, r.tsDelta)
		body = binary.AppendVarint(body, int64(i))
		body = binary.AppendVarint(body, int64(len(r.key)))
		body = append(body, r.key...)
		body = binary.AppendVarint(body, int64(len(r.value)))
		body = append(body, r.value...)
		body = binary.AppendVarint(body, 0) // headers
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
		maxTs = max(maxTs, spec.baseTimestamp+r.tsDelta)
	}
	n := len(spec.records)
	b := make([]byte, BatchHeaderSize, BatchHeaderSize+len(recs))
	be := binary.BigEndian
	be.PutUint32(b[offBatchLength:], uint32(BatchHeaderSize-logOverhead+len(recs)))
	b[offMagic] = 2
	var attrs uint16
	if spec.logAppendTime {
		attrs |= attrTimestampType
	}
	be.PutUint16(b[offAttributes:], attrs)
	be.PutUint32(b[offLastOffsetDelta:], uint32(n-1))
	be.PutUint64(b[offBaseTimestamp:], uint64(spec.baseTimestamp))
	be.PutUint64(b[offMaxTimestamp:], uint64(maxTs))
	pid := int64(-1)
	epoch := int16(-1)
	seq := int32(-1)
	if spec.idempotent {
		pid, epoch, seq = spec.producerID, spec.producerEpoch, spec.baseSequence
	}
	be.PutUint64(b[offProducerID:], uint64(pid))
	be.PutUint16(b[offProducerEpoch:], uint16(epoch))
	be.PutUint32(b[offBaseSequence:], uint32(seq))
	be.PutUint32(b[offRecordCount:], uint32(n))
	b = append(b, recs...)
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
	return b
}

// valueBatch is a one-record batch whose value is v.
func valueBatch(v string) []byte {
	return makeBatch(batchSpec{records: []testRecord{{key: []byte("k-" + v), value: []byte(v)}}})
}

// sizedBatch is a one-record batch of about n bytes whose value starts with
// tag.
func sizedBatch(tag string, n int) []byte {
	v := make([]byte, max(n-BatchHeaderSize-16, len(tag)))
	copy(v, tag)
	for i := len(tag); i < len(v); i++ {
		v[i] = byte('a' + i%26)
	}
	return makeBatch(batchSpec{records: []testRecord{{value: v}}})
}

// decodedRecord is a record read back from a batch.
type decodedRecord struct {
	offset    int64
	timestamp int64
	key       []byte
	value     []byte
}

// decodeBatches splits bytes returned by Read into batches and decodes their
// (uncompressed) records, checking every CRC on the way.
func decodeBatches(t testing.TB, data []byte) []decodedRecord {
	t.Helper()
	recs, err := decodeRecords(data)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func decodeRecords(data []byte) ([]decodedRecord, error) {
	var out []decodedRecord
	for len(data) > 0 {
		if len(data) < BatchHeaderSize {
			return nil, fmt.Errorf("trailing %d bytes", len(data))
		}
		size := int(int32(binary.BigEndian.Uint32(data[offBatchLength:]))) + logOverhead
		if size > len(data) {
			return nil, fmt.Errorf("batch of %d bytes with %d left", size, len(data))
		}
		h, err := ValidateBatch(data[:size], 0)
		if err != nil {
			return nil, err
		}
		rs, err := batchRecords(data[:size], &h)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
		data = data[size:]
	}
	return out, nil
}

func batchRecords(b []byte, h *BatchHeader) ([]decodedRecord, error) {
	p := b[BatchHeaderSize:]
	var out []decodedRecord
	varint := func() int64 {
		v, n := binary.Varint(p)
		if n <= 0 {
			p = nil
			return 0
		}
		p = p[n:]
		return v
	}
	bytesField := func() []byte {
		n := varint()
		if n < 0 || int(n) > len(p) {
			return nil
		}
		v := p[:n]
		p = p[n:]
		return v
	}
	for range h.NumRecords {
		if len(p) == 0 {
			return nil, errors.New("records run short")
		}
		varint()  // length
		p = p[1:] // attributes
		tsDelta := varint()
		offDelta := varint()
		key := bytesField()
		val := bytesField()
		varint() // headers count (0 in tests)
		ts := h.BaseTimestamp + tsDelta
		if h.LogAppendTime() {
			ts = h.MaxTimestamp
		}
		out = append(out, decodedRecord{offset: h.BaseOffset + offDelta, timestamp: ts, key: key, value: val})
	}
	return out, nil
}

// testSearcher is the TimestampSearcher the broker would inject, for
// uncompressed test batches.
func testSearcher(batch []byte, target int64) (int64, int64, error) {
	h, err := ParseBatchHeader(batch)
	if err != nil {
		return 0, 0, err
	}
	recs, err := batchRecords(batch, &h)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range recs {
		if r.timestamp >= target {
			return r.offset, r.timestamp, nil
		}
	}
	return 0, 0, fmt.Errorf("no record at or after %d", target)
}

// filesystems is the conformance matrix: every log test runs on the real
// filesystem and on the in-memory one.
func filesystems(t *testing.T, fn func(t *testing.T, fsys vfs.FS, dir string)) {
	t.Run("os", func(t *testing.T) { fn(t, vfs.OS{}, t.TempDir()) })
	t.Run("mem", func(t *testing.T) { fn(t, vfs.NewMem(), "/data/topic-0") })
}

// openTest opens a log and closes it at the end of the test.
func openTest(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// mustAppend appends and fails the test on error.
func mustAppend(t testing.TB, l *Log, b []byte, epoch int32) AppendResult {
	t.Helper()
	orig := bytes.Clone(b)
	r, err := l.Append(b, epoch)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if !bytes.Equal(b, orig) {
		t.Fatalf("append modified the caller's batch")
	}
	if !r.Duplicate {
		// Stamp the caller's copy as the log stamped its own, so tests
		// can compare what they read with b.
		stampBatch(b, r.BaseOffset, epoch)
	}
	return r
}

// readAll reads every record from offset from to the log end.
func readAll(t testing.TB, l *Log, from int64) []decodedRecord {
	t.Helper()
	var out []decodedRecord
	end := l.LogEndOffset()
	for from < end {
		data, err := l.Read(from, 1<<20, end)
		if err != nil {
			t.Fatalf("read at %d: %v", from, err)
		}
		if len(data) == 0 {
			t.Fatalf("read at %d returned nothing before the end %d", from, end)
		}
		recs := decodeBatches(t, data)
		for _, r := range recs {
			if r.offset >= from {
				out = append(out, r)
			}
		}
		from = recs[len(recs)-1].offset + 1
	}
	return out
}

// overwriteFile replaces a file's contents through fsys, durably: how a
// test plants damage in a segment.
func overwriteFile(t testing.TB, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
