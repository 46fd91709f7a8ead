package integration

// Row 15 of TESTPLAN.md: hostile requests on the Kafka port of a running
// broker. Every input gets either its exact Kafka error code (decoded with
// kmsg) on a connection that stays usable, or a close of that connection
// alone; a witness connection and a franz-go producer and consumer on other
// connections carry on throughout, with their records checked one by one;
// and the process's memory stays within twice what the same workload uses
// without the attack.
//
// How memory is measured: the broker runs in this test process, so a
// sampler reads runtime.ReadMemStats (HeapInuse) and /proc/self/status
// (VmRSS) every 10 ms, first for a 2 s baseline under the healthy workload
// alone, then while the attack runs, and peak is compared with peak.
// Everything the test itself allocates for the attack (bombs, the
// 10^6-partition frame) is built before the baseline, and
// debug.FreeOSMemory returns the scratch space to the OS first. For the
// attack a soft memory limit of twice the baseline heap is set, as
// GOMEMLIMIT would be in production, so that the collector reclaims garbage
// before the heap passes it and the peaks measure what the broker holds,
// not GC pacing (without a limit a heap grows to twice what was live at the
// last collection). Every input must keep RSS under twice its baseline. The
// one exception is the request naming 10^6 partitions: the broker must
// decode it before it can count them, and kmsg's structs for it take about
// 40 MB for a 6 MB frame, as much as this small test process's whole heap;
// it is measured on its own and bounded by twice the baseline plus
// kmsgDecodeFactor times its frame.
//
import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/partition"
)

// hostileIP is the loopback address hostile connections come from, so the
// broker's per-IP cap counts them apart from the healthy clients.
const (
	hostileIP      = "127.0.0.9"
	hostilePerIP   = 32
	hostileDecompr = 1 << 20 // the broker's MaxDecompressedBytes in this test
	bombZeros      = 8 << 20 // what each bomb decompresses to: 8 times the cap
	// hostileMaxParts is the broker's MaxPartitionsPerRequest in this
	// test, a tenth of the default so that the requests at and just past
	// it stay quick under the race detector; the 10^6-partition request is
	// over either.
	hostileMaxParts = 10_000
)

func TestHostileRequests(t *testing.T) {
	logs := &warnLog{}
	c := NewCluster(t, WithConfig(func(cfg *broker.Config) {
		cfg.MaxDecompressedBytes = hostileDecompr
		cfg.MaxConnectionsPerIP = hostilePerIP
		cfg.MaxPartitionsPerRequest = hostileMaxParts
		cfg.Logger = slog.New(logs)
	}))
	adm := c.Admin(t)
	createTopic(t, adm, "hostile", 1, nil)
	createTopic(t, adm, "healthy", 3, nil)
	addr := c.Addr()

	// Everything the attack sends is built now, before the baseline.
	cases := hostileCases(t)
	debug.FreeOSMemory()

	w := startHealthy(t, c, "healthy")
	witness := dialRaw(t, addr, "127.0.0.10")
	witness.apiVersions()

	mem := newMemSampler()
	w.waitAcks(t, 50)
	time.Sleep(2 * time.Second) // the baseline period: healthy load only
	base := mem.cut()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(2 * base.heap)))
	acksBefore := w.acks.Load()
	run := func(heavy bool) (largest int) {
		for _, hc := range cases {
			if (hc.decodes > 0) != heavy {
				continue
			}
			largest = max(largest, hc.decodes)
			t.Run(hc.name, func(t *testing.T) {
				conn := dialRaw(t, addr, hostileIP)
				hc.run(t, conn)
				witness.apiVersions() // the witness connection was not touched
			})
		}
		return largest
	}
	run(false)
	light := mem.cut()
	frame := run(true)
	heavy := mem.cut()
	mem.stop()
	acksDuring := w.acks.Load() - acksBefore
	w.waitAcks(t, w.acks.Load()+50) // and it still produces after
	w.stopAndCheck(t)

	t.Logf("memory: baseline peak heap %d MiB, rss %d MiB; every input but the 10^6 partitions: heap %d MiB, rss %d MiB; "+
		"10^6 partitions (%d KiB frame): heap %d MiB, rss %d MiB",
		base.heap>>20, base.rss>>20, light.heap>>20, light.rss>>20, frame>>10, heavy.heap>>20, heavy.rss>>20)
	if light.rss >= 2*base.rss {
		t.Errorf("RSS under attack %d MiB, over twice its baseline %d MiB", light.rss>>20, base.rss>>20)
	}
	if bound := 2*base.rss + kmsgDecodeFactor*uint64(frame); heavy.rss >= bound {
		t.Errorf("RSS refusing 10^6 partitions %d MiB, over twice its baseline %d MiB plus %d times the frame (%d KiB)",
			heavy.rss>>20, base.rss>>20, kmsgDecodeFactor, frame>>10)
	}
	if acksDuring == 0 {
		t.Errorf("the healthy producer made no progress during the attack")
	}
	t.Logf("healthy producer: %d records acknowledged during the attack, %d in all", acksDuring, w.acks.Load())

	// Every hostile connection was really closed and forgotten: the broker
	// takes the per-IP cap's worth of new connections from the same IP,
	// and refuses one more.
	var full []*rawConn
	eventually(t, 10*time.Second, "hostile connections released", func() bool {
		for _, rc := range full {
			rc.nc.Close()
		}
		full = full[:0]
		for range hostilePerIP {
			rc := dialRaw(t, addr, hostileIP)
			full = append(full, rc)
			if !rc.tryApiVersions() {
				return false
			}
		}
		return true
	})
	extra := dialRaw(t, addr, hostileIP)
	extra.send(kmsg.NewPtrApiVersionsRequest(), 3)
	extra.expectClosed(t)
	witness.apiVersions()

	for _, want := range []string{
		"invalid frame size, closing connection",
		"refusing request, closing connection",
		"too many partitions in one request, closing connection",
		"connection limit reached, closing new connection",
	} {
		if !logs.has(want) {
			t.Errorf("no warning %q was logged", want)
		}
	}
}

