package partition

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// Power-loss tests on vfs.Mem: a log is driven by a seeded workload, the
// filesystem crashes (unsynced data dropped, unsynced tails torn, unsynced
// directory operations undone), the *Log is abandoned without Close, and the
// reopened log is checked against a model of what was appended and what was
// acknowledged as durable. A failing subtest's name carries its seed.

func TestPowerLoss(t *testing.T) {
	t.Run("keep", func(t *testing.T) { runPowerLoss(t, false) })
	t.Run("truncate-uncheckpointed", func(t *testing.T) { runPowerLoss(t, true) })
}

// runPowerLoss: per seed, several rounds of a random workload, each ended by
// a power loss and a reopen that must recover what the model allows, after
// which the workload continues on the reopened log.
func runPowerLoss(t *testing.T, truncate bool) {
	seeds, rounds := 40, 4
	if testing.Short() {
		seeds, rounds = 8, 3
	}
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
			mem := vfs.NewMem()
			opts := plOptions(rng, mem, truncate)
			m := newModel(t, rng)
			l := mustOpen(t, opts)
			for range rounds {
				for range 40 + rng.IntN(120) {
					m.step(l)
				}
				mem.Crash(rng) // l is dead: never used or closed again
				l = mustOpen(t, opts)
				m.recovered(l, truncate)
				m.leader++
				m.append(l) // appends continue where recovery ended
			}
			// A clean close keeps everything (or, with
			// TruncateUncheckpointed, what the checkpoint covers).
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			m.synced = len(m.batches)
			l = mustOpen(t, opts)
			m.recovered(l, truncate)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPowerLossMidOperation cuts the power inside an operation: at every
// faultable filesystem call of a seeded workload (appends that roll,
// syncs, checkpoints, truncations), one run per crash point. The reopened
// log must hold a prefix of the batches with at least the synced ones
// (fewer only when a TruncateTo of them was in flight), with the
// checkpoint either the last completed one or the one in flight, epochs and
// producer state exactly those of the surviving batches, and it must keep
// accepting appends at its end.
func TestPowerLossMidOperation(t *testing.T) {
	seeds, stride := 6, 1
	if testing.Short() {
		seeds, stride = 2, 3
	}
	workload := func(m *plModel, l *Log, steps int) {
		for range steps {
			var ok bool
			switch r := m.rng.IntN(100); {
			case r < 70:
				ok = m.append(l)
			case r < 80:
				ok = m.sync(l)
			case r < 88:
				ok = m.checkpoint(l)
			case r < 92:
				ok = m.roll(l)
			case r < 96:
				ok = m.truncate(l)
			default:
				m.leader++
				ok = true
			}
			if !ok {
				return
			}
		}
	}
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			run := func(t *testing.T, at int) int {
				rng := rand.New(rand.NewPCG(uint64(seed), 0xc0ffee))
				mem := vfs.NewMem()
				opts := plOptions(rng, mem, false)
				opts.Config.SegmentBytes = 1024 + int64(rng.IntN(1024))
				c := &crashPoint{mem: mem, rng: rng, at: at}
				m := newModel(t, rng)
				m.crash = c
				l := mustOpen(t, opts)
				mem.SetFault(c.hook)
				workload(m, l, 50)
				n := c.count()
				if at == 0 {
					_ = l.Close()
					return n
				}
				if !c.dead() {
					t.Fatalf("crash point %d of %d never reached", at, n)
				}
				mem.SetFault(nil)
				m.crash = nil
				l = mustOpen(t, opts)
				m.recovered(l, false)
				for range 3 {
					m.append(l)
				}
				m.verify(l)
				_ = l.Close()
				return n
			}
			total := run(t, 0)
			for at := 1; at <= total; at += stride {
				t.Run(fmt.Sprintf("crash-at=%d", at), func(t *testing.T) { run(t, at) })
			}
		})
	}
}

