package records

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/varvelog/varve/partition"
)

// Codec ids in the low three bits of the batch attributes.
const (
	codecNone   = 0
	codecGzip   = 1
	codecSnappy = 2
	codecLz4    = 3
	codecZstd   = 4
)

const (
	// zstdMaxWindow is the largest zstd window accepted: the decoder holds
	// a whole window, and a frame header alone can ask for one.
	zstdMaxWindow = 8 << 20
	// snappyMaxRatio bounds how far valid snappy expands: its best element
	// is a 3-byte copy of 64 bytes.
	snappyMaxRatio = 22
	// keepBuffer is the largest buffer a pooled decoders keeps between
	// walks, so the pool does not pin one huge batch's memory.
	keepBuffer = 1 << 20
)

// xerialMagic opens the snappy framing of the Java client (xerial
// snappy-java's SnappyOutputStream): the magic, then two 4-byte versions,
// then chunks of a 4-byte big-endian length and a raw snappy block. A raw
// snappy block cannot start with it: its first element would be a copy with
// nothing decoded yet to copy from.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

const xerialHeaderSize = 16

// lz4Magic is the LZ4 frame magic (0x184D2204, little endian). Kafka's lz4
// is the frame format; the legacy and skippable frames the lz4 package also
// reads are refused.
var lz4Magic = []byte{0x04, 0x22, 0x4d, 0x18}

// decoders is one walk's reusable state, pooled: the window, the
// decompressors (both made on first use), the snappy and arena buffers and
// the walker.
type decoders struct {
	window []byte
	cur    cursor
	src    bytes.Reader
	gz     *gzip.Reader
	lz     *lz4.Reader
	zs     *zstd.Decoder
	xr     xerialReader
	block  []byte // a raw snappy block, decoded
	arena  []byte
	walk   walker
}

var decoderPool = sync.Pool{New: func() any {
	return &decoders{arena: make([]byte, 0, 512)}
}}

// open returns a cursor over section decompressed with codec, never
// producing more than limit bytes. close returns its state to the pool.
func open(section []byte, codec int8, limit int64) (*cursor, error) {
	if codec > codecZstd {
		return nil, fmt.Errorf("%w: codec %d", ErrUnsupportedCompression, codec)
	}
	d := decoderPool.Get().(*decoders)
	c := &d.cur
	*c = cursor{limit: limit, arena: d.arena, dec: d}
	err := d.start(c, section, codec, limit)
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (d *decoders) start(c *cursor, section []byte, codec int8, limit int64) error {
	if codec == codecNone {
		if int64(len(section)) > limit {
			return fmt.Errorf("%w: %d bytes of records, over the limit of %d", partition.ErrMessageTooLarge, len(section), limit)
		}
		c.buf = section
		return nil
	}
	if d.window == nil {
		d.window = make([]byte, windowSize)
	}
	d.src.Reset(section)
	switch codec {
	case codecGzip:
		if d.gz == nil {
			d.gz = new(gzip.Reader)
		}
		if err := d.gz.Reset(&d.src); err != nil {
			return decodeError(err)
		}
		c.src = d.gz
	case codecSnappy:
		if bytes.HasPrefix(section, xerialMagic) {
			if len(section) < xerialHeaderSize {
				return fmt.Errorf("%w: xerial snappy header of %d bytes", partition.ErrCorruptBatch, len(section))
			}
			d.xr.reset(section[xerialHeaderSize:], limit)
			c.src = &d.xr
			return nil
		}
		block, err := decodeSnappy(d.block, section, limit)
		if err != nil {
			return err
		}
		if cap(block) <= keepBuffer {
			d.block = block
		}
		c.buf = block
	case codecLz4:
		if !bytes.HasPrefix(section, lz4Magic) {
			return fmt.Errorf("%w: not an lz4 frame", partition.ErrCorruptBatch)
		}
		if d.lz == nil {
			d.lz = lz4.NewReader(nil)
		}
		d.lz.Reset(&d.src)
		c.src = d.lz
	case codecZstd:
		if d.zs == nil {
			zs, err := zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1), // decode in the caller: no goroutines
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(zstdMaxWindow),
				zstd.WithDecoderMaxMemory(zstdMaxWindow))
			if err != nil {
				return fmt.Errorf("records: zstd decoder: %w", err)
			}
			d.zs = zs
		}
		if err := d.zs.Reset(&d.src); err != nil {
			return decodeError(err)
		}
		c.src = d.zs
	}
	return nil
}

// close returns the cursor's state to the pool, dropping references to the
// batch and any oversized buffer.
func (c *cursor) close() {
	d := c.dec
	d.src.Reset(nil)
	d.xr.reset(nil, 0)
	if cap(c.arena) <= keepBuffer {
		d.arena = c.arena[:0]
	}
	d.cur = cursor{}
	d.walk = walker{rec: Record{Headers: d.walk.rec.Headers[:0]}, hdrs: d.walk.hdrs[:0]}
	decoderPool.Put(d)
}

// decodeSnappy decodes one raw snappy block into dst's storage (or new
// storage), after checking its claimed length against limit and against
// what its size can produce, so the allocation follows bytes that exist.
func decodeSnappy(dst, src []byte, limit int64) ([]byte, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return nil, decodeError(err)
	}
	if int64(n) > snappyMaxRatio*int64(len(src)) {
		return nil, fmt.Errorf("%w: snappy block of %d bytes claims %d decoded", partition.ErrCorruptBatch, len(src), n)
	}
	if int64(n) > limit {
		return nil, fmt.Errorf("%w: snappy block decodes to %d bytes, over the limit of %d", partition.ErrMessageTooLarge, n, limit)
	}
	out, err := snappy.DecodeStrict(dst[:0], src)
	if err != nil {
		return nil, decodeError(err)
	}
	return out, nil
}

var errXerial = errors.New("malformed xerial snappy framing")

// xerialReader streams xerial-framed snappy one chunk at a time.
type xerialReader struct {
	src   []byte // chunks not yet decoded
	out   []byte // the current chunk decoded; unread part out[pos:]
	pos   int
	buf   []byte
	limit int64
}

func (x *xerialReader) reset(src []byte, limit int64) {
	x.src, x.out, x.pos, x.limit = src, nil, 0, limit
	if cap(x.buf) > keepBuffer {
		x.buf = nil
	}
}

func (x *xerialReader) Read(p []byte) (int, error) {
	for x.pos == len(x.out) {
		if len(x.src) == 0 {
			return 0, io.EOF
		}
		if len(x.src) < 4 {
			return 0, errXerial
		}
		size := binary.BigEndian.Uint32(x.src)
		if int64(size) > int64(len(x.src)-4) {
			return 0, errXerial
		}
		chunk := x.src[4 : 4+size]
		x.src = x.src[4+size:]
		out, err := decodeSnappy(x.buf, chunk, x.limit)
		if err != nil {
			return 0, err
		}
		if cap(out) > cap(x.buf) {
			x.buf = out
		}
		x.out, x.pos = out, 0
	}
	n := copy(p, x.out[x.pos:])
	x.pos += n
	return n, nil
}

func isWindowTooLarge(err error) bool {
	return errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded)
}