// kmsgDecodeFactor bounds what decoding a request costs per byte of its
// frame: kmsg materialises each array entry as a Go struct, and the
// cheapest entry on the wire, a Produce partition with null records (6
// bytes in flexible versions), is a 40-byte struct. The partition limit can
// only be checked once the request is decoded.
const kmsgDecodeFactor = 8

// hostileCase is one input and what must come of it.
type hostileCase struct {
	name string
	run  func(t *testing.T, conn *rawConn)
	// decodes is the frame size of an input the broker must decode whole
	// before it can refuse it (10^6 partitions), whose memory is bounded
	// by kmsgDecodeFactor times it rather than by the baseline alone.
	decodes int
}

// closes sends b and expects the connection closed without an answer.
func closes(name string, b []byte) hostileCase {
	return hostileCase{name: name, run: func(t *testing.T, conn *rawConn) {
		conn.write(b)
		conn.expectClosed(t)
	}}
}

// answers sends req and checks the decoded response, then that the
// connection still serves.
func answers(name string, req kmsg.Request, check func(t *testing.T, resp kmsg.Response)) hostileCase {
	return hostileCase{name: name, run: func(t *testing.T, conn *rawConn) {
		check(t, conn.roundTrip(req))
		conn.apiVersions()
	}}
}

func hostileCases(t *testing.T) []hostileCase {
	size := func(n uint32, tail int) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), make([]byte, tail)...)
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("hostile"))
	frame := func(req kmsg.Request, v int16) []byte {
		req.SetVersion(v)
		return f.AppendRequest(nil, req, 1)
	}
	// body replaces a request's body with raw bytes; kmsg still writes
	// the header.
	body := func(key, v int16, b []byte) []byte {
		req := kmsg.RequestForKey(key)
		req.SetVersion(v)
		return f.AppendRequest(nil, rawBody{req, b}, 1)
	}
	produceHeader := func(acks int16) []byte { // v7: null transactional id, acks, timeout
		return binary.BigEndian.AppendUint32([]byte{0xff, 0xff, byte(acks >> 8), byte(acks)}, 5000)
	}
	clientHello := tlsClientHello(t)

	cases := []hostileCase{
		closes("oversized_frame", size(100<<20+1, 64)),
		closes("frame_2^31-1", size(math32Max, 64)),
		closes("negative_frame_-1", size(0xffffffff, 64)),
		closes("negative_frame_-2^31", size(0x80000000, 64)),
		closes("frame_below_header", size(7, 7)),
		closes("unknown_key_1000", unknownKeyFrame(f)),
		closes("unknown_key_known_to_kmsg", frame(kmsg.NewPtrUpdateFeaturesRequest(), 0)),
		closes("version_above_max", frame(kmsg.NewPtrMetadataRequest(), 99)),
		closes("fetch_below_floor", frame(kmsg.NewPtrFetchRequest(), 3)),
		{name: "truncated_frame_then_close", run: func(t *testing.T, conn *rawConn) {
			full := frame(kmsg.NewPtrMetadataRequest(), 12)
			conn.write(full[:len(full)/2])
			conn.nc.Close() // the broker sees EOF mid-frame; the release is checked at the end
		}},
		closes("array_count_2^31-1", body(0, 7, binary.BigEndian.AppendUint32(produceHeader(-1), math32Max))),
		closes("compact_array_count_2^31", body(3, 12, append(binary.AppendUvarint(nil, 1<<31), 0, 0, 0))),
		answers("array_count_-2^31_reads_as_empty", rawBody{produceV(7), binary.BigEndian.AppendUint32(produceHeader(-1), 0x80000000)},
			func(t *testing.T, resp kmsg.Response) {
				if r := resp.(*kmsg.ProduceResponse); len(r.Topics) != 0 {
					t.Fatalf("a negative topic count answered %d topics", len(r.Topics))
				}
			}),
		closes("tls_client_hello", clientHello),
		closes("http_get", []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")),
		{name: "http_client", run: func(t *testing.T, conn *rawConn) {
			conn.nc.Close()
			hc := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(hostileIP)}}).DialContext}}
			resp, err := hc.Get("http://" + conn.addr + "/")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("an HTTP request got an HTTP answer: %s", resp.Status)
			}
		}},
		{name: "tls_handshake", run: func(t *testing.T, conn *rawConn) {
			tc := tls.Client(conn.nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
			_ = conn.nc.SetDeadline(time.Now().Add(10 * time.Second))
			err := tc.Handshake()
			if err == nil || isTimeout(err) {
				t.Fatalf("TLS handshake on the Kafka port: %v, want the connection closed", err)
			}
		}},
		answers("unsupported_api_versions_version", apiVersionsV(99), func(t *testing.T, resp kmsg.Response) {
			r := resp.(*kmsg.ApiVersionsResponse)
			if r.ErrorCode != kerr.UnsupportedVersion.Code || !hasKey(r, 18) {
				t.Fatalf("ApiVersions v99: error %d with %d keys, want UNSUPPORTED_VERSION and the key list (KIP-511)", r.ErrorCode, len(r.ApiKeys))
			}
		}),
		answers("produce_v2", produceTo("hostile", 2, rawBatch(-1, -1, -1, "old")), wantProduceCode(kerr.UnsupportedVersion)),
		answers("bad_crc", produceTo("hostile", 9, corruptCRC(rawBatch(-1, -1, -1, "v"))), wantProduceCode(kerr.CorruptMessage)),
	}
	maxBatch := partition.DefaultConfig().MaxBatchBytes
	zeros := zeroRecord(bombZeros)
	for _, codec := range []struct {
		name string
		id   int16
	}{{"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"zstd", 4}} {
		batch := bombBatch(t, codec.id, zeros)
		if len(batch) >= maxBatch {
			t.Fatalf("%s bomb of %d bytes is over max.message.bytes: it would not reach the decompression cap", codec.name, len(batch))
		}
		cases = append(cases, answers("compression_bomb_"+codec.name, produceTo("hostile", 9, batch), wantProduceCode(kerr.MessageTooLarge)))
	}
	const million = 1_000_000
	limit := hostileMaxParts
	cases = append(cases,
		closesDecoded("produce_10^6_partitions", frame(produceParts("hostile", million), 9)),
		closes("produce_past_partition_limit", frame(produceParts("hostile", limit+1), 9)),
		// Fetch and Metadata at twice the limit: a Fetch of 10^6
		// partitions (16 MB) is refused the same way but holds about 90 MB
		// of kmsg structs while decoded (72 bytes per 16-byte entry),
		// which says more about this small test process than the limit.
		closes("fetch_2x_partition_limit", frame(fetchParts("hostile", 2*limit), 4)),
		closes("metadata_2x_partition_limit", frame(metadataTopics(2*limit), 4)),
		answers("produce_at_partition_limit", produceParts("hostile", limit), func(t *testing.T, resp kmsg.Response) {
			r := resp.(*kmsg.ProduceResponse)
			n := 0
			for _, rt := range r.Topics {
				for _, p := range rt.Partitions {
					want := kerr.UnknownTopicOrPartition.Code
					if p.Partition == 0 {
						want = kerr.InvalidRecord.Code // the one partition that exists; no records
					}
					if p.ErrorCode != want {
						t.Fatalf("partition %d: code %d, want %d", p.Partition, p.ErrorCode, want)
					}
					n++
				}
			}
			if n != limit {
				t.Fatalf("%d partitions answered, want %d", n, limit)
			}
		}),
	)
	return cases
}

