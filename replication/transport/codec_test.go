package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
	"testing/iotest"
	"time"
	"unsafe"

	"github.com/hashicorp/raft"
)

var testTime = time.Unix(1_700_000_000, 123_456_789)

func hdr(n byte) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte{'i', n}, Addr: []byte("10.0.0.1:7000")}
}

// fullMessages returns every message type with every field set to a distinct non-zero value.
func fullMessages() []any {
	return []any{
		&raft.AppendEntriesRequest{RPCHeader: hdr(1), Term: 7, Leader: []byte("leader:1"), PrevLogEntry: 41,
			PrevLogTerm: 6, LeaderCommitIndex: 40, Entries: []*raft.Log{
				{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("data-42"), Extensions: []byte("ext"), AppendedAt: testTime},
				{Index: 43, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xab}, 1000), Extensions: []byte{}, AppendedAt: time.Time{}},
				{Index: 1 << 62, Term: 1 << 40, Type: raft.LogBarrier, Data: nil, Extensions: nil, AppendedAt: time.Unix(-5, 999_999_999)},
			}},
		&raft.AppendEntriesResponse{RPCHeader: hdr(2), Term: 8, LastLog: 99, Success: true, NoRetryBackoff: true},
		&raft.RequestVoteRequest{RPCHeader: hdr(3), Term: 9, Candidate: []byte("cand"), LastLogIndex: 100, LastLogTerm: 8, LeadershipTransfer: true},
		&raft.RequestVoteResponse{RPCHeader: hdr(4), Term: 10, Peers: []byte("peers"), Granted: true},
		&raft.RequestPreVoteRequest{RPCHeader: hdr(5), Term: 11, LastLogIndex: 101, LastLogTerm: 9},
		&raft.RequestPreVoteResponse{RPCHeader: hdr(6), Term: 12, Granted: true},
		&raft.InstallSnapshotRequest{RPCHeader: hdr(7), SnapshotVersion: raft.SnapshotVersionMax, Term: 13,
			Leader: []byte("leader:2"), LastLogIndex: 500, LastLogTerm: 12, Peers: []byte("old-peers"),
			Configuration: []byte("configuration"), ConfigurationIndex: 450, Size: 1 << 33},
		&raft.InstallSnapshotResponse{RPCHeader: hdr(8), Term: 14, Success: true},
		&raft.TimeoutNowRequest{RPCHeader: hdr(9)},
		&raft.TimeoutNowResponse{RPCHeader: hdr(10)},
		// Zero values: nil slices, zero time, false flags.
		&raft.AppendEntriesRequest{},
		&raft.AppendEntriesRequest{Entries: []*raft.Log{}},
		&raft.InstallSnapshotResponse{},
	}
}

// callMessages returns Call requests and responses: nil, empty and non-empty bodies, an empty
// method, and a body past aliasMin (the size at which the reader hands decoders an owned buffer).
func callMessages() []any {
	return []any{
		&callRequest{Method: "metadata.CreateTopic", Body: []byte(`{"name":"orders"}`)},
		&callRequest{Method: "m", Body: []byte{}},
		&callRequest{},
		&callRequest{Method: "big", Body: bytes.Repeat([]byte{0x5a}, aliasMin+1)},
		&callResponse{Body: []byte("ok")},
		&callResponse{Body: []byte{}},
		&callResponse{},
	}
}

func isResponse(m any) bool {
	switch m.(type) {
	case *raft.AppendEntriesResponse, *raft.RequestVoteResponse, *raft.RequestPreVoteResponse,
		*raft.InstallSnapshotResponse, *raft.TimeoutNowResponse, *callResponse:
		return true
	}
	return false
}