// TestPowerLossDuringRoll cuts the power at every filesystem operation of a
// roll, both an explicit Roll and the one inside an Append that fills the
// segment, and right after it. The roll fsyncs the old segment before it
// creates the new one, so once that fsync is done every batch before the
// roll survives, and a new segment that survives is empty; the batch whose
// Append rolled is never in the log. The log reopens, accepts the next
// append at its end, and keeps everything across a clean reopen.
func TestPowerLossDuringRoll(t *testing.T) {
	for _, explicit := range []bool{true, false} {
		t.Run(fmt.Sprintf("explicit=%v", explicit), func(t *testing.T) {
			// run appends until the segment rolls (or Roll is called after
			// 12 batches), with the roll's at-th operation crashing.
			run := func(t *testing.T, at int) (done bool, ops int) {
				rng := rand.New(rand.NewPCG(3, 4))
				mem := vfs.NewMem()
				opts := plOptions(rng, mem, false)
				opts.Config.SegmentBytes, opts.Config.IndexIntervalBytes = 8192, 300
				c := &crashPoint{mem: mem, rng: rng}
				m := newModel(t, rng)
				l := mustOpen(t, opts)
				mem.SetFault(c.hook)
				for range 3 {
					m.append(l)
				}
				m.sync(l)
				before := len(m.batches)
				var segsBefore []int64
				if explicit {
					for range 9 {
						m.append(l)
					}
					before, segsBefore = len(m.batches), l.Segments()
					done, ops = callCrashes(t, c, at, l.Roll)
				} else {
					for len(l.Segments()) == 1 {
						before = len(m.batches)
						b, pb := m.nextBatch()
						if l.Size()+int64(len(b)) <= opts.Config.SegmentBytes {
							m.crash = nil
							m.batches = append(m.batches, appendBatch(t, l, m, b, pb))
							continue
						}
						m.crash = c
						segsBefore = l.Segments()
						done, ops = callCrashes(t, c, at, func() error {
							_, err := l.Append(b, m.leader)
							if err == nil {
								pb.data, pb.base, pb.last, pb.epoch = b, m.end(), m.end()+pb.maxTs-pb.baseTs, m.leader
								m.batches = append(m.batches, pb)
								m.epochs = assignWant(m.epochs, m.leader, pb.base)
							}
							return err
						})
						break
					}
				}
				if at == 0 {
					return done, ops
				}
				mem.SetFault(nil)
				m.crash = nil
				l = mustOpen(t, opts)
				// Once the roll's fsync of the old segment is done, every
				// batch before the roll is durable; an interrupted Append
				// never wrote its batch.
				rolled := m.endOf(before)
				switch end := l.LogEndOffset(); {
				case (at > 1 || done) && end < rolled:
					t.Fatalf("crash at operation %d of the roll: log ends at %d, before the roll point %d", at, end, rolled)
				case !done && end > rolled:
					t.Fatalf("crash at operation %d of the roll: log ends at %d, past the roll point %d", at, end, rolled)
				case at > 1 || done:
					m.synced = before
				}
				m.recovered(l, false)
				// The new segment exists after the crash only if its
				// directory entry was synced, and then it is empty (or
				// holds the batch of a completed Append).
				segs := l.Segments()
				withNew := append(slices.Clone(segsBefore), rolled)
				if !slices.Equal(segs, withNew) && (done || !slices.Equal(segs, segsBefore)) {
					t.Fatalf("segments %v after a crash at operation %d of the roll at %d (completed %v), before %v", segs, at, rolled, done, segsBefore)
				}
				m.appendVerifyReopen(l, opts)
				return done, ops
			}
			_, total := run(t, 0)
			// The old segment's fsync, the new segment's three files and
			// the directory sync, at least.
			if total < 5 {
				t.Fatalf("the roll made only %d filesystem operations", total)
			}
			for at := 1; at <= total+1; at++ {
				t.Run(fmt.Sprintf("crash-at=%d", at), func(t *testing.T) { run(t, at) })
			}
		})
	}
}

