package records

import (
	"bytes"
	"errors"
	"testing"

	"github.com/varvelog/varve/partition"
)

// drain reads everything a cursor yields, the way the walker does: the
// bytes in hand, then fill for more, until the section ends or fails.
func drain(c *cursor) ([]byte, error) {
	var out []byte
	for {
		out = append(out, c.buf[c.pos:]...)
		c.pos = len(c.buf)
		if !c.fill(1) {
			return out, c.err
		}
	}
}

// decompressCapped decodes payload under codec with the output capped at
// limit, as Check does.
func decompressCapped(payload []byte, codec int8, limit int64) ([]byte, error) {
	c, err := open(payload, codec, limit)
	if err != nil {
		return nil, err
	}
	defer c.close()
	return drain(c)
}

// FuzzDecompressLimit holds every codec's capped decoder to its output cap
// (Limits.MaxDecompressedBytes), at and around the boundary.
//
// With raw unset, plain (the fuzzer's bytes followed by a run of zeros, so
// inputs compress far) is compressed by codecs[sel] and decoded with the
// fuzzer's limit and with limits of exactly len(plain) and len(plain)-1: it
// must come back byte for byte when it fits, and be refused with
// ErrMessageTooLarge, having yielded no more than the limit, when it does
// not. With raw set, the bytes are the compressed payload itself under codec
// id sel&7 (5-7 unknown): no panic, never more than the limit out, and only
// the package's sentinel errors. FuzzCheck covers the record walk on top;
// this target is about the cap itself.
func FuzzDecompressLimit(f *testing.F) {
	for i, c := range codecs {
		f.Add(byte(i), false, uint32(100), uint16(0), []byte("short"))
		f.Add(byte(i), false, uint32(4096), uint16(300), []byte("zeros past the limit"))
		f.Add(byte(c.id), true, uint32(1<<16), uint16(0), c.compress(f, make([]byte, 1<<17)))
	}
	f.Fuzz(func(t *testing.T, sel byte, raw bool, limit uint32, zeros uint16, data []byte) {
		if raw {
			lim := int64(limit % (1 << 20))
			out, err := decompressCapped(data, int8(sel&7), lim)
			known(t, err)
			if int64(len(out)) > lim {
				t.Fatalf("codec %d: %d bytes out, over the limit %d (err %v)", sel&7, len(out), lim, err)
			}
			return
		}
		c := codecs[int(sel)%len(codecs)]
		plain := append(append([]byte(nil), data...), make([]byte, int(zeros%(1<<14))*16)...)
		payload := c.compress(t, plain)
		n := int64(len(plain))
		for _, lim := range []int64{int64(limit) % (2*n + 2), n, n - 1} {
			if lim < 0 {
				continue
			}
			out, err := decompressCapped(payload, c.id, lim)
			switch {
			case n <= lim && err != nil:
				t.Fatalf("%s: %d bytes under a limit of %d refused: %v", c.name, n, lim, err)
			case n <= lim && !bytes.Equal(out, plain):
				t.Fatalf("%s: %d bytes decoded to %d other bytes", c.name, n, len(out))
			case n > lim && !errors.Is(err, partition.ErrMessageTooLarge):
				t.Fatalf("%s: %d bytes over a limit of %d: error %v, want ErrMessageTooLarge", c.name, n, lim, err)
			case int64(len(out)) > lim:
				t.Fatalf("%s: %d bytes out, over the limit %d", c.name, len(out), lim)
			}
		}
	})
}