const math32Max = 1<<31 - 1

// closesDecoded is closes for a frame the broker decodes whole before it
// can refuse it.
func closesDecoded(name string, b []byte) hostileCase {
	hc := closes(name, b)
	hc.decodes = len(b)
	return hc
}

// unknownKeyFrame is a well-formed header with api key 1000, which no
// Kafka version defines.
func unknownKeyFrame(f *kmsg.RequestFormatter) []byte {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(1)
	b := f.AppendRequest(nil, req, 1)
	binary.BigEndian.PutUint16(b[4:], 1000)
	return b
}

// rawBody is a request whose body is given as bytes: kmsg's formatter still
// writes the header (key, version, flexibility from the embedded request),
// so only the body is this test's to break.
type rawBody struct {
	kmsg.Request
	body []byte
}

func (r rawBody) AppendTo(dst []byte) []byte { return append(dst, r.body...) }

func produceV(v int16) *kmsg.ProduceRequest {
	r := kmsg.NewPtrProduceRequest()
	r.SetVersion(v)
	return r
}

func apiVersionsV(v int16) *kmsg.ApiVersionsRequest {
	r := kmsg.NewPtrApiVersionsRequest()
	r.ClientSoftwareName, r.ClientSoftwareVersion = "hostile", "1"
	r.SetVersion(v)
	return r
}

