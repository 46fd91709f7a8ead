package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// formatVersion is the version of every file this package writes: segment
// headers, the meta file and the stable file all carry it (see doc.go).
const formatVersion = 1

const (
	segExt        = ".wal"
	segHeaderSize = 20 // magic, version, reserved, first index, crc32c
	// recordPrefix is the length and CRC in front of every record body.
	recordPrefix = 8
	// bodyFixed is the body without data and extensions: index, term,
	// type, appendedAt, data length, extensions length.
	bodyFixed = 8 + 8 + 1 + 8 + 4 + 4
	// recordOverhead is what a record costs beyond its data and extensions.
	recordOverhead = recordPrefix + bodyFixed

	// MaxRecordBytes bounds one encoded entry (data, extensions and 41 bytes
	// of framing). Together with MaxSegmentBytes it keeps every record's end
	// offset below 2^31+2^30, so the in-memory index can hold offsets as
	// uint32, 4 bytes per entry.
	MaxRecordBytes = 1 << 30
)

// zeroTime encodes a zero AppendedAt: time.Time{} has no UnixNano, and
// math.MinInt64 (year 1677) is not a time raft stamps.
const zeroTime = math.MinInt64

var (
	be         = binary.BigEndian
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	segMagic   = [4]byte{'V', 'W', 'A', 'L'}
)

// segName is the file name of the segment whose first index is first: 20
// zero-padded digits sort in index order.
func segName(first uint64) string {
	return fmt.Sprintf("%020d%s", first, segExt)
}

// parseSegName reports the first index a segment file name encodes.
func parseSegName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segExt)
	if !ok || len(base) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(base, 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

func segPath(dir string, first uint64) string { return path.Join(dir, segName(first)) }

// segHeader returns the header a segment starting at first begins with.
func segHeader(first uint64) []byte {
	b := make([]byte, 0, segHeaderSize)
	b = append(b, segMagic[:]...)
	b = be.AppendUint16(b, formatVersion)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint64(b, first)
	return be.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// errTornHeader is a segment header that is short or fails its CRC: only a
// crash while creating the last segment leaves one.
var errTornHeader = errors.New("wal: torn segment header")

// checkSegHeader validates a segment header against the first index the
// file name promises. A header with the right magic and CRC but another
// version is refused outright: it was written by a newer Varve.
func checkSegHeader(b []byte, first uint64) error {
	if len(b) < segHeaderSize || crc32.Checksum(b[:16], castagnoli) != be.Uint32(b[16:]) {
		return errTornHeader
	}
	if [4]byte(b[:4]) != segMagic {
		return fmt.Errorf("%w: bad segment magic %q", ErrCorrupt, b[:4])
	}
	if v := be.Uint16(b[4:]); v != formatVersion {
		return fmt.Errorf("%w: segment format version %d, this build reads %d", ErrUnsupportedVersion, v, formatVersion)
	}
	if got := be.Uint64(b[8:]); got != first {
		return fmt.Errorf("%w: segment %s says its first index is %d", ErrCorrupt, segName(first), got)
	}
	return nil
}

// recordSize is the encoded size of e.
func recordSize(e *raft.Log) int64 {
	return recordOverhead + int64(len(e.Data)) + int64(len(e.Extensions))
}

// appendRecord appends e's record to buf. The caller has checked its size.
func appendRecord(buf []byte, e *raft.Log) []byte {
	start := len(buf)
	body := bodyFixed + len(e.Data) + len(e.Extensions)
	buf = be.AppendUint32(buf, uint32(body))
	buf = be.AppendUint32(buf, 0) // CRC, filled in below
	buf = be.AppendUint64(buf, e.Index)
	buf = be.AppendUint64(buf, e.Term)
	buf = append(buf, byte(e.Type))
	at := int64(zeroTime)
	if !e.AppendedAt.IsZero() {
		at = e.AppendedAt.UnixNano()
	}
	buf = be.AppendUint64(buf, uint64(at))
	buf = be.AppendUint32(buf, uint32(len(e.Data)))
	buf = append(buf, e.Data...)
	buf = be.AppendUint32(buf, uint32(len(e.Extensions)))
	buf = append(buf, e.Extensions...)
	be.PutUint32(buf[start+4:], crc32.Checksum(buf[start+recordPrefix:], castagnoli))
	return buf
}

// checkPrefix validates a record's length field: the body must hold the
// fixed fields and the whole record stay under MaxRecordBytes.
func checkPrefix(p []byte) (int64, error) {
	n := int64(be.Uint32(p))
	if n < bodyFixed || n+recordPrefix > MaxRecordBytes {
		return 0, fmt.Errorf("%w: record body length %d", ErrCorrupt, n)
	}
	return n, nil
}

// checkBody validates a record body against the CRC from its prefix and
// returns the entry's index and where its data ends in body (the data
// starts at 29, the extensions length follows it).
func checkBody(body []byte, crc uint32) (index uint64, dataEnd int, err error) {
	if crc32.Checksum(body, castagnoli) != crc {
		return 0, 0, fmt.Errorf("%w: record CRC mismatch", ErrCorrupt)
	}
	dl := int64(be.Uint32(body[25:]))
	if dl > int64(len(body))-bodyFixed {
		return 0, 0, fmt.Errorf("%w: data length %d in a body of %d", ErrCorrupt, dl, len(body))
	}
	dataEnd = 29 + int(dl)
	if el := int64(be.Uint32(body[dataEnd:])); el != int64(len(body)-dataEnd-4) {
		return 0, 0, fmt.Errorf("%w: extensions length %d in a body of %d", ErrCorrupt, el, len(body))
	}
	return be.Uint64(body), dataEnd, nil
}

// decodeRecord fills out from a whole record (prefix and body) that must
// hold index want. Data and Extensions alias rec, which the caller gives
// up: GetLog reads each record into a fresh buffer.
func decodeRecord(rec []byte, want uint64, out *raft.Log) error {
	if len(rec) < recordOverhead {
		return fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(rec))
	}
	n, err := checkPrefix(rec)
	if err != nil {
		return err
	}
	if n != int64(len(rec)-recordPrefix) {
		return fmt.Errorf("%w: record length %d, index says %d", ErrCorrupt, n, len(rec)-recordPrefix)
	}
	body := rec[recordPrefix:]
	index, dataEnd, err := checkBody(body, be.Uint32(rec[4:]))
	if err != nil {
		return err
	}
	if index != want {
		return fmt.Errorf("%w: record holds index %d, want %d", ErrCorrupt, index, want)
	}
	out.Index = index
	out.Term = be.Uint64(body[8:])
	out.Type = raft.LogType(body[16])
	if at := int64(be.Uint64(body[17:])); at == zeroTime {
		out.AppendedAt = time.Time{}
	} else {
		out.AppendedAt = time.Unix(0, at)
	}
	out.Data = sub(body, 29, dataEnd)
	out.Extensions = sub(body, dataEnd+4, len(body))
	return nil
}

// sub is b[i:j] with its capacity cut, or nil when empty, so that an entry
// stored with nil Data reads back as nil and an append by the caller cannot
// run into the next field.
func sub(b []byte, i, j int) []byte {
	if i == j {
		return nil
	}
	return b[i:j:j]
}
