package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// Buffer pools for outgoing frames, by size class, so that a 4 MiB AppendEntries reuses a 4 MiB
// buffer instead of growing a small one by doubling. Buffers above the largest class are not kept.
var bufClasses = [...]int{4 << 10, 64 << 10, 1 << 20, 8 << 20}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns an empty buffer with room for at least hint bytes when a class holds that much.
func getBuf(hint int) *[]byte {
	for i, size := range bufClasses {
		if hint <= size {
			if b, ok := bufPools[i].Get().(*[]byte); ok {
				return b
			}
			b := make([]byte, 0, size)
			return &b
		}
	}
	b := make([]byte, 0, hint)
	return &b
}

func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	for i := len(bufClasses) - 1; i >= 0; i-- {
		if cap(*b) >= bufClasses[i] {
			if cap(*b) <= 2*bufClasses[i] {
				*b = (*b)[:0]
				bufPools[i].Put(b)
			}
			return
		}
	}
}

// sizeHint estimates a message's encoded size, so the frame buffer is sized once.
func sizeHint(msg any) int {
	switch m := msg.(type) {
	case *raft.AppendEntriesRequest:
		n := 96 + len(m.ID) + len(m.Addr) + len(m.Leader)
		for _, l := range m.Entries {
			n += 48 + len(l.Data) + len(l.Extensions)
		}
		return n
	case *callRequest:
		return 32 + len(m.Method) + len(m.Body)
	case *callResponse:
		return 32 + len(m.Body)
	}
	return 512
}

// encodeRequest encodes a request frame into a pooled buffer, refusing one over maxFrame (the peer
// would close the connection, failing every group on it).
func encodeRequest(id uint64, group string, msg any, maxFrame int) (*[]byte, error) {
	b := getBuf(sizeHint(msg) + len(group))
	var err error
	if *b, err = appendRequest(*b, id, group, msg); err == nil && len(*b) > maxFrame {
		err = fmt.Errorf("transport: request of %d bytes exceeds MaxFrameSize %d", len(*b), maxFrame)
	}
	if err != nil {
		putBuf(b)
		return nil, err
	}
	return b, nil
}

// startFrame appends a frame header with a zero length; finishFrame fills the length in once the body
// has been appended. Encoding straight into the (pooled) output buffer avoids a second copy.
func startFrame(b []byte, typ byte) []byte { return append(b, 0, 0, 0, 0, typ) }

func finishFrame(b []byte, start int) {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
}

// hello is the first frame on every connection, sent by the dialer; helloAck is the answer. Version 0
// in an ack means refused, with the reason in Err.
type hello struct {
	MinVersion, MaxVersion uint64
	Kind                   byte
	ClusterID              string
	Addr                   string // the dialer's advertised raft address
}

type helloAck struct {
	Version uint64
	Err     string
}

func appendHello(b []byte, h hello) []byte {
	start := len(b)
	b = startFrame(b, frameHello)
	b = append(b, helloMagic...)
	b = binary.AppendUvarint(b, h.MinVersion)
	b = binary.AppendUvarint(b, h.MaxVersion)
	b = append(b, h.Kind)
	b = appendString(b, h.ClusterID)
	b = appendString(b, h.Addr)
	finishFrame(b, start)
	return b
}

func appendHelloAck(b []byte, a helloAck) []byte {
	start := len(b)
	b = startFrame(b, frameHelloAck)
	b = append(b, helloMagic...)
	b = binary.AppendUvarint(b, a.Version)
	b = appendString(b, truncate(a.Err))
	finishFrame(b, start)
	return b
}

func (d *decoder) magic() {
	if len(d.b) < len(helloMagic) || string(d.b[:len(helloMagic)]) != helloMagic {
		d.fail()
		return
	}
	d.b = d.b[len(helloMagic):]
}

func decodeHello(body []byte) (hello, error) {
	d := decoder{b: body}
	d.magic()
	h := hello{MinVersion: d.uvarint(), MaxVersion: d.uvarint(), Kind: d.byte1()}
	h.ClusterID = d.string(maxClusterIDLen)
	h.Addr = d.string(maxAddrLen)
	return h, d.finish()
}

func decodeHelloAck(body []byte) (helloAck, error) {
	d := decoder{b: body}
	d.magic()
	a := helloAck{Version: d.uvarint()}
	a.Err = d.string(maxErrLen)
	return a, d.finish()
}

func truncate(s string) string {
	if len(s) > maxErrLen {
		return s[:maxErrLen]
	}
	return s
}

// appendRequest encodes a complete request frame: request id, group id, kind, message.
func appendRequest(b []byte, id uint64, group string, msg any) ([]byte, error) {
	start := len(b)
	b = startFrame(b, frameRequest)
	b = binary.AppendUvarint(b, id)
	b = appendString(b, group)
	kindAt := len(b)
	b = append(b, 0)
	b, kind, err := appendMessage(b, msg)
	if err != nil {
		return b[:start], err
	}
	b[kindAt] = kind
	finishFrame(b, start)
	return b, nil
}