func hasKey(r *kmsg.ApiVersionsResponse, key int16) bool {
	for _, k := range r.ApiKeys {
		if k.ApiKey == key {
			return true
		}
	}
	return false
}

// produceTo is an acks=all produce of one batch to partition 0 of topic.
func produceTo(topic string, v int16, batch []byte) *kmsg.ProduceRequest {
	r := produceV(v)
	r.Acks, r.TimeoutMillis = -1, 10_000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	r.Topics = append(r.Topics, rt)
	return r
}

func wantProduceCode(want *kerr.Error) func(*testing.T, kmsg.Response) {
	return func(t *testing.T, resp kmsg.Response) {
		t.Helper()
		r := resp.(*kmsg.ProduceResponse)
		if len(r.Topics) != 1 || len(r.Topics[0].Partitions) != 1 {
			t.Fatalf("response %+v", r)
		}
		if got := r.Topics[0].Partitions[0].ErrorCode; got != want.Code {
			t.Fatalf("code %d (%v), want %d (%s)", got, kerr.ErrorForCode(got), want.Code, want.Message)
		}
	}
}

func corruptCRC(b []byte) []byte {
	b[len(b)-1] ^= 1
	return b
}

// produceParts is a produce of n partitions of topic, each without records.
func produceParts(topic string, n int) *kmsg.ProduceRequest {
	r := produceV(9)
	r.Acks, r.TimeoutMillis = -1, 10_000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rt.Partitions = make([]kmsg.ProduceRequestTopicPartition, n) // kmsg's defaults are the zero values
	for i := range rt.Partitions {
		rt.Partitions[i].Partition = int32(i)
	}
	r.Topics = append(r.Topics, rt)
	return r
}

