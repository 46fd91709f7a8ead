package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Commands of a partition group's Raft log. Every entry starts with
// (type, version); see doc.go for the layouts. A replica that meets a type
// or version it does not know stops (it must not skip a command the others
// applied), so new versions are gated by the cluster's feature level.
const (
	cmdProduce       byte = 1
	cmdEpochStart    byte = 2
	cmdDeleteRecords byte = 3

	cmdVersion1 byte = 1
)

// ErrBadCommand reports an entry this replica cannot decode.
var ErrBadCommand = errors.New("replication: undecodable command")

// encodeProduce lays out one produce entry: the leader's append time (for
// producer expiry, so every replica uses the same clock) and the batches.
func encodeProduce(appendTimeMs int64, batches [][]byte) []byte {
	n := 2 + 8 + binary.MaxVarintLen64
	for _, b := range batches {
		n += binary.MaxVarintLen64 + len(b)
	}
	out := make([]byte, 0, n)
	out = append(out, cmdProduce, cmdVersion1)
	out = binary.BigEndian.AppendUint64(out, uint64(appendTimeMs))
	out = binary.AppendUvarint(out, uint64(len(batches)))
	for _, b := range batches {
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// decodeProduce returns sub-slices of data: no copy.
func decodeProduce(data []byte) (appendTimeMs int64, batches [][]byte, err error) {
	if len(data) < 2+8 {
		return 0, nil, fmt.Errorf("%w: produce entry of %d bytes", ErrBadCommand, len(data))
	}
	appendTimeMs = int64(binary.BigEndian.Uint64(data[2:]))
	rest := data[10:]
	count, n := binary.Uvarint(rest)
	if n <= 0 || count > uint64(len(rest)) {
		return 0, nil, fmt.Errorf("%w: produce entry count", ErrBadCommand)
	}
	rest = rest[n:]
	batches = make([][]byte, 0, count)
	for range count {
		size, n := binary.Uvarint(rest)
		if n <= 0 || size > uint64(len(rest)-n) {
			return 0, nil, fmt.Errorf("%w: produce entry batch length", ErrBadCommand)
		}
		batches = append(batches, rest[n:n+int(size)])
		rest = rest[n+int(size):]
	}
	if len(rest) != 0 {
		return 0, nil, fmt.Errorf("%w: %d trailing bytes in a produce entry", ErrBadCommand, len(rest))
	}
	return appendTimeMs, batches, nil
}

func encodeEpochStart() []byte { return []byte{cmdEpochStart, cmdVersion1} }

func encodeDeleteRecords(offset int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{cmdDeleteRecords, cmdVersion1}, uint64(offset))
}

func decodeDeleteRecords(data []byte) (int64, error) {
	if len(data) != 10 {
		return 0, fmt.Errorf("%w: delete-records entry of %d bytes", ErrBadCommand, len(data))
	}
	return int64(binary.BigEndian.Uint64(data[2:])), nil
}