func TestCodecRoundTrip(t *testing.T) {
	for _, msg := range append(fullMessages(), callMessages()...) {
		t.Run(fmt.Sprintf("%T", msg), func(t *testing.T) {
			b, kind, err := appendMessage(nil, msg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := newMessage(kind, isResponse(msg)); err != nil {
				t.Fatal(err)
			}
			for _, alias := range []bool{false, true} {
				out, _ := newMessage(kind, isResponse(msg))
				d := decoder{b: append([]byte(nil), b...), alias: alias}
				d.decodeInto(out)
				if err := d.finish(); err != nil {
					t.Fatalf("decode (alias %v): %v", alias, err)
				}
				if !reflect.DeepEqual(msg, out) {
					t.Fatalf("round trip mismatch (alias %v):\n in: %#v\nout: %#v", alias, msg, out)
				}
			}
			// Every strict prefix must fail cleanly, never panic or succeed.
			for i := 0; i < len(b); i++ {
				out, _ := newMessage(kind, isResponse(msg))
				d := decoder{b: b[:i]}
				d.decodeInto(out)
				if d.finish() == nil {
					t.Fatalf("prefix of %d/%d bytes decoded without error", i, len(b))
				}
			}
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var wire []byte
	var err error
	for i, msg := range fullMessages() {
		if isResponse(msg) {
			_, kind, _ := appendMessage(nil, msg)
			wire = appendResponse(wire, uint64(i), kind, msg, nil)
		} else if wire, err = appendRequest(wire, uint64(i), "group-a", msg); err != nil {
			t.Fatal(err)
		}
	}
	wire = appendResponse(wire, 77, rpcRequestVote, nil, fmt.Errorf("boom"))
	hb := appendHeartbeatItem(nil, 5, "g1", fullMessages()[0].(*raft.AppendEntriesRequest))
	hb = appendHeartbeatItem(hb, 6, "g2", &raft.AppendEntriesRequest{Term: 3, Leader: []byte("x")})
	wire = appendBatchFrame(wire, frameHeartbeats, 2, hb)
	wire = appendHello(wire, hello{MinVersion: 1, MaxVersion: 3, Kind: connData, ClusterID: "c1", Addr: "a:1"})
	wire = appendHelloAck(wire, helloAck{Version: 1})
	wire = appendCredit(wire, 9, 1<<20)
	wire = appendAbort(wire, 9, "stop")
	wire = append(appendChunkHeader(wire, 9, 3), 'x', 'y', 'z')

	br := bufio.NewReader(bytes.NewReader(wire))
	var got []parsedFrame
	for {
		typ, body, err := readFrame(br, 1<<20, nil)
		if err != nil {
			break
		}
		f, err := parseFrame(typ, body)
		if err != nil {
			t.Fatalf("frame %d (type %d): %v", len(got), typ, err)
		}
		got = append(got, f)
	}
	if want := len(fullMessages()) + 7; len(got) != want {
		t.Fatalf("parsed %d frames, want %d", len(got), want)
	}
	for i, msg := range fullMessages() {
		if !reflect.DeepEqual(got[i].msgs[0], msg) || got[i].ids[0] != uint64(i) {
			t.Fatalf("frame %d: got %#v", i, got[i])
		}
	}
	n := len(fullMessages())
	if got[n].errs[0] != "boom" {
		t.Fatalf("error response: %#v", got[n])
	}
	if g := got[n+1]; len(g.msgs) != 2 || g.groups[1] != "g2" || g.ids[1] != 6 {
		t.Fatalf("heartbeat batch: %#v", g)
	}
	if h := got[n+2].hello; h.ClusterID != "c1" || h.Addr != "a:1" || h.MaxVersion != 3 || h.Kind != connData {
		t.Fatalf("hello: %#v", h)
	}
	if c := got[n+4]; c.ids[0] != 9 || c.credit != 1<<20 {
		t.Fatalf("credit: %#v", c)
	}
	if c := got[n+6]; string(c.data) != "xyz" {
		t.Fatalf("chunk: %#v", c)
	}
}

func TestDecodeRejects(t *testing.T) {
	// A count far beyond what the frame can hold must be refused before allocating.
	b := appendHeader(nil, &raft.RPCHeader{})
	b = append(b, 1, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, 1<<60)
	d := decoder{b: b}
	d.decodeInto(new(raft.AppendEntriesRequest))
	if d.finish() == nil {
		t.Fatal("huge entry count accepted")
	}
	// Booleans are 0 or 1.
	d = decoder{b: []byte{0, 0, 0, 1, 0, 2}}
	d.decodeInto(new(raft.AppendEntriesResponse))
	if d.finish() == nil {
		t.Fatal("bool 2 accepted")
	}
	// Frame length over the maximum is refused before the body is read.
	var big [5]byte
	binary.BigEndian.PutUint32(big[:], 1<<30)
	if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(big[:])), 1<<20, nil); err == nil {
		t.Fatal("oversized frame accepted")
	}
	// Trailing bytes are an error.
	b, _, _ = appendMessage(nil, &raft.TimeoutNowRequest{})
	d = decoder{b: append(b, 0)}
	d.decodeInto(new(raft.TimeoutNowRequest))
	if d.finish() == nil {
		t.Fatal("trailing byte accepted")
	}
}

// TestReadFrameLarge reads frames bigger than one read step, delivered in odd pieces, and a
// truncated one, which must fail without having allocated its promised size.
func TestReadFrameLarge(t *testing.T) {
	body := make([]byte, 5*readStep/2)
	for i := range body {
		body[i] = byte(i * 7)
	}
	frame := append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+1)), frameSnapshotChunk)
	frame = append(frame, body...)
	br := bufio.NewReader(iotest.HalfReader(bytes.NewReader(frame)))
	typ, got, err := readFrame(br, 64<<20, nil)
	if err != nil || typ != frameSnapshotChunk || !bytes.Equal(got, body) {
		t.Fatalf("large frame: type %d, %d bytes, err %v", typ, len(got), err)
	}
	truncated := append(binary.BigEndian.AppendUint32(nil, 60<<20), frameSnapshotChunk, 1, 2, 3)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = readFrame(bufio.NewReader(bytes.NewReader(truncated)), 64<<20, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4*readStep {
		t.Fatalf("a truncated 60 MiB frame allocated %d bytes", grew)
	}
}

