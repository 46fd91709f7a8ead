package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path"
	"reflect"
	"runtime"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// Fuzz targets. Each has seeds here and a committed corpus under
// testdata/fuzz/<Name>; a plain `go test` replays both.

// fixBatch returns a copy of b (at least a header long) with the length,
// magic and CRC made right, so that the fuzzer gets past them to the checks
// behind.
func fixBatch(b []byte) []byte {
	c := bytes.Clone(b)
	binary.BigEndian.PutUint32(c[offBatchLength:], uint32(len(c)-logOverhead))
	c[offMagic] = 2
	binary.BigEndian.PutUint32(c[offCRC:], crc32.Checksum(c[offAttributes:], castagnoli))
	return c
}

// FuzzValidateBatch: ValidateBatch never panics and refuses only with
// ErrCorruptBatch or ErrInvalidRecord. What it accepts is exactly one batch
// of len(b) bytes, magic 2, a matching CRC and numRecords = lastOffsetDelta
// + 1; the size limit is checked against len(b); and stamping any base
// offset and leader epoch keeps it valid, changes only those two fields and
// leaves every other byte alone.
func FuzzValidateBatch(f *testing.F) {
	f.Add(valueBatch("x"))
	f.Add(makeBatch(batchSpec{records: []testRecord{{value: []byte("a")}, {value: []byte("b"), tsDelta: 3}}, idempotent: true, producerID: 7, producerEpoch: 1, baseSequence: 40}))
	f.Add(makeBatch(batchSpec{logAppendTime: true})[:BatchHeaderSize])
	f.Add([]byte{})
	f.Add(make([]byte, BatchHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkValidate(t, b)
		if len(b) >= BatchHeaderSize {
			checkValidate(t, fixBatch(b))
		}
	})
}

func checkValidate(t *testing.T, b []byte) {
	h, err := ValidateBatch(b, 0)
	if err != nil {
		if !errors.Is(err, ErrCorruptBatch) && !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("refused with %v, want ErrCorruptBatch or ErrInvalidRecord", err)
		}
		return
	}
	switch {
	case h.Size() != int64(len(b)):
		t.Fatalf("accepted a batch of size %d given %d bytes", h.Size(), len(b))
	case h.NumRecords <= 0 || int64(h.NumRecords) != int64(h.LastOffsetDelta)+1:
		t.Fatalf("accepted %d records with last offset delta %d", h.NumRecords, h.LastOffsetDelta)
	case h.Magic != 2 || h.CRC != crc32.Checksum(b[offAttributes:], castagnoli):
		t.Fatalf("accepted magic %d crc %08x", h.Magic, h.CRC)
	case h.Idempotent() && (h.ProducerEpoch < 0 || h.BaseSequence < 0):
		t.Fatalf("accepted producer %d epoch %d sequence %d", h.ProducerID, h.ProducerEpoch, h.BaseSequence)
	}
	if _, err := ValidateBatch(b, len(b)); err != nil {
		t.Fatalf("refused at a limit of its own size: %v", err)
	}
	if _, err := ValidateBatch(b, len(b)-1); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("one byte over the limit: %v, want ErrMessageTooLarge", err)
	}
	for _, st := range []struct {
		base  int64
		epoch int32
	}{{0, 0}, {h.BaseOffset + 1, -1}, {1 << 40, 7}, {math.MaxInt64 - int64(h.LastOffsetDelta), math.MaxInt32}} {
		c := bytes.Clone(b)
		stampBatch(c, st.base, st.epoch)
		h2, err := ValidateBatch(c, 0)
		want := h
		want.BaseOffset, want.PartitionLeaderEpoch = st.base, st.epoch
		if err != nil || h2 != want {
			t.Fatalf("stamped (%d, %d): %+v, %v; want %+v", st.base, st.epoch, h2, err, want)
		}
		if !bytes.Equal(c[offBatchLength:offLeaderEpoch], b[offBatchLength:offLeaderEpoch]) || !bytes.Equal(c[offMagic:], b[offMagic:]) {
			t.Fatal("stamping changed bytes other than base offset and leader epoch")
		}
	}
}

