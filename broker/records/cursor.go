package records

import (
	"errors"
	"fmt"
	"io"

	"github.com/varvelog/varve/partition"
)

// windowSize is how much decompressed data a streamed walk holds at once.
const windowSize = 32 << 10

// cursor is the records section as the walker reads it: in place when the
// section is in memory (uncompressed, or a raw snappy block decoded whole),
// or streamed from a decompressor through a fixed window.
type cursor struct {
	buf []byte // unread bytes are buf[pos:]
	pos int
	src io.Reader // nil: buf is the whole section

	base  int64 // section offset of buf[0]
	read  int64 // bytes taken from src
	limit int64 // most bytes the section may hold
	eof   bool
	err   error // sticky: the decompressor failed or the limit was passed

	arena []byte // a streamed record's kept fields (Records only)
	dec   *decoders
}

// offset is the section offset of the next unread byte.
func (c *cursor) offset() int64 { return c.base + int64(c.pos) }

// fill makes at least n (<= windowSize) unread bytes available, reading
// from the decompressor; false at the end of the section or on an error.
func (c *cursor) fill(n int) bool {
	if len(c.buf)-c.pos >= n {
		return true
	}
	if c.src == nil || c.eof || c.err != nil {
		return false
	}
	win := c.dec.window
	m := copy(win, c.buf[c.pos:])
	c.base += int64(c.pos)
	c.pos = 0
	for zero := 0; m < n; {
		k, err := c.src.Read(win[m:])
		m += k
		c.read += int64(k)
		if c.read > c.limit {
			c.err = fmt.Errorf("%w: records decompress to more than %d bytes", partition.ErrMessageTooLarge, c.limit)
			break
		}
		if err == io.EOF {
			c.eof = true
			break
		}
		if err != nil {
			c.err = decodeError(err)
			break
		}
		if k == 0 {
			if zero++; zero > 100 {
				c.err = decodeError(io.ErrNoProgress)
				break
			}
		}
	}
	c.buf = win[:m]
	return m >= n && c.err == nil
}

// short is the error for a field that the section ends before.
func (c *cursor) short() error {
	if c.err != nil {
		return c.err
	}
	return fmt.Errorf("%w: records end early", partition.ErrInvalidRecord)
}

// atEnd reports whether the section has no bytes left. A streamed section
// is read to its end, so the decompressor verifies its checksums.
func (c *cursor) atEnd() bool {
	return c.pos == len(c.buf) && !c.fill(1) && c.err == nil
}

func (c *cursor) readByte() (byte, error) {
	if c.pos == len(c.buf) && !c.fill(1) {
		return 0, c.short()
	}
	b := c.buf[c.pos]
	c.pos++
	return b, nil
}

var errVarint = fmt.Errorf("%w: malformed varint", partition.ErrInvalidRecord)

// uvarint reads a base-128 varint of at most maxLen bytes whose last byte
// may hold at most lastMax, so the value fits the field's width.
func (c *cursor) uvarint(maxLen int, lastMax byte) (uint64, error) {
	var x uint64
	for i := range maxLen {
		if c.pos == len(c.buf) && !c.fill(1) {
			return 0, c.short()
		}
		b := c.buf[c.pos]
		c.pos++
		if b < 0x80 {
			if i == maxLen-1 && b > lastMax {
				return 0, errVarint
			}
			return x | uint64(b)<<(7*i), nil
		}
		x |= uint64(b&0x7f) << (7 * i)
	}
	return 0, errVarint
}

// varint32 reads a zigzag varint holding an int32 (at most 5 bytes).
func (c *cursor) varint32() (int32, error) {
	u, err := c.uvarint(5, 0x0f)
	return int32(uint32(u)>>1) ^ -int32(u&1), err
}

// varint64 reads a zigzag varlong (at most 10 bytes).
func (c *cursor) varint64() (int64, error) {
	u, err := c.uvarint(10, 0x01)
	return int64(u>>1) ^ -int64(u&1), err
}

// skip passes over n bytes without keeping them.
func (c *cursor) skip(n int) error {
	for {
		k := min(n, len(c.buf)-c.pos)
		c.pos += k
		if n -= k; n == 0 {
			return nil
		}
		if !c.fill(1) {
			return c.short()
		}
	}
}

// keep takes the next n bytes as a span of the current record: of buf in
// place, or copied into the arena as they are decoded, so the arena grows
// with bytes that exist and not with the length the record claims.
func (c *cursor) keep(n int) (span, error) {
	if c.src == nil {
		if n > len(c.buf)-c.pos {
			return span{}, c.short()
		}
		c.pos += n
		return span{c.pos - n, c.pos}, nil
	}
	start := len(c.arena)
	for n > 0 {
		if c.pos == len(c.buf) && !c.fill(1) {
			return span{}, c.short()
		}
		k := min(n, len(c.buf)-c.pos)
		c.arena = append(c.arena, c.buf[c.pos:c.pos+k]...)
		c.pos += k
		n -= k
	}
	return span{start, len(c.arena)}, nil
}

// slice turns a span into the bytes it names; nil for null.
func (c *cursor) slice(s span) []byte {
	switch {
	case s.start < 0:
		return nil
	case c.src == nil:
		return c.buf[s.start:s.end:s.end]
	default:
		return c.arena[s.start:s.end:s.end]
	}
}

// decodeError classifies a decompressor's failure: data that does not
// decode is corrupt, except a zstd window too large to hold, which is a
// resource limit like the decompressed size.
func decodeError(err error) error {
	if errors.Is(err, partition.ErrMessageTooLarge) || errors.Is(err, partition.ErrCorruptBatch) {
		return err
	}
	if isWindowTooLarge(err) {
		return fmt.Errorf("%w: zstd window over %d bytes: %v", partition.ErrMessageTooLarge, zstdMaxWindow, err)
	}
	return fmt.Errorf("%w: decompress: %v", partition.ErrCorruptBatch, err)
}