func TestIsHeartbeat(t *testing.T) {
	hb := func() *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}, Term: 2}
	}
	cases := []struct {
		name string
		mod  func(*raft.AppendEntriesRequest)
		want bool
	}{
		{"heartbeat", func(*raft.AppendEntriesRequest) {}, true},
		{"legacy leader field", func(a *raft.AppendEntriesRequest) { a.Addr, a.Leader = nil, []byte("a") }, true},
		{"no term", func(a *raft.AppendEntriesRequest) { a.Term = 0 }, false},
		{"no leader", func(a *raft.AppendEntriesRequest) { a.Addr = nil }, false},
		{"prev index", func(a *raft.AppendEntriesRequest) { a.PrevLogEntry = 1 }, false},
		{"prev term", func(a *raft.AppendEntriesRequest) { a.PrevLogTerm = 1 }, false},
		{"commit index", func(a *raft.AppendEntriesRequest) { a.LeaderCommitIndex = 1 }, false},
		{"entries", func(a *raft.AppendEntriesRequest) { a.Entries = []*raft.Log{{Index: 1}} }, false},
	}
	for _, c := range cases {
		a := hb()
		c.mod(a)
		if got := isHeartbeat(a); got != c.want {
			t.Errorf("%s: isHeartbeat = %v, want %v", c.name, got, c.want)
		}
	}
}

// parsedFrame is the generic decode of any frame, built from the same decoder methods the
// connections use; the fuzz target and the round-trip tests go through it.
type parsedFrame struct {
	typ    byte
	ids    []uint64
	groups []string
	kinds  []byte
	msgs   []any
	errs   []string
	hello  hello
	ack    helloAck
	credit uint64
	data   []byte
}

