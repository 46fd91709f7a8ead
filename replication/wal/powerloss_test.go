package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

// Power-loss tests on vfs.Mem. A workload runs against a model; the power
// is cut (Mem.Crash: unsynced data and directory operations lost, unsynced
// appends torn at a random byte) either between operations or at a chosen
// filesystem call inside one; the *Log is abandoned without Close, and the
// reopened log must be a state the model allows: every acknowledged entry
// present (unless an acknowledged DeleteRange removed it), the operation in
// flight either not applied or partly applied in a prefix-preserving way,
// no entry with contents that were not stored at its index, and the stable
// store holding the acknowledged value or the one in flight. A failing
// subtest's name carries its seed.

// span is a log's [first, last]; {0, 0} is the empty log.
type span struct{ first, last uint64 }

func (s span) empty() bool { return s.last == 0 }

// plOp is one operation of a workload and the model state it leads to.
type plOp struct {
	name    string
	do      func(l *Log) error
	after   span
	durable uint64 // the model's durable bound once it is acknowledged
	key     string // Set: the key and value in flight
	val     string
}

// plModel is what the log should hold.
type plModel struct {
	t        testing.TB
	rng      *rand.Rand
	mem      *vfs.Mem
	opts     Options
	contents map[uint64]*raft.Log // the latest entry stored (or being stored) at each index
	cur      span                 // acknowledged bounds
	// durable: every acknowledged entry in cur at or below it is durable.
	// Without NoSync it is cur.last; with NoSync it moves at Sync and at
	// suffix deletions (which leave every remaining segment synced).
	durable uint64
	kv      map[string]string // acknowledged stable store values
	term    uint64
}

func newPLModel(t testing.TB, rng *rand.Rand, noSync bool) *plModel {
	mem := vfs.NewMem()
	return &plModel{
		t: t, rng: rng, mem: mem,
		opts:     Options{Dir: "/raft/wal", FS: mem, SegmentBytes: 512, NoSync: noSync},
		contents: map[uint64]*raft.Log{},
		kv:       map[string]string{},
		term:     1,
	}
}

func (m *plModel) opStore(from, to uint64, size func() int) *plOp {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		e := entry(i, m.term, size())
		m.contents[i] = e // an index is only reused after a durable deletion
		logs = append(logs, e)
	}
	after := span{m.cur.first, to}
	if m.cur.empty() {
		after.first = from
	}
	durable := after.last
	if m.opts.NoSync {
		durable = m.durable
		if m.cur.empty() {
			durable = 0
		}
	}
	return &plOp{
		name:  fmt.Sprintf("StoreLogs[%d, %d]", from, to),
		do:    func(l *Log) error { return l.StoreLogs(logs) },
		after: after, durable: durable,
	}
}

func (m *plModel) opDelete(from, to uint64) *plOp {
	c := m.cur
	after, durable := c, m.durable
	if lo, hi := max(from, c.first), min(to, c.last); !c.empty() && lo <= hi {
		switch {
		case hi == c.last && lo == c.first:
			after, durable = span{}, 0
		case hi == c.last:
			after.last, durable = lo-1, lo-1
		case lo == c.first:
			after.first = hi + 1
		}
	}
	return &plOp{
		name:  fmt.Sprintf("DeleteRange(%d, %d)", from, to),
		do:    func(l *Log) error { return l.DeleteRange(from, to) },
		after: after, durable: durable,
	}
}

func (m *plModel) opSet(key, val string) *plOp {
	return &plOp{
		name:  fmt.Sprintf("Set(%s, %q)", key, val),
		do:    func(l *Log) error { return l.Set([]byte(key), []byte(val)) },
		after: m.cur, durable: m.durable, key: key, val: val,
	}
}

func (m *plModel) opSync() *plOp {
	return &plOp{name: "Sync", do: (*Log).Sync, after: m.cur, durable: m.cur.last}
}

// randomOp picks the next operation of a random workload.
func (m *plModel) randomOp() *plOp {
	size := func() int {
		if m.rng.IntN(12) == 0 {
			return 600 + m.rng.IntN(3000) // larger than a segment
		}
		return m.rng.IntN(120)
	}
	c := m.cur
	switch r := m.rng.IntN(100); {
	case r < 50 || c.empty():
		from := c.last + 1
		if c.empty() {
			from = 1 + m.rng.Uint64N(300)
		}
		return m.opStore(from, from+uint64(m.rng.IntN(8)), size)
	case r < 62 && c.last > c.first:
		return m.opDelete(c.first, c.first+m.rng.Uint64N(c.last-c.first))
	case r < 76:
		m.term++ // a new leader's entries replace the tail
		return m.opDelete(c.first+m.rng.Uint64N(c.last-c.first+1), c.last)
	case r < 80:
		m.term++
		return m.opDelete(0, math.MaxUint64)
	case r < 92:
		return m.opSet([]string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}[m.rng.IntN(3)], fmt.Sprint(m.rng.IntN(1000)))
	}
	return m.opSync()
}

func (m *plModel) ack(op *plOp) {
	m.cur, m.durable = op.after, op.durable
	if op.key != "" {
		m.kv[op.key] = op.val
	}
}