// TestPowerLossDuringTruncateTo cuts the power at every filesystem operation
// of a TruncateTo, and right after it, with every batch synced and a
// checkpoint at batch 50 of 70: truncating far below the checkpoint (across
// segments), inside the checkpoint's segment, and above the checkpoint. The
// log must come back either untouched or truncated exactly, never with a
// hole or with batches from both sides; the checkpoint it reports is the old
// one or the one TruncateTo rewrites (same position, recovery point at the
// truncation), never past the log end; epochs and producer state are exactly
// those of the surviving batches; and a completed TruncateTo is never undone.
func TestPowerLossDuringTruncateTo(t *testing.T) {
	for _, target := range []int{20, 49, 55} {
		t.Run(fmt.Sprintf("to-batch=%d", target), func(t *testing.T) {
			run := func(t *testing.T, at int) int {
				rng := rand.New(rand.NewPCG(11, uint64(target)))
				mem := vfs.NewMem()
				opts := plOptions(rng, mem, false)
				opts.Config.SegmentBytes, opts.Config.IndexIntervalBytes = 4096, 256
				c := &crashPoint{mem: mem, rng: rng}
				m := newModel(t, rng)
				l := mustOpen(t, opts)
				mem.SetFault(c.hook)
				for i := range 70 {
					if i%15 == 14 {
						m.leader++
					}
					m.append(l)
					if i == 49 {
						m.checkpoint(l)
					}
				}
				m.sync(l)
				m.crash = c
				done, ops := callCrashes(t, c, at, func() error {
					if !m.truncateAt(l, target) {
						return errPowerLoss
					}
					return nil
				})
				if at == 0 {
					_ = l.Close()
					return ops
				}
				mem.SetFault(nil)
				m.crash = nil
				l = mustOpen(t, opts)
				k := m.boundary(l.LogEndOffset())
				switch {
				case done && k != target:
					t.Fatalf("completed TruncateTo(batch %d) came back with %d batches", target, k)
				case k != target && k != len(m.batches):
					t.Fatalf("TruncateTo(batch %d) of %d interrupted: %d batches survive, want one or the other", target, len(m.batches), k)
				}
				m.recovered(l, false)
				if _, rp := l.Checkpointed(); rp > l.LogEndOffset() {
					t.Fatalf("checkpoint recovery point %d past the log end %d", rp, l.LogEndOffset())
				}
				for range 3 {
					m.append(l)
				}
				m.verify(l)
				_ = l.Close()
				return ops
			}
			total := run(t, 0)
			for at := 1; at <= total+1; at++ {
				t.Run(fmt.Sprintf("crash-at=%d", at), func(t *testing.T) { run(t, at) })
			}
		})
	}
}