func parseFrame(typ byte, body []byte) (parsedFrame, error) {
	f := parsedFrame{typ: typ}
	d := decoder{b: body}
	response := func() {
		id, status := d.responseHead()
		f.ids = append(f.ids, id)
		if status == statusError {
			f.errs = append(f.errs, d.string(maxErrLen))
			f.kinds = append(f.kinds, 0)
			f.msgs = append(f.msgs, nil)
			return
		}
		kind := d.byte1()
		msg, err := newMessage(kind, true)
		if err != nil {
			d.fail()
			return
		}
		d.decodeInto(msg)
		f.kinds = append(f.kinds, kind)
		f.msgs = append(f.msgs, msg)
		f.errs = append(f.errs, "")
	}
	var err error
	switch typ {
	case frameHello:
		f.hello, err = decodeHello(body)
		return f, err
	case frameHelloAck:
		f.ack, err = decodeHelloAck(body)
		return f, err
	case frameRequest:
		id, group, kind := d.requestHead()
		f.ids, f.groups, f.kinds = []uint64{id}, []string{group}, []byte{kind}
		f.msgs = []any{d.request(kind)}
	case frameResponse:
		response()
	case frameHeartbeats:
		n := d.count(minHBItem)
		for i := 0; i < n && d.err == nil; i++ {
			f.ids = append(f.ids, d.uvarint())
			f.groups = append(f.groups, d.string(maxGroupIDLen))
			req := new(raft.AppendEntriesRequest)
			d.decodeInto(req)
			f.msgs = append(f.msgs, req)
		}
	case frameHeartbeatResponses:
		n := d.count(minHBItem)
		for i := 0; i < n && d.err == nil; i++ {
			response()
		}
	case frameSnapshotChunk:
		f.ids = []uint64{d.uvarint()}
		f.data = append([]byte(nil), d.b...)
		d.b = nil
	case frameSnapshotCredit:
		f.ids = []uint64{d.uvarint()}
		f.credit = d.uvarint()
	case frameSnapshotAbort:
		f.ids = []uint64{d.uvarint()}
		f.errs = []string{d.string(maxErrLen)}
	default:
		return f, errMalformed
	}
	return f, d.finish()
}

// encodeParsed re-encodes a parsed frame (the inverse of parseFrame for the types it covers).
func encodeParsed(f parsedFrame) []byte {
	switch f.typ {
	case frameHello:
		return appendHello(nil, f.hello)
	case frameHelloAck:
		return appendHelloAck(nil, f.ack)
	case frameRequest:
		b, _ := appendRequest(nil, f.ids[0], f.groups[0], f.msgs[0])
		return b
	case frameResponse, frameHeartbeatResponses:
		var items []byte
		for i := range f.ids {
			var err error
			if f.msgs[i] == nil {
				err = fmt.Errorf("%s", f.errs[i])
			}
			items = appendResponseItem(items, f.ids[i], f.kinds[i], f.msgs[i], err)
		}
		if f.typ == frameResponse {
			return append(binary.BigEndian.AppendUint32(nil, uint32(1+len(items))), append([]byte{frameResponse}, items...)...)
		}
		return appendBatchFrame(nil, f.typ, len(f.ids), items)
	case frameHeartbeats:
		var items []byte
		for i := range f.ids {
			items = appendHeartbeatItem(items, f.ids[i], f.groups[i], f.msgs[i].(*raft.AppendEntriesRequest))
		}
		return appendBatchFrame(nil, f.typ, len(f.ids), items)
	case frameSnapshotChunk:
		return append(appendChunkHeader(nil, f.ids[0], len(f.data)), f.data...)
	case frameSnapshotCredit:
		return appendCredit(nil, f.ids[0], f.credit)
	case frameSnapshotAbort:
		return appendAbort(nil, f.ids[0], f.errs[0])
	}
	return nil
}

// footprint estimates the memory a decoded frame holds, to check allocation stays proportional to
// the input.
func footprint(f parsedFrame) int {
	n := 256 + len(f.data) + 64*len(f.ids)
	for _, m := range f.msgs {
		n += 256
		switch a := m.(type) {
		case *raft.AppendEntriesRequest:
			n += len(a.Entries) * int(unsafe.Sizeof(raft.Log{})+8)
			for _, l := range a.Entries {
				n += len(l.Data) + len(l.Extensions)
			}
		case *callRequest:
			n += len(a.Method) + len(a.Body)
		case *callResponse:
			n += len(a.Body)
		}
	}
	return n
}

