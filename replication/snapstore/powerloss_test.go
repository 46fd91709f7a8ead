package snapstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

const plDir = "/data/snaps"

func TestPowerLossBeforeClose(t *testing.T) {
	for seed := range uint64(8) {
		m := vfs.NewMem()
		s := mustOpen(t, Options{Dir: plDir, FS: m})
		old := create(t, s, 1, 10, payload(1, 5000))
		sink := mustCreate(t, s, 1, 20)
		writePieces(t, sink, payload(2, 300_000))
		m.Crash(rand.New(rand.NewPCG(seed, 1))) // torn data may survive
		if err := sink.Close(); err == nil {
			t.Fatal("Close after the power loss succeeded")
		}

		s = mustOpen(t, Options{Dir: plDir, FS: m})
		if got := listIDs(t, s); !slices.Equal(got, []string{old}) {
			t.Fatalf("seed %d: List = %v", seed, got)
		}
		if got := readDir(t, m, plDir); !slices.Equal(got, []string{old}) {
			t.Fatalf("seed %d: leftovers not removed: %v", seed, got)
		}
		if _, got := readSnap(t, s, old); !bytes.Equal(got, payload(1, 5000)) {
			t.Fatalf("seed %d: old snapshot damaged", seed)
		}
	}
}

func TestPowerLossAfterClose(t *testing.T) {
	src := newFakeSource()
	src.put("r", payload(3, 77))
	m := vfs.NewMem()
	s := mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 5})
	a := create(t, s, 1, 10, payload(1, 0))
	b := create(t, s, 1, 11, payload(2, 1<<20))
	c := createRef(t, s, 1, 12, "r", 77)
	m.Crash(rand.New(rand.NewPCG(1, 2)))

	s = mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 5})
	if got := listIDs(t, s); !slices.Equal(got, []string{c, b, a}) {
		t.Fatalf("List = %v", got)
	}
	for id, want := range map[string][]byte{a: nil, b: payload(2, 1<<20), c: payload(3, 77)} {
		if _, got := readSnap(t, s, id); !bytes.Equal(got, want) {
			t.Fatalf("%s damaged", id)
		}
	}
}

// errPowerLoss fails the operation the power was cut before, and every one
// after it until the test "reboots".
var errPowerLoss = errors.New("test: power lost")

// crasher cuts the power before the n-th faultable operation (counting from
// 1; 0 never) and fails everything after, as a dead machine would.
type crasher struct {
	m   *vfs.Mem
	rng *rand.Rand

	mu    sync.Mutex
	n     int
	count int
	dead  bool
}

func (c *crasher) hook(op vfs.Op, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errPowerLoss
	}
	c.count++
	if c.count == c.n {
		c.dead = true
		c.m.Crash(c.rng)
		return errPowerLoss
	}
	return nil
}

// TestPowerLossAtEveryStep cuts the power before each filesystem operation
// of a snapshot's Create, Write, Close and the reap that follows, for data
// and reference snapshots, and checks what a reopened store holds: never
// nothing, never a partial snapshot, the new one whenever Close returned
// nil, and never a listed snapshot whose reference was released.
func TestPowerLossAtEveryStep(t *testing.T) {
	for _, ref := range []bool{false, true} {
		t.Run(fmt.Sprintf("ref=%v", ref), func(t *testing.T) {
			total := plScenario(t, ref, 0, 0)
			if total < 10 {
				t.Fatalf("only %d operations counted", total)
			}
			for n := 1; n <= total+1; n++ {
				for seed := range uint64(3) {
					plScenario(t, ref, n, seed)
				}
			}
		})
	}
}