func fetchParts(topic string, n int) *kmsg.FetchRequest {
	r := kmsg.NewPtrFetchRequest()
	r.MaxWaitMillis, r.MaxBytes = 100, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	ft.Partitions = make([]kmsg.FetchRequestTopicPartition, n)
	for i := range ft.Partitions {
		ft.Partitions[i] = kmsg.NewFetchRequestTopicPartition()
		ft.Partitions[i].Partition = int32(i)
		ft.Partitions[i].PartitionMaxBytes = 1 << 20
	}
	r.Topics = append(r.Topics, ft)
	return r
}

func metadataTopics(n int) *kmsg.MetadataRequest {
	r := kmsg.NewPtrMetadataRequest()
	r.Topics = make([]kmsg.MetadataRequestTopic, n)
	for i := range r.Topics {
		r.Topics[i] = kmsg.NewMetadataRequestTopic()
		r.Topics[i].Topic = kmsg.StringPtr("t")
	}
	return r
}

// zeroRecord is one encoded record whose value is n zero bytes.
func zeroRecord(n int) []byte {
	rec := kmsg.NewRecord()
	rec.Value = make([]byte, n)
	rec.Length = int32(len(rec.AppendTo(nil)) - 1) // the body after a 1-byte zero length
	return rec.AppendTo(nil)
}