func seedFrames() [][]byte {
	var seeds [][]byte
	for i, msg := range fullMessages() {
		if isResponse(msg) {
			_, kind, _ := appendMessage(nil, msg)
			seeds = append(seeds, appendResponse(nil, uint64(i), kind, msg, nil))
		} else {
			b, _ := appendRequest(nil, uint64(i), "topic-uuid/3", msg)
			seeds = append(seeds, b)
		}
	}
	hb := appendHeartbeatItem(nil, 5, "g1", &raft.AppendEntriesRequest{RPCHeader: hdr(1), Term: 3, Leader: []byte("x")})
	seeds = append(seeds,
		appendResponse(nil, 3, rpcAppendEntries, nil, fmt.Errorf("transport: unknown group")),
		appendBatchFrame(nil, frameHeartbeats, 1, hb),
		appendBatchFrame(nil, frameHeartbeatResponses, 1, appendResponseItem(nil, 5, rpcAppendEntries, &raft.AppendEntriesResponse{Term: 3, Success: true}, nil)),
		appendHello(nil, hello{MinVersion: 1, MaxVersion: 1, Kind: connControl, ClusterID: "cluster", Addr: "127.0.0.1:9093"}),
		appendHelloAck(nil, helloAck{Err: "cluster id mismatch"}),
		appendCredit(nil, 1, snapshotWindow),
		appendAbort(nil, 1, "reading snapshot: EOF"),
		append(appendChunkHeader(nil, 1, 4), 1, 2, 3, 4),
		// Hostile: a count of 2^62 entries in a tiny frame, and a length beyond the maximum.
		append(binary.BigEndian.AppendUint32(nil, 12), frameHeartbeats, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0, 0),
		binary.BigEndian.AppendUint32(nil, 0xffffffff),
	)
	// Calls, after the rest so that regenerating the corpus keeps the older seeds' file names.
	req, _ := appendRequest(nil, 40, "", &callRequest{Method: "metadata.CreateTopic", Body: []byte("orders")})
	seeds = append(seeds, req,
		appendResponse(nil, 40, rpcCall, &callResponse{Body: []byte{}}, nil),
		appendResponse(nil, 41, rpcCall, nil, fmt.Errorf("metadata: topic exists")),
		// Hostile: a method length of 2^62 in a tiny frame.
		append(binary.BigEndian.AppendUint32(nil, 13), frameRequest, 1, 0, rpcCall, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f),
	)
	return seeds
}

// FuzzDecode feeds arbitrary bytes through the frame reader and every frame decoder: it must never
// panic, must hold memory proportional to the input, and whatever decodes must re-encode to bytes
// that decode to the same value.
func FuzzDecode(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for {
			typ, body, err := readFrame(br, 64<<10, nil)
			if err != nil {
				return
			}
			p, err := parseFrame(typ, body)
			if err != nil {
				continue
			}
			if fp := footprint(p); fp > 32*len(data)+4096 {
				t.Fatalf("decoded %d input bytes into ~%d bytes", len(data), fp)
			}
			again := encodeParsed(p)
			typ2, body2, err := readFrame(bufio.NewReader(bytes.NewReader(again)), 1<<20, nil)
			if err != nil {
				t.Fatalf("re-encoded frame unreadable: %v", err)
			}
			p2, err := parseFrame(typ2, body2)
			if err != nil {
				t.Fatalf("re-encoded frame does not decode: %v", err)
			}
			if !reflect.DeepEqual(p, p2) {
				t.Fatalf("re-encode changed the frame:\n%#v\n%#v", p, p2)
			}
		}
	})
}

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzDecode when VARVE_WRITE_CORPUS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("VARVE_WRITE_CORPUS") != "1" {
		t.Skip("set VARVE_WRITE_CORPUS=1 to regenerate the committed seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seedFrames() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
