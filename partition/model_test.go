package partition

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// The model the power-loss and fault tests check a log against, and the
// crash hooks they cut the power with.

// errPowerLoss is what a crash hook answers once the power is off.
var errPowerLoss = errors.New("test: power lost")

// wantEpoch is one entry of the leader-epoch table a test expects.
type wantEpoch struct {
	epoch int32
	start int64
}

// assignWant is Kafka's rule for recording that epoch starts at start: epochs
// only grow, and entries that would cover no offsets are dropped.
func assignWant(t []wantEpoch, epoch int32, start int64) []wantEpoch {
	if epoch < 0 || (len(t) > 0 && epoch <= t[len(t)-1].epoch) {
		return t
	}
	for len(t) > 0 && t[len(t)-1].start >= start {
		t = t[:len(t)-1]
	}
	return append(t, wantEpoch{epoch, start})
}

// truncateWantEnd drops the entries starting at or after end, as a
// truncation of the log to end does.
func truncateWantEnd(t []wantEpoch, end int64) []wantEpoch {
	for len(t) > 0 && t[len(t)-1].start >= end {
		t = t[:len(t)-1]
	}
	return t
}

// checkEpochs asks OffsetForLeaderEpoch for every epoch from -1 to two past
// the newest and compares with Kafka's answers for the table want.
func checkEpochs(t testing.TB, l *Log, want []wantEpoch, end int64) {
	t.Helper()
	latest := int32(-1)
	if len(want) > 0 {
		latest = want[len(want)-1].epoch
	}
	if got := l.LatestEpoch(); got != latest {
		t.Fatalf("latest epoch %d, want %d (table %v)", got, latest, want)
	}
	for e := int32(-1); e <= latest+2; e++ {
		we, wend := int32(-1), int64(-1)
		if e >= 0 && len(want) > 0 {
			hi := 0
			for hi < len(want) && want[hi].epoch <= e {
				hi++
			}
			switch {
			case e == latest:
				we, wend = e, end
			case hi == len(want):
			case hi == 0:
				we, wend = e, want[0].start
			default:
				we, wend = want[hi-1].epoch, want[hi].start
			}
		}
		if ge, gend := l.OffsetForLeaderEpoch(e); ge != we || gend != wend {
			t.Fatalf("OffsetForLeaderEpoch(%d) = (%d, %d), want (%d, %d) for table %v, log end %d", e, ge, gend, we, wend, want, end)
		}
	}
}

// plBatch is one batch the test appended: its bytes as Append stamped them,
// and what the model needs to predict the log's state.
type plBatch struct {
	data              []byte
	base, last        int64
	epoch             int32
	pid               int64 // -1: not idempotent
	pepoch            int16
	firstSeq, lastSeq int32
	baseTs, maxTs     int64 // record i has timestamp baseTs+i
}

// plCheckpoint is a checkpoint the model knows to be durable.
type plCheckpoint struct {
	count    int // batches below the recovery point
	end      int64
	position uint64
	epochs   []wantEpoch
}

type plProducer struct {
	epoch   int16
	nextSeq int32
}

// plModel is what the test knows the log must hold. batches are the appended
// batches in offset order from offset 0; batches[:synced] were acknowledged
// durable by Sync or Checkpoint. Every record timestamp is larger than every
// earlier one, so timestamp lookups have one right answer.
type plModel struct {
	t       testing.TB
	rng     *rand.Rand
	batches []plBatch
	synced  int
	epochs  []wantEpoch // the live log's leader-epoch table
	cp      *plCheckpoint
	leader  int32 // leader epoch of the next append
	pos     uint64
	prods   map[int64]*plProducer
	ts      int64
	serial  int
	start   int64 // the log start offset (a batch boundary)
	// crash is set in tests that crash inside an operation; the model then
	// tolerates errPowerLoss and remembers what was in flight.
	crash *crashPoint
	// lowest is the fewest batches a crash may leave (normally synced; less
	// when a TruncateTo was in flight), and maybeCP is a checkpoint that
	// was in flight: either it or cp is the durable one.
	lowest  int
	maybeCP *plCheckpoint
}

func newModel(t testing.TB, rng *rand.Rand) *plModel {
	return &plModel{t: t, rng: rng, prods: map[int64]*plProducer{}, ts: 1_000_000, lowest: -1}
}

func (m *plModel) end() int64 { return m.endOf(len(m.batches)) }

