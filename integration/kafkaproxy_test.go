package integration

// A Kafka-protocol-aware proxy between clients and one broker's Kafka
// listener, for TESTPLAN row 7 (exactly-once produce). proxy.go's Proxy
// moves bytes and cannot tell a produce response from a fetch, so it can
// only cut everything; an idempotent producer is proven by faults aimed at
// one request: the request reaches the broker (which writes it) and only
// its answer is lost, so the client must retry a batch that is already in
// the log, at this broker or at the next leader.
//
// The proxy reads whole frames in both directions. Each request's header
// (api key, version, correlation id) goes into a FIFO, since a broker
// answers one connection's requests in order; produce requests are decoded
// with kmsg, down to each partition's record batch header (producer id,
// epoch, first sequence), and so are their responses. A produceLedger
// shared by every proxy follows each batch across attempts and brokers:
// who wrote it at which offset, whether that answer was lost, whether a
// retry was answered with the same offset (deduplicated) or written again.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceKey is the api key of Produce.
const produceKey = 0

// kfault is what a kafkaProxy does to one produce request.
type kfault int

const (
	kfaultNone kfault = iota
	// kfaultCutRequest: only part of the request reaches the broker,
	// then the connection is reset (RST to both sides). The broker never
	// sees a whole request.
	kfaultCutRequest
	// kfaultLoseResponse: the request reaches the broker, but its
	// response and every later one on that connection are swallowed,
	// as when the path back breaks: the client times out, closes the
	// connection and retries.
	kfaultLoseResponse
	// kfaultResetAfter: the request reaches the broker, and the
	// connection is reset in place of its response.
	kfaultResetAfter
)

func (f kfault) String() string {
	return [...]string{"none", "cut the request", "lose the response", "reset instead of the response"}[f]
}

