package partition

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// snapshotFixture writes 60 batches (idempotent, two epochs) over small
// segments, snapshots after 40 at position 40, and returns the log and the
// records the snapshot must hold.
func snapshotFixture(t *testing.T, fsys vfs.FS, dir string) (*Log, Options, []string) {
	t.Helper()
	opts := Options{Dir: dir, FS: fsys, Config: smallSegments()}
	l := openTest(t, opts)
	var want []string
	for i := range 60 {
		v := fmt.Sprintf("snap-%02d-%0120d", i, 0)
		if i < 40 {
			want = append(want, v)
		}
		mustAppend(t, l, makeBatch(batchSpec{idempotent: true, producerID: 9, baseSequence: int32(i), baseTimestamp: int64(1000 + i), records: []testRecord{{value: []byte(v)}}}), int32(i/20))
		if i == 39 {
			snap, err := l.Snapshot("s40", 40)
			if err != nil {
				t.Fatal(err)
			}
			if snap.Position() != 40 || snap.Name() != "s40" {
				t.Fatalf("snapshot %s at %d", snap.Name(), snap.Position())
			}
		}
	}
	return l, opts, want
}

func TestSnapshotStreamAndRestore(t *testing.T) {
	filesystems(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l, _, want := snapshotFixture(t, fsys, dir)
		// Retention after a later checkpoint deletes the old segments;
		// the snapshot keeps them pinned.
		if err := l.Checkpoint(60); err != nil {
			t.Fatal(err)
		}
		if _, err := l.DeleteRecords(50); err != nil {
			t.Fatal(err)
		}
		if l.Segments()[0] <= 40 {
			t.Fatalf("segments %v: expected the ones below 50 gone", l.Segments())
		}
		snap, err := OpenSnapshot(fsys, dir, "s40")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		n, err := snap.WriteTo(&buf)
		if err != nil || n != int64(buf.Len()) || n != snap.Size() {
			t.Fatalf("stream: %d bytes (size %d, buffer %d): %v", n, snap.Size(), buf.Len(), err)
		}
		// Restore into a fresh directory, as a follower would.
		target := dir + "-follower"
		r, err := Restore(Options{Dir: target, FS: fsys, Config: smallSegments()}, bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		if pos, rp := r.Checkpointed(); pos != 40 || rp != 40 {
			t.Fatalf("restored checkpoint (%d, %d), want (40, 40)", pos, rp)
		}
		recs := readAll(t, r, 0)
		if len(recs) != len(want) {
			t.Fatalf("restored %d records, want %d", len(recs), len(want))
		}
		for i, rec := range recs {
			if rec.offset != int64(i) || string(rec.value) != want[i] {
				t.Fatalf("record %d: %d %q", i, rec.offset, rec.value)
			}
		}
		// The producer table and the epochs came along: a retry of the
		// last batch is a duplicate, the next sequence appends at 40.
		dup, err := r.Append(makeBatch(batchSpec{idempotent: true, producerID: 9, baseSequence: 39, baseTimestamp: 1039, records: []testRecord{{value: []byte(want[39])}}}), 1)
		if err != nil || !dup.Duplicate || dup.BaseOffset != 39 {
			t.Fatalf("retry after restore: %+v %v", dup, err)
		}
		if e, end := r.OffsetForLeaderEpoch(0); e != 0 || end != 20 {
			t.Fatalf("epoch 0 after restore ends at (%d, %d), want (0, 20)", e, end)
		}
		if got, ok, err := r.OffsetForTimestamp(1030, 40); err != nil || !ok || got.Offset != 30 {
			t.Fatalf("timestamp lookup after restore: %+v %v %v", got, ok, err)
		}
		next := mustAppend(t, r, makeBatch(batchSpec{idempotent: true, producerID: 9, baseSequence: 40, records: []testRecord{{value: []byte("after")}}}), 2)
		if next.BaseOffset != 40 {
			t.Fatalf("append after restore at %d", next.BaseOffset)
		}
		names, err := ListSnapshots(fsys, dir)
		if err != nil || len(names) != 1 || names[0] != "s40" {
			t.Fatalf("list: %v %v", names, err)
		}
		if err := RemoveSnapshot(fsys, dir, "s40"); err != nil {
			t.Fatal(err)
		}
		if names, _ := ListSnapshots(fsys, dir); len(names) != 0 {
			t.Fatalf("snapshots after removal: %v", names)
		}
		// The source log is untouched and still reopens.
		_ = l.Close()
		l2 := openTest(t, Options{Dir: dir, FS: fsys, Config: smallSegments()})
		if l2.LogStartOffset() != 50 || l2.LogEndOffset() != 60 {
			t.Fatalf("source after all this: [%d, %d)", l2.LogStartOffset(), l2.LogEndOffset())
		}
	})
}