// endOf is the log end when the log holds batches[:k].
func (m *plModel) endOf(k int) int64 {
	if k == 0 {
		return 0
	}
	return m.batches[k-1].last + 1
}

// boundary returns k such that batches[:k] ends at end, failing the test
// when end is not a batch boundary of what was appended.
func (m *plModel) boundary(end int64) int {
	for k := 0; k <= len(m.batches); k++ {
		if m.endOf(k) == end {
			return k
		}
	}
	m.t.Fatalf("log end %d is not a batch boundary of the %d batches appended (model end %d)", end, len(m.batches), m.end())
	return 0
}

// nextBatch builds the next batch: 1-4 records of 40-1300 value bytes, some
// idempotent from one of three producers (whose epoch is bumped now and then).
func (m *plModel) nextBatch() ([]byte, plBatch) {
	n := 1 + m.rng.IntN(4)
	size := 40 + m.rng.IntN(1260)
	spec := batchSpec{baseTimestamp: m.ts}
	for j := range n {
		v := fmt.Appendf(nil, "b%d-r%d-", m.serial, j)
		for len(v) < size/n {
			v = append(v, byte('a'+(len(v)+m.serial)%26))
		}
		spec.records = append(spec.records, testRecord{key: fmt.Appendf(nil, "k%d", m.serial), value: v, tsDelta: int64(j)})
	}
	m.serial++
	pb := plBatch{pid: -1, baseTs: m.ts, maxTs: m.ts + int64(n-1)}
	m.ts += int64(n) + 1
	if m.rng.IntN(10) < 4 {
		pid := int64(101 + m.rng.IntN(3))
		p := plProducer{}
		if cur := m.prods[pid]; cur != nil {
			p = *cur
		}
		if m.rng.IntN(40) == 0 {
			p = plProducer{epoch: p.epoch + 1}
		}
		spec.idempotent, spec.producerID, spec.producerEpoch, spec.baseSequence = true, pid, p.epoch, p.nextSeq
		pb.pid, pb.pepoch, pb.firstSeq, pb.lastSeq = pid, p.epoch, p.nextSeq, p.nextSeq+int32(n-1)
	}
	return makeBatch(spec), pb
}

// crashed reports whether err is the power going out under the call.
func (m *plModel) crashed(err error) bool {
	return m.crash != nil && m.crash.dead() && err != nil
}

// append appends the next batch and checks where it went; false when the
// power went out under it.
func (m *plModel) append(l *Log) bool {
	b, pb := m.nextBatch()
	end := m.end()
	n := pb.maxTs - pb.baseTs + 1
	orig := bytes.Clone(b)
	r, err := l.Append(b, m.leader)
	if !bytes.Equal(b, orig) {
		m.t.Fatalf("append at %d modified the caller's batch", end)
	}
	// What the log wrote: its copy, stamped.
	stampBatch(b, end, m.leader)
	if m.crashed(err) {
		// It may have reached the file: keep it as a candidate.
		pb.data, pb.base, pb.last, pb.epoch = b, end, end+n-1, m.leader
		m.batches = append(m.batches, pb)
		return false
	}
	if err != nil {
		m.t.Fatalf("append at %d: %v", end, err)
	}
	if want := (AppendResult{BaseOffset: end, LastOffset: end + n - 1, LogStartOffset: m.start}); r != want {
		m.t.Fatalf("append: got %+v, want %+v", r, want)
	}
	pb.data, pb.base, pb.last, pb.epoch = b, end, end+n-1, m.leader
	m.batches = append(m.batches, pb)
	m.epochs = assignWant(m.epochs, m.leader, end)
	if pb.pid >= 0 {
		m.prods[pb.pid] = &plProducer{epoch: pb.pepoch, nextSeq: pb.lastSeq + 1}
	}
	return true
}

func (m *plModel) sync(l *Log) bool {
	err := l.Sync()
	if m.crashed(err) {
		return false
	}
	if err != nil {
		m.t.Fatalf("sync: %v", err)
	}
	m.synced = len(m.batches)
	return true
}

