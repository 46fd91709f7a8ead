package partition

import (
	"fmt"
	"path"
	"testing"

	"github.com/varvelog/varve/partition/vfs"
)

// TestRecoveryChecksCheckpointedTail (TESTPLAN row 12): a byte flipped in
// the last batch before the recovery point, after a clean close, is found
// by its CRC when the log opens. On its own the log ends before that batch
// and never serves it; with TruncateUncheckpointed (a Raft replica) the
// checkpoint is ignored, so the log starts empty at position 0 and Raft
// re-applies everything.
func TestRecoveryChecksCheckpointedTail(t *testing.T) {
	for _, truncate := range []bool{false, true} {
		t.Run(fmt.Sprintf("truncate=%v", truncate), func(t *testing.T) {
			fsys := vfs.NewMem()
			dir := "/data/topic-0"
			l := openTest(t, Options{Dir: dir, FS: fsys})
			var values []string
			for i := range 40 {
				v := fmt.Sprintf("v%03d", i)
				values = append(values, v)
				mustAppend(t, l, sizedBatch(v, 300), 1)
			}
			if err := l.Checkpoint(77); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			seg := path.Join(dir, fmt.Sprintf("%020d.log", 0))
			data, err := vfs.ReadFile(fsys, seg)
			if err != nil {
				t.Fatal(err)
			}
			last := 0
			for pos := 0; pos < len(data); {
				h, err := ParseBatchHeader(data[pos:])
				if err != nil {
					t.Fatal(err)
				}
				last, pos = pos, pos+int(h.Size())
			}
			data[last+BatchHeaderSize+20] ^= 0xff
			overwriteFile(t, fsys, seg, data)

			l = openTest(t, Options{Dir: dir, FS: fsys, TruncateUncheckpointed: truncate})
			pos, _ := l.Checkpointed()
			if truncate {
				if l.LogEndOffset() != 0 || pos != 0 {
					t.Fatalf("replica log after damage: end %d, position %d; want an empty log at position 0", l.LogEndOffset(), pos)
				}
				return
			}
			if end := l.LogEndOffset(); end != 39 {
				t.Fatalf("log end %d after damage to batch 39, want 39", end)
			}
			recs := readAll(t, l, 0) // decodes every batch, CRCs checked
			for i, r := range recs {
				if string(r.value[:4]) != values[i] || r.offset != int64(i) {
					t.Fatalf("record %d: offset %d value %q", i, r.offset, r.value[:4])
				}
			}
			if s, err := fsys.Stat(seg); err != nil || s.Size != int64(last) {
				t.Fatalf("segment is %d bytes (%v), want truncated to %d", s.Size, err, last)
			}
			// The damage is gone for good: appends continue at 39.
			if r := mustAppend(t, l, valueBatch("after"), 1); r.BaseOffset != 39 {
				t.Fatalf("append after recovery at %d", r.BaseOffset)
			}
		})
	}
}