func TestRestoreReplacesALogAndRefusesBadStreams(t *testing.T) {
	mem := vfs.NewMem()
	l, _, want := snapshotFixture(t, mem, "/src")
	_ = l.Close()
	snap, err := OpenSnapshot(mem, "/src", "s40")
	if err != nil {
		t.Fatal(err)
	}
	var good bytes.Buffer
	if _, err := snap.WriteTo(&good); err != nil {
		t.Fatal(err)
	}
	// An existing follower log with other contents.
	opts := Options{Dir: "/dst", FS: mem, Config: smallSegments()}
	f := openTest(t, opts)
	for i := range 5 {
		mustAppend(t, f, valueBatch(fmt.Sprint("old-", i)), 0)
	}
	if err := f.Checkpoint(5); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	damaged := bytes.Clone(good.Bytes())
	damaged[len(damaged)/2] ^= 0x10
	hostile := bytes.Clone(good.Bytes())
	i := bytes.Index(hostile, []byte("00000000000000000000.log"))
	copy(hostile[i:], "../../../../../etc/x.log")
	rotten := rottenSnapshotStream(t, mem, "/src", "s40")
	for name, stream := range map[string][]byte{
		"rotten":    rotten,
		"damaged":   damaged,
		"truncated": good.Bytes()[:len(good.Bytes())-7],
		"hostile":   hostile,
		"garbage":   []byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		if _, err := Restore(opts, bytes.NewReader(stream)); err == nil {
			t.Fatalf("%s stream restored", name)
		}
		// The old log is intact.
		f := openTest(t, opts)
		recs := readAll(t, f, 0)
		if len(recs) != 5 || string(recs[0].value) != "old-0" {
			t.Fatalf("after a refused %s stream: %d records", name, len(recs))
		}
		_ = f.Close()
	}
	if _, err := mem.Stat("/etc/x.log"); err == nil {
		t.Fatal("a hostile name wrote outside the partition")
	}
	r, err := Restore(opts, bytes.NewReader(good.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, r, 0)
	if len(recs) != len(want) || string(recs[39].value) != want[39] {
		t.Fatalf("restored over an old log: %d records", len(recs))
	}
	_ = r.Close()
}

// TestRestorePowerLoss cuts the power at every filesystem operation of a
// Restore over an existing log: the directory then opens as the old log or
// the new one, whole, never a mix.
func TestRestorePowerLoss(t *testing.T) {
	build := func() (*vfs.Mem, []byte) {
		mem := vfs.NewMem()
		l, _, _ := snapshotFixture(t, mem, "/src")
		_ = l.Close()
		snap, err := OpenSnapshot(mem, "/src", "s40")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		opts := Options{Dir: "/dst", FS: mem, Config: smallSegments()}
		f := mustOpen(t, opts)
		for i := range 5 {
			mustAppend(t, f, valueBatch(fmt.Sprint("old-", i)), 0)
		}
		if err := f.Checkpoint(5); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		return mem, buf.Bytes()
	}
	opts := func(mem *vfs.Mem) Options { return Options{Dir: "/dst", FS: mem, Config: smallSegments()} }
	run := func(at int) (ops int, completed bool) {
		mem, stream := build()
		c := &crashPoint{mem: mem, rng: rand.New(rand.NewPCG(uint64(at), 7))}
		mem.SetFault(c.hook)
		completed, ops = callCrashes(t, c, at, func() error {
			r, err := Restore(opts(mem), bytes.NewReader(stream))
			if err == nil {
				_ = r.Close()
			}
			return err
		})
		if at == 0 {
			return ops, completed
		}
		mem.SetFault(nil)
		l := mustOpen(t, opts(mem))
		defer l.Close()
		recs := readAll(t, l, 0)
		switch {
		case len(recs) == 5 && string(recs[4].value) == "old-4" && !completed:
		case len(recs) == 40 && strings.HasPrefix(string(recs[39].value), "snap-39"):
			if pos, _ := l.Checkpointed(); pos != 40 {
				t.Fatalf("crash at %d: the new log has position %d", at, pos)
			}
		default:
			t.Fatalf("crash at %d (completed %v): %d records, neither the old log nor the new one", at, completed, len(recs))
		}
		for _, suffix := range []string{restoreSuffix, oldSuffix} {
			if _, err := mem.Stat("/dst" + suffix); err == nil {
				t.Fatalf("crash at %d: %s left behind after reopening", at, suffix)
			}
		}
		return ops, completed
	}
	total, _ := run(0)
	if total < 10 {
		t.Fatalf("restore made only %d filesystem operations", total)
	}
	for at := 1; at <= total+1; at++ {
		run(at)
	}
}

func TestSnapshotNames(t *testing.T) {
	l := openTest(t, Options{Dir: "/n", FS: vfs.NewMem()})
	for _, bad := range []string{"", ".", "..", "a/b", "a\\b"} {
		if _, err := l.Snapshot(bad, 1); err == nil {
			t.Fatalf("snapshot name %q accepted", bad)
		}
	}
	if _, err := l.Snapshot("one", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Snapshot("one", 2); err == nil {
		t.Fatal("a second snapshot of the same name was accepted")
	}
}

// rottenSnapshotStream flips one byte of a record value in the first
// segment that snapshot name pins (a hard link: the log's own segment
// rots with it), streams the snapshot, and puts the byte back. The
// stream's checksums are computed over what the sender reads, rot
// included, so only the receiver's batch check can catch it.
func rottenSnapshotStream(t *testing.T, mem *vfs.Mem, dir, name string) []byte {
	t.Helper()
	seg := dir + "/snapshots/" + name + "/" + segmentFileName(0, logExt)
	data, err := mem.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	rot := bytes.Clone(data)
	rot[BatchHeaderSize+30] ^= 0x01 // inside the first batch's record
	overwriteFile(t, mem, seg, rot)
	defer overwriteFile(t, mem, seg, data)
	snap, err := OpenSnapshot(mem, dir, name)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("streaming the rotten snapshot: %v", err)
	}
	return buf.Bytes()
}