// recoverTailOptions is the log FuzzRecoverTail writes: small segments, so
// a few dozen batches roll several.
func recoverTailOptions(mem *vfs.Mem) Options {
	cfg := DefaultConfig()
	cfg.SegmentBytes, cfg.IndexIntervalBytes = 2048, 200
	return Options{Dir: "/fuzz/t-0", FS: mem, Config: cfg, FindTimestamp: testSearcher}
}

// recoverTailBatch is the i-th batch FuzzRecoverTail appends: 1-3 records of
// varying size, every third one idempotent.
func recoverTailBatch(i int) []byte {
	spec := batchSpec{baseTimestamp: int64(5000 + 10*i)}
	for j := range 1 + i%3 {
		spec.records = append(spec.records, testRecord{key: fmt.Appendf(nil, "k%d", i), value: bytes.Repeat([]byte{byte('a' + i%26)}, 20+(i*37+j*11)%300), tsDelta: int64(j)})
	}
	if i%3 == 0 {
		spec.idempotent, spec.producerID, spec.baseSequence = true, 77, int32(i/3)
	}
	return makeBatch(spec)
}

// FuzzRecoverTail writes count valid batches through a Log (checkpointed or
// not), closes it, appends arbitrary bytes to the active segment, and
// reopens. Open must succeed and keep every batch written, byte for byte,
// readable at every offset; whatever it accepted past them must be whole
// valid batches with dense offsets; the garbage is cut from the file; the
// next append lands at the log end and survives a reopen; a checkpoint
// written before keeps its position and recovery point.
func FuzzRecoverTail(f *testing.F) {
	f.Add(0, false, []byte{})
	f.Add(5, false, []byte("not a batch"))
	f.Add(12, true, make([]byte, 100))
	f.Add(30, true, recoverTailBatch(99)[:70])
	f.Add(7, false, bytes.Repeat([]byte{0xff}, BatchHeaderSize+10))
	f.Fuzz(func(t *testing.T, count int, checkpoint bool, tail []byte) {
		n := int(uint(count) % 40)
		tail = tail[:min(len(tail), 64<<10)]
		mem := vfs.NewMem()
		opts := recoverTailOptions(mem)
		l, err := Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		var written [][]byte
		for i := range n {
			b := recoverTailBatch(i)
			r, err := l.Append(b, int32(i/10))
			if err != nil {
				t.Fatal(err)
			}
			stampBatch(b, r.BaseOffset, int32(i/10)) // as the log wrote it
			written = append(written, b)
		}
		if checkpoint {
			if err := l.Checkpoint(uint64(n) + 1); err != nil {
				t.Fatal(err)
			}
		}
		wantEnd := l.LogEndOffset()
		segs := l.Segments()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		name := path.Join(opts.Dir, segmentFileName(segs[len(segs)-1], logExt))
		af, err := mem.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := af.Write(tail); err != nil {
			t.Fatal(err)
		}
		af.Close()

		l, err = Open(opts)
		if err != nil {
			t.Fatalf("open after %d garbage bytes: %v", len(tail), err)
		}
		defer l.Close()
		end := l.LogEndOffset()
		if l.LogStartOffset() != 0 || end < wantEnd {
			t.Fatalf("log [%d, %d) after garbage, want [0, >= %d)", l.LogStartOffset(), end, wantEnd)
		}
		off := int64(0)
		for i, b := range written {
			h, _ := ParseBatchHeader(b)
			for o := off; o <= h.LastOffset(); o++ {
				if data, err := l.Read(o, 1, end); err != nil || !bytes.Equal(data, b) {
					t.Fatalf("read at %d: %v; want batch %d as written", o, err, i)
				}
			}
			off = h.NextOffset()
		}
		// Whatever was accepted past the batches written is valid batches
		// with dense offsets.
		for off < end {
			data, err := l.Read(off, 1, end)
			if err != nil {
				t.Fatalf("read at %d past the written batches: %v", off, err)
			}
			h, err := ValidateBatch(data, 0)
			if err != nil || h.BaseOffset != off {
				t.Fatalf("accepted a tail batch at %d: %+v, %v", off, h, err)
			}
			off = h.NextOffset()
		}
		l.mu.RLock()
		act := l.active()
		actName, actSize := act.path(logExt), act.size
		l.mu.RUnlock()
		if st, err := mem.Stat(actName); err != nil || st.Size != actSize {
			t.Fatalf("active segment file %d bytes (%v), but the log holds %d of it: the garbage was not cut", st.Size, err, actSize)
		}
		if checkpoint {
			if pos, rp := l.Checkpointed(); pos != uint64(n)+1 || rp != wantEnd {
				t.Fatalf("checkpointed (%d, %d), want (%d, %d)", pos, rp, n+1, wantEnd)
			}
		}
		next := valueBatch("next")
		if r, err := l.Append(next, 5); err != nil || r.BaseOffset != end {
			t.Fatalf("append after recovery: %+v, %v; want base offset %d", r, err, end)
		}
		stampBatch(next, end, 5)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		if data, err := l.Read(end, 1, end+1); err != nil || !bytes.Equal(data, next) || l.LogEndOffset() != end+1 {
			t.Fatalf("after reopening, read at %d: %v, log end %d", end, err, l.LogEndOffset())
		}
	})
}