// TestPowerLossAroundDeleteRecords cuts the power at every filesystem
// operation of DeleteRecords and Retain, and right after them, on a log of
// 80 batches with a checkpoint after 60 and the active segment unsynced. The log
// start after the crash is the old one or the new one (the new one once the
// call returned), reads below it are out of range, and everything from it
// reads back as appended. When the new log start lies past what survived
// (DeleteRecords into the unsynced tail, then the tail lost), the log starts
// over empty at that log start: offsets below it were handed out before and
// are never handed out again.
func TestPowerLossAroundDeleteRecords(t *testing.T) {
	cases := []struct {
		name string
		call func(m *plModel, l *Log) error
	}{
		{"delete-below-recovery-point", func(m *plModel, l *Log) error {
			_, err := l.DeleteRecords(m.batches[25].base)
			return err
		}},
		{"delete-to-the-unsynced-end", func(m *plModel, l *Log) error {
			segs := l.Segments()
			if active := segs[len(segs)-1]; active >= m.end() || active <= m.endOf(m.synced) {
				return fmt.Errorf("the active segment [%d, %d) holds no unsynced batch past the checkpoint at %d", active, m.end(), m.endOf(m.synced))
			}
			_, err := l.DeleteRecords(m.end())
			return err
		}},
		{"retain", func(m *plModel, l *Log) error {
			cfg := l.Config()
			cfg.RetentionBytes = 12 << 10
			if err := l.SetConfig(cfg); err != nil {
				return err
			}
			n, err := l.Retain(0)
			if err == nil && n == 0 {
				return errors.New("retention deleted nothing")
			}
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := func(t *testing.T, at int, wantStart int64) (int, int64) {
				rng := rand.New(rand.NewPCG(5, 5))
				mem := vfs.NewMem()
				opts := plOptions(rng, mem, false)
				opts.Config.SegmentBytes, opts.Config.IndexIntervalBytes = 2048, 256
				// Crash with a nil rng: every unsynced byte is lost.
				c := &crashPoint{mem: mem}
				m := newModel(t, rng)
				l := mustOpen(t, opts)
				mem.SetFault(c.hook)
				for i := range 80 {
					if i%20 == 19 {
						m.startEpoch(l)
					}
					m.append(l)
					if i == 59 {
						m.checkpoint(l)
					}
				}
				segs := l.Segments()
				activeBase := segs[len(segs)-1]
				done, ops := callCrashes(t, c, at, func() error { return tc.call(m, l) })
				if at == 0 {
					wantStart = l.LogStartOffset()
					_ = l.Close()
					return ops, wantStart
				}
				mem.SetFault(nil)
				l = mustOpen(t, opts)
				start, end := l.LogStartOffset(), l.LogEndOffset()
				switch {
				case done && start != wantStart:
					t.Fatalf("log start %d after a completed call, want %d", start, wantStart)
				case start != 0 && start != wantStart:
					t.Fatalf("log start %d after an interrupted call, want 0 or %d", start, wantStart)
				}
				if end < start {
					t.Fatalf("log is [%d, %d): its end is below its start", start, end)
				}
				if end == start && start > 0 {
					// Started over: nothing to read, appends go to the
					// log start; the checkpoint's position and producer
					// state outlive a further reopen.
					if data, err := l.Read(start, 1<<20, end); err != nil || len(data) != 0 {
						t.Fatalf("read at the log start of an empty log: %d bytes, %v", len(data), err)
					}
					if _, err := l.Read(start-1, 100, end); !errors.Is(err, ErrOffsetOutOfRange) {
						t.Fatalf("read below the log start: %v", err)
					}
					b := valueBatch("after")
					if r := mustAppend(t, l, b, 99); r.BaseOffset != start || r.LogStartOffset != start {
						t.Fatalf("append after starting over: %+v, want base and log start %d", r, start)
					}
					if e, eend := l.OffsetForLeaderEpoch(99); e != 99 || eend != start+1 {
						t.Fatalf("epoch 99 ends at (%d, %d), want (99, %d)", e, eend, start+1)
					}
					if err := l.Close(); err != nil {
						t.Fatal(err)
					}
					l = mustOpen(t, opts)
					if data, err := l.Read(start, 1<<20, start+1); err != nil || !bytes.Equal(data, b) || l.LogStartOffset() != start {
						t.Fatalf("after reopening: log start %d, read %v, want the batch at %d", l.LogStartOffset(), err, start)
					}
					if pos, rp := l.Checkpointed(); pos != m.cp.position || rp != start {
						t.Fatalf("after reopening: checkpointed (%d, %d), want (%d, %d)", pos, rp, m.cp.position, start)
					}
					// Producers whose batches all lie below the lost
					// active segment are still deduplicated.
					checked := 0
					for _, pid := range []int64{101, 102, 103} {
						var last *plBatch
						for i := range m.batches {
							if m.batches[i].pid == pid {
								last = &m.batches[i]
							}
						}
						if last == nil || last.base >= activeBase {
							continue
						}
						r, err := l.Append(bytes.Clone(last.data), 100)
						if err != nil || !r.Duplicate || r.BaseOffset != last.base || r.LastOffset != last.last {
							t.Fatalf("producer %d re-sending its batch at %d after starting over: %+v, %v, want a duplicate", pid, last.base, r, err)
						}
						checked++
					}
					if checked == 0 {
						t.Fatal("no producer left to check deduplication with")
					}
					_ = l.Close()
					return ops, wantStart
				}
				m.start = start
				m.recovered(l, false)
				m.appendVerifyReopen(l, opts)
				return ops, wantStart
			}
			total, newStart := run(t, 0, 0)
			for at := 1; at <= total+1; at++ {
				t.Run(fmt.Sprintf("crash-at=%d", at), func(t *testing.T) { run(t, at, newStart) })
			}
		})
	}
}