// appendResponseItem encodes request id, status and message (or error) without a frame header; it is
// the body of a response frame and one item of a heartbeat response batch.
func appendResponseItem(b []byte, id uint64, kind byte, resp any, rerr error) []byte {
	b = binary.AppendUvarint(b, id)
	if rerr == nil && resp != nil {
		mark := len(b)
		b = append(b, statusOK, 0)
		var k byte
		var err error
		if b, k, err = appendMessage(b, resp); err == nil && k == kind {
			b[mark+1] = k
			return b
		}
		b = b[:mark]
		rerr = fmt.Errorf("transport: bad response %T for rpc kind %d", resp, kind)
	}
	if rerr == nil {
		rerr = errors.New("transport: empty response")
	}
	b = append(b, statusError)
	return appendString(b, truncate(rerr.Error()))
}

func appendResponse(b []byte, id uint64, kind byte, resp any, rerr error) []byte {
	start := len(b)
	b = startFrame(b, frameResponse)
	b = appendResponseItem(b, id, kind, resp, rerr)
	finishFrame(b, start)
	return b
}

// appendHeartbeatItem encodes one item of a heartbeat batch: request id, group id, request.
func appendHeartbeatItem(b []byte, id uint64, group string, req *raft.AppendEntriesRequest) []byte {
	b = binary.AppendUvarint(b, id)
	b = appendString(b, group)
	b, _, _ = appendMessage(b, req)
	return b
}

// appendBatchFrame frames count items already encoded in items.
func appendBatchFrame(b []byte, typ byte, count int, items []byte) []byte {
	start := len(b)
	b = startFrame(b, typ)
	b = binary.AppendUvarint(b, uint64(count))
	b = append(b, items...)
	finishFrame(b, start)
	return b
}

// snapshotChunkHeader returns the frame header and request id of a chunk of n data bytes; the data
// is then appended (or read straight into the buffer) by the caller.
func appendChunkHeader(b []byte, id uint64, n int) []byte {
	var idb [binary.MaxVarintLen64]byte
	idn := binary.PutUvarint(idb[:], id)
	b = binary.BigEndian.AppendUint32(b, uint32(1+idn+n))
	b = append(b, frameSnapshotChunk)
	return append(b, idb[:idn]...)
}

func appendCredit(b []byte, id uint64, n uint64) []byte {
	start := len(b)
	b = startFrame(b, frameSnapshotCredit)
	b = binary.AppendUvarint(b, id)
	b = binary.AppendUvarint(b, n)
	finishFrame(b, start)
	return b
}

func appendAbort(b []byte, id uint64, reason string) []byte {
	start := len(b)
	b = startFrame(b, frameSnapshotAbort)
	b = binary.AppendUvarint(b, id)
	b = appendString(b, truncate(reason))
	finishFrame(b, start)
	return b
}

// isHeartbeat is the test NetworkTransport applies: an AppendEntries that carries no log position.
// Only these may use the control connection and the heartbeat fast path; everything else must stay
// in order with the data on the data connection.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	leader := a.Addr
	if len(leader) == 0 {
		leader = a.Leader
	}
	return a.Term != 0 && leader != nil && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

// requestHead decodes the request id, group id and RPC kind that open a request frame.
func (d *decoder) requestHead() (id uint64, group string, kind byte) {
	id = d.uvarint()
	group = d.string(maxGroupIDLen)
	kind = d.byte1()
	return id, group, kind
}

// request decodes a request message of the given kind into a new value.
func (d *decoder) request(kind byte) any {
	msg, err := newMessage(kind, false)
	if err != nil {
		d.fail()
		return nil
	}
	d.decodeInto(msg)
	return msg
}

// responseHead decodes the request id and status of a response. For statusError the error string
// follows; for statusOK the RPC kind and the message.
func (d *decoder) responseHead() (id uint64, status byte) {
	id = d.uvarint()
	status = d.byte1()
	if status != statusOK && status != statusError {
		d.fail()
	}
	return id, status
}

// readFrame reads one frame into buf (grown as needed) and returns its type and body. A frame larger
// than max is refused before its body is read. A large body is read in steps, its buffer growing
// with the bytes that actually arrive, so a header that promises 64 MiB and then stalls costs at
// most one step of memory, not 64 MiB.
func readFrame(br *bufio.Reader, max int, buf []byte) (byte, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(uint32(hdr[0])<<24 | uint32(hdr[1])<<16 | uint32(hdr[2])<<8 | uint32(hdr[3]))
	if n < 1 || n > max {
		return 0, nil, fmt.Errorf("transport: frame size %d outside [1, %d]", n, max)
	}
	size := n - 1
	if cap(buf) >= size || size <= readStep {
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return 0, nil, err
		}
		return hdr[4], buf, nil
	}
	buf = make([]byte, 0, readStep)
	for len(buf) < size {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), size-len(buf)))
		}
		k, err := br.Read(buf[len(buf):min(cap(buf), size)])
		buf = buf[:len(buf)+k]
		if err != nil && len(buf) < size {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
	return hdr[4], buf, nil
}

// readStep is the first allocation for a large frame body; it doubles as the bytes arrive.
const readStep = 1 << 20