// withCheckpointHeader wraps body in a valid checkpoint header, so that the
// fuzzer reaches the body parser.
func withCheckpointHeader(body []byte) []byte {
	out := append([]byte(checkpointMagic), 0, checkpointVersion)
	out = binary.BigEndian.AppendUint32(out, crc32.Checksum(body, castagnoli))
	out = binary.BigEndian.AppendUint32(out, uint32(len(body)))
	return append(out, body...)
}

// fuzzSeedCheckpoint is a checkpoint with every section filled.
func fuzzSeedCheckpoint() *checkpointState {
	return &checkpointState{
		logStart: 3, recovery: 90, recoverySegment: 40, recoveryPos: 777, position: 1234,
		active: segTrack{indexCount: 2, timeCount: 1, sinceIndex: 100, maxTs: 5000, maxTsOffset: 88},
		epochs: epochTable{{epoch: 1, start: 3}, {epoch: 4, start: 60}},
		producers: producerTable{
			7:  {epoch: 2, lastTimestamp: 4999, batches: []producerBatch{{0, 4, 10, 14}, {5, 5, 20, 20}}},
			-9: {epoch: 0, lastTimestamp: 1, batches: nil},
		},
	}
}

// FuzzDecodeCheckpoint: decodeCheckpoint never panics, refuses only with
// errBadCheckpoint, allocates in proportion to its input, and what it
// decodes encodes to bytes that decode to the same state. Every input is
// tried as it is and as a body under a valid header.
func FuzzDecodeCheckpoint(f *testing.F) {
	enc := fuzzSeedCheckpoint().encode()
	f.Add(enc)
	f.Add(enc[checkpointHeader:])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 80))
	f.Add(enc[:len(enc)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, withCheckpointHeader(b)} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c, err := decodeCheckpoint(in)
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<10+64*uint64(len(in)) {
				t.Fatalf("decoding %d bytes allocated %d", len(in), alloc)
			}
			if err != nil {
				if !errors.Is(err, errBadCheckpoint) {
					t.Fatalf("refused with %v, want errBadCheckpoint", err)
				}
				continue
			}
			again, err := decodeCheckpoint(c.encode())
			if err != nil {
				t.Fatalf("re-encoded checkpoint does not decode: %v", err)
			}
			if !reflect.DeepEqual(c, again) {
				t.Fatalf("decode(encode(decode(b))) = %+v, want %+v", again, c)
			}
		}
	})
}
