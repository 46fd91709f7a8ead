package partition

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// Failed writes and fsyncs (vfs.Mem faults), and damaged files on the real
// filesystem.

// TestStorageFaultIsSticky fails one write, fsync, directory fsync, rename,
// remove or truncate inside each kind of call that touches the disk. The
// call returns a *StorageError that is ErrStorage and wraps the injected
// error; Err reports it; waiters wake with it; every later write (Append,
// Sync, Checkpoint, Roll, StartEpoch, TruncateTo, DeleteRecords, Retain)
// returns it without touching the disk, so no fsync is ever retried, not
// even by Close; what the log held before stays readable. After a power
// loss the reopened log holds every batch acknowledged by a successful Sync
// or Checkpoint, is healthy, and accepts appends at its end.
func TestStorageFaultIsSticky(t *testing.T) {
	cases := []struct {
		name string
		op   vfs.Op
		call func(m *plModel, l *Log) error
	}{
		{"append/write", vfs.OpWrite, func(m *plModel, l *Log) error {
			b, _ := m.nextBatch()
			_, err := l.Append(b, m.leader)
			return err
		}},
		{"sync/fsync", vfs.OpSync, func(m *plModel, l *Log) error { return l.Sync() }},
		{"checkpoint/fsync", vfs.OpSync, checkpointCall},
		{"checkpoint/write", vfs.OpWrite, func(m *plModel, l *Log) error {
			if err := l.Sync(); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			m.synced = len(m.batches)
			return checkpointCall(m, l)
		}},
		{"checkpoint/rename", vfs.OpRename, checkpointCall},
		{"checkpoint/syncdir", vfs.OpSyncDir, checkpointCall},
		{"roll/fsync", vfs.OpSync, func(m *plModel, l *Log) error { return l.Roll() }},
		{"roll/syncdir", vfs.OpSyncDir, func(m *plModel, l *Log) error { return l.Roll() }},
		{"roll-in-append/fsync", vfs.OpSync, bigAppend},
		{"roll-in-append/open", vfs.OpOpen, bigAppend},
		{"delete-records/rename", vfs.OpRename, deleteRecordsCall},
		{"delete-records/remove", vfs.OpRemove, deleteRecordsCall},
		{"delete-records/syncdir", vfs.OpSyncDir, deleteRecordsCall},
		{"truncate/truncate", vfs.OpTruncate, truncateCall(27)},
		{"truncate/fsync", vfs.OpSync, truncateCall(27)},
		{"truncate/syncdir", vfs.OpSyncDir, truncateCall(27)},
		{"truncate-below-checkpoint/fsync", vfs.OpSync, truncateCall(8)},
		{"truncate-below-checkpoint/rename", vfs.OpRename, truncateCall(8)},
		{"retain/rename", vfs.OpRename, func(m *plModel, l *Log) error {
			cfg := l.Config()
			cfg.RetentionBytes = 1
			if err := l.SetConfig(cfg); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			_, err := l.Retain(0)
			return err
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, uint64(i)))
			mem := vfs.NewMem()
			opts := plOptions(rng, mem, false)
			opts.Config.SegmentBytes, opts.Config.IndexIntervalBytes = 4096, 256
			m := newModel(t, rng)
			l := mustOpen(t, opts)
			for j := range 30 {
				m.append(l)
				if j == 19 {
					m.checkpoint(l)
				}
			}
			m.sync(l)
			for range 3 {
				m.append(l) // an unsynced tail in the active segment
			}
			startBefore, endBefore := l.LogStartOffset(), m.end()
			changed := l.Changed()

			var mu sync.Mutex
			recording := false
			var after []string
			mem.SetFault(func(op vfs.Op, name string) error {
				mu.Lock()
				defer mu.Unlock()
				if recording && op != vfs.OpRead && op != vfs.OpClose {
					after = append(after, op.String()+" "+name)
				}
				return nil
			})
			injected := fmt.Errorf("injected %s failure", tc.op)
			mem.FailNext(tc.op, injected)
			err := tc.call(m, l)
			mu.Lock()
			recording = true
			mu.Unlock()
			checkFailure(t, "the failing call", err, injected)
			checkFailure(t, "Err", l.Err(), injected)
			select {
			case <-changed:
			default:
				t.Fatal("the failure did not wake Changed waiters")
			}
			checkFailure(t, "Wait", l.Wait(context.Background(), l.LogEndOffset()), injected)

			// Every later write is refused with the same failure.
			b, _ := m.nextBatch()
			_, aerr := l.Append(b, m.leader)
			checkFailure(t, "Append", aerr, injected)
			checkFailure(t, "Sync", l.Sync(), injected)
			checkFailure(t, "Checkpoint", l.Checkpoint(999), injected)
			checkFailure(t, "Roll", l.Roll(), injected)
			checkFailure(t, "StartEpoch", l.StartEpoch(m.leader+10), injected)
			checkFailure(t, "TruncateTo", l.TruncateTo(l.LogStartOffset()), injected)
			_, derr := l.DeleteRecords(l.LogEndOffset())
			checkFailure(t, "DeleteRecords", derr, injected)
			_, rerr := l.Retain(1 << 62)
			checkFailure(t, "Retain", rerr, injected)

			// What the log held stays readable. Only TruncateTo and
			// DeleteRecords change the bounds before their files.
			start, end := l.LogStartOffset(), l.LogEndOffset()
			if !strings.HasPrefix(tc.name, "truncate") && end != endBefore {
				t.Fatalf("log end %d after a failed %s, want %d", end, tc.name, endBefore)
			}
			if !strings.HasPrefix(tc.name, "delete") && !strings.HasPrefix(tc.name, "retain") && start != startBefore {
				t.Fatalf("log start %d after a failed %s, want %d", start, tc.name, startBefore)
			}
			m.checkReadable(l)
			if err := l.Close(); err != nil {
				t.Fatalf("close of a failed log: %v", err)
			}
			mu.Lock()
			if len(after) > 0 {
				t.Fatalf("the failed log still touched the disk: %v", after)
			}
			mu.Unlock()

			// Power loss, reopen: nothing acknowledged is lost.
			mem.SetFault(nil)
			mem.Crash(rng)
			l = mustOpen(t, opts)
			if err := l.Err(); err != nil {
				t.Fatalf("reopened log reports %v", err)
			}
			switch s := l.LogStartOffset(); {
			case s == startBefore:
			case s == start && s != startBefore:
				m.start = s
			default:
				t.Fatalf("log start %d after reopening, want %d or %d", s, startBefore, start)
			}
			if strings.HasPrefix(tc.name, "truncate") {
				m.lowest = min(m.synced, m.boundary(end))
				if end < m.cp.end {
					m.maybeCP = &plCheckpoint{count: m.boundary(end), end: end, position: m.cp.position, epochs: truncateWantEnd(slices.Clone(m.epochs), end)}
				}
			}
			m.recovered(l, false)
			for range 3 {
				m.append(l)
			}
			m.checkpoint(l)
			m.verify(l)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkpointCall writes a checkpoint that, failing, may or may not be the
// one recovery finds.
func checkpointCall(m *plModel, l *Log) error {
	m.pos++
	m.maybeCP = &plCheckpoint{count: len(m.batches), end: m.end(), position: m.pos, epochs: slices.Clone(m.epochs)}
	return l.Checkpoint(m.pos)
}

// bigAppend appends a batch that cannot fit the active segment, so the
// Append rolls first.
func bigAppend(m *plModel, l *Log) error {
	_, err := l.Append(sizedBatch("big", int(l.Config().SegmentBytes)-200), m.leader)
	return err
}

func deleteRecordsCall(m *plModel, l *Log) error {
	_, err := l.DeleteRecords(m.batches[12].base)
	return err
}

func truncateCall(k int) func(m *plModel, l *Log) error {
	return func(m *plModel, l *Log) error { return l.TruncateTo(m.batches[k].base) }
}

// checkFailure: err is the log's sticky storage failure caused by injected.
func checkFailure(t testing.TB, what string, err, injected error) {
	t.Helper()
	var se *StorageError
	if !errors.Is(err, ErrStorage) || !errors.Is(err, injected) || !errors.As(err, &se) {
		t.Fatalf("%s: %v, want a *StorageError wrapping %q", what, err, injected)
	}
}

// corruptLog writes 60 batches to a log on the real filesystem through the
// model, with a checkpoint after batch cpAt (none when negative), and closes
// it. Segments are 4 KiB, so the log has many, with several index entries
// each.
func corruptLog(t *testing.T, cpAt int) (Options, *plModel) {
	t.Helper()
	rng := rand.New(rand.NewPCG(99, uint64(cpAt+1)))
	opts := Options{Dir: t.TempDir(), Config: DefaultConfig(), FindTimestamp: testSearcher}
	opts.Config.SegmentBytes, opts.Config.IndexIntervalBytes = 4096, 256
	m := newModel(t, rng)
	l := mustOpen(t, opts)
	for i := range 60 {
		if i%20 == 7 {
			m.leader++
		}
		m.append(l)
		if i == cpAt {
			m.checkpoint(l)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	m.synced = len(m.batches)
	return opts, m
}

// segFile is the path of one of a segment's files.
func segFile(opts Options, base int64, ext string) string {
	return filepath.Join(opts.Dir, segmentFileName(base, ext))
}

// batchPos is the byte position of batches[i] in its segment file.
func batchPos(m *plModel, segBase int64, i int) int64 {
	pos := int64(0)
	for _, b := range m.batches {
		if b.base >= segBase && b.base < m.batches[i].base {
			pos += int64(len(b.data))
		}
	}
	return pos
}

// reopenDamaged reopens a damaged log and checks it is exactly the first
// want batches, with everything the model checks (reads at every offset,
// epochs, timestamps, producers), that the segment holding the end was
// truncated there on disk, and that appends continue at the end and survive
// a clean reopen.
func reopenDamaged(t *testing.T, opts Options, m *plModel, want int) {
	t.Helper()
	l := mustOpen(t, opts)
	if k := m.boundary(l.LogEndOffset()); k != want {
		t.Fatalf("reopened log holds %d batches (to offset %d), want %d", k, l.LogEndOffset(), want)
	}
	m.synced = want
	m.recovered(l, false)
	segs := l.Segments()
	last := segs[len(segs)-1]
	var size int64
	for _, b := range m.batches {
		if b.base >= last {
			size += int64(len(b.data))
		}
	}
	if st, err := os.Stat(segFile(opts, last, logExt)); err != nil || st.Size() != size {
		t.Fatalf("active segment %d on disk: %v; want %d bytes, cut after batch %d", last, err, size, want-1)
	}
	m.appendVerifyReopen(l, opts)
}

// TestCorruptSegmentTail damages the tail of the log on the real
// filesystem: a flipped byte in the middle of the last batch, a segment cut
// in the middle of a batch, garbage after the last batch. Reopening keeps
// exactly the batches before the damage (CRC and framing catch it), cuts the
// file there, rebuilds the indexes so every offset reads back as appended,
// and continues appending at the right offset.
func TestCorruptSegmentTail(t *testing.T) {
	lastActive := func(opts Options, m *plModel) (base int64, pos int64) {
		segs, err := os.ReadDir(opts.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range segs {
			if b, ext, ok := parseSegmentFileName(e.Name()); ok && ext == logExt {
				base = b
			}
		}
		return base, batchPos(m, base, len(m.batches)-1)
	}
	for _, cpAt := range []int{-1, 30} {
		t.Run(fmt.Sprintf("checkpoint-at=%d", cpAt), func(t *testing.T) {
			t.Run("flipped-byte-in-last-batch", func(t *testing.T) {
				opts, m := corruptLog(t, cpAt)
				base, pos := lastActive(opts, m)
				f, err := os.OpenFile(segFile(opts, base, logExt), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				b := []byte{0}
				at := pos + int64(len(m.batches[59].data))/2
				if _, err := f.ReadAt(b, at); err != nil {
					t.Fatal(err)
				}
				b[0] ^= 0x10
				if _, err := f.WriteAt(b, at); err != nil {
					t.Fatal(err)
				}
				f.Close()
				reopenDamaged(t, opts, m, 59)
			})
			t.Run("cut-mid-batch", func(t *testing.T) {
				opts, m := corruptLog(t, cpAt)
				base, pos := lastActive(opts, m)
				if err := os.Truncate(segFile(opts, base, logExt), pos+int64(len(m.batches[59].data))/2); err != nil {
					t.Fatal(err)
				}
				reopenDamaged(t, opts, m, 59)
			})
			for name, tail := range map[string][]byte{
				"zeros":            make([]byte, 100),
				"ones":             bytes.Repeat([]byte{0xff}, 300),
				"short":            {1, 2, 3},
				"copy-of-a-batch":  m0Batch(),
				"header-no-body":   m0Batch()[:BatchHeaderSize],
				"random-and-large": randomBytes(5000),
			} {
				t.Run("garbage-after-last-batch/"+name, func(t *testing.T) {
					opts, m := corruptLog(t, cpAt)
					base, _ := lastActive(opts, m)
					f, err := os.OpenFile(segFile(opts, base, logExt), os.O_WRONLY|os.O_APPEND, 0)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := f.Write(tail); err != nil {
						t.Fatal(err)
					}
					f.Close()
					reopenDamaged(t, opts, m, 60)
				})
			}
		})
	}
	// A sealed segment validated on open (no checkpoint covers it) cut in
	// the middle of its last batch: the log ends before that batch and the
	// later segments are deleted.
	t.Run("sealed-segment-cut-mid-batch", func(t *testing.T) {
		for _, cpAt := range []int{-1, 5} {
			opts, m := corruptLog(t, cpAt)
			l := mustOpen(t, opts)
			segs := l.Segments()
			l.Close()
			base := segs[len(segs)-3]
			k := m.boundary(segs[len(segs)-2]) - 1 // its last batch
			if err := os.Truncate(segFile(opts, base, logExt), batchPos(m, base, k)+20); err != nil {
				t.Fatal(err)
			}
			l = mustOpen(t, opts)
			if got := l.Segments(); !slices.Equal(got, segs[:len(segs)-2]) {
				t.Fatalf("segments %v after cutting segment %d, want %v", got, base, segs[:len(segs)-2])
			}
			for _, gone := range segs[len(segs)-2:] {
				if _, err := os.Stat(segFile(opts, gone, logExt)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("segment %d past the damage: %v, want it deleted", gone, err)
				}
			}
			l.Close()
			reopenDamaged(t, opts, m, k)
		}
	})
}

// m0Batch is a valid batch whose base offset (0) cannot continue any log
// with data: recovery must reject it even though its CRC is right.
func m0Batch() []byte { return valueBatch("stray") }

func randomBytes(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestCorruptIndexFiles deletes or damages the .index and .timeindex files of
// a sealed segment below the checkpoint's recovery point (so recovery reads
// them rather than rebuilding them). Recovery notices (missing, torn,
// entries out of order or pointing past the segment), rebuilds them from the
// batch headers, writes them back byte-identical to what the log wrote in
// the first place, and every offset and timestamp lookup answers right.
func TestCorruptIndexFiles(t *testing.T) {
	// Each damage gets the file and its entry size.
	damages := map[string]func(b []byte, n int) []byte{
		"deleted":       nil,
		"torn":          func(b []byte, n int) []byte { return b[:len(b)-3] },
		"garbage-tail":  func(b []byte, n int) []byte { return append(b, randomBytes(2*n)...) },
		"zero-filled":   func(b []byte, n int) []byte { return make([]byte, len(b)) },
		"swapped":       swapLastEntries,
		"past-the-end":  pastTheEnd,
		"one-byte-left": func(b []byte, n int) []byte { return b[:1] },
	}
	for _, ext := range []string{indexExt, timeIndexExt} {
		for name, damage := range damages {
			t.Run(strings.TrimPrefix(ext, ".")+"/"+name, func(t *testing.T) {
				opts, m := corruptLog(t, 55)
				l := mustOpen(t, opts)
				segs := l.Segments()
				l.Close()
				base := segs[2]
				path := segFile(opts, base, ext)
				orig, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				entry := indexEntrySize
				if ext == timeIndexExt {
					entry = timeEntrySize
				}
				if len(orig) < 2*entry {
					t.Fatalf("segment %d's %s has %d bytes; the test needs two entries", base, ext, len(orig))
				}
				if damage == nil {
					err = os.Remove(path)
				} else {
					err = os.WriteFile(path, damage(slices.Clone(orig), entry), 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
				l = mustOpen(t, opts)
				if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, orig) {
					t.Fatalf("%s after reopening: %d bytes (%v), want the %d bytes the log wrote", path, len(got), err, len(orig))
				}
				m.recovered(l, false)
				l.Close()
				reopenDamaged(t, opts, m, 60)
			})
		}
	}
}

// swapLastEntries swaps the last two entries of an index file of n-byte
// entries: offsets (and positions) then go down.
func swapLastEntries(b []byte, n int) []byte {
	x, y := b[len(b)-2*n:len(b)-n], b[len(b)-n:]
	tmp := slices.Clone(x)
	copy(x, y)
	copy(y, tmp)
	return b
}

// pastTheEnd appends an entry that continues the order but points past the
// segment: a position past its size (.index) or an offset past its end
// (.timeindex).
func pastTheEnd(b []byte, n int) []byte {
	last := b[len(b)-n:]
	e := slices.Clone(last)
	if n == indexEntrySize {
		binary.BigEndian.PutUint32(e[0:], binary.BigEndian.Uint32(last[0:])+1)
		binary.BigEndian.PutUint32(e[4:], 0x7fff0000)
	} else {
		binary.BigEndian.PutUint64(e[0:], binary.BigEndian.Uint64(last[0:])+1)
		binary.BigEndian.PutUint32(e[8:], 0x7fffffff)
	}
	return append(b, e...)
}

// TestCorruptCheckpoint damages the checkpoint file: recovery ignores it,
// validates the whole log, keeps every batch and rebuilds the producer and
// epoch tables from the batch headers; the next checkpoint replaces it.
func TestCorruptCheckpoint(t *testing.T) {
	damages := map[string]func(b []byte) []byte{
		"flipped-byte": func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"cut-in-half":  func(b []byte) []byte { return b[:len(b)/2] },
		"empty":        func(b []byte) []byte { return nil },
		"garbage-tail": func(b []byte) []byte { return append(b, 7) },
		"bad-version":  func(b []byte) []byte { b[5]++; return b },
		"random":       func(b []byte) []byte { return randomBytes(len(b)) },
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			opts, m := corruptLog(t, 59)
			path := filepath.Join(opts.Dir, checkpointName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			m.cp = nil // recovery cannot use it
			l := mustOpen(t, opts)
			m.recovered(l, false)
			m.checkpoint(l)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			reopenDamaged(t, opts, m, 60)
		})
	}
}

// TestCorruptSealedSegmentBelowCheckpoint damages a batch header inside a
// sealed segment below the checkpoint's recovery point, which recovery
// trusts without reading (it was fsynced before the checkpoint). The log
// opens; reads never panic, hang or return other bytes than were appended:
// each answers with the right batches or ErrCorruptBatch.
func TestCorruptSealedSegmentBelowCheckpoint(t *testing.T) {
	for name, length := range map[string]uint32{"negative-length": 0xffffff00, "tiny-length": 10, "huge-length": 1 << 30} {
		t.Run(name, func(t *testing.T) {
			opts, m := corruptLog(t, 55)
			l := mustOpen(t, opts)
			segs := l.Segments()
			l.Close()
			base := segs[1]
			k := m.boundary(base) + 2 // the third batch of the segment
			f, err := os.OpenFile(segFile(opts, base, logExt), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(binary.BigEndian.AppendUint32(nil, length), batchPos(m, base, k)+offBatchLength); err != nil {
				t.Fatal(err)
			}
			f.Close()
			l = mustOpen(t, opts)
			defer l.Close()
			end := l.LogEndOffset()
			for i, b := range m.batches {
				for _, maxBytes := range []int{1, 1 << 20} {
					data, err := l.Read(b.base, maxBytes, end)
					if err != nil {
						if !errors.Is(err, ErrCorruptBatch) {
							t.Fatalf("read at %d: %v, want ErrCorruptBatch or the data", b.base, err)
						}
						continue
					}
					for j := i; len(data) > 0; j++ {
						if j == k || j == len(m.batches) || !bytes.HasPrefix(data, m.batches[j].data) {
							t.Fatalf("read at %d (max %d) returned bytes that were not appended there (batch %d of the result)", b.base, maxBytes, j-i)
						}
						data = data[len(m.batches[j].data):]
					}
				}
			}
		})
	}
}