// kafkaProxy forwards every connection it accepts to one broker's Kafka
// listener, frame by frame. Faults are armed for the next produce request
// (Arm), held for every produce response while Hold is on, or cut every
// connection at once (CutAll).
type kafkaProxy struct {
	broker int32 // the broker's id, for the ledger and logs
	target string
	ln     net.Listener
	ledger *produceLedger
	logf   func(format string, args ...any)

	mu     sync.Mutex
	rng    *rand.Rand // where a cut request is cut
	armed  []kfault
	hold   bool
	conns  map[*kafkaConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// newKafkaProxy listens on 127.0.0.1:0 in front of target (broker's Kafka
// address). logf reports each fault as it strikes.
func newKafkaProxy(broker int32, target string, seed uint64, ledger *produceLedger, logf func(string, ...any)) (*kafkaProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &kafkaProxy{broker: broker, target: target, ln: ln, ledger: ledger, logf: logf,
		rng: rand.New(rand.NewPCG(seed, uint64(broker))), conns: map[*kafkaConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is what clients dial instead of the broker.
func (p *kafkaProxy) Addr() string { return p.ln.Addr().String() }

// Arm queues a fault for the next produce request through the proxy.
func (p *kafkaProxy) Arm(f kfault) {
	p.mu.Lock()
	p.armed = append(p.armed, f)
	p.mu.Unlock()
}

// Armed is the number of faults still waiting for a produce request.
func (p *kafkaProxy) Armed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.armed)
}

// Hold makes every produce request from now on lose its response (on)
// until turned off; a connection already silent stays silent.
func (p *kafkaProxy) Hold(on bool) {
	p.mu.Lock()
	p.hold = on
	p.mu.Unlock()
}

// CutAll resets every connection through the proxy, whatever is in flight
// on it, and returns how many.
func (p *kafkaProxy) CutAll() int {
	p.mu.Lock()
	conns := make([]*kafkaConn, 0, len(p.conns))
	for kc := range p.conns {
		conns = append(conns, kc)
	}
	p.mu.Unlock()
	for _, kc := range conns {
		kc.reset()
	}
	return len(conns)
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *kafkaProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	conns := make([]*kafkaConn, 0, len(p.conns))
	for kc := range p.conns {
		conns = append(conns, kc)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, kc := range conns {
		kc.close()
	}
	p.wg.Wait()
}

// fault decides the fate of a produce request: an armed fault first, else
// a lost response while held.
func (p *kafkaProxy) fault() kfault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.armed) > 0 {
		f := p.armed[0]
		p.armed = p.armed[1:]
		return f
	}
	if p.hold {
		return kfaultLoseResponse
	}
	return kfaultNone
}

func (p *kafkaProxy) cutAt(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return 1 + p.rng.IntN(n-1)
}

func (p *kafkaProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		kc := &kafkaConn{p: p, client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[kc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go kc.run()
	}
}

// kafkaConn is one proxied connection.
type kafkaConn struct {
	p      *kafkaProxy
	client net.Conn

	mu      sync.Mutex
	server  net.Conn
	pending []*kafkaReq // requests sent, in order, awaiting their responses
	silent  bool        // every response from now on is swallowed
	done    bool
}

// kafkaReq is one request in flight on a connection.
type kafkaReq struct {
	corr         int32
	key, version int16
	batches      []produceBatch // produce only
	fault        kfault
}

// produceBatch is one partition's record batch in a produce request.
type produceBatch struct {
	id      batchID
	records int32
}

// batchID names an idempotent batch across attempts: a retry carries the
// same producer id, epoch and first sequence.
type batchID struct {
	topic     string // the name, or the topic id in hex (Produce v13 names topics by id)
	partition int32
	producer  int64
	epoch     int16
	seq       int32
}

func (b batchID) String() string {
	return fmt.Sprintf("%s-%d producer %d/%d seq %d", b.topic, b.partition, b.producer, b.epoch, b.seq)
}

func (kc *kafkaConn) run() {
	defer kc.p.wg.Done()
	defer func() {
		kc.p.mu.Lock()
		delete(kc.p.conns, kc)
		kc.p.mu.Unlock()
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	server, err := d.Dial("tcp", kc.p.target)
	if err != nil {
		kc.reset() // the broker is down: what the client would see directly
		return
	}
	kc.mu.Lock()
	kc.server = server
	done := kc.done
	kc.mu.Unlock()
	if done {
		_ = server.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(kc.requests)
	wg.Go(kc.responses)
	wg.Wait()
}

// readFrame reads one size-prefixed frame, the size included.
func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 0 || n > 256<<20 {
		return nil, fmt.Errorf("frame size %d", n)
	}
	frame := make([]byte, 4+int(n))
	copy(frame, size[:])
	if _, err := io.ReadFull(r, frame[4:]); err != nil {
		return nil, err
	}
	return frame, nil
}

// requests forwards client frames to the broker, deciding each produce
// request's fault.
func (kc *kafkaConn) requests() {
	defer kc.close()
	br := bufio.NewReaderSize(kc.client, 64<<10)
	for {
		frame, err := readFrame(br)
		if err != nil || len(frame) < 12 {
			return
		}
		req, acks := parseProxiedRequest(frame)
		if req.key == produceKey {
			req.fault = kc.p.fault()
		}
		if req.fault == kfaultCutRequest {
			n := kc.p.cutAt(len(frame))
			_, _ = kc.server.Write(frame[:n])
			kc.p.ledger.cut()
			kc.p.logf("broker %d's proxy: cut a produce request after %d of its %d bytes (%s)", kc.p.broker, n, len(frame), kc.p.ledger.describe(req.batches))
			kc.reset()
			return
		}
		if req.key != produceKey || acks != 0 { // acks=0 gets no response
			kc.mu.Lock()
			kc.pending = append(kc.pending, req)
			kc.mu.Unlock()
		}
		if req.key == produceKey {
			kc.p.ledger.sent(req)
		}
		if _, err := kc.server.Write(frame); err != nil {
			return
		}
	}
}

// responses forwards broker frames to the client, except those the
// request's fault swallows.
func (kc *kafkaConn) responses() {
	defer kc.close()
	br := bufio.NewReaderSize(kc.server, 64<<10)
	for {
		frame, err := readFrame(br)
		if err != nil || len(frame) < 8 {
			return
		}
		corr := int32(binary.BigEndian.Uint32(frame[4:8]))
		kc.mu.Lock()
		var req *kafkaReq
		if len(kc.pending) > 0 {
			req = kc.pending[0]
			kc.pending = kc.pending[1:]
		}
		silent := kc.silent
		if req != nil && req.fault == kfaultLoseResponse {
			kc.silent = true
		}
		kc.mu.Unlock()
		if req == nil || req.corr != corr {
			kc.p.logf("broker %d's proxy: a response with correlation id %d matches no request in flight; closing the connection", kc.p.broker, corr)
			return
		}
		lost := silent || req.fault == kfaultLoseResponse || req.fault == kfaultResetAfter
		if req.key == produceKey {
			outcome := kc.p.ledger.answered(kc.p.broker, req, frame, lost)
			if req.fault != kfaultNone && !silent {
				kc.p.logf("broker %d's proxy: %s of a produce request: %s", kc.p.broker, req.fault, outcome)
			}
		}
		switch {
		case silent || req.fault == kfaultLoseResponse:
			continue
		case req.fault == kfaultResetAfter:
			kc.reset()
			return
		}
		if _, err := kc.client.Write(frame); err != nil {
			return
		}
	}
}

// reset closes both sides with an RST instead of a FIN.
func (kc *kafkaConn) reset() {
	kc.mu.Lock()
	for _, c := range []net.Conn{kc.client, kc.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	kc.mu.Unlock()
	kc.close()
}

func (kc *kafkaConn) close() {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.done {
		return
	}
	kc.done = true
	_ = kc.client.Close()
	if kc.server != nil {
		_ = kc.server.Close()
	}
}

// parseProxiedRequest reads a request frame's header and, for Produce, its
// batches and acks. A frame it cannot decode is still forwarded (the
// broker answers or closes): only its correlation id matters then.
func parseProxiedRequest(frame []byte) (*kafkaReq, int16) {
	r := kbin.Reader{Src: frame[4:]}
	req := &kafkaReq{key: r.Int16(), version: r.Int16(), corr: r.Int32()}
	if req.key != produceKey {
		return req, -1
	}
	body := kmsg.NewPtrProduceRequest()
	body.SetVersion(req.version)
	r.NullableString() // client id
	if body.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	if r.Complete() != nil || body.ReadFrom(r.Src) != nil {
		return req, -1
	}
	for _, t := range body.Topics {
		for _, p := range t.Partitions {
			var rb kmsg.RecordBatch
			if rb.ReadFrom(p.Records) != nil {
				continue
			}
			req.batches = append(req.batches, produceBatch{
				id:      batchID{topic: topicKey(t.Topic, t.TopicID), partition: p.Partition, producer: rb.ProducerID, epoch: rb.ProducerEpoch, seq: rb.FirstSequence},
				records: rb.NumRecords,
			})
		}
	}
	return req, body.Acks
}

func topicKey(name string, id [16]byte) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("%x", id)
}

// produceLedger follows every idempotent batch that went through the
// proxies: each attempt that reached a broker whole, each answer (lost or
// delivered), and whether a retry of a batch already written was answered
// with its original offset or written again. Shared by every proxy.
type produceLedger struct {
	mu      sync.Mutex
	names   map[string]string // topic id in hex -> name, for logs
	batches map[batchID]*batchFate

	requests, cuts   int
	lost, lostWrites int            // responses lost; batches written whose answer was lost
	retriesOfWritten int            // attempts of a batch already written (its answer lost or not)
	dedup            int            // answers to such attempts: OK at the original offset
	dedupElsewhere   int            // ... from a broker other than the one that wrote it
	refused          map[string]int // answers to such attempts: an error, by name
	twice            []string       // a batch answered written at two offsets
}

// batchFate is what happened to one batch.
type batchFate struct {
	records   int32
	attempts  int
	writtenBy int32 // the broker that first answered it written, -1 until then
	offset    int64
	lostWrite bool // an answer saying it was written never reached the client
}

func newProduceLedger() *produceLedger {
	return &produceLedger{names: map[string]string{}, batches: map[batchID]*batchFate{}, refused: map[string]int{}}
}

// nameTopic lets logs say a topic's name where Produce v13 gives its id.
func (l *produceLedger) nameTopic(name string, id [16]byte) {
	l.mu.Lock()
	l.names[fmt.Sprintf("%x", id)] = name
	l.mu.Unlock()
}

// describe names batches for the fault log.
func (l *produceLedger) describe(bs []produceBatch) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, b := range bs {
		parts = append(parts, l.nameLocked(b.id, b.records))
	}
	if len(parts) == 0 {
		return "no batches"
	}
	return strings.Join(parts, ", ")
}

// nameLocked is "topic-partition producer id/epoch seq first+count".
func (l *produceLedger) nameLocked(id batchID, records int32) string {
	topic := id.topic
	if n, ok := l.names[topic]; ok {
		topic = n
	}
	return fmt.Sprintf("%s-%d producer %d/%d seq %d+%d", topic, id.partition, id.producer, id.epoch, id.seq, records)
}

func (l *produceLedger) fateLocked(id batchID, records int32) *batchFate {
	f := l.batches[id]
	if f == nil {
		f = &batchFate{records: records, writtenBy: -1, offset: -1}
		l.batches[id] = f
	}
	return f
}

func (l *produceLedger) cut() {
	l.mu.Lock()
	l.cuts++
	l.mu.Unlock()
}

// sent records a produce request forwarded whole to a broker.
func (l *produceLedger) sent(req *kafkaReq) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.requests++
	for _, b := range req.batches {
		f := l.fateLocked(b.id, b.records)
		f.attempts++
		if f.writtenBy >= 0 {
			l.retriesOfWritten++
		}
	}
}

// answered records a produce response from broker (lost: it never reaches
// the client) and describes it for the fault log.
func (l *produceLedger) answered(broker int32, req *kafkaReq, frame []byte, lost bool) string {
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(req.version)
	r := kbin.Reader{Src: frame[8:]}
	if resp.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	if r.Complete() != nil || resp.ReadFrom(r.Src) != nil {
		return "an undecodable response"
	}
	byTP := map[string]produceBatch{}
	for _, b := range req.batches {
		byTP[fmt.Sprintf("%s/%d", b.id.topic, b.id.partition)] = b
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lost {
		l.lost++
	}
	var parts []string
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			b, ok := byTP[fmt.Sprintf("%s/%d", topicKey(t.Topic, t.TopicID), p.Partition)]
			if !ok {
				continue
			}
			f := l.fateLocked(b.id, b.records)
			desc := l.nameLocked(b.id, b.records)
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				if f.writtenBy >= 0 {
					l.refused[errName(err)]++
				}
				parts = append(parts, fmt.Sprintf("%s refused: %s", desc, errName(err)))
				continue
			}
			switch {
			case f.writtenBy < 0:
				f.writtenBy, f.offset = broker, p.BaseOffset
				parts = append(parts, fmt.Sprintf("%s written at %d", desc, p.BaseOffset))
			case p.BaseOffset == f.offset:
				l.dedup++
				if broker != f.writtenBy {
					l.dedupElsewhere++
				}
				parts = append(parts, fmt.Sprintf("%s deduplicated: already at %d (written by broker %d)", desc, f.offset, f.writtenBy))
			default:
				l.twice = append(l.twice, fmt.Sprintf("%s: written at %d by broker %d, then answered written at %d by broker %d", desc, f.offset, f.writtenBy, p.BaseOffset, broker))
				parts = append(parts, fmt.Sprintf("%s WRITTEN AGAIN at %d (first at %d by broker %d)", desc, p.BaseOffset, f.offset, f.writtenBy))
			}
			if lost && !f.lostWrite {
				f.lostWrite = true
				l.lostWrites++
			}
		}
	}
	return strings.Join(parts, "; ")
}