func (m *plModel) checkpoint(l *Log) bool {
	m.pos += 1 + uint64(m.rng.IntN(5))
	cp := &plCheckpoint{count: len(m.batches), end: m.end(), position: m.pos, epochs: slices.Clone(m.epochs)}
	err := l.Checkpoint(m.pos)
	if m.crashed(err) {
		m.maybeCP = cp
		return false
	}
	if err != nil {
		m.t.Fatalf("checkpoint: %v", err)
	}
	m.synced, m.cp = len(m.batches), cp
	if pos, rp := l.Checkpointed(); pos != cp.position || rp != cp.end {
		m.t.Fatalf("checkpointed (%d, %d), want (%d, %d)", pos, rp, cp.position, cp.end)
	}
	return true
}

func (m *plModel) startEpoch(l *Log) {
	m.leader++
	if err := l.StartEpoch(m.leader); err != nil {
		m.t.Fatalf("start epoch %d: %v", m.leader, err)
	}
	m.epochs = assignWant(m.epochs, m.leader, m.end())
}

func (m *plModel) roll(l *Log) bool {
	err := l.Roll()
	if m.crashed(err) {
		return false
	}
	if err != nil {
		m.t.Fatalf("roll: %v", err)
	}
	return true
}

// truncate cuts one of the last few batches off with TruncateTo.
func (m *plModel) truncate(l *Log) bool {
	if len(m.batches) == 0 {
		return true
	}
	return m.truncateAt(l, len(m.batches)-1-m.rng.IntN(min(len(m.batches), 6)))
}

// truncateAt truncates the log to batches[:k] and checks the producer state
// that results.
func (m *plModel) truncateAt(l *Log, k int) bool {
	off := m.batches[k].base
	err := l.TruncateTo(off)
	if m.crashed(err) {
		// Either the old log or the truncated one may survive; batches
		// below off that were not synced may be lost either way. Below
		// the checkpoint, a checkpoint at off may have been written.
		m.lowest = min(m.synced, k)
		if m.cp != nil && off < m.cp.end {
			m.maybeCP = &plCheckpoint{count: k, end: off, position: m.cp.position, epochs: truncateWantEnd(slices.Clone(m.epochs), off)}
		}
		return false
	}
	if err != nil {
		m.t.Fatalf("truncate to %d: %v", off, err)
	}
	if got := l.LogEndOffset(); got != off {
		m.t.Fatalf("log end %d after truncating to %d", got, off)
	}
	m.batches, m.synced = m.batches[:k], min(m.synced, k)
	m.epochs = truncateWantEnd(m.epochs, off)
	if m.cp != nil && off < m.cp.end {
		// TruncateTo rewrote the checkpoint at off with the same position.
		m.cp = &plCheckpoint{count: k, end: off, position: m.cp.position, epochs: slices.Clone(m.epochs)}
		m.synced = k
		if pos, rp := l.Checkpointed(); pos != m.cp.position || rp != off {
			m.t.Fatalf("checkpointed (%d, %d) after truncating below it, want (%d, %d)", pos, rp, m.cp.position, off)
		}
	}
	m.checkProducers(l)
	return true
}

// step runs one random operation.
func (m *plModel) step(l *Log) {
	switch r := m.rng.IntN(100); {
	case r < 72:
		m.append(l)
	case r < 80:
		m.sync(l)
	case r < 85:
		m.checkpoint(l)
	case r < 88:
		m.leader++ // the next append opens a new epoch
	case r < 91:
		m.startEpoch(l)
	case r < 94:
		m.roll(l)
	case r < 97:
		m.truncate(l)
	default:
		m.verify(l)
	}
}

