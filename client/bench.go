package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchMode is what a bench round measures.
type BenchMode string

const (
	// BenchProduce times producing: throughput, and latency from the
	// Produce call to its acknowledgement. The records are then read back
	// (untimed) to verify them.
	BenchProduce BenchMode = "produce"
	// BenchConsume produces the records first (untimed), then times
	// reading them back: throughput, and the latency of Fetch requests.
	BenchConsume BenchMode = "consume"
	// BenchE2E produces and consumes at once: throughput from the first
	// send to the last receipt, and latency from each record's send to its
	// receipt by a consumer.
	BenchE2E BenchMode = "e2e"
)

// BenchHeaderSize is the part of every bench record's value that
// identifies it: the run's nonce, the record's id and its send time, each
// a big-endian uint64. The rest of the value is random bytes.
const BenchHeaderSize = 24

// Bench is one workload. Records are spread over the topic's partitions
// by the default partitioner (no keys: a sticky partition per batch).
type Bench struct {
	Mode        BenchMode
	Topic       string // must exist
	Records     int    // in total, over all producers
	RecordSize  int    // value bytes, at least BenchHeaderSize
	Producers   int    // clients producing concurrently, each its share of Records
	Consumers   int    // clients consuming concurrently, each every Consumers-th partition
	Acks        string // all, 1 or 0 (see ProducerOpts)
	Compression string // none, gzip, snappy, lz4 or zstd
	// Rate caps the records sent per second over all producers; 0 sends
	// as fast as the producers' buffers allow, when latency is mostly
	// time queued in the client.
	Rate int
	// SkipVerify skips reading back what BenchProduce produced (the other
	// modes verify as they consume).
	SkipVerify bool
}

// Validate reports every problem with b.
func (b Bench) Validate() error {
	var errs []error
	switch b.Mode {
	case BenchProduce, BenchConsume, BenchE2E:
	default:
		errs = append(errs, fmt.Errorf("bench mode %q: want produce, consume or e2e", b.Mode))
	}
	if b.Topic == "" {
		errs = append(errs, errors.New("no topic given"))
	}
	if b.Records < 1 {
		errs = append(errs, fmt.Errorf("records %d: want at least 1", b.Records))
	}
	if b.RecordSize < BenchHeaderSize {
		errs = append(errs, fmt.Errorf("record size %d: want at least %d (the id header)", b.RecordSize, BenchHeaderSize))
	}
	if b.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %d: want 0 (no limit) or more", b.Rate))
	}
	if b.Producers < 1 || b.Consumers < 1 {
		errs = append(errs, fmt.Errorf("producers %d, consumers %d: want at least 1 each", b.Producers, b.Consumers))
	}
	if _, err := ProducerOpts(b.Acks, b.Compression); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BenchResult is one round's measurement.
type BenchResult struct {
	Records int64         // produced (produce) or received (consume, e2e) in the timed phase
	Bytes   int64         // their value bytes
	Elapsed time.Duration // the timed phase
	// Latency: produce: send to acknowledgement; consume: Fetch round
	// trips; e2e: send to receipt.
	Latency  Histogram
	Check    IDCheck
	Verified bool // Check covers the round (not with SkipVerify)
}

// MBPerSec is the value bytes per second, in 10^6 bytes.
func (r BenchResult) MBPerSec() float64 { return perSec(float64(r.Bytes)/1e6, r.Elapsed) }

// RecordsPerSec is the records per second.
func (r BenchResult) RecordsPerSec() float64 { return perSec(float64(r.Records), r.Elapsed) }

func perSec(v float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return v / d.Seconds()
}

