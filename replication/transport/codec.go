package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Wire protocol versions this build speaks. The handshake settles on the highest version both ends
// support; a peer with no overlap is refused (see doc.go).
const (
	wireVersion    = 1
	minWireVersion = 1
)

// helloMagic opens every handshake frame so that a stray client (a Kafka client on the wrong port, an
// HTTP probe) is refused at its first frame instead of being parsed as raft traffic.
const helloMagic = "VRVT"

// Frame types. The numbering is part of the wire format: never reuse a number.
const (
	frameHello byte = 1 + iota
	frameHelloAck
	frameRequest
	frameResponse
	frameHeartbeats
	frameHeartbeatResponses
	frameSnapshotChunk
	frameSnapshotCredit
	frameSnapshotAbort
)

// RPC kinds, shared by a request and its response. The numbering is part of the wire format.
const (
	rpcAppendEntries byte = 1 + iota
	rpcRequestVote
	rpcRequestPreVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcCall // Mux.Call: not raft's, carries no RPCHeader and names no group (see call.go)
)

// Connection kinds named in the handshake.
const (
	connControl byte = 1
	connData    byte = 2
)

// Response status byte.
const (
	statusOK    byte = 0
	statusError byte = 1
)

// Decoder limits. They bound what a hostile frame can make us allocate beyond the frame itself.
const (
	frameHeaderLen  = 5    // 4-byte big-endian length of (type + body), then the type byte
	maxHelloLen     = 4096 // a handshake frame is small; refuse anything larger before reading it
	maxGroupIDLen   = 1024 // group ids are derived from topic UUID + partition: short
	maxClusterIDLen = 255
	maxAddrLen      = 1024
	maxErrLen       = 4096 // error strings are truncated to this on the sender
	minLogEncoded   = 7    // smallest encoding of a raft.Log: 7 one-byte fields
	minHBItem       = 3    // smallest heartbeat batch item: request id, group, status/kind
)

// errMalformed reports a frame that does not decode. The connection that carried it is closed.
var errMalformed = errors.New("transport: malformed frame")

