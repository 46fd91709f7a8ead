package records

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
)

// FuzzCheck feeds arbitrary records sections to Check behind a valid batch
// header. With raw unset, section is the uncompressed records, compressed
// by the codec codecs[codec%len] picks, so the walker is fuzzed under every
// codec and must answer exactly as it does uncompressed. With raw set,
// section is the compressed payload itself under codec id codec&7 (5-7
// unknown), to fuzz the decoders. n is the header's record count.
//
// Properties: no panic; every error wraps one of the package's sentinels;
// Check accepts only what Records decodes; an accepted batch holds exactly
// n records and FindTimestamp finds its max timestamp.
func FuzzCheck(f *testing.F) {
	f.Add(byte(0), false, uint8(5), encodeRecords(fuzzSample()))
	f.Add(byte(1), false, uint8(2), encodeRecords(recs(2)))
	f.Add(byte(0), false, uint8(1), rawRecord(head(0), vi(-1), vi(-1), vi(1), vi(1), []byte("h"), vi(-1)))
	f.Add(byte(0), false, uint8(1), withLength(7, head(0), vi(2), []byte("ab"), vi(-1), vi(0)))
	for i, c := range codecs {
		f.Add(byte(i), false, uint8(3), encodeRecords(recs(3)))
		f.Add(byte(c.id), true, uint8(3), c.compress(f, encodeRecords(recs(3))))
	}
	f.Fuzz(func(t *testing.T, codecSel byte, raw bool, n uint8, section []byte) {
		lim := Limits{MaxDecompressedBytes: 1 << 20}
		nrec := max(int32(n), 1)
		id, payload := int8(codecSel&7), section
		if !raw {
			c := codecs[int(codecSel)%len(codecs)]
			id, payload = c.id, c.compress(t, section)
		}
		// First learn the records' largest timestamp, then frame the
		// batch with it, so that Check can accept.
		maxTs, ok := int64(baseTs), false
		recErr := Records(makeBatch(int16(id), 0, baseTs, baseTs, nrec, payload), lim, func(r Record) error {
			if ts := baseTs + r.TimestampDelta; !ok || ts > maxTs {
				maxTs, ok = ts, true
			}
			return nil
		})
		batch := makeBatch(int16(id), 0, baseTs, maxTs, nrec, payload)
		h := validated(t, batch)
		err := Check(batch, &h, lim)
		known(t, err)
		known(t, recErr)
		if recErr != nil && err == nil {
			t.Fatalf("Check accepted what Records refused: %v", recErr)
		}
		if !raw && id != codecNone {
			plain := makeBatch(codecNone, 0, baseTs, maxTs, nrec, section)
			ph := validated(t, plain)
			if perr := Check(plain, &ph, lim); class(perr) != class(err) {
				t.Fatalf("uncompressed: %v, compressed: %v", perr, err)
			}
		}
		if err != nil {
			return
		}
		count := int32(0)
		if err := Records(batch, lim, func(Record) error { count++; return nil }); err != nil || count != nrec {
			t.Fatalf("Records after Check: %v, %d records of %d", err, count, nrec)
		}
		if _, ts, err := FindTimestamp(batch, maxTs); err != nil || ts != maxTs {
			t.Fatalf("FindTimestamp(%d) = %d, %v", maxTs, ts, err)
		}
	})
}

func fuzzSample() []kmsg.Record {
	s := sample()
	s[3].Value = s[3].Value[:100]
	return s
}

// sentinels are every error Check, Records and FindTimestamp may wrap.
var sentinels = []error{ErrInvalidTimestamp, partition.ErrInvalidRecord, partition.ErrCorruptBatch, partition.ErrMessageTooLarge, ErrUnsupportedCompression}

func known(t *testing.T, err error) {
	t.Helper()
	if err != nil && class(err) == nil {
		t.Fatalf("error wraps no sentinel: %v", err)
	}
}

// class is the first sentinel err wraps.
func class(err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}
