package wal

import (
	"fmt"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkLayout measures the open question of DESIGN.md: one WAL per
// broker with group commit across partitions, or one WAL per partition.
// K partitions on one broker each keep walWindow raft entries in flight
// (replication.Group's maxInflightEntries), a closed loop: an entry is
// resubmitted as soon as it is durable.
//
//   - wal=per-partition: K logs, each in its own directory, each written by
//     its partition's goroutine: StoreLogs of everything the partition has
//     queued (its walWindow entries), one call in flight per partition, as
//     hashicorp/raft keeps one StoreLogs in flight per replica. K fsyncs can
//     be in flight at once, on K files.
//   - wal=shared: one log; K partition goroutines queue their entries for
//     one group-commit writer goroutine, which takes everything queued,
//     gives it contiguous indexes in the one log, writes it with one
//     StoreLogs (one write, one fdatasync) and then answers each partition.
//
// Real disk (b.TempDir()), default durability (fdatasync per StoreLogs).
// An op is one entry; MB/s counts entry data. fsyncs/s counts StoreLogs
// calls (each one fdatasync, plus two more on the rare segment roll),
// entries/fsync is their mean size, p50-ms and p99-ms are per entry, from
// submission to durable, and cpu-ms/MB is the process's CPU (user and
// system) per MB stored. Every log stores one entry (creating its
// first segment) before the clock starts. There is no compaction: it
// removes whole segments in both layouts, at the same rate per byte.
//
//	go test -run='^$' -bench=Layout -benchtime=2s -count=5 ./replication/wal/
func BenchmarkLayout(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 10} {
		for _, k := range []int{1, 4, 12, 48} {
			for _, shared := range []bool{false, true} {
				layout := "per-partition"
				if shared {
					layout = "shared"
				}
				name := fmt.Sprintf("entry=%dKiB/partitions=%d/wal=%s", size>>10, k, layout)
				b.Run(name, func(b *testing.B) { benchLayout(b, size, k, shared) })
			}
		}
	}
}

// walWindow is how many entries each partition keeps in flight.
const walWindow = 4

// layoutRun is one run's shared state: the entries left to write (b.N in
// all), each partition's latencies and the count of StoreLogs calls.
type layoutRun struct {
	data   []byte
	left   atomic.Int64
	calls  atomic.Int64
	lat    [][]time.Duration // per partition
	failed atomic.Pointer[error]
}

// claim takes up to n of the entries left; 0 means the run is over.
func (r *layoutRun) claim(n int) int {
	for {
		left := r.left.Load()
		if left <= 0 || r.failed.Load() != nil {
			return 0
		}
		take := min(int64(n), left)
		if r.left.CompareAndSwap(left, left-take) {
			return int(take)
		}
	}
}

func (r *layoutRun) fail(err error) { r.failed.CompareAndSwap(nil, &err) }

// record notes n entries of partition p submitted at start, durable now.
func (r *layoutRun) record(p, n int, start time.Time) {
	d := time.Since(start)
	for range n {
		r.lat[p] = append(r.lat[p], d)
	}
}