// plScenario runs one crash point and checks the outcome; with crashAt 0 it
// does not crash and returns the number of operations.
func plScenario(t *testing.T, ref bool, crashAt int, seed uint64) int {
	t.Helper()
	where := fmt.Sprintf("crash before op %d, seed %d", crashAt, seed)
	m := vfs.NewMem()
	src := newFakeSource()
	oldData, newData := payload(1, 3000), payload(2, 200_000)
	src.put("old", oldData)
	src.put("new", newData)
	s := mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 1})
	var old string
	if ref {
		old = createRef(t, s, 1, 10, "old", int64(len(oldData)))
	} else {
		old = create(t, s, 1, 10, oldData)
	}

	c := &crasher{m: m, rng: rand.New(rand.NewPCG(seed, uint64(crashAt))), n: crashAt}
	m.SetFault(c.hook)
	closeErr := errPowerLoss
	var newID string
	if sink, err := s.Create(1, 20, 1, testConf(), 5, nil); err == nil {
		k := sink.(*Sink)
		newID = k.ID()
		if ref {
			err = k.Reference("new", int64(len(newData)))
		} else {
			_, err = k.Write(newData)
		}
		if err == nil {
			closeErr = k.Close()
		} else {
			_ = k.Cancel()
		}
	}
	m.SetFault(nil)
	if crashAt == 0 {
		if closeErr != nil {
			t.Fatalf("no crash: Close: %v", closeErr)
		}
		return c.count
	}
	if !c.dead {
		m.Crash(c.rng) // the crash point is after the last operation
	}

	// First with a larger Retain, which reaps nothing and lists every
	// complete snapshot: each must read back whole, so none may have lost
	// its reference (the fake Source forgets a removed one).
	wide := mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 5})
	all := listIDs(t, wide)
	if len(all) == 0 || len(all) > 2 || all[len(all)-1] != old && all[len(all)-1] != newID {
		t.Fatalf("%s: complete snapshots %v", where, all)
	}
	for _, id := range all {
		want := oldData
		if id == newID {
			want = newData
		}
		if _, got := readSnap(t, wide, id); !bytes.Equal(got, want) {
			t.Fatalf("%s: %s reads back wrong data", where, id)
		}
	}
	if refs, err := wide.References(); err != nil || ref && len(refs) != len(all) {
		t.Fatalf("%s: References = %v, %v for %v", where, refs, err, all)
	}

	s = mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 1})
	ids := listIDs(t, s)
	if len(ids) != 1 {
		t.Fatalf("%s: List = %v, want exactly one snapshot", where, ids)
	}
	if closeErr == nil && ids[0] != newID {
		t.Fatalf("%s: Close returned nil but List = %v", where, ids)
	}
	want := oldData
	if ids[0] == newID {
		want = newData
	} else if ids[0] != old {
		t.Fatalf("%s: List = %v, neither %s nor %s", where, ids, old, newID)
	}
	if _, got := readSnap(t, s, ids[0]); !bytes.Equal(got, want) {
		t.Fatalf("%s: %s reads back wrong data", where, ids[0])
	}
	for _, name := range readDir(t, m, plDir) {
		if strings.Contains(name, ".") {
			t.Fatalf("%s: leftover %s after Open", where, name)
		}
	}
	removed := src.removedRefs()
	if ref {
		listedRef := map[string]string{old: "old", newID: "new"}[ids[0]]
		if slices.Contains(removed, listedRef) {
			t.Fatalf("%s: listed snapshot's reference %q was released", where, listedRef)
		}
		// A crash after Remove but before the reaped directory's removal
		// was durable makes Open ask again (Source.Remove is idempotent).
		if ids[0] == newID && (len(removed) == 0 || slices.ContainsFunc(removed, func(r string) bool { return r != "old" })) {
			t.Fatalf("%s: the reaped snapshot's reference was not released (or another was): %v", where, removed)
		}
	} else if len(removed) != 0 {
		t.Fatalf("%s: released %v for data snapshots", where, removed)
	}
	return c.count
}

// TestFaultAtEveryStep fails each filesystem operation of a snapshot's
// Create, Write, Close and reap once (the machine stays up) and checks the
// store stays consistent: Close reports the failure, a failed snapshot
// leaves nothing behind, a failed fsync of the store directory fails the
// store, and a reopened store is healthy.
func TestFaultAtEveryStep(t *testing.T) {
	total := 0
	for n := 1; total == 0 || n <= total; n++ {
		m := vfs.NewMem()
		src := newFakeSource()
		src.put("old", payload(1, 100))
		s := mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 1})
		old := createRef(t, s, 1, 10, "old", 100)

		var mu sync.Mutex
		count, failedOp := 0, vfs.Op(0)
		failedName := ""
		m.SetFault(func(op vfs.Op, name string) error {
			mu.Lock()
			defer mu.Unlock()
			count++
			if count == n {
				failedOp, failedName = op, name
				return errors.New("test: injected fault")
			}
			return nil
		})
		newID, closeErr := "", error(nil)
		sink, err := s.Create(1, 20, 1, testConf(), 5, nil)
		if err != nil {
			closeErr = err
		} else {
			newID = sink.ID()
			if _, err := sink.Write(payload(2, 100_000)); err != nil {
				_ = sink.Cancel()
				closeErr = err
			} else {
				closeErr = sink.Close()
			}
		}
		m.SetFault(nil)
		if failedOp == 0 {
			total = count // no fault fired: every operation has been tried
			if closeErr != nil {
				t.Fatalf("no fault: %v", closeErr)
			}
			break
		}
		where := fmt.Sprintf("fault on op %d (%v %s)", n, failedOp, failedName)

		ids := listIDs(t, s)
		storeDirSync := failedOp == vfs.OpSyncDir && failedName == plDir
		switch {
		case closeErr == nil:
			if !slices.Equal(ids, []string{newID}) && !slices.Equal(ids, []string{newID, old}) {
				t.Fatalf("%s: Close succeeded but List = %v", where, ids)
			}
		case storeDirSync:
			// The snapshot was published but its fsync failed: the store
			// refuses new snapshots until it is reopened.
			if _, err := s.Create(1, 30, 1, testConf(), 5, nil); !errors.Is(err, ErrFailed) {
				t.Fatalf("%s: Create after a failed directory fsync = %v, want ErrFailed", where, err)
			}
		default:
			if !slices.Equal(ids, []string{old}) {
				t.Fatalf("%s: Close failed (%v) but List = %v", where, closeErr, ids)
			}
		}
		for _, id := range ids {
			readSnap(t, s, id)
		}

		s = mustOpen(t, Options{Dir: plDir, FS: m, Source: src, Retain: 1})
		for _, name := range readDir(t, m, plDir) {
			if strings.Contains(name, ".") {
				t.Fatalf("%s: leftover %s after reopen", where, name)
			}
		}
		ids = listIDs(t, s)
		if len(ids) != 1 {
			t.Fatalf("%s: after reopen List = %v", where, ids)
		}
		readSnap(t, s, ids[0])
		if ids[0] == old && slices.Contains(src.removedRefs(), "old") {
			t.Fatalf("%s: listed snapshot's reference released", where)
		}
		if _, err := s.Create(1, 40, 1, testConf(), 5, nil); err != nil {
			t.Fatalf("%s: reopened store refuses snapshots: %v", where, err)
		}
	}
	if total < 10 {
		t.Fatalf("only %d operations counted", total)
	}
}