// appendBytes writes a byte slice as uvarint(len+1) then the bytes; 0 stands for nil, so nil and empty
// slices survive a round trip exactly (NetworkTransport's heartbeat test looks at nil-ness).
func appendBytes(b, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(p))+1)
	return append(b, p...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendHeader(b []byte, h *raft.RPCHeader) []byte {
	b = binary.AppendVarint(b, int64(h.ProtocolVersion))
	b = appendBytes(b, h.ID)
	return appendBytes(b, h.Addr)
}

func appendLog(b []byte, l *raft.Log) []byte {
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = appendBytes(b, l.Data)
	b = appendBytes(b, l.Extensions)
	b = binary.AppendVarint(b, l.AppendedAt.Unix())
	return binary.AppendUvarint(b, uint64(l.AppendedAt.Nanosecond()))
}

// appendMessage encodes any raft request or response this transport carries and reports its RPC kind.
func appendMessage(b []byte, msg any) ([]byte, byte, error) {
	switch m := msg.(type) {
	case *raft.AppendEntriesRequest:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		b = appendBytes(b, m.Leader)
		b = binary.AppendUvarint(b, m.PrevLogEntry)
		b = binary.AppendUvarint(b, m.PrevLogTerm)
		b = binary.AppendUvarint(b, m.LeaderCommitIndex)
		if m.Entries == nil {
			b = append(b, 0)
		} else {
			b = binary.AppendUvarint(b, uint64(len(m.Entries))+1)
		}
		for _, l := range m.Entries {
			b = appendLog(b, l)
		}
		return b, rpcAppendEntries, nil
	case *raft.AppendEntriesResponse:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		b = binary.AppendUvarint(b, m.LastLog)
		b = appendBool(b, m.Success)
		return appendBool(b, m.NoRetryBackoff), rpcAppendEntries, nil
	case *raft.RequestVoteRequest:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		b = appendBytes(b, m.Candidate)
		b = binary.AppendUvarint(b, m.LastLogIndex)
		b = binary.AppendUvarint(b, m.LastLogTerm)
		return appendBool(b, m.LeadershipTransfer), rpcRequestVote, nil
	case *raft.RequestVoteResponse:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		b = appendBytes(b, m.Peers)
		return appendBool(b, m.Granted), rpcRequestVote, nil
	case *raft.RequestPreVoteRequest:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		b = binary.AppendUvarint(b, m.LastLogIndex)
		return binary.AppendUvarint(b, m.LastLogTerm), rpcRequestPreVote, nil
	case *raft.RequestPreVoteResponse:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		return appendBool(b, m.Granted), rpcRequestPreVote, nil
	case *raft.InstallSnapshotRequest:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendVarint(b, int64(m.SnapshotVersion))
		b = binary.AppendUvarint(b, m.Term)
		b = appendBytes(b, m.Leader)
		b = binary.AppendUvarint(b, m.LastLogIndex)
		b = binary.AppendUvarint(b, m.LastLogTerm)
		b = appendBytes(b, m.Peers)
		b = appendBytes(b, m.Configuration)
		b = binary.AppendUvarint(b, m.ConfigurationIndex)
		return binary.AppendVarint(b, m.Size), rpcInstallSnapshot, nil
	case *raft.InstallSnapshotResponse:
		b = appendHeader(b, &m.RPCHeader)
		b = binary.AppendUvarint(b, m.Term)
		return appendBool(b, m.Success), rpcInstallSnapshot, nil
	case *raft.TimeoutNowRequest:
		return appendHeader(b, &m.RPCHeader), rpcTimeoutNow, nil
	case *raft.TimeoutNowResponse:
		return appendHeader(b, &m.RPCHeader), rpcTimeoutNow, nil
	case *callRequest:
		b = appendString(b, m.Method)
		return appendBytes(b, m.Body), rpcCall, nil
	case *callResponse:
		return appendBytes(b, m.Body), rpcCall, nil
	}
	return b, 0, fmt.Errorf("transport: cannot encode %T", msg)
}

// decoder reads the body of one frame. Errors are sticky: after the first one every read returns a
// zero value, so a decode function checks d.err once at the end. Byte fields are copied out, so the
// frame buffer can be reused as soon as decoding returns.
type decoder struct {
	b   []byte
	err error
	// alias makes byte fields point into b instead of copying; only for a frame buffer that is
	// never reused (large frames, where the copy would be the cost of the whole decode).
	alias bool
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errMalformed
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool1() bool {
	switch d.byte1() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

// bytes decodes a nil-aware byte slice; its length is checked against what is left of the frame
// before anything is allocated.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	n--
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	var out []byte
	if d.alias {
		out = d.b[:n:n] // capped: an append by the consumer cannot overwrite the next field
	} else {
		out = make([]byte, n)
		copy(out, d.b)
	}
	d.b = d.b[n:]
	return out
}

func (d *decoder) string(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count decodes an element count and rejects one that the rest of the frame cannot hold at min bytes
// per element: this is what keeps a 2^62 count from becoming a 2^62-element allocation.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

// finish reports the first decode error, or trailing bytes after a complete message.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errMalformed
	}
	return d.err
}

func (d *decoder) header(h *raft.RPCHeader) {
	h.ProtocolVersion = raft.ProtocolVersion(d.varint())
	h.ID = d.bytes()
	h.Addr = d.bytes()
}

// zeroUnix is time.Time{}.Unix(): decoded back to the zero Time so IsZero survives a round trip.
const zeroUnix = -62135596800

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= 1e9 {
		d.fail()
	}
	if d.err != nil || (sec == zeroUnix && nsec == 0) {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec))
}

