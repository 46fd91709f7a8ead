package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path"

	"github.com/varvelog/varve/partition/vfs"
)

const (
	checkpointName    = "checkpoint"
	checkpointMagic   = "VCKP"
	checkpointVersion = 1
	// checkpointHeader: magic, version u16, body crc32c u32, body length u32.
	checkpointHeader = 4 + 2 + 4 + 4
)

// checkpointState is what a checkpoint file holds: the state of the log as
// of its recovery point, so that recovery only has to validate what lies
// beyond it. See doc.go for the layout.
type checkpointState struct {
	logStart int64
	// recovery is the recovery point: every batch below this offset was
	// fsynced before the checkpoint was written. recoverySegment and
	// recoveryPos locate it (segment base offset, byte position).
	recovery        int64
	recoverySegment int64
	recoveryPos     int64
	// active is the recovery segment's index bookkeeping at the recovery
	// point: how many index and time index entries its files hold (fsynced),
	// and the tracking state that decides where the next entries go.
	active segTrack
	// position is the caller's opaque applied position at the recovery point.
	position  uint64
	epochs    epochTable
	producers producerTable
}

var errBadCheckpoint = errors.New("partition: bad checkpoint")

func (c *checkpointState) encode() []byte {
	body := make([]byte, 0, 64+len(c.epochs)*12+len(c.producers)*(19+maxProducerBatches*24))
	be := binary.BigEndian
	body = be.AppendUint64(body, uint64(c.logStart))
	body = be.AppendUint64(body, uint64(c.recovery))
	body = be.AppendUint64(body, uint64(c.recoverySegment))
	body = be.AppendUint64(body, uint64(c.recoveryPos))
	body = be.AppendUint64(body, c.position)
	body = be.AppendUint32(body, uint32(c.active.indexCount))
	body = be.AppendUint32(body, uint32(c.active.timeCount))
	body = be.AppendUint64(body, uint64(c.active.sinceIndex))
	body = be.AppendUint64(body, uint64(c.active.maxTs))
	body = be.AppendUint64(body, uint64(c.active.maxTsOffset))
	body = be.AppendUint32(body, uint32(len(c.epochs)))
	for _, e := range c.epochs {
		body = be.AppendUint32(body, uint32(e.epoch))
		body = be.AppendUint64(body, uint64(e.start))
	}
	body = be.AppendUint32(body, uint32(len(c.producers)))
	for _, id := range c.producers.ids() {
		e := c.producers[id]
		body = be.AppendUint64(body, uint64(id))
		body = be.AppendUint16(body, uint16(e.epoch))
		body = be.AppendUint64(body, uint64(e.lastTimestamp))
		body = append(body, byte(len(e.batches)))
		for _, b := range e.batches {
			body = be.AppendUint32(body, uint32(b.firstSeq))
			body = be.AppendUint32(body, uint32(b.lastSeq))
			body = be.AppendUint64(body, uint64(b.firstOffset))
			body = be.AppendUint64(body, uint64(b.lastOffset))
		}
	}
	out := make([]byte, 0, checkpointHeader+len(body))
	out = append(out, checkpointMagic...)
	out = be.AppendUint16(out, checkpointVersion)
	out = be.AppendUint32(out, crc32.Checksum(body, castagnoli))
	out = be.AppendUint32(out, uint32(len(body)))
	return append(out, body...)
}

// decodeCheckpoint parses a checkpoint file. Any inconsistency is
// errBadCheckpoint: the caller then recovers without it, from the log itself.
func decodeCheckpoint(b []byte) (*checkpointState, error) {
	if len(b) < checkpointHeader || string(b[:4]) != checkpointMagic {
		return nil, fmt.Errorf("%w: no header", errBadCheckpoint)
	}
	be := binary.BigEndian
	if v := be.Uint16(b[4:]); v != checkpointVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", errBadCheckpoint, v, checkpointVersion)
	}
	sum, n := be.Uint32(b[6:]), be.Uint32(b[10:])
	body := b[checkpointHeader:]
	if uint64(n) != uint64(len(body)) || crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: length or checksum mismatch", errBadCheckpoint)
	}
	r := reader{b: body}
	c := &checkpointState{
		logStart:        r.i64(),
		recovery:        r.i64(),
		recoverySegment: r.i64(),
		recoveryPos:     r.i64(),
		position:        uint64(r.i64()),
		active: segTrack{
			indexCount:  int(uint32(r.i32())),
			timeCount:   int(uint32(r.i32())),
			sinceIndex:  r.i64(),
			maxTs:       r.i64(),
			maxTsOffset: r.i64(),
		},
	}
	ne := r.count(12)
	for range ne {
		c.epochs = append(c.epochs, epochEntry{epoch: r.i32(), start: r.i64()})
	}
	np := r.count(19)
	c.producers = make(producerTable, np)
	for range np {
		id := r.i64()
		e := &producerEntry{epoch: int16(r.u16()), lastTimestamp: r.i64()}
		nb := int(r.u8())
		if nb > maxProducerBatches {
			return nil, fmt.Errorf("%w: producer %d has %d batches", errBadCheckpoint, id, nb)
		}
		for range nb {
			e.batches = append(e.batches, producerBatch{firstSeq: r.i32(), lastSeq: r.i32(), firstOffset: r.i64(), lastOffset: r.i64()})
		}
		c.producers[id] = e
	}
	if r.bad || len(r.b) != 0 {
		return nil, fmt.Errorf("%w: body does not parse", errBadCheckpoint)
	}
	if c.logStart < 0 || c.recovery < c.recoverySegment || c.recoverySegment < 0 || c.recoveryPos < 0 {
		return nil, fmt.Errorf("%w: offsets out of order", errBadCheckpoint)
	}
	return c, nil
}

// writeCheckpoint replaces the checkpoint file durably (vfs.WriteFileAtomic:
// temporary file, fsync, rename, directory fsync). A crash at any step
// leaves either the old checkpoint or the new one.
func writeCheckpoint(fsys vfs.FS, dir string, c *checkpointState) error {
	return vfs.WriteFileAtomic(fsys, dir, checkpointName, c.encode())
}

// readCheckpoint returns the checkpoint, nil when there is none, or
// errBadCheckpoint when it is unreadable.
func readCheckpoint(fsys vfs.FS, dir string) (*checkpointState, error) {
	b, err := vfs.ReadFile(fsys, path.Join(dir, checkpointName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeCheckpoint(b)
}

// reader decodes big-endian fields and remembers the first overrun.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8   { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) i32() int32  { return int32(binary.BigEndian.Uint32(r.take(4))) }
func (r *reader) i64() int64  { return int64(binary.BigEndian.Uint64(r.take(8))) }

// count reads an element count and checks that that many elements of at least
// minSize bytes fit in what is left, so a corrupt count cannot make the
// decoder allocate without bound.
func (r *reader) count(minSize int) int {
	n := int64(uint32(r.i32()))
	if n*int64(minSize) > int64(len(r.b)) {
		r.bad = true
		return 0
	}
	return int(n)
}