// bombBatch is a one-record v2 batch of raw (one encoded record) compressed
// with codec at its fastest level: a few KB that decompress far past the
// cap.
func bombBatch(t *testing.T, codec int16, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch codec {
	case 1:
		gw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		if err != nil {
			t.Fatal(err)
		}
		w = gw
	case 2:
		buf.Write(snappy.Encode(nil, raw))
	case 3:
		w = lz4.NewWriter(&buf)
	case 4:
		zw, err := zstd.NewWriter(&buf, zstd.WithWindowSize(1<<20), zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	}
	if w != nil {
		if _, err := w.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b := kmsg.NewRecordBatch()
	b.Magic, b.Attributes = 2, codec
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = -1, -1, -1
	b.FirstTimestamp, b.MaxTimestamp = time.Now().UnixMilli(), time.Now().UnixMilli()
	b.NumRecords = 1
	b.Records = buf.Bytes()
	b.Length = int32(len(b.AppendTo(nil)) - 12)
	enc := b.AppendTo(nil)
	b.CRC = int32(crc32.Checksum(enc[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b.AppendTo(nil)
}

// tlsClientHello is the first flight of a real TLS client, captured from
// crypto/tls over a pipe.
func tlsClientHello(t *testing.T) []byte {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		_ = tls.Client(client, &tls.Config{ServerName: "varve", MinVersion: tls.VersionTLS12}).Handshake()
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(server, hdr[:]); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(server, rest); err != nil {
		t.Fatal(err)
	}
	client.Close()
	server.Close()
	if hdr[0] != 0x16 {
		t.Fatalf("not a TLS handshake record: % x", hdr)
	}
	return append(hdr[:], rest...)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rawConn speaks the Kafka framing over one TCP connection, encoding and
// decoding with kmsg.
type rawConn struct {
	t    testing.TB
	nc   net.Conn
	addr string
	f    *kmsg.RequestFormatter
	corr int32
}

// dialRaw connects to addr from the loopback address fromIP, so that one
// test can be many client hosts.
func dialRaw(t testing.TB, addr, fromIP string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, fromIP, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, addr: addr, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))}
}

func (c *rawConn) write(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// send writes req at version v (when v >= 0) and returns its correlation id.
func (c *rawConn) send(req kmsg.Request, v int16) int32 {
	c.t.Helper()
	if v >= 0 {
		req.SetVersion(v)
	}
	c.corr++
	c.write(c.f.AppendRequest(nil, req, c.corr))
	return c.corr
}

// recv reads one response to a request like req: response header v1 for
// flexible versions except ApiVersions, whose response header is always v0
// and whose body is v0 when the broker refused the version (KIP-511).
func (c *rawConn) recv(req kmsg.Request, corr int32) (kmsg.Response, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c.nc, size[:]); err != nil {
		return nil, fmt.Errorf("read response size: %w", err)
	}
	frame := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.nc, frame); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if got := int32(binary.BigEndian.Uint32(frame)); got != corr {
		return nil, fmt.Errorf("correlation id %d, want %d", got, corr)
	}
	b := frame[4:]
	resp := req.ResponseKind()
	v := req.GetVersion()
	if req.Key() == 18 && v > req.MaxVersion() {
		v = 0
	}
	resp.SetVersion(v)
	if req.IsFlexible() && req.Key() != 18 {
		b = b[1:]
	}
	if err := resp.ReadFrom(b); err != nil {
		return nil, fmt.Errorf("decode %s v%d response: %w", kmsg.NameForKey(req.Key()), v, err)
	}
	return resp, nil
}

func (c *rawConn) roundTrip(req kmsg.Request) kmsg.Response {
	c.t.Helper()
	corr := c.send(req, -1)
	resp, err := c.recv(req, corr)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

// apiVersions asserts that the connection still serves.
func (c *rawConn) apiVersions() {
	c.t.Helper()
	resp := c.roundTrip(apiVersionsV(3)).(*kmsg.ApiVersionsResponse)
	if resp.ErrorCode != 0 || !hasKey(resp, 0) {
		c.t.Fatalf("ApiVersions: error %d, %d keys", resp.ErrorCode, len(resp.ApiKeys))
	}
}

// tryApiVersions reports whether the connection answers ApiVersions.
func (c *rawConn) tryApiVersions() bool {
	req := apiVersionsV(3)
	c.corr++
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(c.f.AppendRequest(nil, req, c.corr)); err != nil {
		return false
	}
	resp, err := c.recv(req, c.corr)
	return err == nil && resp.(*kmsg.ApiVersionsResponse).ErrorCode == 0
}

// expectClosed asserts that the broker closes the connection without
// writing anything (a reset counts: closing with unread input sends RST).
func (c *rawConn) expectClosed(t testing.TB) {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var buf [64]byte
	n, err := c.nc.Read(buf[:])
	switch {
	case n > 0:
		t.Fatalf("expected the connection closed, read % x", buf[:n])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("expected the connection closed, got %v", err)
	}
}

// The healthy workload: batches of healthyBatch records of about
// healthyValueBytes each, produced synchronously, one at most every
// healthyEvery (about 1.5 MB/s: steady traffic that leaves the machine's
// two cores to the broker and the attack).
const (
	healthyBatch      = 32
	healthyValueBytes = 1 << 10
	healthyEvery      = 20 * time.Millisecond
)

// healthy is a franz-go producer writing batches of unique values and a
// consumer reading them concurrently, on connections of their own.
type healthy struct {
	topic    string
	cancel   context.CancelFunc // ends both loops
	stop     chan struct{}      // ends the producer after its batch in flight
	prodDone chan struct{}
	wg       sync.WaitGroup
	acks     atomic.Int64

	mu       sync.Mutex
	acked    map[string]string // partition/offset -> value, from produce responses
	consumed map[string]string // partition/offset -> value, from fetches
	errs     []error
}

func startHealthy(t *testing.T, c clientSource, topic string) *healthy {
	ctx, cancel := context.WithCancel(context.Background())
	w := &healthy{topic: topic, cancel: cancel, stop: make(chan struct{}), prodDone: make(chan struct{}),
		acked: map[string]string{}, consumed: map[string]string{}}
	t.Cleanup(func() { cancel(); w.wg.Wait() })
	prod := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	cons := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	pad := strings.Repeat(".", healthyValueBytes)
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		defer close(w.prodDone)
		tick := time.NewTicker(healthyEvery)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; i++ {
			select {
			case <-ctx.Done():
				return
			case <-w.stop:
				return
			case <-tick.C:
			}
			recs := make([]*kgo.Record, healthyBatch)
			for j := range recs {
				recs[j] = &kgo.Record{Value: fmt.Appendf(nil, "healthy-%d-%d%s", i, j, pad)}
			}
			rs := prod.ProduceSync(ctx, recs...)
			if err := rs.FirstErr(); err != nil {
				if ctx.Err() == nil {
					w.fail(fmt.Errorf("produce batch %d: %w", i, err))
				}
				return
			}
			w.mu.Lock()
			for _, r := range rs {
				id, _ := strings.CutSuffix(string(r.Record.Value), pad)
				w.acked[fmt.Sprintf("%d/%d", r.Record.Partition, r.Record.Offset)] = id
			}
			w.mu.Unlock()
			w.acks.Add(int64(len(rs)))
		}
	}()
	go func() {
		defer w.wg.Done()
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachError(func(tp string, p int32, err error) {
				if ctx.Err() == nil {
					w.fail(fmt.Errorf("fetch %s/%d: %w", tp, p, err))
				}
			})
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				k := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
				// Only the unique part of a value is kept (the maps
				// would otherwise grow the heap being measured); the
				// padding is checked here.
				id, ok := strings.CutSuffix(string(r.Value), pad)
				if !ok {
					w.errs = append(w.errs, fmt.Errorf("offset %s: value of %d bytes lost its padding", k, len(r.Value)))
				}
				if old, dup := w.consumed[k]; dup {
					w.errs = append(w.errs, fmt.Errorf("offset %s consumed twice: %q then %q", k, old, id))
				}
				w.consumed[k] = id
			})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *healthy) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// waitAcks waits until n records are acknowledged (or the workload failed).
func (w *healthy) waitAcks(t *testing.T, n int64) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%d healthy acks", n), func() bool {
		w.mu.Lock()
		failed := len(w.errs) > 0
		w.mu.Unlock()
		return failed || w.acks.Load() >= n
	})
}