// recovered checks a log just reopened after a crash against the model and
// then makes the model describe it: the log must hold exactly a prefix of
// the appended batches, at least every synced one (or, with
// TruncateUncheckpointed, exactly those below the last checkpoint), and the
// state the checkpoint plus the surviving batches imply.
func (m *plModel) recovered(l *Log, truncate bool) {
	m.t.Helper()
	end := l.LogEndOffset()
	k := m.boundary(end)
	lowest := m.synced
	if m.lowest >= 0 {
		lowest = m.lowest
	}
	cps := []*plCheckpoint{m.cp}
	if m.maybeCP != nil {
		cps = append(cps, m.maybeCP)
	}
	pos, rp := l.Checkpointed()
	var cp *plCheckpoint
	matched := false
	for _, c := range cps {
		if c == nil && pos == 0 && rp == 0 || c != nil && c.position == pos && c.end == rp {
			cp, matched = c, true
			break
		}
	}
	if !matched {
		m.t.Fatalf("checkpointed (%d, %d), want one of %s", pos, rp, describeCPs(cps))
	}
	if cp != nil && k < cp.count {
		m.t.Fatalf("log ends at %d, below the recovery point %d of its checkpoint", end, cp.end)
	}
	switch {
	case truncate && cp == nil && k != 0:
		m.t.Fatalf("TruncateUncheckpointed without a checkpoint kept %d batches", k)
	case truncate && cp != nil && k != cp.count:
		m.t.Fatalf("TruncateUncheckpointed: log ends at %d, want the checkpoint's recovery point %d", end, cp.end)
	case !truncate && k < lowest:
		m.t.Fatalf("log ends at %d after the crash: %d batches survive, but %d (to offset %d) were synced", end, k, lowest, m.endOf(lowest))
	}
	var tbl []wantEpoch
	from := 0
	if cp != nil {
		tbl, from = slices.Clone(cp.epochs), cp.count
	}
	for _, b := range m.batches[from:k] {
		tbl = assignWant(tbl, b.epoch, b.base)
	}
	m.batches, m.synced, m.epochs, m.cp = m.batches[:k], k, tbl, cp
	m.lowest, m.maybeCP = -1, nil
	m.verify(l)
}

func describeCPs(cps []*plCheckpoint) string {
	var s []string
	for _, c := range cps {
		if c == nil {
			s = append(s, "none (0, 0)")
		} else {
			s = append(s, fmt.Sprintf("(%d, %d)", c.position, c.end))
		}
	}
	return fmt.Sprint(s)
}

// truncateWantStart is what a log start move does to the epoch table: the
// entry covering start is kept, starting there.
func truncateWantStart(t []wantEpoch, start int64) []wantEpoch {
	i := 0
	for i+1 < len(t) && t[i+1].start <= start {
		i++
	}
	t = slices.Clone(t[i:])
	if len(t) > 0 && t[0].start < start {
		t[0].start = start
	}
	return t
}

// verify checks everything the log answers against the model: bounds, the
// bytes at every offset, reads of several batches, leader epochs,
// timestamps and producer state.
// appendVerifyReopen is how every crash test ends: the recovered log takes
// more appends, matches the model, closes cleanly, and matches it again
// after a reopen.
func (m *plModel) appendVerifyReopen(l *Log, opts Options) {
	m.t.Helper()
	for range 3 {
		m.append(l)
	}
	m.verify(l)
	if err := l.Close(); err != nil {
		m.t.Fatal(err)
	}
	l = mustOpen(m.t, opts)
	m.verify(l)
	if err := l.Close(); err != nil {
		m.t.Fatal(err)
	}
}

func (m *plModel) verify(l *Log) {
	m.t.Helper()
	end, start := m.end(), m.start
	if s, e := l.LogStartOffset(), l.LogEndOffset(); s != start || e != end {
		m.t.Fatalf("log is [%d, %d), want [%d, %d)", s, e, start, end)
	}
	first := m.boundary(start)
	for _, b := range m.batches[first:] {
		for off := b.base; off <= b.last; off++ {
			data, err := l.Read(off, 1, end)
			if err != nil {
				m.t.Fatalf("read at %d: %v", off, err)
			}
			if !bytes.Equal(data, b.data) {
				m.t.Fatalf("read at %d: %d bytes differ from the batch appended at %d (%d bytes)", off, len(data), b.base, len(b.data))
			}
		}
	}
	// Reads of many batches at once return consecutive whole batches.
	for i := first; i < len(m.batches); {
		data, err := l.Read(m.batches[i].base, 1+m.rng.IntN(8192), end)
		if err != nil {
			m.t.Fatalf("read at %d: %v", m.batches[i].base, err)
		}
		j := i
		for rest := data; len(rest) > 0; j++ {
			if j == len(m.batches) || !bytes.HasPrefix(rest, m.batches[j].data) {
				m.t.Fatalf("read from %d: batch %d of the result differs", m.batches[i].base, j-i)
			}
			rest = rest[len(m.batches[j].data):]
		}
		if j == i {
			m.t.Fatalf("read at %d returned nothing", m.batches[i].base)
		}
		i = j
	}
	if data, err := l.Read(end, 100, end+1); err != nil || len(data) != 0 {
		m.t.Fatalf("read at the log end: %d bytes, %v", len(data), err)
	}
	if start > 0 {
		if _, err := l.Read(start-1, 100, end); !errors.Is(err, ErrOffsetOutOfRange) {
			m.t.Fatalf("read below the log start %d: %v, want ErrOffsetOutOfRange", start, err)
		}
	}
	checkEpochs(m.t, l, truncateWantStart(m.epochs, start), end)
	m.checkTimestamps(l)
	m.checkProducers(l)
}