func errName(err error) string {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return err.Error()
}

// lostWritesBy counts the batches broker wrote whose answer was lost.
func (l *produceLedger) lostWritesBy(broker int32) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, f := range l.batches {
		if f.lostWrite && f.writtenBy == broker {
			n++
		}
	}
	return n
}

// ledgerSummary is the ledger's totals.
type ledgerSummary struct {
	requests, cuts, lost, lostWrites   int
	batches, retried, retriesOfWritten int
	dedup, dedupElsewhere              int
	lostNeverRetried                   int // written, answer lost, never sent again
	refused                            map[string]int
	twice                              []string
}

func (l *produceLedger) summary() ledgerSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := ledgerSummary{requests: l.requests, cuts: l.cuts, lost: l.lost, lostWrites: l.lostWrites,
		batches: len(l.batches), retriesOfWritten: l.retriesOfWritten, dedup: l.dedup, dedupElsewhere: l.dedupElsewhere,
		refused: map[string]int{}, twice: slices.Clone(l.twice)}
	for k, v := range l.refused {
		s.refused[k] = v
	}
	for _, f := range l.batches {
		if f.attempts > 1 {
			s.retried++
		}
		if f.lostWrite && f.attempts < 2 {
			s.lostNeverRetried++
		}
	}
	return s
}

func (s ledgerSummary) String() string {
	refused := "none"
	if len(s.refused) > 0 {
		var parts []string
		for k, v := range s.refused {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		refused = strings.Join(parts, ", ")
	}
	return fmt.Sprintf("%d produce requests reached a broker (%d cut mid-request never did), %d batches, %d of them sent more than once; "+
		"%d responses lost, carrying %d written batches (%d of those never sent again); %d attempts of already written batches, "+
		"%d answered with the original offset (%d by another broker than the one that wrote it), refused: %s; %d written twice",
		s.requests, s.cuts, s.batches, s.retried, s.lost, s.lostWrites, s.lostNeverRetried, s.retriesOfWritten,
		s.dedup, s.dedupElsewhere, refused, len(s.twice))
}