// stopAndCheck stops producing, waits for the consumer to read every
// acknowledged record, and checks that each was read at its acknowledged
// partition and offset with its value, and nothing else was read.
func (w *healthy) stopAndCheck(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	w.errs = append([]error(nil), w.errs...)
	w.mu.Unlock()
	// Stop the producer between batches (cancelling a batch in flight
	// would leave its fate unknown), then wait for the consumer to read
	// everything acked, then stop it too.
	close(w.stop)
	<-w.prodDone
	acked := w.snapshotAcked()
	eventually(t, 60*time.Second, "the consumer reads every acked record", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for k := range acked {
			if _, ok := w.consumed[k]; !ok {
				return false
			}
		}
		return true
	})
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Fatalf("healthy workload failed: %v", errors.Join(w.errs...))
	}
	for k, v := range w.acked {
		if got, ok := w.consumed[k]; ok && got != v {
			t.Errorf("offset %s holds %q, acked as %q", k, got, v)
		}
	}
	// Every batch sent was acknowledged (a failure fails the test above),
	// so the log holds exactly what was acked: nothing more, nothing twice.
	for k, v := range w.consumed {
		if want, ok := w.acked[k]; !ok {
			t.Errorf("offset %s holds %q, which was never acknowledged there", k, v)
		} else if want != v {
			t.Errorf("offset %s consumed %q, acked %q", k, v, want)
		}
	}
	if len(acked) == 0 {
		t.Fatal("the healthy producer acknowledged nothing")
	}
	t.Logf("healthy workload: %d records acked and consumed, each at its acknowledged offset, nothing else", len(w.acked))
}

func (w *healthy) snapshotAcked() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]string, len(w.acked))
	for k, v := range w.acked {
		out[k] = v
	}
	return out
}

// memSampler records the peak heap in use and RSS of this process.
type memSampler struct {
	mu   sync.Mutex
	peak memPeak
	done chan struct{}
	wg   sync.WaitGroup
}

type memPeak struct{ heap, rss uint64 }

func newMemSampler() *memSampler {
	s := &memSampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&ms)
			rss := readRSS()
			s.mu.Lock()
			s.peak.heap = max(s.peak.heap, ms.HeapInuse)
			s.peak.rss = max(s.peak.rss, rss)
			s.mu.Unlock()
		}
	}()
	return s
}

// cut returns the peaks since the last cut and starts a new period.
func (s *memSampler) cut() memPeak {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peak
	s.peak = memPeak{}
	return p
}

func (s *memSampler) stop() {
	close(s.done)
	s.wg.Wait()
}

// readRSS is VmRSS from /proc/self/status, in bytes (0 if unreadable).
func readRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// warnLog is a slog handler that keeps the messages of warnings and
// errors, so a test can check that bad input was logged.
type warnLog struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (l *warnLog) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }
func (l *warnLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msgs == nil {
		l.msgs = map[string]int{}
	}
	l.msgs[r.Message]++
	return nil
}
func (l *warnLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *warnLog) WithGroup(string) slog.Handler      { return l }

func (l *warnLog) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[msg] > 0
}