func (d *decoder) entries() []*raft.Log {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	n--
	if n > uint64(len(d.b)/minLogEncoded) {
		d.fail()
		return nil
	}
	// One backing array for all entries of a request: one allocation instead of n.
	logs := make([]raft.Log, n)
	out := make([]*raft.Log, n)
	for i := range logs {
		l := &logs[i]
		l.Index = d.uvarint()
		l.Term = d.uvarint()
		l.Type = raft.LogType(d.byte1())
		l.Data = d.bytes()
		l.Extensions = d.bytes()
		l.AppendedAt = d.time()
		out[i] = l
	}
	return out
}

// newMessage returns a fresh zero request or response of the given kind.
func newMessage(kind byte, response bool) (any, error) {
	switch {
	case kind == rpcAppendEntries && !response:
		return new(raft.AppendEntriesRequest), nil
	case kind == rpcAppendEntries:
		return new(raft.AppendEntriesResponse), nil
	case kind == rpcRequestVote && !response:
		return new(raft.RequestVoteRequest), nil
	case kind == rpcRequestVote:
		return new(raft.RequestVoteResponse), nil
	case kind == rpcRequestPreVote && !response:
		return new(raft.RequestPreVoteRequest), nil
	case kind == rpcRequestPreVote:
		return new(raft.RequestPreVoteResponse), nil
	case kind == rpcInstallSnapshot && !response:
		return new(raft.InstallSnapshotRequest), nil
	case kind == rpcInstallSnapshot:
		return new(raft.InstallSnapshotResponse), nil
	case kind == rpcTimeoutNow && !response:
		return new(raft.TimeoutNowRequest), nil
	case kind == rpcTimeoutNow:
		return new(raft.TimeoutNowResponse), nil
	case kind == rpcCall && !response:
		return new(callRequest), nil
	case kind == rpcCall:
		return new(callResponse), nil
	}
	return nil, errMalformed
}

// decodeInto decodes one message into out, which must be a pointer to one of the ten raft message
// types or to a callRequest or callResponse. The caller provides out so that a response lands
// directly in the struct raft handed us.
func (d *decoder) decodeInto(out any) {
	switch m := out.(type) {
	case *raft.AppendEntriesRequest:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.Leader = d.bytes()
		m.PrevLogEntry = d.uvarint()
		m.PrevLogTerm = d.uvarint()
		m.LeaderCommitIndex = d.uvarint()
		m.Entries = d.entries()
	case *raft.AppendEntriesResponse:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.LastLog = d.uvarint()
		m.Success = d.bool1()
		m.NoRetryBackoff = d.bool1()
	case *raft.RequestVoteRequest:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.Candidate = d.bytes()
		m.LastLogIndex = d.uvarint()
		m.LastLogTerm = d.uvarint()
		m.LeadershipTransfer = d.bool1()
	case *raft.RequestVoteResponse:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.Peers = d.bytes()
		m.Granted = d.bool1()
	case *raft.RequestPreVoteRequest:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.LastLogIndex = d.uvarint()
		m.LastLogTerm = d.uvarint()
	case *raft.RequestPreVoteResponse:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.Granted = d.bool1()
	case *raft.InstallSnapshotRequest:
		d.header(&m.RPCHeader)
		m.SnapshotVersion = raft.SnapshotVersion(d.varint())
		m.Term = d.uvarint()
		m.Leader = d.bytes()
		m.LastLogIndex = d.uvarint()
		m.LastLogTerm = d.uvarint()
		m.Peers = d.bytes()
		m.Configuration = d.bytes()
		m.ConfigurationIndex = d.uvarint()
		m.Size = d.varint()
		if m.Size < 0 {
			d.fail()
		}
	case *raft.InstallSnapshotResponse:
		d.header(&m.RPCHeader)
		m.Term = d.uvarint()
		m.Success = d.bool1()
	case *raft.TimeoutNowRequest:
		d.header(&m.RPCHeader)
	case *raft.TimeoutNowResponse:
		d.header(&m.RPCHeader)
	case *callRequest:
		// The method name is bounded only by the frame (as the body is): d.string checks its length
		// against the bytes left before copying.
		m.Method = d.string(len(d.b))
		m.Body = d.bytes()
	case *callResponse:
		m.Body = d.bytes()
	default:
		d.fail()
	}
}