// check asserts that the reopened l is a state the model allows with op
// (nil: none) in flight, then makes that state the model's.
func (m *plModel) check(l *Log, op *plOp) {
	m.t.Helper()
	before, after := m.cur, m.cur
	what := "no operation in flight"
	if op != nil {
		after, what = op.after, op.name+" in flight"
	}
	f, _ := l.FirstIndex()
	g, _ := l.LastIndex()
	r := span{f, g}
	if err := m.allowed(r, before, after); err != nil {
		m.t.Fatalf("%s: recovered [%d, %d] from [%d, %d] (durable to %d): %v",
			what, r.first, r.last, before.first, before.last, m.durable, err)
	}
	if !r.empty() {
		for i := r.first; i <= r.last; i++ {
			var got raft.Log
			if err := l.GetLog(i, &got); err != nil {
				m.t.Fatalf("%s: GetLog(%d): %v", what, i, err)
			}
			if want := m.contents[i]; want == nil || !sameLog(&got, want) {
				m.t.Fatalf("%s: index %d holds %s, never stored there", what, i, describe(&got))
			}
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"} {
		v, err := l.Get([]byte(k))
		old, had := m.kv[k]
		switch {
		case op != nil && op.key == k && err == nil && string(v) == op.val:
			m.kv[k] = op.val
		case had && (err != nil || string(v) != old):
			m.t.Fatalf("%s: stable %s = %q, %v; acknowledged %q", what, k, v, err, old)
		case !had && !errors.Is(err, ErrKeyNotFound):
			m.t.Fatalf("%s: stable %s = %q, %v; never acknowledged", what, k, v, err)
		}
	}
	m.cur, m.durable = r, r.last // what survived a crash is durable
	m.term++
}

// allowed reports whether r is a state the log may recover to.
func (m *plModel) allowed(r, before, after span) error {
	var firsts []uint64
	for _, s := range []span{before, after} {
		if !s.empty() {
			firsts = append(firsts, s.first)
		}
	}
	hi := max(before.last, after.last)
	lo := min(before.last, after.last)
	emptyOK := before.empty() || after.empty()
	if m.opts.NoSync {
		lo = min(lo, m.durable)
		for _, f := range firsts {
			emptyOK = emptyOK || f > m.durable
		}
	}
	switch {
	case r.empty() && emptyOK:
		return nil
	case r.empty():
		return errors.New("acknowledged entries lost: the log is empty")
	case !slices.Contains(firsts, r.first):
		return fmt.Errorf("first index %d, want one of %v", r.first, firsts)
	case r.last > hi:
		return fmt.Errorf("last index %d past %d", r.last, hi)
	case !before.empty() && !after.empty() && r.last < lo:
		return fmt.Errorf("last index %d, acknowledged up to %d", r.last, lo)
	}
	return nil
}

// crasher cuts the power at a chosen filesystem call: from then on every
// faultable call fails, as if the process had died there.
type crasher struct {
	mu      sync.Mutex
	armed   bool
	left    int // calls still allowed
	tripped bool
	calls   int // calls seen, for counting an operation's calls
}

var errPowerCut = errors.New("power cut")

func (c *crasher) hook(vfs.Op, string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	switch {
	case c.tripped:
		return errPowerCut
	case !c.armed:
		return nil
	case c.left == 0:
		c.tripped = true
		return errPowerCut
	}
	c.left--
	return nil
}

func (c *crasher) arm(after int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.left, c.tripped = true, after, false
}

// disarm stops the countdown and reports whether it had cut the power.
func (c *crasher) disarm() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	tripped := c.tripped
	c.armed, c.tripped = false, false
	return tripped
}

func (c *crasher) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// crashAndReopen cuts the power and opens the log again.
func (m *plModel) crashAndReopen(c *crasher) *Log {
	m.t.Helper()
	c.disarm()
	m.mem.Crash(m.rng)
	return mustOpen(m.t, m.opts)
}

func TestPowerLossRandom(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		seeds, steps := 60, 80
		if testing.Short() {
			seeds = 10
		}
		for seed := 1; seed <= seeds; seed++ {
			t.Run(fmt.Sprintf("nosync=%v/seed=%d", noSync, seed), func(t *testing.T) {
				t.Parallel()
				m := newPLModel(t, newRand(uint64(seed)), noSync)
				c := &crasher{}
				m.mem.SetFault(c.hook)
				l := mustOpen(t, m.opts)
				for range steps {
					op := m.randomOp()
					if m.rng.IntN(5) == 0 {
						c.arm(m.rng.IntN(10))
					}
					err := op.do(l)
					if c.disarm() {
						if err == nil {
							// Only an ignored call failed (closing a
							// removed segment): the operation completed.
							m.ack(op)
							op = nil
						}
						l = m.crashAndReopen(c)
						m.check(l, op)
						continue
					}
					if err != nil {
						t.Fatalf("%s: %v", op.name, err)
					}
					m.ack(op)
					if m.rng.IntN(8) == 0 {
						l = m.crashAndReopen(c)
						m.check(l, nil)
					}
				}
				mustClose(t, l)
				l = mustOpen(t, m.opts)
				m.check(l, nil) // a clean close keeps everything, NoSync too
				mustClose(t, l)
			})
		}
	}
}