// EnsureTopic creates topic with the given partitions and replication
// factor (-1: the broker's defaults) unless it exists, then waits until
// every partition has a leader. It returns the topic as it is and whether
// it created it. kadm answers Metadata from its client's cache for
// kgo.MetadataMinAge (5 s by default), so a topic seen missing stays
// missing that long: give adm's client a short MetadataMinAge (New's
// callers: kgo.MetadataMinAge(50*time.Millisecond)) to return promptly.
func EnsureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, rf int16) (kadm.TopicDetail, bool, error) {
	created := false
	td, err := Topic(ctx, adm, topic)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		err = Retry(ctx, func() error {
			resp, err := adm.CreateTopic(ctx, partitions, rf, nil, topic)
			if err != nil && resp.ErrMessage != "" {
				err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
			}
			return err
		})
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return kadm.TopicDetail{}, false, fmt.Errorf("create topic %q: %w", topic, err)
		}
		created = err == nil
	} else if err != nil {
		return kadm.TopicDetail{}, false, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		td, err = Topic(ctx, adm, topic)
		if err == nil && len(td.Partitions) > 0 && allLed(td) {
			return td, created, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = errors.New("not every partition has a leader after 30s")
			}
			return td, created, fmt.Errorf("topic %q: %w", topic, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allLed(td kadm.TopicDetail) bool {
	for _, p := range td.Partitions {
		if p.Leader < 0 || p.Err != nil {
			return false
		}
	}
	return true
}

// RunBench runs one round of b against the cluster cfg reaches. The topic
// must exist with every partition led (EnsureTopic). Failing to produce
// or to read back is an error; what was read back is judged in the
// result's Check, which the caller must look at.
func RunBench(ctx context.Context, cfg Config, b Bench) (BenchResult, error) {
	if err := b.Validate(); err != nil {
		return BenchResult{}, err
	}
	cl, adm, err := New(ctx, cfg)
	if err != nil {
		return BenchResult{}, err
	}
	defer cl.Close()
	td, err := Topic(ctx, adm, b.Topic)
	if err != nil {
		return BenchResult{}, err
	}
	r := &benchRun{cfg: cfg, b: b, adm: adm, nonce: rand.Uint64(), base: time.Now(), partitions: td.Partitions.Numbers()}
	if len(r.partitions) == 0 {
		return BenchResult{}, fmt.Errorf("topic %q has no partitions", b.Topic)
	}
	r.fillPool()
	switch b.Mode {
	case BenchProduce:
		return r.runProduce(ctx)
	case BenchConsume:
		return r.runConsume(ctx)
	default:
		return r.runE2E(ctx)
	}
}

// benchRun is one round in progress.
type benchRun struct {
	cfg        Config
	b          Bench
	adm        *kadm.Client
	nonce      uint64    // tells this round's records from any other's
	base       time.Time // send times are monotonic offsets from it
	partitions []int32
	pool       []byte        // random bytes the values are cut from
	sendStart  time.Duration // from base: when the producers began (set by produce)
}

// fillPool makes the random bytes values are cut from: distinct values
// for the first 8 MiB of records, so compression has nothing to exploit
// within a batch.
func (r *benchRun) fillPool() {
	n := min(r.b.Records*r.b.RecordSize, 8<<20) + r.b.RecordSize
	r.pool = make([]byte, n+8)
	rng := rand.New(rand.NewPCG(r.nonce, uint64(r.base.UnixNano())))
	for i := 0; i+8 <= len(r.pool); i += 8 {
		binary.LittleEndian.PutUint64(r.pool[i:], rng.Uint64())
	}
}

// value is record id's value, stamped with the time now.
func (r *benchRun) value(id uint64) []byte {
	size := r.b.RecordSize
	span := len(r.pool) - 8 - size
	off := 0
	if span > 0 {
		off = int((id * uint64(size)) % uint64(span))
	}
	v := make([]byte, size)
	copy(v, r.pool[off:off+size])
	binary.BigEndian.PutUint64(v[0:], r.nonce)
	binary.BigEndian.PutUint64(v[8:], id)
	binary.BigEndian.PutUint64(v[16:], uint64(time.Since(r.base)))
	return v
}

// parse reads a value's header: ok is false for another round's record.
func (r *benchRun) parse(v []byte) (id uint64, sent time.Duration, ok bool) {
	if len(v) < BenchHeaderSize || binary.BigEndian.Uint64(v[0:]) != r.nonce {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(v[8:]), time.Duration(binary.BigEndian.Uint64(v[16:])), true
}

func (r *benchRun) endOffsets(ctx context.Context) (map[int32]int64, error) {
	var ends kadm.ListedOffsets
	err := Retry(ctx, func() (err error) {
		ends, err = r.adm.ListEndOffsets(ctx, r.b.Topic)
		if err == nil {
			err = ends.Error()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %q: %w", r.b.Topic, err)
	}
	out := map[int32]int64{}
	for _, p := range r.partitions {
		o, ok := ends.Lookup(r.b.Topic, p)
		if !ok {
			return nil, fmt.Errorf("list end offsets of %q: no answer for partition %d", r.b.Topic, p)
		}
		out[p] = o.Offset
	}
	return out, nil
}

func (r *benchRun) runProduce(ctx context.Context) (BenchResult, error) {
	starts, err := r.endOffsets(ctx)
	if err != nil {
		return BenchResult{}, err
	}
	res, err := r.produce(ctx)
	if err != nil || r.b.SkipVerify {
		return res, err
	}
	ends, err := r.endOffsets(ctx)
	if err != nil {
		return res, err
	}
	read := newBenchReadback(r.b.Records, false)
	read.setEnds(ends)
	if err := r.consume(ctx, starts, read); err != nil {
		return res, fmt.Errorf("read back: %w", err)
	}
	res.Check, res.Verified = read.ids.Check(), true
	return res, nil
}

func (r *benchRun) runConsume(ctx context.Context) (BenchResult, error) {
	starts, err := r.endOffsets(ctx)
	if err != nil {
		return BenchResult{}, err
	}
	if _, err := r.produce(ctx); err != nil {
		return BenchResult{}, fmt.Errorf("fill the topic: %w", err)
	}
	ends, err := r.endOffsets(ctx)
	if err != nil {
		return BenchResult{}, err
	}
	read := newBenchReadback(r.b.Records, false)
	read.setEnds(ends)
	if err := r.consume(ctx, starts, read); err != nil {
		return BenchResult{}, err
	}
	return read.result(read.started), nil
}

func (r *benchRun) runE2E(ctx context.Context) (BenchResult, error) {
	starts, err := r.endOffsets(ctx)
	if err != nil {
		return BenchResult{}, err
	}
	read := newBenchReadback(r.b.Records, true)
	// Either side failing stops the other.
	cctx, cancelConsume := context.WithCancel(ctx)
	defer cancelConsume()
	pctx, cancelProduce := context.WithCancel(ctx)
	defer cancelProduce()
	consumed := make(chan error, 1)
	go func() {
		err := r.consume(cctx, starts, read)
		if err != nil {
			cancelProduce()
		}
		consumed <- err
	}()
	_, perr := r.produce(pctx)
	if perr == nil {
		var ends map[int32]int64
		if ends, perr = r.endOffsets(pctx); perr == nil {
			read.setEnds(ends)
		}
	}
	if perr != nil {
		cancelConsume()
	}
	if cerr := <-consumed; cerr != nil && (perr == nil || !errors.Is(cerr, context.Canceled)) {
		return BenchResult{}, cerr
	}
	if perr != nil {
		return BenchResult{}, perr
	}
	return read.result(r.sendStart), nil
}

// produce sends Records over Producers clients and waits for every
// acknowledgement; it fails if any record failed.
func (r *benchRun) produce(ctx context.Context) (BenchResult, error) {
	opts, err := ProducerOpts(r.b.Acks, r.b.Compression)
	if err != nil {
		return BenchResult{}, err
	}
	type worker struct {
		cl       *kgo.Client
		mu       sync.Mutex
		lat      Histogram
		acked    int64
		bytes    int64
		failed   int64
		firstErr error
		done     time.Duration
	}
	workers := make([]*worker, r.b.Producers)
	defer func() {
		for _, w := range workers {
			if w != nil && w.cl != nil {
				w.cl.Close()
			}
		}
	}()
	for i := range workers {
		cl, _, err := New(ctx, r.cfg, opts...)
		if err != nil {
			return BenchResult{}, err
		}
		workers[i] = &worker{cl: cl}
	}
	start := time.Since(r.base)
	r.sendStart = start
	var wg sync.WaitGroup
	per, extra := r.b.Records/len(workers), r.b.Records%len(workers)
	lo := 0
	for i, w := range workers {
		n := per
		if i < extra {
			n++
		}
		first, last := uint64(lo), uint64(lo+n)
		lo += n
		pace := r.pacer(len(workers))
		wg.Go(func() {
			for id := first; id < last && ctx.Err() == nil; id++ {
				pace(ctx, id-first)
				v := r.value(id)
				sent := time.Duration(binary.BigEndian.Uint64(v[16:]))
				w.cl.Produce(ctx, &kgo.Record{Topic: r.b.Topic, Value: v}, func(rec *kgo.Record, err error) {
					lat := time.Since(r.base) - sent
					w.mu.Lock()
					defer w.mu.Unlock()
					if err != nil {
						w.failed++
						if w.firstErr == nil {
							w.firstErr = err
						}
						return
					}
					w.acked++
					w.bytes += int64(len(rec.Value))
					w.lat.Record(lat)
				})
			}
			_ = w.cl.Flush(ctx) // every promise has run when it returns, or ctx ended
			w.done = time.Since(r.base)
		})
	}
	wg.Wait()
	var res BenchResult
	var failed int64
	var firstErr error
	end := start
	for _, w := range workers {
		w.mu.Lock()
		res.Records += w.acked
		res.Bytes += w.bytes
		res.Latency.Merge(&w.lat)
		failed += w.failed
		if firstErr == nil {
			firstErr = w.firstErr
		}
		w.mu.Unlock()
		end = max(end, w.done)
	}
	res.Elapsed = end - start
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("produce: %d of %d records acknowledged: %w", res.Records, r.b.Records, ctx.Err())
	case failed > 0:
		return res, fmt.Errorf("produce: %d of %d records failed, first: %w", failed, r.b.Records, firstErr)
	}
	return res, nil
}

// pacer returns the wait before a producer's k-th record that keeps it
// at its share of Rate: record k is due k/share seconds after the first.
func (r *benchRun) pacer(producers int) func(ctx context.Context, k uint64) {
	if r.b.Rate <= 0 {
		return func(context.Context, uint64) {}
	}
	share := float64(r.b.Rate) / float64(producers)
	var start time.Time
	return func(ctx context.Context, k uint64) {
		if k == 0 {
			start = time.Now()
			return
		}
		due := start.Add(time.Duration(float64(k) / share * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
}

// benchReadback is what the consumers of a round share: the ids read,
// the end offsets to stop at (known at the start, or, in e2e, once the
// producers are done) and the measurements.
type benchReadback struct {
	mu      sync.Mutex
	ids     *IDCounts
	e2e     bool // latency: send to receipt, else Fetch round trips
	ends    map[int32]int64
	endsSet chan struct{} // closed by setEnds
	lat     Histogram
	records int64
	bytes   int64
	started time.Duration // from base: when the consumers were ready (set by consume)
	last    time.Duration // the last receipt, from base
}

func newBenchReadback(records int, e2e bool) *benchReadback {
	return &benchReadback{ids: NewIDCounts(records), e2e: e2e, endsSet: make(chan struct{})}
}

func (rb *benchReadback) setEnds(ends map[int32]int64) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.ends = ends
	close(rb.endsSet)
}

// reached says whether every partition in pos is at its end offset.
func (rb *benchReadback) reached(pos map[int32]int64) bool {
	select {
	case <-rb.endsSet:
	default:
		return false
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for p, at := range pos {
		if at < rb.ends[p] {
			return false
		}
	}
	return true
}

func (rb *benchReadback) result(start time.Duration) BenchResult {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	res := BenchResult{Records: rb.records, Bytes: rb.bytes, Check: rb.ids.Check(), Verified: true}
	res.Latency.Merge(&rb.lat)
	if rb.last > start {
		res.Elapsed = rb.last - start
	}
	return res
}

// OnBrokerE2E implements kgo.HookBrokerE2E: it records the round trip of
// every successful Fetch (key 1) when not measuring end to end.
func (rb *benchReadback) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if rb.e2e || key != 1 || e2e.Err() != nil {
		return
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.lat.Record(e2e.DurationE2E())
}

var _ kgo.HookBrokerE2E = (*benchReadback)(nil)

// consume reads every partition from starts until rb's end offsets over
// Consumers clients (client i reads every Consumers-th partition from the
// i-th), counting the ids into rb.
func (r *benchRun) consume(ctx context.Context, starts map[int32]int64, rb *benchReadback) error {
	assigned := make([]map[int32]kgo.Offset, min(r.b.Consumers, len(r.partitions)))
	for i, p := range r.partitions {
		w := i % len(assigned)
		if assigned[w] == nil {
			assigned[w] = map[int32]kgo.Offset{}
		}
		assigned[w][p] = kgo.NewOffset().At(starts[p])
	}
	clients := make([]*kgo.Client, len(assigned))
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	for i, offsets := range assigned {
		cl, _, err := New(ctx, r.cfg, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.b.Topic: offsets}), kgo.WithHooks(rb))
		if err != nil {
			return err
		}
		clients[i] = cl
	}
	rb.mu.Lock()
	rb.started = time.Since(r.base)
	rb.mu.Unlock()
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, cl := range clients {
		pos := map[int32]int64{}
		for p := range assigned[i] {
			pos[p] = starts[p]
		}
		wg.Go(func() { errs[i] = r.consumeOne(ctx, cl, pos, rb) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *benchRun) consumeOne(ctx context.Context, cl *kgo.Client, pos map[int32]int64, rb *benchReadback) error {
	for !rb.reached(pos) {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		cancel()
		now := time.Since(r.base)
		if ctx.Err() != nil {
			return fmt.Errorf("consume: %w", ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			var ne net.Error
			if errors.As(fe.Err, &ne) || kerr.IsRetriable(fe.Err) {
				continue // kgo retries these itself
			}
			return fmt.Errorf("fetch %s/%d: %w", fe.Topic, fe.Partition, fe.Err)
		}
		if fetches.NumRecords() == 0 {
			continue
		}
		rb.mu.Lock()
		fetches.EachRecord(func(rec *kgo.Record) {
			pos[rec.Partition] = max(pos[rec.Partition], rec.Offset+1)
			id, sent, ok := r.parse(rec.Value)
			if !ok {
				rb.ids.AddForeign()
				return
			}
			rb.ids.Add(id)
			rb.records++
			rb.bytes += int64(len(rec.Value))
			if rb.e2e {
				rb.lat.Record(now - sent)
			}
		})
		rb.last = max(rb.last, now)
		rb.mu.Unlock()
	}
	return nil
}