// checkTimestamps looks up the last record before every segment boundary
// (where a segment's newest timestamp must be known) and a few random ones.
func (m *plModel) checkTimestamps(l *Log) {
	m.t.Helper()
	end := m.end()
	first := m.boundary(m.start)
	if first == len(m.batches) {
		if _, ok, err := l.MaxTimestamp(end); ok || err != nil {
			m.t.Fatalf("max timestamp of an empty log: found %v, %v", ok, err)
		}
		return
	}
	// Up to four segment boundaries (each lookup scans with a large
	// buffer; over many runs these cover every kind of segment).
	var probes []int
	for _, base := range l.Segments()[1:] {
		if i := m.boundary(base); i > first {
			probes = append(probes, i-1)
		}
	}
	m.rng.Shuffle(len(probes), func(i, j int) { probes[i], probes[j] = probes[j], probes[i] })
	probes = probes[:min(len(probes), 4)]
	for range 3 {
		probes = append(probes, first+m.rng.IntN(len(m.batches)-first))
	}
	for _, i := range probes {
		b := m.batches[i]
		j := b.last - b.base
		if i%2 == 1 {
			j = m.rng.Int64N(j + 1)
		}
		got, ok, err := l.OffsetForTimestamp(b.baseTs+j, end)
		if want := (TimestampOffset{Offset: b.base + j, Timestamp: b.baseTs + j}); err != nil || !ok || got != want {
			m.t.Fatalf("offset for timestamp %d: %+v %v %v, want %+v (segments %v)", b.baseTs+j, got, ok, err, want, l.Segments())
		}
	}
	last := m.batches[len(m.batches)-1]
	got, ok, err := l.MaxTimestamp(end)
	if want := (TimestampOffset{Offset: last.last, Timestamp: last.maxTs}); err != nil || !ok || got != want {
		m.t.Fatalf("max timestamp: %+v %v %v, want %+v", got, ok, err, want)
	}
}

// checkProducers checks each producer's state against its batches in the
// log: Producer reports the last one; re-sending any of the last five of
// the current producer epoch is a Duplicate answered with the original
// offsets, the sixth is out of order; and the model continues each producer
// after its last batch in the log.
func (m *plModel) checkProducers(l *Log) {
	m.t.Helper()
	end := m.end()
	for _, pid := range []int64{101, 102, 103} {
		var mine []plBatch
		for _, b := range m.batches {
			if b.pid == pid {
				mine = append(mine, b)
			}
		}
		st, ok := l.Producer(pid)
		if len(mine) == 0 {
			if ok {
				m.t.Fatalf("producer %d has no batch in the log, but the log reports %+v", pid, st)
			}
			if p := m.prods[pid]; p != nil {
				p.nextSeq = 0
			}
			continue
		}
		last := mine[len(mine)-1]
		// LastTimestamp is the append time (the log's clock), which the
		// model does not track; producer_test checks it.
		want := ProducerState{ProducerID: pid, Epoch: last.pepoch, LastSequence: last.lastSeq, LastOffset: last.last, LastTimestamp: st.LastTimestamp}
		if !ok || st != want {
			m.t.Fatalf("producer %d: state %+v (found %v), want %+v", pid, st, ok, want)
		}
		for i := len(mine) - 1; i >= 0 && mine[i].pepoch == last.pepoch && i >= len(mine)-maxProducerBatches-1; i-- {
			r, err := l.Append(bytes.Clone(mine[i].data), m.leader)
			if i < len(mine)-maxProducerBatches {
				if !errors.Is(err, ErrOutOfOrderSequence) {
					m.t.Fatalf("producer %d: re-sending its 6th newest batch (at %d): %+v, %v, want ErrOutOfOrderSequence", pid, mine[i].base, r, err)
				}
				continue
			}
			if err != nil || !r.Duplicate || r.BaseOffset != mine[i].base || r.LastOffset != mine[i].last {
				m.t.Fatalf("producer %d: re-sending the batch at %d..%d: %+v, %v, want a duplicate", pid, mine[i].base, mine[i].last, r, err)
			}
		}
		m.prods[pid] = &plProducer{epoch: last.pepoch, nextSeq: last.lastSeq + 1}
	}
	if got := l.LogEndOffset(); got != end {
		m.t.Fatalf("duplicates moved the log end to %d, want %d", got, end)
	}
}

