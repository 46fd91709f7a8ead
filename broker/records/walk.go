package records

import (
	"fmt"

	"github.com/varvelog/varve/partition"
)

// minRecordBody is the smallest record after its length: attributes and
// five one-byte varints (timestampDelta, offsetDelta, key and value
// lengths, header count).
const minRecordBody = 6

// walkBatch is the one record parser: it opens the batch's records section
// with its codec, decodes exactly h.NumRecords records, checks each against
// the layout in the package doc, calls fn with each (errStop ends the walk
// early with no error), and checks that nothing follows the last. With full
// set it fills Key, Value and Headers; otherwise those stay empty and the
// bytes are skipped without copying.
func walkBatch(batch []byte, h *partition.BatchHeader, lim Limits, full bool, fn func(*Record) error) error {
	lim = lim.withDefaults()
	if len(batch) < partition.BatchHeaderSize {
		return fmt.Errorf("%w: %d bytes is shorter than a batch header", partition.ErrCorruptBatch, len(batch))
	}
	if h.NumRecords <= 0 {
		return fmt.Errorf("%w: batch holds %d records", partition.ErrInvalidRecord, h.NumRecords)
	}
	if h.NumRecords > lim.MaxRecords {
		return fmt.Errorf("%w: %d records, over the limit of %d", partition.ErrMessageTooLarge, h.NumRecords, lim.MaxRecords)
	}
	c, err := open(batch[partition.BatchHeaderSize:], h.Compression(), lim.MaxDecompressedBytes)
	if err != nil {
		return err
	}
	defer c.close()
	w := &c.dec.walk // pooled: &w.rec goes to fn, so a local walker would escape
	w.c, w.full = c, full
	for i := range h.NumRecords {
		if err := w.record(i); err != nil {
			return err
		}
		if err := fn(&w.rec); err != nil {
			if err == errStop {
				return nil
			}
			return err
		}
	}
	if !c.atEnd() {
		if c.err != nil {
			return c.err
		}
		return fmt.Errorf("%w: bytes left after the last of %d records", partition.ErrInvalidRecord, h.NumRecords)
	}
	return nil
}

// walker decodes one record at a time into rec.
type walker struct {
	c    *cursor
	full bool
	rec  Record
	// spans locate the current record's fields in c.arena while it may
	// still grow (a streamed record is copied there piece by piece);
	// they become slices once the record is complete.
	key, value span
	hdrs       []hdrSpan
}

type span struct{ start, end int } // start < 0: null

type hdrSpan struct{ key, value span }

// record decodes record i. Every length is bounded by what the record
// says is left of it before any byte is skipped or copied, and the
// record's length must equal what its fields took, exactly.
func (w *walker) record(i int32) error {
	c := w.c
	length, err := c.varint32()
	if err != nil {
		return w.fail(i, "length", err)
	}
	if length < minRecordBody {
		return w.invalid(i, "length %d is shorter than a record", length)
	}
	if c.src == nil && int64(length) > int64(len(c.buf)-c.pos) {
		return w.invalid(i, "length %d but %d bytes left", length, len(c.buf)-c.pos)
	}
	end := c.offset() + int64(length)
	c.arena = c.arena[:0]
	attrs, err := c.readByte()
	if err != nil {
		return w.fail(i, "attributes", err)
	}
	tsDelta, err := c.varint64()
	if err != nil {
		return w.fail(i, "timestamp delta", err)
	}
	offDelta, err := c.varint32()
	if err != nil {
		return w.fail(i, "offset delta", err)
	}
	if offDelta != i {
		return w.invalid(i, "offset delta %d, want %d", offDelta, i)
	}
	if w.key, err = w.bytes(i, "key", end, true); err != nil {
		return err
	}
	if w.value, err = w.bytes(i, "value", end, true); err != nil {
		return err
	}
	n, err := c.varint32()
	if err != nil {
		return w.fail(i, "header count", err)
	}
	// Each header takes at least two bytes: a bound on n before the loop.
	if n < 0 || int64(n) > (end-c.offset())/2 {
		return w.invalid(i, "header count %d", n)
	}
	w.hdrs = w.hdrs[:0]
	for range n {
		k, err := w.bytes(i, "header key", end, false)
		if err != nil {
			return err
		}
		v, err := w.bytes(i, "header value", end, true)
		if err != nil {
			return err
		}
		if w.full {
			w.hdrs = append(w.hdrs, hdrSpan{k, v})
		}
	}
	if got := c.offset(); got != end {
		return w.invalid(i, "length %d but its fields take %d bytes", length, got-(end-int64(length)))
	}
	w.rec = Record{Attributes: int8(attrs), TimestampDelta: tsDelta, OffsetDelta: offDelta, Headers: w.rec.Headers[:0]}
	if w.full {
		w.rec.Key, w.rec.Value = c.slice(w.key), c.slice(w.value)
		for _, h := range w.hdrs {
			w.rec.Headers = append(w.rec.Headers, Header{Key: string(c.slice(h.key)), Value: c.slice(h.value)})
		}
	}
	return nil
}

// bytes reads a length-prefixed field (-1 = null when nullable) that must
// end by end, skipping it or, when full, keeping it.
func (w *walker) bytes(i int32, what string, end int64, nullable bool) (span, error) {
	c := w.c
	n, err := c.varint32()
	if err != nil {
		return span{}, w.fail(i, what+" length", err)
	}
	if n == -1 && nullable {
		return span{start: -1}, nil
	}
	if n < 0 || int64(n) > end-c.offset() {
		return span{}, w.invalid(i, "%s length %d with %d bytes left in the record", what, n, end-c.offset())
	}
	if !w.full {
		return span{}, w.fail(i, what, c.skip(int(n)))
	}
	s, err := c.keep(int(n))
	return s, w.fail(i, what, err)
}

func (w *walker) invalid(i int32, format string, args ...any) error {
	return fmt.Errorf("%w: record %d: %s", partition.ErrInvalidRecord, i, fmt.Sprintf(format, args...))
}

// fail adds the record and field to a cursor error (nil stays nil).
func (w *walker) fail(i int32, what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("record %d: %s: %w", i, what, err)
}