func benchLayout(b *testing.B, size, k int, shared bool) {
	r := &layoutRun{data: make([]byte, size), lat: make([][]time.Duration, k)}
	for i := range r.data {
		r.data[i] = byte(i * 7)
	}
	nlogs := k
	if shared {
		nlogs = 1
	}
	logs := make([]*Log, nlogs)
	dir := b.TempDir()
	for i := range logs {
		logs[i] = mustOpen(b, Options{Dir: path.Join(dir, fmt.Sprintf("p%d", i))})
		defer logs[i].Close()
		// Create the first segment outside the clock.
		if err := logs[i].StoreLogs([]*raft.Log{r.entry(1)}); err != nil {
			b.Fatal(err)
		}
	}
	r.left.Store(int64(b.N))
	b.SetBytes(int64(size))
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	if shared {
		w := newGroupCommit(r, logs[0])
		for p := range k {
			wg.Go(func() { w.partition(p) })
		}
		wg.Wait()
		w.close()
	} else {
		for p := range k {
			wg.Go(func() { r.perPartition(p, logs[p]) })
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if errp := r.failed.Load(); errp != nil {
		b.Fatal(*errp)
	}
	var all []time.Duration
	for _, l := range r.lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	calls := r.calls.Load()
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/(float64(b.N)*float64(size)/1e6), "cpu-ms/MB")
	b.ReportMetric(float64(calls)/elapsed.Seconds(), "fsyncs/s")
	if calls > 0 {
		b.ReportMetric(float64(b.N)/float64(calls), "entries/fsync")
	}
	if len(all) > 0 {
		b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
		b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
	}
}

// cpuTime is the CPU the process has used, user and system (the kernel's
// share of write and fdatasync included): on 2 cores, CPU per byte bounds
// throughput as much as the disk does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r *layoutRun) entry(index uint64) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: r.data, AppendedAt: time.Now()}
}

// perPartition is partition p's raft loop on its own log: store what is
// queued (the whole window, since every entry is resubmitted the moment
// it is durable), wait, repeat.
func (r *layoutRun) perPartition(p int, l *Log) {
	batch := make([]*raft.Log, walWindow)
	for i := range batch {
		batch[i] = r.entry(0)
	}
	next := uint64(2)
	for {
		n := r.claim(walWindow)
		if n == 0 {
			return
		}
		start := time.Now()
		for i := range n {
			batch[i].Index = next + uint64(i)
		}
		if err := l.StoreLogs(batch[:n]); err != nil {
			r.fail(err)
			return
		}
		r.calls.Add(1)
		next += uint64(n)
		r.record(p, n, start)
	}
}

// groupCommit is the shared log's writer: one goroutine, one StoreLogs in
// flight, carrying whatever every partition queued meanwhile.
type groupCommit struct {
	r    *layoutRun
	l    *Log
	mu   sync.Mutex
	cond *sync.Cond
	q    []*commitReq // under mu
	done bool         // under mu
	exit chan struct{}
}

type commitReq struct {
	n     int
	start time.Time
	ok    chan struct{}
}

func newGroupCommit(r *layoutRun, l *Log) *groupCommit {
	w := &groupCommit{r: r, l: l, exit: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// partition is partition p: queue the window, wait until it is durable,
// repeat.
func (w *groupCommit) partition(p int) {
	ok := make(chan struct{}, 1)
	for {
		n := w.r.claim(walWindow)
		if n == 0 {
			return
		}
		req := &commitReq{n: n, start: time.Now(), ok: ok}
		w.mu.Lock()
		w.q = append(w.q, req)
		w.cond.Signal()
		w.mu.Unlock()
		<-ok
		if w.r.failed.Load() != nil {
			return
		}
		w.r.record(p, n, req.start)
	}
}

func (w *groupCommit) run() {
	defer close(w.exit)
	next := uint64(2)
	var batch []*raft.Log
	var pool []*raft.Log
	for {
		w.mu.Lock()
		for len(w.q) == 0 && !w.done {
			w.cond.Wait()
		}
		if len(w.q) == 0 {
			w.mu.Unlock()
			return
		}
		reqs := w.q
		w.q = nil
		w.mu.Unlock()
		batch = batch[:0]
		for _, req := range reqs {
			for range req.n {
				if len(batch) == len(pool) {
					pool = append(pool, w.r.entry(0))
				}
				e := pool[len(batch)]
				e.Index = next
				next++
				batch = append(batch, e)
			}
		}
		err := w.l.StoreLogs(batch)
		if err != nil {
			w.r.fail(err)
		} else {
			w.r.calls.Add(1)
		}
		for _, req := range reqs {
			req.ok <- struct{}{}
		}
	}
}

func (w *groupCommit) close() {
	w.mu.Lock()
	w.done = true
	w.cond.Signal()
	w.mu.Unlock()
	<-w.exit
}