// plOptions is a small-segment configuration, so that a few hundred batches
// roll many segments and make many index entries.
func plOptions(rng *rand.Rand, fsys vfs.FS, truncate bool) Options {
	cfg := DefaultConfig()
	cfg.SegmentBytes = int64(2048 + rng.IntN(6*1024))
	cfg.IndexIntervalBytes = 128 + rng.IntN(1024)
	return Options{Dir: "/data/topic-0", FS: fsys, Config: cfg, FindTimestamp: testSearcher, TruncateUncheckpointed: truncate}
}

// mustOpen opens without registering a Close: power-loss tests abandon
// their logs.
func mustOpen(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l
}

// crashPoint is a Mem fault hook that cuts the power at the at-th faultable
// operation (counting from 1; 0 never): it crashes the filesystem from
// inside the operation, before it takes effect, and fails it and every
// later one, so the log under test dies mid-call.
type crashPoint struct {
	mu    sync.Mutex
	mem   *vfs.Mem
	rng   *rand.Rand
	at, n int
	off   bool
}

func (c *crashPoint) hook(op vfs.Op, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off {
		return errPowerLoss
	}
	c.n++
	if c.n == c.at {
		c.off = true
		c.mem.Crash(c.rng)
		return errPowerLoss
	}
	return nil
}

func (c *crashPoint) dead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.off
}

func (c *crashPoint) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// callCrashes runs setup, then call with the power cut at its at-th
// faultable operation, or (at past the call's operations) right after it
// returns; it reports whether the call completed and how many operations
// it made. With at == 0 it only counts.
func callCrashes(t testing.TB, c *crashPoint, at int, call func() error) (completed bool, ops int) {
	t.Helper()
	before := c.count()
	if at > 0 {
		c.mu.Lock()
		c.at = before + at
		c.mu.Unlock()
	}
	err := call()
	ops = c.count() - before
	if c.dead() {
		return false, ops
	}
	if err != nil {
		t.Fatalf("call failed without a crash: %v", err)
	}
	if at > 0 {
		c.mu.Lock()
		c.off = true
		c.mem.Crash(c.rng)
		c.mu.Unlock()
	}
	return true, ops
}

// appendBatch appends b for the model outside its random workload.
func appendBatch(t testing.TB, l *Log, m *plModel, b []byte, pb plBatch) plBatch {
	t.Helper()
	end := m.end()
	r := mustAppend(t, l, b, m.leader)
	if r.BaseOffset != end {
		t.Fatalf("append at %d, want %d", r.BaseOffset, end)
	}
	pb.data, pb.base, pb.last, pb.epoch = b, end, r.LastOffset, m.leader
	m.epochs = assignWant(m.epochs, m.leader, end)
	if pb.pid >= 0 {
		m.prods[pb.pid] = &plProducer{epoch: pb.pepoch, nextSeq: pb.lastSeq + 1}
	}
	return pb
}

// checkReadable reads every offset the log says it holds, one batch and
// many batches at a time, and compares with the appended bytes. It only
// reads, so it also works on a failed log.
func (m *plModel) checkReadable(l *Log) {
	m.t.Helper()
	start, end := l.LogStartOffset(), l.LogEndOffset()
	first, k := m.boundary(start), m.boundary(end)
	for i, b := range m.batches[first:k] {
		for off := b.base; off <= b.last; off++ {
			if data, err := l.Read(off, 1, end); err != nil || !bytes.Equal(data, b.data) {
				m.t.Fatalf("read at %d: %d bytes, %v; want the %d bytes appended at %d", off, len(data), err, len(b.data), b.base)
			}
		}
		data, err := l.Read(b.base, 1<<20, end)
		if err != nil {
			m.t.Fatalf("read at %d: %v", b.base, err)
		}
		for j := first + i; len(data) > 0; j++ {
			if j == k || !bytes.HasPrefix(data, m.batches[j].data) {
				m.t.Fatalf("read from %d: batch %d of the result differs", b.base, j-first-i)
			}
			data = data[len(m.batches[j].data):]
		}
	}
}