// TestPowerLossEveryCall cuts the power at every faultable filesystem call
// of scripted operations (appends that roll, large entries, prefix and
// suffix deletions, emptying the log and restarting it below and above the
// old first index, stable store writes), with several torn-write outcomes
// per cut, and checks each recovery.
func TestPowerLossEveryCall(t *testing.T) {
	small := func() int { return 60 }
	// A script is a list of steps, each making its operation from the
	// model as the steps before it left it.
	type step = func(m *plModel) *plOp
	store := func(from, to uint64, size func() int) step {
		return func(m *plModel) *plOp { return m.opStore(from, to, size) }
	}
	del := func(from, to uint64) step { return func(m *plModel) *plOp { return m.opDelete(from, to) } }
	set := func(k, v string) step { return func(m *plModel) *plOp { return m.opSet(k, v) } }
	sync := func(m *plModel) *plOp { return m.opSync() }
	termUp := func(m *plModel) *plOp { return m.termUp() }
	scripts := map[string][]step{
		"store in segment": {store(41, 41, small)},
		"store rolling":    {store(41, 60, small)},
		"store large":      {store(41, 42, func() int { return 3000 })},
		"delete prefix":    {del(1, 22)},
		"delete suffix across segments and store": {del(13, 40), termUp, store(13, 20, small)},
		"delete last and store":                   {del(40, 40), termUp, store(40, 42, small)},
		"empty and restart below":                 {del(1, 10), del(11, 40), termUp, store(3, 8, small)},
		"empty and restart above":                 {del(1, 40), termUp, store(500, 505, small)},
		"set":                                     {set("LastVoteCand", "n2"), set("CurrentTerm", "2")},
		"store and sync":                          {store(41, 50, small), sync},
	}
	setup := func(m *plModel, l *Log) {
		for _, st := range []step{store(1, 15, small), store(16, 40, small), set("CurrentTerm", "1"), sync} {
			op := st(m)
			if err := op.do(l); err != nil {
				t.Fatalf("setup %s: %v", op.name, err)
			}
			m.ack(op)
		}
	}
	for name, script := range scripts {
		for _, noSync := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/nosync=%v", name, noSync), func(t *testing.T) {
				t.Parallel()
				// Count the script's calls once.
				m := newPLModel(t, newRand(0), noSync)
				c := &crasher{}
				m.mem.SetFault(c.hook)
				l := mustOpen(t, m.opts)
				setup(m, l)
				start := c.count()
				for _, st := range script {
					op := st(m)
					if err := op.do(l); err != nil {
						t.Fatalf("%s: %v", op.name, err)
					}
					m.ack(op)
				}
				calls := c.count() - start
				for cut := 0; cut <= calls; cut++ {
					for torn := range uint64(3) {
						m := newPLModel(t, newRand(uint64(cut)<<8|torn), noSync)
						c := &crasher{}
						m.mem.SetFault(c.hook)
						l := mustOpen(t, m.opts)
						setup(m, l)
						c.arm(cut)
						var inFlight *plOp
						for _, st := range script {
							op := st(m)
							if op.do(l) != nil {
								inFlight = op
								break
							}
							m.ack(op)
						}
						l = m.crashAndReopen(c)
						m.check(l, inFlight)
						// The recovered log keeps working.
						next := m.cur.last + 1
						if m.cur.empty() {
							next = 1000
						}
						op := m.opStore(next, next+2, small)
						if err := op.do(l); err != nil {
							t.Fatalf("cut %d: store after recovery: %v", cut, err)
						}
						m.ack(op)
						mustClose(t, l)
						l = mustOpen(t, m.opts)
						m.check(l, nil)
						mustClose(t, l)
					}
				}
			})
		}
	}
}

// termUp is a scripted no-op that moves the model to a new term, so that
// entries stored after a deletion differ from the ones deleted.
func (m *plModel) termUp() *plOp {
	m.term++
	return &plOp{name: "term", do: func(*Log) error { return nil }, after: m.cur, durable: m.durable}
}

// TestPowerLossStableOnly: the stable store is durable on every Set even in
// NoSync mode, with nothing else synced.
func TestPowerLossStableOnly(t *testing.T) {
	mem := vfs.NewMem()
	opts := Options{Dir: "/w", FS: mem, NoSync: true}
	for i := range uint64(20) {
		l := mustOpen(t, opts)
		if got, err := l.GetUint64([]byte("CurrentTerm")); i > 0 && (got != i-1 || err != nil) {
			t.Fatalf("round %d: term %d, %v", i, got, err)
		}
		if err := l.SetUint64([]byte("CurrentTerm"), i); err != nil {
			t.Fatal(err)
		}
		if err := l.Set([]byte("LastVoteCand"), bytes.Repeat([]byte{byte(i)}, int(i))); err != nil {
			t.Fatal(err)
		}
		mem.Crash(newRand(i))
	}
}
